"""A joint Gaussian of a target and its conditions, fitted on every row, conditions missing or not.

The Gaussian anchor (:mod:`cgjax.diffusion.anchor`) needs, for each pattern p of present
conditions, the law of the target given them. A regression per pattern is fitted only on the rows
that have every condition of p: on a cohort where each modality is missing in a fifth of the
patients, the pattern "all four others given" may keep a few dozen rows of thousands. Here one
Gaussian N(mu, S) of z = [target, conditions] is fitted on all the rows by expectation-maximisation
(each row's missing blocks filled in expectation, their conditional covariance added), and every
pattern's law is its conditional in closed form (:func:`conditional`):

    A = S_cc^-1 S_ct,   b = mu_t - mu_c A,   cov = S_tt - S_tc A       (c: the pattern's columns)

After each M-step the correlations are shrunk towards 0, S_ij <- (1 - lam) S_ij for i != j (on a
small cohort the cross-covariances of many conditions are mostly noise, as a regression's
unpenalised coefficients), except the target's among themselves (always observed, they are the
target's own sample covariance and its residual's shape), lam among :data:`SHRINKS` by :data:`FOLDS`-fold held-out log-likelihood of the
target given each held-out row's present conditions: the quantity the anchor is used for.

EM runs on per-pattern sufficient statistics (count, sum, cross-product of the observed entries),
so an iteration costs O(G d^3) for G observed patterns of d = target + condition columns,
whatever the number of rows. The fit is deterministic (folds from a fixed seed).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

SHRINKS = (0.0, 0.003, 0.01, 0.03, 0.1, 0.3, 0.6)  # lam tried, by held-out log-likelihood
FOLDS = 3
ITERS, TOL = 500, 1e-5  # EM stops when no entry of S (standardised) moves by more than TOL
JITTER = 1e-6  # relative to the diagonal, added to a covariance before solving with it


class Moments(NamedTuple):
    """Sufficient statistics of rows grouped by which columns they observe (unobserved entries 0)."""
    observed: np.ndarray  # bool[G, d]
    count: np.ndarray  # f[G]
    sums: np.ndarray  # f[G, d]
    cross: np.ndarray  # f[G, d, d]

    def __add__(self, other):
        return Moments(self.observed, self.count + other.count, self.sums + other.sums, self.cross + other.cross)


def moments(z: np.ndarray, patterns: np.ndarray, groups: np.ndarray) -> Moments:
    """:class:`Moments` of rows z f[n, d] whose observed columns are ``patterns[groups]``
    (patterns bool[G, d], groups int[n]; unobserved entries are ignored)."""
    G, d = patterns.shape
    zf = np.where(patterns[groups], z, 0.0)
    count, sums, cross = np.zeros(G), np.zeros((G, d)), np.zeros((G, d, d))
    for g in range(G):
        r = groups == g
        count[g], sums[g], cross[g] = r.sum(), zf[r].sum(axis=0), zf[r].T @ zf[r]
    return Moments(patterns, count, sums, cross)


def em(m: Moments, shrink: float, q: int = 0, init: tuple | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(mu f[d], S f[d, d]): the Gaussian of maximum likelihood given the rows summarised by ``m``
    (missing at random), its correlations shrunk by ``shrink`` after every M-step, except those among
    the first ``q`` columns (the target's own, always observed); ``init``: a starting (mu, S)
    (default: the observed means and variances, uncorrelated).

    EM converges slowly where much is missing, so its steps are extrapolated (SQUAREM, Varadhan and
    Roland 2008, scheme S3): from theta_0 two steps give r = theta_1 - theta_0 and
    v = theta_2 - 2 theta_1 + theta_0; the next point is theta_0 - 2 a r + a^2 v with
    a = -|r| / |v| (at most -1; a = -1 is theta_2), then one more EM step. An extrapolated S that is
    not positive definite is replaced by theta_2."""
    d = m.sums.shape[1]
    factor = np.full((d, d), 1 - shrink)
    factor[:q, :q] = 1.0
    np.fill_diagonal(factor, 1.0)
    if init is None:
        seen = (m.count[:, None] * m.observed).sum(axis=0)
        mu = m.sums.sum(axis=0) / np.maximum(seen, 1)
        var = np.einsum("gii->gi", m.cross).sum(axis=0)
        S = np.diag(np.maximum(var / np.maximum(seen, 1) - mu ** 2, JITTER))
    else:
        mu, S = init
    flat = lambda mu, S: np.concatenate([mu, S.ravel()])
    unflat = lambda t: (t[:d], t[d:].reshape(d, d))
    prepared = _prepare(m)
    step = lambda t: flat(*_em_step(m, *unflat(t), factor, prepared))
    t0 = flat(mu, S)
    for _ in range(ITERS // 3):
        t1 = step(t0)
        t2 = step(t1)
        r, v = t1 - t0, t2 - 2 * t1 + t0
        a = -np.sqrt((r @ r) / max(v @ v, 1e-300))
        t = t2
        if a < -1:
            t = t0 - 2 * a * r + a * a * v
            try:
                np.linalg.cholesky(unflat(t)[1])
            except np.linalg.LinAlgError:
                t = t2
        t_next = step(t)
        moved = np.abs(unflat(t_next)[1] - unflat(t0)[1]).max()
        t0 = t_next
        if moved < TOL:
            break
    return unflat(t0)


def _em_step(m: Moments, mu, S, factor, prepared=None):
    """One EM step of :func:`em`: the expected sufficient statistics under (mu, S), then the
    shrunk maximum-likelihood estimate from them. ``prepared``: :func:`_prepare` of ``m``."""
    base1, base2, blocks = _prepare(m) if prepared is None else prepared
    d = len(mu)
    t1, W = base1.copy(), np.zeros((d, d))  # the observed entries' sums, then each missing block's
    for o, u, c, a1, a2 in blocks:
        B = np.linalg.solve(S[np.ix_(o, o)] + JITTER * np.eye(len(o)), S[np.ix_(o, u)])  # [o, u]
        a = mu[u] - mu[o] @ B  # the missing block's expectation is a + z_o B
        a1B = a1 @ B
        t1[u] += c * a + a1B
        W[np.ix_(o, u)] += np.outer(a1, a) + a2 @ B  # (and its transpose, added below)
        W[np.ix_(u, u)] += 0.5 * (c * np.outer(a, a) + np.outer(a, a1B) + np.outer(a1B, a) + B.T @ a2 @ B
                                  + c * (S[np.ix_(u, u)] - S[np.ix_(u, o)] @ B))
    n = m.count.sum()
    mu = t1 / n
    return mu, factor * ((base2 + W + W.T) / n - np.outer(mu, mu))


def _prepare(m: Moments):
    """What every EM step of ``m`` reuses: the sums and cross-products of the observed entries over
    all rows, and for each group that misses some columns (observed indices, missing indices,
    count, its sums and cross-products on the observed ones)."""
    blocks = []
    for obs, c, s1, s2 in zip(m.observed, m.count, m.sums, m.cross):
        o, u = np.flatnonzero(obs), np.flatnonzero(~obs)
        if c > 0 and len(u):
            blocks.append((o, u, c, s1[o], s2[np.ix_(o, o)]))
    return m.sums.sum(axis=0), m.cross.sum(axis=0), blocks


def conditional(mu: np.ndarray, S: np.ndarray, q: int, given: np.ndarray):
    """The law of the first ``q`` coordinates given the columns ``given`` (bool over the other d - q):
    (A f[c, q], b f[q], cov f[q, q]) with y | x ~ N(b + x A, cov)."""
    if not given.any():
        return np.zeros((0, q)), mu[:q].copy(), S[:q, :q].copy()
    c = q + np.flatnonzero(given)
    Scc = S[np.ix_(c, c)]
    var = np.diag(Scc)
    Scc = Scc + JITTER * np.diag(np.where(var > 0, var, 1.0))  # relative: any units
    A = np.linalg.solve(Scc, S[np.ix_(c, np.arange(q))])
    return A, mu[:q] - mu[c] @ A, S[:q, :q] - S[np.ix_(np.arange(q), c)] @ A


def heldout_loglik(mu: np.ndarray, S: np.ndarray, q: int, m: Moments) -> float:
    """Sum over the rows of ``m`` (each observing the target, the first ``q`` columns) of
    log N(y; b + x A, cov) given that row's observed conditions, up to a constant."""
    total = 0.0
    for o, c, s1, s2 in zip(m.observed, m.count, m.sums, m.cross):
        if c == 0:
            continue
        A, b, cov = conditional(mu, S, q, o[q:])
        cols = np.flatnonzero(o)  # the target's q columns first, then the present conditions
        M = np.vstack([np.eye(q), -A])  # residual y - x A - b = [y, x] M - b
        s1o, s2o = s1[cols], s2[np.ix_(cols, cols)]
        r1 = s1o @ M
        rr = M.T @ s2o @ M - np.outer(b, r1) - np.outer(r1, b) + c * np.outer(b, b)
        L = np.linalg.cholesky(cov + JITTER * np.eye(q))
        Linv = np.linalg.solve(L, np.eye(q))
        total += -0.5 * np.trace(Linv @ rr @ Linv.T) - c * np.log(np.diag(L)).sum()
    return float(total)


class JointFit(NamedTuple):
    """:func:`fit`'s result, in the rows' units."""
    mu: np.ndarray  # f[d]
    cov: np.ndarray  # f[d, d]
    shrink: float  # the lam chosen
    folds: np.ndarray  # int[n]: each row's cross-validation fold
    fold_fits: list  # FOLDS x (mu, cov): the fit at lam without that fold's rows (None: too few rows)


def fit(y: np.ndarray, x: np.ndarray, observed: np.ndarray, seed: int = 0) -> JointFit:
    """The joint Gaussian of [y, x] on rows y f[n, q] (every row observes y) and x f[n, c] (observed
    bool[n, c] marks each row's present entries), its shrinkage chosen by :data:`FOLDS`-fold held-out
    log-likelihood of y given each row's present x (module docstring). Deterministic for a ``seed``.
    A non-finite y, or x where observed, is a ValueError (it would make every estimate NaN)."""
    y, x = np.asarray(y, np.float64), np.asarray(x, np.float64)
    n, q = y.shape
    for name, values, where in (("target", y, np.ones_like(y, bool)), ("condition", x, np.asarray(observed, bool))):
        bad = where & ~np.isfinite(values)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise ValueError(f"the joint Gaussian's {name} columns have {int(bad.sum())} non-finite observed "
                             f"value(s), e.g. row {row}, column {col}: mark them as unobserved or drop them")
    z = np.concatenate([y, np.where(observed, x, 0.0)], axis=1)
    obs = np.concatenate([np.ones((n, q), bool), np.asarray(observed, bool)], axis=1)
    # standardised columns: the shrinkage is scale-free, the solves better conditioned
    seen = np.maximum(obs.sum(axis=0), 1)
    center = np.where(obs, z, 0.0).sum(axis=0) / seen
    scale = np.sqrt(np.where(obs, (z - center) ** 2, 0.0).sum(axis=0) / seen)
    scale = np.where(scale > 0, scale, 1.0)
    z = (z - center) / scale
    units = lambda mu, S: (center + scale * mu, S * np.outer(scale, scale))
    pats, groups = np.unique(obs, axis=0, return_inverse=True)
    groups = groups.ravel()
    fold = np.random.default_rng(seed).permutation(n) % FOLDS
    parts = [moments(z[fold == k], pats, groups[fold == k]) for k in range(FOLDS)]
    score = np.zeros(len(SHRINKS))
    ests = [[None] * len(SHRINKS) for _ in range(FOLDS)]
    if n >= 2 * FOLDS:
        for k in range(FOLDS):
            train = sum((parts[j] for j in range(FOLDS) if j != k), start=_empty(parts[k]))
            est = None
            for i in reversed(range(len(SHRINKS))):  # strongest first, each warm-starting the next
                est = ests[k][i] = em(train, SHRINKS[i], q, est)
                score[i] += heldout_loglik(*est, q, parts[k])
    best = int(score.argmax())
    whole = sum(parts[1:], start=parts[0])
    fold_fits = [None if e[best] is None else units(*e[best]) for e in ests]
    return JointFit(*units(*em(whole, SHRINKS[best], q)), SHRINKS[best], fold, fold_fits)


def loglik_rows(law, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """log N(y; b + x A, cov) f[n] of each row under a conditional law (A, b, cov) (:func:`conditional`)."""
    A, b, cov = law
    q = len(b)
    L = np.linalg.cholesky(cov + JITTER * np.trace(cov) / q * np.eye(q))
    r = np.linalg.solve(L, (y - b - x @ A).T)
    return -0.5 * (r ** 2).sum(axis=0) - np.log(np.diag(L)).sum() - q / 2 * np.log(2 * np.pi)


def _empty(m: Moments) -> Moments:
    return Moments(m.observed, np.zeros_like(m.count), np.zeros_like(m.sums), np.zeros_like(m.cross))

