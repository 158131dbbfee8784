"""Embeddings that earn their place: each autoencoder against PCA of the same size, on the
validation rows.

Everything cgjax generates goes through a modality's latent space, so decode(encode(x)) caps
every feature-space result. :func:`compare_with_pca` measures that ceiling on the validation rows
for the fitted autoencoder and for a PCA with as many components (fitted on the same training
rows), records both in the modality's ``info``, and (``choose="best"``) replaces the autoencoder
by the PCA when the PCA reconstructs better.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from cgjax.embedding.core import Embedding, EmbeddingOptions, ModalityEmbedding, fit_pca, latent_names
from cgjax.errors import CgjaxError

__all__ = ["CHOICES", "reconstruction_r2", "compare_with_pca"]

CHOICES = ("best", "configured")


def reconstruction_r2(x: np.ndarray, x_hat: np.ndarray, mean: np.ndarray) -> float:
    """1 − Σ (x − x̂)² / Σ (x − mean)² over every row and feature of x f[N, D]; ``mean`` f[D] is the
    training rows' feature mean (the reconstruction that knows nothing about the row)."""
    x, x_hat = np.asarray(x, np.float64), np.asarray(x_hat, np.float64)
    ss_tot = float(((x - np.asarray(mean, np.float64)) ** 2).sum())
    return float("nan") if ss_tot == 0 else 1.0 - float(((x - x_hat) ** 2).sum()) / ss_tot


def compare_with_pca(embedding: Embedding, train: Mapping[str, pd.DataFrame], val: Mapping[str, pd.DataFrame],
                     options: EmbeddingOptions, *, choose: str = "best") -> dict[str, dict]:
    """For every autoencoder modality, the validation reconstruction R2 of the autoencoder and of
    ``fit_pca(train, d)`` (d the autoencoder's latent size; StandardScaler + PCA as for WSI).

    Records in ``embedding[m].info``: ``reconstruction_r2_val`` {"autoencoder": r, "pca": r},
    ``configured_method`` and ``chosen_method``. With ``choose="best"`` a PCA that reconstructs
    the validation rows better replaces the autoencoder in ``embedding`` (in place); with
    ``"configured"`` the autoencoder is kept and both numbers are still recorded. A modality
    without validation rows keeps its autoencoder (nothing to measure on). PCA and ``none``
    modalities are left alone.

    Returns modality -> the record written to its info (autoencoder modalities only).
    """
    if choose not in CHOICES:
        raise CgjaxError(f"embedding choice must be one of {CHOICES}, got {choose!r}")
    out = {}
    for m, e in list(embedding.modalities.items()):
        if e.method != "autoencoder":
            continue
        x_tr = train[m][e.feature_names].to_numpy(np.float32) if m in train else None
        x_va = val[m].reindex(columns=e.feature_names).to_numpy(np.float32) if m in val else np.zeros((0, 1))
        rec = {"configured_method": "autoencoder", "chosen_method": "autoencoder"}
        if len(x_va) == 0 or x_tr is None:
            rec["reconstruction_r2_val"] = None
            e.info.update(rec)
            out[m] = rec
            continue
        pca = fit_pca(x_tr, e.latent_dim, random_state=options.pca_random_state)
        mean = x_tr.astype(np.float64).mean(axis=0)
        r2 = {"autoencoder": reconstruction_r2(x_va, e.decode(e.encode(x_va)), mean),
              "pca": reconstruction_r2(x_va, pca.decode(pca.encode(x_va)), mean)}
        rec["reconstruction_r2_val"] = r2
        if choose == "best" and r2["pca"] > r2["autoencoder"]:
            rec["chosen_method"] = "pca"
            d = len(pca.components)
            embedding.modalities[m] = ModalityEmbedding(m, "pca", list(e.feature_names), latent_names("pca", d),
                                                        pca, {**e.info, **rec})
        else:
            e.info.update(rec)
        out[m] = rec
    return out
