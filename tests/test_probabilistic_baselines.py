"""Probabilistic baselines: the Gaussian conditional model against the closed-form conditional of a
Gaussian law, KNN draws are training rows among the k nearest, MICE posterior draws vary and
average to IterativeImputer's point estimate; point predictors get no energy score."""

import numpy as np
import pytest
from sklearn.experimental import enable_iterative_imputer  # noqa: F401
from sklearn.impute import IterativeImputer

from cgjax.evaluate import probabilistic as P
from cgjax.evaluate.baselines import knn_impute
from cgjax.evaluate.reconstruction import BaselineSampler, reconstruction_study, score_samples


def _gaussian_law(seed=0, d=(3, 2, 3)):
    """A random joint Gaussian over a (3), b (2), t (3): mean f[8], covariance f[8, 8]."""
    rng = np.random.default_rng(seed)
    k = sum(d)
    a = rng.normal(size=(k, k))
    return rng.normal(size=k), a @ a.T / k + 0.3 * np.eye(k), d


def _split(x, d):
    return {"a": x[:, :d[0]], "b": x[:, d[0]:d[0] + d[1]], "t": x[:, d[0] + d[1]:]}


def _closed_form(mu, cov, gi, ti, xg):
    """Exact conditional of t given g: mean f[n, Dt], covariance f[Dt, Dt]."""
    k = cov[np.ix_(ti, gi)] @ np.linalg.inv(cov[np.ix_(gi, gi)])
    return mu[ti] + (xg - mu[gi]) @ k.T, cov[np.ix_(ti, ti)] - k @ cov[np.ix_(gi, ti)]


def test_gaussian_conditional_recovers_the_closed_form_conditional():
    mu, cov, d = _gaussian_law()
    rng = np.random.default_rng(1)
    train = _split(rng.multivariate_normal(mu, cov, size=20000), d)
    test = _split(rng.multivariate_normal(mu, cov, size=4), d)
    test["b"][2:] = np.nan  # rows 2, 3 are conditioned on a alone
    R = 4000
    draws = P.gaussian_conditional_sample(train, test, ["a", "b"], "t", replicates=R, seed=0)
    assert draws.shape == (R, 4, 3) and draws.dtype == np.float32
    ti = np.arange(5, 8)
    for rows, gi in ((slice(0, 2), np.arange(5)), (slice(2, 4), np.arange(3))):
        xg = np.concatenate([test["a"], test["b"]], 1)[rows][:, : len(gi)]
        m, c = _closed_form(mu, cov, gi, ti, xg)
        sd = np.sqrt(np.diag(c))
        # Monte-Carlo error of the mean sd / sqrt(R) ~ 0.016 sd, plus the fit's error from 20,000 rows
        np.testing.assert_allclose(draws[:, rows].mean(0), m, atol=0.06 * sd.max())
        for n in range(2):
            emp = np.cov(draws[:, rows][:, n].T)
            np.testing.assert_allclose(emp, c, atol=0.06 * c.diagonal().max())
    # the conditional covariance differs between the two given sets: the fit is per pattern
    assert not np.allclose(np.cov(draws[:, 0].T), np.cov(draws[:, 2].T), atol=0.06 * cov.diagonal().max())


def test_joint_gaussian_recovers_the_closed_form_conditional_from_incomplete_rows():
    """Train rows miss a or b (35% each, at random): the EM fit on every row recovers the joint law,
    and each test row draws from the closed-form conditional given the modalities it has; it uses
    the incomplete rows (its fit differs from one on the complete rows alone)."""
    mu, cov, d = _gaussian_law(seed=5)
    rng = np.random.default_rng(6)
    train = _split(rng.multivariate_normal(mu, cov, size=20000), d)
    for m in ("a", "b"):
        train[m][rng.random(20000) < 0.35] = np.nan
    test = _split(rng.multivariate_normal(mu, cov, size=6), d)
    test["b"][2:4] = np.nan
    test["a"][4:] = np.nan
    R = 4000
    draws = P.joint_gaussian_sample(train, test, ["a", "b"], "t", replicates=R, seed=0)
    assert draws.shape == (R, 6, 3) and draws.dtype == np.float32
    ti = np.arange(5, 8)
    for rows, gi, cols in ((slice(0, 2), np.arange(5), ("a", "b")), (slice(2, 4), np.arange(3), ("a",)),
                           (slice(4, 6), np.arange(3, 5), ("b",))):
        xg = np.concatenate([test[m][rows] for m in cols], 1)
        m, c = _closed_form(mu, cov, gi, ti, xg)
        np.testing.assert_allclose(draws[:, rows].mean(0), m, atol=0.07 * np.sqrt(np.diag(c)).max())
        for n in range(2):
            np.testing.assert_allclose(np.cov(draws[:, rows][:, n].T), c, atol=0.07 * c.diagonal().max())
    complete = ~np.isnan(train["a"]).any(1) & ~np.isnan(train["b"]).any(1)
    cc = P.joint_gaussian_sample({k: v[complete] for k, v in train.items()}, test, ["a", "b"], "t",
                                 replicates=R, seed=0)
    assert not np.allclose(cc, draws)
    again = P.joint_gaussian_sample(train, test, ["a", "b"], "t", replicates=R, seed=0)
    np.testing.assert_array_equal(again, draws)
    present = np.flatnonzero(~np.isnan(train["b"]).any(axis=1))
    train["b"][present[0], 1] = np.nan  # half a modality: refused, not a silent NaN
    with pytest.raises(ValueError, match=r"train\['b'\] has 1 row\(s\) with some but not all values NaN"):
        P.joint_gaussian_sample(train, test, ["a", "b"], "t", replicates=2, seed=0)


