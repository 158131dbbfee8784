"""Metrics and paired tests against independent computations: brute-force loops, sklearn/sksurv/dcor/prdc, closed forms."""

import importlib.util
import itertools
import math
import subprocess
import sys

import numpy as np
import pytest
import pandas as pd
from scipy.stats import norm, ttest_rel
from scipy.stats import t as student_t
from sklearn.metrics import balanced_accuracy_score, f1_score, r2_score

from cgjax.scoring import metrics as M
from cgjax.scoring import stats as S


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _dist(a, b):
    return math.sqrt(sum((ai - bi) ** 2 for ai, bi in zip(a, b)))


# ---------------------------------------------------------------------------------------------
# R²
# ---------------------------------------------------------------------------------------------
def _r2_pooled_loop(x, xhat):
    n, d = x.shape
    mean = sum(x[i, j] for i in range(n) for j in range(d)) / (n * d)
    res = sum((x[i, j] - xhat[i, j]) ** 2 for i in range(n) for j in range(d))
    tot = sum((x[i, j] - mean) ** 2 for i in range(n) for j in range(d))
    return 1 - res / tot


def _r2_per_sample_loop(x, xhat):
    vals = []
    for i in range(x.shape[0]):
        m = sum(x[i]) / len(x[i])
        res = sum((a - b) ** 2 for a, b in zip(xhat[i], x[i]))
        tot = sum((a - m) ** 2 for a in x[i]) + 1e-8
        vals.append(1 - res / tot)
    return sum(vals) / len(vals)


def _r2_per_feature_loop(x, xhat, mu):
    vals = []
    for j in range(x.shape[1]):
        res = sum((x[i, j] - xhat[i, j]) ** 2 for i in range(x.shape[0]))
        tot = sum((x[i, j] - mu[j]) ** 2 for i in range(x.shape[0]))
        vals.append(1 - res / tot)
    return sum(vals) / len(vals)


def test_r2_definitions_match_loops(rng):
    # Non-zero feature means so that A, B and C really differ.
    x = rng.normal(size=(12, 5)) + np.arange(5)
    xhat = x + rng.normal(scale=0.7, size=x.shape)
    mu = rng.normal(size=5)
    a, b = M.r2_pooled(x, xhat), M.r2_per_sample(x, xhat)
    c, c_mu = M.r2_per_feature(x, xhat), M.r2_per_feature(x, xhat, feature_mean=mu)
    assert a == pytest.approx(_r2_pooled_loop(x, xhat), rel=1e-12)
    assert b == pytest.approx(_r2_per_sample_loop(x, xhat), rel=1e-12)
    assert c == pytest.approx(_r2_per_feature_loop(x, xhat, x.mean(0)), rel=1e-12)
    assert c_mu == pytest.approx(_r2_per_feature_loop(x, xhat, mu), rel=1e-12)
    # Def. C with the rows' own means is sklearn's uniform average; def. A is not.
    assert c == pytest.approx(r2_score(x, xhat, multioutput="uniform_average"), rel=1e-12)
    assert len({round(v, 6) for v in (a, b, c)}) == 3


def test_r2_perfect_and_mean_predictions(rng):
    x = rng.normal(size=(20, 4)) * [1, 2, 3, 4] + [0, 1, -1, 2]
    for f in (M.r2_pooled, M.r2_per_sample, M.r2_per_feature):
        assert f(x, x) == pytest.approx(1.0)
    assert M.r2_pooled(x, np.full_like(x, x.mean())) == pytest.approx(0.0, abs=1e-12)
    assert M.r2_per_feature(x, np.broadcast_to(x.mean(0), x.shape)) == pytest.approx(0.0, abs=1e-12)
    row_means = np.broadcast_to(x.mean(1, keepdims=True), x.shape)
    assert M.r2_per_sample(x, row_means) == pytest.approx(0.0, abs=1e-6)


def test_r2_per_sample_constant_row_is_finite():
    x = np.array([[1.0, 1.0, 1.0], [0.0, 1.0, 2.0]])
    val = M.r2_per_sample(x, x + 0.1)
    assert np.isfinite(val) and val < -1e4  # the 1e-8 guard, not a division by zero


