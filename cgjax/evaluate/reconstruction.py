"""Reconstruction fidelity (the paper's Table 1): hide a target modality of complete test samples,
generate it from a subset of the others, and score the samples against the truth.

All scores are computed in the models' standardised space (REFERENCE.md 5.2: the paper's R2 is on
the standardised latents). R2 is the pooled definition A, per replicate, then mean and std (ddof 0)
over replicates.
"""

from __future__ import annotations

import itertools
from typing import Iterable, Sequence

import numpy as np

from cgjax.ensemble import ModelSet, sample_target
from cgjax.evaluate import metrics


def subsets(sources: Sequence[str], sizes: Iterable[int] | None = None) -> list[tuple[str, ...]]:
    """Non-empty subsets of ``sources`` (all sizes by default), smallest first."""
    sizes = range(1, len(sources) + 1) if sizes is None else sizes
    return [c for k in sizes for c in itertools.combinations(sources, k)]


def score_samples(samples: np.ndarray, truth: np.ndarray) -> dict:
    """Scores of samples f[R, N, D] of one target against truth f[N, D]."""
    r2 = np.atleast_1d(metrics.r2_pooled(truth, samples))
    rec = {"r2_mean": float(r2.mean()), "r2_std": float(r2.std()),
           "variance_pct": float(metrics.variance_pct(samples, truth)) if len(samples) > 1 else 0.0,
           "r2_of_mean": float(metrics.r2_pooled(truth, samples.mean(axis=0)))}
    if len(samples) > 1:
        rec["energy_score"] = float(metrics.energy_score(samples, truth).mean())
        rec["coverage90"] = float(metrics.interval_coverage(samples, truth, 0.9))
    return rec


def reconstruction(ms: ModelSet, test: dict[str, np.ndarray], *, methods=("single", "multi", "coherent"),
                   given_sets: dict[str, list[tuple[str, ...]]] | None = None, replicates: int = 10,
                   seed: int = 0, progress: bool = False, **sample_kwargs) -> list[dict]:
    """Records ``{target, given, method, r2_mean, r2_std, variance_pct, energy_score, ...}``.

    test: modality -> f32[N, D] standardised, complete rows. given_sets: per target the condition
    sets to evaluate (default: every non-empty subset of the other modalities). ``single`` is only
    run for one-modality sets (it is the single-condition model of that source).
    """
    from tqdm.auto import tqdm

    jobs = []
    for t in ms.modalities:
        sets = given_sets[t] if given_sets and t in given_sets else subsets([m for m in ms.modalities if m != t])
        for g in sets:
            for method in methods:
                if method == "single" and len(g) != 1:
                    continue
                jobs.append((t, tuple(g), method))
    records = []
    for i, (t, g, method) in enumerate(tqdm(jobs, desc="reconstruction", disable=not progress)):
        res = sample_target(ms, t, {m: test[m] for m in g}, method=method, replicates=replicates,
                            seed=seed + i, **sample_kwargs)
        rec = {"target": t, "given": list(g), "method": method, **score_samples(res.x, test[t])}
        rec["rejected_pct"] = float(100 * (1 - res.passed.mean()))
        records.append(rec)
    return records


def oracle_records(law, test_native: dict[str, np.ndarray], scalers, given_sets: dict[str, list[tuple[str, ...]]],
                   *, type_prior=None, n_draws: int = 10, seed: int = 0) -> list[dict]:
    """The synthetic law's exact answers for the same protocol: ``oracle_mean`` (the posterior mean,
    best R2 of any point prediction) and ``oracle_sample`` (exact posterior draws, the calibrated
    optimum). test_native: the test rows in the law's native scale; scalers: name -> (mean, std)."""
    records = []
    for t, sets in given_sets.items():
        for g in sets:
            cond = law.conditional(t, {m: test_native[m].astype(np.float64) for m in g}, type_prior)
            mu, sd = (np.asarray(a, np.float64) for a in scalers[t])
            truth = (test_native[t].astype(np.float64) - mu) / sd
            draws = (cond.sample(seed, n_draws) - mu) / sd
            mean = (cond.mean() - mu) / sd
            records.append({"target": t, "given": list(g), "method": "oracle_sample", **score_samples(draws, truth)})
            rec = {"target": t, "given": list(g), "method": "oracle_mean", **score_samples(mean[None], truth)}
            rec["posterior_variance"] = float((cond.variance() / sd ** 2).mean())
            records.append(rec)
    return records


def r2_table(records: list[dict], given_label=None):
    """A pandas table target x method of 'r2_mean ± r2_std' for the records of one given-set size."""
    import pandas as pd

    df = pd.DataFrame(records)
    df["given"] = df["given"].map(lambda g: given_label(g) if given_label else "+".join(g))
    df["cell"] = df.apply(lambda r: f"{r.r2_mean:.3f} ± {r.r2_std:.3f}", axis=1)
    return df.pivot_table(index=["target", "given"], columns="method", values="cell", aggfunc="first")
