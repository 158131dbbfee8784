"""A Gaussian anchor for a denoiser: the network learns only what a linear-Gaussian model misses.

With ``ArchConfig.anchor = "gaussian"`` each model's prediction is

    out(x_t, t, c) = network(x_t, t, c) + anchor(x_t, t, c)

where ``anchor`` is the *exact* denoiser (eps, v or x_0, as the parametrisation says) of a
linear-Gaussian conditional law x_0 | c ~ N(mu(c), S), fitted by ridge regression on the model's
training rows before training and then frozen. The anchor alone samples from the fitted Gaussian
conditional (``tests/test_anchor.py``), and training fits the network to the residual: a
type-specific or non-linear structure the Gaussian cannot express. On a small cohort this is a
strong prior where estimation error, not capacity, limits the network (docs/calibration.md).

For x_t = a x_0 + s eps (a = sqrt(abar_t), s = sqrt(1 - abar_t)) and x_0 ~ N(mu, S), S = U diag(l) U^T,
the posterior expectations are

    E[eps | x_t] = s (a^2 S + s^2 I)^-1 (x_t - a mu) = U diag(s / (a^2 l + s^2)) U^T (x_t - a mu)
    E[x_0 | x_t] = (x_t - s E[eps | x_t]) / a,   E[v | x_t] = a E[eps] - s E[x_0]
                 (= mu + U diag(a l / (a^2 l + s^2)) U^T (x_t - a mu), finite as a -> 0).

Which conditions a row has is its *pattern*, p = sum_k mask_k 2^k over the K condition slots; each
pattern has its own regression (mean mu_p(c) = b_p + c A_p on the present slots) and residual
covariance: the conditional of one joint Gaussian of the target and every condition, fitted by EM
on all the model's rows (:mod:`cgjax.diffusion.joint`), or a ridge regression on the rows that
have every condition of p where that predicts held-out rows better (:func:`fit`). A single-condition
model has 2 patterns (conditioned, and masked when it was trained with ``single_cond_dropout``); a
multi-condition model 2^K. Arrays of one model (``params["anchor"]``, stacked along M like the rest):

    coef f32[P, K * C, F]   A_p on the flattened, slot-padded conditions (rows of absent slots 0)
    bias f32[P, F]          b_p
    basis f32[P, F, F]      U_p (columns: eigenvectors of the residual covariance)
    eig f32[P, F]           l_p >= 0

The anchor is not trained (its gradient is stopped and the optimiser, weight decay and EMA leave it
as fitted). Its cost per row and step is 2 P F^2 multiply-adds, beside the network's.

**The mixture anchor** (``ArchConfig.anchor = "mixture"``) gives each pattern a mixture of up to
:data:`MAX_COMPONENTS` such laws whose weights depend on the conditions,
x_0 | c ~ sum_j w_j(c) N(mu_pj(c), S_pj) (:func:`ridge_mixture`: a cohort of subtypes, e.g. cancer
types, whose targets follow the conditions differently, which one Gaussian mixes into a law too
wide). Its exact denoiser is each component's, weighted by the component's posterior given x_t:
w_j(c) N(x_t; a mu_j, a^2 S_j + s^2 I), normalised (:func:`predict`). The arrays gain a component
axis J (``coef f32[P, J, K * C, F]``, ``bias``, ``basis``, ``eig`` likewise) and the gate's
(``gate_shift f32[P, D]``, ``gate_proj f32[P, K * C, D]``, ``gate_mean f32[P, J, D]``,
``gate_prec f32[P, J, D, D]``, ``gate_logw f32[P, J]``, D = :data:`GATE_DIMS`; an unused component
has log weight :data:`EMPTY`); the cost per row and step is J times the Gaussian anchor's. J is
sized by the fit: the most components any pattern of the model's group kept
(``DenoiserConfig.anchor_components``, recorded in the checkpoint), so a cohort where every pattern
keeps one costs what the Gaussian anchor does. A pattern keeps one component, the Gaussian anchor's
law, unless a mixture lowers its cross-validated energy score by :data:`SUBTYPE_MIN_GAIN` or more
(:func:`_subtype_law`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cgjax.diffusion import joint
from cgjax.scoring.metrics import energy_score

ANCHORS = ("none", "gaussian", "mixture", "auto")  # "auto": train both, keep the better per model (cgjax.pipeline.train)
FITTED = ("gaussian", "mixture")  # the anchors a network carries (an "auto" set ends up "gaussian")
MAX_SLOTS = 6  # 2^K patterns are evaluated at every step: K <= 6 (64 patterns)
# the Gaussian anchor's laws are the conditionals of one joint Gaussian fitted on every row
# (cgjax.diffusion.joint) when the target and the conditions are at most this many columns; wider,
# one ridge regression per pattern on its complete rows (an EM iteration costs O(d^3) per pattern)
JOINT_MAX_DIMS = 256
SCALE_ROWS = 10  # a pattern's joint conditional is rescaled to its held-out errors from this many rows
# ridge penalties tried per target feature (by leave-one-out error) in the anchor's regressions
ALPHAS = np.logspace(-3, 4, 15)
# the leave-one-out errors take n F len(ALPHAS) float64s: a pattern with more rows than this budget
# allows is fitted on a fixed random subset of them (e.g. 41,000 rows for F = 40, 13,000 for F = 128)
LOO_BYTES = 200_000_000
# the mixture anchor: at most this many components per pattern, their gate on at most GATE_DIMS
# principal components of the standardised conditions
MAX_COMPONENTS = 8
GATE_DIMS = 16
EMPTY = -1e9  # log weight of an unused component slot (its weight is exactly 0 in float32)
MIN_ROWS = 1  # a component's own regression needs MIN_ROWS F + 10 rows (else: the regression on all rows)
COMPONENTS = (1, 2, 3, 4, 6, 8)  # the numbers of components ridge_mixture tries (up to MAX_COMPONENTS)
FOLDS = 3  # cross-validation folds that choose a pattern's number of components (then refitted on all rows)
SELECT_ROWS = 2000  # at most this many rows (a fixed random subset) for that choice
# the mixture anchor keeps a pattern's Gaussian law unless SCREEN_COMPONENTS components lower its
# cross-validated energy score by at least SUBTYPE_MIN_GAIN (the issue-11 energy tolerance): a
# smaller gain does not pay for J times the anchor's cost at every step (docs/calibration.md)
SCREEN_COMPONENTS = 4
SUBTYPE_MIN_GAIN = 0.05
GATE_ROWS = 5000  # at most this many rows for each gate's Gaussian mixture


def n_patterns(n_conds: int) -> int:
    return 2 ** n_conds


def zeros(cfg) -> dict:
    """An unfitted anchor of the shapes of ``cfg`` (a :class:`cgjax.diffusion.denoiser.DenoiserConfig`):
    all zero (it then predicts 0 in every parametrisation; fit it with :func:`fit`)."""
    P, KC, F = n_patterns(cfg.n_conds), cfg.n_conds * max(cfg.cond_dims), cfg.x_dim
    if cfg.anchor != "mixture":
        return {"coef": jnp.zeros((P, KC, F), jnp.float32), "bias": jnp.zeros((P, F), jnp.float32),
                "basis": jnp.zeros((P, F, F), jnp.float32), "eig": jnp.zeros((P, F), jnp.float32)}
    J, D = cfg.anchor_components, GATE_DIMS
    z = lambda *shape: jnp.zeros(shape, jnp.float32)
    return {"coef": z(P, J, KC, F), "bias": z(P, J, F), "basis": z(P, J, F, F), "eig": z(P, J, F),
            "gate_shift": z(P, D), "gate_proj": z(P, KC, D), "gate_mean": z(P, J, D),
            "gate_prec": z(P, J, D, D), "gate_logw": z(P, J).at[:, 1:].set(EMPTY)}


def fit(x0: np.ndarray, conds: np.ndarray, present: np.ndarray, valid: np.ndarray, true_cond_dims,
        kind: str = "gaussian") -> dict:
    """Fit one model's anchor on its training arrays (one member of :class:`cgjax.diffusion.train.GroupData`).

    x0 f[N, F]; conds f[N, K, C] (slot-padded); present bool[N, K]; valid bool[N]; true_cond_dims:
    the real width of each slot; kind: ``"gaussian"`` or ``"mixture"``.

    The Gaussian anchor, target and conditions at most :data:`JOINT_MAX_DIMS` columns: every
    pattern's law from one joint Gaussian fitted on all valid rows, or its own ridge regression
    where that predicts held-out rows better (:func:`_joint_laws`). Otherwise, per pattern: the rows
    are the valid ones with every condition of p present; its law is :func:`ridge_gaussian` of the
    target on those conditions (on a small cohort an unpenalised fit of many conditions is mostly
    noise). The mixture anchor starts from those laws and replaces a pattern's by a
    :func:`ridge_mixture` on the same rows where subtypes lower its held-out energy score by
    :data:`SUBTYPE_MIN_GAIN` or more (:func:`_subtype_law`). A pattern with fewer than
    2 F + 10 rows (so that the covariance is estimable) falls back to its largest sub-pattern that
    has enough (ultimately the target's own mean and covariance). A pattern with more rows than
    :data:`LOO_BYTES` allows is fitted on a fixed random subset of them. Returns numpy arrays as
    :func:`zeros`, a mixture's component axis as wide as its patterns need (the most components any
    of them kept).
    """
    return _pack(_fit_laws(x0, conds, present, valid, true_cond_dims, kind), kind)


def _fit_laws(x0, conds, present, valid, true_cond_dims, kind) -> dict[int, "Mixture"]:
    """:func:`fit`'s law of each pattern, before packing: the Gaussian anchor's (from the joint fit
    where target and conditions are narrow enough, else a ridge regression per pattern), and for
    the mixture anchor, on patterns where subtypes pay (:func:`_subtype_law`), a mixture instead."""
    if kind not in FITTED:
        raise ValueError(f"anchor kind must be one of {FITTED}, got {kind!r}")
    x0, conds = np.asarray(x0, np.float64), np.asarray(conds, np.float64)
    present, valid = np.asarray(present, bool), np.asarray(valid, bool)
    N, K, C = conds.shape
    F = x0.shape[1]
    need = 2 * F + 10
    joint_laws = _joint_laws(x0, conds, present, valid, true_cond_dims) \
        if F + sum(true_cond_dims) <= JOINT_MAX_DIMS else None
    fitted: dict[int, Mixture] = {}  # coefficients and gate on the flattened, slot-padded conditions
    for p in range(n_patterns(K)):  # increasing p: every sub-pattern of p (a subset of its bits) is fitted before p
        slots = [k for k in range(K) if p >> k & 1]
        cols = np.concatenate([k * C + np.arange(true_cond_dims[k]) for k in slots]).astype(int) if slots \
            else np.zeros(0, int)
        rows = valid & (present[:, slots].all(axis=1) if slots else True)
        if p and rows.sum() < need:
            subs = [q for q in fitted if q & p == q and q != p]
            fitted[p] = joint_laws[p] if joint_laws else fitted[max(subs, key=lambda q: bin(q).count("1"))]
        elif p:
            idx = _capped(np.flatnonzero(rows), need, F, p)
            flat = conds.reshape(N, K * C)[:, cols]
            fitted[p] = joint_laws[p] if joint_laws else _widen(_one(*ridge_gaussian(flat[idx], x0[idx])), cols, K * C)
            if kind == "mixture":  # its gate also learns from rows that have the conditions but not the target
                law = _subtype_law(flat[idx], x0[idx], flat[present[:, slots].all(axis=1)], seed=p)
                if law is not None:
                    fitted[p] = _widen(law, cols, K * C)  # the present slots' real columns; the rest stay 0
        elif joint_laws:
            fitted[p] = joint_laws[p]
        else:
            y = x0[valid]
            cov = np.cov(y, rowvar=False).reshape(F, F) if len(y) > 1 else np.eye(F)
            fitted[p] = _one(np.zeros((K * C, F)), y.mean(axis=0) if len(y) else np.zeros(F), cov)
    return fitted


def _subtype_law(x, y, x_gate, seed: int) -> "Mixture | None":
    """The mixture anchor's law of one pattern (rows x f[n, P] -> y f[n, F], gate rows x_gate), or
    None to keep the Gaussian anchor's. A screen first: :func:`mixture_cv` of one component against
    :data:`SCREEN_COMPONENTS`; unless the mixture lowers the held-out energy score by at least
    :data:`SUBTYPE_MIN_GAIN`, the pattern keeps the Gaussian law (and costs what it does). Past the
    screen, :func:`ridge_mixture` chooses the number of components (None if it keeps one)."""
    scored = mixture_cv(x, y, x_gate=x_gate, candidates=(1, min(SCREEN_COMPONENTS, MAX_COMPONENTS)), seed=seed)
    if scored is None:
        return None
    mean = scored[1].mean(axis=1)
    if mean[1] > (1 - SUBTYPE_MIN_GAIN) * mean[0]:
        return None
    law = ridge_mixture(x, y, x_gate=x_gate, seed=seed)
    return None if law.gate is None else law


def _joint_laws(x0, conds, present, valid, true_cond_dims) -> dict[int, "Mixture"]:
    """:func:`fit`'s Gaussian laws with one joint Gaussian of the target and the conditions fitted on
    every valid row (:func:`cgjax.diffusion.joint.fit`). A pattern with fewer than 2 F + 10 rows
    takes its conditional; one with more takes whichever of that conditional and the ridge
    regression on its own rows (:func:`ridge_gaussian`) gives its rows the higher log-likelihood
    when held out (the joint fit's folds). Neither wins everywhere: the joint fit uses rows that miss
    conditions, the regression is unbiased by the shrinkage and gains most where the target is
    nearly a function of the conditions. A slot present on fewer than 2 F + 10 valid rows is left
    out: its patterns take the law of the same pattern without it."""
    N, K, C = conds.shape
    F = x0.shape[1]
    need = 2 * F + 10
    usable = [k for k in range(K) if (valid & present[:, k]).sum() >= need]
    slot_of = np.concatenate([np.full(true_cond_dims[k], k) for k in usable]).astype(int) if usable \
        else np.zeros(0, int)  # the joint's condition columns: which slot each is
    flat = conds.reshape(N, K * C)
    col_of = np.concatenate([k * C + np.arange(true_cond_dims[k]) for k in usable]).astype(int) if usable \
        else np.zeros(0, int)  # ... and which column of the flattened conditions
    law = joint.fit(x0[valid], flat[valid][:, col_of], present[valid][:, slot_of])
    fold = np.full(N, -1)
    fold[valid] = law.folds
    fitted: dict[int, Mixture] = {}
    for p in range(n_patterns(K)):
        if any(p >> k & 1 for k in range(K) if k not in usable):
            fitted[p] = fitted[p & sum(1 << k for k in usable)]  # a smaller pattern: fitted before
            continue
        given = np.array([bool(p >> k & 1) for k in slot_of], bool)
        cols = col_of[given]
        rows = valid & present[:, [k for k in usable if p >> k & 1]].all(axis=1)
        A, b, cov = joint.conditional(law.mu, law.cov, F, given)
        if not p:  # the target's own law
            fitted[p] = _widen(_one(A, b, cov), cols, K * C)
            continue
        # the pattern's law under each fold's fit without that fold's rows (None: too few rows)
        fold_laws = [None if f is None else joint.conditional(*f, F, given) for f in law.fold_fits]
        scale = _heldout_scale(fold_laws, cols, rows, fold, x0, flat)
        conditional = (A, b, scale * cov)
        if rows.sum() >= need and not _joint_predicts_better(fold_laws, cols, rows, fold, x0, flat, scale):
            idx = _capped(np.flatnonzero(rows), need, F, p)
            conditional = ridge_gaussian(flat[idx][:, cols], x0[idx])
        fitted[p] = _widen(_one(*conditional), cols, K * C)
    return fitted


def _heldout_scale(fold_laws, cols, rows, fold, x0, flat) -> float:
    """The factor (at most 1) that matches the joint conditional's spread to its errors on a
    pattern's ``rows`` held out: their summed squared residuals under the fold fits without them
    (``fold_laws``: the pattern's (A, b, cov) under each) over the summed variances those fits
    predict (1 with fewer than :data:`SCALE_ROWS` rows). The shrinkage that regularises the joint
    fit also moves explained variance into the residual (a regression shrunk towards 0), so on a
    high-signal cohort its conditional is wider than its errors. Only that is corrected: a fold fit,
    on 2/3 of the rows, errs more than the fit on all of them, so a factor above 1 would widen a
    conditional that is not too narrow."""
    if rows.sum() < SCALE_ROWS:
        return 1.0
    squared = predicted = 0.0
    for k, fold_law in enumerate(fold_laws):
        held = rows & (fold == k)
        if fold_law is None or not held.any():
            continue
        A, b, cov = fold_law
        squared += ((x0[held] - b - flat[held][:, cols] @ A) ** 2).sum()
        predicted += held.sum() * np.trace(cov)
    return min(squared / predicted, 1.0) if predicted > 0 else 1.0


def _joint_predicts_better(fold_laws, cols, rows, fold, x0, flat, scale: float = 1.0) -> bool:
    """Whether the joint fit's conditional (its covariance times ``scale``) predicts a pattern's
    ``rows`` better than a ridge regression on them: summed log-likelihood of each fold's rows under
    the fits without them (``fold_laws``: the pattern's (A, b, cov) under each joint fold fit)."""
    joint_ll = ridge_ll = 0.0
    for k, fold_law in enumerate(fold_laws):
        held, train = rows & (fold == k), rows & (fold >= 0) & (fold != k)
        if fold_law is None or train.sum() < 2 or not held.any():
            return True
        x, y = flat[held][:, cols], x0[held]
        A, b, cov = fold_law
        joint_ll += joint.loglik_rows((A, b, scale * cov), y, x).sum()
        ridge_ll += joint.loglik_rows(ridge_gaussian(flat[train][:, cols], x0[train]), y, x).sum()
    return joint_ll >= ridge_ll


def _capped(idx: np.ndarray, need: int, F: int, seed: int) -> np.ndarray:
    """At most the rows :data:`LOO_BYTES` allows a ridge fit of F targets: a fixed random subset."""
    cap = max(need, int(LOO_BYTES // (F * len(ALPHAS) * 8)))
    if len(idx) > cap:  # bounded memory on a large cohort; the same subset every time
        idx = np.sort(np.random.default_rng(seed).choice(idx, cap, replace=False))
    return idx


def _one(coef, bias, cov) -> "Mixture":
    return Mixture([coef], [bias], [cov], None)


def _widen(law: "Mixture", cols: np.ndarray, width: int) -> "Mixture":
    """``law`` fitted on the columns ``cols`` of the conditions, as a law on all ``width`` of them."""
    def wide(a):
        out = np.zeros((width,) + a.shape[1:])
        out[cols] = a
        return out
    gate = None if law.gate is None else law.gate._replace(proj=wide(law.gate.proj))
    return Mixture([wide(a) for a in law.coef], law.bias, law.cov, gate)


def _width(fitted: dict[int, "Mixture"]) -> int:
    """The component axis that the per-pattern laws need: the most components of any pattern."""
    return max(len(law.coef) for law in fitted.values())


def _pack(fitted: dict, kind: str, J: int | None = None) -> dict:
    """The per-pattern laws as the arrays of :func:`zeros` (float32); a mixture's component axis J
    (default :func:`_width`; wider is padded with unused components)."""
    P = len(fitted)
    KC, F = fitted[0].coef[0].shape
    J, D = ((_width(fitted) if J is None else J), GATE_DIMS) if kind == "mixture" else (1, 0)
    out = {"coef": np.zeros((P, J, KC, F)), "bias": np.zeros((P, J, F)), "basis": np.zeros((P, J, F, F)),
           "eig": np.zeros((P, J, F))}
    if kind == "mixture":
        out.update(gate_shift=np.zeros((P, D)), gate_proj=np.zeros((P, KC, D)), gate_mean=np.zeros((P, J, D)),
                   gate_prec=np.zeros((P, J, D, D)), gate_logw=np.full((P, J), EMPTY))
    for p, law in fitted.items():
        n = len(law.coef)
        for j in range(J):  # unused slots repeat component 0 (finite everywhere) with weight 0
            i = j if j < n else 0
            out["coef"][p, j], out["bias"][p, j] = law.coef[i], law.bias[i]
            w, v = np.linalg.eigh((law.cov[i] + law.cov[i].T) / 2)
            out["basis"][p, j], out["eig"][p, j] = v, np.clip(w, 0.0, None)
        if kind != "mixture":
            continue
        if law.gate is None:
            out["gate_logw"][p, 0] = 0.0
        else:
            g = law.gate
            d = g.proj.shape[1]
            out["gate_shift"][p, :d], out["gate_proj"][p, :, :d] = g.shift, g.proj
            out["gate_mean"][p, :n, :d], out["gate_prec"][p, :n, :d, :d] = g.means, g.prec
            out["gate_logw"][p, :n] = g.logw
    if kind != "mixture":  # the Gaussian anchor's arrays have no component axis
        out = {k: v[:, 0] for k, v in out.items()}
    return {k: v.astype(np.float32) for k, v in out.items()}


def ridge_gaussian(x: np.ndarray, y: np.ndarray):
    """A Gaussian conditional y | x ~ N(b + x A, S) by ridge regression: (A f[P, F], b f[F], S f[F, F]).

    x f[n, P], y f[n, F] (n >= 2). Each target feature's penalty is chosen among :data:`ALPHAS` by
    leave-one-out error (:class:`sklearn.linear_model.RidgeCV`); S is the covariance of the in-sample
    residuals with each feature's variance raised to its leave-one-out error, since the in-sample
    residuals of a fitted regression are too small (to zero when P >= n). P = 0 gives y's mean and
    covariance. Also the ``gaussian_sample`` baseline (:mod:`cgjax.evaluate.probabilistic`).
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n, F = y.shape
    if n < 2:
        raise ValueError(f"a Gaussian conditional needs at least 2 rows, got {n}")
    if x.shape[1] == 0:
        return np.zeros((0, F)), y.mean(axis=0), np.cov(y, rowvar=False).reshape(F, F)
    from sklearn.linear_model import RidgeCV

    model = RidgeCV(alphas=ALPHAS, alpha_per_target=True, store_cv_results=True).fit(x, y)
    # cv_results_: squared leave-one-out errors f[n, F, len(ALPHAS)] (f[n, len(ALPHAS)] when F = 1);
    # each feature's at its chosen alpha
    chosen = np.searchsorted(ALPHAS, np.atleast_1d(model.alpha_))
    loo = model.cv_results_.reshape(n, F, len(ALPHAS))[:, np.arange(F), chosen].mean(axis=0)
    resid = y - model.predict(x).reshape(n, F)
    cov = resid.T @ resid / max(n - 1, 1)
    scale = np.sqrt(loo / np.maximum(np.diag(cov), 1e-12))
    coef = np.asarray(model.coef_).reshape(F, -1).T
    return coef, np.asarray(model.intercept_).reshape(-1), cov * scale[:, None] * scale[None]


class Gate(NamedTuple):
    """Which component of a :class:`Mixture` a row belongs to, given its conditions x f[n, P]: the
    weights are softmax_j(logw_j - |(z - means_j) prec_j|^2 / 2) with z = x proj - shift, a Gaussian
    mixture over z (prec_j: the Cholesky factor of component j's precision, as scikit-learn's
    ``precisions_cholesky_``; logw_j: log weight plus log det prec_j)."""
    shift: np.ndarray  # f[D]
    proj: np.ndarray  # f[P, D]
    means: np.ndarray  # f[J, D]
    prec: np.ndarray  # f[J, D, D]
    logw: np.ndarray  # f[J]


class Mixture(NamedTuple):
    """A conditional law y | x ~ sum_j w_j(x) N(bias_j + x coef_j, cov_j) (:func:`ridge_mixture`);
    one component (gate None, weight 1) is :func:`ridge_gaussian`'s law."""
    coef: list  # J x f[P, F]
    bias: list  # J x f[F]
    cov: list  # J x f[F, F]
    gate: Gate | None


def ridge_mixture(x: np.ndarray, y: np.ndarray, *, x_gate: np.ndarray | None = None,
                  max_components: int | None = None, seed: int = 0) -> Mixture:
    """A mixture of :func:`ridge_gaussian` regressions whose weights depend on x: the law of a cohort
    made of subtypes whose targets follow the conditions differently (e.g. cancer types).

    The gate is a Gaussian mixture on the first :data:`GATE_DIMS` principal components of the
    standardised x, fitted on ``x_gate`` (rows with the conditions, with or without the target;
    default x; at most :data:`GATE_ROWS` of them); each component's regression is fitted on the rows
    the gate assigns it (a component with fewer than F + 10 of them uses the regression on all
    rows). The number of components, among :data:`COMPONENTS` up to ``max_components`` (default
    :data:`MAX_COMPONENTS`), is chosen by :data:`FOLDS`-fold cross-validation on at most
    :data:`SELECT_ROWS` rows, by energy score of 10 draws per held-out row: the fewest whose score is
    within one standard error (of the paired difference) of the best, so that a law a single
    Gaussian serves keeps one. Then the regressions are refitted on every row. Row subsets are fixed
    for a ``seed``, so the fit is deterministic.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    scored = mixture_cv(x, y, x_gate=x_gate, max_components=max_components, seed=seed)
    if scored is None:
        return _one(*ridge_gaussian(x, y))
    candidates, scores, gates = scored
    return _fit_mixture(x, y, gates[candidates[choose_components(scores)]])


def mixture_cv(x, y, *, x_gate=None, max_components: int | None = None, candidates=None, seed: int = 0):
    """:func:`ridge_mixture`'s cross-validation: (the numbers of components tried, each held-out
    row's energy score f64[len(candidates), rows] under each, their gates {j: gate}), or None where
    there are too few rows (or conditions) to choose (then one component). ``candidates``: the
    numbers of components to try, 1 first (default: :data:`COMPONENTS` up to ``max_components``)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    x_gate = x if x_gate is None else np.asarray(x_gate, np.float64)
    rng = np.random.default_rng(seed)
    if len(x_gate) > GATE_ROWS:
        x_gate = x_gate[np.sort(rng.choice(len(x_gate), GATE_ROWS, replace=False))]
    n, F = y.shape
    top = MAX_COMPONENTS if max_components is None else max_components
    need = MIN_ROWS * F + 10  # a component's regression needs this many rows
    sel = np.sort(rng.choice(n, SELECT_ROWS, replace=False)) if n > SELECT_ROWS else np.arange(n)
    fold = rng.permutation(len(sel)) % FOLDS
    candidates = [j for j in COMPONENTS if j <= top] if candidates is None else list(candidates)
    if not x.shape[1] or len(sel) * (FOLDS - 1) // FOLDS < 2 * need or len(candidates) < 2:
        return None
    projection = _gate_projection(x_gate)  # the same for every number of components: computed once
    gates = {j: _fit_gate(x_gate, j, seed, projection) if j > 1 else None for j in candidates}  # on x alone
    scores = np.zeros((len(candidates), len(sel)))  # each row's energy score when held out, per candidate
    for k in range(FOLDS):
        fit_rows, held = sel[fold != k], fold == k
        glob = ridge_gaussian(x[fit_rows], y[fit_rows])  # one pooled regression per fold, for every candidate
        for i, j in enumerate(candidates):
            law = _fit_mixture(x[fit_rows], y[fit_rows], gates[j], glob)
            scores[i, held] = energy_score(mixture_sample(law, x[sel[held]], 10, np.random.default_rng(seed)),
                                           y[sel[held]])
    return candidates, scores, gates


def choose_components(scores: np.ndarray) -> int:
    """Which row of :func:`mixture_cv`'s scores f[candidates, rows] to keep: the first (fewest
    components) whose mean is within one standard error (of the paired difference) of the best."""
    best = scores.mean(axis=1).argmin()
    diff = scores - scores[best]
    se = diff.std(axis=1, ddof=1) / np.sqrt(scores.shape[1])
    return int(np.flatnonzero(diff.mean(axis=1) <= se)[0])


def _gate_projection(x_gate):
    """(the rows' mean f[P], the map f[P, D] onto the leading principal components of the
    standardised rows, D <= :data:`GATE_DIMS`)."""
    center, scale = x_gate.mean(axis=0), x_gate.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    d = min(GATE_DIMS, x_gate.shape[1], len(x_gate) - 1)
    return center, np.linalg.svd((x_gate - center) / scale, full_matrices=False)[2][:d].T / scale[:, None]


def _fit_gate(x_gate, n_components: int, seed: int, projection=None):
    """(the :class:`Gate` of ``n_components`` on rows x_gate, its fitted GaussianMixture);
    ``projection``: :func:`_gate_projection` of x_gate when the caller already has it."""
    from sklearn.mixture import GaussianMixture

    center, proj = _gate_projection(x_gate) if projection is None else projection
    gm = GaussianMixture(n_components, covariance_type="full", reg_covar=1e-2, n_init=2,
                         random_state=seed).fit((x_gate - center) @ proj)
    logw = np.log(gm.weights_) + np.log(np.diagonal(gm.precisions_cholesky_, axis1=1, axis2=2)).sum(axis=1)
    return Gate(center @ proj, proj, gm.means_, gm.precisions_cholesky_, logw), gm


def _fit_mixture(x, y, gate, glob=None) -> Mixture:
    """The regressions of a :func:`ridge_mixture` given its gate (None: one component); ``glob``:
    :func:`ridge_gaussian` of all of x, y when the caller already has it."""
    glob = ridge_gaussian(x, y) if glob is None else glob
    if gate is None:
        return _one(*glob)
    gate, gm = gate
    label = gm.predict(x @ gate.proj - gate.shift)
    laws = [ridge_gaussian(x[label == j], y[label == j]) if (label == j).sum() >= MIN_ROWS * y.shape[1] + 10
            else glob for j in range(gm.n_components)]
    return Mixture(*(list(part) for part in zip(*laws)), gate)


def mixture_weights(law: Mixture, x: np.ndarray) -> np.ndarray:
    """Each row's component weights f[n, J] under ``law`` given its conditions x f[n, P]."""
    x = np.asarray(x, np.float64)
    if law.gate is None:
        return np.ones((len(x), 1))
    g = law.gate
    dev = np.einsum("njd,jde->nje", (x @ g.proj - g.shift)[:, None] - g.means[None], g.prec)
    logits = g.logw[None] - 0.5 * (dev ** 2).sum(axis=-1)
    logits -= logits.max(axis=1, keepdims=True)
    w = np.exp(logits)
    return w / w.sum(axis=1, keepdims=True)


def mixture_sample(law: Mixture, x: np.ndarray, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """Draws f[replicates, n, F] from ``law`` given conditions x f[n, P]."""
    x = np.asarray(x, np.float64)
    w = mixture_weights(law, x)
    u = rng.random((replicates, len(x), 1))
    comp = np.minimum((u > np.cumsum(w, axis=1)[None]).sum(axis=-1), len(law.coef) - 1)  # [R, n]
    noise = rng.standard_normal((replicates, len(x), law.bias[0].shape[0]))
    out = np.zeros_like(noise)
    for j, (a, b, cov) in enumerate(zip(law.coef, law.bias, law.cov)):
        chol = np.linalg.cholesky(cov + 1e-9 * np.trace(cov) / len(cov) * np.eye(len(cov)))
        out = np.where((comp == j)[..., None], (b + x @ a)[None] + noise @ chol.T, out)
    return out


def components(anchor: dict) -> np.ndarray:
    """How many components each pattern of a fitted anchor uses: int[..., P] (1 everywhere for the
    Gaussian anchor; a stacked model set's anchor gives int[M, P])."""
    if "gate_logw" not in anchor:
        return np.ones(np.shape(anchor["bias"])[:-1], int)
    return (np.asarray(anchor["gate_logw"]) > EMPTY / 2).sum(axis=-1)


def fit_group(data, true_cond_dims, kind: str = "gaussian") -> dict:
    """Anchors of every member of a group's training arrays (:class:`cgjax.diffusion.train.GroupData`),
    stacked along M; a mixture's component axis is the most components any member's pattern kept
    (``components(anchor).max()``), so that a cohort a single Gaussian serves costs what the
    Gaussian anchor does."""
    laws = [_fit_laws(*(np.asarray(a[m]) for a in data), true_cond_dims[m], kind) for m in range(data.x0.shape[0])]
    J = max(_width(f) for f in laws)
    members = [_pack(f, kind, J) for f in laws]
    return {k: jnp.asarray(np.stack([a[k] for a in members])) for k in members[0]}


def prepare(anchor: dict, conds, masks) -> dict:
    """What a row's anchor needs along a whole trajectory: each component's mean and covariance
    eigenvalues for its pattern f32[B, J, F], the log weights of its components f32[B, J] (J = 1 for
    the Gaussian anchor), its pattern as a one-hot f32[B, P], and every pattern's eigenbases. One
    model: conds f32[B, K, C'] (C' >= the anchor's slot width; wider columns are padding),
    masks f32[B, K]."""
    if "gate_logw" not in anchor:  # the Gaussian anchor: a mixture of one component
        anchor = {k: v[:, None] for k, v in anchor.items()}
    P, J, KC, F = anchor["coef"].shape
    B, K = masks.shape
    c = conds[:, :, : KC // K].reshape(B, KC)
    pattern = jnp.sum(jnp.round(masks).astype(jnp.int32) * (2 ** jnp.arange(K, dtype=jnp.int32))[None], axis=1)
    onehot = jax.nn.one_hot(pattern, P, dtype=jnp.float32)  # [B, P]
    means = jnp.einsum("bk,pjkf->bpjf", c, anchor["coef"]) + anchor["bias"][None]  # [B, P, J, F]
    if "gate_logw" in anchor:
        z = jnp.einsum("bk,pkd->bpd", c, anchor["gate_proj"]) - anchor["gate_shift"][None]  # [B, P, D]
        dev = jnp.einsum("bpjd,pjde->bpje", z[:, :, None] - anchor["gate_mean"][None], anchor["gate_prec"])
        logits = anchor["gate_logw"][None] - 0.5 * jnp.sum(dev ** 2, axis=-1)  # [B, P, J]
        logw = jax.nn.log_softmax(jnp.einsum("bp,bpj->bj", onehot, logits), axis=-1)
    else:
        logw = jnp.zeros((B, 1), jnp.float32)
    return {"mean": jnp.einsum("bp,bpjf->bjf", onehot, means), "logw": logw, "onehot": onehot,
            "basis": anchor["basis"], "eig": jnp.einsum("bp,pjf->bjf", onehot, anchor["eig"])}


def output(anchor: dict, conds, masks, x_t, abar, parametrisation: str):
    """:func:`prepare` then :func:`predict`, for one call (the training loss, diagnostics); the
    sampler prepares once per trajectory instead (:func:`cgjax.sampling.algebra.anchored`)."""
    return predict(prepare(anchor, conds, masks), x_t, abar, parametrisation)


def predict(prepared: dict, x_t, abar, parametrisation: str):
    """The anchor's output at x_t f32[B, F] and noise level abar (a scalar or f32[B, 1]), in the
    parametrisation's units (eps, v or x_0): the exact denoiser of the row's law (module docstring).
    For a mixture it is each component's, weighted by the component's posterior probability given
    x_t: w_j(c) N(x_t; a mu_j, a^2 S_j + s^2 I), normalised."""
    a, s = jnp.sqrt(abar), jnp.sqrt(1.0 - abar)
    shaped = lambda v: jnp.reshape(v, (-1, 1, 1)) if jnp.ndim(v) else v  # against [B, J, F]
    a, s = shaped(a), shaped(s)
    mean, eig, onehot, basis = prepared["mean"], prepared["eig"], prepared["onehot"], prepared["basis"]
    r = x_t[:, None] - a * mean  # [B, J, F]
    # r in the eigenbases of the row's pattern: one product with every pattern's basis (a GEMM),
    # then the row's own selected; the elementwise work below is on [B, J, F] only
    z = jnp.einsum("bp,bpjg->bjg", onehot, jnp.einsum("bjf,pjfg->bpjg", r, basis))
    denom = a ** 2 * eig + s ** 2  # [B, J, F]
    if parametrisation == "eps":
        gain, offset = s / denom, 0.0
    elif parametrisation == "x0":
        gain, offset = a * eig / denom, mean
    elif parametrisation == "v":
        # a eps - s x0 = U diag((a s - s a l) / (a^2 l + s^2)) U^T r - s mu
        gain, offset = a * s * (1.0 - eig) / denom, -s * mean
    else:
        raise ValueError(f"unknown parametrisation {parametrisation!r}")
    back = jnp.einsum("bpjg,pjfg->bjf", onehot[:, :, None, None] * (z * gain)[:, None], basis)
    out = back + offset  # [B, J, F]
    if out.shape[1] == 1:
        return out[:, 0]
    loglik = -0.5 * jnp.sum(z ** 2 / denom + jnp.log(denom), axis=-1)  # [B, J]
    resp = jax.nn.softmax(prepared["logw"] + loglik, axis=-1)
    return jnp.einsum("bj,bjf->bf", resp, out)
