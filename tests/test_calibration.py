"""Calibration metrics: on exact posterior draws they read 'calibrated' (ratio ~1, excess ~0, uniform
ranks, nominal coverage, the closed-form share of the gap), within Monte-Carlo error computed here;
on a deliberately over- or under-dispersed sampler they detect it."""

import numpy as np
import pytest
from scipy import stats
from threadpoolctl import threadpool_limits

from cgjax.datasets import zoo
from cgjax.scoring import calibration as cal
from experiment_scripts import load as load_experiment
from cgjax.scoring.metrics import r2_pooled

R = 10


@pytest.fixture(scope="module", autouse=True)
def _single_threaded_blas():
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="module")
def setup():
    """Complete rows of a zoo law, target m3 (16-d) given m1, m2: truth, exact moments and draws."""
    member = zoo.law("five_narrow")
    d = member.oracle.sample_full(6000, seed=1)
    rows = np.flatnonzero(d.present.all(1))[:800]
    cond = member.conditional("m3", {"m1": d.x["m1"][rows], "m2": d.x["m2"][rows]})
    y = d.x["m3"][rows]
    mean, var = cond.mean(), cond.variance()
    baseline = np.zeros_like(mean)  # the marginal mean: R2 ~ 0, so the gap is the whole best R2
    return dict(y=y, mean=mean, var=var, cov=cond.cov(), a=cond.sample(2, R), b=cond.sample(3, R),
                many=cond.sample(4, 200), baseline=baseline, n=len(rows))


def _spread(draws, mean, k):
    return mean + k * (draws - mean)


def test_exact_draws_read_calibrated(setup):
    s = setup
    n = s["n"]
    # sampled variance (ddof 1) is unbiased; its relative sd per entry is <= sqrt(2/(R-1)) x kurtosis
    # slack; rows are independent, the D features of a row are not: bound with one entry per row.
    se_ratio = np.sqrt(2.0 / (R - 1)) * 1.5 / np.sqrt(n)
    scores = cal.calibration_scores(s["a"], s["y"], exact=s["b"], posterior_mean=s["mean"], posterior_var=s["var"],
                                    baseline=s["baseline"])
    assert abs(scores["variance_ratio"] - 1.0) < 4 * se_ratio
    assert scores["energy_excess_se_pct"] < 2.0
    assert abs(scores["energy_excess_pct"]) < 4 * scores["energy_excess_se_pct"]
    assert abs(scores["pit_centre_excess"]) < 0.03
    # gap closed by the mean of R exact draws: E R2 = 1 - (SSE(mean) + sum var / R) / SST.
    y = s["y"]
    sst = np.sum((y - y.mean()) ** 2)
    r2_expected = 1 - (np.sum((y - s["mean"]) ** 2) + s["var"].sum() / R) / sst
    r2_base, r2_best = r2_pooled(y, s["baseline"]), r2_pooled(y, s["mean"])
    expected_gap = (r2_expected - r2_base) / (r2_best - r2_base)
    # SSE(replicate mean) - SSE(exact mean) = |m - mu|^2 - 2 (y - mu).(m - mu), m - mu ~ N(0, Cov / R)
    # per row: variance 2 tr(Cov^2) / R^2 + 4 (y - mu)^T Cov (y - mu) / R, summed over rows.
    e = y - s["mean"]
    var_sse = (2 * np.einsum("nij,nji->", s["cov"], s["cov"]) / R ** 2
               + 4 * np.einsum("ni,nij,nj->", e, s["cov"], e) / R)
    se_gap = np.sqrt(var_sse) / sst / (r2_best - r2_base)
    assert se_gap < 0.05
    assert abs(scores["gap_closed"] - expected_gap) < 4 * se_gap
    assert cal.gap_closed(y, s["mean"], s["baseline"], s["mean"]) == pytest.approx(1.0)
    assert cal.gap_closed(y, s["baseline"], s["baseline"], s["mean"]) == pytest.approx(0.0)
    # 90% central interval of 200 exact draws (linear interpolation): rank of y uniform on 0..200,
    # inside iff between the interpolated 5% / 95% order statistics: ~ 181 / 201 of the ranks.
    cov = cal.calibration_scores(s["many"], y, exact=s["b"], posterior_mean=s["mean"], posterior_var=s["var"])["coverage"]
    assert abs(cov - 181 / 201) < 4 * np.sqrt(0.9 * 0.1 / n)


