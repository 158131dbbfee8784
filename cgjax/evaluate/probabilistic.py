"""Probabilistic baselines: classical imputers that *draw* the missing target modality.

A point predictor (:mod:`cgjax.evaluate.baselines`: KNN mean, iterative regression, train mean)
returns one value per row, so its "energy score" is only its mean distance to the truth
(ES(δ_x̂, y) = ‖x̂ − y‖), and its 90% interval is empty: neither is comparable with the energy score
or coverage of a sampler. The three baselines here draw R replicates per row, like the diffusion
samplers, so they enter the calibration tables on the same footing:

* :func:`gaussian_conditional_sample`: ridge regression of the target on the given
  modalities (penalty by leave-one-out error) plus a Gaussian residual with the full residual covariance (optionally one fit per
  cancer type): the exact conditional when the data are jointly Gaussian.
* :func:`joint_gaussian_sample`: one multivariate normal of the target and the given modalities,
  fitted by EM on every row that has the target (incomplete ones too), drawn from its conditional
  (the classical normal-model imputer; the Gaussian anchor's joint fit).
* :func:`mixture_conditional_sample`: a mixture of such regressions whose weights depend on the
  given modalities (:func:`cgjax.diffusion.anchor.ridge_mixture`: subtypes found by a Gaussian
  mixture on the given modalities, the number of them by cross-validated energy score; one when a
  single Gaussian serves). The law of the ``mixture`` anchor, as a sampler of its own.
* :func:`mice_sample`: chained equations with posterior draws, scikit-learn
  ``IterativeImputer(sample_posterior=True)``, R independent imputations (random states
  ``seed + r``).
* :func:`knn_sample`: the target of one of the k nearest training rows, drawn uniformly or with
  weights 1/distance (an actual training profile, never an average).

Data layout as in :mod:`cgjax.evaluate.baselines`: ``train`` maps modality -> f[N_train, D_m] with
NaN rows where a sample lacks the modality; ``test`` maps every name of ``given`` to f[N_test,
D_m] (NaN rows allowed: each row is conditioned on the modalities it has). Every function returns
f32[R, N_test, D_target]. Everything is fitted on the training rows only, and one test row's draws
never depend on the other test rows.
"""

from __future__ import annotations

import warnings
from typing import Mapping, Sequence

import numpy as np

from cgjax.diffusion import joint
from cgjax.diffusion.anchor import mixture_sample, ridge_gaussian, ridge_mixture

__all__ = ["PROBABILISTIC_METHODS", "gaussian_conditional_sample", "joint_gaussian_sample", "mixture_conditional_sample",
           "mice_sample", "knn_sample", "fit_gaussian_conditional"]

# BaselineSampler kinds that draw (the others are point predictors); see cgjax.evaluate.reconstruction.
PROBABILISTIC_METHODS = ("gaussian_sample", "gaussian_type_sample", "joint_gaussian_sample", "mixture_sample",
                         "mice_sample", "knn_sample")


def _present(x: np.ndarray) -> np.ndarray:
    return ~np.isnan(x).all(axis=1)


def _check(train, test, given: Sequence[str], target: str, n_rows: int | None) -> tuple[list[str], int]:
    """Validate names and shapes; returns (given as a list, N_test). With no given modality the
    number of rows to draw is ``n_rows``."""
    given = list(given)
    if target in given:
        raise ValueError(f"target {target!r} is also listed in given")
    for name in given + [target]:
        if name not in train:
            raise ValueError(f"modality {name!r} is missing from train (has {sorted(train)})")
    for name in given:
        if name not in test:
            raise ValueError(f"given modality {name!r} is missing from test (has {sorted(test)})")
        if np.shape(test[name])[1:] != np.shape(train[name])[1:]:
            raise ValueError(f"test[{name!r}] has shape {np.shape(test[name])}, train {np.shape(train[name])}")
    n = {len(test[m]) for m in given}
    if n_rows is not None:
        n.add(int(n_rows))
    if len(n) != 1:
        raise ValueError(f"test modalities have different row counts {sorted(n)}" if n else
                         "no given modality: say how many rows to draw (n_rows)")
    return given, n.pop()


def _psd_root(cov: np.ndarray) -> np.ndarray:
    """L with L L^T = cov for a symmetric positive *semi*-definite cov (eigenvalues clipped at 0),
    so a residual covariance estimated from fewer rows than dimensions still gives draws."""
    w, v = np.linalg.eigh((cov + cov.T) / 2)
    return v * np.sqrt(np.clip(w, 0.0, None))


