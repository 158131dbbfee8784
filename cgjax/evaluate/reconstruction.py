"""Reconstruction fidelity (the paper's Table 1 and S2): hide a target modality of complete test
samples, generate it from a subset of the others, and score the samples against the truth.

Everything is computed in the models' standardised space (docs/reference.md 5.2: the paper's R2 is on
the standardised latents). R2 is the pooled definition A per replicate, then mean and std (ddof 0,
as the reference's ``np.std``) over replicates.

Every experiment of :mod:`cgjax.evaluate` reads generated data through a *sampler*: any callable

    sampler(target, given, *, replicates, seed, unconditional=False) -> f[R, N, F]  (or an object with ``.x``)

where ``given`` maps modality -> f[N, D] in the standardised space with NaN rows where a row lacks
the modality (the convention of :func:`cgjax.ensemble.sample_target`). This module provides
:class:`ModelSampler` (our models: single, multi, coherent), :class:`OracleSampler` (the exact
posterior of the synthetic law: ``oracle_sample`` draws, ``oracle_mean`` the posterior mean) and
:class:`BaselineSampler` (KNN / iterative / mean imputation fitted on the train set). A point
predictor returns R identical replicates, so it scores R2 std 0, output variance 0 and the energy
score of a point mass (mean distance to the truth).
"""

from __future__ import annotations

import dataclasses
import itertools
import zlib
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cgjax.ensemble import sample_target
from cgjax.evaluate import baselines, probabilistic
from cgjax.evaluate.probabilistic import PROBABILISTIC_METHODS
from cgjax.sampling.options import SampleOptions, with_method
from cgjax.scoring import calibration, metrics, stats

Sampler = Callable[..., object]
POINT_METHODS = ("knn", "iterative", "mean", "oracle_mean")
BASELINES = POINT_METHODS + PROBABILISTIC_METHODS  # what ``point_sets="full"`` restricts


# ---- helpers ------------------------------------------------------------------------------------

def subsets(sources: Sequence[str], sizes: Iterable[int] | None = None) -> list[tuple[str, ...]]:
    """Non-empty subsets of ``sources`` (all sizes by default), smallest first."""
    sizes = range(1, len(sources) + 1) if sizes is None else sizes
    return [c for k in sizes for c in itertools.combinations(sources, k)]


def stable_seed(seed: int, *parts) -> int:
    """A seed for one job that depends on ``seed`` and the job's name only (not on job order)."""
    return int((int(seed) * 1_000_003 + zlib.crc32("|".join(map(str, parts)).encode())) % (2 ** 31 - 1))


def as_samples(out) -> tuple[np.ndarray, np.ndarray | None]:
    """(x f32[R, N, F], passed bool[R, N] or None) from what a sampler returned."""
    x = np.asarray(getattr(out, "x", out), dtype=np.float32)
    if x.ndim != 3:
        raise ValueError(f"a sampler must return f[R, N, F], got shape {x.shape}")
    passed = getattr(out, "passed", None)
    return x, (None if passed is None else np.asarray(passed, bool))


def concat_modalities(data: Mapping[str, np.ndarray], modalities: Sequence[str]) -> np.ndarray:
    """f32[N, sum D] modalities side by side in ``modalities`` order (NaN rows stay NaN)."""
    return np.concatenate([np.asarray(data[m], np.float32) for m in modalities], axis=1)


def _present(x: np.ndarray) -> np.ndarray:
    return ~np.isnan(x).all(axis=1)


# ---- samplers -----------------------------------------------------------------------------------

class ModelSampler:
    """Our models as a sampler, sampling as ``options`` says
    (:class:`cgjax.sampling.options.SampleOptions`; its replicates, seed and unconditional are
    those of each call)."""

    def __init__(self, ms, options: SampleOptions):
        self.ms, self.options = ms, options
        self.method = options.method

    def __call__(self, target, given, *, replicates=1, seed=0, unconditional=False):
        given = {m: v for m, v in given.items() if m != target}
        if unconditional:  # sample_target needs N rows: absent modalities for every row
            n = len(next(iter(given.values())))
            given = {m: np.full((n, self.ms.dims[m]), np.nan, np.float32) for m in self.ms.modalities if m != target}
        options = dataclasses.replace(self.options, replicates=replicates, seed=seed, unconditional=unconditional)
        return sample_target(self.ms, target, given, options)


