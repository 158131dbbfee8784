"""Embedded datasets: the synthetic TCGA-like cohort with its exact oracle (docs/synthetic.md)."""

from cgjax.datasets.synthetic import (CANCER_TYPES, DEFAULT_N_SAMPLES, LATENT, TABLE4,
                                      GaussianMixtureConditional, SyntheticDraw, SyntheticLaw,
                                      default_law, energy_score, fit_pattern_probs, pooled_r2,
                                      synthetic_tcga)
from cgjax.datasets import zoo
from cgjax.datasets.miniacc import extract_mini_acc, mini_acc, mini_acc_preprocess_options

__all__ = ["CANCER_TYPES", "DEFAULT_N_SAMPLES", "LATENT", "TABLE4", "GaussianMixtureConditional",
           "SyntheticDraw", "SyntheticLaw", "default_law", "energy_score", "fit_pattern_probs",
           "pooled_r2", "synthetic_tcga", "zoo", "mini_acc", "extract_mini_acc", "mini_acc_preprocess_options"]
