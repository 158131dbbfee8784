"""Downstream rescue (the paper's Table 2 and Fig 3; docs/reference.md 5.5).

A multimodal stage classifier (random forest) and a survival model (RandomSurvivalForest) are
trained once per run on the whole train set: all modalities side by side (NaN where a sample lacks
one; both forests handle missing values natively) plus a one-hot cancer type. On the complete test
samples, every non-empty subset of modalities is then removed and the models are scored on

* ``ablation``: the removed columns left missing (NaN), with the same model;
* every sampler given (``multi``, ``coherent``, and on the synthetic cohort the oracle): the removed
  modalities generated one at a time in alphabetical order (cna < rnaseq < rppa < wsi), the i-th
  conditioned on the remaining real modalities *and* the previously generated ones (chained, as the
  reference's task_05b);
* ``knn`` (and optionally ``mean``): KNNImputer(5) (:func:`knn_complete`, an exact block-wise
  equivalent) / SimpleImputer fitted on the train feature matrix, applied to the ablated test matrix;
* ``full_data`` (nothing removed) and, when every modality is removed, ``cancer label only`` (an
  ablation: the same model seeing only the cancer type, as in the reference).

Metrics: stage macro F1 and balanced accuracy; survival Harrell's C-index of ``rsf.predict``. The
generation is redrawn in every run. Table 2's drop (ablation - full) and gains (method - ablation)
are per-run differences, then mean and std (ddof 1) over runs (the paper does not say; docs/reference.md 5.9).
"""

from __future__ import annotations

import itertools
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cgjax.evaluate.predictive import fast_balanced_accuracy, fast_f1
from cgjax.evaluate.reconstruction import Sampler, as_samples, stable_seed
from cgjax.scoring import metrics, stats

MAIN_METRIC = {"stage": "macro_f1", "survival": "c_index"}
STAGE_RF_PAPER = dict(n_estimators=500)
RSF_LONG = dict(n_estimators=100, max_depth=None, max_features="sqrt", min_samples_split=6, min_samples_leaf=3)
RSF_QUICK = dict(n_estimators=30, max_depth=12, max_features="sqrt", min_samples_split=6, min_samples_leaf=3)