def test_r2_replicates_give_one_value_each(rng):
    x = rng.normal(size=(15, 3))
    xhat = x + rng.normal(scale=[[[0.1]], [[1.0]], [[3.0]]], size=(3, 15, 3))
    for f in (M.r2_pooled, M.r2_per_sample, M.r2_per_feature):
        vals = f(x, xhat)
        assert vals.shape == (3,)
        np.testing.assert_allclose(vals, [f(x, xhat[r]) for r in range(3)], rtol=1e-12)
        assert vals[0] > vals[1] > vals[2]
    with pytest.raises(ValueError):
        M.r2_pooled(x, xhat[:, :-1])


def test_variance_pct_matches_loop(rng):
    x = rng.normal(size=(6, 3)) * [1, 2, 3]
    samples = rng.normal(size=(4, 6, 3))
    r, n, d = samples.shape
    num = 0.0
    for i in range(n):
        for j in range(d):
            col = samples[:, i, j]
            m = sum(col) / r
            num += sum((v - m) ** 2 for v in col) / r
    den = 0.0
    for j in range(d):
        m = sum(x[:, j]) / n
        den += sum((v - m) ** 2 for v in x[:, j]) / n
    assert M.variance_pct(samples, x) == pytest.approx(100 * (num / (n * d)) / (den / d), rel=1e-12)
    assert M.variance_pct(np.repeat(x[None], 5, axis=0), x) == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# energy score, interval coverage, variance ratio
# ---------------------------------------------------------------------------------------------
def test_energy_score_matches_loop(rng):
    samples, y = rng.normal(size=(5, 4, 3)), rng.normal(size=(4, 3))
    r = samples.shape[0]
    expected = []
    for n in range(4):
        t1 = sum(_dist(samples[i, n], y[n]) for i in range(r)) / r
        t2 = sum(_dist(samples[i, n], samples[j, n]) for i in range(r) for j in range(r) if i != j)
        expected.append(t1 - 0.5 * t2 / (r * (r - 1)))
    np.testing.assert_allclose(M.energy_score(samples, y), expected, rtol=1e-12)


def test_energy_score_point_mass_at_truth_is_zero(rng):
    y = rng.normal(size=(7, 4))
    np.testing.assert_allclose(M.energy_score(np.repeat(y[None], 6, axis=0), y), 0.0, atol=1e-12)
    # ... and strictly better than a point mass elsewhere or a spread around the truth.
    assert (M.energy_score(np.repeat(y[None] + 1, 6, axis=0), y) > 0).all()
    with pytest.raises(ValueError):
        M.energy_score(y[None], y)


def test_energy_score_1d_gaussian_matches_closed_form_crps():
    rng = np.random.default_rng(1)
    n, r = 400, 200
    mu, sigma = rng.normal(size=n), rng.uniform(0.5, 2.0, size=n)
    y = mu + sigma * rng.normal(size=n) * 1.5
    samples = mu + sigma * rng.normal(size=(r, n))
    es = M.energy_score(samples[..., None], y[:, None])
    z = (y - mu) / sigma
    crps = sigma * (z * (2 * norm.cdf(z) - 1) + 2 * norm.pdf(z) - 1 / np.sqrt(np.pi))
    diff = es - crps
    # Unbiased estimator: the mean difference is pure Monte Carlo noise.
    assert abs(diff.mean()) < 4 * diff.std() / np.sqrt(n)
    assert diff.std() < 0.1 * crps.mean()


