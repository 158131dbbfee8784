"""Calibration of a sampler against a known posterior (or, for PIT and coverage, against truth only).

A user who imputes R replicates uses their spread, so the replicates must be draws from
p(target | given), not only have a good mean. With a planted law (:mod:`cgjax.datasets.zoo`) the
exact posterior is known and a sampler can be scored against it; on real data only the truth is
known, and the rank (PIT) histogram and interval coverage remain.

Shapes: ``samples`` f[R, N, D] (replicate-major), ``y`` f[N, D] true values, ``exact`` f[R', N, D]
exact posterior draws, ``posterior_mean`` / ``posterior_var`` f[N, D].

* variance ratio: mean sampled variance / mean posterior variance (:func:`metrics.variance_ratio`),
  1 when calibrated, > 1 over-dispersed.
* energy excess: 100 (mean_n ES(samples) / mean_n ES(exact) - 1) %, with its Monte-Carlo standard
  error; the distinct-pair estimator is unbiased for any R, so only the noise depends on R (compare
  at the same R anyway).
* gap closed: (R2(prediction) - R2(baseline)) / (R2(exact mean) - R2(baseline)): the share of the
  way from a baseline (KNN) to the best possible point prediction. The mean of R exact draws has
  expected R2 = 1 - (SSE(exact mean) + tr Cov / R) / SST, so even a perfect sampler closes < 1.
* coverage: share of true entries inside the central ``level`` interval of the replicates
  (:func:`metrics.interval_coverage`); needs enough replicates (>= 50 for 90%).
* PIT / rank histogram: the rank of y_{n,f} among its R replicates, 0..R, uniform for a calibrated
  sampler (ties broken at random); a hump in the middle = over-dispersed, a U = under-dispersed.
"""

from __future__ import annotations

import numpy as np

from cgjax.scoring import metrics as _metrics

__all__ = ["energy_excess", "gap_closed", "pit_ranks", "rank_histogram", "rank_uniformity", "calibration_scores"]


def energy_excess(samples, exact, y) -> dict[str, float]:
    """Energy score of ``samples`` relative to exact posterior draws, in percent.

    Args:
      samples: f[R, N, D]; exact: f[R', N, D] exact draws for the same rows; y: f[N, D].
    Returns:
      dict: ``excess_pct`` = 100 (mean ES(samples) / mean ES(exact) - 1), ``se_pct`` its Monte-Carlo
      standard error (delta method over rows: se of the row means of ES(samples) - ES(exact)),
      ``es`` and ``es_exact`` the two mean scores.
    """
    es, ref = _metrics.energy_score(samples, y), _metrics.energy_score(exact, y)
    diff = es - ref
    return {"excess_pct": float(100.0 * (es.mean() / ref.mean() - 1.0)),
            "se_pct": float(100.0 * diff.std(ddof=1) / np.sqrt(len(diff)) / ref.mean()),
            "es": float(es.mean()), "es_exact": float(ref.mean())}


def gap_closed(y, prediction, baseline, best) -> float:
    """Share of the R2 gap from ``baseline`` to ``best`` (the exact posterior mean) closed by
    ``prediction``: (R2(pred) - R2(base)) / (R2(best) - R2(base)), pooled R2. 1 = as good as the
    exact mean, 0 = no better than the baseline, < 0 = worse. All f[N, D]."""
    r2 = lambda p: _metrics.r2_pooled(y, p)
    gap = r2(best) - r2(baseline)
    if gap <= 0:
        raise ValueError(f"the baseline's R2 ({r2(baseline):.4f}) is not below the best ({r2(best):.4f}): "
                         "no gap to close")
    return float((r2(prediction) - r2(baseline)) / gap)