def test_gaussian_per_type_fits_each_type_and_pooled_does_not():
    """Two types with opposite slopes t = ±2 a + noise: per type the conditional mean is recovered;
    pooled, the slope averages out to about 0."""
    rng = np.random.default_rng(2)
    n = 4000
    types = np.where(rng.random(n) < 0.5, "A", "B")
    a = rng.normal(size=(n, 1))
    t = np.where(types[:, None] == "A", 2.0, -2.0) * a + 0.1 * rng.normal(size=(n, 1))
    train = {"a": a[:3000], "t": t[:3000]}
    test = {"a": a[3000:]}
    truth = np.where(types[3000:, None] == "A", 2.0, -2.0) * a[3000:]
    per_type = P.gaussian_conditional_sample(train, test, ["a"], "t", replicates=200, seed=0,
                                             train_types=types[:3000], test_types=types[3000:])
    pooled = P.gaussian_conditional_sample(train, test, ["a"], "t", replicates=200, seed=0)
    assert np.abs(per_type.mean(0) - truth).max() < 0.1
    assert per_type.std(0).mean() == pytest.approx(0.1, rel=0.15)
    assert pooled.std(0).mean() > 1.5  # the pooled residual absorbs both slopes


def test_gaussian_with_no_given_modality_is_the_marginal():
    mu, cov, d = _gaussian_law(seed=3)
    rng = np.random.default_rng(4)
    train = _split(rng.multivariate_normal(mu, cov, size=20000), d)
    draws = P.gaussian_conditional_sample(train, {}, [], "t", replicates=3000, seed=1, n_rows=2)
    np.testing.assert_allclose(draws.mean(0), np.broadcast_to(mu[5:], (2, 3)), atol=0.08)
    np.testing.assert_allclose(np.cov(draws[:, 0].T), cov[5:, 5:], atol=0.08 * cov.diagonal().max())
    with pytest.raises(ValueError, match="n_rows"):
        P.gaussian_conditional_sample(train, {}, [], "t")


def _linear(seed=0, n_train=400, n_test=30, noise=0.5):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(4, 3))
    a = rng.normal(size=(n_train + n_test, 4))
    t = a @ w + noise * rng.normal(size=(n_train + n_test, 3))
    return {"a": a[:n_train], "t": t[:n_train]}, {"a": a[n_train:]}


def test_knn_sample_returns_training_rows_among_the_k_nearest():
    train, test = _linear(n_train=200, n_test=20)
    k = 4
    for weights in ("uniform", "distance"):
        draws = P.knn_sample(train, test, ["a"], "t", replicates=50, seed=0, k=k, weights=weights)
        assert draws.shape == (50, 20, 3)
        dist = np.linalg.norm(test["a"][:, None] - train["a"][None], axis=2)
        nearest = np.argsort(dist, axis=1)[:, :k]
        for n in range(20):
            allowed = train["t"][nearest[n]].astype(np.float32)
            # every draw is exactly one of the row's k nearest neighbours' targets
            assert all((allowed == x).all(1).any() for x in draws[:, n])
            assert len(np.unique(draws[:, n], axis=0)) > 1  # and the draws vary
    # k = 1: always the nearest neighbour, = KNNImputer(1)
    one = P.knn_sample(train, test, ["a"], "t", replicates=3, seed=0, k=1)
    np.testing.assert_allclose(one, np.broadcast_to(knn_impute(train, test, ["a"], "t", k=1), one.shape), rtol=1e-6)
    # uniform draws average to the KNN imputation (the neighbour mean)
    many = P.knn_sample(train, test, ["a"], "t", replicates=4000, seed=1, k=k)
    spread = np.abs(train["t"]).max()
    np.testing.assert_allclose(many.mean(0), knn_impute(train, test, ["a"], "t", k=k), atol=0.1 * spread)