def test_interval_coverage_loop_and_calibration(rng):
    samples, y = rng.normal(size=(9, 5, 2)), rng.normal(size=(5, 2))
    inside = 0
    for n, f in itertools.product(range(5), range(2)):
        col = np.sort(samples[:, n, f])
        # linear-interpolation quantile at 0.05 and 0.95 by hand
        def q(p):
            h = (len(col) - 1) * p
            lo = int(math.floor(h))
            return col[lo] + (h - lo) * (col[min(lo + 1, len(col) - 1)] - col[lo])

        inside += q(0.05) <= y[n, f] <= q(0.95)
    assert M.interval_coverage(samples, y, 0.9) == inside / 10

    big = np.random.default_rng(2)
    samples = big.normal(size=(400, 500, 2))
    y = big.normal(size=(500, 2))
    assert M.interval_coverage(samples, y, 0.9) == pytest.approx(0.9, abs=0.03)
    assert M.interval_coverage(samples * 0.3, y, 0.9) < 0.5  # overconfident sampler


@pytest.mark.parametrize("R", [2, 3, 5, 10])
def test_range_coverage_of_exact_draws_is_r_minus_1_over_r_plus_1(R):
    """Truth and R replicates drawn exactly from the same Gaussian (per entry its own mean and scale):
    the range covers (R - 1) / (R + 1) within Monte-Carlo error (binomial, 4 sigma); a narrow
    (overconfident) sampler covers less and a wide one more."""
    rng = np.random.default_rng(R)
    n, d = 2000, 3
    mu, sd = rng.normal(size=(n, d)), rng.uniform(0.5, 2.0, size=(n, d))
    samples = mu + sd * rng.normal(size=(R, n, d))
    y = mu + sd * rng.normal(size=(n, d))
    p = M.expected_range_coverage(R)
    assert p == (R - 1) / (R + 1)
    got = M.range_coverage(samples, y)
    assert abs(got - p) < 4 * np.sqrt(p * (1 - p) / (n * d)), (got, p)
    # by hand: inside [min, max] per entry
    assert got == np.mean([(samples[:, i, j].min() <= y[i, j] <= samples[:, i, j].max())
                           for i in range(n) for j in range(d)])
    narrow = M.range_coverage(mu + 0.5 * (samples - mu), y)
    wide = M.range_coverage(mu + 2.0 * (samples - mu), y)
    assert narrow < got - 0.05 and wide > got + 0.03
    # the central-90% interval of the same few draws is far from 0.9: why we report the range
    if R <= 5:
        assert M.interval_coverage(samples, y, 0.9) < 0.75


def test_variance_ratio(rng):
    var = rng.uniform(0.5, 3.0, size=(300, 3))
    samples = np.sqrt(var) * rng.normal(size=(10, 300, 3))
    assert M.variance_ratio(samples, var) == pytest.approx(1.0, abs=0.05)
    assert M.variance_ratio(samples, 4 * var) == pytest.approx(0.25, abs=0.02)
    # scalar posterior variance and ddof 0 (factor (R-1)/R)
    s = rng.normal(size=(10, 300, 3))
    assert M.variance_ratio(s, 1.0, ddof=0) == pytest.approx(0.9 * M.variance_ratio(s, 1.0), rel=1e-12)


# ---------------------------------------------------------------------------------------------
# energy distance, PRDC, DCR
# ---------------------------------------------------------------------------------------------
def _energy_distance_loop(x, y):
    dxy = sum(_dist(a, b) for a in x for b in y) / (len(x) * len(y))
    dxx = sum(_dist(a, b) for a in x for b in x) / len(x) ** 2
    dyy = sum(_dist(a, b) for a in y for b in y) / len(y) ** 2
    return math.sqrt(2 * dxy - dxx - dyy)


def test_energy_distance_matches_loop_and_dcor(rng, monkeypatch):
    x, y = rng.normal(size=(9, 3)), rng.normal(size=(7, 3)) + 0.5
    expected = _energy_distance_loop(x, y)
    assert M.energy_distance(x, y) == pytest.approx(expected, rel=1e-12)
    monkeypatch.setattr(M, "_CHUNK", 2)  # exercise the blocked distance sums
    assert M.energy_distance(x, y) == pytest.approx(expected, rel=1e-12)


