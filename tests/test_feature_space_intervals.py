"""Feature-space helpers for small real cohorts: the R² of the mean of infinitely many replicates
(estimated from a few), paired bootstrap intervals over test rows, and the kept predictions."""

import numpy as np
import pandas as pd
import pytest

from cgjax.data import from_arrays
from cgjax.embedding import EmbeddingOptions, fit_embedding
from cgjax.evaluate.feature_space import bootstrap_pooled_r2, feature_space_study, r2_of_mean_unlimited
from cgjax.scoring import metrics


def _r2(z, p):
    return 1 - ((z - p) ** 2).sum() / ((z - z.mean()) ** 2).sum()


def test_r2_of_mean_unlimited_recovers_the_sampler_mean():
    rng = np.random.default_rng(0)
    n, d, r, sigma = 300, 40, 4, 1.5
    z = rng.normal(size=(n, d))
    m = 0.7 * z + 0.3 * rng.normal(size=(n, d))  # the sampler's own mean: R² well below 1
    draws = m[None] + sigma * rng.normal(size=(r, n, d))
    target = _r2(z, m)
    few = _r2(z, draws.mean(axis=0))
    ss_tot = ((z - z.mean()) ** 2).sum()
    # 4 draws lose sigma² / 4 per cell; the estimate adds it back
    assert few == pytest.approx(target - sigma ** 2 * n * d / r / ss_tot, abs=0.02)
    assert target - few > 0.1
    assert r2_of_mean_unlimited(z, draws) == pytest.approx(target, abs=0.01)
    # identical draws: nothing to add back
    same = np.broadcast_to(m, (3, n, d))
    assert r2_of_mean_unlimited(z, same) == pytest.approx(target, abs=1e-12)
    with pytest.raises(ValueError, match="R >= 2"):
        r2_of_mean_unlimited(z, draws[:1])


def test_bootstrap_pooled_r2_intervals_and_paired_differences():
    rng = np.random.default_rng(1)
    n, d = 60, 5
    z = rng.normal(size=(n, d))
    good = z + 0.5 * rng.normal(size=(n, d))
    bad = good + 1.0 * rng.normal(size=(n, d))
    out = bootstrap_pooled_r2(z, {"good": good, "bad": bad, "same": good, "perfect": z},
                              pairs=[("good", "bad"), ("good", "same")], n_boot=300, seed=0)
    lo, hi = out["good"]
    assert lo < _r2(z, good) < hi and hi - lo > 0.01
    assert out["perfect"] == (1.0, 1.0)
    assert out["good - same"] == (0.0, 0.0)          # paired: the same rows for both
    assert out["good - bad"][0] > 0                   # clearly better on every resample's 5 % quantile
    # the quantiles are those of a direct re-derivation with the same generator
    gen = np.random.default_rng(0)
    vals = []
    for _ in range(300):
        idx = gen.integers(0, n, n)
        vals.append(_r2(z[idx], good[idx]))
    assert out["good"] == pytest.approx((np.quantile(vals, 0.05), np.quantile(vals, 0.95)), abs=1e-12)


def test_feature_space_study_keeps_standardised_predictions():
    rng = np.random.default_rng(2)
    n, d = 200, 6
    u = rng.normal(size=(n, 2))
    x = {m: u @ rng.normal(size=(2, d)) + 0.3 * rng.normal(size=(n, d)) for m in ("a", "b")}
    ids = np.array([f"s{i}" for i in range(n)])
    train, test = ids[:150], ids[150:]
    fc = from_arrays(ids, {m: v.astype(np.float32) for m, v in x.items()})
    frames = {m: pd.DataFrame(v[:150], index=train, columns=[f"{m}{j}" for j in range(d)]) for m, v in x.items()}
    emb = fit_embedding(frames, None, EmbeddingOptions(latent_dim=2, default_method="pca"))
    scalers = {m: (np.zeros(2), np.ones(2)) for m in x}
    draws = {m: rng.normal(size=(3, 50, 2)) for m in x}
    res = feature_space_study({m: {"noise": draws[m]} for m in x}, scalers, emb, fc, train, test, ["a", "b"],
                              keep_predictions=True)
    s = res["summary"].set_index(["target", "method"])
    for t in ("a", "b"):
        p = res["predictions"][t]
        mu, sd = x[t][:150].mean(0), x[t][:150].std(0)
        assert np.allclose(p["truth"], (x[t][150:] - mu) / sd)
        assert p["noise"].shape == (3, 50, d) and p["ridge"].shape == (1, 50, d)
        for k in ("noise", "ridge", "train mean", "ceiling"):
            assert s.loc[(t, k), "r2_of_mean"] == pytest.approx(
                float(metrics.r2_pooled(p["truth"], p[k].mean(axis=0))), abs=1e-9)
    assert "predictions" not in feature_space_study({m: {"noise": draws[m]} for m in x}, scalers, emb, fc, train,
                                                    test, ["a", "b"])
