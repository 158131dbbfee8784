"""Evaluation: every experiment of the paper as library functions (docs/evaluation.md).

Steps (each a plain function of samplers, standardised train/test dicts and labels):

* :func:`reconstruction_study` (Table 1, S2, calibration, per-cancer R2) with the samplers
  :class:`ModelSampler`, :class:`OracleSampler`, :class:`BaselineSampler`;
* :func:`predictive_signal` (Fig 2); :func:`downstream_study` (Table 2, Fig 3);
  :func:`counterfactual_study` (Fig 4, S5); :func:`privacy_study` (Table 3, Fig 5);
* :func:`evaluate` / :func:`run_evaluation` run them all and write report.md, metrics.json, CSVs
  and figures (``cgjax evaluate``).

Building blocks: :mod:`~cgjax.scoring.metrics`, :mod:`~cgjax.evaluate.baselines`,
:mod:`~cgjax.scoring.stats`, :mod:`~cgjax.evaluate.figures`, :mod:`~cgjax.evaluate.report`.
"""

from cgjax.evaluate.counterfactual import (acquisition_curve, counterfactual_study, curve_auc,
                                           variance_score)
from cgjax.evaluate.downstream import chained_completion, downstream_study, removal_conditions
from cgjax.evaluate.predictive import predictive_signal, predictive_summary, predictive_tests
from cgjax.evaluate.privacy import privacy_study, unconditional_samples
from cgjax.evaluate.reconstruction import (BaselineSampler, ModelSampler, OracleSampler, oracle_records,
                                           per_cancer_r2, reconstruction, reconstruction_study, score_samples)
from cgjax.evaluate.run import STEPS, EvalConfig, EvalData, detect_synthetic, evaluate, prepare_data, run_evaluation

__all__ = [
    "acquisition_curve", "counterfactual_study", "curve_auc", "variance_score", "chained_completion",
    "downstream_study", "removal_conditions", "predictive_signal", "predictive_summary", "predictive_tests",
    "privacy_study", "unconditional_samples", "BaselineSampler", "ModelSampler", "OracleSampler",
    "oracle_records", "per_cancer_r2", "reconstruction", "reconstruction_study", "score_samples", "STEPS",
    "EvalConfig", "EvalData", "detect_synthetic", "evaluate", "prepare_data", "run_evaluation",
]
