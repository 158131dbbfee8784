"""A cohort's embedding: StandardScaler + PCA for slides (:class:`FittedPCA`), one modality's map
between features and latents (:class:`ModalityEmbedding`), every modality's (:class:`Embedding`),
how each is chosen (:class:`EmbeddingOptions`), fitting them (:func:`fit_embedding`) and decoding
imputed latents (:func:`decode_imputations`). Overview: :mod:`cgjax.embedding.core`."""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from cgjax.embedding.autoencoder import AEConfig, fit_autoencoder
from cgjax.errors import CgjaxError

METHODS = ("autoencoder", "pca", "none")

# docs/reference.md 8.2: (n_layers, shrink_exponent) per modality; other modalities get DEFAULT_LAYOUT.
AE_LAYOUTS = {"rnaseq": (3, 1.0), "rppa": (2, 1.0), "cna": (2, 3.0)}
DEFAULT_LAYOUT = (2, 1.0)

__all__ = ["AE_LAYOUTS", "DEFAULT_LAYOUT", "METHODS", "Embedding", "EmbeddingOptions", "FittedPCA",
           "ModalityEmbedding", "decode_imputations", "fit_embedding", "fit_pca", "latent_names"]


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
