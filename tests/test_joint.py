"""The joint Gaussian behind the Gaussian anchor (cgjax.diffusion.joint): EM on sufficient statistics
against a row-by-row float64 re-derivation and closed forms, the held-out likelihood against scipy,
the shrinkage choice, and the anchor's patterns fitted from it."""

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from cgjax.diffusion import anchor, joint


def _gaussian(rng, d, n, scale=0.6):
    L = rng.normal(size=(d, d)) * scale + np.eye(d)
    mean = rng.normal(size=d)
    return rng.normal(size=(n, d)) @ L.T + mean, mean, L @ L.T


def _moments(z, obs):
    pats, groups = np.unique(obs, axis=0, return_inverse=True)
    return joint.moments(z, pats, groups.ravel())


def _em_step_by_rows(z, obs, mu, S, shrink, q):
    """One EM step written row by row: each row's missing entries filled with their conditional
    expectation, their conditional covariance added; then the shrunk estimate."""
    n, d = z.shape
    filled, extra = z.copy(), np.zeros((d, d))
    for i in range(n):
        o, u = obs[i], ~obs[i]
        if u.any():
            gain = S[np.ix_(u, o)] @ np.linalg.inv(S[np.ix_(o, o)] + joint.JITTER * np.eye(o.sum()))
            filled[i, u] = mu[u] + gain @ (z[i, o] - mu[o])
            extra[np.ix_(u, u)] += S[np.ix_(u, u)] - gain @ S[np.ix_(o, u)]
    new_mu = filled.mean(axis=0)
    new_S = (filled - new_mu).T @ (filled - new_mu) / n + extra / n
    factor = np.full((d, d), 1 - shrink)
    factor[:q, :q] = 1
    np.fill_diagonal(factor, 1)
    return new_mu, factor * new_S


def test_an_em_step_on_moments_is_the_row_by_row_step():
    rng = np.random.default_rng(0)
    z, _, _ = _gaussian(rng, 6, 300)
    obs = np.ones_like(z, bool)
    obs[:, 2:4] &= rng.random((300, 1)) > 0.4  # blocks missing together, as modalities are
    obs[:, 4:] &= rng.random((300, 1)) > 0.3
    mu0 = rng.normal(size=6) * 0.1
    A = rng.normal(size=(6, 6))
    S0 = A @ A.T / 6 + np.eye(6)
    factor = np.full((6, 6), 0.9)
    factor[:2, :2] = 1
    np.fill_diagonal(factor, 1)
    got = joint._em_step(_moments(z, obs), mu0, S0, factor)
    want = _em_step_by_rows(np.where(obs, z, 0.0), obs, mu0, S0, 0.1, 2)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-10, atol=1e-12)