# dcor's package __init__ compiles numba kernels at import (10-20 s on this machine). Its energy
# distance lives in dcor._energy, which needs none of them, so a child interpreter loads that
# module under a bare package stub instead of running dcor/__init__.py.
_DCOR_CHILD = """
import importlib.util, sys, types, numpy as np
spec = importlib.util.find_spec("dcor")
pkg = types.ModuleType("dcor"); pkg.__path__ = list(spec.submodule_search_locations)
sys.modules["dcor"] = pkg
from dcor._energy import energy_distance
d = sys.argv[1]
print(repr(float(energy_distance(np.load(d + "/x.npy"), np.load(d + "/y.npy")))))
"""


def test_energy_distance_is_sqrt_of_dcor(rng, tmp_path):
    if importlib.util.find_spec("dcor") is None:
        pytest.skip("dcor not installed")
    x, y = rng.normal(size=(40, 3)), rng.normal(size=(30, 3)) * 2 + 0.5
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    out = subprocess.run(
        [sys.executable, "-c", _DCOR_CHILD, str(tmp_path)], capture_output=True, text=True, check=True
    )
    # dcor's default (V-statistic, exponent 1) is the squared statistic.
    assert M.energy_distance(x, y) ** 2 == pytest.approx(float(out.stdout), rel=1e-10)


def test_energy_distance_identical_sets_and_shift(rng):
    x = rng.normal(size=(50, 4))
    assert M.energy_distance(x, x) == 0.0
    assert M.energy_distance(x, x[::-1]) == pytest.approx(0.0, abs=1e-6)
    assert M.energy_distance(x, x + 3) > M.energy_distance(x, x + 1) > 0.0


def _prdc_loop(real, fake, k):
    def radius(s):
        return [sorted(_dist(a, b) for b in s)[k] for a in s]  # k-th other point; index 0 = self

    rr, rf = radius(real), radius(fake)
    d = [[_dist(a, b) for b in fake] for a in real]
    n, m = len(real), len(fake)
    precision = sum(any(d[i][j] < rr[i] for i in range(n)) for j in range(m)) / m
    recall = sum(any(d[i][j] < rf[j] for j in range(m)) for i in range(n)) / n
    density = sum(d[i][j] < rr[i] for i in range(n) for j in range(m)) / (k * m)
    coverage = sum(min(d[i]) < rr[i] for i in range(n)) / n
    return precision, recall, density, coverage


def test_prdc_matches_loop(rng, monkeypatch):
    real = rng.normal(size=(30, 3))
    fake = rng.normal(size=(25, 3)) * 1.3 + 1.0
    p, r, d, c = _prdc_loop(real, fake, k=4)
    out = M.prdc(real, fake, k=4)
    assert (out["precision"], out["recall"]) == (p, r)
    assert out["density"] == pytest.approx(d) and out["coverage"] == c
    assert out["f1"] == pytest.approx(2 * p * r / (p + r + 1e-8))
    assert 0 < p < 1 and 0 < r < 1  # the example is not degenerate
    monkeypatch.setattr(M, "_CHUNK", 7)
    assert M.prdc(real, fake, k=4) == out


def test_prdc_matches_package(rng):
    prdc_pkg = pytest.importorskip("prdc")
    real, fake = rng.normal(size=(120, 5)), rng.normal(size=(100, 5)) + 0.3
    ref = prdc_pkg.compute_prdc(real, fake, nearest_k=10)
    out = M.prdc(real, fake, k=10)
    for key in ("precision", "recall", "density", "coverage"):
        assert out[key] == pytest.approx(float(ref[key]), abs=1e-12), key


def test_prdc_edge_cases(rng):
    real = rng.normal(size=(40, 2))
    same = M.prdc(real, real.copy(), k=5)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    assert same["f1"] == pytest.approx(1.0, abs=1e-7)
    far = M.prdc(real, real + 100.0, k=5)
    assert far["precision"] == far["recall"] == far["f1"] == 0.0
    with pytest.raises(ValueError):
        M.prdc(real[:5], real, k=5)


