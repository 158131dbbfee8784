"""Paired significance tests and multiple-testing corrections (docs/reference.md 5.9).

The reference compares methods on the same repetitions (run r of every method shares the seed /
test rows), so every test here is *paired* by a subject column (the run or repetition index):
two-sided ``scipy.stats.ttest_rel`` post-hoc tests with Bonferroni correction for the classifier,
imputation, counterfactual and R² comparisons, and one-sided tests with Benjamini-Hochberg FDR for
the survival gains. The repeated-measures ANOVA that precedes them in the reference (statsmodels
``AnovaRM``) is :func:`anova_rm`.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd
from scipy.stats import f as f_dist
from scipy.stats import ttest_rel

__all__ = ["PairedTest", "paired_ttest", "bonferroni", "benjamini_hochberg", "compare_methods", "anova_rm", "anova_rm_by"]


class PairedTest(NamedTuple):
    statistic: float  # t statistic of mean(a - b)
    pvalue: float
    n: int  # number of pairs
    mean_diff: float  # mean(a - b)


def paired_ttest(a, b, alternative: str = "two-sided") -> PairedTest:
    """Paired t-test of a against b, ``scipy.stats.ttest_rel`` (docs/reference.md 5.9).

    Args:
      a, b: f[n] paired observations (a[i] and b[i] from the same run).
      alternative: "two-sided", "greater" (mean(a − b) > 0, e.g. imputed > ablation) or "less".
    Returns:
      PairedTest(statistic, pvalue, n, mean_diff). All-equal differences give NaN statistic and p.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a and b must be 1-D of equal length, got {a.shape} and {b.shape}")
    if len(a) < 2:
        raise ValueError("a paired t-test needs at least 2 pairs")
    with np.errstate(divide="ignore", invalid="ignore"):
        res = ttest_rel(a, b, alternative=alternative)
    return PairedTest(float(res.statistic), float(res.pvalue), len(a), float((a - b).mean()))


def _pvals(pvals) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pvals, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"pvals must be 1-D, got shape {p.shape}")
    finite = np.isfinite(p)
    if ((p[finite] < 0) | (p[finite] > 1)).any():
        raise ValueError("p-values must lie in [0, 1]")
    return p, finite


def bonferroni(pvals) -> np.ndarray:
    """Bonferroni-adjusted p-values min(m·p, 1); m = number of non-NaN p-values (NaN stays NaN).

    Comparing the adjusted p to α is the reference's "α / m" threshold (docs/reference.md 5.9).
    """
    p, finite = _pvals(pvals)
    out = np.full_like(p, np.nan)
    out[finite] = np.minimum(p[finite] * finite.sum(), 1.0)
    return out


