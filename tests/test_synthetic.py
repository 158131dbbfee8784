"""The synthetic cohort and its oracle: the law is what it claims to be, and the oracle is exact.

The sampler (``SyntheticLaw.sample_full``: z then x = A z + b + noise) and the oracle
(``SyntheticLaw.conditional``: Gaussian conditioning of the stacked joint, Bayes over types) are
separate code paths, so checking one against Monte-Carlo draws of the other tests both.
"""

import pathlib

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from threadpoolctl import threadpool_limits

from cgjax.data import Cohort
from cgjax.datasets import (CANCER_TYPES, TABLE4, SyntheticLaw, default_law, energy_score,
                            fit_pattern_probs, pooled_r2, synthetic_tcga)

MODS = ("cna", "rnaseq", "rppa", "wsi")
TABLE4_CSV = pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "paper_table4.csv"


@pytest.fixture(scope="module", autouse=True)
def _single_threaded_blas():
    """These are many small matrix products: multi-threaded BLAS spin-waits on a busy 2-core machine
    and runs them 10-30x slower, so the module runs with one BLAS thread."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="module")
def law():
    return default_law()


@pytest.fixture(scope="module")
def big_draw(law):
    return law.sample_full(16000, seed=123)


@pytest.fixture(scope="module")
def cohort():
    return synthetic_tcga(10000, seed=0)


def _table():
    t = pd.DataFrame.from_dict(TABLE4, orient="index",
                               columns=["total", "cna", "rnaseq", "rppa", "wsi", "complete", "incomplete"])
    return t


# ---- the cohort ------------------------------------------------------------------------------------

@pytest.mark.skipif(not TABLE4_CSV.exists(), reason="no paper_table4.csv beside the checkout (optional cross-check of the embedded table)")
def test_embedded_table4_matches_the_paper_csv():
    csv = pd.read_csv(TABLE4_CSV, index_col=0)
    pd.testing.assert_frame_equal(_table(), csv, check_names=False, check_dtype=False)


def test_cohort_layout(cohort):
    assert isinstance(cohort, Cohort)
    assert cohort.modalities == MODS and cohort.dims() == {m: 32 for m in MODS}
    assert cohort.sample_ids[0] == "SYN-0000001" and cohort.sample_ids[-1] == "SYN-0010000"
    for m in MODS:
        x = cohort.data[m]
        assert x.dtype == np.float32
        assert np.isfinite(x[cohort.masks[m]]).all() and np.isnan(x[~cohort.masks[m]]).all()
    assert (cohort.mask_matrix().sum(1) >= 2).all()  # the paper kept samples with >= 2 omics
    thca = cohort.label("cancer_type") == "THCA"
    assert thca.any() and not cohort.masks["cna"][thca].any()
    assert synthetic_tcga(50, dim=8).dims() == {m: 8 for m in MODS}
    assert synthetic_tcga().n_samples == 4000


def test_pattern_law_matches_table4_exactly(law):
    t = _table()
    present = law.pattern_probs @ law.patterns  # [C, M] p(modality present | c)
    np.testing.assert_allclose(present, t[list(MODS)].to_numpy() / t[["total"]].to_numpy(), atol=1e-6)
    full = law.patterns.all(1)
    np.testing.assert_allclose(law.pattern_probs[:, full][:, 0], t.complete / t.total, atol=1e-12)
    assert np.all(law.pattern_probs[:, law.patterns.sum(1) < 2] == 0)
    np.testing.assert_allclose(law.type_proportions, t.total / t.total.sum())
    np.testing.assert_allclose(law.type_prior(complete_only=True), t.complete / t.complete.sum())


def test_sampled_types_and_availability_match_table4(cohort):
    t = _table()
    n = cohort.n_samples
    types = cohort.label("cancer_type")
    freq = pd.Series(types).value_counts().reindex(CANCER_TYPES, fill_value=0) / n
    p = t.total / t.total.sum()
    assert np.all(np.abs(freq - p) < 5 * np.sqrt(p * (1 - p) / n))
    mask = cohort.mask_matrix()
    for c in CANCER_TYPES:
        rows = types == c
        n_c = rows.sum()
        want = np.append(t.loc[c, list(MODS)].to_numpy() / t.loc[c, "total"], t.loc[c, "complete"] / t.loc[c, "total"])
        got = np.append(mask[rows].mean(0), mask[rows].all(1).mean())
        tol = 5 * np.sqrt(want * (1 - want) / n_c) + 1e-9
        assert np.all(np.abs(got - want) <= tol), (c, got, want)


def test_fit_pattern_probs_hits_marginals_and_complete_fraction():
    rates, complete = np.array([0.9, 0.7, 0.55, 0.8]), 0.4
    patterns, probs = fit_pattern_probs(rates, complete)
    np.testing.assert_allclose(probs.sum(), 1.0)
    np.testing.assert_allclose(probs @ patterns, rates, atol=1e-7)
    assert probs[patterns.all(1)][0] == pytest.approx(complete)
    assert probs[patterns.sum(1) < 2].sum() == 0


def test_same_seed_same_cohort_and_other_seed_differs():
    a, b, c = synthetic_tcga(300, seed=7), synthetic_tcga(300, seed=7), synthetic_tcga(300, seed=8)
    for m in MODS:
        np.testing.assert_array_equal(a.data[m], b.data[m])
    pd.testing.assert_frame_equal(a.clinical, b.clinical)
    assert not np.array_equal(a.masks["rppa"], c.masks["rppa"])
    # The law does not depend on the data seed (cached, and rebuilt identically).
    from cgjax.datasets import synthetic
    assert default_law() is default_law(32, signal={"rnaseq": 0.88})
    fresh = synthetic._build_law.__wrapped__(32, 12, tuple(synthetic.DEFAULT_SIGNAL[m] for m in MODS),
                                             1.5, 1.0, 0.8, 0.35, 1800.0, 0.10, synthetic._LAW_SEED)
    for f in ("loadings", "latent_means", "latent_covs", "pattern_probs", "hazard_offsets"):
        np.testing.assert_array_equal(getattr(fresh, f), getattr(default_law(), f))
    with pytest.raises(ValueError):
        default_law(signal={"mirna": 0.5})


def test_features_are_standardised(law, big_draw):
    x = np.concatenate([big_draw.x[m] for m in MODS], axis=1)
    assert np.abs(x.mean(0)).max() < 0.05
    assert np.abs(x.var(0) - 1).max() < 0.08
    # And exactly, from the law's own moments (mixture of the per-type Gaussians).
    mean, cov, _ = law._joint
    m_all = law.type_proportions @ mean
    var_all = law.type_proportions @ (np.diagonal(cov, axis1=1, axis2=2) + (mean - m_all) ** 2) - 0
    np.testing.assert_allclose(m_all[: 4 * law.dim], 0, atol=1e-12)
    np.testing.assert_allclose(var_all[: 4 * law.dim], 1, atol=1e-12)


# ---- the oracle ------------------------------------------------------------------------------------

def _whiten(resid, covs, types):
    out = np.empty_like(resid)
    for c in np.unique(types):
        rows = types == c
        out[rows] = np.linalg.solve(np.linalg.cholesky(covs[c]), resid[rows].T).T
    return out


@pytest.mark.parametrize("target,given", [("rnaseq", ("cna", "wsi")), ("latent", MODS), ("cna", ())])
def test_known_type_conditional_is_exact(law, big_draw, target, given):
    """Given the type, x_t - E[x_t | g, c] ~ N(0, Cov_c) independent of g: whitened residuals must be
    iid standard normal and uncorrelated with the given features."""
    d = big_draw
    truth = d.z if target == "latent" else d.x[target]
    cond = law.conditional(target, {g: d.x[g] for g in given},
                           type_prior=np.asarray(law.cancer_types)[d.types])
    np.testing.assert_allclose(cond.weights[np.arange(len(d.types)), d.types], 1.0)
    white = _whiten(truth - cond.mean(), cond.covs, d.types)
    n = len(white)
    assert np.abs(white.mean(0)).max() < 5 / np.sqrt(n)
    assert np.abs(np.cov(white.T) - np.eye(white.shape[1])).max() < 0.05
    if given:
        g = np.concatenate([d.x[m] for m in given], axis=1)
        corr = np.corrcoef(white.T, g.T)[: white.shape[1], white.shape[1]:]
        assert np.abs(corr).max() < 0.05


def test_mixture_conditional_matches_monte_carlo_moments(law, big_draw):
    """Type unknown and a weak source (CNA), so the posterior over types is spread: the residual of
    E[x | g] has mean 0, is orthogonal to functions of g, and its second moment is E[Cov(x | g)]."""
    x = {m: big_draw.x[m] for m in ("cna", "rppa")}
    cond = law.conditional("rppa", {"cna": x["cna"]})
    assert cond.weights.max(1).mean() < 0.9  # genuinely a mixture
    np.testing.assert_allclose(cond.weights.sum(1), 1.0)
    resid = x["rppa"] - cond.mean()
    n = len(resid)
    assert np.abs(resid.mean(0)).max() < 5 * resid.std(0).max() / np.sqrt(n)
    emp = resid.T @ resid / n
    model = cond.average_cov()
    assert np.abs(emp - model).max() < 0.05
    np.testing.assert_allclose(np.diagonal(model), cond.variance().mean(0), rtol=1e-10)
    few = law.conditional("rppa", {"cna": x["cna"][:300]})
    np.testing.assert_allclose(few.average_cov(), few.cov().mean(0), atol=1e-12)
    g = x["cna"]
    for h in (g, g ** 2):
        corr = np.corrcoef(resid.T, h.T)[:32, 32:]
        assert np.abs(corr).max() < 0.05
    # A wrong mixture (ignoring the type posterior: prior weights) is detectably worse.
    naive = np.einsum("c,ncd->nd", law.type_prior(), cond.means)
    assert np.mean((x["rppa"] - naive) ** 2) > np.mean(resid ** 2) + 0.01


@pytest.mark.parametrize("target,given", [("rnaseq", ("cna", "wsi")), ("latent", MODS), ("wsi", ("rppa",)),
                                          ("cna", ())])
def test_latent_space_conditioning_equals_dense_conditioning(law, big_draw, target, given):
    """The fast path (Woodbury in z-space) and the dense Gaussian conditioning of the stacked joint
    are two derivations of the same law: they must agree to rounding."""
    xg = np.concatenate([big_draw.x[m][:200] for m in given], axis=1) if given else np.zeros((200, 0))
    fast = law._conditional_latent(target, given, xg)
    dense = law._conditional_dense(law._index([target]), law._index(list(given)), xg)
    for a, b in zip(fast, dense):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)
    # Given the latent itself, the target is independent of the type: mean A_t z + b_t, cov Psi_t.
    cond = law.conditional("rppa", {"latent": big_draw.z[:5]})
    i = law.modalities.index("rppa")
    np.testing.assert_allclose(cond.mean(), big_draw.z[:5] @ law.loadings[i].T + law.offsets[i], atol=1e-9)
    np.testing.assert_allclose(cond.cov()[0], np.diag(law.noise_vars[i]), atol=1e-9)


def test_mixture_samples_match_mean_and_cov(law, big_draw):
    cond = law.conditional("wsi", {"cna": big_draw.x["cna"][:4]})
    draws = cond.sample(0, 20000)
    assert draws.shape == (20000, 4, 32)
    se = np.sqrt(cond.variance() / 20000)
    assert np.all(np.abs(draws.mean(0) - cond.mean()) < 5 * se)
    for i in range(4):
        assert np.abs(np.cov(draws[:, i].T) - cond.cov()[i]).max() < 0.05
    np.testing.assert_array_equal(cond.sample(3, 5), cond.sample(np.random.default_rng(3), 5))


def test_unconditional_oracle_is_the_marginal(law):
    cond = law.conditional("rnaseq", {}, n_rows=3)
    np.testing.assert_allclose(cond.weights, np.tile(law.type_prior(), (3, 1)))
    np.testing.assert_allclose(cond.mean(), 0, atol=1e-12)
    np.testing.assert_allclose(np.diagonal(cond.cov(), axis1=1, axis2=2), 1, atol=1e-12)


def test_type_posterior_recovers_the_type(law, big_draw):
    d = big_draw
    cond = law.conditional("cna", {m: d.x[m][:2000] for m in ("rnaseq", "rppa", "wsi")})
    assert (cond.weights.argmax(1) == d.types[:2000]).mean() > 0.9


def _complete_test_set(law, n=1350, seed=5):
    d = law.sample_full(4 * n, seed)
    rows = np.flatnonzero(d.present.all(1))[:n]
    assert len(rows) == n
    return {m: d.x[m][rows] for m in MODS}


def test_oracle_r2_ordering_follows_the_paper(law):
    x = _complete_test_set(law)
    prior = law.type_prior(complete_only=True)
    best = {}
    for t in MODS:
        others = [m for m in MODS if m != t]
        s = law.oracle_scores(t, others, x[t], x, prior, n_draws=10, seed=1)
        best[t] = s["best_r2"]
        assert s["calibrated_r2"] < s["best_r2"]
        assert abs(s["calibrated_r2"] - s["calibrated_r2_exact"]) < 4 * s["calibrated_r2_std"] / np.sqrt(10) + 1e-3
        assert s["energy_score"] > 0 and s["variance"] > 0
    assert best["rnaseq"] > best["rppa"] > best["wsi"] > best["cna"]
    assert 0.72 < best["rnaseq"] < 0.85 and 0.55 < best["rppa"] < 0.68
    assert 0.38 < best["wsi"] < 0.52 and 0.03 < best["cna"] < 0.22


def _two_variable_law(psi_a, psi_b):
    """One type, K = D = 1: z ~ N(0, 1), x_a = z + e_a, x_b = z + e_b."""
    patterns, probs = fit_pattern_probs(np.ones(2), 1.0)
    return SyntheticLaw(
        modalities=("a", "b"), cancer_types=("T",), type_proportions=np.ones(1),
        latent_means=np.zeros((1, 1)), latent_covs=np.ones((1, 1, 1)), loadings=np.ones((2, 1, 1)),
        offsets=np.zeros((2, 1)), noise_vars=np.array([[psi_a], [psi_b]]),
        signal_fractions=np.array([1 / (1 + psi_a), 1 / (1 + psi_b)]), patterns=patterns,
        pattern_probs=probs[None], stage_weights=np.zeros(1), stage_offsets=np.zeros(1),
        stage_thresholds=np.array([-1.0, 0.0, 1.0]), stage_missing_rate=0.0,
        hazard_weights=np.zeros(1), hazard_offsets=np.full(1, -7.0), censoring_rate=1e-3)


def test_best_r2_closed_form_one_type_one_dimension():
    psi_a, psi_b = 0.5, 1.0
    law = _two_variable_law(psi_a, psi_b)
    # E[x_a | x_b] = Cov(a, b) / Var(b) x_b = x_b / (1 + psi_b); Var(x_a | x_b) = 1 + psi_a - 1 / (1 + psi_b).
    xb = np.array([[-2.0], [0.0], [3.0]])
    cond = law.conditional("a", {"b": xb})
    np.testing.assert_allclose(cond.mean(), xb / (1 + psi_b), rtol=1e-12)
    np.testing.assert_allclose(cond.cov()[:, 0, 0], 1 + psi_a - 1 / (1 + psi_b), rtol=1e-12)
    # Population best R2 = corr(a, b)^2; one calibrated draw: 1 - 2 (1 - rho^2).
    rho2 = 1 / ((1 + psi_a) * (1 + psi_b))
    x = law.sample_full(100_000, seed=0).x
    s = law.oracle_scores("a", ["b"], x["a"], x, n_draws=4)
    assert s["best_r2"] == pytest.approx(rho2, abs=0.01)
    assert s["calibrated_r2_exact"] == pytest.approx(2 * rho2 - 1, abs=0.012)
    assert s["calibrated_r2"] == pytest.approx(2 * rho2 - 1, abs=0.012)
    assert s["variance"] == pytest.approx(1 + psi_a - 1 / (1 + psi_b), rel=1e-12)
    # Energy score of a Gaussian N(m, v) at y, 1-D: E|X - y| - E|X - X'| / 2 with E|X - X'| = 2 sqrt(v / pi).
    v = 1 + psi_a - 1 / (1 + psi_b)
    u = (x["a"][:, 0] - law.conditional("a", {"b": x["b"]}).mean()[:, 0]) / np.sqrt(v)
    expected = np.sqrt(v) * (u * (2 * stats.norm.cdf(u) - 1) + 2 * stats.norm.pdf(u) - 1 / np.sqrt(np.pi))
    assert s["energy_score"] == pytest.approx(expected.mean(), abs=0.01)


def test_energy_score_matches_brute_force():
    rng = np.random.default_rng(0)
    samples, y = rng.normal(size=(7, 5, 3)), rng.normal(size=(5, 3))
    brute = [np.mean([np.linalg.norm(samples[r, i] - y[i]) for r in range(7)])
             - 0.5 * np.mean([np.linalg.norm(samples[r, i] - samples[s, i])
                              for r in range(7) for s in range(7) if r != s]) for i in range(5)]
    np.testing.assert_allclose(energy_score(samples, y), brute, rtol=1e-12)
    with pytest.raises(ValueError):
        energy_score(samples[:1], y)


def test_scores_on_a_standardised_scale(law):
    x = _complete_test_set(law, n=300, seed=9)
    loc, sd = np.linspace(-1, 1, 32), np.linspace(0.5, 2, 32)
    s = law.oracle_scores("rppa", ["rnaseq"], x["rppa"], x, n_draws=10, seed=2, scale=(loc, sd))
    s2 = law.oracle_scores("rppa", ["rnaseq"], x["rppa"], x, n_draws=10, seed=2, scale={"rppa": (loc, sd)})
    assert s == s2
    mu = law.conditional("rppa", {"rnaseq": x["rnaseq"]}).mean()
    assert s["best_r2"] == pytest.approx(pooled_r2((x["rppa"] - loc) / sd, (mu - loc) / sd), rel=1e-12)
    raw = law.oracle_scores("rppa", ["rnaseq"], x["rppa"], x, n_draws=10, seed=2)
    assert s["best_r2"] != pytest.approx(raw["best_r2"], rel=1e-6)
    ident = law.oracle_scores("rppa", ["rnaseq"], x["rppa"], x, n_draws=10, seed=2,
                              scale=(np.zeros(32), np.ones(32)))
    assert ident == raw


def test_oracle_rejects_bad_input(law):
    x = np.zeros((2, 32))
    with pytest.raises(ValueError, match="also given"):
        law.conditional("rnaseq", {"rnaseq": x})
    with pytest.raises(ValueError, match="unknown block"):
        law.conditional("mirna", {"rnaseq": x})
    with pytest.raises(ValueError, match="finite"):
        law.conditional("cna", {"rnaseq": np.full((2, 32), np.nan)})
    with pytest.raises(ValueError, match="unknown cancer type"):
        law.conditional("cna", {"rnaseq": x}, type_prior=np.array(["BRCA", "ACC"]))


# ---- clinical labels ------------------------------------------------------------------------------

def _c_index(risk, time_, event):
    """Harrell's C: among comparable pairs (i had the event before j's time), how often risk_i > risk_j."""
    earlier = (time_[:, None] < time_[None, :]) & (event[:, None] == 1)
    diff = risk[:, None] - risk[None, :]
    return ((diff > 0) * earlier).sum() / earlier.sum() + 0.5 * ((diff == 0) * earlier).sum() / earlier.sum()


def test_clinical_labels_are_plausible(cohort):
    stage, t, e = (cohort.label(c) for c in ("stage", "os_time", "os_event"))
    assert 0.07 < np.isnan(stage).mean() < 0.13
    assert set(np.unique(stage[~np.isnan(stage)])) == {1.0, 2.0, 3.0, 4.0}
    assert (t >= 1).all() and 0.30 < e.mean() < 0.40


def test_stage_and_survival_depend_on_the_latent_beyond_type(law, big_draw):
    d = big_draw
    brca = np.flatnonzero(d.types == law.cancer_types.index("BRCA"))[:3000]
    z_hat = law.conditional("latent", {m: d.x[m][brca] for m in MODS},
                            type_prior=np.full(len(brca), "BRCA")).mean()
    # Within one type, the oracle-reconstructed latent predicts stage and survival.
    rho = np.corrcoef(z_hat @ law.stage_weights, d.stage_full[brca])[0, 1]
    assert rho > 0.3
    c = _c_index(z_hat @ law.hazard_weights, d.os_time[brca], d.os_event[brca])
    assert c > 0.65
    # And the cancer type alone carries stage information too (type offsets exist).
    means = [d.stage_full[d.types == c].mean() for c in range(law.n_types)]
    assert np.ptp(means) > 0.3