def pit_ranks(samples, y, seed=0) -> np.ndarray:
    """int[N, D]: rank of each true entry among its R replicates, in 0..R.

    rank = #{r: samples[r] < y} + U{0..#{r: samples[r] == y}} (ties broken uniformly at random with
    ``seed``), so for exchangeable (calibrated) draws the rank is uniform on 0..R.
    """
    samples = np.asarray(samples, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if samples.ndim != 3 or samples.shape[1:] != y.shape:
        raise ValueError(f"samples must be [R, {', '.join(map(str, y.shape))}], got {samples.shape}")
    below = (samples < y).sum(0)
    ties = (samples == y).sum(0)
    return below + np.floor(np.random.default_rng(seed).random(y.shape) * (ties + 1)).astype(int)


def rank_histogram(ranks, n_replicates: int) -> np.ndarray:
    """int[R + 1]: counts of each rank 0..R."""
    return np.bincount(np.asarray(ranks).ravel(), minlength=n_replicates + 1)


def rank_uniformity(ranks, n_replicates: int, n_bins: int = 10) -> dict[str, float]:
    """How far a rank histogram is from uniform.

    The R + 1 ranks are grouped into ``min(n_bins, R + 1)`` contiguous bins; with O_b observed and
    E_b = n |bin b| / (R + 1) expected counts, chi2 = sum (O_b - E_b)^2 / E_b on dof = bins - 1.
    Entries of one row (its D features) are dependent, so chi2 is not referred to a chi-square
    distribution; ``deviation`` = sqrt(chi2 / n) is a sample-size-free effect size (about
    sqrt(dof / n) when uniform). ``centre_excess`` = share of PIT values u = (rank + 1/2) / (R + 1)
    in (1/4, 3/4) minus that share for uniform ranks (about 1/2): > 0 over-dispersed (a hump),
    < 0 under-dispersed (a U).

    Returns: dict with chi2, dof, deviation, centre_excess, n.
    """
    ranks = np.asarray(ranks).ravel()
    n = ranks.size
    bins = min(int(n_bins), n_replicates + 1)
    edges = np.linspace(0, n_replicates + 1, bins + 1).round().astype(int)  # rank b in [edges[i], edges[i+1])
    hist = rank_histogram(ranks, n_replicates)
    observed = np.add.reduceat(hist, edges[:-1])
    expected = n * np.diff(edges) / (n_replicates + 1)
    chi2 = float(np.sum((observed - expected) ** 2 / expected))
    central = lambda r: ((r + 0.5) / (n_replicates + 1) > 0.25) & ((r + 0.5) / (n_replicates + 1) < 0.75)
    return {"chi2": chi2, "dof": bins - 1, "deviation": float(np.sqrt(chi2 / n)),
            "centre_excess": float(np.mean(central(ranks)) - np.mean(central(np.arange(n_replicates + 1)))),
            "n": int(n)}


def calibration_scores(samples, y, *, exact, posterior_mean, posterior_var, baseline=None,
                       level: float = 0.9, seed: int = 0) -> dict[str, float]:
    """Every score of this module for one sampler on one (target, given) set of rows.

    Args:
      samples: f[R, N, D] the sampler's replicates (R >= 2); y: f[N, D] truth.
      exact: f[R', N, D] exact posterior draws (use R' = R for a like-for-like energy score).
      posterior_mean, posterior_var: f[N, D] exact posterior moments.
      baseline: f[N, D] a baseline point prediction (e.g. KNN) for ``gap_closed`` (omitted if None).
      level: central interval level for coverage. seed: PIT tie-breaking.
    Returns:
      dict with r2_mean (pooled R2 of the replicate mean), r2_exact_mean, gap_closed, variance_ratio,
      energy_excess_pct, energy_excess_se_pct, coverage, pit_deviation, pit_centre_excess.
    """
    samples = np.asarray(samples, dtype=np.float64)
    mean = samples.mean(0)
    ee = energy_excess(samples, exact, y)
    pit = rank_uniformity(pit_ranks(samples, y, seed), samples.shape[0])
    out = {
        "r2_mean": float(_metrics.r2_pooled(y, mean)),
        "r2_exact_mean": float(_metrics.r2_pooled(y, posterior_mean)),
        "variance_ratio": _metrics.variance_ratio(samples, posterior_var),
        "energy_excess_pct": ee["excess_pct"], "energy_excess_se_pct": ee["se_pct"],
        "coverage": _metrics.interval_coverage(samples, y, level),
        "pit_deviation": pit["deviation"], "pit_centre_excess": pit["centre_excess"],
    }
    if baseline is not None:
        out["gap_closed"] = gap_closed(y, mean, baseline, posterior_mean)
    return out
