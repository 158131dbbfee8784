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

The code is in three modules, re-exported here and by :mod:`cgjax.embedding`:
:mod:`~cgjax.embedding.autoencoder` (the autoencoder and its trainer), :mod:`~cgjax.embedding.maps`
(PCA, the per-modality and cohort embeddings, fitting and decoding) and
:mod:`~cgjax.embedding.storage` (the embedding directory).
"""

from __future__ import annotations

from cgjax.embedding.autoencoder import (AEConfig, AutoEncoder, FittedAutoencoder, fit_autoencoder, hidden_sizes,
                                         init_autoencoder, make_autoencoder)
from cgjax.embedding.maps import (AE_LAYOUTS, DEFAULT_LAYOUT, METHODS, Embedding, EmbeddingOptions, FittedPCA,
                                  ModalityEmbedding, decode_imputations, fit_embedding, fit_pca, latent_names)
from cgjax.embedding.storage import (EMBEDDING_DIR, FORMAT_VERSION, META_FILE, find_embedding, load_embedding,
                                     save_embedding)

__all__ = ["AEConfig", "AutoEncoder", "make_autoencoder", "FittedAutoencoder", "FittedPCA", "ModalityEmbedding",
           "Embedding", "EmbeddingOptions", "hidden_sizes", "init_autoencoder", "fit_autoencoder", "fit_pca",
           "fit_embedding", "save_embedding", "load_embedding", "find_embedding", "decode_imputations",
           "latent_names", "AE_LAYOUTS", "METHODS", "EMBEDDING_DIR", "DEFAULT_LAYOUT", "META_FILE", "FORMAT_VERSION"]