class OracleSampler:
    """The synthetic law's exact posterior p(target | given) in the standardised space.

    law: a :class:`cgjax.datasets.SyntheticLaw`; scalers: modality -> (mean f[D], std f[D]) of the
    standardisation (the train scalers); type_prior: the prior over cancer types for conditional
    draws (``law.type_prior(complete_only=True)`` for a test set of complete samples);
    unconditional_prior: the prior for unconditional draws (default: the law's proportions).
    ``mode="sample"`` draws exactly from the posterior, ``mode="mean"`` returns the posterior mean
    (R identical replicates). Rows with different sets of given modalities are conditioned
    separately, so per-row availability (NaN rows) works as for the models.
    """

    def __init__(self, law, scalers, *, mode: str = "sample", type_prior=None, unconditional_prior=None):
        if mode not in ("sample", "mean"):
            raise ValueError(f"mode must be 'sample' or 'mean', got {mode!r}")
        self.law, self.mode = law, mode
        self.scalers = {m: tuple(np.asarray(a, np.float64) for a in scalers[m]) for m in law.modalities}
        self.type_prior, self.unconditional_prior = type_prior, unconditional_prior

    def _native(self, m, x):
        mu, sd = self.scalers[m]
        return np.asarray(x, np.float64) * sd + mu

    def _std(self, m, x):
        mu, sd = self.scalers[m]
        return (x - mu) / sd

    def _groups(self, target, given):
        """Yield (rows, conditional) per pattern of given modalities."""
        names = [m for m in self.law.modalities if m in given and m != target]
        n = len(next(iter(given.values())))
        avail = np.stack([_present(np.asarray(given[m])) for m in names], 1) if names else np.zeros((n, 0), bool)
        for pattern in np.unique(avail, axis=0):
            rows = np.flatnonzero((avail == pattern).all(axis=1))
            g = {m: self._native(m, given[m][rows]) for m, on in zip(names, pattern) if on}
            prior = self.type_prior if g else self.unconditional_prior
            yield rows, self.law.conditional(target, g, prior, n_rows=len(rows))

    def __call__(self, target, given, *, replicates=1, seed=0, unconditional=False):
        n = len(next(iter(given.values())))
        out = np.empty((replicates, n, self.law.dim), np.float32)
        if unconditional:
            given = {m: np.full((n, self.law.dim), np.nan) for m in self.law.modalities if m != target}
        rng = np.random.default_rng(seed)
        for rows, cond in self._groups(target, given):
            x = cond.sample(rng, replicates) if self.mode == "sample" else np.broadcast_to(
                cond.mean(), (replicates, len(rows), self.law.dim))
            out[:, rows] = self._std(target, x)
        return out

    def posterior_variance(self, target, given) -> np.ndarray:
        """f64[N, F]: Var[target | given] per row and feature, in the standardised space."""
        n = len(next(iter(given.values())))
        out = np.empty((n, self.law.dim))
        for rows, cond in self._groups(target, given):
            out[rows] = cond.variance() / self.scalers[target][1] ** 2
        return out


