"""Predictive-signal preservation (the paper's Fig 2; docs/reference.md 5.4).

Per modality, a random forest is trained on the real train rows that have the modality, for two
tasks (tumour type and stage), and tested on the real test modality and on the synthetic one
generated from the other three real modalities. Repeated R times, the forest re-seeded with the
replicate index and replicate r of each generation used as its synthetic test set (so "real" varies
too, as in the reference). Scores: macro F1 and balanced accuracy (sklearn's definitions, computed
from counts: :func:`fast_f1`, :func:`fast_balanced_accuracy`).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cgjax.scoring import stats

TASKS = ("cancer_type", "stage")


def _labels(y) -> tuple[np.ndarray, np.ndarray]:
    """(usable bool[N], labels as str[N]) of a label column (NaN / None / '' = missing)."""
    s = pd.Series(y)
    ok = s.notna().to_numpy() & (s.astype(str).str.len() > 0).to_numpy()
    lab = s.map(lambda v: str(int(v)) if isinstance(v, (float, np.floating)) and float(v).is_integer() else str(v))
    return ok, lab.to_numpy().astype(str)


def fast_f1(y_true, y_pred, average: str = "weighted") -> float:
    """sklearn's ``f1_score(average=..., zero_division=0)`` for "weighted" and "macro", via counts
    (the acquisition curves call it thousands of times). Labels: the union of both arrays."""
    labels, inv = np.unique(np.concatenate([np.asarray(y_true), np.asarray(y_pred)]), return_inverse=True)
    n, k = len(y_true), len(labels)
    t, p = inv[:n], inv[n:]
    tp = np.bincount(t[t == p], minlength=k).astype(np.float64)
    support = np.bincount(t, minlength=k).astype(np.float64)
    predicted = np.bincount(p, minlength=k).astype(np.float64)
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros(k), where=denom > 0)
    if average == "macro":
        return float(f1.mean())
    if average == "weighted":
        return float((f1 * support).sum() / support.sum()) if support.sum() > 0 else 0.0
    raise ValueError(f"average must be 'weighted' or 'macro', got {average!r}")


def fast_balanced_accuracy(y_true, y_pred) -> float:
    """sklearn's ``balanced_accuracy_score``: the mean recall over the classes of y_true."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels, t = np.unique(y_true, return_inverse=True)
    hits = np.bincount(t[y_true == y_pred], minlength=len(labels))
    return float((hits / np.bincount(t, minlength=len(labels))).mean())


def predictive_signal(generated: Mapping[str, Mapping[str, np.ndarray]], train: Mapping[str, np.ndarray],
                      test: Mapping[str, np.ndarray], labels_train: Mapping[str, np.ndarray],
                      labels_test: Mapping[str, np.ndarray], *, tasks: Sequence[str] = TASKS,
                      n_estimators: int = 500, replicates: int | None = None, seed: int = 0,
                      n_jobs: int = -1, progress: bool = False) -> pd.DataFrame:
    """Scores of single-modality classifiers on real vs generated test data.

    generated: target -> method -> f[R, N, F] samples of the test rows (each from the other real
      modalities); train: modality -> f[N_train, F] standardised (NaN rows for absent); test:
      modality -> f[N, F]; labels_*: task -> labels per row (NaN for missing).
    n_estimators: trees per forest (paper 500, reference 100). replicates: how many of the R
      replicates to use (default all). Forest of replicate r uses random_state = seed + r.
    Returns a long DataFrame: modality, task, data ("real" or a method), replicate, macro_f1,
    balanced_accuracy, n_classes_train.
    """
    from sklearn.ensemble import RandomForestClassifier
    rows = []
    jobs = [(m, task) for m in generated for task in tasks if task in labels_train and task in labels_test]
    for m, task in tqdm(jobs, desc="predictive signal", disable=not progress, leave=False):
        ok_tr, y_tr = _labels(labels_train[task])
        ok_tr &= ~np.isnan(train[m]).all(axis=1)
        ok_te, y_te = _labels(labels_test[task])
        if ok_tr.sum() < 2 or ok_te.sum() < 1 or len(set(y_tr[ok_tr])) < 2:
            continue
        R = min(len(v) for v in generated[m].values())
        R = R if replicates is None else min(R, replicates)
        for r in range(R):
            rf = RandomForestClassifier(n_estimators=n_estimators, random_state=seed + r, n_jobs=n_jobs)
            rf.fit(train[m][ok_tr], y_tr[ok_tr])
            sets = {"real": test[m][ok_te], **{meth: x[r][ok_te] for meth, x in generated[m].items()}}
            for data, X in sets.items():
                pred = rf.predict(X)
                rows.append({"modality": m, "task": task, "data": data, "replicate": r,
                             "macro_f1": fast_f1(y_te[ok_te], pred, "macro"),
                             "balanced_accuracy": fast_balanced_accuracy(y_te[ok_te], pred),
                             "n_classes_train": int(len(rf.classes_))})
    return pd.DataFrame(rows)


def predictive_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and std (ddof 0, as the reference) over replicates per modality, task and data."""
    if df.empty:
        return df
    g = df.groupby(["task", "modality", "data"], sort=False)[["macro_f1", "balanced_accuracy"]]
    out = g.mean().add_suffix("_mean").join(g.std(ddof=0).add_suffix("_std")).reset_index()
    return out


def predictive_tests(df: pd.DataFrame, *, alpha: float = 0.05) -> pd.DataFrame:
    """docs/reference.md 5.9 post-hoc tests: within each modality, paired (by replicate) two-sided t-tests
    real vs each method and coherent vs multi; Bonferroni over the pairs of each modality, per task
    and metric."""
    if df.empty:
        return pd.DataFrame()
    methods = [d for d in df["data"].unique() if d != "real"]
    pairs = [("real", m) for m in methods] + ([("coherent", "multi")] if {"coherent", "multi"} <= set(methods) else [])
    frames = []
    for task in df["task"].unique():
        for metric in ("macro_f1", "balanced_accuracy"):
            for mod in df["modality"].unique():
                sub = df[(df.task == task) & (df.modality == mod)]
                if sub["replicate"].nunique() < 2:
                    continue
                res = stats.compare_methods(sub, metric, "data", pairs, "bonferroni", subject_col="replicate", alpha=alpha)
                res.insert(0, "modality", mod)
                res.insert(0, "metric", metric)
                res.insert(0, "task", task)
                frames.append(res)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