def test_knn_sample_distance_weights_favour_the_nearest():
    train = {"a": np.array([[0.0], [1.0], [3.0]]), "t": np.array([[10.0], [20.0], [30.0]])}
    test = {"a": np.array([[0.5 - 0.25]])}  # distances 0.25, 0.75, 2.75 -> weights 4 : 1.33 : 0.36
    draws = P.knn_sample(train, test, ["a"], "t", replicates=20000, seed=0, k=3, weights="distance")[:, 0, 0]
    w = 1 / np.array([0.25, 0.75, 2.75])
    np.testing.assert_allclose([(draws == v).mean() for v in (10, 20, 30)], w / w.sum(), atol=0.015)


def test_mice_draws_vary_and_average_to_the_point_imputation():
    train, test = _linear(noise=0.5)
    R = 60
    draws = P.mice_sample(train, test, ["a"], "t", replicates=R, seed=0, max_iter=5)
    assert draws.shape == (R, 30, 3)
    assert (draws.std(0) > 0.2).all()  # replicates differ (noise sd 0.5)
    x_tr = np.concatenate([train["a"], train["t"]], 1)
    x_te = np.concatenate([test["a"], np.full((30, 3), np.nan)], 1)
    point = IterativeImputer(max_iter=5, random_state=0).fit(x_tr).transform(x_te)[:, 4:]
    # within 5 Monte-Carlo standard errors, entry by entry
    assert (np.abs(draws.mean(0) - point) < 5 * draws.std(0) / np.sqrt(R) + 0.02).all()
    assert draws.std(0).mean() == pytest.approx(0.5, rel=0.2)


def test_mice_shared_fit_equals_sklearn():
    """The shortcut (one round fitted for the target columns, R copies of the test rows in one
    transform) gives exactly sklearn's max_iter-round imputer on the tiled test matrix."""
    train, test = _linear(n_train=100, n_test=5)
    draws = P.mice_sample(train, test, ["a"], "t", replicates=3, seed=7, max_iter=3)
    x_tr = np.concatenate([train["a"], train["t"]], 1)
    x_te = np.concatenate([test["a"], np.full((5, 3), np.nan)], 1)
    ref = IterativeImputer(sample_posterior=True, max_iter=3, random_state=7).fit(x_tr).transform(np.tile(x_te, (3, 1)))
    np.testing.assert_allclose(draws, ref[:, 4:].reshape(3, 5, 3), rtol=1e-5, atol=1e-6)
    # with NaN in the training matrix imputation r is sklearn's imputer with random_state seed + r
    holey = {m: v.copy() for m, v in train.items()}
    holey["a"][::7, 0] = np.nan
    d2 = P.mice_sample(holey, test, ["a"], "t", replicates=2, seed=0, max_iter=3)
    x_h = np.concatenate([holey["a"], holey["t"]], 1)
    for r in range(2):
        ref = IterativeImputer(sample_posterior=True, max_iter=3, random_state=r).fit(x_h).transform(x_te)
        np.testing.assert_allclose(d2[r], ref[:, 4:], rtol=1e-5, atol=1e-6)
    assert not np.allclose(d2[0], d2[1])


def test_same_seed_same_draws_and_bad_input():
    train, test = _linear()
    for fn in (P.gaussian_conditional_sample, P.knn_sample):
        np.testing.assert_array_equal(fn(train, test, ["a"], "t", replicates=3, seed=5),
                                      fn(train, test, ["a"], "t", replicates=3, seed=5))
        assert not np.array_equal(fn(train, test, ["a"], "t", replicates=3, seed=5),
                                  fn(train, test, ["a"], "t", replicates=3, seed=6))
    with pytest.raises(ValueError, match="'zz'"):
        P.knn_sample(train, test, ["zz"], "t")
    with pytest.raises(ValueError, match="weights"):
        P.knn_sample(train, test, ["a"], "t", weights="gauss")


