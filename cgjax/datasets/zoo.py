"""A zoo of planted laws with exact posteriors: cohorts cgjax was never tuned on.

Every member is a :class:`~cgjax.datasets.synthetic.SyntheticLaw` (the same linear-Gaussian
mixture and the same exact oracle as :func:`~cgjax.datasets.synthetic.synthetic_tcga`), drawn from a
seeded family that varies what the default law fixes:

    c              ~ Categorical(pi),            pi ~ Dirichlet(alpha 1_C)     C = 2..10 types
    z | c          ~ N(mu_c, Sigma_c)                                          K latent factors
    x_m | z, c     ~ N(A_{c,m} z + b_m, (1 - s_m) I)                           M = 2..5 modalities of D_m = 8..128
    A_{c,m}        = sqrt(1 - rho) G_m + sqrt(rho) H_{c,m}   (G, H ~ N(0, 1); rho = 0: shared loadings)
    missing m | c  independently with q_{c,m} = sigmoid(logit q_m + tau g_{c,m})  (tau = 0: at random)

then every pattern with fewer than min(2, M - 1) modalities is removed and p(pattern | c)
renormalised. Each feature row of A_{., m} is scaled (jointly over types) so that its marginal
variance from z is s_m (the signal fraction; the noise is 1 - s_m) and b_m centres it: every feature
has marginal mean 0 and variance 1, as in the default law. Stage and survival follow the default
law's recipe. Within a type everything is jointly Gaussian, so p(target | any given modalities) is
an exact mixture over types of Gaussians (:meth:`SyntheticLaw.conditional`).

Use:

    member = zoo.law("issue11")          # a named member, or zoo.law(7) for the 7th random one
    cohort = member.cohort(seed=0)       # a Cohort for `cgjax train` / `impute`
    post = member.conditional("a", {"b": xb, "c": xc})   # exact p(a | b, c): mean(), cov(), sample()

``zoo.law("tcga_default")`` is the embedded default law: its cohorts are exactly
``synthetic_tcga(n_samples, seed)``. ``zoo.ZOO`` names the members that span the axes.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Mapping

import numpy as np
from scipy import special

from cgjax.data.cohort import Cohort
from cgjax.datasets.synthetic import (DEFAULT_N_SAMPLES, SyntheticLaw, _latent_moments, _latent_params,
                                      _stage_params, _survival_params, default_law, synthetic_tcga)

__all__ = ["LawSpec", "ZooLaw", "ZOO", "law", "random_spec", "build_law", "pattern_probs"]


@dataclasses.dataclass(frozen=True)
class LawSpec:
    """The parameters of one zoo law (everything else is drawn from ``law_seed``).

    Attributes:
      name: label used in cohort sources and tables.
      dims: D_m per modality (2-5 modalities; the modalities are named ``m1``, ``m2``, ...).
      signal: s_m per modality in (0, 1), the share of each feature's marginal variance from z.
      missing: q_m per modality in [0, 1), the probability that modality m is missing.
      n_latent: K. n_types: C. type_concentration: alpha of the Dirichlet of the type proportions
        (large = balanced types). type_spread: std of the type means mu_c relative to the
        within-type std of z.
      type_loading_share: rho in [0, 1], the share of each loading that differs by type.
      missing_type_shift: tau >= 0, std of the per-(type, modality) logit shift of q (0 = at random).
      n_samples: default cohort size. law_seed: fixes every drawn parameter.
    """

    name: str
    dims: tuple[int, ...]
    signal: tuple[float, ...]
    missing: tuple[float, ...]
    n_latent: int = 8
    n_types: int = 6
    type_concentration: float = 5.0
    type_spread: float = 1.5
    type_loading_share: float = 0.0
    missing_type_shift: float = 0.0
    n_samples: int = 3000
    law_seed: int = 0

    def __post_init__(self):
        m = len(self.dims)
        if not 2 <= m <= 5:
            raise ValueError(f"{self.name}: a zoo law has 2-5 modalities, got {m}")
        if len(self.signal) != m or len(self.missing) != m:
            raise ValueError(f"{self.name}: signal and missing need one value per modality ({m})")
        if not all(0.0 < s < 1.0 for s in self.signal):
            raise ValueError(f"{self.name}: signal fractions must be in (0, 1), got {self.signal}")
        if not all(0.0 <= q < 1.0 for q in self.missing):
            raise ValueError(f"{self.name}: missing rates must be in [0, 1), got {self.missing}")
        if not 0.0 <= self.type_loading_share <= 1.0 or self.missing_type_shift < 0:
            raise ValueError(f"{self.name}: type_loading_share must be in [0, 1] and missing_type_shift >= 0")
        if min(self.dims) < 1 or self.n_latent < 1 or self.n_types < 1 or self.n_samples < 1:
            raise ValueError(f"{self.name}: dims, n_latent, n_types and n_samples must be positive")

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(f"m{i + 1}" for i in range(len(self.dims)))


def _logit(q: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(q) - np.log1p(-q)


def pattern_probs(missing: np.ndarray, min_present: int) -> tuple[np.ndarray, np.ndarray]:
    """p(pattern | c) for independent per-modality missingness, restricted to >= min_present modalities.

    Args:
      missing: f64[C, M], q_{c,m}. min_present: smallest allowed number of present modalities.
    Returns:
      (patterns bool[2^M, M] (pattern p has modality m iff bit m of p), probs f64[C, 2^M]).
    """
    c_count, m_count = missing.shape
    patterns = ((np.arange(2 ** m_count)[:, None] >> np.arange(m_count)[None, :]) & 1).astype(bool)
    # prod_m (1 - q)^[m in S] q^[m not in S], in logs so that q = 0 gives exact zeros.
    with np.errstate(divide="ignore"):
        logp = patterns @ np.log1p(-missing).T + (~patterns) @ np.log(missing).T  # [P, C]
    logp[patterns.sum(1) < min_present] = -np.inf
    probs = np.exp(logp - special.logsumexp(logp, axis=0, keepdims=True)).T
    return patterns, probs


def build_law(spec: LawSpec) -> SyntheticLaw:
    """The :class:`SyntheticLaw` of ``spec`` (cached: specs that differ only in name or n_samples
    give the same object)."""
    return _build_law(dataclasses.replace(spec, name="", n_samples=1))


@functools.lru_cache(maxsize=64)
def _build_law(spec: LawSpec) -> SyntheticLaw:
    c_count, k, m_count = spec.n_types, spec.n_latent, len(spec.dims)
    stream = lambda i: np.random.default_rng([spec.law_seed, 11, i])

    rng = stream(0)
    props = rng.dirichlet(np.full(c_count, spec.type_concentration))
    latent_means, latent_covs = _latent_params(rng, c_count, k, spec.type_spread)
    z_mean, _ = _latent_moments(props, latent_means, latent_covs)

    # Loadings: shared G_m mixed with type-specific H_{c,m}, then one scale per feature (all types
    # together) so that the marginal variance of A_{c,j} z over the mixture is s_m:
    #   v_j = sum_c p_c (a_cj^T Sigma_c a_cj + (a_cj^T mu_c)^2) - (sum_c p_c a_cj^T mu_c)^2.
    rng = stream(1)
    rho = spec.type_loading_share
    loadings, offsets, noise_vars = [], [], []
    for d, s in zip(spec.dims, spec.signal):
        g = rng.standard_normal((d, k))
        a = np.sqrt(1.0 - rho) * g + np.sqrt(rho) * rng.standard_normal((c_count, d, k)) if rho > 0 \
            else np.broadcast_to(g, (c_count, d, k))
        proj = np.einsum("cdk,ck->cd", a, latent_means)  # a_cj^T mu_c, [C, D]
        within = np.einsum("cdk,ckl,cdl->cd", a, latent_covs, a)
        v = props @ (within + proj ** 2) - (props @ proj) ** 2  # [D]
        a = a * np.sqrt(s / v)[None, :, None]
        loadings.append(np.array(a) if rho > 0 else np.array(a[0]))
        offsets.append(-(props @ proj) * np.sqrt(s / v))
        noise_vars.append(np.full(d, 1.0 - s))

    rng = stream(2)
    q = special.expit(_logit(np.asarray(spec.missing))[None, :]
                      + spec.missing_type_shift * rng.standard_normal((c_count, m_count)))
    q = np.where(np.asarray(spec.missing)[None, :] == 0.0, 0.0, q)  # a modality never missing stays so
    patterns, probs = pattern_probs(q, min(2, m_count - 1))

    w, stage_offsets, thresholds = _stage_params(stream(3), props, latent_means, latent_covs, 1.0)
    beta, hazard_offsets, censoring_rate = _survival_params(stream(4), props, latent_means, latent_covs,
                                                            z_mean, 0.8, 1800.0, 0.35)
    return SyntheticLaw(
        modalities=spec.modalities, cancer_types=tuple(f"T{c + 1}" for c in range(c_count)),
        type_proportions=props, latent_means=latent_means, latent_covs=latent_covs,
        loadings=tuple(loadings), offsets=tuple(offsets), noise_vars=tuple(noise_vars),
        signal_fractions=np.asarray(spec.signal, dtype=np.float64), patterns=patterns, pattern_probs=probs,
        stage_weights=w, stage_offsets=stage_offsets, stage_thresholds=thresholds, stage_missing_rate=0.10,
        hazard_weights=beta, hazard_offsets=hazard_offsets, censoring_rate=censoring_rate)


def random_spec(seed: int, n_samples: int | None = None) -> LawSpec:
    """The ``seed``-th random member: every axis drawn from ``seed``.

    M ~ U{2..5}; D_m log-uniform on [8, 128]; K ~ U{4..16}; C ~ U{2..10}; alpha in {1, 5, 50};
    type_spread ~ U(0.8, 2); rho = 0 or U(0.2, 0.6) (even odds); s_m ~ U(0.15, 0.9);
    q_m ~ U(0.05, 0.4); tau = 0 or U(0.5, 1.5) (even odds); n log-uniform on [500, 30000].
    """
    rng = np.random.default_rng([int(seed), 1111])
    m = int(rng.integers(2, 6))
    return LawSpec(
        name=f"random{int(seed)}",
        dims=tuple(int(round(d)) for d in np.exp(rng.uniform(np.log(8), np.log(128), m))),
        signal=tuple(float(s) for s in rng.uniform(0.15, 0.9, m)),
        missing=tuple(float(q) for q in rng.uniform(0.05, 0.4, m)),
        n_latent=int(rng.integers(4, 17)), n_types=int(rng.integers(2, 11)),
        type_concentration=float(rng.choice([1.0, 5.0, 50.0])), type_spread=float(rng.uniform(0.8, 2.0)),
        type_loading_share=float(rng.uniform(0.2, 0.6)) if rng.random() < 0.5 else 0.0,
        missing_type_shift=float(rng.uniform(0.5, 1.5)) if rng.random() < 0.5 else 0.0,
        n_samples=int(n_samples or round(np.exp(rng.uniform(np.log(500), np.log(30000))))),
        law_seed=int(seed))


# The named members, chosen to span the axes (modalities, widths, latent size, types, type-specific
# loadings, noise, missingness, sample size). "issue11" is the law of issue 11's measurement.
_NAMED: dict[str, LawSpec] = {s.name: s for s in (
    LawSpec("issue11", dims=(40, 12, 24), signal=(0.95, 0.85, 0.9), missing=(0.3, 0.3, 0.3), n_latent=8,
            n_types=6, type_loading_share=0.4, n_samples=3000, law_seed=101),
    LawSpec("two_wide", dims=(128, 64), signal=(0.8, 0.75), missing=(0.2, 0.2), n_latent=16, n_types=3,
            type_concentration=50.0, n_samples=5000, law_seed=102),
    LawSpec("five_narrow", dims=(8, 12, 16, 8, 10), signal=(0.5, 0.7, 0.4, 0.6, 0.3),
            missing=(0.25, 0.15, 0.35, 0.2, 0.3), n_latent=4, n_types=8, type_concentration=1.0,
            missing_type_shift=1.0, n_samples=1500, law_seed=103),
    LawSpec("noisy_small", dims=(24, 24, 24), signal=(0.3, 0.25, 0.4), missing=(0.2, 0.2, 0.2), n_latent=6,
            n_types=4, n_samples=500, law_seed=104),
    LawSpec("large", dims=(64, 32, 16, 48), signal=(0.6, 0.8, 0.5, 0.7), missing=(0.3, 0.1, 0.25, 0.2),
            n_latent=12, n_types=10, type_concentration=5.0, type_loading_share=0.3, missing_type_shift=0.7,
            n_samples=30000, law_seed=105),
)}
ZOO: tuple[str, ...] = ("tcga_default",) + tuple(_NAMED)


@dataclasses.dataclass(frozen=True, eq=False)
class ZooLaw:
    """One member of the zoo: its law (the exact oracle) and a default cohort size.

    Attributes:
      name: the member's name (``"random7"`` for ``law(7)``).
      oracle: the :class:`SyntheticLaw`; ``oracle.conditional(target, given, type_prior)`` is exact.
      n_samples: samples per cohort.
      spec: the :class:`LawSpec` (None for ``tcga_default``, built by :func:`default_law`).
    """

    name: str
    oracle: SyntheticLaw
    n_samples: int
    spec: LawSpec | None = None

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.oracle.modalities

    @property
    def dims(self) -> dict[str, int]:
        return dict(zip(self.oracle.modalities, self.oracle.dims))

    def cohort(self, seed: int = 0) -> Cohort:
        """A cohort of ``n_samples`` i.i.d. draws (ids ``SYN-0000001``...; NaN rows where absent;
        clinical cancer_type ``T1``.., stage, os_time, os_event)."""
        if self.spec is None:
            return synthetic_tcga(self.n_samples, seed)
        return self.oracle.sample(self.n_samples, seed,
                                  source=f"zoo.law({self.name!r}, n_samples={self.n_samples}, seed={seed})")

    def type_prior(self, present: np.ndarray) -> np.ndarray:
        """f64[N, C]: p(c | pattern) for rows whose availability is ``present`` bool[N, M] (columns in
        ``modalities`` order). Missingness can depend on the type, so the pattern a row was drawn
        with is evidence about its type; pass this as ``type_prior`` to :meth:`conditional`. (Rows
        that are complete in the cohort and masked for a test have the all-present pattern.)"""
        present = np.atleast_2d(np.asarray(present, dtype=bool))
        if present.shape[1] != len(self.modalities):
            raise ValueError(f"present must be bool[N, {len(self.modalities)}], got {present.shape}")
        code = present @ (1 << np.arange(present.shape[1]))  # pattern index: bit m = modality m
        law = self.oracle
        pattern_of = {int(p @ (1 << np.arange(len(p)))): i for i, p in enumerate(law.patterns)}
        p = law.type_proportions[None, :] * law.pattern_probs[:, [pattern_of[int(c)] for c in code]].T
        total = p.sum(1, keepdims=True)
        if (total <= 0).any():
            raise ValueError("a row has a pattern of availability that the law never produces")
        return p / total

    def conditional(self, target: str, given: Mapping[str, np.ndarray], present: np.ndarray | None = None):
        """The exact p(target | given, pattern): a :class:`GaussianMixtureConditional` per row.

        Args:
          target: a modality (or ``"latent"``). given: modality -> f[N, D_m] observed values.
          present: bool[N, M], the rows' availability in the cohort (default: complete rows, as
            for test rows drawn from complete samples).
        """
        n = len(next(iter(given.values()))) if given else 1
        if present is None:
            present = np.ones((n, len(self.modalities)), dtype=bool)
        return self.oracle.conditional(target, given, type_prior=self.type_prior(present))

    def describe(self) -> dict:
        """The member's axes as a flat dict (for tables)."""
        law = self.oracle
        spec = self.spec
        return {
            "law": self.name, "n_samples": self.n_samples, "modalities": len(law.modalities),
            "dims": "/".join(str(d) for d in law.dims), "n_latent": law.n_latent, "n_types": law.n_types,
            "type_specific_loadings": law.type_specific,
            "missing_type_shift": 0.0 if spec is None else spec.missing_type_shift,
            "complete_fraction": float(law.type_proportions @ law.pattern_probs[:, -1]),
        }


def law(name_or_seed: str | int, n_samples: int | None = None) -> ZooLaw:
    """A member of the zoo: a name in :data:`ZOO` or an int seed (the ``seed``-th random member).

    Args:
      name_or_seed: e.g. ``"issue11"``, ``"tcga_default"``, or ``7``.
      n_samples: cohort size (default: the member's own, 4000 for ``tcga_default``).
    Raises:
      ValueError: unknown name.
    """
    if isinstance(name_or_seed, (int, np.integer)) and not isinstance(name_or_seed, bool):
        spec = random_spec(int(name_or_seed), n_samples)
        return ZooLaw(spec.name, build_law(spec), spec.n_samples, spec)
    if name_or_seed == "tcga_default":
        return ZooLaw("tcga_default", default_law(), int(n_samples or DEFAULT_N_SAMPLES))
    if name_or_seed not in _NAMED:
        raise ValueError(f"unknown zoo law {name_or_seed!r}; expected one of {list(ZOO)} or an int seed")
    spec = _NAMED[name_or_seed]
    if n_samples is not None:
        spec = dataclasses.replace(spec, n_samples=int(n_samples))
    return ZooLaw(spec.name, build_law(spec), spec.n_samples, spec)
