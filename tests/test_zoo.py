"""The zoo of laws: members are what they claim, their oracles are exact, and they are seeded.

The sampler (``SyntheticLaw.sample_full``, row by row of each type for type-specific loadings) and
the oracle (Gaussian conditioning of the stacked joint, Bayes over types) are separate code paths;
the tests check one against Monte-Carlo draws of the other, and the type posterior against a
float64 re-derivation with scipy's multivariate normal density.
"""

import numpy as np
import pytest
from scipy import stats
from threadpoolctl import threadpool_limits

from cgjax.data.cohort import validate
from cgjax.data.split import split_cohort
from cgjax.datasets import synthetic_tcga, zoo


@pytest.fixture(scope="module", autouse=True)
def _single_threaded_blas():
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="module")
def member():
    """A type-specific, ragged-width law with type-dependent missingness."""
    spec = zoo.LawSpec("t", dims=(6, 3, 5), signal=(0.8, 0.6, 0.5), missing=(0.3, 0.2, 0.4), n_latent=3,
                       n_types=3, type_loading_share=0.5, missing_type_shift=1.0, n_samples=500, law_seed=7)
    return zoo.ZooLaw("t", zoo.build_law(spec), 500, spec)


@pytest.fixture(scope="module")
def big_draw(member):
    return member.oracle.sample_full(60000, seed=11)


def test_named_members_span_the_axes():
    ms = [zoo.law(n) for n in zoo.ZOO]
    mods = {len(m.modalities) for m in ms}
    widths = [d for m in ms for d in m.dims.values()]
    sizes = [m.n_samples for m in ms]
    assert min(mods) == 2 and max(mods) == 5
    assert min(widths) == 8 and max(widths) == 128
    assert min(sizes) == 500 and max(sizes) == 30000
    assert any(m.oracle.type_specific for m in ms) and not all(m.oracle.type_specific for m in ms)
    assert any(m.describe()["missing_type_shift"] > 0 for m in ms)
    for seed in range(20):  # random members stay in the documented ranges
        s = zoo.random_spec(seed)
        assert 2 <= len(s.dims) <= 5 and all(8 <= d <= 128 for d in s.dims) and 500 <= s.n_samples <= 30000


def test_tcga_default_is_synthetic_tcga():
    a = zoo.law("tcga_default", n_samples=300).cohort(seed=4)
    b = synthetic_tcga(300, seed=4)
    for m in b.modalities:
        np.testing.assert_array_equal(a.data[m], b.data[m])
    assert a.clinical.equals(b.clinical) and a.source == b.source


def test_seeded_and_deterministic():
    a, b = zoo.law("five_narrow").cohort(3), zoo.law("five_narrow").cohort(3)
    c = zoo.law("five_narrow").cohort(4)
    for m in a.modalities:
        np.testing.assert_array_equal(a.data[m], b.data[m])
    assert not np.array_equal(np.nan_to_num(a.data["m1"]), np.nan_to_num(c.data["m1"]))
    assert zoo.law(5).oracle is zoo.law(5, n_samples=700).oracle  # the size does not change the law
    assert zoo.law(5, n_samples=700).cohort().n_samples == 700
    np.testing.assert_array_equal(zoo.law(6).oracle.latent_means, zoo.build_law(zoo.random_spec(6)).latent_means)
    assert not np.allclose(zoo.law(5).oracle.latent_means[0, :2], zoo.law(6).oracle.latent_means[0, :2])


def test_cohort_is_usable_by_the_pipeline(member):
    c = member.cohort(0)
    validate(c)
    assert c.dims() == {"m1": 6, "m2": 3, "m3": 5}
    assert (np.stack([c.masks[m] for m in c.modalities], 1).sum(1) >= 2).all()  # min(2, M - 1) present
    split = split_cohort(c).clinical["split"]
    assert set(split) == {"train", "val", "test"}
    with pytest.raises(ValueError, match="unknown zoo law"):
        zoo.law("nope")
    with pytest.raises(ValueError, match="2-5 modalities"):
        zoo.LawSpec("x", dims=(4,), signal=(0.5,), missing=(0.1,))


def test_features_are_standardised(member, big_draw):
    for m in member.modalities:
        x = big_draw.x[m]
        assert np.abs(x.mean(0)).max() < 0.05
        assert np.abs(x.var(0) - 1).max() < 0.05


def test_missingness_rates_match_the_law(member, big_draw):
    law = member.oracle
    code = big_draw.present @ (1 << np.arange(3))
    freq = np.bincount(code, minlength=8) / len(code)
    expected = law.type_proportions @ law.pattern_probs
    se = np.sqrt(expected * (1 - expected) / len(code))
    assert np.all(np.abs(freq - expected) <= 5 * se + 1e-12)
    assert expected[law.patterns.sum(1) < 2].sum() == 0
    # type-dependent: the per-type missing rates differ (tau = 1); at random (tau = 0) they do not.
    rates = (1 - law.pattern_probs @ law.patterns)  # [C, M]
    assert np.ptp(rates, axis=0).max() > 0.05
    mar = zoo.law("issue11").oracle
    assert np.ptp(1 - mar.pattern_probs @ mar.patterns, axis=0).max() < 1e-12
    # p(c | pattern) from the law against the sampled types of each pattern.
    for p in (7, 3, 5):
        rows = code == p
        emp = np.bincount(big_draw.types[rows], minlength=3) / rows.sum()
        np.testing.assert_allclose(emp, member.type_prior(law.patterns[p][None])[0], atol=5 / np.sqrt(rows.sum()))


