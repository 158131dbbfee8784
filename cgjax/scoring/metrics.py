"""Evaluation metrics: reconstruction, calibration, distribution coverage, privacy, downstream.

All functions are pure numpy (float64 internally) and take plain arrays. Shape conventions:

* ``x``: f[N, D] real rows (e.g. the standardized 32-d latent of one modality on the test set).
* ``xhat``: f[N, D] one generation, or f[R, N, D] R replicate generations of the same rows
  (replicate-major, i.e. ``xhat[r]`` is repetition r; the reference CSVs store repetition r in rows
  ``[r*N, (r+1)*N)``, so ``csv.reshape(R, N, D)`` gives this layout).
* ``samples``: f[R, N, D] R >= 1 draws per row.

Where the reference code and the paper disagree we follow what docs/reference.md (section numbers cited
below as "REF x.y") recommends, and say so.
"""

from __future__ import annotations

import warnings
from typing import Iterator

import numpy as np
from scipy.spatial.distance import cdist

__all__ = [
    "r2_pooled",
    "r2_per_sample",
    "r2_per_feature",
    "variance_pct",
    "energy_score",
    "interval_coverage",
    "range_coverage",
    "expected_range_coverage",
    "variance_ratio",
    "energy_distance",
    "prdc",
    "dcr",
    "c_index",
    "macro_f1",
    "weighted_f1",
    "balanced_accuracy",
]