def test_dcr_matches_loop_and_flags_copies(rng):
    train, hold, gen = rng.normal(size=(20, 3)), rng.normal(size=(15, 3)), rng.normal(size=(10, 3))
    out = M.dcr(gen, train, hold)
    np.testing.assert_allclose(out["dcr_generated"], [min(_dist(g, t) for t in train) for g in gen])
    np.testing.assert_allclose(out["dcr_holdout"], [min(_dist(h, t) for t in train) for h in hold])
    assert out["median_generated"] == pytest.approx(np.median(out["dcr_generated"]))
    copies = M.dcr(train[:10] + 1e-9, train, hold)
    assert copies["frac_generated_below_holdout_p5"] == 1.0
    assert copies["median_generated"] < 1e-6 < copies["median_holdout"]


# ---------------------------------------------------------------------------------------------
# downstream
# ---------------------------------------------------------------------------------------------
def _harrell_loop(event, time, risk, tol=1e-8):
    num = den = 0.0
    n = len(time)
    for i in range(n):
        if not event[i]:
            continue
        for j in range(n):
            if j == i:
                continue
            comparable = time[i] < time[j] or (time[i] == time[j] and not event[j])
            if comparable:
                den += 1
                if abs(risk[i] - risk[j]) <= tol:
                    num += 0.5
                elif risk[i] > risk[j]:
                    num += 1
    return num / den


def test_c_index_matches_bruteforce_with_ties(rng):
    n = 60
    time = rng.integers(1, 15, size=n).astype(float)  # many tied times
    event = rng.random(n) < 0.6
    risk = np.round(-time / 5 + rng.normal(size=n), 1)  # some tied risks
    assert M.c_index(event, time, risk) == pytest.approx(_harrell_loop(event, time, risk), rel=1e-12)
    assert M.c_index(event, time, -time + 1e-3 * rng.random(n)) > 0.95
    assert M.c_index(event, time, np.zeros(n)) == 0.5


def test_classification_metrics():
    y_true = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 0, 0, 1, 1, 1, 0, 3])  # class 3 never true; class 2 never predicted
    # per class F1: 0: P 3/4 R 3/4 -> .75; 1: P 2/3 R 1 -> .8; 2: 0; 3: 0 (zero_division 0)
    assert M.macro_f1(y_true, y_pred) == pytest.approx((0.75 + 0.8) / 4)
    assert M.weighted_f1(y_true, y_pred) == pytest.approx((4 * 0.75 + 2 * 0.8) / 8)
    # balanced accuracy: mean recall over true classes 0, 1, 2 = (3/4 + 1 + 0) / 3
    assert M.balanced_accuracy(y_true, y_pred) == pytest.approx(1.75 / 3)
    assert M.macro_f1(y_true, y_pred) == pytest.approx(
        f1_score(y_true, y_pred, average="macro", zero_division=0)
    )
    assert M.balanced_accuracy(y_true, y_true) == balanced_accuracy_score(y_true, y_true) == 1.0


# ---------------------------------------------------------------------------------------------
# statistics (cgjax.scoring.stats, tested here alongside the metrics)
# ---------------------------------------------------------------------------------------------

def test_paired_ttest_closed_form(rng):
    a = rng.normal(size=10) + 0.3
    b = a - 0.2 + 0.3 * rng.normal(size=10)
    d = a - b
    t = d.mean() / (d.std(ddof=1) / np.sqrt(len(d)))
    res = S.paired_ttest(a, b)
    assert res.statistic == pytest.approx(t, rel=1e-12)
    assert res.pvalue == pytest.approx(2 * student_t.sf(abs(t), df=9), rel=1e-10)
    assert S.paired_ttest(a, b, "greater").pvalue == pytest.approx(student_t.sf(t, df=9), rel=1e-10)
    assert S.paired_ttest(a, b, "less").pvalue == pytest.approx(student_t.cdf(t, df=9), rel=1e-10)
    assert res.n == 10 and res.mean_diff == pytest.approx(d.mean())