@pytest.mark.parametrize("k", [1.5, 0.6])
def test_miscalibrated_sampler_is_detected(setup, k):
    s = setup
    bad = _spread(s["a"], s["mean"], k)
    scores = cal.calibration_scores(bad, s["y"], exact=s["b"], posterior_mean=s["mean"], posterior_var=s["var"],
                                    baseline=s["baseline"])
    good = cal.calibration_scores(s["a"], s["y"], exact=s["b"], posterior_mean=s["mean"], posterior_var=s["var"],
                                  baseline=s["baseline"])
    assert scores["variance_ratio"] == pytest.approx(k ** 2 * good["variance_ratio"], rel=1e-9)
    assert scores["energy_excess_pct"] > good["energy_excess_pct"] + 4 * scores["energy_excess_se_pct"]
    assert scores["pit_deviation"] > 3 * good["pit_deviation"]
    if k > 1:  # over-dispersed: a hump, intervals too wide, and a noisier replicate mean
        assert scores["pit_centre_excess"] > 0.05
        wide = cal.calibration_scores(_spread(s["many"], s["mean"], k), s["y"], exact=s["b"],
                                      posterior_mean=s["mean"], posterior_var=s["var"])
        assert wide["coverage"] > 0.95
        assert scores["gap_closed"] < good["gap_closed"]
    else:  # under-dispersed: a U
        assert scores["pit_centre_excess"] < -0.05


def test_pit_ranks_and_uniformity_by_hand():
    samples = np.array([[[0.0, 1.0]], [[2.0, 1.0]], [[3.0, 1.0]]])  # R = 3, N = 1, D = 2
    y = np.array([[2.5, 1.0]])
    ranks = cal.pit_ranks(samples, y, seed=0)
    assert ranks[0, 0] == 2  # below: 0 and 2
    assert 0 <= ranks[0, 1] <= 3  # three ties: uniform over 0..3
    tie_ranks = np.concatenate([cal.pit_ranks(samples, y, seed=i)[:, 1] for i in range(4000)])
    np.testing.assert_allclose(np.bincount(tie_ranks, minlength=4) / 4000, 0.25, atol=0.03)
    # chi2 on uneven bins (R + 1 = 11 ranks in 4 bins) against scipy's chisquare
    rng = np.random.default_rng(0)
    r = rng.integers(0, 11, 500)  # uniform ranks
    u = cal.rank_uniformity(r, 10, n_bins=4)
    edges = np.linspace(0, 11, 5).round().astype(int)
    obs = np.add.reduceat(np.bincount(r, minlength=11), edges[:-1])
    exp = 500 * np.diff(edges) / 11
    assert u["chi2"] == pytest.approx(stats.chisquare(obs, exp).statistic)
    assert u["dof"] == 3
    with pytest.raises(ValueError, match="samples must be"):
        cal.pit_ranks(np.zeros((3, 2)), y)
    with pytest.raises(ValueError, match="no gap"):
        cal.gap_closed(y, y, y, y)