# Rows of the left operand per block when a distance matrix is formed piecewise. 1024 x 13,500
# float64 distances = 110 MB, so even the full 10 x 1350 generations never need the whole matrix.
_CHUNK = 1024


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _as_2d(name: str, a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D [N, D], got shape {a.shape}")
    return a


def _as_replicates(x: np.ndarray, xhat) -> tuple[np.ndarray, bool]:
    """Return (xhat as f64[R, N, D], whether the input had a replicate axis)."""
    xhat = np.asarray(xhat, dtype=np.float64)
    if xhat.ndim == 2:
        squeeze, xhat = True, xhat[None]
    elif xhat.ndim == 3:
        squeeze = False
    else:
        raise ValueError(f"xhat must be [N, D] or [R, N, D], got shape {xhat.shape}")
    if xhat.shape[1:] != x.shape:
        raise ValueError(f"xhat rows {xhat.shape[1:]} do not match x {x.shape}")
    return xhat, squeeze


def _samples_and_target(samples, y) -> tuple[np.ndarray, np.ndarray]:
    samples = np.asarray(samples, dtype=np.float64)
    y = _as_2d("y", y)
    if samples.ndim != 3 or samples.shape[1:] != y.shape:
        raise ValueError(f"samples must be [R, N, D] with [N, D] = {y.shape}, got {samples.shape}")
    return samples, y


def _finish(values: np.ndarray, squeeze: bool):
    return float(values[0]) if squeeze else values


def _row_blocks(n: int) -> Iterator[slice]:
    chunk = _CHUNK  # read at call time so tests can shrink it to exercise the blocking
    for start in range(0, n, chunk):
        yield slice(start, min(start + chunk, n))


def _mean_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean of the full Euclidean distance matrix between rows of a [n, D] and b [m, D]."""
    total = 0.0
    for rows in _row_blocks(len(a)):
        total += cdist(a[rows], b).sum()
    return total / (len(a) * len(b))


def _min_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """f[n]: distance from each row of a to its nearest row of b."""
    out = np.empty(len(a))
    for rows in _row_blocks(len(a)):
        out[rows] = cdist(a[rows], b).min(axis=1)
    return out


def _kth_neighbour_radius(a: np.ndarray, k: int) -> np.ndarray:
    """f[n]: distance from each row of a to its k-th nearest *other* row of a.

    That is the (k+1)-th smallest distance counting the row itself (distance 0), as in the
    reference `compute_prdc` and the `prdc` package (docs/reference.md 5.7); duplicates of a row count as
    neighbours at distance 0.
    """
    if len(a) <= k:
        raise ValueError(f"need more than k={k} rows for a k-th neighbour radius, got {len(a)}")
    out = np.empty(len(a))
    for rows in _row_blocks(len(a)):
        d = cdist(a[rows], a)
        out[rows] = np.partition(d, k, axis=1)[:, k]
    return out


# ---------------------------------------------------------------------------------------------
# reconstruction (docs/reference.md 5.2, 5.3)
# ---------------------------------------------------------------------------------------------
def r2_pooled(x, xhat):
    """Pooled ("flattened") R², docs/reference.md 5.2 definition A, the one we recommend for all tables.

    R² = 1 − Σ_{n,f} (x − x̂)² / Σ_{n,f} (x − x̄)², x̄ = the single scalar mean of all entries of x.
    Not sklearn's ``uniform_average`` nor ``variance_weighted`` (docs/reference.md 5.2).

    Args:
      x: f[N, D] real rows.
      xhat: f[N, D] or f[R, N, D] predictions.
    Returns:
      float, or f[R] (one value per replicate) when xhat has a replicate axis.
    """
    x = _as_2d("x", x)
    xhat, squeeze = _as_replicates(x, xhat)
    ss_res = ((xhat - x) ** 2).sum(axis=(1, 2))
    ss_tot = ((x - x.mean()) ** 2).sum()
    return _finish(1.0 - ss_res / ss_tot, squeeze)


def r2_per_sample(x, xhat):
    """Per-sample R² averaged over rows, docs/reference.md 5.2 definition B (coherent rejection tester, docs/reference.md 4.4).

    Each row: 1 − Σ_f (x̂ − x)² / (Σ_f (x − mean_f x)² + 1e-8); then the mean over rows. The 1e-8 is
    the reference's guard against constant rows and is kept for parity.

    Args:
      x: f[N, D]; xhat: f[N, D] or f[R, N, D].
    Returns:
      float, or f[R].
    """
    x = _as_2d("x", x)
    xhat, squeeze = _as_replicates(x, xhat)
    ss_res = ((xhat - x) ** 2).sum(axis=2)  # [R, N]
    ss_tot = ((x - x.mean(axis=1, keepdims=True)) ** 2).sum(axis=1) + 1e-8  # [N]
    return _finish((1.0 - ss_res / ss_tot).mean(axis=1), squeeze)


def r2_per_feature(x, xhat, feature_mean=None):
    """Per-feature R², uniformly averaged over features, docs/reference.md 5.2 definition C.

    Per feature f: 1 − Σ_n (x − x̂)² / Σ_n (x − μ_f)². ``feature_mean`` lets μ be the mean of a larger
    set than x, as the reference's per-cancer breakdown does (rows restricted to one cancer type,
    μ = full-test-set feature mean). A feature with zero denominator scores 1 if it is predicted
    exactly and 0 otherwise (sklearn's ``force_finite`` convention; the reference does not say).

    Args:
      x: f[N, D]; xhat: f[N, D] or f[R, N, D]; feature_mean: f[D] or None (= x.mean(0)).
    Returns:
      float, or f[R].
    """
    x = _as_2d("x", x)
    xhat, squeeze = _as_replicates(x, xhat)
    mu = x.mean(axis=0) if feature_mean is None else np.asarray(feature_mean, dtype=np.float64)
    if mu.shape != (x.shape[1],):
        raise ValueError(f"feature_mean must have shape ({x.shape[1]},), got {mu.shape}")
    ss_res = ((xhat - x) ** 2).sum(axis=1)  # [R, D]
    ss_tot = np.broadcast_to(((x - mu) ** 2).sum(axis=0), ss_res.shape)  # [R, D]
    safe = ss_tot > 0
    r2 = np.where(safe, 1.0 - ss_res / np.where(safe, ss_tot, 1.0), (ss_res == 0).astype(float))
    return _finish(r2.mean(axis=1), squeeze)


def variance_pct(samples, x_real) -> float:
    """Output variance as a percentage of the real-data variance (paper Table 1 brackets).

    docs/reference.md 5.3 [GAP: no reference code]; we use the form docs/reference.md 5.3 suggests, with population variances
    (ddof 0):  100 × mean_{n,f} Var_r(samples[r, n, f]) / mean_f Var_n(x_real[n, f]).

    Args:
      samples: f[R, N, D] R generations per test row; x_real: f[N', D] real rows (usually the
        same test rows, N' = N, but any real reference set works).
    Returns:
      float, in percent.
    """
    samples = np.asarray(samples, dtype=np.float64)
    x_real = _as_2d("x_real", x_real)
    if samples.ndim != 3 or samples.shape[2] != x_real.shape[1]:
        raise ValueError(f"samples must be [R, N, {x_real.shape[1]}], got {samples.shape}")
    return float(100.0 * samples.var(axis=0).mean() / x_real.var(axis=0).mean())


# ---------------------------------------------------------------------------------------------
# probabilistic calibration (ours: no reference counterpart)
# ---------------------------------------------------------------------------------------------
def energy_score(samples, y) -> np.ndarray:
    """Energy score of the empirical predictive distribution of each row (lower is better).

    ES_n = (1/R) Σ_r ||X_r − y_n|| − 1/(2 R (R−1)) Σ_{r≠s} ||X_r − X_s||, the unbiased (distinct-pair)
    estimator of E||X − y|| − ½ E||X − X'||. In 1-D it is the CRPS. The pair sum is formed one
    replicate at a time, so memory stays O(R·N·D).

    Args:
      samples: f[R, N, D] with R >= 2; y: f[N, D] observed rows.
    Returns:
      f[N].
    """
    samples, y = _samples_and_target(samples, y)
    r = samples.shape[0]
    if r < 2:
        raise ValueError("energy_score needs R >= 2 replicates for the X-X' term")
    term_obs = np.linalg.norm(samples - y, axis=2).mean(axis=0)  # [N]
    pair_sum = np.zeros(y.shape[0])
    for i in range(r - 1):  # each unordered pair once
        pair_sum += np.linalg.norm(samples[i + 1 :] - samples[i], axis=2).sum(axis=0)
    # Σ_{r≠s} = 2 Σ_{r<s}; ½ · 2 Σ_{r<s} / (R(R−1)).
    return term_obs - pair_sum / (r * (r - 1))


def interval_coverage(samples, y, level: float = 0.9) -> float:
    """Fraction of entries of y inside the central ``level`` interval of their replicates.

    Interval per entry (n, f): [q_{(1−level)/2}, q_{(1+level)/2}] of samples[:, n, f] (``np.quantile``,
    linear interpolation), closed at both ends. A calibrated sampler gives ≈ ``level``.

    Args:
      samples: f[R, N, D]; y: f[N, D]; level: in (0, 1).
    Returns:
      float in [0, 1].
    """
    samples, y = _samples_and_target(samples, y)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    lo, hi = np.quantile(samples, [(1.0 - level) / 2.0, (1.0 + level) / 2.0], axis=0)
    return float(((y >= lo) & (y <= hi)).mean())


def range_coverage(samples, y) -> float:
    """Fraction of entries of y inside the range [min_r, max_r] of their R replicates (closed).

    Unlike a central ``level`` interval estimated from few replicates, its expected coverage is known
    exactly for any R: if y and the R replicates are exchangeable continuous draws (a calibrated
    sampler: the replicates and the truth come from the same posterior), the rank of y among the
    R + 1 values is uniform, and y is inside the range unless it is the smallest or the largest, so

        E[coverage] = (R - 1) / (R + 1)        (:func:`expected_range_coverage`).

    An overconfident sampler covers less, an overdispersed one more.

    Args:
      samples: f[R, N, D] (R >= 1); y: f[N, D].
    Returns:
      float in [0, 1].
    """
    samples, y = _samples_and_target(samples, y)
    return float(((y >= samples.min(axis=0)) & (y <= samples.max(axis=0))).mean())


def expected_range_coverage(replicates: int) -> float:
    """(R - 1) / (R + 1): the expected :func:`range_coverage` of a calibrated sampler with R replicates."""
    if replicates < 1:
        raise ValueError(f"need at least 1 replicate, got {replicates}")
    return (replicates - 1) / (replicates + 1)


def variance_ratio(samples, posterior_var, ddof: int = 1) -> float:
    """Sampled variance over a known posterior variance: ≈ 1 for a calibrated sampler.

    Ratio of means: mean_{n,f} Var_r(samples[:, n, f]) / mean_{n,f} posterior_var. ``ddof=1`` (the
    unbiased replicate variance) by default, because the denominator is a true variance; note that
    ``variance_pct`` uses ddof 0 as docs/reference.md 5.3 suggests.

    Args:
      samples: f[R, N, D]; posterior_var: f[N, D], f[D] or a scalar (broadcast to [N, D]).
    Returns:
      float.
    """
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 3:
        raise ValueError(f"samples must be [R, N, D], got {samples.shape}")
    if samples.shape[0] <= ddof:
        raise ValueError(f"need more than ddof={ddof} replicates, got {samples.shape[0]}")
    var = np.broadcast_to(np.asarray(posterior_var, dtype=np.float64), samples.shape[1:])
    return float(samples.var(axis=0, ddof=ddof).mean() / var.mean())


# ---------------------------------------------------------------------------------------------
# distribution coverage / privacy (docs/reference.md 5.7)
# ---------------------------------------------------------------------------------------------
def energy_distance(x, y) -> float:
    """Global energy distance, exactly as the reference coverage notebook (docs/reference.md 5.7).

    ED = sqrt(2·mean D_XY − mean D_XX − mean D_YY), with D the Euclidean distance matrices and the
    means over the full matrices including the zero diagonals (V-statistic). Relation to ``dcor``:
    ``dcor.energy_distance(x, y)`` (default V-statistic, exponent 1) returns the bracket without
    the square root, so ``energy_distance(x, y) == sqrt(dcor.energy_distance(x, y))``. The bracket
    is >= 0 in exact arithmetic; rounding below 0 is clipped.

    Args:
      x: f[n, D]; y: f[m, D].
    Returns:
      float >= 0.
    """
    x, y = _as_2d("x", x), _as_2d("y", y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same width, got {x.shape} and {y.shape}")
    sq = 2.0 * _mean_distance(x, y) - _mean_distance(x, x) - _mean_distance(y, y)
    return float(np.sqrt(max(sq, 0.0)))


def prdc(real, fake, k: int = 10) -> dict:
    """Precision, recall, density, coverage (Naeem et al. 2020) and the P/R F1, docs/reference.md 5.7.

    r_real(i) = distance from real i to its k-th nearest other real row; r_fake(j) likewise within
    fake. All comparisons are strict:
      precision = fraction of fake j with d(i, j) < r_real(i) for some real i;
      recall    = fraction of real i with d(i, j) < r_fake(j) for some fake j;
      density   = (1/k) · mean_j #{i : d(i, j) < r_real(i)};
      coverage  = fraction of real i whose nearest fake j has d(i, j) < r_real(i);
      f1        = 2PR / (P + R + 1e-8), and 0 when P + R <= 1e-8 (the reference's formula).
    The reference implementation only computes precision and recall (its density/coverage path
    returns nothing, docs/reference.md 6 item 20); density and coverage follow the ``prdc`` package.

    Args:
      real: f[n, D]; fake: f[m, D]; both with more than k rows. k = 10 in the reference.
    Returns:
      dict of floats: precision, recall, density, coverage, f1.
    """
    real, fake = _as_2d("real", real), _as_2d("fake", fake)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake must have the same width, got {real.shape}, {fake.shape}")
    r_real = _kth_neighbour_radius(real, k)  # [n]
    r_fake = _kth_neighbour_radius(fake, k)  # [m]
    fake_in_real_ball = np.zeros(len(fake), dtype=bool)
    balls_per_fake = np.zeros(len(fake))
    real_recalled = np.empty(len(real), dtype=bool)
    real_covered = np.empty(len(real), dtype=bool)
    for rows in _row_blocks(len(real)):
        d = cdist(real[rows], fake)  # [chunk, m]
        inside = d < r_real[rows, None]
        fake_in_real_ball |= inside.any(axis=0)
        balls_per_fake += inside.sum(axis=0)
        real_recalled[rows] = (d < r_fake[None, :]).any(axis=1)
        real_covered[rows] = d.min(axis=1) < r_real[rows]
    p, r = float(fake_in_real_ball.mean()), float(real_recalled.mean())
    f1 = 2.0 * p * r / (p + r + 1e-8) if p + r > 1e-8 else 0.0
    return {
        "precision": p,
        "recall": r,
        "density": float(balls_per_fake.mean() / k),
        "coverage": float(real_covered.mean()),
        "f1": f1,
    }


def dcr(generated, train, holdout) -> dict:
    """Distance to closest record (privacy check; ours, not in the reference).

    A generator that copies its training rows puts generated rows much closer to the training set
    than genuinely new real rows (the held-out set) are. Compare the two DCR distributions.

    Args:
      generated: f[G, D]; train: f[T, D] training rows; holdout: f[H, D] real rows never trained on.
    Returns:
      dict with ``dcr_generated`` f[G], ``dcr_holdout`` f[H], ``median_generated``,
      ``median_holdout``, ``holdout_p5`` (5th percentile of the holdout DCRs) and
      ``frac_generated_below_holdout_p5`` (fraction of generated rows with DCR < holdout_p5; ≈ 0.05
      when generated rows are as far from the training set as new real rows are, higher when
      memorised).
    """
    generated, train, holdout = _as_2d("generated", generated), _as_2d("train", train), _as_2d(
        "holdout", holdout
    )
    if not generated.shape[1] == train.shape[1] == holdout.shape[1]:
        raise ValueError("generated, train and holdout must have the same width")
    d_gen = _min_distance(generated, train)
    d_hold = _min_distance(holdout, train)
    p5 = float(np.percentile(d_hold, 5))
    return {
        "dcr_generated": d_gen,
        "dcr_holdout": d_hold,
        "median_generated": float(np.median(d_gen)),
        "median_holdout": float(np.median(d_hold)),
        "holdout_p5": p5,
        "frac_generated_below_holdout_p5": float((d_gen < p5).mean()),
    }


# ---------------------------------------------------------------------------------------------
# downstream (docs/reference.md 5.4-5.6)
# ---------------------------------------------------------------------------------------------
def c_index(event, time, risk, tied_tol: float = 1e-8) -> float:
    """Harrell's concordance index, ``sksurv.metrics.concordance_index_censored`` (docs/reference.md 5.5).

    A pair (i, j) is comparable when i had the event and time_i < time_j, or time_i == time_j and j
    is censored; it is concordant when risk_i > risk_j; risk ties (|Δ| <= tied_tol) count ½.

    Args:
      event: bool[N] (True = event observed); time: f[N]; risk: f[N] (higher = earlier event,
        e.g. ``RandomSurvivalForest.predict``).
    Returns:
      float in [0, 1].
    """
    from sksurv.metrics import concordance_index_censored

    event = np.asarray(event).astype(bool)
    time = np.asarray(time, dtype=np.float64)
    risk = np.asarray(risk, dtype=np.float64)
    return float(concordance_index_censored(event, time, risk, tied_tol=tied_tol)[0])


def macro_f1(y_true, y_pred) -> float:
    """Macro-averaged F1 over the labels present in y_true or y_pred, zero_division 0 (docs/reference.md 5.4/5.5)."""
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, average="macro", zero_division=0))


def weighted_f1(y_true, y_pred) -> float:
    """Support-weighted F1, zero_division 0: the counterfactual curves' metric (docs/reference.md 5.6)."""
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, average="weighted", zero_division=0))


def balanced_accuracy(y_true, y_pred) -> float:
    """Balanced accuracy (mean per-class recall over classes of y_true), sklearn (docs/reference.md 5.4)."""
    from sklearn.metrics import balanced_accuracy_score

    with warnings.catch_warnings():
        # sklearn warns when y_pred has classes absent from y_true; the score is still defined.
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(y_true, y_pred))
