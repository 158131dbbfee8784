"""A calibration check users can run on their own cohort: are the replicates' spreads right?

There is no exact posterior on real data, only the truth; but if a sampler draws from
p(target | given), the true value and its R replicates are exchangeable, so

* **range coverage**: the truth lies inside [min, max] of its R replicates with probability exactly
  p = (R - 1) / (R + 1) (:func:`cgjax.scoring.metrics.expected_range_coverage`; 0.905 for R = 20).
  More = over-dispersed samples, less = over-confident ones.
* **PIT / rank histogram**: the rank of the truth among its replicates is uniform on 0..R
  (:func:`cgjax.scoring.calibration.pit_ranks`). A hump in the middle (positive centre excess) =
  over-dispersed, a U (negative) = over-confident, a slope = samples shifted off the truth.

:func:`assess` turns R replicates of N validation rows x D features into these numbers and a
verdict whose thresholds come from their Monte-Carlo error, not from one law:

* Rows are independent, the D features of a row are not. Each indicator (inside the range, rank in
  the central half) is averaged over the row's features, and the standard error is that of the N
  row means, se = sd_n / sqrt(N) (cluster-robust), floored at the binomial se of N D independent
  entries sqrt(p (1 - p) / (N D)), which positively correlated features can only increase.
* A deviation is significant when |z| = |estimate - expected| / se > ``z`` (default 3: a false alarm
  on about 0.3% of calibrated modalities).
* Uniformity of the ranks over B bins: Hotelling's T^2 of the N per-row bin-share vectors (their
  first B - 1 shares) against the uniform shares, referred to F(B - 1, N - B + 1); this also holds
  with correlated features.

:func:`check_model_set` runs this for every modality of a trained model set (each generated from all
the others) on complete validation rows, for one :class:`SampleOptions` and optionally a second
sampler (:func:`default_compare`: the deterministic DDIM eta = 0 against the ancestral default, or
the ancestral sampler against any other); when the two samplers'
spreads (root mean replicate variance) differ by more than ``spread_factor`` it warns: one of them is
wrong, and the one with bad coverage is which. :func:`check_cohort` finds the validation rows of a
cohort the way training split it. ``cgjax train`` runs it after training and stores the result in the
checkpoint (``calibration``), ``cgjax evaluate`` reports it (docs/calibration.md).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np
from scipy import stats

from cgjax.data import Cohort
from cgjax.data.split import apply_split_record
from cgjax.ensemble import ModelSet, sample_target
from cgjax.errors import CgjaxError, ConfigError
from cgjax.pipeline import scaled_inputs
from cgjax.sampling.options import SampleOptions, describe_options, with_method
from cgjax.sampling.solvers import SolverConfig
from cgjax.scoring import calibration as _cal
from cgjax.scoring.metrics import expected_range_coverage, range_coverage

__all__ = ["assess", "sentence", "check_draws", "check_model_set", "method_notes", "validation_rows", "check_cohort",
           "default_compare", "describe_options", "DEFAULT_REPLICATES", "DEFAULT_ROWS", "VERDICTS"]

DEFAULT_REPLICATES = 20  # R: ranks 0..20; a calibrated range covers 0.905
DEFAULT_ROWS = 128  # validation rows per modality (cost: R x rows samples per target and sampler)
VERDICTS = ("calibrated", "over-dispersed", "over-confident", "miscalibrated")


def _clustered_se(values: np.ndarray, var: float) -> float:
    """Standard error of the mean of ``values`` f[N, D] (rows independent, features not): the sd of
    the N row means over sqrt(N), floored at sqrt(var / (N D)), the se of N D independent entries
    of variance ``var`` under calibration (p (1 - p) for an indicator of probability p)."""
    n, d = values.shape
    cluster = values.mean(1).std(ddof=1) / np.sqrt(n) if n > 1 else np.inf
    return float(max(cluster, np.sqrt(var / (n * d))))


def _uniformity_test(ranks: np.ndarray, R: int, n_bins: int) -> tuple[float, float]:
    """Hotelling T^2 of the per-row shares of ranks in each bin against uniform; returns (T^2, p).

    ranks int[N, D]. The R + 1 ranks are grouped into B contiguous bins as in
    :func:`cgjax.scoring.calibration.rank_uniformity`; h_n f[B] = share of row n's D ranks in each
    bin, e_b = |bin b| / (R + 1). With the first k = B - 1 coordinates (the shares sum to 1),
    T^2 = N (hbar - e)^T S^-1 (hbar - e), S the sample covariance of h_n, and
    (N - k) / (k (N - 1)) T^2 ~ F(k, N - k) under uniform ranks (exact for Gaussian h_n)."""
    n = ranks.shape[0]
    B = min(int(n_bins), R + 1)
    edges = np.linspace(0, R + 1, B + 1).round().astype(int)
    k = B - 1
    if n <= k + 1:
        return float("nan"), float("nan")
    b = np.searchsorted(edges, ranks, side="right") - 1  # [N, D] bin of each rank
    h = (b[:, :, None] == np.arange(B)).mean(1)[:, :k]  # [N, k]
    diff = h.mean(0) - (np.diff(edges) / (R + 1))[:k]
    S = np.cov(h, rowvar=False).reshape(k, k)
    t2 = float(n * diff @ np.linalg.pinv(S) @ diff)
    return t2, float(stats.f.sf((n - k) / (k * (n - 1)) * t2, k, n - k))


def assess(samples, y, *, z: float = 3.0, alpha: float = 1e-3, n_bins: int = 10, seed: int = 0) -> dict:
    """Calibration of R replicates of N rows against the truth, with a verdict.

    Args:
      samples: f[R, N, D] replicates (R >= 2); y: f[N, D] the true values.
      z: a deviation counts when it exceeds ``z`` standard errors (module docstring).
      alpha: the rank histogram is called non-uniform below this p-value.
      n_bins: bins of the rank histogram for the uniformity test. seed: PIT tie-breaking.
    Returns:
      dict (JSON-ready): replicates, rows, features; range_coverage, expected_coverage
      (R - 1) / (R + 1), coverage_se, coverage_z; rank_histogram (int counts of ranks 0..R);
      uniformity_t2, uniformity_p; centre_excess (PIT share in (1/4, 3/4) minus that of uniform
      ranks; > 0 hump, < 0 U), centre_se, centre_z; pit_mean_shift (mean PIT - 1/2; > 0: the truth
      sits above the samples), shift_z; spread (root mean replicate variance, ddof 1); verdict:
      ``over-dispersed`` if coverage_z > z, ``over-confident`` if coverage_z < -z, else
      ``miscalibrated`` if uniformity_p < alpha (ranks not uniform: shifted or misshapen), else
      ``calibrated``.
    """
    samples = np.asarray(samples, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if samples.ndim != 3 or samples.shape[1:] != y.shape or samples.shape[0] < 2:
        raise CgjaxError(f"calibration check: samples must be [R >= 2, {', '.join(map(str, y.shape))}], "
                         f"got {list(samples.shape)}")
    R, n, d = samples.shape
    p = expected_range_coverage(R)
    coverage = range_coverage(samples, y)
    inside = ((y >= samples.min(0)) & (y <= samples.max(0))).astype(np.float64)
    cov_se = _clustered_se(inside, p * (1 - p))
    ranks = _cal.pit_ranks(samples, y, seed)
    uni = _cal.rank_uniformity(ranks, R, n_bins)
    u = (ranks + 0.5) / (R + 1)
    centre = ((u > 0.25) & (u < 0.75)).astype(np.float64)
    q = float(centre.mean() - uni["centre_excess"])  # the central share of uniform ranks
    centre_se = _clustered_se(centre, q * (1 - q))
    shift = float(u.mean() - 0.5)
    shift_se = _clustered_se(u, float(np.var((np.arange(R + 1) + 0.5) / (R + 1))))  # uniform ranks
    t2, pval = _uniformity_test(ranks, R, n_bins)
    cov_z = (coverage - p) / cov_se
    if cov_z > z:
        verdict = "over-dispersed"
    elif cov_z < -z:
        verdict = "over-confident"
    elif pval < alpha:
        verdict = "miscalibrated"
    else:
        verdict = "calibrated"
    return {
        "replicates": R, "rows": n, "features": d,
        "range_coverage": coverage, "expected_coverage": p, "coverage_se": cov_se, "coverage_z": float(cov_z),
        "rank_histogram": [int(c) for c in _cal.rank_histogram(ranks, R)],
        "uniformity_t2": t2, "uniformity_p": pval,
        "centre_excess": uni["centre_excess"], "centre_se": centre_se,
        "centre_z": float((centre.mean() - q) / centre_se),
        "pit_mean_shift": shift, "shift_z": float(shift / shift_se),
        "spread": float(np.sqrt(samples.var(0, ddof=1).mean())),
        "verdict": verdict,
    }


def sentence(modality: str, a: Mapping) -> str:
    """One human line for an :func:`assess` result, e.g. ``rna: samples over-dispersed: range
    coverage 0.97 vs 0.90 expected for 20 replicates (z = +6.1); PIT hump (centre excess +0.12)``.
    The PIT is called a hump or a U when its centre excess is more than 2 standard errors from 0,
    and the truth said to sit above or below the samples when the mean PIT shift is."""
    cov = (f"range coverage {a['range_coverage']:.3f} vs {a['expected_coverage']:.3f} expected for "
           f"{a['replicates']} replicates (z = {a['coverage_z']:+.1f})")
    shape = ("hump" if a["centre_excess"] > 0 else "U") if abs(a["centre_z"]) > 2 else "flat"
    pit = f"PIT {shape} (centre excess {a['centre_excess']:+.3f}, uniformity p = {a['uniformity_p']:.2g})"
    v = a["verdict"]
    if v == "calibrated":
        return f"{modality}: calibrated: {cov}; {pit}"
    if v == "miscalibrated":
        side = ("; the truth tends to sit " + ("above" if a["pit_mean_shift"] > 0 else "below") + " the samples"
                if abs(a["shift_z"]) > 2 else "")
        return (f"{modality}: samples miscalibrated (ranks not uniform{side}, mean PIT shift "
                f"{a['pit_mean_shift']:+.3f}): {cov}; {pit}")
    return f"{modality}: samples {v}: {cov}; {pit}"


def default_compare(ms: ModelSet, options: SampleOptions) -> SampleOptions:
    """The second sampler the check compares with by default. For the ancestral sampler: the
    deterministic (probability-flow ODE) DDIM, eta 0, on min(50, T) steps, the accelerated path
    most likely to be miscalibrated. For any other (e.g. ``--sampler dpm --steps 50``): the
    ancestral sampler, the stochastic reference."""
    if options.solver.kind == "ddpm":
        steps = min(50, ms.schedule_cfg.timesteps)
        return dataclasses.replace(options, solver=SolverConfig("ddim", steps, 0.0))
    return dataclasses.replace(options, solver=SolverConfig("ddpm"))


def check_draws(rows: Mapping[str, np.ndarray], draw, compare=None, *, names=("sampler", None),
                spread_factor: float = 1.5, z: float = 3.0, alpha: float = 1e-3) -> dict:
    """Generate each modality from all the others with ``draw`` (and ``compare``) and :func:`assess` it.

    Args:
      rows: modality -> f[N, D_m] complete rows (the truth).
      draw, compare: (target, given: modality -> f[N, D]) -> f[R, N, D_target] replicates;
        ``compare`` (optional) is a second sampler whose spread is compared with ``draw``'s.
      names: how the two samplers are named in the sentences.
      spread_factor: warn when the two samplers' spreads (root mean replicate variance) differ by
        more than this factor either way.
      z, alpha: thresholds of :func:`assess`.
    Returns:
      dict (JSON-ready): ``sampler``, ``compare`` (the names), ``rows``, ``spread_factor``, ``z``,
      ``modalities``: modality -> {**assess, and with ``compare``: ``compare`` its assess,
      ``spread_ratio`` its spread / the sampler's}, ``lines``: one sentence per modality,
      ``warnings``: a sentence for every miscalibrated modality (of either sampler, tagged with its
      name) and every spread disagreement.
    """
    if not spread_factor > 1:
        raise ConfigError(f"calibration check: spread_factor must be > 1, got {spread_factor}")
    mods = list(rows)
    out = {"sampler": names[0], "compare": names[1] if compare is not None else None,
           "rows": int(len(rows[mods[0]])), "spread_factor": spread_factor, "z": z,
           "modalities": {}, "lines": [], "warnings": []}
    for t in mods:
        given = {m: rows[m] for m in mods if m != t}
        a = assess(draw(t, given), rows[t], z=z, alpha=alpha)
        line = sentence(t, a)
        out["lines"].append(line)
        if a["verdict"] != "calibrated":
            out["warnings"].append(f"{line} [{out['sampler']}]")
        if compare is not None:
            b = assess(compare(t, given), rows[t], z=z, alpha=alpha)
            a["compare"] = b
            if b["verdict"] != "calibrated":
                out["warnings"].append(f"{sentence(t, b)} [{out['compare']}]")
            a["spread_ratio"] = b["spread"] / a["spread"] if a["spread"] > 0 else float("inf")
            if not 1 / spread_factor <= a["spread_ratio"] <= spread_factor:
                worse = "second" if abs(b["coverage_z"]) > abs(a["coverage_z"]) else "first"
                out["warnings"].append(
                    f"{t}: samplers disagree on spread: {out['compare']} gives {a['spread_ratio']:.2f}x the spread of "
                    f"{out['sampler']} (range coverage {b['range_coverage']:.3f} vs {a['range_coverage']:.3f}, "
                    f"{a['expected_coverage']:.3f} expected): the {worse} one's spread is the less calibrated")
        out["modalities"][t] = a
    out["replicates"] = next(iter(out["modalities"].values()))["replicates"]
    return out


def check_model_set(ms: ModelSet, val: Mapping[str, np.ndarray], options: SampleOptions | None = None,
                    compare: SampleOptions | None = None, *, max_rows: int = DEFAULT_ROWS, **kwargs) -> dict:
    """:func:`check_draws` for the samplers of a trained model set on complete validation rows.

    Args:
      val: modality -> f[N, D_m], standardised complete rows (the validation split, scaled as
        training scales it); the first ``max_rows`` rows are used.
      options: the sampler to check (default: the default :class:`SampleOptions` with
        :data:`DEFAULT_REPLICATES` replicates); its ``replicates`` must be >= 2.
      compare: a second sampler (e.g. :func:`default_compare`), drawn with the same replicates
        and seed; None for none.
      kwargs: ``spread_factor``, ``z``, ``alpha`` of :func:`check_draws`.
    """
    options = options or SampleOptions(replicates=DEFAULT_REPLICATES)
    if options.replicates < 2:
        raise ConfigError(f"--calibration-replicates must be >= 2 (ranks need replicates), got {options.replicates}")
    if max_rows < 2:
        raise ConfigError(f"--calibration-rows must be >= 2, got {max_rows}")
    missing = [m for m in ms.modalities if m not in val]
    if missing:
        raise CgjaxError(f"calibration check: validation rows lack modalities {missing}")
    n = min(max_rows, min(len(val[m]) for m in ms.modalities))
    if n < 2:
        raise CgjaxError(f"calibration check: needs at least 2 complete validation rows, got {n}")
    rows = {m: np.asarray(val[m][:n], np.float32) for m in ms.modalities}
    if not all(np.isfinite(v).all() for v in rows.values()):
        raise CgjaxError("calibration check: validation rows must be complete (no NaN)")
    if compare is not None:
        compare = dataclasses.replace(compare, replicates=options.replicates, seed=options.seed)
    sampler = lambda o: (lambda t, given: sample_target(ms, t, given, o).x)
    return check_draws(rows, sampler(options), None if compare is None else sampler(compare),
                       names=(describe_options(options), None if compare is None else describe_options(compare)),
                       **kwargs)


def method_notes(checked: dict, other: dict, other_method: str) -> list[str]:
    """One sentence per modality where the sampler of ``checked`` is not calibrated and that of
    ``other`` (another ``--method``, checked on the same rows, e.g. by :func:`check_model_set`) is,
    pointing at ``--method other_method``."""
    notes = []
    for t, a in checked["modalities"].items():
        b = other["modalities"].get(t)
        if b is not None and a["verdict"] != "calibrated" and b["verdict"] == "calibrated":
            notes.append(f"{t}: {other['sampler']} is calibrated where {checked['sampler']} is {a['verdict']} "
                         f"(range coverage {b['range_coverage']:.3f} vs {a['range_coverage']:.3f}, "
                         f"{a['expected_coverage']:.3f} expected): consider --method {other_method}")
    return notes


def validation_rows(ms: ModelSet, cohort: Cohort) -> dict[str, np.ndarray]:
    """The cohort's complete validation rows, standardised with the models' scalers, split as the
    models were trained (:func:`cgjax.data.split.apply_split_record` of ``ms.split``)."""
    cohort, _ = apply_split_record(cohort, ms.split)
    val = cohort.split("val")
    complete = np.all([val.masks[m] for m in ms.modalities if m in val.masks], axis=0) if val.n_samples else []
    if val.n_samples == 0 or not np.any(complete) or any(m not in val.data for m in ms.modalities):
        raise CgjaxError(f"{cohort.source}: no complete validation rows for the calibration check")
    return scaled_inputs(ms, val.subset(np.asarray(complete)))


def check_cohort(ms: ModelSet, cohort: Cohort, options: SampleOptions | None = None,
                 compare: SampleOptions | None = None, *, also_multi: bool = False, **kwargs) -> dict:
    """:func:`check_model_set` on the cohort's validation split (:func:`validation_rows`).

    also_multi: when ``options`` is ``coherent`` and the set has multi-condition models, also check
    ``--method multi`` (the one alternative users have) on the same rows with the same replicates,
    solver and seed, without a second sampler: stored under ``methods`` = {"multi": its check}, and
    ``notes`` (:func:`method_notes`) name the modalities where only multi is calibrated."""
    options = options or SampleOptions(replicates=DEFAULT_REPLICATES)
    val = validation_rows(ms, cohort)
    res = check_model_set(ms, val, options, compare, **kwargs)
    if also_multi and options.method == "coherent" and any(s.kind == "multi" for g in ms.groups.values()
                                                           for s in g.specs):
        other = check_model_set(ms, val, with_method(options, "multi"), **kwargs)
        res["methods"] = {"multi": other}
        res["notes"] = method_notes(res, other, "multi")
    return res
