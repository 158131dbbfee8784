"""Unconditional generation / privacy: table shapes and ranges, a faithful generator vs a shifted
one vs one that copies its training rows."""

import numpy as np
import pytest

from cgjax.evaluate.privacy import REAL, dcr_per_sample, privacy_study, unconditional_samples


class Gaussian:
    """Fresh draws from the data law, shifted by ``shift``."""

    def __init__(self, shift=0.0):
        self.shift, self.calls = shift, []

    def __call__(self, target, given, *, replicates=1, seed=0, unconditional=False):
        self.calls.append((target, sorted(given), unconditional))
        n = len(next(iter(given.values())))
        return np.random.default_rng(seed).normal(size=(replicates, n, 3)).astype(np.float32) + self.shift


class Copier:
    """Returns training rows with a little noise: a memorising generator."""

    def __init__(self, train):
        self.train = train

    def __call__(self, target, given, *, replicates=1, seed=0, unconditional=False):
        rng = np.random.default_rng(seed)
        n = len(next(iter(given.values())))
        rows = self.train[target][~np.isnan(self.train[target]).all(axis=1)]
        idx = rng.integers(0, len(rows), (replicates, n))
        return rows[idx] + 0.01 * rng.normal(size=(replicates, n, 3))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    train = {m: rng.normal(size=(400, 3)).astype(np.float32) for m in ("a", "b")}
    train["a"][:50] = np.nan
    test = {m: rng.normal(size=(120, 3)).astype(np.float32) for m in ("a", "b")}
    return train, test


def test_unconditional_calls(data):
    g = Gaussian()
    out = unconditional_samples({"g": g}, ["a", "b"], {"a": 3, "b": 3}, 7, replicates=2)
    assert out["g"]["a"].shape == (2, 7, 3)
    assert g.calls == [("a", ["b"], True), ("b", ["a"], True)]


def test_faithful_shifted_and_copying_generators(data):
    train, test = data
    res = privacy_study({"faithful": Gaussian(), "shifted": Gaussian(1.5), "copier": Copier(train)}, train, test,
                        replicates=3, k=5, seed=0)
    f = res.frame
    assert len(f) == (3 * 2 + 1) * 2 * 3  # (3 methods x 2 references + real vs train) x 2 modalities x 3 replicates
    for col in ("precision", "recall", "f1", "density", "coverage"):
        assert (f[col] >= 0).all()
    assert f[["precision", "recall", "f1", "coverage"]].le(1).all().all()
    t = res.table.set_index(["method", "reference"])
    assert (t.loc[("faithful", "train"), "energy_distance_mean"] < t.loc[("shifted", "train"), "energy_distance_mean"])
    assert t.loc[("faithful", "train"), "f1_mean"] > t.loc[("shifted", "train"), "f1_mean"]
    # the real held-out rows are the yardstick: a faithful generator scores like them
    assert t.loc[("faithful", "train"), "energy_distance_mean"] == pytest.approx(
        t.loc[(REAL, "train"), "energy_distance_mean"], abs=0.15)
    d = res.dcr.set_index(["method", "modality"])
    assert d.loc[("copier", "a"), "frac_generated_below_holdout_p5"] > 0.9
    assert d.loc[("faithful", "a"), "frac_generated_below_holdout_p5"] < 0.2
    assert res.samples["copier"]["b"].shape == (120, 3)
    raw = dcr_per_sample(res.samples["copier"]["a"], train["a"], test["a"])
    assert np.median(raw["generated"]) < 0.1 < np.median(raw["holdout"])
