"""A synthetic TCGA-like cohort with a planted, exactly tractable generative law.

The real TCGA cohort of the paper (Marchesi et al. 2026) cannot be shipped, so cgjax embeds a
synthetic stand-in whose law is *known*: for any target modality and any set of observed modalities
the true conditional distribution is an exact Gaussian mixture over cancer types. That gives every
model an oracle yardstick (the best achievable R2, the R2 of a perfectly calibrated sampler, the
energy score of exact posterior samples) instead of only relative comparisons.

The law (docs/synthetic.md has it in full):

    c            ~ Categorical(pi)                       cancer type, pi from the paper's Table 4
    z | c        ~ N(mu_c, Sigma_c)                      K shared latent factors, type-dependent
    x_m | z      ~ N(A_m z + b_m, psi_m I)               m in (cna, rnaseq, rppa, wsi), D features each
    pattern | c  ~ Categorical(P_c)                      which modalities are observed (>= 2 of them)
    stage | z, c = 1 + #{k: w.z + o_c + e > t_k},  e ~ N(0, 1)          ordinal probit, 10% missing
    T | z, c     ~ Exp(rate = exp(h_c + beta.z)),  C ~ Exp(lambda_cens)  os_time = ceil(min(T, C)) days

Within a type everything (z and the four modalities) is jointly Gaussian, so conditioning is linear
algebra and the only non-Gaussian part is the posterior over types, which is exact by Bayes' rule.

Each modality's loadings are scaled so that every feature has marginal (over types) mean 0 and
variance 1, like the paper's standardised 32-d latents, and a fraction ``signal_m`` of that variance
comes from z (the rest is noise). The per-modality signal fractions are chosen so that the oracle's
R2 given the other three modalities reproduces the paper's ordering (Table 1): RNA-seq easiest,
then RPPA, then WSI, CNA hardest.

Everything inside the law is float64 numpy; the returned :class:`~cgjax.data.Cohort` is float32.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import linalg, optimize, special, stats

from cgjax.data.cohort import DEFAULT_MODALITIES, Cohort, from_arrays
from cgjax.scoring import metrics as _metrics

__all__ = [
    "TABLE4", "CANCER_TYPES", "LATENT", "DEFAULT_N_SAMPLES", "SyntheticLaw", "SyntheticDraw",
    "GaussianMixtureConditional", "default_law", "synthetic_tcga", "energy_score", "pooled_r2",
    "fit_pattern_probs",
]

# ---- the paper's Table 4 (embedded so the package is standalone)
# columns: total, cna, rnaseq, rppa, wsi, complete, incomplete
TABLE4: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "BRCA": (1224, 1057, 1214, 919, 1054, 812, 412),
    "KIRC": (610, 521, 606, 477, 513, 442, 168),
    "UCEC": (584, 537, 581, 440, 504, 393, 191),
    "LUAD": (581, 507, 577, 365, 468, 310, 271),
    "HNSC": (574, 517, 566, 354, 450, 315, 259),
    "LUSC": (555, 497, 551, 328, 477, 301, 254),
    "PRAD": (551, 474, 550, 352, 349, 231, 320),
    "OV": (530, 494, 380, 385, 101, 50, 480),
    "LGG": (530, 520, 530, 435, 493, 400, 130),
    "GBM": (523, 498, 154, 218, 338, 42, 481),
    "COAD": (503, 447, 501, 363, 432, 331, 172),
    "STAD": (478, 429, 448, 357, 347, 255, 223),
    "SKCM": (475, 463, 473, 352, 211, 159, 316),
    "THCA": (460, 0, 458, 304, 407, 0, 460),
    "BLCA": (432, 403, 425, 343, 299, 244, 188),
    "LIHC": (429, 365, 423, 184, 339, 157, 272),
    "KIRP": (324, 284, 323, 216, 262, 190, 134),
    "CESC": (312, 296, 309, 172, 196, 121, 191),
    "SARC": (267, 247, 264, 226, 224, 181, 86),
    "TGCT": (156, 155, 156, 122, 154, 120, 36),
}
CANCER_TYPES: tuple[str, ...] = tuple(TABLE4)
MODALITIES: tuple[str, ...] = tuple(DEFAULT_MODALITIES)  # (cna, rnaseq, rppa, wsi)
LATENT = "latent"  # block name of z in the oracle: ``law.conditional("latent", given)``
DEFAULT_N_SAMPLES = 4000  # the paper's cohort has 10,098 samples; 4000 keeps quick runs quick

# Default per-modality fraction of each feature's marginal variance explained by z (the rest is
# isotropic noise). Tuned (for dim=32, n_latent=12) so the oracle R2 given the other three modalities
# is close to the paper's Table 1 ordering; docs/synthetic.md prints the resulting table.
DEFAULT_SIGNAL = {"cna": 0.13, "rnaseq": 0.88, "rppa": 0.66, "wsi": 0.49}
DEFAULT_STAGE_PROPORTIONS = (0.30, 0.33, 0.23, 0.14)  # roughly TCGA's stage I-IV mix
_LAW_SEED = 20260404  # fixes the law's parameters; data seeds only draw samples


# ================================================================================================
# Metrics used by the oracle (pure numpy, reusable by the evaluation code)
# ================================================================================================

# One implementation of each metric lives in cgjax.scoring.metrics; these names are kept here
# because the oracle's API has always exported them.
pooled_r2 = _metrics.r2_pooled  # docs/reference.md 5.2 definition A
energy_score = _metrics.energy_score  # f[R, N, D], f[N, D] -> f[N], distinct-pair estimator


# ================================================================================================
# The oracle's answer: a Gaussian mixture per row
# ================================================================================================

@dataclasses.dataclass(frozen=True, eq=False)
class GaussianMixtureConditional:
    """p(target | given) for N rows: a mixture over C types of Gaussians with shared covariances.

    Attributes:
      weights: f64[N, C], posterior type probabilities per row (rows sum to 1).
      means: f64[N, C, D], component means (depend on the row through the observed modalities).
      covs: f64[C, D, D], component covariances (the same for every row: Gaussian conditioning
        leaves a covariance that does not depend on the observed values).
    """

    weights: np.ndarray
    means: np.ndarray
    covs: np.ndarray

    @property
    def n_rows(self) -> int:
        return int(self.weights.shape[0])

    @property
    def dim(self) -> int:
        return int(self.covs.shape[-1])

    def mean(self) -> np.ndarray:
        """f64[N, D]: E[target | given] = sum_c w_c m_c."""
        return np.einsum("nc,ncd->nd", self.weights, self.means)

    def cov(self) -> np.ndarray:
        """f64[N, D, D]: total covariance = sum_c w_c (S_c + m_c m_c^T) - m m^T (law of total variance)."""
        m = self.mean()
        within = np.einsum("nc,cde->nde", self.weights, self.covs)
        dev = self.means - m[:, None, :]  # between-component spread around the mixture mean
        between = np.einsum("nc,ncd,nce->nde", self.weights, dev, dev)
        return within + between

    def average_cov(self) -> np.ndarray:
        """f64[D, D]: mean over rows of :meth:`cov` (the expected posterior covariance), without
        forming the N x D x D array."""
        # sum_n sum_c w_nc d_nc d_nc^T as one matrix product of the sqrt(w)-weighted deviations.
        dev = (self.means - self.mean()[:, None, :]) * np.sqrt(self.weights)[:, :, None]
        dev = dev.reshape(-1, self.dim)
        return np.einsum("c,cde->de", self.weights.mean(0), self.covs) + dev.T @ dev / self.n_rows

    def variance(self) -> np.ndarray:
        """f64[N, D]: diagonal of :meth:`cov`, computed without forming the D x D matrices."""
        m = self.mean()
        within = self.weights @ np.diagonal(self.covs, axis1=1, axis2=2)
        between = np.einsum("nc,ncd->nd", self.weights, (self.means - m[:, None, :]) ** 2)
        return within + between

    def sample(self, seed_or_rng, n_draws: int) -> np.ndarray:
        """Exact draws: f64[n_draws, N, D]. ``seed_or_rng``: int seed or ``np.random.Generator``."""
        rng = np.random.default_rng(seed_or_rng)
        n, c_count = self.weights.shape
        d = self.dim
        # Component per (draw, row) by inverse CDF on the row's weights.
        cdf = np.cumsum(self.weights, axis=1)
        u = rng.random((n_draws, n))
        comp = np.minimum((cdf[None, :, :] < u[:, :, None] * cdf[None, :, -1:]).sum(-1), c_count - 1)
        eps = rng.standard_normal((n_draws, n, d))
        out = np.empty((n_draws, n, d))
        rows = np.broadcast_to(np.arange(n), (n_draws, n))
        for c in np.unique(comp):
            sel = comp == c
            out[sel] = self.means[rows[sel], c] + eps[sel] @ _psd_sqrt(self.covs[c]).T
        return out


def _psd_sqrt(cov: np.ndarray) -> np.ndarray:
    """A square root L with L L^T = cov: Cholesky, with a tiny jitter if cov is numerically singular."""
    try:
        return np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        jitter = 1e-12 * max(np.trace(cov) / len(cov), 1e-300)
        return np.linalg.cholesky(cov + jitter * np.eye(len(cov)))


# ================================================================================================
# The law
# ================================================================================================

@dataclasses.dataclass(frozen=True, eq=False)
class SyntheticDraw:
    """Everything a draw from the law produces, including what a cohort does not show.

    Attributes:
      types: int[N], index into ``law.cancer_types``.
      z: f64[N, K], latent factors.
      x: modality -> f64[N, D], full rows (before masking).
      present: bool[N, M], modality availability (columns in ``law.modalities`` order).
      stage: f64[N], 1-4 or NaN (missing at random).
      stage_full: int[N], 1-4, the stage before the missing labels were removed.
      os_time: f64[N], days, >= 1.
      os_event: f64[N], 1 = death observed, 0 = censored.
      log_hazard: f64[N], h_c + beta.z, the true risk score.
    """

    types: np.ndarray
    z: np.ndarray
    x: Mapping[str, np.ndarray]
    present: np.ndarray
    stage: np.ndarray
    stage_full: np.ndarray
    os_time: np.ndarray
    os_event: np.ndarray
    log_hazard: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class SyntheticLaw:
    """The planted generative law of the synthetic cohort (all float64 numpy, read-only).

    Shapes: C cancer types, K latent factors, M modalities of D features each, P = 2^M patterns.
    The default law stores the per-modality parameters as stacked arrays; a law of the zoo
    (:mod:`cgjax.datasets.zoo`) stores them as tuples of M arrays, which allows modalities of
    different widths D_m and type-specific loadings: then ``loadings[m]`` is f64[D_m, K] (shared)
    or f64[C, D_m, K] (A_{c,m}: x_m | z, c ~ N(A_{c,m} z + b_m, Psi_m)), ``offsets[m]`` and
    ``noise_vars[m]`` are f64[D_m]. Everything below (the joint, the oracle, sampling) handles both.

    Attributes:
      modalities: the M modality names.
      cancer_types: the C TCGA codes.
      type_proportions: f64[C], p(c).
      latent_means: f64[C, K], mu_c.
      latent_covs: f64[C, K, K], Sigma_c.
      loadings: f64[M, D, K], A_m.
      offsets: f64[M, D], b_m.
      noise_vars: f64[M, D], diagonal of Psi_m (isotropic by default).
      signal_fractions: f64[M], marginal variance share of z in each feature (documentation).
      patterns: bool[P, M], every subset of modalities (pattern p has modality m iff bit m of p).
      pattern_probs: f64[C, P], p(pattern | c); zero on patterns with fewer than 2 modalities.
      stage_weights: f64[K], w. stage_offsets: f64[C], o_c. stage_thresholds: f64[3], t_1 < t_2 < t_3.
      stage_missing_rate: probability that a stage label is missing (completely at random).
      hazard_weights: f64[K], beta. hazard_offsets: f64[C], h_c (log baseline hazard per day).
      censoring_rate: lambda_cens, per day.
    """

    modalities: tuple[str, ...]
    cancer_types: tuple[str, ...]
    type_proportions: np.ndarray
    latent_means: np.ndarray
    latent_covs: np.ndarray
    loadings: np.ndarray
    offsets: np.ndarray
    noise_vars: np.ndarray
    signal_fractions: np.ndarray
    patterns: np.ndarray
    pattern_probs: np.ndarray
    stage_weights: np.ndarray
    stage_offsets: np.ndarray
    stage_thresholds: np.ndarray
    stage_missing_rate: float
    hazard_weights: np.ndarray
    hazard_offsets: np.ndarray
    censoring_rate: float

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            for a in (v if isinstance(v, tuple) else (v,)):
                if isinstance(a, np.ndarray):
                    a.flags.writeable = False

    # ---- sizes ----------------------------------------------------------------------------------
    @property
    def n_types(self) -> int:
        return len(self.cancer_types)

    @property
    def n_latent(self) -> int:
        return int(self.latent_means.shape[1])

    @property
    def dims(self) -> tuple[int, ...]:
        """D_m, the width of each modality."""
        return tuple(int(self.loadings[i].shape[-2]) for i in range(len(self.modalities)))

    @property
    def dim(self) -> int:
        """D, the common width of the modalities (an error for a law whose widths differ)."""
        if len(set(self.dims)) != 1:
            raise ValueError(f"the modalities have different widths {dict(zip(self.modalities, self.dims))}")
        return self.dims[0]

    @property
    def type_specific(self) -> bool:
        """Whether some modality's loadings depend on the type (A_{c,m})."""
        return any(np.ndim(self.loadings[i]) == 3 for i in range(len(self.modalities)))

    def type_loadings(self, i: int) -> np.ndarray:
        """f64[C, D_i, K]: the loadings of modality i per type (a shared A_i repeated)."""
        a = np.asarray(self.loadings[i])
        return a if a.ndim == 3 else np.broadcast_to(a, (self.n_types,) + a.shape)

    def block_names(self) -> tuple[str, ...]:
        """Names usable as oracle targets or givens: the modalities and ``"latent"`` (z)."""
        return self.modalities + (LATENT,)

    # ---- priors ---------------------------------------------------------------------------------
    def type_prior(self, complete_only: bool = False) -> np.ndarray:
        """f64[C]: p(c), or p(c | all modalities observed) when ``complete_only`` (test sets are drawn
        from complete samples only, so that is the right prior for them; THCA gets 0)."""
        if not complete_only:
            return np.array(self.type_proportions)
        full = int(np.flatnonzero(self.patterns.all(axis=1))[0])
        p = self.type_proportions * self.pattern_probs[:, full]
        return p / p.sum()

    # ---- the joint Gaussian of (x_cna, x_rnaseq, x_rppa, x_wsi, z) within each type ---------------
    @functools.cached_property
    def _joint(self) -> tuple[np.ndarray, np.ndarray, dict[str, slice]]:
        """Per-type mean f64[C, M*D + K] and covariance f64[C, M*D + K, M*D + K] of the stacked
        vector (x_1, ..., x_M, z), and the slice of each block in it."""
        m_count, k, c_count = len(self.modalities), self.n_latent, self.n_types
        eye = np.broadcast_to(np.eye(k), (c_count, k, k))
        a = np.concatenate([self.type_loadings(i) for i in range(m_count)] + [eye], axis=1)  # [C, MD+K, K]
        b = np.concatenate([self.offsets[i] for i in range(m_count)] + [np.zeros(k)])
        noise = np.concatenate([self.noise_vars[i] for i in range(m_count)] + [np.zeros(k)])
        mean = np.einsum("cdk,ck->cd", a, self.latent_means) + b  # E[x | c] = A_c mu_c + b
        cov = a @ self.latent_covs @ a.transpose(0, 2, 1) + np.diag(noise)  # A_c Sigma_c A_c^T + Psi
        ends = np.cumsum((0,) + self.dims)
        slices = {m: slice(int(ends[i]), int(ends[i + 1])) for i, m in enumerate(self.modalities)}
        slices[LATENT] = slice(int(ends[-1]), int(ends[-1]) + k)
        return mean, cov, slices

    def _index(self, names: Sequence[str]) -> np.ndarray:
        _, _, slices = self._joint
        unknown = [n for n in names if n not in slices]
        if unknown:
            raise ValueError(f"unknown block(s) {unknown}; expected some of {self.block_names()}")
        return np.concatenate([np.arange(slices[n].start, slices[n].stop) for n in names]) \
            if names else np.zeros(0, dtype=int)

    def _log_prior(self, type_prior, n: int | None) -> np.ndarray:
        """log p(c) per row, f64[N, C] (or [1, C] when it does not depend on the row)."""
        if type_prior is None:
            p = self.type_prior()
        else:
            p = np.asarray(type_prior)
            if p.dtype.kind in "USO":  # known cancer types: a one-hot prior per row
                lookup = {t: i for i, t in enumerate(self.cancer_types)}
                bad = [t for t in p if t not in lookup]
                if bad:
                    raise ValueError(f"unknown cancer type {bad[0]!r}; the law has {self.cancer_types}")
                idx = np.array([lookup[t] for t in p], dtype=int)
                if n is not None and len(idx) != n:
                    raise ValueError(f"{len(idx)} cancer types for {n} rows")
                p = np.zeros((len(idx), self.n_types))
                p[np.arange(len(idx)), idx] = 1.0
            p = np.asarray(p, dtype=np.float64)
            if p.shape[-1] != self.n_types or p.ndim not in (1, 2) or (p < 0).any():
                raise ValueError(f"type_prior must be f64[{self.n_types}] or f64[N, {self.n_types}] "
                                 f"of non-negative weights, got shape {p.shape}")
            if p.ndim == 2 and n is not None and len(p) != n:
                raise ValueError(f"type_prior has {len(p)} rows for {n} rows of given values")
            p = p / p.sum(axis=-1, keepdims=True)
        with np.errstate(divide="ignore"):
            return np.log(np.atleast_2d(p))

    # ---- the oracle -----------------------------------------------------------------------------
    def conditional(self, target: str, given: Mapping[str, np.ndarray], type_prior=None,
                    n_rows: int | None = None) -> GaussianMixtureConditional:
        """The exact p(target | given) for every row.

        Within type c, (target, given) is jointly Gaussian, so p(target | given, c) is Gaussian, and
        by Bayes p(c | given) ∝ p(c) N(x_g; A_g mu_c + b_g, A_g Sigma_c A_g^T + Psi_g), normalised with
        log-sum-exp. When only modalities are given this is computed in the K-dim latent space
        (:meth:`_conditional_latent`, O(N (D_g K + C K^2)); the dense path conditions the stacked joint
        and is used when ``"latent"`` itself is given or the loadings are type-specific.

        Args:
          target: a modality name or ``"latent"`` (the factors z).
          given: block name -> f[N, D_block] fully observed values in the law's native scale;
            may be empty (unconditional; then pass ``n_rows`` or a per-row ``type_prior``).
          type_prior: None (the law's type proportions), f[C] (e.g. ``law.type_prior(True)``),
            f[N, C], or str[N] of known cancer types (the posterior is then that type's Gaussian).
          n_rows: number of rows when ``given`` is empty and the prior is not per-row (default 1).
        Returns:
          :class:`GaussianMixtureConditional` with weights f64[N, C], means f64[N, C, D_t],
          covs f64[C, D_t, D_t].
        """
        given_names = tuple(given)
        if target in given_names:
            raise ValueError(f"target '{target}' is also given")
        ti, gi = self._index([target]), self._index(given_names)
        xg = (np.concatenate([np.asarray(given[g], dtype=np.float64) for g in given_names], axis=1)
              if given_names else None)
        n = None
        if xg is not None:
            if xg.ndim != 2 or xg.shape[1] != len(gi):
                raise ValueError(f"given blocks have shape {xg.shape}; expected [N, {len(gi)}]")
            if not np.isfinite(xg).all():
                raise ValueError("given values must be finite (the oracle conditions on fully observed rows)")
            n = len(xg)
        log_prior = self._log_prior(type_prior, n)
        if n is None:
            n = log_prior.shape[0] if log_prior.shape[0] > 1 else (1 if n_rows is None else int(n_rows))
            xg = np.zeros((n, 0))
        log_prior = np.broadcast_to(log_prior, (n, self.n_types))
        if LATENT in given_names or self.type_specific:
            log_lik, means, covs = self._conditional_dense(ti, gi, xg)
        else:
            log_lik, means, covs = self._conditional_latent(target, given_names, xg)
        log_w = log_prior + log_lik
        weights = np.exp(log_w - special.logsumexp(log_w, axis=1, keepdims=True))
        return GaussianMixtureConditional(weights=weights, means=means, covs=covs)

    def _conditional_latent(self, target: str, given_names: Sequence[str], xg: np.ndarray):
        """Per-type log N(x_g), conditional means and covariances, through z (modalities given).

        With A = A_g, Psi = Psi_g (diagonal), y = x_g - b_g, G = A^T Psi^-1 A and Sigma_c = L L^T:
          p(z | x_g, c) = N(mu_c + L B^-1 L^T v, L B^-1 L^T),  B = I + L^T G L,  v = A^T Psi^-1 (y - A mu_c)
        (the information form of Gaussian conditioning, written with L so that no inverse is formed),
          log det S_gg = log det Psi + log det B                        (matrix determinant lemma)
          r^T S_gg^-1 r = r^T Psi^-1 r - |R^-1 L^T v|^2,  R R^T = B       (Woodbury)
        and x_t | x_g, c = A_t z + b_t + eps_t gives mean A_t E[z] + b_t, cov A_t Cov[z] A_t^T + Psi_t.

        Returns: log_lik f64[N, C], means f64[N, C, D_t], covs f64[C, D_t, D_t].
        """
        n, k, c_count = len(xg), self.n_latent, self.n_types
        idx = [self.modalities.index(g) for g in given_names]
        a = np.concatenate([self.loadings[i] for i in idx]) if idx else np.zeros((0, k))  # [Dg, K]
        y = xg - (np.concatenate([self.offsets[i] for i in idx]) if idx else 0.0)  # [N, Dg]
        inv_psi = 1.0 / (np.concatenate([self.noise_vars[i] for i in idx]) if idx else np.ones(0))
        u = (y * inv_psi) @ a  # A^T Psi^-1 y, [N, K], shared by every type
        gram = (a.T * inv_psi) @ a  # G, [K, K]
        yy = np.sum(y * y * inv_psi, axis=1)  # y^T Psi^-1 y, [N]
        const = -0.5 * (len(inv_psi) * np.log(2 * np.pi) - np.sum(np.log(inv_psi)))
        if target == LATENT:
            a_t, b_t, psi_t = np.eye(k), np.zeros(k), np.zeros(k)
        else:
            i = self.modalities.index(target)
            a_t, b_t, psi_t = self.loadings[i], self.offsets[i], self.noise_vars[i]
        # Per type, only K x K factorisations: post = L B^-1 L^T = Cov[z | x_g, c] (= (Sigma_c^-1 + G)^-1).
        post = np.empty((c_count, k, k))
        half_logdet_b = np.empty(c_count)
        for c in range(c_count):
            chol_s = np.linalg.cholesky(self.latent_covs[c])  # L
            chol_b = np.linalg.cholesky(np.eye(k) + chol_s.T @ gram @ chol_s)  # R, R R^T = B
            half = linalg.solve_triangular(chol_b, chol_s.T, lower=True).T  # L R^-T, post = half half^T
            post[c] = half @ half.T
            half_logdet_b[c] = np.sum(np.log(np.diag(chol_b)))
        mu = self.latent_means  # [C, K]
        v = u[:, None, :] - (mu @ gram)[None]  # A^T Psi^-1 (y - A mu_c), [N, C, K]
        shift = np.matmul(v.transpose(1, 0, 2), post).transpose(1, 0, 2)  # E[z | x_g, c] - mu_c, [N, C, K]
        quad = (yy[:, None] - 2.0 * u @ mu.T + np.einsum("ck,kl,cl->c", mu, gram, mu)[None]
                - np.sum(shift * v, axis=-1))  # r^T S_gg^-1 r, [N, C]
        log_lik = const - 0.5 * quad - half_logdet_b[None]
        means = ((shift + mu[None]).reshape(n * c_count, k) @ a_t.T).reshape(n, c_count, -1) + b_t  # [N, C, D_t]
        covs = a_t @ post @ a_t.T + np.diag(psi_t)
        return log_lik, means, 0.5 * (covs + covs.transpose(0, 2, 1))

    def _conditional_dense(self, ti: np.ndarray, gi: np.ndarray, xg: np.ndarray):
        """Same outputs as :meth:`_conditional_latent`, by conditioning the stacked joint of
        (x_1..x_M, z) within each type (handles a given latent; also a cross-check in tests):
          p(t | g, c) = N(mu_t + S_tg S_gg^-1 (x_g - mu_g), S_tt - S_tg S_gg^-1 S_gt)."""
        mean, cov, _ = self._joint
        n, c_count, dt = len(xg), self.n_types, len(ti)
        log_lik = np.zeros((n, c_count))
        means = np.empty((n, c_count, dt))
        covs = np.empty((c_count, dt, dt))
        for c in range(c_count):
            mu_t, s_tt = mean[c, ti], cov[c][np.ix_(ti, ti)]
            if len(gi) == 0:
                means[:, c], covs[c] = mu_t, s_tt
                continue
            s_gg, s_gt = cov[c][np.ix_(gi, gi)], cov[c][np.ix_(gi, ti)]
            chol = linalg.cho_factor(s_gg, lower=True)
            resid = xg - mean[c, gi]  # [N, Dg]
            # log N(x_g; mu_g, S_gg) via the Cholesky factor: |L^-1 r|^2 and log det = 2 sum log diag L.
            white = linalg.solve_triangular(chol[0], resid.T, lower=True)  # [Dg, N]
            logdet = 2.0 * np.sum(np.log(np.diag(chol[0])))
            log_lik[:, c] = -0.5 * (np.sum(white ** 2, axis=0) + logdet + len(gi) * np.log(2 * np.pi))
            gain = linalg.cho_solve(chol, s_gt)  # S_gg^-1 S_gt, [Dg, Dt]
            means[:, c] = mu_t + resid @ gain
            covs[c] = s_tt - s_gt.T @ gain
        return log_lik, means, 0.5 * (covs + covs.transpose(0, 2, 1))

    def oracle_scores(self, target: str, given_names: Sequence[str], x_target: np.ndarray,
                      given: Mapping[str, np.ndarray], type_prior=None, *, n_draws: int = 100,
                      seed=0, scale=None) -> dict[str, float]:
        """What an ideal imputer achieves on these rows: the scores of the exact posterior.

        Args:
          target: modality to reconstruct. given_names: the modalities conditioned on (may be empty).
          x_target: f[N, D] the true target values (native scale).
          given: name -> f[N, D] native-scale values; must hold every name in ``given_names``
            (other entries are ignored).
          type_prior: as in :meth:`conditional`; for test sets of complete samples use
            ``law.type_prior(complete_only=True)``.
          n_draws: exact posterior draws used for ``calibrated_r2`` and ``energy_score`` (>= 2).
          seed: int or Generator for the draws.
          scale: None (score in the law's scale), ``(mean f[D], std f[D])`` of the target, or a
            mapping modality -> (mean, std) holding the target. Truth and samples are mapped to
            (x - mean) / std before scoring, as for models trained on standardised data.
        Returns:
          dict with
            best_r2: pooled R2 of the posterior mean (the best any point prediction can do in expectation);
            calibrated_r2: mean over draws of the pooled R2 of one exact posterior draw;
            calibrated_r2_std: its standard deviation over draws;
            calibrated_r2_exact: the same expectation in closed form,
              1 - (sum ||x - E[x|g]||^2 + sum tr Cov[x|g]) / SST;
            variance: mean over rows and features of the posterior variance (diag of cov);
            variance_fraction: variance / (pooled variance of the truth), the paper's bracketed %/100;
            energy_score: mean over rows of the energy score of the draws;
            n_rows, n_draws.
        """
        cond = self.conditional(target, {g: given[g] for g in given_names}, type_prior,
                                n_rows=len(x_target))
        x = np.asarray(x_target, dtype=np.float64)
        mu, var = cond.mean(), cond.variance()
        draws = cond.sample(seed, n_draws)
        if scale is not None:
            loc, sd = scale[target] if isinstance(scale, Mapping) else scale
            loc, sd = np.asarray(loc, dtype=np.float64), np.asarray(sd, dtype=np.float64)
            x, mu, draws, var = (x - loc) / sd, (mu - loc) / sd, (draws - loc) / sd, var / sd ** 2
        sst = np.sum((x - x.mean()) ** 2)
        r2_draws = np.array([pooled_r2(x, s) for s in draws])
        return {
            "best_r2": pooled_r2(x, mu),
            "calibrated_r2": float(r2_draws.mean()),
            "calibrated_r2_std": float(r2_draws.std()),
            # E||x - X||^2 over X ~ p(.|g) = ||x - E X||^2 + tr Cov X, summed over rows.
            "calibrated_r2_exact": float(1.0 - (np.sum((x - mu) ** 2) + np.sum(var)) / sst),
            "variance": float(var.mean()),
            "variance_fraction": float(var.mean() / (sst / x.size)),
            "energy_score": float(energy_score(draws, x).mean()),
            "n_rows": int(len(x)),
            "n_draws": int(n_draws),
        }

    # ---- sampling -------------------------------------------------------------------------------
    def sample_full(self, n: int, seed=0) -> SyntheticDraw:
        """Draw n i.i.d. samples with everything the cohort hides (types, z, full rows, risk)."""
        rng = np.random.default_rng(seed)
        c_count, k = self.latent_means.shape
        types = rng.choice(c_count, size=n, p=self.type_proportions)
        # z = mu_c + L_c u with L_c L_c^T = Sigma_c.
        chol = np.linalg.cholesky(self.latent_covs)  # [C, K, K]
        u = rng.standard_normal((n, k))
        z = self.latent_means[types] + np.einsum("nkl,nl->nk", chol[types], u)
        x = {}
        for i, m in enumerate(self.modalities):
            a = np.asarray(self.loadings[i])
            eps = rng.standard_normal((n, a.shape[-2])) * np.sqrt(self.noise_vars[i])
            if a.ndim == 2:
                signal = z @ a.T
            else:  # type-specific loadings: A_{c,m} z row by row of each type
                signal = np.empty((n, a.shape[1]))
                for c in range(c_count):
                    signal[types == c] = z[types == c] @ a[c].T
            x[m] = signal + self.offsets[i] + eps
        # Availability pattern per sample, by inverse CDF on p(pattern | c).
        cdf = np.cumsum(self.pattern_probs[types], axis=1)
        pat = np.minimum((cdf < rng.random(n)[:, None] * cdf[:, -1:]).sum(1), len(self.patterns) - 1)
        present = self.patterns[pat]
        # Ordinal probit stage on w.z + o_c.
        score = z @ self.stage_weights + self.stage_offsets[types] + rng.standard_normal(n)
        stage_full = 1 + (score[:, None] > self.stage_thresholds[None, :]).sum(1)
        stage = np.where(rng.random(n) < self.stage_missing_rate, np.nan, stage_full.astype(np.float64))
        # Exponential survival with independent exponential censoring.
        log_hazard = self.hazard_offsets[types] + z @ self.hazard_weights
        t_event = rng.exponential(1.0, n) / np.exp(log_hazard)
        t_cens = rng.exponential(1.0 / self.censoring_rate, n)
        os_time = np.ceil(np.minimum(t_event, t_cens))  # whole days, >= 1
        os_event = (t_event <= t_cens).astype(np.float64)
        return SyntheticDraw(types=types, z=z, x=x, present=present, stage=stage, stage_full=stage_full,
                             os_time=os_time, os_event=os_event, log_hazard=log_hazard)

    def sample(self, n: int, seed=0, source: str | None = None) -> Cohort:
        """Draw a cohort of n samples (ids ``SYN-0000001``...; absent modality rows are NaN)."""
        draw = self.sample_full(n, seed)
        ids = np.array([f"SYN-{i:07d}" for i in range(1, n + 1)], dtype=object)
        masks = {m: draw.present[:, i] for i, m in enumerate(self.modalities)}
        clinical = pd.DataFrame({
            "cancer_type": np.asarray(self.cancer_types, dtype=object)[draw.types],
            "stage": draw.stage, "os_time": draw.os_time, "os_event": draw.os_event,
        }, index=pd.Index(ids, name="sample_id"))
        return from_arrays(ids, draw.x, masks=masks, clinical=clinical,
                           source=source or f"synthetic_tcga(n_samples={n}, seed={seed}, dim={self.dims[0]})")


