"""Cohorts assembled from files with different feature sets: structural gaps, filled cells and
degenerate rows.

When per-cancer tables are stacked (:func:`cgjax.data.xena.read_xena` outer-joins the features
of every cohort's file), a feature that one file does not have is NaN for *every* sample of that
cancer type. That is not a missing measurement but a feature that was never measured there: an
imputer fitted on the other cohorts (the CNA median, a KNN over other types' samples) would fill it
with other cohorts' values, and can turn a whole type into one constant profile. This module finds
such *structural gaps*, measures how much an imputer fills, and flags constant rows and types.

Shapes: ``modalities`` maps name -> samples x features DataFrame (only samples that have the
modality, possibly with NaN cells); ``types`` is a Series sample id -> cancer type.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

__all__ = ["structural_gaps", "drop_structural", "filled_fraction", "degenerate_warnings"]


def _types_of(df: pd.DataFrame, types: pd.Series | None) -> pd.Series:
    """Cancer type per row of ``df`` (``"all"`` without labels; missing labels ``"unknown"``)."""
    if types is None:
        return pd.Series("all", index=df.index)
    t = pd.Series(types).copy()
    t.index = t.index.map(str)
    return t.reindex(df.index.map(str)).fillna("unknown").astype(str).set_axis(df.index)


def structural_gaps(modalities: Mapping[str, pd.DataFrame], types: pd.Series | None, *,
                    min_rows: int = 5) -> dict[str, pd.DataFrame]:
    """Per modality, bool DataFrame types x features: True where the feature is NaN for every
    sample of that type that has the modality (a feature absent from that type's file). Only types
    with at least ``min_rows`` samples of the modality have a row (in a smaller type a feature may
    be missing in every sample by chance). Without labels (``types`` None) the only "type" is
    ``all``, and a gap is a feature no sample has."""
    out = {}
    for m, df in modalities.items():
        rows = df[~df.isna().all(axis=1)]
        t = _types_of(rows, types).to_numpy()
        g = rows.isna().groupby(t).all()
        n = pd.Series(t).value_counts()
        out[m] = g[n.reindex(g.index).to_numpy() >= min_rows]
    return out


def drop_structural(modalities: Mapping[str, pd.DataFrame], gaps: Mapping[str, pd.DataFrame], *,
                    source: str = "") -> tuple[dict[str, pd.DataFrame], dict[str, list]]:
    """Drop every feature that is a structural gap in some type; returns (tables, name -> dropped
    feature names). Raises :class:`cgjax.errors.CohortError` naming the modality when no feature
    is measured in every type's file (then ``structural="impute"`` is the only way to keep it)."""
    from cgjax.errors import CohortError

    out, dropped = {}, {}
    for m, df in modalities.items():
        g = gaps.get(m)
        bad = g.columns[g.any(axis=0).to_numpy()] if g is not None and len(g) else pd.Index([])
        if len(bad) == df.shape[1]:
            worst = g.sum(axis=1).idxmax()
            raise CohortError(f"{source}: modality '{m}': no feature is measured in every cancer type's table "
                              f"(e.g. type '{worst}' lacks {int(g.loc[worst].sum())} of {df.shape[1]}); use "
                              f"structural='impute' (--structural impute) to fill the gaps from other types")
        out[m], dropped[m] = df.drop(columns=bad), [str(c) for c in bad]
    return out, dropped


def filled_fraction(raw: pd.DataFrame, features: pd.DataFrame, gaps: pd.DataFrame | None = None,
                    types: pd.Series | None = None) -> dict:
    """How much of the final feature table the imputer filled.

    raw: the modality's raw table; features: the preprocessed table (the same samples, columns a
    subset of the raw ones after ``str``). Returns {"filled": fraction of the final cells that were
    NaN in the raw table, "structural": fraction of the final cells that were structural gaps}.
    """
    r = raw.rename(columns=str)
    r.index = r.index.map(str)
    idx = features.index.map(str)
    cols = [c for c in features.columns.map(str) if c in r.columns]
    if not cols or not len(idx):
        return {"filled": 0.0, "structural": 0.0}
    na = r.reindex(index=idx, columns=cols).isna().to_numpy()
    rec = {"filled": float(na.mean()), "structural": 0.0}
    if gaps is not None and len(gaps):
        g = gaps.rename(columns=str).reindex(columns=cols, fill_value=False)
        t = _types_of(pd.DataFrame(index=idx), types).to_numpy()
        struct = g.reindex(t, fill_value=False).to_numpy(bool)
        rec["structural"] = float((struct & na).mean())
    return rec


def degenerate_warnings(name: str, features: pd.DataFrame, types: pd.Series | None, *,
                        rel_tol: float = 1e-3) -> list[str]:
    """Messages for constant rows and near-constant cancer types of one preprocessed modality.

    Scale: s = median over features of the feature's std over all samples. A row is constant when
    its std across features is < rel_tol · s; a type (>= 2 samples) is near-constant when the mean
    over features of the within-type std is < rel_tol · s (its samples all share one profile, e.g.
    every value filled by an imputer). Empty list when nothing is degenerate.
    """
    x = features.to_numpy(np.float64)
    if x.shape[0] < 2 or x.shape[1] == 0:
        return []
    scale = float(np.median(x.std(axis=0)))
    if scale == 0:
        return [f"modality '{name}': the median feature is constant over all samples"]
    out = []
    const_rows = features.index[x.std(axis=1) < rel_tol * scale] if x.shape[1] > 1 else []
    if len(const_rows):
        out.append(f"modality '{name}': {len(const_rows)} sample(s) have a constant profile "
                   f"(e.g. '{const_rows[0]}')")
    t = _types_of(features, types)
    for c, rows in t.groupby(t.to_numpy()).groups.items():
        if len(rows) >= 2 and float(features.loc[rows].to_numpy(np.float64).std(axis=0).mean()) < rel_tol * scale:
            out.append(f"modality '{name}': cancer type '{c}': its {len(rows)} samples share one (near-)constant "
                       f"profile")
    return out
