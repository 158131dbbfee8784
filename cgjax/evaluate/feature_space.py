"""Feature-space evaluation of a prepared cohort: the generated latents decoded to genes / proteins
and scored against the real preprocessed features, beside baselines fitted in feature space and
the embedding's own reconstruction ceiling.

A prepared cohort (``cgjax prepare``) trains the diffusion models on latents; what a user wants
back is features. Latent-space scores say nothing about how much of the features survives the
embedding, and a latent-space baseline is capped by the same embedding. Per target modality
(every other modality given) this module reports:

* each sampler's draws decoded (x̂ = decode(z · std + mean) per replicate): the pooled R² of a
  draw (mean over replicates) and of the replicate mean, and the per-feature R² of the replicate
  mean;
* ``ridge``: ``RidgeCV`` from the given modalities' features to the target's features, fitted on
  the complete-case train rows (features standardised by their train mean and std);
* ``train mean``: the target's train feature means;
* ``ceiling``: decode(encode(x)) of the true features, the best any latent-space method can do.

R² definitions (features standardised by the train mean and std of each feature, so genes with
large variance do not dominate): pooled as :func:`cgjax.scoring.metrics.r2_pooled`; per feature
1 − Σ_n (x − x̂)² / Σ_n (x − x̄_test)².
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from cgjax.scoring import metrics

__all__ = ["bootstrap_pooled_r2", "feature_space_study", "per_feature_r2", "r2_of_mean_unlimited"]


def per_feature_r2(x: np.ndarray, x_hat: np.ndarray) -> np.ndarray:
    """f[D]: 1 − Σ_n (x − x̂)² / Σ_n (x − mean_n x)² per column of x f[N, D] (NaN for a constant column)."""
    x, x_hat = np.asarray(x, np.float64), np.asarray(x_hat, np.float64)
    ss_tot = ((x - x.mean(axis=0)) ** 2).sum(axis=0)
    ss_res = ((x - x_hat) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ss_tot > 0, 1.0 - ss_res / ss_tot, np.nan)


def r2_of_mean_unlimited(z: np.ndarray, zh: np.ndarray) -> float:
    """Pooled R² that the mean of infinitely many draws would reach, estimated from R >= 2 draws.

    z f[N, D] truth, zh f[R, N, D] draws. The mean of R draws misses the sampler's own mean m by
    Monte-Carlo noise: E Σ(mean_R − z)² = Σ(m − z)² + Σ s² / R with s² the draws' variance per
    cell, so Σ(mean_R − z)² − Σ s²_unbiased / R is an unbiased estimate of Σ(m − z)². Tells
    whether more replicates could close a gap (the difference to the R-draw R² of the mean).
    """
    z, zh = np.asarray(z, np.float64), np.asarray(zh, np.float64)
    if zh.ndim != 3 or zh.shape[0] < 2 or zh.shape[1:] != z.shape:
        raise ValueError(f"r2_of_mean_unlimited: draws of shape {zh.shape} for truth {z.shape}; need [R >= 2, N, D]")
    r = zh.shape[0]
    ss_res = ((zh.mean(axis=0) - z) ** 2).sum() - zh.var(axis=0, ddof=1).sum() / r
    return float(1.0 - ss_res / ((z - z.mean()) ** 2).sum())


def bootstrap_pooled_r2(z: np.ndarray, preds: Mapping[str, np.ndarray], *, pairs: Sequence[tuple[str, str]] = (),
                        n_boot: int = 1000, seed: int = 0, quantiles=(0.05, 0.95)) -> dict[str, tuple[float, float]]:
    """Bootstrap over rows (test patients) of the pooled R² of point predictions f[N, D].

    Every method is scored on the same resampled rows, so for each (a, b) in ``pairs`` the interval
    of the paired difference R²(a) − R²(b) is returned too, under the key ``"a - b"``. Returns
    name -> (low, high) quantiles; resamples whose truth is constant are skipped.
    """
    z = np.asarray(z, np.float64)
    preds = {k: np.asarray(p, np.float64) for k, p in preds.items()}
    rng = np.random.default_rng(seed)
    draws = {k: [] for k in preds}
    for _ in range(n_boot):
        idx = rng.integers(0, z.shape[0], z.shape[0])
        if np.allclose(z[idx], z[idx].mean()):
            continue
        for k, p in preds.items():
            draws[k].append(float(metrics.r2_pooled(z[idx], p[idx])))
    for a, b in pairs:
        draws[f"{a} - {b}"] = list(np.asarray(draws[a]) - np.asarray(draws[b]))
    return {k: (float(np.quantile(v, quantiles[0])), float(np.quantile(v, quantiles[1]))) for k, v in draws.items()}


def _rows(fc, ids: Sequence[str], names: Sequence[str]) -> np.ndarray:
    """bool[len(ids)]: rows of the feature cohort ``fc`` (by sample id) that have every modality in names."""
    pos = pd.Index(np.asarray(fc.sample_ids).astype(str)).get_indexer(np.asarray(ids).astype(str))
    ok = pos >= 0
    for m in names:
        ok &= np.where(pos >= 0, fc.masks[m][np.maximum(pos, 0)], False)
    return ok


def _take(fc, m: str, ids: Sequence[str]) -> np.ndarray:
    pos = pd.Index(np.asarray(fc.sample_ids).astype(str)).get_indexer(np.asarray(ids).astype(str))
    return np.asarray(fc.data[m], np.float64)[pos]


def feature_space_study(samples: Mapping[str, Mapping[str, np.ndarray]], scalers: Mapping, embedding, fc,
                        train_ids: Sequence[str], test_ids: Sequence[str],
                        modalities: Sequence[str], *, keep_predictions: bool = False) -> dict:
    """Score decoded draws and feature-space baselines per target (every other modality given).

    samples: target -> method -> f[R, N_test, d] standardised latents of the test rows (the
      reconstruction study's ``samples``, full given sets); scalers: modality -> (mean, std) of the
      latent standardisation; embedding: the cohort's :class:`cgjax.embedding.Embedding`;
      fc: the cohort of preprocessed features (``COHORT/features``, a :class:`cgjax.data.Cohort`);
      train_ids / test_ids: sample ids of the train rows and of the test rows (in the order of
      ``samples``).
    Returns {"summary": DataFrame (target, method, r2_draw, r2_of_mean, r2_feature_mean, n_test,
      n_features), "per_feature": DataFrame (target, feature, method, r2)}; methods: the samplers,
      ridge, train mean, ceiling. With ``keep_predictions`` also "predictions": target ->
      {"truth": f[N, D], method: f[R, N, D]}, both standardised by the train features' mean and std.
    """
    from sklearn.linear_model import RidgeCV

    summary, per_feat, kept = [], [], {}
    test_ids = np.asarray(test_ids).astype(str)
    for t in modalities:
        if t not in samples or t not in embedding or t not in fc.data:
            continue
        given = [m for m in modalities if m != t and m in fc.data]
        ok_test = _rows(fc, test_ids, [t] + given)
        ok_train = _rows(fc, train_ids, [t] + given)
        if ok_test.sum() < 2 or ok_train.sum() < 2:
            continue
        x_true = _take(fc, t, test_ids[ok_test])
        tr = _take(fc, t, np.asarray(train_ids)[ok_train])
        mu, sd = tr.mean(axis=0), tr.std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        z = (x_true - mu) / sd
        e = embedding[t]
        lat_mu, lat_sd = (np.asarray(a, np.float64) for a in scalers[t])
        preds = {}
        for method, s in samples[t].items():
            s = np.asarray(s, np.float64)[:, ok_test]
            preds[method] = np.stack([e.decode((r * lat_sd + lat_mu).astype(np.float32)) for r in s])
        g_tr = np.concatenate([_take(fc, m, np.asarray(train_ids)[ok_train]) for m in given], axis=1)
        g_te = np.concatenate([_take(fc, m, test_ids[ok_test]) for m in given], axis=1)
        g_mu, g_sd = g_tr.mean(axis=0), np.where(g_tr.std(axis=0) > 0, g_tr.std(axis=0), 1.0)
        ridge = RidgeCV(alphas=np.logspace(-2, 5, 8)).fit((g_tr - g_mu) / g_sd, (tr - mu) / sd)
        preds["ridge"] = (ridge.predict((g_te - g_mu) / g_sd) * sd + mu)[None]
        preds["train mean"] = np.broadcast_to(mu, x_true.shape)[None]
        preds["ceiling"] = e.decode(e.encode(x_true.astype(np.float32)))[None]
        names = list(e.feature_names)
        if keep_predictions:
            kept[t] = {"truth": z, **{k: (np.asarray(v, np.float64) - mu) / sd for k, v in preds.items()}}
        for method, x_hat in preds.items():
            zh = (np.asarray(x_hat, np.float64) - mu) / sd
            r2_draw = np.atleast_1d(metrics.r2_pooled(z, zh))
            pf = per_feature_r2(z, zh.mean(axis=0))
            summary.append({"target": t, "method": method, "r2_draw": float(r2_draw.mean()),
                            "r2_of_mean": float(metrics.r2_pooled(z, zh.mean(axis=0))),
                            "r2_feature_mean": float(np.nanmean(pf)), "n_test": int(ok_test.sum()),
                            "n_features": len(names)})
            per_feat += [{"target": t, "feature": f, "method": method, "r2": float(v)} for f, v in zip(names, pf)]
    out = {"summary": pd.DataFrame(summary), "per_feature": pd.DataFrame(per_feat)}
    if keep_predictions:
        out["predictions"] = kept
    return out