def test_em_on_complete_rows_is_the_sample_mean_and_covariance():
    rng = np.random.default_rng(1)
    z, _, _ = _gaussian(rng, 5, 200)
    mu, S = joint.em(_moments(z, np.ones_like(z, bool)), 0.0)
    np.testing.assert_allclose(mu, z.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(S, np.cov(z, rowvar=False, bias=True), rtol=1e-8, atol=1e-10)


def test_accelerated_em_stops_at_the_fixed_point_of_plain_em():
    """The extrapolated iteration ends where a plain EM step no longer moves (a stationary point of
    the likelihood), for a shrunk and an unshrunk fit."""
    rng = np.random.default_rng(2)
    z, _, _ = _gaussian(rng, 8, 400)
    obs = np.ones_like(z, bool)
    obs[:, 3:6] &= rng.random((400, 1)) > 0.5
    obs[:, 6:] &= rng.random((400, 1)) > 0.5
    m = _moments(z, obs)
    for shrink in (0.0, 0.1):
        mu, S = joint.em(m, shrink, q=3)
        factor = np.full((8, 8), 1 - shrink)
        factor[:3, :3] = 1
        np.fill_diagonal(factor, 1)
        mu2, S2 = joint._em_step(m, mu, S, factor)
        assert np.abs(S2 - S).max() < 20 * joint.TOL and np.abs(mu2 - mu).max() < 20 * joint.TOL


def test_em_recovers_the_population_under_missing_blocks():
    rng = np.random.default_rng(3)
    z, mean, cov = _gaussian(rng, 6, 60_000, scale=0.4)
    obs = np.ones_like(z, bool)
    obs[:, 2:4] &= rng.random((len(z), 1)) > 0.5
    obs[:, 4:] &= rng.random((len(z), 1)) > 0.5
    mu, S = joint.em(_moments(z, obs), 0.0)
    np.testing.assert_allclose(mu, mean, atol=0.03)
    np.testing.assert_allclose(S, cov, atol=0.05 * np.abs(cov).max())


def test_heldout_loglik_is_the_conditional_gaussian_log_density():
    """Against scipy: sum over rows of log N(y; b + x_o A, cov) given each row's present columns
    (the moments' version drops the q/2 log 2 pi per row)."""
    rng = np.random.default_rng(4)
    z, _, _ = _gaussian(rng, 5, 50)
    obs = np.ones_like(z, bool)
    obs[:, 2:4] = rng.random((50, 1)) > 0.5
    obs[:, 4] = rng.random(50) > 0.5
    A = rng.normal(size=(5, 5))
    S, mu, q = A @ A.T / 5 + np.eye(5), rng.normal(size=5), 2
    want = 0.0
    for i in range(50):
        coef, b, cov = joint.conditional(mu, S, q, obs[i, q:])
        want += multivariate_normal(b + z[i, q:][obs[i, q:]] @ coef, cov + joint.JITTER * np.eye(q)).logpdf(z[i, :q])
    got = joint.heldout_loglik(mu, S, q, _moments(np.where(obs, z, 0.0), obs)) - 50 * q / 2 * np.log(2 * np.pi)
    np.testing.assert_allclose(got, want, rtol=1e-9)


def test_conditional_is_the_schur_complement():
    rng = np.random.default_rng(5)
    A = rng.normal(size=(5, 5))
    S, mu = A @ A.T + np.eye(5), rng.normal(size=5)
    given = np.array([True, False, True])
    coef, b, cov = joint.conditional(mu, S, 2, given)
    c = [2, 4]
    # the law of y | x by conditioning in float64 with an explicit inverse
    inv = np.linalg.inv(S[np.ix_(c, c)])
    np.testing.assert_allclose(coef, inv @ S[np.ix_(c, [0, 1])], rtol=1e-5)
    np.testing.assert_allclose(b, mu[:2] - mu[c] @ inv @ S[np.ix_(c, [0, 1])], rtol=1e-5)
    np.testing.assert_allclose(cov, S[:2, :2] - S[np.ix_([0, 1], c)] @ inv @ S[np.ix_(c, [0, 1])], rtol=1e-5)


def test_the_shrinkage_is_strong_for_few_rows_and_noise_and_weak_for_many_rows():
    rng = np.random.default_rng(6)
    # 60 rows, a target unrelated to 30 noise conditions: their estimated correlations are noise
    y, x = rng.normal(size=(60, 2)), rng.normal(size=(60, 30))
    assert joint.fit(y, x, np.ones_like(x, bool)).shrink >= 0.3
    # 20,000 rows of a correlated Gaussian: every correlation is well estimated
    z, _, _ = _gaussian(rng, 5, 20_000)
    assert joint.fit(z[:, :2], z[:, 2:], np.ones((20_000, 3), bool)).shrink <= 0.003


def test_the_fit_is_deterministic_and_in_the_rows_units():
    """The same rows give the same fit; rescaling a condition rescales its moments and leaves the
    target's conditional law and the chosen shrinkage unchanged (the shrinkage is scale-free)."""
    rng = np.random.default_rng(7)
    z, _, _ = _gaussian(rng, 6, 500)
    obs = (rng.random((500, 1)) > 0.3) | np.zeros((1, 4), bool)
    a, b = joint.fit(z[:, :2], z[:, 2:], obs), joint.fit(z[:, :2], z[:, 2:], obs)
    np.testing.assert_array_equal(a.cov, b.cov)
    scale = np.array([10.0, 10.0, 0.1, 1.0])
    c = joint.fit(z[:, :2], z[:, 2:] * scale, obs)
    assert c.shrink == a.shrink
    np.testing.assert_allclose(c.mu[2:], a.mu[2:] * scale, rtol=1e-6)
    ca, cc = joint.conditional(a.mu, a.cov, 2, np.ones(4, bool)), joint.conditional(c.mu, c.cov, 2, np.ones(4, bool))
    np.testing.assert_allclose(cc[0] * scale[:, None], ca[0], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(cc[2], ca[2], rtol=1e-6, atol=1e-9)


def _slots(rng, n, K, C, F, noise, presence):
    """A target f[n, F] linear in K condition slots of C columns plus Gaussian noise, each slot
    present in a ``presence`` share of the rows: the fit's arguments and the population's law
    (coef f[K C, F], noise sd)."""
    x = rng.normal(size=(n, K * C))
    coef = rng.normal(size=(K * C, F)) / np.sqrt(K * C)
    y = x @ coef + noise * rng.normal(size=(n, F))
    present = rng.random((n, K)) < presence
    conds = x.reshape(n, K, C) * present[..., None]
    return (y, conds, present, np.ones(n, bool), (C,) * K), coef


def _fresh_loglik(fitted, p, coef, noise, rng, K, C, n=20_000):
    """Mean log-likelihood of pattern p's law on fresh rows of the population with every slot of p."""
    x = rng.normal(size=(n, K * C))
    y = x @ coef + noise * rng.normal(size=(n, coef.shape[1]))
    mask = np.repeat([bool(p >> k & 1) for k in range(K)], C)
    x = x * mask
    cov = fitted["basis"][p] @ np.diag(fitted["eig"][p]) @ fitted["basis"][p].T
    return joint.loglik_rows((fitted["coef"][p].astype(float), fitted["bias"][p].astype(float),
                              cov.astype(float)), y, x).mean()


def test_the_joint_fit_serves_a_pattern_with_few_complete_rows(monkeypatch):
    """Four slots, each present in 30% of 2,000 rows: 'all four given' has about 16 rows, fewer than
    the 2 F + 10 = 26 a regression needs. Per-pattern fits (JOINT_MAX_DIMS = 0) fall back to a
    smaller pattern; the joint fit gives it its own conditional, which predicts fresh rows better."""
    rng = np.random.default_rng(8)
    K, C, F, noise = 4, 3, 8, 1.0
    args, coef = _slots(rng, 2000, K, C, F, noise, 0.3)
    full = anchor.n_patterns(K) - 1
    assert args[2].all(axis=1).sum() < 2 * F + 10
    joint_fit = anchor.fit(*args)
    monkeypatch.setattr(anchor, "JOINT_MAX_DIMS", 0)
    pattern_fit = anchor.fit(*args)
    assert np.all(pattern_fit["coef"][full][[3 * C + c for c in range(C)]] == 0)  # slot 3's rows left out
    gain = _fresh_loglik(joint_fit, full, coef, noise, rng, K, C) - _fresh_loglik(pattern_fit, full, coef, noise, rng, K, C)
    assert gain > 0.2  # nats per row


def test_each_pattern_takes_the_fit_that_predicts_its_heldout_rows_better(monkeypatch):
    """A pattern with enough rows takes the joint conditional or the ridge regression on its own rows,
    as _joint_predicts_better says; that decision is the comparison of the two fits' log-likelihoods
    of each fold's rows, fitted without them (re-derived here from the joint fit's folds)."""
    rng = np.random.default_rng(9)
    K, C, F = 2, 3, 2
    args, coef = _slots(rng, 1500, K, C, F, 0.3, 0.6)
    y, conds, present = args[:3]
    flat = conds.reshape(-1, K * C)
    both = present.all(axis=1)
    ridge = anchor.ridge_gaussian(flat[both], y[both])
    law = joint.fit(y, flat, np.repeat(present, C, axis=1))
    everything = np.ones(K * C, bool)
    squared = predicted = 0.0  # the joint conditional's spread, matched to its held-out errors
    for k, fold_fit in enumerate(law.fold_fits):
        held = both & (law.folds == k)
        A, b, cov = joint.conditional(*fold_fit, F, everything)
        squared += ((y[held] - b - flat[held] @ A) ** 2).sum()
        predicted += held.sum() * np.trace(cov)
    gap = 0.0
    for k, fold_fit in enumerate(law.fold_fits):
        held, train = both & (law.folds == k), both & (law.folds != k)
        A, b, cov = joint.conditional(*fold_fit, F, everything)
        gap += joint.loglik_rows((A, b, min(squared / predicted, 1.0) * cov), y[held], flat[held]).sum()
        gap -= joint.loglik_rows(anchor.ridge_gaussian(flat[train], y[train]), y[held], flat[held]).sum()
    chosen = anchor.fit(*args)
    from_joint = joint.conditional(law.mu, law.cov, F, np.ones(K * C, bool))[0]
    assert not np.allclose(from_joint, ridge[0], rtol=1e-3, atol=1e-4)  # the two fits differ
    np.testing.assert_allclose(chosen["coef"][3], from_joint if gap >= 0 else ridge[0], rtol=1e-5, atol=1e-6)
    for joint_wins, want in ((True, from_joint), (False, ridge[0])):
        monkeypatch.setattr(anchor, "_joint_predicts_better", lambda *a, w=joint_wins: w)
        np.testing.assert_allclose(anchor.fit(*args)["coef"][3], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n, C, F, noise, over", [(400, 20, 10, 0.3, True), (300, 15, 8, 0.3, False)])
def test_the_joint_conditional_is_narrowed_to_its_heldout_errors(monkeypatch, n, C, F, noise, over):
    """A high-signal target (noise sd 0.3 against signal sd 1), two slots of C conditions on n rows.
    Where the joint fit's shrinkage moves explained variance into its conditional's covariance
    (first case: its spread 1.65 times its mean squared error on fresh rows) the anchor narrows it
    towards its held-out errors; where the conditional is not too wide (second case) it is left as is
    (the factor is at most 1: fold fits on 2/3 of the rows err more than the fit on all of them)."""
    rng = np.random.default_rng(10)
    K = 2
    args, coef = _slots(rng, n, K, C, F, noise, 0.7 if over else 0.8)
    monkeypatch.setattr(anchor, "_joint_predicts_better", lambda *a: True)  # the joint conditional, always
    scaled = anchor.fit(*args)
    monkeypatch.setattr(anchor, "_heldout_scale", lambda *a: 1.0)
    raw = anchor.fit(*args)
    x = rng.normal(size=(20_000, K * C))
    y = x @ coef + noise * rng.normal(size=(20_000, F))

    def spread_over_error(f):
        mean = f["bias"][3] + x @ f["coef"][3]
        return f["eig"][3].sum() / ((y - mean) ** 2).sum(axis=1).mean()

    if over:
        assert spread_over_error(raw) > 1.4 and spread_over_error(scaled) < 1.2
    else:
        assert abs(spread_over_error(raw) - 1) < 0.1
        np.testing.assert_allclose(scaled["eig"][3], raw["eig"][3], rtol=1e-6)


def test_non_finite_observed_values_are_refused():
    rng = np.random.default_rng(11)
    y, x = rng.normal(size=(50, 2)), rng.normal(size=(50, 3))
    observed = np.ones_like(x, bool)
    observed[7] = False
    x[7, 1] = np.nan  # unobserved: ignored
    joint.fit(y, x, observed)
    x[9, 2] = np.inf
    with pytest.raises(ValueError, match=r"condition columns have 1 non-finite observed value\(s\), e.g. row 9, column 2"):
        joint.fit(y, x, observed)
    y[3, 0] = np.nan
    with pytest.raises(ValueError, match="target columns have 1 non-finite"):
        joint.fit(y, x, observed)