def benjamini_hochberg(pvals) -> np.ndarray:
    """Benjamini-Hochberg FDR-adjusted p-values (statsmodels ``multipletests(method="fdr_bh")``).

    q_(i) = min_{j >= i} min(m·p_(j) / j, 1) over the ascending order p_(1) <= ... <= p_(m);
    m = number of non-NaN p-values, NaN stays NaN.

    Args:
      pvals: f[m].
    Returns:
      f[m], in the input order.
    """
    p, finite = _pvals(pvals)
    out = np.full_like(p, np.nan)
    q = p[finite]
    m = len(q)
    if m == 0:
        return out
    order = np.argsort(q, kind="stable")
    scaled = q[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    q_out = np.empty(m)
    q_out[order] = adjusted
    out[finite] = q_out
    return out


_CORRECTIONS = {
    "bonferroni": bonferroni,
    "bh": benjamini_hochberg,
    "fdr_bh": benjamini_hochberg,
}


def compare_methods(
    df: pd.DataFrame,
    value_col: str,
    method_col: str,
    pairs: Sequence[tuple[str, str]],
    correction: str | None = "bonferroni",
    *,
    subject_col: str = "run",
    by: Sequence[str] | str | None = None,
    alternative: str = "two-sided",
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Paired t-tests between methods, with one multiple-testing correction over all of them.

    Rows of ``df`` are observations in long format: one value per (``by`` group, method, subject).
    For each group and each pair (a, b) in ``pairs``, the values of a and b are matched on
    ``subject_col`` (subjects present for only one method are dropped) and compared with
    :func:`paired_ttest`. The correction is applied across *every* test in the output, so the
    family is n_groups × n_pairs, as in docs/reference.md 5.9 (e.g. Bonferroni α = 0.05 / (n_conditions × 3)).

    Args:
      df: long table with columns value_col, method_col, subject_col and the ``by`` columns.
      value_col: the score (F1, C-index, R², ...); method_col: the method label column.
      pairs: (method_a, method_b) pairs; the statistic is for mean(a − b).
      correction: "bonferroni", "bh" / "fdr_bh" (Benjamini-Hochberg) or None.
      subject_col: pairing key (the run / repetition); by: grouping column(s), e.g. the test
        condition, or None for one group.
      alternative: as in :func:`paired_ttest`; alpha: level for the ``reject`` column.
    Returns:
      DataFrame with one row per (group, pair): the ``by`` columns, method_a, method_b, n,
      mean_a, mean_b, mean_diff, statistic, p, p_corrected, reject (p_corrected < alpha).
    """
    by = [by] if isinstance(by, str) else list(by or [])
    missing = [c for c in [value_col, method_col, subject_col, *by] if c not in df.columns]
    if missing:
        raise ValueError(f"df lacks columns {missing}")
    if correction is not None and correction not in _CORRECTIONS:
        raise ValueError(f"correction must be one of {sorted(_CORRECTIONS)} or None, got {correction!r}")
    keys = [*by, subject_col, method_col]
    if df.duplicated(keys).any():
        raise ValueError(f"several rows share the same {keys}; aggregate them first")

    wide = df.pivot_table(index=[*by, subject_col], columns=method_col, values=value_col, aggfunc="first")
    groups = wide.groupby(level=by if len(by) > 1 else by[0], sort=True) if by else [((), wide)]
    rows = []
    for key, block in groups:
        key = key if isinstance(key, tuple) else (key,)
        for a, b in pairs:
            for m in (a, b):
                if m not in block.columns:
                    raise ValueError(f"method {m!r} not found in column {method_col!r}")
            both = block[[a, b]].dropna()
            res = paired_ttest(both[a].to_numpy(), both[b].to_numpy(), alternative=alternative)
            rows.append(
                {
                    **dict(zip(by, key)),
                    "method_a": a,
                    "method_b": b,
                    "n": res.n,
                    "mean_a": float(both[a].mean()),
                    "mean_b": float(both[b].mean()),
                    "mean_diff": res.mean_diff,
                    "statistic": res.statistic,
                    "p": res.pvalue,
                }
            )
    out = pd.DataFrame(rows)
    p = out["p"].to_numpy()
    out["p_corrected"] = p if correction is None else _CORRECTIONS[correction](p)
    out["reject"] = out["p_corrected"] < alpha
    return out


def anova_rm(df: pd.DataFrame, value: str, subject: str, within: Sequence[str]) -> pd.DataFrame:
    """Repeated-measures ANOVA of a balanced design (statsmodels ``AnovaRM``, docs/reference.md 5.9).

    Every subject (run, replicate) has exactly one ``value`` in every cell of the ``within``
    factors. For each effect E (each non-empty subset of the factors: main effects, interactions)
    the sum of squares is that of E's inclusion-exclusion contrast of the cell means, and its error
    term is the E x subject interaction: F = (SS_E / df_E) / (SS_ExS / (df_E (n - 1))), with
    df_E the product of (levels - 1) over E.

    Returns a DataFrame indexed by effect (``"A"``, ``"B"``, ``"A:B"``) with columns ``F Value``,
    ``Num DF``, ``Den DF``, ``Pr > F`` (statsmodels' names).
    """
    within = list(within)
    if not within:
        raise ValueError("anova_rm needs at least one within-subject factor")
    missing = [c for c in [value, subject, *within] if c not in df.columns]
    if missing:
        raise ValueError(f"anova_rm: no column {missing[0]!r}")
    counts = df.groupby([subject, *within], observed=True).size()
    levels = [pd.Index(sorted(df[c].unique())) for c in [subject, *within]]
    if (counts != 1).any() or len(counts) != np.prod([len(lv) for lv in levels]):
        raise ValueError("anova_rm needs a balanced design: exactly one value per subject and cell")
    if not np.isfinite(df[value].to_numpy(np.float64)).all():
        raise ValueError(f"anova_rm: column {value!r} has non-finite values")
    # Y[subject, level_1, ..., level_k]
    y = np.empty([len(lv) for lv in levels])
    idx = tuple(lv.get_indexer(df[c]) for lv, c in zip(levels, [subject, *within]))
    y[idx] = df[value].to_numpy(np.float64)
    n = y.shape[0]

    def contrast(axes: tuple) -> np.ndarray:
        """Inclusion-exclusion contrast over the given axes, broadcast to y's shape."""
        out = np.zeros_like(y)
        for r in range(len(axes) + 1):
            for keep in itertools.combinations(axes, r):
                other = tuple(a for a in range(y.ndim) if a not in keep)
                out = out + (-1) ** (len(axes) - r) * y.mean(axis=other, keepdims=True)
        return out

    rows = {}
    factors = list(range(1, y.ndim))
    for r in range(1, len(factors) + 1):
        for effect in itertools.combinations(factors, r):
            ss = float(np.sum(contrast(effect) ** 2))
            ss_err = float(np.sum(contrast((0, *effect)) ** 2))
            df_num = int(np.prod([y.shape[a] - 1 for a in effect]))
            df_den = df_num * (n - 1)
            with np.errstate(divide="ignore", invalid="ignore"):
                F = (ss / df_num) / (ss_err / df_den) if df_den > 0 else np.nan
            rows[":".join(within[a - 1] for a in effect)] = {
                "F Value": F, "Num DF": float(df_num), "Den DF": float(df_den),
                "Pr > F": float(f_dist.sf(F, df_num, df_den)) if np.isfinite(F) else np.nan}
    return pd.DataFrame.from_dict(rows, orient="index")


def anova_rm_by(df: pd.DataFrame, value: str, subject: str, within: Sequence[str],
                by: Sequence[str]) -> pd.DataFrame:
    """:func:`anova_rm` for every group of the ``by`` columns (e.g. per task and metric), one row per
    group and effect, the group's labels first. A group whose design is not complete (a cell
    missing for some subject) or has fewer than 2 subjects is left out."""
    frames = []
    for key, sub in df.groupby(list(by), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        if sub[subject].nunique() < 2:
            continue
        try:
            res = anova_rm(sub, value, subject, within)
        except ValueError as e:
            if "balanced" not in str(e):
                raise
            continue
        res = res.rename_axis("effect").reset_index()
        for col, k in reversed(list(zip(by, key))):
            res.insert(0, col, k)
        frames.append(res)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
