"""Reconstruction study on the synthetic cohort: the oracle's honest sanity checks, baselines,
per-cancer R2 (def. C), paired tests, and the original entry points."""

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from cgjax.data import fit_scalers, split_cohort
from cgjax.datasets import default_law, synthetic_tcga
from cgjax.evaluate.reconstruction import (BaselineSampler, OracleSampler, oracle_records, per_cancer_r2,
                                           reconstruction_study, score_samples, subsets)
from cgjax.evaluate.run import prepare_data
from cgjax.scoring import metrics

DIM = 4


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    with threadpool_limits(1, user_api="blas"):
        yield


@pytest.fixture(scope="module")
def setup():
    cohort = split_cohort(synthetic_tcga(n_samples=2500, seed=3, dim=DIM))
    law = default_law(dim=DIM)
    data = prepare_data(cohort, fit_scalers(cohort.split("train")))
    prior = law.type_prior(complete_only=True)
    return law, data, OracleSampler(law, data.scalers, type_prior=prior), OracleSampler(law, data.scalers, mode="mean",
                                                                                         type_prior=prior)


class Scaled:
    """The posterior mean plus ``scale`` times a posterior draw's deviation: scale 1 is calibrated,
    < 1 over-confident, > 1 under-confident."""

    def __init__(self, oracle_s, oracle_m, scale):
        self.s, self.m, self.scale = oracle_s, oracle_m, scale

    def __call__(self, target, given, *, replicates=1, seed=0, unconditional=False):
        mean = self.m(target, given, replicates=1, seed=seed)
        return mean + self.scale * (self.s(target, given, replicates=replicates, seed=seed) - mean)


def test_oracle_is_the_calibrated_optimum_and_the_mean_the_best_point_prediction(setup):
    law, data, o_s, o_m = setup
    samplers = {"oracle_sample": o_s, "oracle_mean": o_m, "narrow": Scaled(o_s, o_m, 0.4),
                "wide": Scaled(o_s, o_m, 1.8)}
    full = {t: [tuple(m for m in data.modalities if m != t)] for t in data.modalities}
    res = reconstruction_study(samplers, data.test, given_sets=full, replicates=8, seed=0, oracle=o_s)
    by = {(r["target"], r["method"]): r for r in res.records}
    for t in data.modalities:
        s, m, lo, hi = (by[(t, k)] for k in ("oracle_sample", "oracle_mean", "narrow", "wide"))
        # the posterior mean has the best R2 of any predictor here (per replicate and of the mean)
        assert m["r2_mean"] >= max(s["r2_mean"], lo["r2_mean"], hi["r2_mean"])
        assert m["r2_std"] == 0.0 and m["variance_pct"] == 0.0 and m["variance_ratio"] == 0.0
        # exact draws: the best energy score, calibrated variance and range coverage
        assert s["energy_score"] < min(lo["energy_score"], hi["energy_score"])
        assert 0.75 < s["variance_ratio"] < 1.3
        # the range of R = 8 exact draws covers the truth with probability (R - 1) / (R + 1) = 7 / 9
        assert s["coverage_range_expected"] == pytest.approx(7 / 9)
        assert s["coverage_range"] == pytest.approx(7 / 9, abs=0.06)
        assert lo["coverage_range"] < s["coverage_range"] < hi["coverage_range"]
        assert lo["variance_ratio"] < 0.3 and hi["variance_ratio"] > 2.5
        # a point prediction has no energy score or coverage (a point mass's "energy score" is its
        # mean distance to the truth, not comparable): it reports that distance as mean_distance
        assert "energy_score" not in m and "coverage_range" not in m
        np.testing.assert_allclose(m["mean_distance"],
                                   np.linalg.norm(o_m(t, {g: data.test[g] for g in full[t][0]})[0] - data.test[t],
                                                  axis=1).mean(), rtol=1e-5)
        # R2 of a calibrated draw = best R2 minus the posterior variance share (in expectation)
        assert s["r2_mean"] < m["r2_mean"] and s["r2_of_mean"] > s["r2_mean"]


def test_oracle_matches_the_law_scores(setup):
    law, data, o_s, _ = setup
    g = ("rppa", "wsi")
    x = o_s("rnaseq", {m: data.test[m] for m in g}, replicates=50, seed=1)
    ref = law.oracle_scores("rnaseq", g, data.test["rnaseq"] * data.scalers["rnaseq"][1] + data.scalers["rnaseq"][0],
                            {m: data.test[m] * data.scalers[m][1] + data.scalers[m][0] for m in g},
                            law.type_prior(complete_only=True), n_draws=50, scale=data.scalers)
    rec = score_samples(x, data.test["rnaseq"])
    assert rec["r2_mean"] == pytest.approx(ref["calibrated_r2_exact"], abs=0.03)
    assert rec["r2_of_mean"] == pytest.approx(ref["best_r2"], abs=0.03)


