"""The per-modality autoencoder and its trainer (the architecture and the training rule:
:mod:`cgjax.embedding.core`'s docstring, docs/reference.md 1.6, 8.2): :class:`AEConfig`, the Flax
:class:`AutoEncoder`, its PyTorch-like initialisation and the compiled early-stopping trainer
:func:`fit_autoencoder`, which returns a :class:`FittedAutoencoder`."""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cgjax.errors import CgjaxError

__all__ = ["AEConfig", "AutoEncoder", "FittedAutoencoder", "fit_autoencoder", "hidden_sizes", "init_autoencoder",
           "make_autoencoder"]


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
