"""Counterfactual prioritisation: curve endpoints, informed beats random with the oracle's score,
the two variance scores, and the whole study on planted data."""

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from cgjax.evaluate.counterfactual import RATIOS, acquisition_curve, counterfactual_study, curve_auc, variance_score
from cgjax.evaluate.predictive import fast_balanced_accuracy, fast_f1
from cgjax.scoring import metrics


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    with threadpool_limits(1, user_api="blas"):
        yield


def test_curve_endpoints_and_oracle_informed_beats_random():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    pred_full = np.where(rng.random(200) < 0.9, y, (y + 1) % 3)  # the modality helps...
    pred_abl = np.where(rng.random(200) < 0.4, y, (y + 2) % 3)  # ...much more for some patients
    metric = lambda p: fast_f1(y, p)
    gain = (pred_full == y).astype(float) - (pred_abl == y)  # the oracle's value of observing
    informed = acquisition_curve(pred_full, pred_abl, metric, score=gain)
    random = acquisition_curve(pred_full, pred_abl, metric, n_random=20, seed=1)
    assert informed[0] == pytest.approx(metric(pred_full)) == pytest.approx(random[0])
    assert informed[-1] == pytest.approx(metric(pred_abl)) == pytest.approx(random[-1])
    assert curve_auc(RATIOS, informed) > curve_auc(RATIOS, random) + 0.05
    # informed: ablating the patients who gain nothing first keeps the metric at its peak longer
    assert (informed[:8] >= informed[0] - 0.02).all()
    # a score that is the opposite of the oracle's does worse than random
    worst = acquisition_curve(pred_full, pred_abl, metric, score=-gain)
    assert curve_auc(RATIOS, worst) < curve_auc(RATIOS, random)
    assert curve_auc([0.0, 1.0], [1.0, 1.0]) == pytest.approx(1.0)


def test_fast_scores_match_sklearn():
    rng = np.random.default_rng(2)
    for _ in range(4):
        y = rng.integers(0, 4, 50)
        p = np.where(rng.random(50) < 0.5, y, rng.integers(0, 5, 50))  # p may hold a label y lacks
        assert fast_f1(y, p) == pytest.approx(metrics.weighted_f1(y, p), abs=1e-12)
        assert fast_f1(y, p, "macro") == pytest.approx(metrics.macro_f1(y, p), abs=1e-12)
        assert fast_balanced_accuracy(y, p) == pytest.approx(metrics.balanced_accuracy(y, p), abs=1e-12)
    assert fast_f1(np.array(["a", "b"]), np.array(["b", "b"])) == pytest.approx(metrics.weighted_f1(["a", "b"], ["b", "b"]))


class Linear:
    """A fake classifier: class probabilities softmax(x @ W), risk = x @ w."""

    def __init__(self, W):
        self.W = W

    def predict_proba(self, X):
        z = np.nan_to_num(X) @ self.W
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X):
        return self.predict_proba(X).argmax(axis=1)


def test_variance_scores():
    rng = np.random.default_rng(0)
    model = Linear(rng.normal(size=(4, 3)))
    X = rng.normal(size=(10, 4))
    same = np.broadcast_to(X, (5, 10, 4))
    abl = X.copy()
    abl[:, :2] = np.nan
    assert np.allclose(variance_score(model, same, abl), 0)
    varied = same + rng.normal(size=(5, 10, 4)) * np.array([1, 1, 0, 0])
    pv = variance_score(model, varied, abl)
    dis = variance_score(model, varied, abl, kind="disagreement")
    assert (pv > 0).all() and ((dis >= 0) & (dis <= 1)).all()
    with pytest.raises(ValueError):
        variance_score(model, varied, abl, kind="magic")


def test_study_on_planted_data():
    rng = np.random.default_rng(1)

    def draw(n):
        a, b = rng.normal(size=(n, 3)).astype(np.float32), rng.normal(size=(n, 3)).astype(np.float32)
        score = a[:, 0] + 0.3 * b[:, 0]
        stage = 1.0 + np.digitize(score + 0.3 * rng.normal(size=n), [-0.7, 0.0, 0.7])
        t = np.ceil(rng.exponential(1000 / np.exp(score)))
        return {"a": a, "b": b}, {"stage": stage, "os_time": t, "os_event": (rng.random(n) < 0.6).astype(float)}

    train, lab_tr = draw(400)
    test, lab_te = draw(150)
    # candidates of "a": exact copies (no uncertainty) and pure noise (maximal uncertainty)
    cands = {"a": {"exact": np.broadcast_to(test["a"], (4, 150, 3)),
                   "noise": rng.normal(size=(4, 150, 3)).astype(np.float32)}}
    res = counterfactual_study(cands, train, test, lab_tr, lab_te, runs=2, n_random=5, n_jobs=1,
                               stage_rf=dict(n_estimators=15), rsf=dict(n_estimators=4, max_depth=4, min_samples_leaf=5),
                               time_bin=30, extra_scores={("stage", "a"): {"oracle": np.abs(test["a"][:, 0])}})
    c = res.curves
    assert set(c[c.task == "stage"]["method"]) == {"exact", "noise", "random", "oracle"}
    assert set(c[c.task == "survival"]["method"]) == {"exact", "noise", "random"}
    assert len(c[(c.task == "stage") & (c.method == "random") & (c.run == 0)]) == len(RATIOS)
    assert c["value"].between(0, 1).all()
    assert set(res.auc["task"]) == {"stage", "survival"} and res.auc["auc"].between(0, 1).all()
    # identical candidates give a zero variance score
    assert np.allclose(res.scores[("stage", "a", "exact")], 0)
    # an oracle that knows the hidden value: patients with an extreme a_0 lose most without a (the
    # model then predicts a middle stage from b), so acquiring theirs first beats random
    auc = res.auc[res.auc.task == "stage"].groupby("method")["auc"].mean()
    assert auc["oracle"] >= auc["random"] - 0.01
    assert not res.tests.empty and set(res.tests["method_b"]) >= {"random"}
