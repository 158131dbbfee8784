"""Per-modality embeddings: autoencoders for omics, StandardScaler + PCA for slides (docs/reference.md 1.6-1.7).

The diffusion models work on small latents (32-d in the paper), one per modality. This module
fits the maps between the preprocessed feature space (genes, proteins, slide dimensions) and those
latents, on training rows only, keeps them, and maps imputed latents back to features.

Autoencoder (docs/reference.md 1.6, 8.2), input dim D, latent d, ``n_layers`` L, ``shrink_exponent`` s:

    h_i = max(floor(D (d / D) ** ((i / L) ** (1 / s))), d),  i = 1..L        (so h_L = d)
    encoder: [Linear(h_i) -> BatchNorm -> ReLU] for i = 1..L, then Linear(d)        (the latent)
    decoder: [Linear(h_i) -> BatchNorm -> ReLU] for i = L..1, then Linear(D)

trained with the mean squared reconstruction error, AdamW (lr 1e-3, weight decay 1e-5), batch 64,
early stopping with patience 10 on the validation loss, restoring the best state. Each epoch is one
compiled ``lax.scan`` over its optimiser steps, and ``epochs_per_call`` epochs (with their
validation and the early-stopping bookkeeping) are one compiled call.

WSI (docs/reference.md 1.7): StandardScaler then PCA(d, random_state=42), both fitted on train slides.

A fitted :class:`Embedding` is saved as a directory (``embedding.json`` + one ``.npz`` per modality),
written atomically like :mod:`cgjax.checkpoint`; ``cgjax prepare`` puts it in
``COHORT_DIR/embedding/`` and ``cgjax impute --decode`` reads it back.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

from cgjax._atomic import atomic_directory, write_json_synced
from cgjax.errors import CgjaxError, CheckpointError

FORMAT_VERSION = 1
META_FILE = "embedding.json"
EMBEDDING_DIR = "embedding"  # the embedding's place inside a prepared cohort directory
METHODS = ("autoencoder", "pca", "none")

# docs/reference.md 8.2: (n_layers, shrink_exponent) per modality; other modalities get DEFAULT_LAYOUT.
AE_LAYOUTS = {"rnaseq": (3, 1.0), "rppa": (2, 1.0), "cna": (2, 3.0)}
DEFAULT_LAYOUT = (2, 1.0)

__all__ = ["AEConfig", "AutoEncoder", "make_autoencoder", "FittedAutoencoder", "FittedPCA", "ModalityEmbedding",
           "Embedding", "EmbeddingOptions", "hidden_sizes", "init_autoencoder", "fit_autoencoder", "fit_pca",
           "fit_embedding", "save_embedding", "load_embedding", "find_embedding", "decode_imputations",
           "latent_names", "AE_LAYOUTS", "METHODS", "EMBEDDING_DIR"]


# ---------------------------------------------------------------------------------------------
# Autoencoder
# ---------------------------------------------------------------------------------------------
def hidden_sizes(input_dim: int, latent_dim: int, n_layers: int, shrink_exponent: float = 1.0) -> tuple[int, ...]:
    """Widths h_1..h_L of the encoder's hidden blocks (docs/reference.md 1.6).

    h_i = max(floor(D (d/D)^f_i), d) with f_i = (i/L)^(1/s): geometric interpolation from D to d,
    pulled towards d early when s > 1 (CNA uses s = 3). E.g. D = 400, d = 32, L = 2 -> (113, 32);
    D = 16000, L = 3 -> (2015, 253, 32).
    """
    if input_dim < 1 or latent_dim < 1 or n_layers < 1 or not shrink_exponent > 0:
        raise ValueError(f"hidden_sizes needs input_dim, latent_dim, n_layers >= 1 and shrink_exponent > 0, "
                         f"got {input_dim}, {latent_dim}, {n_layers}, {shrink_exponent}")
    D, d, L, s = int(input_dim), int(latent_dim), int(n_layers), float(shrink_exponent)
    return tuple(max(math.floor(D * (d / D) ** ((i / L) ** (1.0 / s))), d) for i in range(1, L + 1))


@dataclasses.dataclass(frozen=True)
class AEConfig:
    """One modality's autoencoder and its training (defaults: docs/reference.md 8.2).

    Attributes:
      input_dim: D, features of the modality. latent_dim: d.
      n_layers, shrink_exponent: L and s of :func:`hidden_sizes`.
      batch_size, learning_rate, weight_decay: AdamW minibatch training.
      max_epochs: upper bound on epochs (reference 10000). patience: stop after this many epochs
        without a better validation loss (reference 10), then restore the best state.
      epochs_per_call: epochs compiled into one call (only speed; results do not depend on it).
      seed: initialisation and shuffling.
      standardize: train on features standardised with the training rows' mean and std (and undo
        it when decoding). The reference trains on the raw values (docs/reference.md 6.23), which
        weights features by their variance and, with few rows, leaves the autoencoder mostly
        learning feature means; off by default.
    """

    input_dim: int
    latent_dim: int = 32
    n_layers: int = 2
    shrink_exponent: float = 1.0
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    max_epochs: int = 10000
    patience: int = 10
    epochs_per_call: int = 10
    seed: int = 0
    standardize: bool = False

    def __post_init__(self):
        if self.input_dim < 1 or self.latent_dim < 1:
            raise ValueError(f"input_dim and latent_dim must be >= 1, got {self.input_dim}, {self.latent_dim}")
        if self.n_layers < 1 or not self.shrink_exponent > 0:
            raise ValueError(f"n_layers must be >= 1 and shrink_exponent > 0, got {self.n_layers}, "
                             f"{self.shrink_exponent}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be >= 2 (BatchNorm needs a batch)")
        if self.max_epochs < 1 or self.patience < 1 or self.epochs_per_call < 1:
            raise ValueError("max_epochs, patience and epochs_per_call must be >= 1")

    @property
    def hidden(self) -> tuple[int, ...]:
        return hidden_sizes(self.input_dim, self.latent_dim, self.n_layers, self.shrink_exponent)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class _MLP(nn.Module):
    """[Linear -> BatchNorm -> ReLU] per width, then a plain Linear to ``out_dim``.

    BatchNorm follows PyTorch's defaults (momentum 0.1, i.e. Flax momentum 0.9; eps 1e-5); Flax
    updates the running variance with the biased batch variance (PyTorch: unbiased), a difference
    of a factor B/(B-1) that only matters for tiny batches.
    """

    widths: tuple
    out_dim: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        for h in self.widths:
            x = nn.Dense(h)(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(x)
            x = nn.relu(x)
        return nn.Dense(self.out_dim)(x)


class AutoEncoder(nn.Module):
    """The autoencoder of docs/reference.md 1.6: encoder widths ``hidden`` then a linear latent, and the
    mirrored decoder. ``train`` selects BatchNorm's mode (batch statistics vs running averages)."""

    input_dim: int
    latent_dim: int
    hidden: tuple

    def setup(self):
        self.encoder = _MLP(tuple(self.hidden), self.latent_dim)
        self.decoder = _MLP(tuple(reversed(self.hidden)), self.input_dim)

    def encode(self, x, train: bool = False):
        """x: f32[N, D] -> f32[N, d]."""
        return self.encoder(x, train)

    def decode(self, z, train: bool = False):
        """z: f32[N, d] -> f32[N, D]."""
        return self.decoder(z, train)

    def __call__(self, x, train: bool = False):
        return self.decode(self.encode(x, train), train)


