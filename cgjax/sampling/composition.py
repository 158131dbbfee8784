"""How the members' noise predictions become the one noise prediction a step uses, and the
Langevin corrector that can follow; both pure functions of arrays, run inside the sampler's scan
(:func:`cgjax.sampling.coherent.make_sampler`).

Compositions (``SampleOptions.composition``; the default ``auto`` is ``anchored`` where every model
it would combine has a fitted anchor, ``average`` elsewhere: :func:`cgjax.ensemble.sample.composition_for`),
for row n with weights w[n, m] (summing to 1 over its
available members, 0 for the others) and member predictions eps_m[n]:

* ``average`` (the paper's): eps[n] = sum_m w[n, m] eps_m[n]. A weighted average of scores is
  the score of no particular law; for conditions that each narrow the target it behaves like a
  compromise between the single-condition posteriors (too wide, mean shrunk towards each one).
* ``product`` (product of experts, Du et al. 2023): if the conditions are independent given the
  target, p(x | c_1..c_k) is proportional to prod_i p(x | c_i) / p(x)^(k-1), whose score is
  sum_i score_i - (k - 1) score_u. In noise form, with a_m = [w[n, m] > 0] and k = sum_m a_m,

      eps[n] = eps_u[n] + sum_m a_m (eps_m[n] - eps_u[n]),    eps_u[n] = sum_m w[n, m] eps_u_m[n],

  where eps_u_m is member m's *unconditional* prediction (its condition masked). A network only has
  one if it was trained with its condition masked part of the time: single models need
  ``TrainConfig.single_cond_dropout > 0`` (the multi model's ``cond_dropout`` already trains its
  empty subset). We take eps_u from the same single models, averaged with the row's weights, rather
  than from the multi model: it needs no second network in the scan (the members are run a second
  time with every mask 0) and works for model sets without a multi model. With one available member
  the product is that member. The identity holds for the clean law (t = 0); at a noise level t > 0
  the diffused conditionals are no longer a product, so the composed score is an approximation there
  (a Gaussian example: docs/calibration.md), which corrector steps reduce.

* ``anchored``: for models with an anchor (``ArchConfig.anchor``, :mod:`cgjax.diffusion.anchor`),
  each member's output is its anchor plus a network residual, eps_m = A_m + r_m, where A_m is the
  exact denoiser of the member's fitted law of the target given its *one* condition. The average
  averages those laws too: each is wider than the law given every condition the row has, which is
  why ``average`` is over-dispersed where every condition narrows the target. ``anchored`` keeps
  the average of the residuals only and takes the anchor of the row's whole pattern of conditions,
  A_base, from the target's multi-condition model (its fitted conditional given exactly the
  conditions the row has):

      eps[n] = A_base[n] + sum_m w[n, m] (eps_m[n] - A_m[n]).

  With residuals of zero it samples the multi model's anchor law; the networks' corrections are
  still those of the single-condition models, averaged as the paper averages them. Everything is
  in eps units (each member's output converted first).

Langevin corrector (``SampleOptions.corrector_steps`` = L, ``corrector_snr`` = r): before the solver
step at each visited timestep t, L steps of unadjusted Langevin dynamics at level t with the composed
eps as score, score = -eps / sigma_t (sigma_t = sqrt(1 - abar_t)):

    x <- x + h_t score + sqrt(2 h_t) z = x - (h_t / sigma_t) eps + sqrt(2 h_t) z,
    h_t = 2 alpha_t (r sigma_t)^2,     alpha_t = 1 - beta_t.

This is the signal-to-noise rule of Song et al. 2021 (predictor-corrector sampling, alg. 5),
h = 2 alpha (r ||z|| / ||score||)^2, with the norm ratio replaced by its value on pure noise
(||score|| = ||z|| / sigma_t): a step per level, the same for every row. Song et al. use the norms
per batch; per row they make h heavy-tailed in a few dimensions (a row near the mode takes a huge
step: with an exact Gaussian eps the variance doubles), and per batch a row's sample would depend on
its batch. Since the law at level t has variance >= sigma_t^2, h_t <= 2 r^2 Var_t and the step is
stable for r < 1; the stationary law of the discretised chain overestimates a Gaussian's variance by
at most 1 / (1 - r^2).
"""

from __future__ import annotations

import jax.numpy as jnp

from cgjax._validate import is_int, is_real
from cgjax.errors import ConfigError

COMPOSITIONS = ("auto", "average", "product", "anchored")
CORRECTOR_NOISE_TAG = 2 ** 31 - 1  # folded into the key before the corrector's noise (the predictor's never is)


def validate(composition, corrector_steps, corrector_snr, owner: str) -> None:
    """The one check of these three options (for :class:`cgjax.sampling.options.SampleOptions` and
    :func:`cgjax.sampling.coherent.make_sampler`): a one-line :class:`ConfigError` naming the CLI flag
    and ``owner``'s field."""
    if composition not in COMPOSITIONS:
        raise ConfigError(f"--composition ({owner}.composition) must be one of {COMPOSITIONS}, got {composition!r}")
    if not (is_int(corrector_steps) and corrector_steps >= 0):
        raise ConfigError(f"--corrector-steps ({owner}.corrector_steps) must be an integer >= 0, "
                          f"got {corrector_steps!r}")
    if not (is_real(corrector_snr) and 0 < corrector_snr < 1):
        raise ConfigError(f"--corrector-snr ({owner}.corrector_snr) must be in (0, 1), got {corrector_snr!r}")


def average(eps_all, weights):
    """eps f32[N, F] = sum_m w[n, m] eps_m[n]; eps_all f32[M, N, F], weights f32[N, M]."""
    return jnp.sum(eps_all * weights.T[:, :, None], axis=0)


def product(eps_all, eps_uncond_all, weights):
    """Product of experts: eps_u + sum_m [w[n, m] > 0] (eps_m - eps_u), eps_u the row-weighted
    average of the members' unconditional predictions eps_uncond_all f32[M, N, F]."""
    eps_u = average(eps_uncond_all, weights)
    avail = (weights.T > 0).astype(eps_all.dtype)[:, :, None]  # [M, N, 1]
    return eps_u + jnp.sum(avail * (eps_all - eps_u[None]), axis=0)


def corrector_step_size(alpha_t, alpha_bar_t, snr: float):
    """h_t = 2 alpha_t (snr sigma_t)^2 with sigma_t^2 = 1 - abar_t (module docstring)."""
    return 2.0 * alpha_t * snr ** 2 * (1.0 - alpha_bar_t)


def langevin_step(x, eps, z, alpha_t, alpha_bar_t, snr: float):
    """One Langevin step at level t: x - (h / sigma_t) eps + sqrt(2 h) z (module docstring)."""
    h = corrector_step_size(alpha_t, alpha_bar_t, snr)
    return x - (h / jnp.sqrt(1.0 - alpha_bar_t)) * eps + jnp.sqrt(2.0 * h) * z


def anchored(eps_all, anchor_eps_all, base_eps, weights):
    """The anchored consensus: base_eps + sum_m w[n, m] (eps_m - A_m), with the members' anchors'
    eps anchor_eps_all f32[M, N, F] and the row's whole-pattern anchor base_eps f32[N, F]."""
    return base_eps + average(eps_all - anchor_eps_all, weights)