def _by_given_set(train, test, given: list[str], target: str, n: int):
    """Test rows grouped by the set of given modalities they have: for each set, (the rows i[k], the
    training rows that have the set and the target bool[N_train], their given block f[n, P] and
    target f[n, D], the test rows' given block f[k, P], the given block of every training row that
    has the set, with or without the target f[n', P]). A row with no given modality has P = 0."""
    avail = np.stack([_present(np.asarray(test[m], np.float64)) for m in given], 1) if given else np.zeros((n, 0), bool)
    for pattern in np.unique(avail, axis=0):
        rows = np.flatnonzero((avail == pattern).all(axis=1))
        names = [m for m, on in zip(given, pattern) if on]
        has = np.all([_present(np.asarray(train[m], np.float64)) for m in names], axis=0) if names else \
            np.ones(len(train[target]), bool)
        keep = has & _present(np.asarray(train[target], np.float64))

        def block(src, idx):
            return np.concatenate([np.asarray(src[m], np.float64)[idx] for m in names], 1) if names \
                else np.zeros((len(idx), 0))

        yield rows, keep, block(train, np.flatnonzero(keep)), np.asarray(train[target], np.float64)[keep], \
            block(test, rows), block(train, np.flatnonzero(has))


# ---- Gaussian conditional model -------------------------------------------------------------------

def fit_gaussian_conditional(x: np.ndarray, y: np.ndarray) -> dict:
    """Fit y = a + x B + e, e ~ N(0, Σ) by ridge regression (:func:`cgjax.diffusion.anchor.ridge_gaussian`:
    per-feature penalty by leave-one-out error, Σ from the residuals with each variance raised to its
    leave-one-out error), so that the draws keep their spread when the complete rows are few
    against the given features (n <= P, where least-squares residuals vanish).

    x f[n, P] (P may be 0: then the model is N(mean y, cov y)), y f[n, D], complete rows, n >= 2.
    The regression coefficients are plugged in (their estimation error enters only through the
    leave-one-out variances).
    Returns {"x_mean" f[P] (zeros), "y_mean" f[D] (the intercept a), "coef" f[P, D], "cov" f[D, D],
    "root" f[D, D], "n"}.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n, p = x.shape
    if n < 2:
        raise ValueError(f"the Gaussian conditional model needs at least 2 complete training rows, got {n}")
    coef, intercept, cov = ridge_gaussian(x, y)
    return {"x_mean": np.zeros(p), "y_mean": intercept, "coef": coef, "cov": cov, "root": _psd_root(cov), "n": n}


def _gaussian_draw(model: dict, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Draws f[R, n, D] from N(a + x B, Σ) with standard normal z f[R, n, D]."""
    mean = model["y_mean"] + (x - model["x_mean"]) @ model["coef"]
    return mean[None] + z @ model["root"].T


def gaussian_conditional_sample(
    train: Mapping[str, np.ndarray],
    test: Mapping[str, np.ndarray],
    given: Sequence[str],
    target: str,
    *,
    replicates: int = 10,
    seed: int = 0,
    train_types: np.ndarray | None = None,
    test_types: np.ndarray | None = None,
    min_rows: int | None = None,
    n_rows: int | None = None,
) -> np.ndarray:
    """R draws of ``target`` from a Gaussian conditional model fitted on the training rows.

    Test rows are grouped by the set of given modalities they have; for each set, the model of
    :func:`fit_gaussian_conditional` is fitted on the training rows that have that set and the
    target (complete cases), and row n draws x̂ = a + x_n B + L z, z ~ N(0, I), L L^T = Σ. A row
    with no given modality (or every row when ``given`` is empty; ``n_rows`` rows) draws from
    N(mean, cov) of the target.

    With ``train_types`` / ``test_types`` (str[N_train] / str[N_test], e.g. cancer types) one model
    per type is fitted for the types with at least ``min_rows`` complete training rows (default
    2 (P + D + 1)), the pooled model elsewhere. Note that the type is then information the
    diffusion samplers are not given.

    Returns f32[replicates, N_test, D_target].
    """
    given, n = _check(train, test, given, target, n_rows)
    if (train_types is None) != (test_types is None):
        raise ValueError("give both train_types and test_types, or neither")
    d = np.shape(train[target])[1]
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((replicates, n, d))
    out = np.empty((replicates, n, d))
    for rows, keep, x_tr, y_tr, x_te, _ in _by_given_set(train, test, given, target, n):
        pooled = fit_gaussian_conditional(x_tr, y_tr)
        if train_types is None:
            out[:, rows] = _gaussian_draw(pooled, x_te, z[:, rows])
            continue
        tr_t = np.asarray(train_types).astype(str)[keep]
        te_t = np.asarray(test_types).astype(str)
        if len(te_t) != n:
            raise ValueError(f"test_types has {len(te_t)} entries for {n} test rows")
        need = 2 * (x_tr.shape[1] + d + 1) if min_rows is None else min_rows
        for c in np.unique(te_t[rows]):
            sel = te_t[rows] == c
            model = fit_gaussian_conditional(x_tr[tr_t == c], y_tr[tr_t == c]) \
                if (tr_t == c).sum() >= need else pooled
            out[:, rows[sel]] = _gaussian_draw(model, x_te[sel], z[:, rows[sel]])
    return out.astype(np.float32)