def test_corrections_hand_computed():
    p = np.array([0.001, 0.04, 0.041, 0.9, np.nan])
    # BH, m = 4: raw m p_(i)/i = .004, .08, .05467, .9; running min from the top gives
    # .004, .05467, .05467, .9.
    np.testing.assert_allclose(
        S.benjamini_hochberg(p), [0.004, 0.041 * 4 / 3, 0.041 * 4 / 3, 0.9, np.nan], rtol=1e-12
    )
    np.testing.assert_allclose(S.bonferroni(p), [0.004, 0.16, 0.164, 1.0, np.nan], rtol=1e-12)
    np.testing.assert_allclose(S.benjamini_hochberg([0.01, 0.04, 0.03, 0.005]), [0.02, 0.04, 0.04, 0.02])


def test_corrections_match_statsmodels(rng):
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    p = rng.random(30) ** 3
    for method, ours in (("fdr_bh", S.benjamini_hochberg), ("bonferroni", S.bonferroni)):
        np.testing.assert_allclose(ours(p), multitest.multipletests(p, method=method)[1], rtol=1e-12)


def test_compare_methods_pairs_by_subject(rng):
    rows = []
    for cond in ("no_cna", "no_wsi"):
        for run in range(8):
            base = rng.normal()
            for method, shift in (("ablation", 0.0), ("coherent", 0.5), ("multi", 0.45)):
                rows.append((cond, run, method, base + shift + 0.1 * rng.normal()))
    df = pd.DataFrame(rows, columns=["condition", "run", "test_type", "f1"])
    df = df.sample(frac=1.0, random_state=0)  # pairing must come from "run", not row order
    pairs = [("coherent", "ablation"), ("multi", "ablation"), ("coherent", "multi")]
    out = S.compare_methods(df, "f1", "test_type", pairs, "bonferroni", by="condition")
    assert len(out) == 6 and list(out["condition"]) == ["no_cna"] * 3 + ["no_wsi"] * 3
    for _, row in out.iterrows():
        sub = df[df["condition"] == row["condition"]]
        a = sub[sub["test_type"] == row["method_a"]].sort_values("run")["f1"].to_numpy()
        b = sub[sub["test_type"] == row["method_b"]].sort_values("run")["f1"].to_numpy()
        ref = ttest_rel(a, b)
        assert row["statistic"] == pytest.approx(ref.statistic) and row["p"] == pytest.approx(ref.pvalue)
        assert row["p_corrected"] == pytest.approx(min(6 * ref.pvalue, 1.0))
        assert row["n"] == 8
    assert out.loc[out["method_b"] == "ablation", "reject"].all()
    bh = S.compare_methods(df, "f1", "test_type", pairs, "bh", by=["condition"], alternative="greater")
    np.testing.assert_allclose(bh["p_corrected"], S.benjamini_hochberg(bh["p"].to_numpy()))
    none = S.compare_methods(df[df["condition"] == "no_cna"], "f1", "test_type", pairs[:1], None)
    assert none["p_corrected"][0] == none["p"][0]
    with pytest.raises(ValueError):
        S.compare_methods(pd.concat([df, df]), "f1", "test_type", pairs, by="condition")


def _long(y: np.ndarray, names=("A", "B")) -> pd.DataFrame:
    """y[subject, a, (b)] -> long format, rows shuffled (cells must be found by label, not order)."""
    rows = [(s, *(f"{n}{i}" for n, i in zip(names, cell)), y[(s, *cell)])
            for s in range(y.shape[0]) for cell in np.ndindex(*y.shape[1:])]
    df = pd.DataFrame(rows, columns=["run", *names[: y.ndim - 1], "v"])
    return df.sample(frac=1.0, random_state=1)