def make_autoencoder(cfg: AEConfig) -> AutoEncoder:
    """The Flax module of ``cfg``."""
    return AutoEncoder(input_dim=cfg.input_dim, latent_dim=cfg.latent_dim, hidden=tuple(cfg.hidden))


@dataclasses.dataclass
class FittedAutoencoder:
    """A trained autoencoder: config, Flax ``params`` and ``batch_stats`` (numpy pytrees), and its
    training record (``history``: one dict per epoch with ``epoch``, ``train_loss``, ``val_loss``)."""

    config: AEConfig
    params: dict
    batch_stats: dict
    history: list = dataclasses.field(default_factory=list)
    best_epoch: int | None = None
    best_val_loss: float | None = None
    stopped_early: bool = False
    input_mean: np.ndarray | None = None  # f32[D] with config.standardize, else None
    input_std: np.ndarray | None = None  # f32[D]

    def _apply(self, method: str, x):
        fn = _eval_fn(self.config, method)
        x = np.asarray(x, np.float32)
        if x.ndim != 2:
            raise CgjaxError(f"autoencoder {method}: expected a 2-D matrix, got shape {x.shape}")
        want = self.config.input_dim if method == "encode" else self.config.latent_dim
        if x.shape[1] != want:
            raise CgjaxError(f"autoencoder {method}: input has {x.shape[1]} columns, expected {want}")
        if len(x) == 0:
            return np.zeros((0, self.config.latent_dim if method == "encode" else self.config.input_dim), np.float32)
        if method == "encode" and self.input_mean is not None:
            x = (x - self.input_mean) / self.input_std
        out = np.asarray(jax.device_get(fn({"params": self.params, "batch_stats": self.batch_stats},
                                            jnp.asarray(x))), np.float32)
        if method == "decode" and self.input_mean is not None:
            out = out * self.input_std + self.input_mean
        return out

    def encode(self, x) -> np.ndarray:
        """f32[N, D] features -> f32[N, d] latents (BatchNorm in inference mode: row-independent)."""
        return self._apply("encode", x)

    def decode(self, z) -> np.ndarray:
        """f32[N, d] latents -> f32[N, D] features."""
        return self._apply("decode", z)


