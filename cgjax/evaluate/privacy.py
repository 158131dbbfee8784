"""Unconditional generation and privacy (the paper's Table 3 and Fig 5; docs/reference.md 5.7).

Each modality is generated with no condition at all: the multi-condition model with every
condition masked, Coherent Denoising with its single models fed all-zero conditions
(``sample_target(..., unconditional=True)``). Per replicate and modality the N generated rows are
compared with a reference set of N real rows (a random subset of the train rows that have the
modality, redrawn per replicate; and, separately, the real test rows) by PRDC precision / recall /
F1 (k = 10) and the energy distance. Table 3 averages the four modalities per replicate (the paper
does not say how it aggregates; docs/reference.md 5.7 GAP), then mean and std over replicates.

Beside the samplers, the row ``real (test)`` scores the real held-out test rows against the same
train subsets: what a perfect generator would get. The distance to the closest training record
(:func:`cgjax.scoring.metrics.dcr`) of generated rows is compared with that of the held-out rows:
a generator that copies its training data puts far more than 5% of its rows below the held-out
5th percentile.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cgjax.evaluate.reconstruction import Sampler, as_samples, stable_seed
from cgjax.scoring import metrics

REAL = "real (test)"


class PrivacyResult:
    """frame: per method, modality, reference set, replicate: precision, recall, density, coverage,
    f1, energy_distance; table: Table 3 (modalities averaged per replicate, then mean/std); dcr:
    per method and modality the DCR summary; samples: method -> modality -> f32[N, D] of replicate 0."""

    def __init__(self, frame, table, dcr, samples):
        self.frame, self.table, self.dcr, self.samples = frame, table, dcr, samples


def unconditional_samples(samplers: Mapping[str, Sampler], modalities: Sequence[str], dims: Mapping[str, int],
                          n: int, *, replicates: int = 10, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """method -> modality -> f32[R, n, D] generated with no condition."""
    out = {}
    for name, sampler in samplers.items():
        out[name] = {}
        for t in modalities:
            given = {m: np.full((n, dims[m]), np.nan, np.float32) for m in modalities if m != t}
            x, _ = as_samples(sampler(t, given, replicates=replicates, seed=stable_seed(seed, "uncond", name, t),
                                      unconditional=True))
            out[name][t] = x
    return out


def privacy_study(samplers: Mapping[str, Sampler], train: Mapping[str, np.ndarray], test: Mapping[str, np.ndarray], *,
                  modalities: Sequence[str] | None = None, n_samples: int | None = None, replicates: int = 10,
                  k: int = 10, seed: int = 0, generated: Mapping[str, Mapping[str, np.ndarray]] | None = None,
                  progress: bool = False) -> PrivacyResult:
    """Table 3 and the DCR check.

    samplers: name -> sampler (called with ``unconditional=True``); train: standardised modality
    dict with NaN rows; test: complete test rows; n_samples: rows generated per replicate (default:
    the number of test rows, as the reference's 1350); generated: precomputed
    :func:`unconditional_samples` output (then ``samplers`` may be empty).
    """
    modalities = list(modalities or test)
    n = int(n_samples or len(next(iter(test.values()))))
    dims = {m: test[m].shape[1] for m in modalities}
    gen = dict(generated) if generated is not None else {}
    todo = {k_: v for k_, v in samplers.items() if k_ not in gen}
    if todo:
        gen.update(unconditional_samples(todo, modalities, dims, n, replicates=replicates, seed=seed))
    rows, dcr_rows = [], []
    jobs = [(m, r) for m in modalities for r in range(replicates)]
    for m, r in tqdm(jobs, desc="privacy", disable=not progress, leave=False):
        tr = np.asarray(train[m], np.float64)
        tr = tr[~np.isnan(tr).all(axis=1)]
        rng = np.random.default_rng(stable_seed(seed, "ref", m, r))
        ref_train = tr[rng.choice(len(tr), size=min(n, len(tr)), replace=False)]
        refs = {"train": ref_train, "test": np.asarray(test[m], np.float64)}
        cands = {name: np.asarray(g[m][r], np.float64) for name, g in gen.items()}
        cands[REAL] = refs["test"]
        for name, x in cands.items():
            for ref_name, ref in refs.items():
                if name == REAL and ref_name == "test":
                    continue
                if len(ref) <= k or len(x) <= k:
                    continue
                p = metrics.prdc(ref, x, k=k)
                rows.append({"method": name, "modality": m, "reference": ref_name, "replicate": r, **p,
                             "energy_distance": metrics.energy_distance(ref, x)})
        if r == 0:
            for name, x in cands.items():
                if name == REAL:
                    continue
                d = metrics.dcr(x, tr, refs["test"])
                dcr_rows.append({"method": name, "modality": m,
                                 **{k_: v for k_, v in d.items() if not isinstance(v, np.ndarray)}})
    frame = pd.DataFrame(rows)
    samples = {name: {m: g[m][0] for m in modalities} for name, g in gen.items()}
    return PrivacyResult(frame, privacy_table(frame), pd.DataFrame(dcr_rows), samples)


def privacy_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Table 3: per method and reference set, the modality average of each replicate, then mean and
    std (ddof 0) over replicates of precision, recall, f1, density, coverage, energy_distance."""
    if frame.empty:
        return pd.DataFrame()
    cols = ["precision", "recall", "f1", "density", "coverage", "energy_distance"]
    per_rep = frame.groupby(["method", "reference", "replicate"], sort=False)[cols].mean()
    g = per_rep.groupby(level=["method", "reference"], sort=False)
    return g.mean().add_suffix("_mean").join(g.std(ddof=0).add_suffix("_std")).reset_index()


def dcr_per_sample(generated: np.ndarray, train: np.ndarray, holdout: np.ndarray) -> dict[str, np.ndarray]:
    """The raw DCR distributions (for the histogram figure): generated and holdout f[.]."""
    tr = np.asarray(train, np.float64)
    tr = tr[~np.isnan(tr).all(axis=1)]
    d = metrics.dcr(generated, tr, holdout)
    return {"generated": d["dcr_generated"], "holdout": d["dcr_holdout"]}