def removal_conditions(modalities: Sequence[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset of modalities to remove, smallest first (15 for 4 modalities)."""
    return [c for k in range(1, len(modalities) + 1) for c in itertools.combinations(modalities, k)]


def condition_label(removed: Sequence[str], modalities: Sequence[str]) -> str:
    """The paper's row names: 'No Cna, Rnaseq'; 'cancer label only' when everything is removed."""
    if not removed:
        return "full data"
    if set(removed) == set(modalities):
        return "Cancer label only"
    return "No " + ", ".join(m.capitalize() for m in removed)


def one_hot(types, categories: Sequence[str]) -> np.ndarray:
    types = np.asarray(types).astype(str)
    return (types[:, None] == np.asarray(categories, dtype=str)[None, :]).astype(np.float32)


def feature_matrix(data: Mapping[str, np.ndarray], modalities: Sequence[str], types=None,
                   categories: Sequence[str] | None = None) -> np.ndarray:
    """f32[N, sum D (+ C)]: modalities side by side (NaN rows stay NaN), then the one-hot type."""
    blocks = [np.asarray(data[m], np.float32) for m in modalities]
    if categories is not None:
        blocks.append(one_hot(types, categories))
    return np.concatenate(blocks, axis=1)


def knn_complete(X_train: np.ndarray, X: np.ndarray, blocks: Sequence[slice], k: int = 5) -> np.ndarray:
    """sklearn's ``KNNImputer(n_neighbors=k)`` fitted on X_train and applied to X, for missing values
    that come in whole blocks (a modality is present or absent as a whole, as here): per block the
    donors are the train rows that have it, the distances the NaN-aware Euclidean ones over what
    both rows have (``nan_euclidean_distances``), the imputation the mean of the k nearest donors.
    Equal to KNNImputer up to ties, and an order of magnitude faster (one distance matrix for
    every column of the block instead of one pass per column)."""
    from sklearn.metrics.pairwise import nan_euclidean_distances

    X = np.array(X, dtype=np.float64)
    X_train = np.asarray(X_train, dtype=np.float64)
    D = None
    for sl in blocks:
        receivers = np.isnan(X[:, sl]).any(axis=1)
        if not receivers.any():
            continue
        if D is None:
            D = nan_euclidean_distances(X, X_train)
        donors = ~np.isnan(X_train[:, sl]).any(axis=1)
        vals = X_train[donors][:, sl]
        d = D[np.ix_(receivers, donors)]
        d = np.where(np.isnan(d), np.inf, d)
        kk = min(k, donors.sum())
        idx = np.argpartition(d, kk - 1, axis=1)[:, :kk]
        fill = vals[idx].mean(axis=1)
        lost = ~np.isfinite(np.take_along_axis(d, idx, axis=1)).any(axis=1)  # no usable distance: column mean
        fill[lost] = vals.mean(axis=0)
        block = X[receivers][:, sl]
        X[np.flatnonzero(receivers)[:, None], np.arange(sl.start, sl.stop)[None, :]] = np.where(np.isnan(block), fill, block)
    return X.astype(np.float32)


def chained_completion(sampler: Sampler, test: Mapping[str, np.ndarray], removed: Sequence[str], *,
                       runs: int = 1, seed: int = 0, tag: str = "") -> list[dict[str, np.ndarray]]:
    """Generate the ``removed`` modalities of the test rows, one at a time in alphabetical order,
    each conditioned on the kept real modalities and the ones generated before it. All runs are
    drawn in one call per target (rows tiled run-major), each run with fresh noise.

    Returns one dict per run: modality -> f32[N, D] (kept modalities real, removed ones generated).
    """
    n = len(next(iter(test.values())))
    data = {m: np.tile(np.asarray(v, np.float32), (runs, 1)) for m, v in test.items() if m not in removed}
    if not data:
        raise ValueError("chained_completion needs at least one kept modality")
    for t in sorted(removed):
        x, _ = as_samples(sampler(t, dict(data), replicates=1, seed=stable_seed(seed, "chain", tag, t)))
        data[t] = x[0]
    return [{m: v[r * n:(r + 1) * n] for m, v in data.items()} for r in range(runs)]


def _labels(labels: Mapping[str, np.ndarray], n: int):
    types = labels.get("cancer_type")
    types = np.asarray(types).astype(object) if types is not None else np.full(n, None, object)
    has_type = pd.Series(types).notna().to_numpy()
    stage = np.asarray(labels.get("stage", np.full(n, np.nan)), np.float64)
    t = np.asarray(labels.get("os_time", np.full(n, np.nan)), np.float64)
    e = np.asarray(labels.get("os_event", np.full(n, np.nan)), np.float64)
    return types, has_type, stage, t, e


class DownstreamResult:
    """frame: long table task, condition, removed, n_removed, test_type, run, metric, value;
    summary: Table 2 (per task and condition); tests: paired tests with corrected p-values."""

    def __init__(self, frame: pd.DataFrame, summary: pd.DataFrame, tests: pd.DataFrame):
        self.frame, self.summary, self.tests = frame, summary, tests


def downstream_study(samplers: Mapping[str, Sampler], train: Mapping[str, np.ndarray],
                     test: Mapping[str, np.ndarray], labels_train: Mapping[str, np.ndarray],
                     labels_test: Mapping[str, np.ndarray], *, modalities: Sequence[str] | None = None,
                     tasks: Sequence[str] = ("stage", "survival"), runs: int = 10, seed: int = 0,
                     stage_rf: Mapping | None = None, rsf: Mapping | None = None, time_bin: float | None = None,
                     matrix_imputers: Sequence[str] = ("knn",), knn_k: int = 5,
                     conditions: Sequence[tuple[str, ...]] | None = None, n_jobs: int = -1,
                     progress: bool = False) -> DownstreamResult:
    """Run the Table 2 protocol.

    samplers: name -> sampler used to complete the removed modalities (chained); train: modality ->
      f[N_train, D] standardised with NaN rows; test: modality -> f[N, D] complete rows;
      labels_*: cancer_type, stage (1-4, NaN missing), os_time (days), os_event (1/0).
    stage_rf: RandomForestClassifier keywords (default 500 trees, the paper; the reference 100).
    rsf: RandomSurvivalForest keywords (default the reference's "long" setting, :data:`RSF_LONG`).
    time_bin: when set, survival times are rounded up to multiples of it for *training* the RSF
      only (a quick-mode speed-up: the RSF's cost grows with the number of distinct times).
    matrix_imputers: classical completions of the whole feature matrix: "knn", "mean".
    conditions: removal sets (default: every non-empty subset, :func:`removal_conditions`).
    The forest of run r uses random_state = seed + r.
    """
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    modalities = list(modalities or test)
    stage_rf = dict(STAGE_RF_PAPER if stage_rf is None else stage_rf)
    rsf = dict(RSF_LONG if rsf is None else rsf)
    conditions = [tuple(c) for c in (conditions or removal_conditions(modalities))]
    n_tr, n_te = len(next(iter(train.values()))), len(next(iter(test.values())))
    ty_tr, has_ty_tr, st_tr, t_tr, e_tr = _labels(labels_train, n_tr)
    ty_te, has_ty_te, st_te, t_te, e_te = _labels(labels_test, n_te)
    categories = sorted(set(map(str, ty_tr[has_ty_tr])) | set(map(str, ty_te[has_ty_te])))
    use_types = len(categories) > 0
    # the reference drops training rows with a single modality present
    n_present = np.sum([~np.isnan(train[m]).all(axis=1) for m in modalities], axis=0)
    base_tr = n_present >= 2
    X_train = feature_matrix(train, modalities, np.where(has_ty_tr, ty_tr, ""), categories if use_types else None)
    X_full = feature_matrix(test, modalities, np.where(has_ty_te, ty_te, ""), categories if use_types else None)
    cols = {}
    start = 0
    for m in modalities:
        cols[m] = slice(start, start + test[m].shape[1])
        start += test[m].shape[1]

    def ablate(removed, fill=np.nan):
        X = X_full.copy()
        for m in removed:
            X[:, cols[m]] = fill
        return X

    # --- the test matrices of every (condition, test type); sampler ones per run ------------------
    fixed: dict[tuple[str, str], np.ndarray] = {("full data", "full_data"): X_full}
    per_run: dict[tuple[str, str], list[np.ndarray]] = {}
    imputers = {}
    for name in matrix_imputers:
        if name == "knn":
            imputers[name] = lambda X: knn_complete(X_train[base_tr], X, list(cols.values()), knn_k)
        elif name == "mean":
            imputers[name] = SimpleImputer(strategy="mean", keep_empty_features=True).fit(X_train[base_tr]).transform
        else:
            raise ValueError(f"unknown matrix imputer {name!r}; choose knn or mean")
    jobs = [(c, s) for c in conditions if len(c) < len(modalities) for s in samplers]
    bar = tqdm(total=len(jobs) + len(conditions), desc="downstream: completing", disable=not progress, leave=False)
    for removed in conditions:
        label = condition_label(removed, modalities)
        fixed[(label, "ablation")] = ablate(removed)
        if len(removed) < len(modalities):
            for name, imp in imputers.items():
                fixed[(label, name)] = imp(ablate(removed)).astype(np.float32)
        bar.update(1)
    for removed, name in jobs:
        label = condition_label(removed, modalities)
        done = chained_completion(samplers[name], test, removed, runs=runs, seed=seed, tag=f"{label}|{name}")
        per_run[(label, name)] = [feature_matrix(d, modalities, np.where(has_ty_te, ty_te, ""),
                                                 categories if use_types else None) for d in done]
        bar.update(1)
    bar.close()

    # --- fit and score per run ----------------------------------------------------------------
    rows = []
    keys = list(fixed) + list(per_run)
    removed_of = {condition_label(c, modalities): c for c in conditions}
    removed_of["full data"] = ()
    for run in tqdm(range(runs), desc="downstream: runs", disable=not progress, leave=False):
        variants = {k: fixed[k] if k in fixed else per_run[k][run] for k in keys}
        if "stage" in tasks:
            tr = base_tr & np.isfinite(st_tr) & has_ty_tr
            te = np.isfinite(st_te) & has_ty_te
            if tr.sum() >= 2 and te.sum() >= 1:
                rf = RandomForestClassifier(random_state=seed + run, n_jobs=n_jobs, **stage_rf)
                rf.fit(X_train[tr], st_tr[tr].astype(int))
                pred = rf.predict(np.concatenate([variants[k][te] for k in keys]))
                for i, (cond, ttype) in enumerate(keys):
                    p = pred[i * te.sum():(i + 1) * te.sum()]
                    for metric, fn in (("macro_f1", lambda a, b: fast_f1(a, b, "macro")),
                                       ("balanced_accuracy", fast_balanced_accuracy)):
                        rows.append(_row("stage", cond, removed_of[cond], ttype, run, metric, fn(st_te[te].astype(int), p)))
        if "survival" in tasks:
            tr = base_tr & np.isfinite(t_tr) & np.isfinite(e_tr) & (t_tr > 0)
            te = np.isfinite(t_te) & np.isfinite(e_te) & (t_te > 0)
            if tr.sum() >= 2 and te.sum() >= 2 and e_te[te].sum() > 0:
                model = fit_rsf(X_train[tr], t_tr[tr], e_tr[tr], seed=seed + run, time_bin=time_bin, n_jobs=n_jobs, **rsf)
                risk = model.predict(np.concatenate([variants[k][te] for k in keys]))
                for i, (cond, ttype) in enumerate(keys):
                    r = risk[i * te.sum():(i + 1) * te.sum()]
                    rows.append(_row("survival", cond, removed_of[cond], ttype, run, "c_index",
                                     metrics.c_index(e_te[te].astype(bool), t_te[te], r)))
    frame = pd.DataFrame(rows)
    return DownstreamResult(frame, downstream_summary(frame), downstream_tests(frame, list(samplers)))


def _row(task, cond, removed, ttype, run, metric, value):
    return {"task": task, "condition": cond, "removed": "+".join(removed), "n_removed": len(removed),
            "test_type": ttype, "run": run, "metric": metric, "value": float(value)}


def fit_rsf(X, time, event, *, seed=0, time_bin=None, n_jobs=-1, **kwargs):
    """A RandomSurvivalForest (scikit-survival, native missing values) on (event, time)."""
    from sksurv.ensemble import RandomSurvivalForest
    from sksurv.util import Surv

    time = np.asarray(time, np.float64)
    if time_bin:
        time = np.ceil(time / time_bin) * time_bin
    y = Surv.from_arrays(event=np.asarray(event).astype(bool), time=time)
    return RandomSurvivalForest(random_state=seed, n_jobs=n_jobs, **kwargs).fit(X, y)


def downstream_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Table 2: per task and condition, with the task's main metric (stage macro F1, survival
    C-index): the mean of every test type, ``drop`` = ablation - full data and ``gain_<type>`` =
    type - ablation, as per-run differences: mean and std (ddof 1) over runs."""
    if frame.empty:
        return pd.DataFrame()
    out = []
    for task, metric in MAIN_METRIC.items():
        sub = frame[(frame.task == task) & (frame.metric == metric)]
        if sub.empty:
            continue
        wide = sub.pivot_table(index=["condition", "run"], columns="test_type", values="value", aggfunc="first")
        full = wide.xs("full data", level="condition")["full_data"]
        order = list(dict.fromkeys(sub["condition"]))
        for cond in order:
            if cond == "full data":
                continue
            w = wide.xs(cond, level="condition")
            rec = {"task": task, "metric": metric, "condition": cond,
                   "removed": sub[sub.condition == cond]["removed"].iloc[0],
                   "full_mean": float(full.mean()), "ablation_mean": float(w["ablation"].mean())}
            d = (w["ablation"] - full.reindex(w.index)).dropna()
            rec["drop_mean"], rec["drop_std"] = float(d.mean()), float(d.std(ddof=1)) if len(d) > 1 else 0.0
            for ttype in w.columns:
                if ttype in ("ablation",) or w[ttype].isna().all():
                    continue
                g = (w[ttype] - w["ablation"]).dropna()
                rec[f"{ttype}_mean"] = float(w[ttype].mean())
                rec[f"gain_{ttype}_mean"] = float(g.mean())
                rec[f"gain_{ttype}_std"] = float(g.std(ddof=1)) if len(g) > 1 else 0.0
            out.append(rec)
    return pd.DataFrame(out)


def downstream_tests(frame: pd.DataFrame, sampler_names: Sequence[str], *, alpha: float = 0.05) -> pd.DataFrame:
    """docs/reference.md 5.9, per task on its main metric, paired by run, over the conditions with an
    imputation (not full data, not cancer label only):
      stage: two-sided t-tests of every sampler vs ablation and coherent vs multi, Bonferroni over
        (conditions x pairs);
      survival: one-sided (greater) t-tests of every sampler vs ablation and vs knn, Benjamini-
        Hochberg; coherent vs multi two-sided, Bonferroni.
    """
    if frame.empty or frame["run"].nunique() < 2:
        return pd.DataFrame()
    frames = []
    names = [s for s in sampler_names]
    pair_cm = [("coherent", "multi")] if {"coherent", "multi"} <= set(names) else []
    for task, metric in MAIN_METRIC.items():
        sub = frame[(frame.task == task) & (frame.metric == metric)]
        sub = sub[~sub.condition.isin(["full data", "Cancer label only"])]
        if sub.empty:
            continue
        kinds = set(sub.test_type)
        if task == "stage":
            families = [([(s, "ablation") for s in names] + pair_cm, "bonferroni", "two-sided")]
        else:
            greater = [(s, "ablation") for s in names] + ([(s, "knn") for s in names] if "knn" in kinds else [])
            families = [(greater, "bh", "greater"), (pair_cm, "bonferroni", "two-sided")]
        for pairs, corr, alt in families:
            pairs = [p for p in pairs if p[0] in kinds and p[1] in kinds]
            if not pairs:
                continue
            res = stats.compare_methods(sub, "value", "test_type", pairs, corr, subject_col="run", by="condition",
                                        alternative=alt, alpha=alpha)
            res.insert(0, "alternative", alt)
            res.insert(0, "correction", corr)
            res.insert(0, "metric", metric)
            res.insert(0, "task", task)
            frames.append(res)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
