"""Downstream rescue (Table 2) on small planted data: shapes, ranges, chained completion, and that
removing the informative modality hurts while completing it with the truth restores it."""

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from cgjax.evaluate.downstream import (chained_completion, condition_label, downstream_study, knn_complete,
                                      removal_conditions)

RF = dict(n_estimators=40)
RSF = dict(n_estimators=8, max_depth=4, min_samples_leaf=5, max_features="sqrt")


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    with threadpool_limits(1, user_api="blas"):
        yield


def planted(n, rng, missing=True):
    """Modality a (3 features) drives stage and hazard; b and c are noise. Two cancer types."""
    a = rng.normal(size=(n, 3)).astype(np.float32)
    data = {"a": a, "b": rng.normal(size=(n, 2)).astype(np.float32), "c": rng.normal(size=(n, 2)).astype(np.float32)}
    score = a[:, 0] + 0.5 * a[:, 1]
    stage = 1.0 + np.digitize(score + 0.3 * rng.normal(size=n), [-0.8, 0.0, 0.8])
    hazard = np.exp(1.2 * score)
    t_event = rng.exponential(1.0 / hazard) * 1000
    t_cens = rng.exponential(1500, n)
    labels = {"cancer_type": np.where(rng.random(n) < 0.5, "X", "Y").astype(object), "stage": stage,
              "os_time": np.ceil(np.minimum(t_event, t_cens)), "os_event": (t_event <= t_cens).astype(float)}
    if missing:  # some train rows lack b or c (never two missing: >= 2 present)
        drop = rng.random(n)
        data["b"][drop < 0.15] = np.nan
        data["c"][(drop >= 0.15) & (drop < 0.3)] = np.nan
        labels["stage"][rng.random(n) < 0.1] = np.nan
    return data, labels


class Truth:
    """A 'sampler' that returns the hidden true values (a perfect completion)."""

    def __init__(self, truth):
        self.truth = truth

    def __call__(self, target, given, *, replicates=1, seed=0, unconditional=False):
        n = len(next(iter(given.values())))
        reps = n // len(self.truth[target])
        return np.broadcast_to(np.tile(self.truth[target], (reps, 1)), (replicates, n, self.truth[target].shape[1]))


class Noise:
    def __init__(self, dims):
        self.dims = dims

    def __call__(self, target, given, *, replicates=1, seed=0, unconditional=False):
        n = len(next(iter(given.values())))
        return np.random.default_rng(seed).normal(size=(replicates, n, self.dims[target])).astype(np.float32)


@pytest.fixture(scope="module")
def result():
    rng = np.random.default_rng(0)
    train, lab_tr = planted(500, rng)
    test, lab_te = planted(200, rng, missing=False)
    samplers = {"multi": Noise({m: v.shape[1] for m, v in test.items()}), "coherent": Truth(test)}
    return downstream_study(samplers, train, test, lab_tr, lab_te, runs=3, seed=0, stage_rf=RF, rsf=RSF,
                            time_bin=30, matrix_imputers=("knn", "mean"), n_jobs=1)


def test_conditions_and_labels():
    conds = removal_conditions(["cna", "rnaseq", "rppa", "wsi"])
    assert len(conds) == 15 and sum(len(c) < 4 for c in conds) == 14
    assert condition_label(("cna", "rnaseq"), ["cna", "rnaseq", "rppa", "wsi"]) == "No Cna, Rnaseq"
    assert condition_label(("a", "b"), ["a", "b"]) == "Cancer label only"


def test_knn_complete_equals_sklearn_knn_imputer_on_block_missingness():
    from sklearn.impute import KNNImputer

    rng = np.random.default_rng(3)
    X_train = rng.normal(size=(120, 7))
    X_train[:30, 0:3] = np.nan
    X_train[30:50, 3:5] = np.nan
    X = rng.normal(size=(25, 7))
    X[:10, 0:3] = np.nan
    X[5:15, 3:5] = np.nan
    blocks = [slice(0, 3), slice(3, 5), slice(5, 7)]
    np.testing.assert_allclose(knn_complete(X_train, X, blocks, 5),
                               KNNImputer(n_neighbors=5).fit(X_train).transform(X), rtol=1e-5, atol=1e-6)


def test_chained_completion_conditions_on_previous_generations():
    calls = []

    def sampler(target, given, *, replicates=1, seed=0, unconditional=False):
        calls.append((target, sorted(given)))
        n = len(next(iter(given.values())))
        return np.full((replicates, n, 2), float(len(calls)), np.float32)

    test = {m: np.zeros((5, 2), np.float32) for m in ("cna", "rnaseq", "rppa", "wsi")}
    runs = chained_completion(sampler, test, ("wsi", "cna"), runs=3, seed=0)
    assert calls == [("cna", ["rnaseq", "rppa"]), ("wsi", ["cna", "rnaseq", "rppa"])]
    assert len(runs) == 3 and all(r["cna"].shape == (5, 2) for r in runs)
    assert (runs[1]["cna"] == 1).all() and (runs[2]["wsi"] == 2).all() and (runs[0]["rppa"] == 0).all()


def test_shapes_ranges_and_table(result):
    f = result.frame
    assert set(f["task"]) == {"stage", "survival"}
    assert set(f["run"]) == {0, 1, 2}
    assert f["value"].between(0, 1).all()
    conds = set(f["condition"])
    assert conds == {"full data", "No A", "No B", "No C", "No A, B", "No A, C", "No B, C", "Cancer label only"}
    only = f[f.condition == "Cancer label only"]
    assert set(only["test_type"]) == {"ablation"}
    kinds = set(f[f.condition == "No A"]["test_type"])
    assert kinds == {"ablation", "multi", "coherent", "knn", "mean"}
    s = result.summary
    assert len(s) == 2 * 7 and {"drop_mean", "drop_std", "gain_coherent_mean", "gain_multi_std"} <= set(s.columns)
    # drop and gain are per-run differences
    sub = f[(f.task == "stage") & (f.metric == "macro_f1")]
    w = sub.pivot_table(index=["condition", "run"], columns="test_type", values="value")
    full = w.xs("full data", level="condition")["full_data"]
    row = s[(s.task == "stage") & (s.condition == "No A")].iloc[0]
    assert row["drop_mean"] == pytest.approx((w.xs("No A", level="condition")["ablation"] - full).mean())
    t = result.tests
    assert set(t["task"]) == {"stage", "survival"} and (t["p_corrected"].dropna() >= t["p"].dropna() - 1e-12).all()


def test_planted_signal_full_beats_ablation_and_truth_restores_it(result):
    s = result.summary.set_index(["task", "condition"])
    for task in ("stage", "survival"):
        # removing the informative modality a hurts; removing noise modalities does not (much)
        assert s.loc[(task, "No A"), "drop_mean"] < -0.05
        assert s.loc[(task, "No A"), "drop_mean"] < s.loc[(task, "No B"), "drop_mean"]
        # completing a with its true values gives back the full-data score; noise does not
        assert s.loc[(task, "No A"), "gain_coherent_mean"] == pytest.approx(-s.loc[(task, "No A"), "drop_mean"], abs=1e-9)
        assert s.loc[(task, "No A"), "gain_coherent_mean"] > s.loc[(task, "No A"), "gain_multi_mean"]