def test_point_predictors_get_no_energy_score_and_samplers_do():
    train, test = _linear(n_train=300, n_test=40)
    truth_rng = np.random.default_rng(9)
    truth = truth_rng.normal(size=(40, 3))
    point = score_samples(np.broadcast_to(truth[None] + 1.0, (5, 40, 3)), truth)
    assert "energy_score" not in point and "coverage_range" not in point
    assert point["mean_distance"] == pytest.approx(np.sqrt(3))
    full = {**train, "t": train["t"]}
    test_full = {"a": test["a"], "t": truth}
    samplers = {k: BaselineSampler(full, k) for k in ("knn", "gaussian_sample", "joint_gaussian_sample", "mice_sample",
                                                      "knn_sample")}
    res = reconstruction_study(samplers, test_full, modalities=["a", "t"], given_sets={"t": [("a",)], "a": []},
                               replicates=4, seed=0)
    by = {r["method"]: r for r in res.records}
    assert set(by) == set(samplers)
    assert "energy_score" not in by["knn"] and "mean_distance" in by["knn"]
    for k in ("gaussian_sample", "joint_gaussian_sample", "mice_sample", "knn_sample"):
        assert by[k]["energy_score"] > 0 and by[k]["r2_std"] > 0 and res.samples["t"][k].shape == (4, 40, 3)


def test_gaussian_keeps_its_spread_when_complete_rows_are_fewer_than_given_features():
    """60 training rows, 70 given features: least squares interpolates them (zero residuals, draws
    with no spread); the leave-one-out ridge keeps a spread near the true conditional's."""
    rng = np.random.default_rng(5)
    k, n, dt = 70, 60, 4
    z = rng.normal(size=(n + 200, 3))  # 3 factors shared by the given block and the target
    g = z @ rng.normal(size=(3, k)) + rng.normal(size=(n + 200, k))
    t = z @ rng.normal(size=(3, dt)) + 0.5 * rng.normal(size=(n + 200, dt))
    train, test = {"g": g[:n], "t": t[:n]}, {"g": g[n:]}
    draws = P.gaussian_conditional_sample(train, test, ["g"], "t", replicates=50, seed=0)
    # the exact conditional's variance is at least the noise's 0.25 (and at most t's own variance)
    spread = draws.var(axis=0).mean()
    assert 0.25 * 0.7 < spread < t.var(axis=0).mean()
    # and the draws are centred as well as a ridge on 60 rows can: closer to t than t's mean is
    assert np.mean((draws.mean(0) - t[n:]) ** 2) < np.mean((t[:n].mean(0) - t[n:]) ** 2)


def test_mixture_sample_finds_unlabelled_types_that_the_pooled_gaussian_mixes():
    """Two types with opposite slopes t = +-2 a + noise, the type visible in a second given block b
    (mean +-3): without type labels the mixture's draws centre on each row's own slope with the
    noise's spread, as the per-type Gaussian with labels does; the pooled Gaussian mixes the slopes.
    Rows without b draw from the model of a alone. Same seed, same draws."""
    rng = np.random.default_rng(2)
    n = 4000
    types = rng.random(n) < 0.5
    a = rng.normal(size=(n, 1))
    b = np.where(types[:, None], 3.0, -3.0) + rng.normal(size=(n, 2))
    t = np.where(types[:, None], 2.0, -2.0) * a + 0.1 * rng.normal(size=(n, 1))
    train = {"a": a[:3000], "b": b[:3000], "t": t[:3000]}
    test = {"a": a[3000:], "b": b[3000:].copy()}
    test["b"][-50:] = np.nan
    truth = (np.where(types[3000:, None], 2.0, -2.0) * a[3000:])[:-50]
    draws = P.mixture_conditional_sample(train, test, ["a", "b"], "t", replicates=200, seed=0)
    assert draws.shape == (200, 1000, 1) and np.isfinite(draws).all()
    err = np.abs(draws[:, :-50].mean(0) - truth)
    assert np.quantile(err, 0.99) < 0.1  # a row or two near b = 0 may take the other type
    assert draws[:, :-50].std(0).mean() == pytest.approx(0.1, rel=0.2)
    pooled = P.gaussian_conditional_sample(train, test, ["a", "b"], "t", replicates=200, seed=0)
    assert np.quantile(np.abs(pooled[:, :-50].mean(0) - truth), 0.5) > 0.3
    # a alone says nothing about the type: t is +-2 a, so the draws' spread must grow with |a|
    alone = draws[:, -50:, 0]
    assert np.corrcoef(alone.std(0), np.abs(a[-50:, 0]))[0, 1] > 0.8
    np.testing.assert_array_equal(draws, P.mixture_conditional_sample(train, test, ["a", "b"], "t",
                                                                      replicates=200, seed=0))
