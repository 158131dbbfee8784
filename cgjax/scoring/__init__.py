"""Scoring: the leaf layer of metrics and statistics (numpy/scipy only; imports nothing of cgjax).

:mod:`~cgjax.scoring.metrics` scores imputations (pooled R2, energy score, calibration, DCR,
classification and survival scores); :mod:`~cgjax.scoring.stats` tests differences (paired t,
Holm, repeated-measures ANOVA). Both are used by the model set's selection, the synthetic law's
oracle and every evaluation step, so they sit below all of them.
"""
