"""The ensemble weighting rule, in one place: which member counts how much, per row.

For a target with M single-condition models (members) with validation scores mse_m (lower is
better), the base weights are (docs/reference.md 4.1, 6.1)

    inverse_mse (paper, default):        w_m = (1 / mse_m) / sum_j (1 / mse_j)
    softmax_inverse_mse (reference code): w_m = exp(1 / mse_m) / sum_j exp(1 / mse_j)
    uniform:                             w_m = 1 / M
    explicit numbers u_m >= 0:           w_m = u_m / sum_j u_j

and a row n that has only some of the members' conditions (``available`` bool[N, M]) uses them
masked and renormalised,

    w[n, m] = w_m a[n, m] / sum_j w_j a[n, j]      (all zero when the row has none).

A score-based weighting needs a finite, positive score for every member some row uses: a missing
(NaN) or infinite score would make every weight NaN or turn one member into the whole ensemble.
We refuse it with an error naming the model, rather than falling back to another rule silently;
a member that no row uses does not need a score (its weight is 0 whatever it is).

``--method single`` is the one-hot limit: per row, the available member with the best score
(:func:`best_available`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cgjax.errors import CgjaxError

WEIGHTINGS = ("inverse_mse", "softmax_inverse_mse", "uniform")


def _names(names, M: int) -> list[str]:
    return list(names) if names is not None else [f"member {m}" for m in range(M)]


def ensemble_weights(scores, weighting: str | Sequence[float] = "inverse_mse", available=None, *,
                     names: Sequence[str] | None = None) -> np.ndarray:
    """Ensemble weights by the rule of the module docstring.

    scores: f[M] validation MSEs (may be None for ``uniform`` or explicit numbers);
    weighting: a name of :data:`WEIGHTINGS` or M non-negative numbers with a positive sum;
    available: optional bool[N, M]; names: the members' model names, for error messages.
    Returns f64[M] (base weights, summing to 1) without ``available``, else f64[N, M] whose rows
    sum to 1 (0 for a row with no available member).
    """
    avail = None if available is None else np.asarray(available, bool)
    if scores is not None:
        scores = np.asarray(scores, np.float64)
    M = (len(scores) if scores is not None else avail.shape[1] if avail is not None
         else len(weighting))
    used = np.ones(M, bool) if avail is None else avail.any(axis=0)
    if isinstance(weighting, str):
        if weighting not in WEIGHTINGS:
            raise CgjaxError(f"--weighting: unknown weighting '{weighting}'; choose one of {WEIGHTINGS} "
                             "or give numbers")
        if weighting == "uniform":
            w = np.ones(M)
        else:
            if scores is None:
                raise CgjaxError(f"--weighting {weighting} needs the members' validation scores")
            bad = used & ~(np.isfinite(scores) & (scores > 0))
            if bad.any():
                m = int(np.flatnonzero(bad)[0])
                raise CgjaxError(f"--weighting {weighting}: model '{_names(names, M)[m]}' has no finite positive "
                                 f"validation score ({scores[m]}), so its weight is undefined; use "
                                 "--weighting uniform or give explicit weights")
            z = np.where(used, 1.0 / np.where(used, scores, 1.0), 0.0)
            w = z if weighting == "inverse_mse" else np.where(used, np.exp(z - z[used].max()), 0.0)
    else:
        w = np.asarray(weighting, np.float64)
        if w.shape != (M,) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise CgjaxError(f"weights must be {M} non-negative numbers with a positive sum, got {list(np.ravel(w))}")
    if avail is None:
        return w / w.sum()
    row = w[None, :] * avail
    s = row.sum(axis=1, keepdims=True)
    return row / np.where(s > 0, s, 1.0)


def best_available(scores, available, *, names: Sequence[str] | None = None) -> np.ndarray:
    """One-hot f32[N, M]: per row, the available member with the lowest finite score.

    A member without a finite score is never preferred to a scored one; a row whose only member is
    unscored uses it (there is nothing to choose); a row with several available members none of
    which has a finite score is refused (the choice would be arbitrary). Never picks a member the
    row does not have; a row with no member at all is all zero.
    """
    scores = np.asarray(scores, np.float64)
    avail = np.asarray(available, bool)
    scored = avail & np.isfinite(scores)[None, :]
    ambiguous = ~scored.any(axis=1) & (avail.sum(axis=1) > 1)
    if ambiguous.any():
        n = int(np.flatnonzero(ambiguous)[0])
        cand = [_names(names, len(scores))[m] for m in np.flatnonzero(avail[n])]
        raise CgjaxError(f"--method single: row {n} could use {cand}, but none has a finite validation score "
                         "to choose by; use --method coherent with --weighting uniform")
    # rank: scored members by score, then unscored available ones, never unavailable ones
    rank = np.where(scored, np.nan_to_num(scores, nan=0.0)[None, :], np.where(avail, np.inf, np.nan))
    pick = np.nanargmin(np.where(avail.any(axis=1, keepdims=True), rank, 0.0), axis=1)
    return (np.eye(len(scores), dtype=np.float32)[pick] * avail.any(axis=1, keepdims=True)).astype(np.float32)
