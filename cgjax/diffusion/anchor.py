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
covariance, fitted on the rows that have the target and every condition of p (ridge regression,
penalty by leave-one-out error: :func:`fit`). A single-condition
model has 2 patterns (conditioned, and masked when it was trained with ``single_cond_dropout``); a
multi-condition model 2^K. Arrays of one model (``params["anchor"]``, stacked along M like the rest):

    coef f32[P, K * C, F]   A_p on the flattened, slot-padded conditions (rows of absent slots 0)
    bias f32[P, F]          b_p
    basis f32[P, F, F]      U_p (columns: eigenvectors of the residual covariance)
    eig f32[P, F]           l_p >= 0

The anchor is not trained (its gradient is stopped and the optimiser, weight decay and EMA leave it
as fitted). Its cost per row and step is 2 P F^2 multiply-adds, beside the network's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

ANCHORS = ("none", "gaussian", "auto")  # "auto": train both, keep the better per model (cgjax.pipeline.train)
MAX_SLOTS = 6  # 2^K patterns are evaluated at every step: K <= 6 (64 patterns)
# ridge penalties tried per target feature (by leave-one-out error) in the anchor's regressions
ALPHAS = np.logspace(-3, 4, 15)
# the leave-one-out errors take n F len(ALPHAS) float64s: a pattern with more rows than this budget
# allows is fitted on a fixed random subset of them (e.g. 41,000 rows for F = 40, 13,000 for F = 128)
LOO_BYTES = 200_000_000


def n_patterns(n_conds: int) -> int:
    return 2 ** n_conds


def zeros(cfg) -> dict:
    """An unfitted anchor of the shapes of ``cfg`` (a :class:`cgjax.diffusion.denoiser.DenoiserConfig`):
    all zero (it then predicts 0 in every parametrisation; fit it with :func:`fit`)."""
    P, KC, F = n_patterns(cfg.n_conds), cfg.n_conds * max(cfg.cond_dims), cfg.x_dim
    return {"coef": jnp.zeros((P, KC, F), jnp.float32), "bias": jnp.zeros((P, F), jnp.float32),
            "basis": jnp.zeros((P, F, F), jnp.float32), "eig": jnp.zeros((P, F), jnp.float32)}