def test_experiment_checks_the_issue_targets():
    """experiments/calibration.py's target check: met, missed (with the numbers), and the accelerated
    sampler's 2% energy criterion relative to the ancestral sampler."""
    import pandas as pd

    exp = load_experiment("calibration")
    row = lambda law, n, method, sampler, ratio, excess, gap: dict(
        law=law, n_samples=n, method=method, sampler=sampler, variance_ratio=ratio, energy_excess_pct=excess,
        gap_closed=gap)
    df = pd.DataFrame([
        row("a", 3000, "multi", "ancestral", 1.1, 3.0, 0.7), row("a", 3000, "multi", "dpm@10", 1.1, 4.9, 0.7),
        row("a", 3000, "coherent", "ancestral", 1.5, 12.0, 0.3), row("a", 3000, "coherent", "dpm@10", 2, 20.0, 0.1),
        # every timestep (T evaluations): never the accelerated sampler, whatever its score
        row("a", 3000, "coherent", "ddim1@all", 1.0, 12.0, 0.7),
        row("a", 500, "multi", "ancestral", 3.0, 50.0, -1.0),  # < 3000 samples: not checked
    ])
    lines = exp.check_targets(df)
    assert len(lines) == 2
    assert lines[0] == "- a n=3000 multi: all targets met"  # 1.049 / 1.03 - 1 = 1.8% <= 2%
    assert "variance ratio 1.50" in lines[1] and "energy +12.0%" in lines[1] and "gap closed 30%" in lines[1]
    assert "best dpm@10: +7.1%" in lines[1]


def test_experiment_energy_ratios_over_the_probabilistic_baselines():
    """experiments/calibration.py's issue-14 ratios: (1 + excess_method) / (1 + excess_baseline), both
    against the same exact draws, per (law, size, parametrisation); the verdict names the baselines
    the method does not beat."""
    import pandas as pd

    exp = load_experiment("calibration")
    row = lambda method, sampler, excess: dict(law="a", n_samples=3000, parametrisation="eps", method=method,
                                               sampler=sampler, energy_excess_pct=excess)
    df = pd.DataFrame([row("gaussian_sample", "-", 10.0), row("mice_sample", "-", 32.0),
                       row("knn_sample", "-", 65.0), row("multi", "ancestral", 21.0),
                       row("coherent", "ancestral", 0.0), row("knn", "-", float("nan"))])
    lines = exp.energy_ratios(df)
    assert len(lines) == 2
    assert lines[0] == ("- a 3000 eps multi ancestral: gaussian_sample 1.100, mice_sample 0.917, knn_sample 0.733 "
                        "(worse than gaussian_sample)")  # 1.21 / 1.10, 1.21 / 1.32, 1.21 / 1.65
    assert lines[1].endswith("gaussian_sample 0.909, mice_sample 0.758, knn_sample 0.606 (better than every baseline)")
    assert exp.energy_ratios(df[~df.method.str.endswith("_sample")]) == []  # no baselines, no ratios


def test_experiment_reuses_its_models(tmp_path):
    """experiments/calibration.py end to end on a tiny preset: the first run trains and saves the
    models under --models, the second finds them finished and reuses them (no training: the
    checkpoint files are untouched) and scores every sampler to the same numbers."""
    import pandas as pd

    exp = load_experiment("calibration")
    args = ["--model-preset", "tiny", "--epochs", "2", "--laws", "two_wide", "--sizes", "500", "--methods", "multi",
            "--steps", "5", "--samplers", "ancestral", "ddim1@all", "--max-rows", "12", "--replicates", "3",
            "--coverage-replicates", "4", "--no-prob-baselines", "--models", str(tmp_path / "models")]
    first = exp.main(args + ["--out", str(tmp_path / "a")])
    files = {p: p.stat().st_mtime_ns for p in (tmp_path / "models").rglob("*") if p.is_file()}
    assert files and (tmp_path / "models" / "two_wide-n500-seed0").is_dir()
    second = exp.main(args + ["--out", str(tmp_path / "b")])
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "models").rglob("*") if p.is_file()} == files
    assert set(first.sampler) >= {"ancestral", "ddim1@all", "posterior"}
    scores = ["r2_mean", "variance_ratio", "energy_excess_pct", "coverage"]
    pd.testing.assert_frame_equal(first[["method", "sampler", *scores]], second[["method", "sampler", *scores]])
    assert (tmp_path / "b" / "calibration.md").exists()
