"""Feature-space evaluation: decoded draws against the real features, beside feature-space ridge,
the train mean and the embedding's ceiling, on linear data with a PCA embedding."""

import numpy as np
import pandas as pd
import pytest

from cgjax.data import from_arrays
from cgjax.embedding import EmbeddingOptions, fit_embedding
from cgjax.evaluate.feature_space import feature_space_study, per_feature_r2


def test_feature_space_scores_against_independent_numbers():
    rng = np.random.default_rng(0)
    n, d = 400, 12
    u = rng.normal(size=(n, 3))
    x = {m: u @ rng.normal(size=(3, d)) + 0.3 * rng.normal(size=(n, d)) for m in ("a", "b")}
    ids = np.array([f"s{i}" for i in range(n)])
    train, test = ids[:300], ids[300:]
    fc = from_arrays(ids, {m: v.astype(np.float32) for m, v in x.items()})
    frames = {m: pd.DataFrame(v[:300], index=train, columns=[f"{m}{j}" for j in range(d)]) for m, v in x.items()}
    emb = fit_embedding(frames, None, EmbeddingOptions(latent_dim=3, default_method="pca"))
    lat_tr = {m: emb.encode(m, x[m][:300].astype(np.float32)) for m in x}
    scalers = {m: (v.mean(0), v.std(0)) for m, v in lat_tr.items()}
    # a "sampler" that returns the true latents of the test rows (3 identical replicates)
    perfect = {m: np.broadcast_to((emb.encode(m, x[m][300:].astype(np.float32)) - scalers[m][0]) / scalers[m][1],
                                  (3, 100, 3)) for m in x}
    res = feature_space_study({m: {"perfect": perfect[m]} for m in x}, scalers, emb, fc, train, test, ["a", "b"])
    s = res["summary"].set_index(["target", "method"])
    for t in ("a", "b"):
        tr = x[t][:300]
        mu, sd = tr.mean(0), tr.std(0)
        z = (x[t][300:] - mu) / sd
        ceil = (emb.decode(t, emb.encode(t, x[t][300:].astype(np.float32))) - mu) / sd
        ref = 1 - ((z - ceil) ** 2).sum() / ((z - z.mean()) ** 2).sum()
        assert s.loc[(t, "ceiling"), "r2_of_mean"] == pytest.approx(ref, abs=1e-4)
        # decoding the true latents reaches the ceiling exactly
        assert s.loc[(t, "perfect"), "r2_of_mean"] == pytest.approx(ref, abs=1e-4)
        # linear data: feature-space ridge from the other modality is good, the train mean is not
        assert s.loc[(t, "ridge"), "r2_feature_mean"] > 0.5 > 0.02 > s.loc[(t, "train mean"), "r2_feature_mean"]
    pf = res["per_feature"]
    assert set(pf["method"]) == {"perfect", "ridge", "train mean", "ceiling"} and len(pf) == 2 * 4 * d


def test_per_feature_r2():
    x = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]])
    r = per_feature_r2(x, np.array([[0.0, 1.0], [2.0, 1.0], [3.0, 1.0]]))
    assert r[0] == pytest.approx(1 - 1 / 8) and np.isnan(r[1])
