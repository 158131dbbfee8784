"""Counterfactual prioritisation (the paper's Fig 4 and S5; docs/reference.md 5.6).

Which patients gain most from acquiring an expensive modality (RNA-seq, WSI)? A downstream model
(stage random forest, or RandomSurvivalForest) is trained on the train set with all modalities side
by side (NaN for absent ones, no cancer-type columns, as the reference). For each test patient the
target modality is replaced by each of R generated candidates (from the other three real
modalities), giving R counterfactual predictions; the *variance score* says how much the prediction
hinges on the unknown modality:

* ``prob_variance`` (paper, default): the variance over the R candidates of the predicted class
  probabilities, averaged over classes (survival: the variance of the R risk scores);
* ``disagreement`` (reference code): the fraction of candidates whose hard prediction differs from
  the prediction with the modality ablated (survival: mean squared difference of the risks to the
  ablated risk).

Acquisition curves: at ratio r, the ``floor(r N)`` patients with the lowest scores have the modality
ablated (informed), or a random ``floor(r N)`` (random, averaged over draws); the metric is computed
over all patients. The x-axis of the plots is the fraction observed, 1 - r; the area under each
curve (trapezoid over the observed fraction) summarises it.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cgjax.evaluate.downstream import RSF_LONG, fit_rsf
from cgjax.evaluate.predictive import fast_f1
from cgjax.scoring import metrics, stats

SCORES = ("prob_variance", "disagreement")
RATIOS = np.round(np.linspace(0.0, 1.0, 21), 10)


def variance_score(model, X_candidates: np.ndarray, X_ablated: np.ndarray, *, kind: str = "prob_variance",
                   task: str = "stage") -> np.ndarray:
    """f[N] score per patient. X_candidates: f[R, N, C] the feature rows with each candidate;
    X_ablated: f[N, C] the rows with the target ablated. ``model`` is a fitted classifier (stage)
    or survival model with ``predict`` returning a risk (survival)."""
    if kind not in SCORES:
        raise ValueError(f"unknown score {kind!r}; choose one of {SCORES}")
    R, N, C = X_candidates.shape
    flat = X_candidates.reshape(R * N, C)
    if task == "stage":
        if kind == "prob_variance":
            proba = model.predict_proba(flat).reshape(R, N, -1)
            return proba.var(axis=0).mean(axis=1)
        pred = model.predict(flat).reshape(R, N)
        return (pred != model.predict(X_ablated)[None]).mean(axis=0)
    risk = model.predict(flat).reshape(R, N)
    if kind == "prob_variance":
        return risk.var(axis=0)
    return ((risk - model.predict(X_ablated)[None]) ** 2).mean(axis=0)


def acquisition_curve(pred_full: np.ndarray, pred_ablated: np.ndarray, metric: Callable[[np.ndarray], float],
                      *, score: np.ndarray | None = None, ratios: Sequence[float] = RATIOS, n_random: int = 30,
                      seed: int = 0) -> np.ndarray:
    """f[len(ratios)]: the metric when, at each ratio r, floor(r N) patients use their ablated
    prediction. Informed (``score`` given): the lowest-score patients are ablated first (ties broken
    by patient order); random (``score`` None): a uniformly random subset, averaged over
    ``n_random`` draws. ``metric(pred f[N]) -> float`` scores the mixed predictions."""
    pred_full, pred_ablated = np.asarray(pred_full), np.asarray(pred_ablated)
    N = len(pred_full)
    out = np.empty(len(ratios))
    rng = np.random.default_rng(seed)
    orders = [np.argsort(score, kind="stable")] if score is not None else [rng.permutation(N) for _ in range(n_random)]
    for i, r in enumerate(ratios):
        k = int(np.floor(r * N + 1e-9))
        vals = []
        for order in orders:
            pred = pred_full.copy()
            pred[order[:k]] = pred_ablated[order[:k]]
            vals.append(metric(pred))
        out[i] = float(np.mean(vals))
    return out


def curve_auc(ratios: Sequence[float], values: Sequence[float]) -> float:
    """Area under the curve over the observed fraction 1 - r (trapezoid, sklearn ``auc``)."""
    x = 1.0 - np.asarray(ratios, np.float64)
    order = np.argsort(x)
    return float(np.trapezoid(np.asarray(values, np.float64)[order], x[order]))


class CounterfactualResult:
    """curves: long table task, target, run, method, ratio, observed, value; auc: task, target,
    run, method, auc; tests: paired tests of the AUCs; scores: {(task, target, method): f[N]} of run 0."""

    def __init__(self, curves, auc, tests, scores):
        self.curves, self.auc, self.tests, self.scores = curves, auc, tests, scores


def counterfactual_study(candidates: Mapping[str, Mapping[str, np.ndarray]], train: Mapping[str, np.ndarray],
                         test: Mapping[str, np.ndarray], labels_train: Mapping[str, np.ndarray],
                         labels_test: Mapping[str, np.ndarray], *, modalities: Sequence[str] | None = None,
                         tasks: Sequence[str] = ("stage", "survival"), runs: int = 10, seed: int = 42,
                         score: str = "prob_variance", ablation: str = "nan", stage_metric: str = "weighted_f1",
                         ratios: Sequence[float] = RATIOS, n_random: int = 30, stage_rf: Mapping | None = None,
                         rsf: Mapping | None = None, time_bin: float | None = None, extra_scores=None,
                         n_jobs: int = -1, progress: bool = False) -> CounterfactualResult:
    """Informed vs random acquisition for each target in ``candidates``.

    candidates: target -> method -> f[R, N, D] generated versions of the test rows' target
      (typically the reconstruction's full-condition samples). train/test: standardised modality
      dicts (test complete). labels_*: stage, os_time, os_event.
    score: "prob_variance" (paper) or "disagreement" (reference). ablation: "nan" (the model was
      trained with NaN for absent modalities; the reference notebook) or "zero" (the train mean;
      the reference script). stage_metric: "weighted_f1" (reference) or "macro_f1".
    The stage forest (default 500 trees, the paper; the reference 100) and the RSF of run r use
    random_state = seed + r (reference: 42 + r). The reference's ``oob_score=True`` is left out: it
    does not change the predictions. extra_scores: optional
    {(task, target): {name: f[N] score}} of fixed informed orders (e.g. an oracle's), scored as
    further methods.
    """
    from sklearn.ensemble import RandomForestClassifier
    if ablation not in ("nan", "zero"):
        raise ValueError(f"ablation must be 'nan' or 'zero', got {ablation!r}")
    modalities = list(modalities or test)
    stage_rf = dict(dict(n_estimators=500) if stage_rf is None else stage_rf)
    rsf = dict(RSF_LONG if rsf is None else rsf)
    if stage_metric not in ("weighted_f1", "macro_f1"):
        raise ValueError(f"stage_metric must be 'weighted_f1' or 'macro_f1', got {stage_metric!r}")
    average = stage_metric.split("_")[0]
    metric_fn = lambda y, p: fast_f1(y, p, average)
    X_train = np.concatenate([np.asarray(train[m], np.float32) for m in modalities], axis=1)
    X_test = np.concatenate([np.asarray(test[m], np.float32) for m in modalities], axis=1)
    cols, start = {}, 0
    for m in modalities:
        cols[m] = slice(start, start + test[m].shape[1])
        start += test[m].shape[1]
    n_tr, n_te = len(X_train), len(X_test)
    get = lambda lab, k, n: np.asarray(lab.get(k, np.full(n, np.nan)), np.float64)
    st_tr, st_te = get(labels_train, "stage", n_tr), get(labels_test, "stage", n_te)
    t_tr, t_te = get(labels_train, "os_time", n_tr), get(labels_test, "os_time", n_te)
    e_tr, e_te = get(labels_train, "os_event", n_tr), get(labels_test, "os_event", n_te)
    extra_scores = extra_scores or {}

    curves, aucs, scores_run0 = [], [], {}
    jobs = [(task, run) for task in tasks for run in range(runs)]
    for task, run in tqdm(jobs, desc="counterfactual", disable=not progress, leave=False):
        if task == "stage":
            tr, te = np.isfinite(st_tr), np.isfinite(st_te)
            if tr.sum() < 2 or te.sum() < 2:
                continue
            model = RandomForestClassifier(random_state=seed + run, n_jobs=n_jobs, **stage_rf)
            model.fit(X_train[tr], st_tr[tr].astype(int))
            y = st_te[te].astype(int)
            metric = lambda p, y=y: metric_fn(y, p)
        elif task == "survival":
            tr = np.isfinite(t_tr) & np.isfinite(e_tr) & (t_tr > 0)
            te = np.isfinite(t_te) & np.isfinite(e_te) & (t_te > 0)
            if tr.sum() < 2 or te.sum() < 2 or e_te[te].sum() == 0:
                continue
            model = fit_rsf(X_train[tr], t_tr[tr], e_tr[tr], seed=seed + run, time_bin=time_bin, n_jobs=n_jobs, **rsf)
            ev, tm = e_te[te].astype(bool), t_te[te]
            metric = lambda p, ev=ev, tm=tm: metrics.c_index(ev, tm, p)
        else:
            raise ValueError(f"unknown task {task!r}; choose stage or survival")
        X_full = X_test[te]
        pred_full = model.predict(X_full)
        for target in candidates:
            X_abl = X_full.copy()
            X_abl[:, cols[target]] = np.nan if ablation == "nan" else 0.0
            pred_abl = model.predict(X_abl)
            method_scores = {}
            for method, cand in candidates[target].items():
                cand = np.asarray(cand, np.float32)[:, te]
                Xc = np.broadcast_to(X_full, (len(cand), *X_full.shape)).copy()
                Xc[:, :, cols[target]] = cand
                method_scores[method] = variance_score(model, Xc, X_abl, kind=score, task=task)
            for name, s in extra_scores.get((task, target), {}).items():
                method_scores[name] = np.asarray(s)[te]
            results = {m: acquisition_curve(pred_full, pred_abl, metric, score=s, ratios=ratios)
                       for m, s in method_scores.items()}
            results["random"] = acquisition_curve(pred_full, pred_abl, metric, ratios=ratios, n_random=n_random,
                                                  seed=seed + run)
            if run == 0:
                scores_run0.update({(task, target, m): s for m, s in method_scores.items()})
            for method, vals in results.items():
                for r, v in zip(ratios, vals):
                    curves.append({"task": task, "target": target, "run": run, "method": method, "ratio": float(r),
                                   "observed": float(1 - r), "value": float(v)})
                aucs.append({"task": task, "target": target, "run": run, "method": method,
                             "auc": curve_auc(ratios, vals)})
    curves, aucs = pd.DataFrame(curves), pd.DataFrame(aucs)
    return CounterfactualResult(curves, aucs, counterfactual_tests(aucs), scores_run0)


def counterfactual_tests(aucs: pd.DataFrame, *, alpha: float = 0.05) -> pd.DataFrame:
    """docs/reference.md 5.9: paired (by run) two-sided t-tests of the AUCs, every informed method vs
    random and coherent vs multi, Bonferroni within each task and target."""
    if aucs.empty or aucs["run"].nunique() < 2:
        return pd.DataFrame()
    frames = []
    for (task, target), sub in aucs.groupby(["task", "target"], sort=False):
        methods = [m for m in sub["method"].unique() if m != "random"]
        pairs = [(m, "random") for m in methods]
        if {"coherent", "multi"} <= set(methods):
            pairs.append(("coherent", "multi"))
        res = stats.compare_methods(sub, "auc", "method", pairs, "bonferroni", subject_col="run", alpha=alpha)
        res.insert(0, "target", target)
        res.insert(0, "task", task)
        frames.append(res)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