class BaselineSampler:
    """A classical imputer fitted on the train set, as a sampler.

    Point predictors (:mod:`cgjax.evaluate.baselines`, R identical replicates; deterministic, so
    cached per (target, given set)): ``knn`` (k = 5, the reference's baseline), ``iterative``
    (regression on the given modalities), ``mean``. Probabilistic baselines
    (:mod:`cgjax.evaluate.probabilistic`, R draws like our samplers): ``gaussian_sample``
    (regression + residual covariance), ``gaussian_type_sample`` (one such model per cancer type:
    needs ``train_types`` and ``test_types``), ``joint_gaussian_sample`` (one multivariate normal
    fitted by EM on every train row with the target, whatever ``rows`` says), ``mixture_sample`` (a mixture of such regressions
    whose weights depend on the given modalities), ``mice_sample`` (IterativeImputer with posterior
    draws), ``knn_sample`` (one of the 5 nearest neighbours' profiles). ``rows="complete_case"``
    (default) fits on the train rows that have the target and every given modality; ``"all"`` lets
    the imputers use incomplete rows too (much slower: the iterative imputers then run MICE rounds
    over the given block). Further keyword arguments go to the imputer function."""

    def __init__(self, train: Mapping[str, np.ndarray], kind: str = "knn", *, rows: str = "complete_case",
                 train_types=None, test_types=None, **kwargs):
        if kind not in POINT_METHODS[:3] + PROBABILISTIC_METHODS:
            raise ValueError(f"kind must be one of {POINT_METHODS[:3] + PROBABILISTIC_METHODS}, got {kind!r}")
        if rows not in ("complete_case", "all"):
            raise ValueError(f"rows must be 'complete_case' or 'all', got {rows!r}")
        if kind == "gaussian_type_sample":
            if train_types is None or test_types is None:
                raise ValueError("gaussian_type_sample needs train_types and test_types (cancer types)")
            kwargs.update(train_types=np.asarray(train_types), test_types=np.asarray(test_types))
        self.train, self.kind, self.rows, self.kwargs = train, kind, rows, kwargs
        self.point = kind in POINT_METHODS
        self._cache: dict = {}

    def __call__(self, target, given, *, replicates=1, seed=0, unconditional=False):
        names = [m for m in self.train if m in given and m != target]
        n = len(next(iter(given.values())))
        if unconditional or not names:
            if self.point:
                x = np.broadcast_to(np.nanmean(self.train[target], axis=0), (n, self.train[target].shape[1]))
                return np.broadcast_to(x, (replicates, *x.shape)).astype(np.float32)
            names = []
        key = (target, tuple(names), n, tuple(float(np.nansum(given[m])) for m in names))
        if self.point and key in self._cache:
            return np.broadcast_to(self._cache[key], (replicates, n, self._cache[key].shape[1])).astype(np.float32)
        train, kwargs = self.train, dict(self.kwargs)
        if self.rows == "complete_case" and self.kind != "joint_gaussian_sample":  # that one fits on every row
            keep = np.all([_present(self.train[m]) for m in names + [target]], axis=0)
            train = {m: self.train[m][keep] for m in names + [target]}
            if "train_types" in kwargs:
                kwargs["train_types"] = kwargs["train_types"][keep]
        test = {m: given[m] for m in names}
        if self.point:
            fn = {"knn": baselines.knn_impute, "iterative": baselines.iterative_impute,
                  "mean": baselines.mean_impute}[self.kind]
            self._cache[key] = fn(train, test, names, target, **kwargs)
            return np.broadcast_to(self._cache[key], (replicates, n, self._cache[key].shape[1])).astype(np.float32)
        fn = {"gaussian_sample": probabilistic.gaussian_conditional_sample,
              "gaussian_type_sample": probabilistic.gaussian_conditional_sample,
              "joint_gaussian_sample": probabilistic.joint_gaussian_sample,
              "mixture_sample": probabilistic.mixture_conditional_sample,
              "mice_sample": probabilistic.mice_sample, "knn_sample": probabilistic.knn_sample}[self.kind]
        return fn(train, test, names, target, replicates=replicates, seed=seed, n_rows=n, **kwargs)


# ---- scoring ------------------------------------------------------------------------------------

