"""Embeddings: the per-modality maps between preprocessed features and the diffusion models' small
latents (Flax autoencoders with their optax trainer, StandardScaler + PCA for slides), fitted on
training rows, saved beside a prepared cohort and used to decode imputations (:mod:`.core`).

A layer of its own, below :mod:`cgjax.data.prepare` (which fits and saves one) and the CLI (which
decodes with one); it imports nothing of cgjax but :mod:`cgjax.errors` and :mod:`cgjax._atomic`.
"""

from cgjax.embedding.core import (AE_LAYOUTS, EMBEDDING_DIR, FORMAT_VERSION, META_FILE, METHODS, AEConfig,
                                  AutoEncoder, Embedding, EmbeddingOptions, FittedAutoencoder, FittedPCA,
                                  ModalityEmbedding, decode_imputations, find_embedding, fit_autoencoder,
                                  fit_embedding, fit_pca, hidden_sizes, init_autoencoder, latent_names,
                                  load_embedding, make_autoencoder, save_embedding)

__all__ = ["AEConfig", "AutoEncoder", "make_autoencoder", "FittedAutoencoder", "FittedPCA", "ModalityEmbedding",
           "Embedding", "EmbeddingOptions", "hidden_sizes", "init_autoencoder", "fit_autoencoder", "fit_pca",
           "fit_embedding", "save_embedding", "load_embedding", "find_embedding", "decode_imputations",
           "latent_names", "AE_LAYOUTS", "METHODS", "EMBEDDING_DIR", "META_FILE", "FORMAT_VERSION"]
