"""cgjax: fill in the missing modalities of patient profiles by conditional diffusion, in JAX."""

__version__ = "0.1.0"