_EVAL_CACHE: dict = {}


def _eval_fn(cfg: AEConfig, method: str):
    key = (cfg.input_dim, cfg.latent_dim, cfg.hidden, method)
    if key not in _EVAL_CACHE:
        model = make_autoencoder(cfg)
        _EVAL_CACHE[key] = jax.jit(lambda v, x: model.apply(v, x, False, method=method))
    return _EVAL_CACHE[key]


def init_autoencoder(cfg: AEConfig, seed: int = 0) -> tuple[dict, dict]:
    """Initial ``(params, batch_stats)`` as PyTorch initialises the reference autoencoder.

    Every Linear layer draws weights and biases from U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (PyTorch's
    ``nn.Linear`` default); BatchNorm starts at scale 1, bias 0, running mean 0, variance 1. Drawn
    with numpy (shapes from ``jax.eval_shape``, so nothing is compiled), from ``seed`` alone.
    """
    shapes = jax.eval_shape(lambda: make_autoencoder(cfg).init(jax.random.PRNGKey(0),
                                                               jnp.zeros((2, cfg.input_dim), jnp.float32), False))
    rng = np.random.default_rng([int(seed), 0x6145])

    def fill(tree: Mapping, stats: bool) -> dict:
        out = {}
        for name in sorted(tree):  # a fixed order: the draws depend on the seed alone
            leaf = tree[name]
            if isinstance(leaf, Mapping):
                if "kernel" in leaf:  # a Dense layer: PyTorch's nn.Linear init, bias included
                    bound = 1.0 / math.sqrt(leaf["kernel"].shape[0])
                    out[name] = {k: rng.uniform(-bound, bound, leaf[k].shape).astype(np.float32)
                                 for k in ("kernel", "bias")}
                else:
                    out[name] = fill(leaf, stats)
            elif stats:  # BatchNorm running statistics
                out[name] = (np.ones if name == "var" else np.zeros)(leaf.shape, np.float32)
            else:  # BatchNorm scale and bias
                out[name] = (np.ones if name == "scale" else np.zeros)(leaf.shape, np.float32)
        return out

    return fill(shapes["params"], False), fill(shapes["batch_stats"], True)


_FIT_CACHE: dict = {}


def _fit_chunk_fn(cfg: AEConfig, n_train: int, n_val: int):
    """The compiled program of ``epochs_per_call`` epochs: training steps, validation, and the
    early-stopping bookkeeping (cached per shape and training hyper-parameters; not per seed).

    Carry: (live (params, batch_stats, opt_state), best (params, batch_stats), best val loss,
    epochs without improvement, stopped). An epoch after stopping (or past ``max_epochs``) is a
    no-op (``lax.cond``). Minibatch indices come from the host (``idx: i32[K, steps, batch]``), so
    the compiled program holds no random number generator and the run is reproducible from the seed.
    """
    # Only what shapes the program is in the key: seed, patience, max_epochs and standardize are data.
    key = (cfg.input_dim, cfg.latent_dim, cfg.hidden, min(cfg.batch_size, n_train), cfg.learning_rate,
           cfg.weight_decay, cfg.epochs_per_call, n_train, n_val)
    if key in _FIT_CACHE:
        return _FIT_CACHE[key]
    model = make_autoencoder(cfg)
    tx = optax.adamw(cfg.learning_rate, weight_decay=cfg.weight_decay)

    def loss_fn(params, batch_stats, xb):
        recon, upd = model.apply({"params": params, "batch_stats": batch_stats}, xb, True, mutable=["batch_stats"])
        return jnp.mean((recon - xb) ** 2), upd["batch_stats"]

    def train_epoch(live, x, idx):
        def step(carry, ib):
            params, batch_stats, opt_state = carry
            (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch_stats, x[ib])
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), batch_stats, opt_state), loss

        live, losses = jax.lax.scan(step, live, idx)
        return live, losses.mean()

    def val_loss(params, batch_stats, xv):
        if n_val == 0:
            return jnp.float32(0.0)
        recon = model.apply({"params": params, "batch_stats": batch_stats}, xv, False)
        return jnp.mean((recon - xv) ** 2)

    def epoch(carry, inputs, x, xv, patience, max_epochs):
        e, idx = inputs

        def run(c):
            live, best, best_loss, wait, _ = c
            live, tl = train_epoch(live, x, idx)
            vl = val_loss(live[0], live[1], xv)
            # Without validation rows every epoch "improves", so the final state is kept.
            improved = (vl < best_loss) if n_val else jnp.bool_(True)  # a NaN loss never improves
            best = jax.tree.map(lambda a, b: jnp.where(improved, a, b), (live[0], live[1]), best)
            best_loss = jnp.where(improved, vl, best_loss)
            wait = jnp.where(improved, 0, wait + 1)
            stop = (wait >= patience) if n_val else jnp.bool_(False)
            return ((live, best, best_loss, wait, stop | (e + 1 >= max_epochs)),
                    (tl, vl, improved, jnp.bool_(True)))

        def skip(c):
            return c, (jnp.float32(jnp.nan), jnp.float32(jnp.nan), jnp.bool_(False), jnp.bool_(False))

        return jax.lax.cond(carry[4], skip, run, carry)

    @jax.jit
    def chunk(carry, first_epoch, idx, x, xv, patience, max_epochs):
        es = first_epoch + jnp.arange(idx.shape[0])
        return jax.lax.scan(lambda c, inp: epoch(c, inp, x, xv, patience, max_epochs), carry, (es, idx))

    _FIT_CACHE[key] = (chunk, tx)
    return chunk, tx