def test_every_subset_single_only_for_one_source_and_baselines(setup):
    law, data, o_s, o_m = setup
    knn = BaselineSampler(data.train, "knn")
    samplers = {"single": o_s, "coherent": o_s, "knn": knn, "iterative": BaselineSampler(data.train, "iterative"),
                "oracle_mean": o_m, "gaussian_sample": BaselineSampler(data.train, "gaussian_sample"),
                "knn_sample": BaselineSampler(data.train, "knn_sample"),
                "gaussian_type_sample": BaselineSampler(data.train, "gaussian_type_sample",
                                                        train_types=data.labels_train["cancer_type"],
                                                        test_types=data.labels_test["cancer_type"])}
    res = reconstruction_study(samplers, data.test, replicates=3, seed=0, oracle=o_s,
                               cancer_types=data.labels_test["cancer_type"], point_sets="full")
    recs = res.records
    by = {(r["target"], r["method"]): r for r in recs if len(r["given"]) == 3}
    for t in data.modalities:  # probabilistic baselines draw, on the full sets only
        for b in ("gaussian_sample", "gaussian_type_sample", "knn_sample"):
            assert by[(t, b)]["r2_std"] > 0 and by[(t, b)]["variance_pct"] > 0
        # the exact posterior (here the "coherent" sampler) beats those not told the cancer type
        assert min(by[(t, "gaussian_sample")]["energy_score"], by[(t, "knn_sample")]["energy_score"]) >= \
            by[(t, "coherent")]["energy_score"]
    assert sum(r["method"] == "gaussian_sample" for r in recs) == 4
    recs = [r for r in recs if not r["method"].endswith("_sample")]
    assert len(subsets(["a", "b", "c"])) == 7
    n_single = sum(r["method"] == "single" for r in recs)
    assert n_single == 12 and all(len(r["given"]) == 1 for r in recs if r["method"] == "single")
    assert sum(r["method"] == "coherent" for r in recs) == 4 * 7
    assert sum(r["method"] == "knn" for r in recs) == 4  # point methods on the full sets only
    for r in recs:
        point = r["method"] in ("knn", "iterative", "oracle_mean")
        assert {"target", "given", "method", "r2_mean", "r2_std", "variance_pct", "variance_ratio",
                "r2_of_mean"} | ({"mean_distance"} if point else {"energy_score", "coverage_range",
                                                                  "coverage_range_expected"}) <= set(r)
        assert len(r["r2_replicates"]) == 3
        if r["method"] in ("knn", "iterative", "oracle_mean"):
            assert r["r2_std"] == 0.0 and r["variance_pct"] == 0.0
        else:
            assert r["variance_pct"] > 0
    by = {(r["target"], r["method"]): r for r in recs if len(r["given"]) == 3}
    for t in data.modalities:
        # no imputer beats the posterior mean by more than noise
        assert by[(t, "knn")]["r2_mean"] <= by[(t, "oracle_mean")]["r2_mean"] + 0.02
        assert by[(t, "iterative")]["r2_mean"] <= by[(t, "oracle_mean")]["r2_mean"] + 0.02
    # samples kept for the full sets; the per-cancer table covers every method there
    assert res.samples["rnaseq"]["coherent"].shape == (3, len(data.test_ids), DIM)
    assert set(res.per_cancer["method"]) == {"coherent", "knn", "iterative", "oracle_mean", "gaussian_sample",
                                             "gaussian_type_sample", "knn_sample"}
    assert set(res.tests["method_a"]) >= {"coherent"} and (res.tests["p_corrected"] >= res.tests["p"]).all()
    assert res.replicates_frame().shape[0] == 3 * len(res.records)


def test_per_cancer_r2_is_definition_c_with_the_global_feature_mean():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(30, 3)) + np.arange(3)
    samples = truth[None] + rng.normal(scale=0.5, size=(2, 30, 3))
    types = np.array(["A"] * 12 + ["B"] * 17 + ["C"])
    recs = {r["cancer_type"]: r for r in per_cancer_r2(samples, truth, types)}
    assert set(recs) == {"A", "B"}  # C has a single row
    mu = truth.mean(axis=0)
    rows = types == "A"
    manual = [np.mean([1 - ((truth[rows, f] - samples[r][rows, f]) ** 2).sum() / ((truth[rows, f] - mu[f]) ** 2).sum()
                       for f in range(3)]) for r in range(2)]
    assert recs["A"]["r2_mean"] == pytest.approx(np.mean(manual))
    assert recs["A"]["r2_std"] == pytest.approx(np.std(manual))
    assert recs["A"]["n"] == 12


def test_score_samples_definitions():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=(20, 4))
    samples = rng.normal(size=(5, 20, 4))
    rec = score_samples(samples, truth, posterior_var=np.ones((20, 4)))
    r2 = metrics.r2_pooled(truth, samples)
    assert rec["r2_mean"] == pytest.approx(r2.mean()) and rec["r2_std"] == pytest.approx(r2.std())
    assert rec["variance_pct"] == pytest.approx(metrics.variance_pct(samples, truth))
    assert rec["energy_score"] == pytest.approx(metrics.energy_score(samples, truth).mean())
    assert rec["variance_ratio"] == pytest.approx(samples.var(axis=0, ddof=1).mean())


def test_oracle_records_keep_their_contract(setup):
    law, data, _, _ = setup
    native = {m: data.test[m] * data.scalers[m][1] + data.scalers[m][0] for m in data.modalities}
    given = {"wsi": [("cna", "rnaseq", "rppa")]}
    recs = oracle_records(law, native, data.scalers, given, type_prior=law.type_prior(complete_only=True), n_draws=4)
    assert [r["method"] for r in recs] == ["oracle_sample", "oracle_mean"]
    assert all(r["target"] == "wsi" and r["given"] == ["cna", "rnaseq", "rppa"] for r in recs)
    assert recs[1]["r2_mean"] > recs[0]["r2_mean"] and "posterior_variance" in recs[1]


def test_oracle_handles_rows_with_different_given_sets(setup):
    law, data, o_s, o_m = setup
    n = len(data.test_ids)
    cna = data.test["cna"].copy()
    cna[: n // 2] = np.nan
    given = {"cna": cna, "wsi": data.test["wsi"]}
    mixed = o_m("rnaseq", given)[0]
    only = o_m("rnaseq", {"wsi": data.test["wsi"][: n // 2]})[0]
    np.testing.assert_allclose(mixed[: n // 2], only, rtol=1e-5, atol=1e-6)
    assert o_s("rnaseq", given, replicates=2, unconditional=True).shape == (2, n, DIM)
