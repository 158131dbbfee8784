"""Classical imputation baselines: accuracy on a solvable problem, shapes, train-only fitting."""

import numpy as np
import pytest
from sklearn.impute import KNNImputer

from cgjax.evaluate import baselines as B
from cgjax.scoring.metrics import r2_pooled


def _cohort(seed=0, n_train=300, n_test=60):
    """a: 6-d, b: 4-d, target t = a @ W + tiny noise; ~20% of train rows lack each modality."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(6, 3))
    n = n_train + n_test
    a = rng.normal(size=(n, 6))
    b = rng.normal(size=(n, 4))
    t = a @ w + 0.01 * rng.normal(size=(n, 3))
    train = {"a": a[:n_train].copy(), "b": b[:n_train].copy(), "t": t[:n_train].copy()}
    for name in train:
        absent = rng.random(n_train) < 0.2
        train[name][absent] = np.nan
    test = {"a": a[n_train:], "b": b[n_train:]}
    return train, test, t[n_train:]


def test_iterative_recovers_linear_target():
    train, test, truth = _cohort()
    out = B.iterative_impute(train, test, ["a", "b"], "t")
    assert out.shape == truth.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert r2_pooled(truth, out) > 0.95


def test_knn_and_mean_shapes_and_quality():
    train, test, truth = _cohort()
    knn = B.knn_impute(train, test, ["a"], "t", k=5)
    mean = B.mean_impute(train, test, ["a"], "t")
    for out in (knn, mean):
        assert out.shape == truth.shape and out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_allclose(mean, np.broadcast_to(np.nanmean(train["t"], 0), truth.shape), rtol=1e-6)
    assert r2_pooled(truth, mean) < 0.05 < r2_pooled(truth, knn)


def test_test_rows_with_a_missing_given_modality():
    train, test, truth = _cohort()
    test = {name: v.copy() for name, v in test.items()}
    test["b"][:5] = np.nan  # these rows only have a, which fully determines t
    for impute in (B.knn_impute, B.iterative_impute):
        out = impute(train, test, ["a", "b"], "t")
        assert np.isfinite(out).all()
    assert r2_pooled(truth[:5], out[:5]) > 0.95


def test_knn_matches_direct_neighbour_mean():
    """k=1 with complete training rows: the imputation is the target of the nearest given row."""
    rng = np.random.default_rng(3)
    train = {"a": rng.normal(size=(40, 2)), "t": rng.normal(size=(40, 3))}
    test = {"a": rng.normal(size=(10, 2))}
    out = B.knn_impute(train, test, ["a"], "t", k=1)
    nearest = np.linalg.norm(test["a"][:, None] - train["a"][None], axis=2).argmin(axis=1)
    np.testing.assert_allclose(out, train["t"][nearest], rtol=1e-6)


def test_test_rows_do_not_influence_each_other():
    train, test, _ = _cohort(n_test=20)
    changed = {name: v.copy() for name, v in test.items()}
    rng = np.random.default_rng(9)
    for name in changed:
        changed[name][1:] = rng.normal(size=changed[name][1:].shape) * 5
    for impute in (B.knn_impute, B.iterative_impute):
        row0 = impute(train, test, ["a", "b"], "t")[0]
        row0_changed = impute(train, changed, ["a", "b"], "t")[0]
        np.testing.assert_array_equal(row0, row0_changed)
        assert not np.array_equal(
            impute(train, test, ["a", "b"], "t")[1], impute(train, changed, ["a", "b"], "t")[1]
        )


def test_fit_uses_train_only_and_ignores_test_target():
    """Equal to a KNNImputer fitted by hand on the train matrix; a target block in test is ignored."""
    train, test, truth = _cohort(n_train=100, n_test=15)
    with_target = dict(test, t=truth)
    out = B.knn_impute(train, with_target, ["a", "b"], "t")
    x_train = np.concatenate([train["a"], train["b"], train["t"]], axis=1)
    x_train = x_train[~np.isnan(x_train).all(axis=1)]
    x_test = np.concatenate([test["a"], test["b"], np.full_like(truth, np.nan)], axis=1)
    ref = KNNImputer(n_neighbors=5).fit(x_train).transform(x_test)[:, -3:]
    np.testing.assert_allclose(out, ref, rtol=1e-6)


def test_bad_inputs():
    train, test, _ = _cohort(n_train=50, n_test=5)
    with pytest.raises(ValueError):
        B.knn_impute(train, test, ["a"], "missing")
    with pytest.raises(ValueError):
        B.knn_impute(train, test, ["t"], "t")
    with pytest.raises(ValueError):
        B.knn_impute(train, {"b": test["b"]}, ["a"], "t")
    train["t"][:] = np.nan
    with pytest.raises(ValueError):
        B.iterative_impute(train, test, ["a"], "t")