def mixture_conditional_sample(
    train: Mapping[str, np.ndarray],
    test: Mapping[str, np.ndarray],
    given: Sequence[str],
    target: str,
    *,
    replicates: int = 10,
    seed: int = 0,
    n_rows: int | None = None,
) -> np.ndarray:
    """R draws of ``target`` from a mixture of Gaussian regressions fitted on the training rows
    (:func:`cgjax.diffusion.anchor.ridge_mixture`), one per set of given modalities as in
    :func:`gaussian_conditional_sample`: the regressions on the rows that have the set and the
    target, the weights (a Gaussian mixture on the given modalities) on every training row that has
    the set. Returns f32[replicates, N_test, D_target]."""
    given, n = _check(train, test, given, target, n_rows)
    rng = np.random.default_rng(seed)
    out = np.empty((replicates, n, np.shape(train[target])[1]))
    for rows, keep, x_tr, y_tr, x_te, x_gate in _by_given_set(train, test, given, target, n):
        if len(y_tr) < 2:
            raise ValueError(f"the mixture model of {target!r} needs at least 2 complete training rows, got {len(y_tr)}")
        out[:, rows] = mixture_sample(ridge_mixture(x_tr, y_tr, x_gate=x_gate), x_te, replicates, rng)
    return out.astype(np.float32)


def joint_gaussian_sample(
    train: Mapping[str, np.ndarray],
    test: Mapping[str, np.ndarray],
    given: Sequence[str],
    target: str,
    *,
    replicates: int = 10,
    seed: int = 0,
    n_rows: int | None = None,
) -> np.ndarray:
    """R draws of ``target`` from one multivariate normal of the target and the given modalities,
    fitted by EM on every training row that has the target, whichever given modalities it lacks
    (:func:`cgjax.diffusion.joint.fit`: correlations shrunk by held-out likelihood); each test row
    draws from its conditional given the modalities it has. The classical normal-model imputer
    (as in Amelia or R's ``norm``), and the joint fit of the Gaussian anchor.
    Returns f32[replicates, N_test, D_target]."""
    given, n = _check(train, test, given, target, n_rows)
    y = np.asarray(train[target], np.float64)
    keep = _present(y)
    if keep.sum() < 2:
        raise ValueError(f"the joint Gaussian of {target!r} needs at least 2 training rows with it, got {keep.sum()}")
    x = [np.asarray(train[m], np.float64)[keep] for m in given]
    for name, block in zip([target, *given], [y[keep], *x]):
        partial = _present(block) & np.isnan(block).any(axis=1)
        if partial.any():
            raise ValueError(f"train[{name!r}] has {int(partial.sum())} row(s) with some but not all values NaN: "
                             "a modality is missing whole or present whole")
    observed = np.concatenate([np.repeat(_present(b)[:, None], b.shape[1], axis=1) for b in x], axis=1) if x \
        else np.zeros((keep.sum(), 0), bool)
    law = joint.fit(y[keep], np.concatenate(x, axis=1) if x else np.zeros((keep.sum(), 0)), observed)
    widths = [np.shape(train[m])[1] for m in given]
    d = y.shape[1]
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((replicates, n, d))
    out = np.empty((replicates, n, d))
    avail = np.stack([_present(np.asarray(test[m], np.float64)) for m in given], 1) if given else np.zeros((n, 0), bool)
    for pattern in np.unique(avail, axis=0):
        rows = np.flatnonzero((avail == pattern).all(axis=1))
        cols = np.repeat(pattern, widths).astype(bool)
        coef, bias, cov = joint.conditional(law.mu, law.cov, d, cols)
        x_te = np.concatenate([np.asarray(test[m], np.float64)[rows] for m, on in zip(given, pattern) if on], 1) \
            if pattern.any() else np.zeros((len(rows), 0))
        out[:, rows] = _gaussian_draw({"x_mean": 0.0, "y_mean": bias, "coef": coef, "root": _psd_root(cov)},
                                      x_te, z[:, rows])
    return out.astype(np.float32)