def fit(x0: np.ndarray, conds: np.ndarray, present: np.ndarray, valid: np.ndarray, true_cond_dims) -> dict:
    """Fit one model's anchor on its training arrays (one member of :class:`cgjax.diffusion.train.GroupData`).

    x0 f[N, F]; conds f[N, K, C] (slot-padded); present bool[N, K]; valid bool[N]; true_cond_dims:
    the real width of each slot. For pattern p the rows are the valid ones with every condition of
    p present; its Gaussian is :func:`ridge_gaussian` of the target on those conditions (on a small
    cohort an unpenalised fit of many conditions is mostly noise). A pattern
    with fewer than 2 F + 10 rows (so that the covariance is estimable) falls
    back to its largest sub-pattern that has enough (ultimately the target's own mean and
    covariance). A pattern with more rows than :data:`LOO_BYTES` allows is fitted on a fixed random
    subset of them. Returns numpy arrays as :func:`zeros`.
    """
    x0, conds = np.asarray(x0, np.float64), np.asarray(conds, np.float64)
    present, valid = np.asarray(present, bool), np.asarray(valid, bool)
    N, K, C = conds.shape
    F = x0.shape[1]
    P = n_patterns(K)
    need = 2 * F + 10
    coef, bias = np.zeros((P, K * C, F)), np.zeros((P, F))
    basis, eig = np.zeros((P, F, F)), np.zeros((P, F))
    fitted: dict[int, tuple] = {}
    for p in range(P):  # increasing p: every sub-pattern of p (a subset of its bits) is fitted before p
        slots = [k for k in range(K) if p >> k & 1]
        cols = np.concatenate([k * C + np.arange(true_cond_dims[k]) for k in slots]).astype(int) if slots \
            else np.zeros(0, int)
        rows = valid & (present[:, slots].all(axis=1) if slots else True)
        if p and rows.sum() < need:
            subs = [q for q in fitted if q & p == q and q != p]
            fitted[p] = fitted[max(subs, key=lambda q: bin(q).count("1"))]
        elif p:
            idx = np.flatnonzero(rows)
            cap = max(need, int(LOO_BYTES // (F * len(ALPHAS) * 8)))
            if len(idx) > cap:  # bounded memory on a large cohort; the same subset every time
                idx = np.sort(np.random.default_rng(p).choice(idx, cap, replace=False))
            a_p, b_p, cov = ridge_gaussian(conds.reshape(N, K * C)[idx][:, cols], x0[idx])
            coef_p = np.zeros((K * C, F))
            coef_p[cols] = a_p  # the present slots' real columns; padding and absent slots stay 0
            fitted[p] = (coef_p, b_p, cov)
        else:
            y = x0[valid]
            cov = np.cov(y, rowvar=False).reshape(F, F) if len(y) > 1 else np.eye(F)
            fitted[p] = (np.zeros((K * C, F)), y.mean(axis=0) if len(y) else np.zeros(F), cov)
        coef[p], bias[p], cov = fitted[p]
        w, v = np.linalg.eigh((cov + cov.T) / 2)
        basis[p], eig[p] = v, np.clip(w, 0.0, None)
    f32 = lambda a: a.astype(np.float32)
    return {"coef": f32(coef), "bias": f32(bias), "basis": f32(basis), "eig": f32(eig)}


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


def fit_group(data, true_cond_dims) -> dict:
    """Anchors of every member of a group's training arrays (:class:`cgjax.diffusion.train.GroupData`),
    stacked along M."""
    members = [fit(*(np.asarray(a[m]) for a in data), true_cond_dims[m]) for m in range(data.x0.shape[0])]
    return {k: jnp.asarray(np.stack([a[k] for a in members])) for k in members[0]}


def prepare(anchor: dict, conds, masks) -> dict:
    """What a row's anchor needs along a whole trajectory: its pattern's mean mu_p(c) f32[B, F] and
    its pattern as a one-hot f32[B, P]. One model: conds f32[B, K, C'] (C' >= the anchor's slot
    width; wider columns are padding), masks f32[B, K]."""
    P, KC, F = anchor["coef"].shape
    B, K = masks.shape
    c = conds[:, :, : KC // K].reshape(B, KC)
    pattern = jnp.sum(jnp.round(masks).astype(jnp.int32) * (2 ** jnp.arange(K, dtype=jnp.int32))[None], axis=1)
    onehot = jax.nn.one_hot(pattern, P, dtype=jnp.float32)  # [B, P]
    means = jnp.einsum("bk,pkf->bpf", c, anchor["coef"]) + anchor["bias"][None]  # [B, P, F]
    return {"mean": jnp.einsum("bp,bpf->bf", onehot, means), "onehot": onehot,
            "basis": anchor["basis"], "eig": anchor["eig"]}


def output(anchor: dict, conds, masks, x_t, abar, parametrisation: str):
    """:func:`prepare` then :func:`predict`, for one call (the training loss, diagnostics); the
    sampler prepares once per trajectory instead (:func:`cgjax.sampling.algebra.anchored`)."""
    return predict(prepare(anchor, conds, masks), x_t, abar, parametrisation)


def predict(prepared: dict, x_t, abar, parametrisation: str):
    """The anchor's output at x_t f32[B, F] and noise level abar (a scalar or f32[B, 1]), in the
    parametrisation's units (eps, v or x_0): the exact denoiser of N(mu_p(c), S_p) (module docstring)."""
    a, s = jnp.sqrt(abar), jnp.sqrt(1.0 - abar)
    r = x_t - a * prepared["mean"]  # [B, F]
    z = jnp.einsum("bf,pfg->bpg", r, prepared["basis"])  # r in each pattern's eigenbasis
    a_b = jnp.reshape(a, (-1, 1, 1)) if jnp.ndim(a) else a
    s_b = jnp.reshape(s, (-1, 1, 1)) if jnp.ndim(s) else s
    denom = a_b ** 2 * prepared["eig"][None] + s_b ** 2  # [B or 1, P, F]
    if parametrisation == "eps":
        gain = s_b / denom
        offset = 0.0
    elif parametrisation == "x0":
        gain = a_b * prepared["eig"][None] / denom
        offset = prepared["mean"]
    elif parametrisation == "v":
        # a eps - s x0 = U diag((a s - s a l) / (a^2 l + s^2)) U^T r - s mu
        gain = a_b * s_b * (1.0 - prepared["eig"][None]) / denom
        offset = -s * prepared["mean"]
    else:
        raise ValueError(f"unknown parametrisation {parametrisation!r}")
    back = jnp.einsum("bpg,pfg->bpf", z * gain, prepared["basis"])  # [B, P, F]
    return jnp.einsum("bp,bpf->bf", prepared["onehot"], back) + offset