def score_samples(samples: np.ndarray, truth: np.ndarray, posterior_var: np.ndarray | None = None) -> dict:
    """Scores of samples f[R, N, D] of one target against truth f[N, D].

    r2_mean, r2_std: pooled R2 (def. A) per replicate, mean and std (ddof 0); r2_replicates: the R
    values; variance_pct: output variance as % of the real variance (docs/reference.md 5.3, ddof 0);
    r2_of_mean: R2 of the replicate mean; energy_score: mean over rows; coverage_range: fraction of
    entries inside the range [min, max] of their R replicates, and coverage_range_expected =
    (R - 1) / (R + 1), its expectation for a calibrated sampler
    (:func:`cgjax.scoring.metrics.range_coverage`); rank_histogram: int[R + 1], how many entries
    have their true value at rank 0..R among their R replicates (:func:`cgjax.scoring.calibration.pit_ranks`,
    flat for a calibrated sampler); variance_ratio (with ``posterior_var``): replicate variance
    (ddof 1) over the oracle's posterior variance (about 1 when calibrated).

    A point prediction (R = 1, or R identical replicates) has no energy score or coverage: the
    energy score of a point mass is its mean distance to the truth and its interval is empty, so
    neither is comparable with a distribution's. It gets ``mean_distance`` (mean over rows of the
    Euclidean distance to the truth) instead, for the R2 / point tables.
    """
    samples = np.asarray(samples, np.float64)
    truth = np.asarray(truth, np.float64)
    r2 = np.atleast_1d(metrics.r2_pooled(truth, samples))
    R = len(samples)
    identical = R == 1 or bool((samples == samples[:1]).all())
    rec = {"r2_mean": float(r2.mean()), "r2_std": 0.0 if identical else float(r2.std()), "r2_replicates": [float(v) for v in r2],
           "variance_pct": 0.0 if identical else float(metrics.variance_pct(samples, truth)),
           "r2_of_mean": float(metrics.r2_pooled(truth, samples.mean(axis=0)))}
    if not identical:
        rec["energy_score"] = float(metrics.energy_score(samples, truth).mean())
        rec["coverage_range"] = metrics.range_coverage(samples, truth)
        rec["coverage_range_expected"] = metrics.expected_range_coverage(R)
        rec["rank_histogram"] = [int(c) for c in calibration.rank_histogram(calibration.pit_ranks(samples, truth), R)]
    else:
        rec["mean_distance"] = float(np.linalg.norm(samples[0] - truth, axis=1).mean())
    if posterior_var is not None:
        rec["variance_ratio"] = 0.0 if identical else float(metrics.variance_ratio(samples, posterior_var))
    return rec


def per_cancer_r2(samples: np.ndarray, truth: np.ndarray, cancer_types: np.ndarray, *, min_rows: int = 2) -> list[dict]:
    """Per-cancer-type R2 (docs/reference.md 5.2 def. C): per feature 1 - SS_res / SS_tot over that type's
    rows, SS_tot around the *whole* test set's feature mean, averaged over features; per replicate,
    then mean and std. Types with fewer than ``min_rows`` rows are skipped."""
    truth = np.asarray(truth, np.float64)
    mu = truth.mean(axis=0)
    cancer_types = np.asarray(cancer_types).astype(str)
    out = []
    for c in sorted(set(cancer_types)):
        rows = cancer_types == c
        if rows.sum() < min_rows:
            continue
        r2 = np.atleast_1d(metrics.r2_per_feature(truth[rows], np.asarray(samples, np.float64)[:, rows], mu))
        out.append({"cancer_type": c, "n": int(rows.sum()), "r2_mean": float(r2.mean()), "r2_std": float(r2.std())})
    return out


# ---- the study ----------------------------------------------------------------------------------

class ReconstructionResult:
    """records: one dict per (target, given, method) (see :func:`score_samples`, plus target,
    given, method, rejected_pct); per_cancer: DataFrame (target, given, method, cancer_type, n,
    r2_mean, r2_std) for the full given sets; tests: paired tests (DataFrame); samples: the
    generations of the full given sets, ``samples[target][method]`` f32[R, N, F]."""

    def __init__(self, records, per_cancer, tests, samples):
        self.records, self.per_cancer, self.tests, self.samples = records, per_cancer, tests, samples

    def replicates_frame(self) -> pd.DataFrame:
        """Long table of the per-replicate R2: target, given, method, replicate, r2."""
        rows = [{"target": r["target"], "given": "+".join(r["given"]), "method": r["method"], "replicate": i, "r2": v}
                for r in self.records for i, v in enumerate(r["r2_replicates"])]
        return pd.DataFrame(rows)