# ---- chained equations with posterior draws ------------------------------------------------------

def mice_sample(
    train: Mapping[str, np.ndarray],
    test: Mapping[str, np.ndarray],
    given: Sequence[str],
    target: str,
    *,
    replicates: int = 10,
    seed: int = 0,
    max_iter: int = 10,
    n_rows: int | None = None,
) -> np.ndarray:
    """R multiple imputations of ``target`` by ``IterativeImputer(sample_posterior=True)``.

    The imputer runs on ``[given_1 | ... | given_k | target]``; test rows have the target block
    NaN, and each target column is drawn, round after round (``max_iter`` Gibbs-like sweeps from
    the training mean), from the BayesianRidge posterior predictive given every other column.
    With NaN in the training matrix, imputation r is a separate imputer with ``random_state =
    seed + r``. Without (the complete-case rows the evaluation uses by default) fitting draws
    nothing, so all R imputations share one fit (one round, only the regressions the test rows
    need: :func:`_fit_complete`) and are drawn in one ``transform`` of the test rows tiled R times
    with ``random_state = seed`` (rows are imputed independently, so the R copies of a row are R
    independent imputations): exactly sklearn's numbers for that tiled matrix (tested), in a
    fraction of the time. With ``given`` empty (``n_rows`` rows) the chain runs over the
    target's columns alone.

    Caveat (as for :func:`cgjax.evaluate.baselines.iterative_impute`): when target columns are
    nearly collinear given the others, the sweeps mix slowly and ``max_iter`` rounds may not reach
    the conditional; compare its ``r2_of_mean`` with the iterative point imputer's.

    Returns f32[replicates, N_test, D_target].
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer

    given, n = _check(train, test, given, target, n_rows)
    blocks = [np.asarray(train[m], np.float64) for m in given + [target]]
    x_train = np.concatenate(blocks, axis=1)
    x_train = x_train[~np.isnan(x_train).all(axis=1)]
    d = blocks[-1].shape[1]
    if np.isnan(x_train[:, -d:]).all(axis=0).any():
        raise ValueError(f"no training row has target {target!r} (some columns are all NaN)")
    x_test = np.concatenate([np.asarray(test[m], np.float64) for m in given] + [np.full((n, d), np.nan)], axis=1)
    out = np.empty((replicates, n, d))
    with warnings.catch_warnings():
        # "[IterativeImputer] Early stopping criterion not reached": expected, draws never converge.
        warnings.simplefilter("ignore", ConvergenceWarning)
        if np.isnan(x_train).any():
            for r in range(replicates):
                imp = IterativeImputer(sample_posterior=True, max_iter=max_iter, random_state=seed + r,
                                       keep_empty_features=True).fit(x_train)
                out[r] = imp.transform(x_test)[:, -d:]
        else:
            imp = _fit_complete(x_train, x_test, d, max_iter, seed)
            out[:] = imp.transform(np.tile(x_test, (replicates, 1)))[:, -d:].reshape(replicates, n, d)
    return out.astype(np.float32)


def _fit_complete(x_train: np.ndarray, x_test: np.ndarray, d: int, max_iter: int, seed: int):
    """``IterativeImputer(sample_posterior=True, max_iter)`` fitted on a NaN-free ``x_train``,
    cheaply. Every round refits the same regressions on the same data, so one round repeated
    ``max_iter`` times is the ``max_iter``-round imputer. When the test rows lack only the last
    ``d`` (target) columns, only those columns' regressions are ever used: a sentinel row (column
    means, target NaN) with ``skip_complete=True`` makes sklearn fit just those; the sentinel never
    trains a regression (its target columns are missing). Equal to plain fits (tested)."""
    from sklearn.impute import IterativeImputer

    target_only = not np.isnan(x_test[:, :-d]).any()
    if target_only:
        sentinel = np.concatenate([x_train[:, :-d].mean(axis=0), np.full(d, np.nan)])[None]
        x_train = np.concatenate([x_train, sentinel])
    imp = IterativeImputer(sample_posterior=True, max_iter=1, random_state=seed, keep_empty_features=True,
                           skip_complete=target_only).fit(x_train)
    imp.imputation_sequence_ = imp.imputation_sequence_ * max_iter
    imp.n_iter_ = max_iter
    imp.random_state_ = np.random.RandomState(seed)  # as after a plain fit: the sentinel's draws undone
    return imp


# ---- KNN that samples a neighbour -----------------------------------------------------------------

def knn_sample(
    train: Mapping[str, np.ndarray],
    test: Mapping[str, np.ndarray],
    given: Sequence[str],
    target: str,
    *,
    replicates: int = 10,
    seed: int = 0,
    k: int = 5,
    weights: str = "uniform",
    chunk: int = 1024,
    n_rows: int | None = None,
) -> np.ndarray:
    """R draws of ``target``, each the target of one of the k nearest training rows.

    Donors: training rows with the whole target and at least one given modality. Distance: the
    NaN-aware Euclidean distance on the given columns (``nan_euclidean_distances``, as
    ``KNNImputer``). Row n's draw picks one of its k nearest donors, uniformly (``weights=
    "uniform"``; the mean over draws is then KNNImputer's imputation in expectation) or with
    probability proportional to 1/distance (``"distance"``; a donor at distance 0 takes all the
    weight). A test row with no given modality (every row when ``given`` is empty; ``n_rows`` rows)
    draws from all training targets uniformly.

    Returns f32[replicates, N_test, D_target]: every draw is a training row's target, exactly.
    """
    from sklearn.metrics.pairwise import nan_euclidean_distances

    if weights not in ("uniform", "distance"):
        raise ValueError(f"weights must be 'uniform' or 'distance', got {weights!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    given, n = _check(train, test, given, target, n_rows)
    rng = np.random.default_rng(seed)
    if not given:
        y = np.asarray(train[target], np.float64)
        y = y[~np.isnan(y).any(axis=1)]
        return y[rng.integers(0, len(y), (replicates, n))].astype(np.float32)
    g_train = np.concatenate([np.asarray(train[m], np.float64) for m in given], axis=1)
    y_train = np.asarray(train[target], np.float64)
    donors = ~np.isnan(y_train).any(axis=1) & ~np.isnan(g_train).all(axis=1)
    if not donors.any():
        raise ValueError(f"no training row has target {target!r} and a given modality")
    g_train, y_train = g_train[donors], y_train[donors]
    g_test = np.concatenate([np.asarray(test[m], np.float64) for m in given], axis=1)
    kk = min(k, len(y_train))
    u = rng.random((replicates, n))
    pick = np.empty((replicates, n), np.int64)
    for s in range(0, n, chunk):
        dist = nan_euclidean_distances(g_test[s:s + chunk], g_train)
        dist = np.where(np.isnan(dist), np.inf, dist)
        nbr = np.argpartition(dist, kk - 1, axis=1)[:, :kk] if kk < len(y_train) else np.tile(
            np.arange(kk), (len(dist), 1))
        dn = np.take_along_axis(dist, nbr, axis=1)
        if weights == "uniform":
            w = np.ones_like(dn)
        else:
            zero = dn == 0
            w = np.where(zero.any(axis=1, keepdims=True), zero.astype(float), 1.0 / np.where(zero, 1.0, dn))
        blind = np.isinf(dn).all(axis=1)  # no given modality in common with any donor
        w = np.where(np.isinf(dn) & ~blind[:, None], 0.0, w)
        cdf = np.cumsum(w / w.sum(axis=1, keepdims=True), axis=1)
        j = np.minimum((cdf[None] < u[:, s:s + chunk, None]).sum(axis=2), kk - 1)  # [R, chunk]
        pick[:, s:s + chunk] = np.take_along_axis(nbr[None].repeat(replicates, 0), j[..., None], axis=2)[..., 0]
        if blind.any():
            pick[:, s:s + chunk][:, blind] = rng.integers(0, len(y_train), size=(replicates, int(blind.sum())))
    return y_train[pick].astype(np.float32)