def _epoch_indices(seed: int, first: int, n_epochs: int, n_train: int, batch: int) -> np.ndarray:
    """i32[n_epochs, steps, batch]: a fresh permutation of the training rows per epoch (epoch e's
    from the seed and e alone); the last batch wraps around so that every row is seen each epoch."""
    steps = -(-n_train // batch)
    out = np.empty((n_epochs, steps, batch), np.int32)
    for k in range(n_epochs):
        perm = np.random.default_rng([int(seed), first + k]).permutation(n_train)
        out[k] = perm[np.arange(steps * batch) % n_train].reshape(steps, batch)
    return out


def fit_autoencoder(train_x, val_x, config: AEConfig, *, progress: bool = False, name: str = "") -> FittedAutoencoder:
    """Train an autoencoder on ``train_x`` with early stopping on ``val_x`` (docs/reference.md 1.6).

    Gradients see the training rows only; ``val_x`` decides when to stop and which epoch's state is
    kept (the one with the lowest validation loss). Unlike the reference, the best state is also
    restored when training runs to ``max_epochs`` without stopping (docs/reference.md 6.23). The result
    depends on ``config.seed`` only (not on ``epochs_per_call``).

    Args:
      train_x: f32[N, D] training rows (no NaN). N >= 2. A batch is min(batch_size, N) rows.
      val_x: f32[Nv, D] validation rows, or None / empty: no early stopping, the final state is kept.
      config: :class:`AEConfig` (its ``input_dim`` must be D).
      progress: print one line per ``epochs_per_call`` epochs.
      name: the modality, for messages.

    Returns:
      :class:`FittedAutoencoder`.
    """
    x = np.asarray(train_x, np.float32)
    xv = np.zeros((0, x.shape[1] if x.ndim == 2 else 0), np.float32) if val_x is None else np.asarray(val_x, np.float32)
    where = f"modality '{name}': " if name else ""
    if x.ndim != 2 or x.shape[1] != config.input_dim:
        raise CgjaxError(f"{where}training matrix has shape {x.shape}; the config expects {config.input_dim} columns")
    if xv.ndim != 2 or xv.shape[1] != config.input_dim:
        raise CgjaxError(f"{where}validation matrix has shape {xv.shape}; expected {config.input_dim} columns")
    if len(x) < 2:
        raise CgjaxError(f"{where}an autoencoder needs at least 2 training rows, got {len(x)}")
    if not (np.isfinite(x).all() and np.isfinite(xv).all()):
        raise CgjaxError(f"{where}autoencoder inputs must be finite (impute missing values first)")
    mean = std = None
    if config.standardize:  # train rows only; constant features are left unscaled (std 1)
        mean, std = x.astype(np.float64).mean(axis=0), x.astype(np.float64).std(axis=0)
        std = np.where(std < 1e-12 * np.maximum(1.0, np.abs(mean)), 1.0, std)
        mean, std = mean.astype(np.float32), std.astype(np.float32)
        x, xv = (x - mean) / std, (xv - mean) / std
    chunk, tx = _fit_chunk_fn(config, len(x), len(xv))
    batch = min(config.batch_size, len(x))
    params, batch_stats = init_autoencoder(config, config.seed)
    carry = ((params, batch_stats, tx.init(params)), (params, batch_stats), jnp.float32(jnp.inf), jnp.int32(0),
             jnp.bool_(False))
    xd, xvd = jnp.asarray(x), jnp.asarray(xv)
    history: list[dict] = []
    best_epoch = None
    K = config.epochs_per_call
    for first in range(0, config.max_epochs, K):
        idx = _epoch_indices(config.seed, first, K, len(x), batch)
        carry, (tl, vl, improved, ran) = chunk(carry, jnp.int32(first), jnp.asarray(idx), xd, xvd,
                                               jnp.int32(config.patience), jnp.int32(config.max_epochs))
        tl, vl, improved, ran = (np.asarray(a) for a in (tl, vl, improved, ran))
        for k in np.flatnonzero(ran):
            history.append({"epoch": first + int(k) + 1, "train_loss": float(tl[k]),
                            "val_loss": float(vl[k]) if len(xv) else None})
            if improved[k]:
                best_epoch = first + int(k) + 1
        if progress and history:
            h = history[-1]
            print(f"  AE {name}: epoch {h['epoch']}  train MSE {h['train_loss']:.4f}"
                  + (f"  val MSE {h['val_loss']:.4f}" if len(xv) else ""), flush=True)
        if bool(carry[4]):
            break
    params, batch_stats = jax.tree.map(np.asarray, jax.device_get(carry[1]))
    stopped = bool(len(xv)) and int(carry[3]) >= config.patience
    best_loss = float(carry[2]) if len(xv) and best_epoch is not None else None
    return FittedAutoencoder(config, params, batch_stats, history, best_epoch, best_loss, stopped, mean, std)


# ---------------------------------------------------------------------------------------------
# PCA (WSI)
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class FittedPCA:
    """StandardScaler + PCA as plain arrays (docs/reference.md 1.7).

    encode: z = ((x - mean) / scale - pca_mean) @ components.T;  decode: the inverse on the span.
    """

    mean: np.ndarray  # f64[D]
    scale: np.ndarray  # f64[D]
    components: np.ndarray  # f64[d, D]
    pca_mean: np.ndarray  # f64[D]
    explained_variance_ratio: np.ndarray  # f64[d]

    def encode(self, x) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.mean):
            raise CgjaxError(f"PCA encode: input has shape {x.shape}, expected [N, {len(self.mean)}]")
        return (((x - self.mean) / self.scale - self.pca_mean) @ self.components.T).astype(np.float32)

    def decode(self, z) -> np.ndarray:
        z = np.asarray(z, np.float64)
        if z.ndim != 2 or z.shape[1] != len(self.components):
            raise CgjaxError(f"PCA decode: input has shape {z.shape}, expected [N, {len(self.components)}]")
        return ((z @ self.components + self.pca_mean) * self.scale + self.mean).astype(np.float32)