def reconstruction_study(samplers: Mapping[str, Sampler], test: Mapping[str, np.ndarray], *,
                         modalities: Sequence[str] | None = None,
                         given_sets: Mapping[str, Sequence[tuple[str, ...]]] | None = None,
                         replicates: int = 10, seed: int = 0, oracle: OracleSampler | None = None,
                         cancer_types: np.ndarray | None = None, point_sets: str = "all",
                         progress: bool = False) -> ReconstructionResult:
    """Table 1 / S2: every target x given set x method.

    samplers: method name -> sampler (``single`` is only run for one-modality given sets; the
      names in :data:`POINT_METHODS` are point predictors and are run with one replicate, then
      scored as R identical ones; every other sampler draws R replicates). test: modality ->
      f32[N, D] standardised complete rows.
    given_sets: per target the condition sets (default: every non-empty subset of the others).
    oracle: when given, its posterior variance gives every record a ``variance_ratio``.
    cancer_types: str[N] per test row; gives the per-cancer table for the full given sets.
    point_sets: "all" runs the baselines (point predictors and the probabilistic baselines) on every
      given set, "full" only on the full one.
    """
    modalities = list(modalities or test)
    jobs = []
    for t in modalities:
        others = [m for m in modalities if m != t]
        sets = [tuple(g) for g in given_sets[t]] if given_sets and t in given_sets else subsets(others)
        for g in sets:
            full = set(g) == set(others)
            for name in samplers:
                if name == "single" and len(g) != 1:
                    continue
                if name in BASELINES and point_sets == "full" and not full:
                    continue
                jobs.append((t, g, name, full))
    records, per_cancer, samples = [], [], {}
    post_cache = {}
    for t, g, name, full in tqdm(jobs, desc="reconstruction", disable=not progress, leave=False):
        point = name in POINT_METHODS
        out = samplers[name](t, {m: test[m] for m in g}, replicates=1 if point else replicates,
                             seed=stable_seed(seed, "recon", t, "+".join(g), name))
        x, passed = as_samples(out)
        if point and len(x) != replicates:
            x = np.broadcast_to(x[:1], (replicates, *x.shape[1:]))
        pv = None
        if oracle is not None:
            if (t, g) not in post_cache:
                post_cache[(t, g)] = oracle.posterior_variance(t, {m: test[m] for m in g})
            pv = post_cache[(t, g)]
        rec = {"target": t, "given": list(g), "method": name, **score_samples(x, test[t], pv)}
        rec["rejected_pct"] = float(100 * (1 - passed.mean())) if passed is not None else 0.0
        records.append(rec)
        if full:
            samples.setdefault(t, {})[name] = np.asarray(x, np.float32)
            if cancer_types is not None:
                per_cancer += [{"target": t, "given": "+".join(g), "method": name, **r}
                               for r in per_cancer_r2(x, test[t], cancer_types)]
    return ReconstructionResult(records, pd.DataFrame(per_cancer), reconstruction_tests(records), samples)


def _full_given_r2(records: list[dict]) -> dict[str, dict[str, list]]:
    """Per target, the R2 per replicate of ``single`` (the per-replicate mean of the single-source
    R2s), ``coherent`` and ``multi`` with every other modality given (those present)."""
    by_target: dict[str, dict[str, list]] = {}
    for r in records:
        t = r["target"]
        n_src = len({m for rr in records if rr["target"] == t for m in rr["given"]})
        if r["method"] == "single":
            by_target.setdefault(t, {}).setdefault("single", []).append(r["r2_replicates"])
        elif len(r["given"]) == n_src and r["method"] in ("multi", "coherent"):
            by_target.setdefault(t, {})[r["method"]] = r["r2_replicates"]
    for d in by_target.values():
        if "single" in d:
            d["single"] = list(np.mean(np.asarray(d["single"]), axis=0))
    return by_target


def reconstruction_tests(records: list[dict], *, alpha: float = 0.05) -> pd.DataFrame:
    """Paired t-tests over replicates (docs/reference.md 5.9), per target with all other modalities given:
    coherent vs multi, coherent vs single and multi vs single, where ``single`` is the per-replicate
    mean of the single-source R2s; Bonferroni over the 3 tests of each target."""
    rows = []
    frames = []
    for t, d in _full_given_r2(records).items():
        pairs = [p for p in (("coherent", "multi"), ("coherent", "single"), ("multi", "single"))
                 if p[0] in d and p[1] in d and len(d[p[0]]) == len(d[p[1]]) >= 2]
        if not pairs:
            continue
        long = pd.DataFrame([{"method": m, "replicate": i, "r2": v} for m, vals in d.items() for i, v in enumerate(vals)])
        res = stats.compare_methods(long, "r2", "method", pairs, "bonferroni", subject_col="replicate", alpha=alpha)
        res.insert(0, "target", t)
        frames.append(res)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(rows)


