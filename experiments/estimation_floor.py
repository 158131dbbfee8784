"""How close to the exact posterior can any fit of a cohort get? A floor for the issue-11 targets.

The calibration targets (energy score within 5% of exact draws, variance ratio 0.8-1.25) compare a
sampler trained on one cohort with the law's exact posterior. A finite cohort leaves estimation
error that no sampler removes. This script measures it with a fit that is given more than any
cgjax model: the **type of every training row** (the zoo law's subtype, the cohort's
``cancer_type`` column), which our samplers are never told. Within a type every zoo law is jointly
Gaussian, so the fit is the law's own model family:

* per type c: its share of the complete training rows (the test rows are complete, and where
  missingness depends on the type a row's pattern is evidence of it); a joint Gaussian of the target and the given
  modalities fitted by EM on the type's rows that have the target, incomplete ones too
  (:func:`cgjax.diffusion.joint.fit`, the Gaussian anchor's fit); the target's regression on the
  given modalities by ridge on the type's complete rows (:func:`cgjax.diffusion.anchor.ridge_gaussian`,
  the anchor's regression; the joint Gaussian's conditional where a type has too few such rows);
* a test row's type is not told: its weights are p(c | given) from each type's share and its
  Gaussian marginal of the given modalities, as in the exact posterior (:func:`mixture_conditional`).

Beside it, on the same rows: a second set of exact draws (the score of a perfect sampler, which
shows the noise of the comparison), ``mixture_sample`` (the mixture anchor's law as a sampler: the
subtypes found, not told) and ``joint_gaussian_sample``. Rows, split and target as in
``experiments/calibration.py`` (split seed 42, the first ``--max-rows`` complete test rows, the law's
first modality given every other), in units standardised by the training rows' mean and standard
deviation. No network is trained: a law and size take seconds to minutes.

Usage:
  python experiments/estimation_floor.py --laws issue11 7 --sizes 3000 10000 30000
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import special

from cgjax.data import split_cohort
from cgjax.datasets import zoo
from cgjax.datasets.synthetic import GaussianMixtureConditional
from cgjax.diffusion import joint
from cgjax.diffusion.anchor import ridge_gaussian
from cgjax.evaluate.baselines import knn_impute
from cgjax.evaluate.probabilistic import joint_gaussian_sample, mixture_conditional_sample
from cgjax.scoring import calibration as cal


def mixture_conditional(log_prior, means, covs, x, d: int, regressions=None) -> GaussianMixtureConditional:
    """p(y | x) of a mixture of joint Gaussians of [y (first d columns), x]: weights p(c | x) from
    log_prior f[C] and each component's marginal N(x; means[c, d:], covs[c, d:, d:]); each
    component's conditional from its joint moments, or from ``regressions[c] = (A f[P, d], b f[d],
    S f[d, d])`` (y | x, c ~ N(b + x A, S)) where given. x f[n, P]."""
    x = np.asarray(x, np.float64)
    loglik, cond_means, cond_covs = [], [], []
    for c in range(len(log_prior)):
        mu, cov = means[c], covs[c]
        root = np.linalg.cholesky(cov[d:, d:])
        dev = np.linalg.solve(root, (x - mu[d:]).T)
        loglik.append(-0.5 * (dev ** 2).sum(axis=0) - np.log(np.diag(root)).sum())
        if regressions is not None and regressions[c] is not None:
            coef, bias, cond_cov = regressions[c]
        else:
            coef, bias, cond_cov = joint.conditional(mu, cov, d, np.ones(cov.shape[0] - d, bool))
        cond_means.append(bias + x @ coef)
        cond_covs.append(cond_cov)
    log_w = np.asarray(log_prior)[None] + np.stack(loglik, axis=1)
    weights = np.exp(log_w - special.logsumexp(log_w, axis=1, keepdims=True))
    return GaussianMixtureConditional(weights=weights, means=np.stack(cond_means, axis=1), covs=np.stack(cond_covs))


def told_types_fit(y, x, types):
    """The per-type fit (module docstring) on training rows: y f[n, d] (NaN rows: no target), x f[n, P]
    (NaN where a given modality is missing), types[n] the rows' types. Returns (log shares among the
    complete rows f[C], joint
    means f[C, d + P], joint covariances f[C, d + P, d + P], per-type regressions or None)."""
    names = sorted(set(types))
    has_y, observed = ~np.isnan(y).any(axis=1), ~np.isnan(x)
    complete_rows = has_y & observed.all(axis=1)
    log_prior, means, covs, regressions = [], [], [], []
    for c in names:
        rows = (types == c) & has_y
        law = joint.fit(y[rows], np.where(observed, x, 0.0)[rows], observed[rows])
        complete = rows & observed.all(axis=1)
        log_prior.append(np.log(max(complete.sum(), 0.5) / max(complete_rows.sum(), 1)))
        means.append(law.mu)
        covs.append(law.cov)
        regressions.append(ridge_gaussian(x[complete], y[complete]) if complete.sum() >= y.shape[1] + 10 else None)
    return np.array(log_prior), np.stack(means), np.stack(covs), regressions


def floor_cell(name, n_samples: int, *, max_rows: int = 150, replicates: int = 10, seed: int = 0) -> list[dict]:
    """Every sampler of the module docstring on one law and cohort size: one record each."""
    member = zoo.law(int(name) if str(name).lstrip("-").isdigit() else name, n_samples=n_samples)
    cohort = member.cohort(seed=seed)
    target = member.modalities[0]
    given = [m for m in member.modalities if m != target]
    split = split_cohort(cohort, seed=42)
    test_c, train_c = split.split("test"), split.split("train")
    scale = {m: (np.nanmean(train_c.data[m], axis=0), np.nanstd(train_c.data[m], axis=0)) for m in member.modalities}
    unit = lambda m, v: (np.asarray(v, np.float64) - scale[m][0]) / scale[m][1]
    train = {m: unit(m, train_c.data[m]) for m in member.modalities}
    test = {m: unit(m, test_c.data[m][:max_rows]) for m in member.modalities}
    y = test[target]
    mu, sd = scale[target]
    exact_law = member.conditional(target, {m: np.asarray(test_c.data[m][:max_rows], np.float64) for m in given})
    exact = (exact_law.sample(seed + 1, replicates) - mu) / sd
    post_mean, post_var = (exact_law.mean() - mu) / sd, exact_law.variance() / sd ** 2
    cond = {m: test[m] for m in given}
    knn = knn_impute(train, cond, given, target, k=10)
    x_train = np.concatenate([train[m] for m in given], axis=1)
    x_test = np.concatenate([test[m] for m in given], axis=1)

    def told_types():
        log_prior, means, covs, regressions = told_types_fit(train[target], x_train,
                                                            np.asarray(train_c.clinical["cancer_type"]))
        law = mixture_conditional(log_prior, means, covs, x_test, y.shape[1], regressions)
        return law.sample(seed, replicates)

    samplers = {
        "exact (a second draw)": lambda: (exact_law.sample(seed + 7, replicates) - mu) / sd,
        "told types (per-type fit)": told_types,
        "mixture_sample": lambda: mixture_conditional_sample(train, cond, given, target, replicates=replicates, seed=seed),
        "joint_gaussian_sample": lambda: joint_gaussian_sample(train, cond, given, target, replicates=replicates,
                                                               seed=seed),
    }
    out = []
    for sampler, draw in samplers.items():
        t0 = time.perf_counter()
        samples = draw()
        scores = cal.calibration_scores(samples, y, exact=exact, posterior_mean=post_mean, posterior_var=post_var,
                                        baseline=knn)
        out.append({"law": member.name, "n": n_samples, "sampler": sampler, **scores,
                    "seconds": round(time.perf_counter() - t0, 1)})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--laws", nargs="+", default=["issue11", "7"], help="zoo names or int seeds")
    ap.add_argument("--sizes", type=int, nargs="+", default=[3000, 10000, 30000])
    ap.add_argument("--max-rows", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print("| law | n | sampler | energy excess (SE) | variance ratio | gap closed | seconds |")
    print("|---|---|---|---|---|---|---|")
    for name in args.laws:
        for n in args.sizes:
            for r in floor_cell(name, n, max_rows=args.max_rows, seed=args.seed):
                print(f"| {r['law']} | {r['n']} | {r['sampler']} | {r['energy_excess_pct']:+.1f}% "
                      f"({r['energy_excess_se_pct']:.1f}) | {r['variance_ratio']:.2f} | {r['gap_closed']:.2f} "
                      f"| {r['seconds']} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