def fit_pca(train_x, n_components: int = 32, *, random_state: int = 42) -> FittedPCA:
    """StandardScaler then PCA(n_components, random_state), fitted on the training rows.

    ``n_components`` is capped at min(rows, columns), the most PCA can give.
    """
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(train_x, np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise CgjaxError(f"PCA needs a matrix with at least 2 training rows, got shape {x.shape}")
    scaler = StandardScaler().fit(x)
    k = int(min(n_components, x.shape[0], x.shape[1]))
    pca = PCA(n_components=k, random_state=random_state).fit(scaler.transform(x))
    return FittedPCA(scaler.mean_.copy(), scaler.scale_.copy(), pca.components_.copy(), pca.mean_.copy(),
                     pca.explained_variance_ratio_.copy())


# ---------------------------------------------------------------------------------------------
# A cohort's embedding
# ---------------------------------------------------------------------------------------------
def latent_names(method: str, d: int, feature_names: Sequence[str] | None = None) -> list[str]:
    """Column names of a latent table: ``z0..`` (autoencoder), ``pc1..`` (PCA, as the reference)."""
    if method == "pca":
        return [f"pc{j + 1}" for j in range(d)]
    if method == "none":
        return [str(f) for f in feature_names]
    return [f"z{j}" for j in range(d)]


@dataclasses.dataclass
class ModalityEmbedding:
    """How one modality maps between features and latents.

    Attributes:
      name: the modality. method: ``autoencoder``, ``pca`` or ``none`` (the latent is the features).
      feature_names: D names of the (preprocessed) features. latent_names: d names of the latents.
      model: :class:`FittedAutoencoder`, :class:`FittedPCA`, or None for ``none``.
      info: anything worth recording (preprocessing, row counts).
    """

    name: str
    method: str
    feature_names: list
    latent_names: list
    model: object = None
    info: dict = dataclasses.field(default_factory=dict)

    @property
    def input_dim(self) -> int:
        return len(self.feature_names)

    @property
    def latent_dim(self) -> int:
        return len(self.latent_names)

    def encode(self, x) -> np.ndarray:
        """f32[N, D] -> f32[N, d]."""
        if self.method == "none":
            x = np.asarray(x, np.float32)
            if x.ndim != 2 or x.shape[1] != self.input_dim:
                raise CgjaxError(f"modality '{self.name}': input has shape {x.shape}, expected [N, {self.input_dim}]")
            return x.copy()
        return self.model.encode(x)

    def decode(self, z) -> np.ndarray:
        """f32[N, d] -> f32[N, D] in the preprocessed feature space."""
        if self.method == "none":
            z = np.asarray(z, np.float32)
            if z.ndim != 2 or z.shape[1] != self.latent_dim:
                raise CgjaxError(f"modality '{self.name}': input has shape {z.shape}, expected [N, {self.latent_dim}]")
            return z.copy()
        return self.model.decode(z)


@dataclasses.dataclass
class Embedding:
    """The embeddings of every modality of a cohort (``modalities``: name -> :class:`ModalityEmbedding`)
    and a free-form ``info`` record (what :mod:`cgjax.data.prepare` did)."""

    modalities: dict
    info: dict = dataclasses.field(default_factory=dict)

    def __getitem__(self, name: str) -> ModalityEmbedding:
        if name not in self.modalities:
            raise CgjaxError(f"the embedding has no modality '{name}' (it has {sorted(self.modalities)})")
        return self.modalities[name]

    def __contains__(self, name) -> bool:
        return name in self.modalities

    def encode(self, name: str, x) -> np.ndarray:
        return self[name].encode(x)

    def decode(self, name: str, z) -> np.ndarray:
        return self[name].decode(z)

    def encode_frame(self, name: str, df: pd.DataFrame) -> pd.DataFrame:
        """A samples x features DataFrame (the embedding's feature columns) -> samples x latents."""
        e = self[name]
        missing = [f for f in e.feature_names if f not in df.columns]
        if missing:
            raise CgjaxError(f"modality '{name}': table lacks feature(s) {missing[:5]} the embedding was fitted on")
        z = e.encode(df[e.feature_names].to_numpy(np.float32))
        return pd.DataFrame(z, index=df.index, columns=e.latent_names)


@dataclasses.dataclass(frozen=True)
class EmbeddingOptions:
    """How :func:`fit_embedding` embeds each modality.

    Attributes:
      latent_dim: d for every modality (paper 32).
      methods: modality -> ``autoencoder`` / ``pca`` / ``none``; others get ``default_method``.
        Default: ``wsi`` -> ``pca`` (docs/reference.md 1.7), everything else an autoencoder.
      layouts: modality -> (n_layers, shrink_exponent); default docs/reference.md 8.2 (others
        ``DEFAULT_LAYOUT``).
      batch_size, learning_rate, weight_decay, max_epochs, patience, epochs_per_call, seed,
        standardize: the autoencoders' training (:class:`AEConfig`); the seed of modality i is
        ``seed + i``.
      pca_random_state: PCA's seed (reference 42).
    """

    latent_dim: int = 32
    methods: Mapping[str, str] = dataclasses.field(default_factory=lambda: {"wsi": "pca"})
    default_method: str = "autoencoder"
    layouts: Mapping[str, tuple] = dataclasses.field(default_factory=lambda: dict(AE_LAYOUTS))
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    max_epochs: int = 10000
    patience: int = 10
    epochs_per_call: int = 10
    seed: int = 0
    standardize: bool = False
    pca_random_state: int = 42

    def method_of(self, name: str) -> str:
        m = self.methods.get(name, self.default_method)
        if m not in METHODS:
            raise CgjaxError(f"modality '{name}': unknown embedding method '{m}' (choose from {METHODS})")
        return m

    def ae_config(self, name: str, input_dim: int, seed_offset: int = 0) -> AEConfig:
        n_layers, s = self.layouts.get(name, DEFAULT_LAYOUT)
        return AEConfig(input_dim=input_dim, latent_dim=self.latent_dim, n_layers=int(n_layers),
                        shrink_exponent=float(s), batch_size=self.batch_size, learning_rate=self.learning_rate,
                        weight_decay=self.weight_decay, max_epochs=self.max_epochs, patience=self.patience,
                        epochs_per_call=min(self.epochs_per_call, self.max_epochs), seed=self.seed + seed_offset,
                        standardize=self.standardize)


def fit_embedding(train: Mapping[str, pd.DataFrame], val: Mapping[str, pd.DataFrame] | None = None,
                  options: EmbeddingOptions | None = None, *, progress: bool = False) -> Embedding:
    """Fit every modality's embedding on its training rows (validation rows only for early stopping).

    Args:
      train: modality -> samples x features DataFrame of training rows (no missing cell).
      val: modality -> validation rows with the same columns (autoencoders' early stopping), or None.
      options: :class:`EmbeddingOptions`.
    """
    opt = options or EmbeddingOptions()
    out = {}
    for i, (name, df) in enumerate(train.items()):
        method = opt.method_of(name)
        feats = [str(c) for c in df.columns]
        x = df.to_numpy(np.float32)
        v = None if val is None or name not in val else val[name].reindex(columns=df.columns).to_numpy(np.float32)
        info = {"n_train": int(len(x)), "n_val": int(0 if v is None else len(v))}
        if method == "autoencoder":
            cfg = opt.ae_config(name, x.shape[1], seed_offset=i)
            model = fit_autoencoder(x, v, cfg, progress=progress, name=name)
            d = cfg.latent_dim
        elif method == "pca":
            model = fit_pca(x, opt.latent_dim, random_state=opt.pca_random_state)
            d = len(model.components)
        else:
            model, d = None, x.shape[1]
        out[name] = ModalityEmbedding(name, method, feats, latent_names(method, d, feats), model, info)
    return Embedding(out)


def decode_imputations(tables: Mapping[str, pd.DataFrame], embedding: Embedding) -> dict[str, pd.DataFrame]:
    """Imputed latents (as :func:`cgjax.pipeline.impute` returns them) -> the same rows in feature space.

    Every table has ``sample_id``, ``replicate``, the latent columns of its modality and possibly
    ``attempts``/``passed``; the result has ``sample_id``, ``replicate``, the modality's feature
    names (preprocessed scale), then the other columns.
    """
    out = {}
    for m, df in tables.items():
        e = embedding[m]
        missing = [c for c in e.latent_names if c not in df.columns]
        if missing:
            raise CgjaxError(f"modality '{m}': the imputations lack latent column(s) {missing[:5]} of the "
                             f"embedding; were the models trained on this prepared cohort?")
        x = e.decode(df[e.latent_names].to_numpy(np.float32))
        keys = df[[c for c in ("sample_id", "replicate") if c in df.columns]].reset_index(drop=True)
        rest = df[[c for c in df.columns if c not in e.latent_names and c not in keys.columns]].reset_index(drop=True)
        out[m] = pd.concat([keys, pd.DataFrame(x, columns=e.feature_names), rest], axis=1)
    return out


# ---------------------------------------------------------------------------------------------
# Saving and loading
# ---------------------------------------------------------------------------------------------
def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(_flatten(v, key))
        else:
            out[key] = np.asarray(v)
    return out


def _unflatten(flat: Mapping[str, np.ndarray]) -> dict:
    tree: dict = {}
    for key, v in flat.items():
        node = tree
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = np.asarray(v)
    return tree


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        return None if not np.isfinite(x) else float(x)
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    return x


def _modality_record(e: ModalityEmbedding) -> tuple[dict, dict[str, np.ndarray]]:
    rec = {"method": e.method, "feature_names": list(e.feature_names), "latent_names": list(e.latent_names),
           "info": e.info}
    arrays: dict[str, np.ndarray] = {}
    if e.method == "autoencoder":
        m: FittedAutoencoder = e.model
        rec.update(config=m.config.to_dict(), history=m.history, best_epoch=m.best_epoch,
                   best_val_loss=m.best_val_loss, stopped_early=m.stopped_early)
        arrays.update({f"params/{k}": v for k, v in _flatten(m.params).items()})
        arrays.update({f"batch_stats/{k}": v for k, v in _flatten(m.batch_stats).items()})
        if m.input_mean is not None:
            arrays.update(input_mean=m.input_mean, input_std=m.input_std)
    elif e.method == "pca":
        p: FittedPCA = e.model
        arrays.update(mean=p.mean, scale=p.scale, components=p.components, pca_mean=p.pca_mean,
                      explained_variance_ratio=p.explained_variance_ratio)
    return rec, arrays


def save_embedding(embedding: Embedding, path) -> Path:
    """Write ``embedding`` atomically to the directory ``path`` (replacing what is there).

    Layout: ``embedding.json`` (methods, feature and latent names, autoencoder configs and training
    histories, ``info``; written last with ``"complete": true``) and ``modality_<i>.npz`` (arrays).
    Everything is written to a sibling temporary directory first and renamed into place.
    """
    path = Path(path)
    with atomic_directory(path, marker=META_FILE, what="cgjax embedding") as tmp:
        meta = {"format_version": FORMAT_VERSION, "kind": "cgjax_embedding", "modalities": {},
                "info": embedding.info}
        for i, (name, e) in enumerate(embedding.modalities.items()):
            rec, arrays = _modality_record(e)
            rec["file"] = f"modality_{i}.npz"
            np.savez(tmp / rec["file"], **arrays)
            meta["modalities"][name] = rec
        meta["complete"] = True
        write_json_synced(tmp / META_FILE, _jsonable(meta), indent=1)  # last: marks the rest complete
    return path


def load_embedding(path) -> Embedding:
    """Read an embedding directory written by :func:`save_embedding`.

    Raises:
      CheckpointError naming the directory or file: missing, half-written, another format version,
      or arrays that do not fit the recorded configuration.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such embedding directory")
    meta_file = path / META_FILE
    if not meta_file.exists():
        raise CheckpointError(f"{path}: not a complete cgjax embedding (no {META_FILE}; half-written or not "
                              f"an embedding)")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{meta_file}: corrupt metadata ({e})") from None
    if meta.get("kind") != "cgjax_embedding" or not meta.get("complete"):
        raise CheckpointError(f"{path}: not a complete cgjax embedding")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: embedding format version {meta.get('format_version')}; this cgjax "
                              f"reads version {FORMAT_VERSION}")
    mods = {}
    for name, rec in meta["modalities"].items():
        f = path / rec["file"]
        try:
            with np.load(f) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{f}: cannot read the arrays of modality '{name}' ({e})") from None
        method = rec["method"]
        try:
            if method == "autoencoder":
                cfg = AEConfig(**rec["config"])
                params = _unflatten({k[len("params/"):]: v for k, v in arrays.items() if k.startswith("params/")})
                stats = _unflatten({k[len("batch_stats/"):]: v for k, v in arrays.items()
                                    if k.startswith("batch_stats/")})
                _check_ae_shapes(cfg, params, stats, f)
                if cfg.standardize and not {"input_mean", "input_std"} <= set(arrays):
                    raise ValueError("the standardisation arrays are missing")
                model = FittedAutoencoder(cfg, params, stats, rec.get("history", []), rec.get("best_epoch"),
                                          rec.get("best_val_loss"), bool(rec.get("stopped_early")),
                                          arrays.get("input_mean"), arrays.get("input_std"))
            elif method == "pca":
                model = FittedPCA(*(np.asarray(arrays[k], np.float64) for k in
                                    ("mean", "scale", "components", "pca_mean", "explained_variance_ratio")))
                if model.components.shape != (len(rec["latent_names"]), len(rec["feature_names"])):
                    raise ValueError(f"PCA components have shape {model.components.shape}")
            elif method == "none":
                model = None
            else:
                raise ValueError(f"unknown method '{method}'")
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{f}: modality '{name}' does not match its record in {META_FILE} ({e})") from None
        mods[name] = ModalityEmbedding(name, method, rec["feature_names"], rec["latent_names"], model,
                                       rec.get("info", {}))
    return Embedding(mods, meta.get("info", {}))


def _check_ae_shapes(cfg: AEConfig, params, stats, f: Path) -> None:
    want = jax.eval_shape(lambda: make_autoencoder(cfg).init(jax.random.PRNGKey(0), jnp.zeros((2, cfg.input_dim)),
                                                             False))
    for what, tree, ref in (("params", params, want["params"]), ("batch_stats", stats, want["batch_stats"])):
        got = {k: v.shape for k, v in _flatten(tree).items()}
        exp = {k: tuple(v.shape) for k, v in _flatten_abstract(ref).items()}
        if got != exp:
            diff = sorted(set(got.items()) ^ set(exp.items()))[:3]
            raise ValueError(f"{what} do not fit the recorded config (differences: {diff})")


def _flatten_abstract(tree, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(_flatten_abstract(v, key))
        else:
            out[key] = v
    return out


def find_embedding(cohort_path, explicit=None) -> Path:
    """The embedding directory to decode with: ``explicit`` if given, else ``<cohort dir>/embedding``.

    Raises:
      CgjaxError saying where it looked, when neither exists.
    """
    if explicit is not None:
        p = Path(explicit)
        if not (p / META_FILE).exists():
            raise CheckpointError(f"{p}: not an embedding directory (no {META_FILE}); pass the 'embedding' "
                                  f"directory written by 'cgjax prepare'")
        return p
    c = Path(cohort_path)
    if c.is_dir() and (c / EMBEDDING_DIR / META_FILE).exists():
        return c / EMBEDDING_DIR
    raise CgjaxError(f"cannot decode: {c} has no {EMBEDDING_DIR}/{META_FILE} (only cohorts written by "
                     f"'cgjax prepare' carry one); pass --embedding DIR")