def reconstruction_anova(records: list[dict]) -> pd.DataFrame:
    """The reference's repeated-measures ANOVA of R2 (docs/reference.md 5.9): subject = replicate, within =
    target x method, where method is single (per-replicate mean of the single-source R2s), coherent
    and multi with every other modality given. Empty when the design is not complete (a method or
    target missing, or unequal replicate counts)."""
    rows = []
    for t, d in _full_given_r2(records).items():
        rows += [{"target": t, "method": m, "replicate": i, "r2": v} for m, vals in d.items() for i, v in enumerate(vals)]
    long = pd.DataFrame(rows)
    if long.empty or long["target"].nunique() < 2 or long["method"].nunique() < 2:
        return pd.DataFrame()
    try:
        return stats.anova_rm(long, "r2", "replicate", ["target", "method"]).rename_axis("effect").reset_index()
    except ValueError as e:
        if "balanced" not in str(e):
            raise
        return pd.DataFrame()  # not a complete design: a method, target or replicate missing


# ---- the original entry points -----------------------------------------------------------------

def reconstruction(ms, test: dict[str, np.ndarray], *, methods=("single", "multi", "coherent"),
                   given_sets: dict[str, list[tuple[str, ...]]] | None = None, replicates: int = 10,
                   seed: int = 0, progress: bool = False, options: SampleOptions = SampleOptions()) -> list[dict]:
    """Records ``{target, given, method, r2_mean, r2_std, variance_pct, energy_score, ...}`` of our
    models. test: modality -> f32[N, D] standardised, complete rows. given_sets: per target the
    condition sets (default: every non-empty subset of the other modalities). ``single`` is only
    run for one-modality sets (it is the single-condition model of that source). ``options``: the
    sampling options of every method (its method field is replaced by each of ``methods``)."""
    samplers = {m: ModelSampler(ms, with_method(options, m)) for m in methods}
    return reconstruction_study(samplers, test, modalities=ms.modalities, given_sets=given_sets,
                                replicates=replicates, seed=seed, progress=progress).records


def oracle_records(law, test_native: dict[str, np.ndarray], scalers, given_sets: dict[str, list[tuple[str, ...]]],
                   *, type_prior=None, n_draws: int = 10, seed: int = 0) -> list[dict]:
    """The synthetic law's exact answers for the same protocol: ``oracle_mean`` (the posterior mean,
    best R2 of any point prediction) and ``oracle_sample`` (exact posterior draws, the calibrated
    optimum). test_native: the test rows in the law's native scale; scalers: name -> (mean, std)."""
    sc = {m: tuple(np.asarray(a, np.float64) for a in scalers[m]) for m in law.modalities}
    test = {m: ((np.asarray(test_native[m], np.float64) - sc[m][0]) / sc[m][1]) for m in law.modalities}
    records = []
    for mode in ("sample", "mean"):
        oracle = OracleSampler(law, sc, mode=mode, type_prior=type_prior)
        name = f"oracle_{mode}"
        res = reconstruction_study({name: oracle}, test, modalities=list(given_sets), given_sets=given_sets,
                                   replicates=n_draws, seed=seed, oracle=oracle)
        for rec in res.records:
            rec["posterior_variance"] = float(oracle.posterior_variance(
                rec["target"], {m: test[m] for m in rec["given"]}).mean())
        records += res.records
    order = {(t, tuple(g)): i for i, (t, sets) in enumerate(given_sets.items()) for g in sets}
    return sorted(records, key=lambda r: (order[(r["target"], tuple(r["given"]))], r["method"] != "oracle_sample"))


def r2_table(records: list[dict], given_label=None):
    """A pandas table target x method of 'r2_mean ± r2_std' for the records of one given-set size."""
    df = pd.DataFrame(records)
    df["given"] = df["given"].map(lambda g: given_label(g) if given_label else "+".join(g))
    df["cell"] = df.apply(lambda r: f"{r.r2_mean:.3f} ± {r.r2_std:.3f}", axis=1)
    return df.pivot_table(index=["target", "given"], columns="method", values="cell", aggfunc="first")