# ================================================================================================
# Building the default law
# ================================================================================================

def fit_pattern_probs(rates: np.ndarray, complete: float, min_modalities: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """p(pattern) over the 2^M subsets matching per-modality presence rates and a complete fraction.

    A sample is complete with probability ``complete``. An incomplete sample gets a pattern with at
    least ``min_modalities`` and fewer than M modalities, from the maximum-entropy distribution
    p(S) ∝ exp(sum_{m in S} theta_m) whose presence rates equal the incomplete samples' rates
    r_m = (rates_m - complete) / (1 - complete). theta solves the convex dual
    min_theta log sum_S exp(theta . 1_S) - theta . r. Modalities with r_m = 0 (THCA's CNA) or 1 are
    fixed absent / present.

    Args:
      rates: f[M], p(modality present). complete: p(all present).
    Returns:
      (patterns bool[2^M, M], probs f64[2^M]).
    """
    rates = np.asarray(rates, dtype=np.float64)
    m_count = len(rates)
    patterns = ((np.arange(2 ** m_count)[:, None] >> np.arange(m_count)[None, :]) & 1).astype(bool)
    probs = np.zeros(2 ** m_count)
    full = 2 ** m_count - 1
    probs[full] = complete
    if complete >= 1.0:
        return patterns, probs
    r = np.clip((rates - complete) / (1.0 - complete), 0.0, 1.0)
    size = patterns.sum(1)
    allowed = (size >= min_modalities) & (size < m_count)
    allowed &= ~(patterns[:, r <= 0]).any(1) & patterns[:, r >= 1].all(1)
    free = (r > 0) & (r < 1)
    feats = patterns[allowed][:, free].astype(np.float64)  # [S, F]
    target = r[free]

    def dual(theta):
        logits = feats @ theta
        lse = special.logsumexp(logits)
        p = np.exp(logits - lse)
        return lse - theta @ target, feats.T @ p - target

    theta = optimize.minimize(dual, np.zeros(free.sum()), jac=True, method="BFGS",
                              options={"gtol": 1e-10, "maxiter": 1000}).x
    logits = feats @ theta
    probs[np.flatnonzero(allowed)] = (1.0 - complete) * np.exp(logits - special.logsumexp(logits))
    return patterns, probs


def _random_rotation(rng: np.random.Generator, k: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((k, k)))
    return q * np.sign(np.diag(r))


def _mixture_quantile(p: float, means: np.ndarray, sds: np.ndarray, weights: np.ndarray) -> float:
    """The p-quantile of a 1-D Gaussian mixture (bisection on its CDF)."""
    cdf = lambda t: float(weights @ stats.norm.cdf((t - means) / sds)) - p
    lo, hi = float((means - 10 * sds).min()), float((means + 10 * sds).max())
    return optimize.brentq(cdf, lo, hi, xtol=1e-12)


def _latent_params(rng: np.random.Generator, c_count: int, k: int, type_spread: float):
    """Type means mu_c = type_spread * N(0, I) f64[C, K] and within-type covariances Sigma_c f64[C, K, K]
    with a random orientation and eigenvalues exp(0.4 N(0, 1)) normalised to mean 1."""
    latent_means = type_spread * rng.standard_normal((c_count, k))
    latent_covs = np.empty((c_count, k, k))
    for c in range(c_count):
        q = _random_rotation(rng, k)
        lam = np.exp(0.4 * rng.standard_normal(k))
        lam /= lam.mean()
        latent_covs[c] = (q * lam) @ q.T
    return latent_means, latent_covs


def _latent_moments(props: np.ndarray, latent_means: np.ndarray, latent_covs: np.ndarray):
    """Marginal mean f64[K] and covariance f64[K, K] of z over types (law of total variance)."""
    z_mean = props @ latent_means
    dev = latent_means - z_mean
    z_cov = np.einsum("c,ckl->kl", props, latent_covs) + np.einsum("c,ck,cl->kl", props, dev, dev)
    return z_mean, z_cov


def _stage_params(rng, props, latent_means, latent_covs, stage_strength: float):
    """Stage: ordinal probit on w.z + o_c + N(0,1); thresholds put the marginal stage mix at
    DEFAULT_STAGE_PROPORTIONS (score | c is Gaussian, so the marginal is a 1-D mixture).
    Returns (w f64[K], o f64[C], thresholds f64[3])."""
    k = latent_means.shape[1]
    w = rng.standard_normal(k)
    w *= stage_strength / np.sqrt(np.mean(np.einsum("k,ckl,l->c", w, latent_covs, w)))
    stage_offsets = 0.5 * rng.standard_normal(len(props))
    s_mean = latent_means @ w + stage_offsets
    s_sd = np.sqrt(np.einsum("k,ckl,l->c", w, latent_covs, w) + 1.0)
    cum = np.cumsum(DEFAULT_STAGE_PROPORTIONS)[:3]
    thresholds = np.array([_mixture_quantile(p, s_mean, s_sd, props) for p in cum])
    return w, stage_offsets, thresholds


def _survival_params(rng, props, latent_means, latent_covs, z_mean, hazard_strength: float,
                     median_survival_days: float, event_fraction: float):
    """Survival: log hazard h_c + beta.z, exponential event times, exponential censoring whose rate
    is solved so that the marginal event fraction E[lambda / (lambda + lambda_cens)] matches.
    Returns (beta f64[K], h f64[C], censoring rate)."""
    k = latent_means.shape[1]
    beta = rng.standard_normal(k)
    beta *= hazard_strength / np.sqrt(np.mean(np.einsum("k,ckl,l->c", beta, latent_covs, beta)))
    hazard_offsets = (np.log(np.log(2.0) / median_survival_days) + 0.5 * rng.standard_normal(len(props))
                      - z_mean @ beta)
    eta_mean = hazard_offsets + latent_means @ beta
    eta_sd = np.sqrt(np.einsum("k,ckl,l->c", beta, latent_covs, beta))
    nodes, gh_w = np.polynomial.hermite_e.hermegauss(60)  # E f(N(0,1)) = sum w f(node) / sqrt(2 pi)
    gh_w = gh_w / gh_w.sum()
    rate = np.exp(eta_mean[:, None] + eta_sd[:, None] * nodes[None, :])  # [C, Q]
    events = lambda log_cens: float(props @ ((rate / (rate + np.exp(log_cens))) @ gh_w)) - event_fraction
    censoring_rate = float(np.exp(optimize.brentq(events, -30.0, 10.0, xtol=1e-12)))
    return beta, hazard_offsets, censoring_rate


def default_law(dim: int = 32, n_latent: int = 12, *, signal: Mapping[str, float] | None = None,
                type_spread: float = 1.5, stage_strength: float = 1.0, hazard_strength: float = 0.8,
                event_fraction: float = 0.35, median_survival_days: float = 1800.0,
                stage_missing_rate: float = 0.10, law_seed: int = _LAW_SEED) -> SyntheticLaw:
    """The embedded law. Its parameters are fixed by ``law_seed`` (not by any data seed), so the
    oracle is one fixed object; calls are cached (same arguments -> the same object).

    Args:
      dim: D, features per modality. n_latent: K, shared latent factors.
      signal: modality -> fraction, overriding ``DEFAULT_SIGNAL``: the share of each feature's
        marginal variance explained by z (the oracle R2 ordering follows these).
      type_spread: std of the type means mu_c relative to the within-type std of z (about 1).
      stage_strength: within-type std of w.z (the probit noise has std 1).
      hazard_strength: within-type std of beta.z (log-hazard units).
      event_fraction: marginal fraction of observed deaths; the censoring rate is solved for it.
      median_survival_days: median event time of an average-risk patient.
      stage_missing_rate: fraction of stage labels removed completely at random.
    """
    sig = dict(DEFAULT_SIGNAL)
    sig.update(dict(signal or {}))
    unknown = set(sig) - set(MODALITIES)
    if unknown or not all(0.0 < v < 1.0 for v in sig.values()):
        raise ValueError(f"signal fractions must be in (0, 1) for modalities {MODALITIES}, got {sig}")
    return _build_law(int(dim), int(n_latent), tuple(sig[m] for m in MODALITIES), float(type_spread),
                      float(stage_strength), float(hazard_strength), float(event_fraction),
                      float(median_survival_days), float(stage_missing_rate), int(law_seed))


@functools.lru_cache(maxsize=16)
def _build_law(dim, n_latent, signal, type_spread, stage_strength, hazard_strength, event_fraction,
               median_survival_days, stage_missing_rate, law_seed) -> SyntheticLaw:
    """Builds :func:`default_law` (arguments normalised to hashable values for the cache)."""
    c_count, k, m_count = len(CANCER_TYPES), n_latent, len(MODALITIES)
    # One independent stream per component so that e.g. changing ``dim`` does not move mu_c.
    stream = lambda i: np.random.default_rng([law_seed, i])

    table = np.array(list(TABLE4.values()), dtype=np.float64)  # [C, 7]
    total, counts, complete = table[:, 0], table[:, 1:5], table[:, 5]
    props = total / total.sum()

    rng = stream(0)
    latent_means, latent_covs = _latent_params(rng, c_count, k, type_spread)
    z_mean, z_cov = _latent_moments(props, latent_means, latent_covs)

    # Loadings: Gaussian, then each feature row rescaled so that Var(A_j z) = signal_m marginally;
    # noise variance 1 - signal_m; offsets centre every feature: marginal mean 0 and variance 1.
    rng = stream(1)
    loadings = np.empty((m_count, dim, k))
    offsets = np.empty((m_count, dim))
    noise_vars = np.empty((m_count, dim))
    signal_fractions = np.array(signal)
    for i in range(m_count):
        a = rng.standard_normal((dim, k))
        a *= np.sqrt(signal_fractions[i] / np.einsum("dk,kl,dl->d", a, z_cov, a))[:, None]
        loadings[i] = a
        offsets[i] = -a @ z_mean
        noise_vars[i] = 1.0 - signal_fractions[i]

    # Availability patterns from Table 4.
    probs = []
    for c in range(c_count):
        patterns, p = fit_pattern_probs(counts[c] / total[c], complete[c] / total[c])
        probs.append(p)
    pattern_probs = np.array(probs)

    w, stage_offsets, thresholds = _stage_params(stream(2), props, latent_means, latent_covs, stage_strength)
    beta, hazard_offsets, censoring_rate = _survival_params(
        stream(3), props, latent_means, latent_covs, z_mean, hazard_strength, median_survival_days, event_fraction)

    return SyntheticLaw(
        modalities=MODALITIES, cancer_types=CANCER_TYPES, type_proportions=props,
        latent_means=latent_means, latent_covs=latent_covs, loadings=loadings, offsets=offsets,
        noise_vars=noise_vars, signal_fractions=signal_fractions, patterns=patterns,
        pattern_probs=pattern_probs, stage_weights=w, stage_offsets=stage_offsets,
        stage_thresholds=thresholds, stage_missing_rate=float(stage_missing_rate),
        hazard_weights=beta, hazard_offsets=hazard_offsets, censoring_rate=censoring_rate)


def synthetic_tcga(n_samples: int = DEFAULT_N_SAMPLES, seed: int = 0, *, dim: int = 32,
                   law: SyntheticLaw | None = None, **law_kwargs) -> Cohort:
    """The embedded default cohort: ``n_samples`` i.i.d. draws from :func:`default_law`.

    Args:
      n_samples: number of samples (default 4000; the paper's cohort has 10,098).
      seed: draws the samples only; the law itself is fixed.
      dim: features per modality (ignored when ``law`` is given).
      law: a :class:`SyntheticLaw` to sample from instead of ``default_law(dim, **law_kwargs)``.
    Returns:
      a :class:`~cgjax.data.Cohort` with modalities cna, rnaseq, rppa, wsi (f32[N, dim], NaN rows
      where absent; every sample has >= 2) and clinical cancer_type, stage, os_time, os_event.
    """
    if law is None:
        law = default_law(dim, **law_kwargs)
    return law.sample(int(n_samples), seed)