def test_type_specific_conditional_matches_a_float64_rederivation(member, big_draw):
    """Per type: mean_c = A_c mu_c + b, cov_c = A_c Sigma_c A_c^T + Psi written out here from the law's
    parameters; weights by Bayes with scipy's density, the conditional by the Schur complement."""
    law = member.oracle
    d = {m: big_draw.x[m][:40] for m in law.modalities}
    prior = member.type_prior(np.ones((40, 3), bool))
    cond = member.conditional("m1", {"m2": d["m2"], "m3": d["m3"]})
    logw = np.empty((40, 3))
    for c in range(3):
        a = [np.asarray(law.loadings[i])[c] for i in range(3)]
        mu = [a[i] @ law.latent_means[c] + law.offsets[i] for i in range(3)]
        cov = lambda i, j: a[i] @ law.latent_covs[c] @ a[j].T + (np.diag(law.noise_vars[i]) if i == j else 0)
        s_gg = np.block([[cov(1, 1), cov(1, 2)], [cov(2, 1), cov(2, 2)]])
        s_tg = np.hstack([cov(0, 1), cov(0, 2)])
        g = np.hstack([d["m2"], d["m3"]])
        logw[:, c] = np.log(prior[:, c]) + stats.multivariate_normal(np.concatenate(mu[1:]), s_gg).logpdf(g)
        np.testing.assert_allclose(cond.means[:, c], mu[0] + (g - np.concatenate(mu[1:])) @ np.linalg.solve(s_gg, s_tg.T),
                                   atol=1e-9)
        np.testing.assert_allclose(cond.covs[c], cov(0, 0) - s_tg @ np.linalg.solve(s_gg, s_tg.T), atol=1e-9)
    w = np.exp(logw - logw.max(1, keepdims=True))
    np.testing.assert_allclose(cond.weights, w / w.sum(1, keepdims=True), atol=1e-9)


def test_known_type_conditional_against_monte_carlo(member, big_draw):
    """Within a type, the draws' regression of the target on the givens is the oracle's mean and the
    residual covariance is its covariance (the sampler is a separate code path)."""
    law = member.oracle
    c = 1
    rows = big_draw.types == c
    g = np.hstack([big_draw.x["m2"][rows], big_draw.x["m3"][rows]])
    t = big_draw.x["m1"][rows]
    cond = law.conditional("m1", {"m2": big_draw.x["m2"][rows], "m3": big_draw.x["m3"][rows]},
                           type_prior=np.full(rows.sum(), "T2", dtype=object))
    resid = t - cond.mean()
    n = len(resid)
    assert np.abs(resid.mean(0)).max() < 5 * resid.std(0).max() / np.sqrt(n)
    assert np.abs(np.corrcoef(resid.T, g.T)[:6, 6:]).max() < 5 / np.sqrt(n)
    assert np.abs(np.cov(resid.T) - cond.covs[c]).max() < 0.03


def test_mixture_conditional_against_monte_carlo(member, big_draw):
    """Type unknown, complete rows (the pattern is evidence about the type): residuals of the exact
    mean are centred, orthogonal to the givens, with second moment E[Cov(x | g)]."""
    rows = big_draw.present.all(1)
    given = {"m3": big_draw.x["m3"][rows]}
    cond = member.conditional("m2", given)
    assert cond.weights.max(1).mean() < 0.95
    resid = big_draw.x["m2"][rows] - cond.mean()
    n = len(resid)
    assert np.abs(resid.mean(0)).max() < 5 * resid.std(0).max() / np.sqrt(n)
    assert np.abs(resid.T @ resid / n - cond.average_cov()).max() < 0.03
    for h in (given["m3"], given["m3"] ** 2):
        assert np.abs(np.corrcoef(resid.T, h.T)[:3, 3:]).max() < 5 / np.sqrt(n)


def test_draws_have_the_posterior_moments(member, big_draw):
    cond = member.conditional("m1", {"m3": big_draw.x["m3"][:3]})
    draws = cond.sample(0, 40000)
    se = np.sqrt(cond.variance() / 40000)
    assert np.all(np.abs(draws.mean(0) - cond.mean()) < 5 * se)
    for i in range(3):
        assert np.abs(np.cov(draws[:, i].T) - cond.cov()[i]).max() < 0.04


def test_latent_path_equals_dense_path_for_ragged_widths():
    law = zoo.law("five_narrow").oracle
    assert not law.type_specific
    d = law.sample_full(50, seed=2)
    given = ("m2", "m4", "m5")
    xg = np.hstack([d.x[m] for m in given])
    fast = law._conditional_latent("m3", given, xg)
    dense = law._conditional_dense(law._index(["m3"]), law._index(list(given)), xg)
    for a, b in zip(fast, dense):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)