def test_anova_rm_two_levels_is_the_paired_t_test(rng):
    """With two levels F = t^2 of the paired t-test on the per-subject contrast, and the p-values
    agree: main effects on the factor means, the interaction on the difference of differences."""
    y = rng.normal(size=(9, 2, 2)) + np.array([[0.0, 0.3], [0.5, 1.4]])
    out = S.anova_rm(_long(y), "v", "run", ["A", "B"])
    contrasts = {"A": y[:, 0].mean(1) - y[:, 1].mean(1), "B": y[:, :, 0].mean(1) - y[:, :, 1].mean(1),
                 "A:B": (y[:, 0, 0] - y[:, 0, 1]) - (y[:, 1, 0] - y[:, 1, 1])}
    assert list(out.index) == ["A", "B", "A:B"]
    for effect, d in contrasts.items():
        ref = ttest_rel(d, np.zeros_like(d))
        assert out.loc[effect, "F Value"] == pytest.approx(ref.statistic ** 2, rel=1e-10)
        assert out.loc[effect, "Pr > F"] == pytest.approx(ref.pvalue, rel=1e-8)
        assert (out.loc[effect, "Num DF"], out.loc[effect, "Den DF"]) == (1.0, 8.0)


def test_anova_rm_one_way_is_a_nested_linear_model_test(rng):
    """Three levels: the F test of y ~ subject + level against y ~ subject by least squares."""
    n, k = 7, 3
    y = rng.normal(size=(n, k)) + np.array([0.0, 0.4, 0.9]) + rng.normal(size=(n, 1))
    out = S.anova_rm(_long(y, ("A",)), "v", "run", ["A"])
    Y = y.reshape(-1)
    subj = np.repeat(np.eye(n), k, axis=0)
    lev = np.tile(np.eye(k)[:, 1:], (n, 1))
    rss = lambda X: float(np.sum((Y - X @ np.linalg.lstsq(X, Y, rcond=None)[0]) ** 2))
    full, reduced = rss(np.hstack([subj, lev])), rss(subj)
    F = ((reduced - full) / (k - 1)) / (full / ((n - 1) * (k - 1)))
    assert out.loc["A", "F Value"] == pytest.approx(F, rel=1e-10)
    assert (out.loc["A", "Num DF"], out.loc["A", "Den DF"]) == (2.0, 12.0)


def test_anova_rm_refuses_unbalanced_designs(rng):
    df = _long(rng.normal(size=(4, 2, 3)))
    with pytest.raises(ValueError, match="balanced"):
        S.anova_rm(df.iloc[1:], "v", "run", ["A", "B"])
    with pytest.raises(ValueError, match="balanced"):
        S.anova_rm(pd.concat([df, df.iloc[:1]]), "v", "run", ["A", "B"])
    with pytest.raises(ValueError, match="no column 'C'"):
        S.anova_rm(df, "v", "run", ["A", "C"])


def test_anova_rm_matches_statsmodels(rng):
    anova = pytest.importorskip("statsmodels.stats.anova")
    df = _long(rng.normal(size=(6, 3, 2)) + np.array([[0.0, 0.2], [0.3, 0.1], [0.8, 0.9]]))
    ref = anova.AnovaRM(df, "v", "run", within=["A", "B"]).fit().anova_table
    ours = S.anova_rm(df, "v", "run", ["A", "B"])
    np.testing.assert_allclose(ours.to_numpy(), ref.loc[ours.index, ours.columns].to_numpy(), rtol=1e-8)


def test_anova_rm_by_runs_each_group_and_leaves_out_incomplete_ones(rng):
    a, b = _long(rng.normal(size=(5, 2, 3))), _long(rng.normal(size=(5, 2, 3)) + np.array([0.0, 1.0, 2.0]))
    a["task"], b["task"] = "stage", "survival"
    c = _long(rng.normal(size=(5, 2, 3))).iloc[1:]  # one cell missing: left out
    c["task"] = "broken"
    out = S.anova_rm_by(pd.concat([a, b, c]), "v", "run", ["A", "B"], ["task"])
    assert list(out["task"]) == ["stage"] * 3 + ["survival"] * 3
    for task, df in (("stage", a), ("survival", b)):
        ref = S.anova_rm(df, "v", "run", ["A", "B"])
        np.testing.assert_allclose(out[out.task == task]["F Value"], ref["F Value"], rtol=1e-12)
    assert out.set_index(["task", "effect"]).loc[("survival", "B"), "Pr > F"] < 1e-3  # a planted effect
