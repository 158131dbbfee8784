"""Reverse-process solvers: the ancestral DDPM sampler and two accelerated ones on K <= T steps.

Notation (docs/reference.md 2.1): x_t = alpha_t x_0 + sigma_t eps with alpha_t = sqrt(abar_t),
sigma_t = sqrt(1 - abar_t); the network predicts eps, and the data prediction is

    D_t = (x_t - sigma_t eps_hat) / alpha_t.

All three solvers are driven by the (consensus) noise prediction only, so the Coherent Denoising
sampler (:mod:`cgjax.sampling.coherent`) runs any of them in the same scan: a solver supplies the
timesteps it visits (T-1 first) and a pure ``step`` from x_t to the next state.

* ``ddpm``: every timestep, the ancestral update of docs/reference.md 2.6 (``schedule.ddpm_step``), sigma_t^2 = beta_t.
* ``ddim`` (Song et al. 2021, eq. 12): on K timesteps tau_K = T-1 > ... > tau_1 = 0, from t to the
  next s,

      x_s = alpha_s D_t + sqrt(sigma_s^2 - varsigma^2) eps_hat + varsigma z,
      varsigma = eta sqrt((sigma_s^2 / sigma_t^2) (1 - alpha_t^2 / alpha_s^2)).

  eta = 0 is the deterministic probability-flow solver; eta = 1 with K = T gives the DDPM *posterior*
  variance beta_tilde_t = beta_t (1 - abar_{t-1}) / (1 - abar_t), not the ancestral sampler's beta_t.
* ``dpm``: DPM-Solver++(2M) (Lu et al. 2022, alg. 2), the multistep second-order solver of the
  probability-flow ODE in data prediction. With lambda_t = log(alpha_t / sigma_t), h = lambda_s - lambda_t,
  r = h_prev / h:

      x_s = (sigma_s / sigma_t) x_t - alpha_s (e^{-h} - 1) ((1 + 1/(2r)) D_t - (1/(2r)) D_prev),

  first order (D_prev dropped) at the first step and at the step into t = 0 (DPM-Solver's
  "lower order final"): uniform in t, that last gap is the widest in lambda (for the paper's schedule
  at K = 20, lambda goes from ~1.7 at t = 52 to 4.6 at t = 0 while the previous step spans ~0.5), so
  r << 1 and the 2M extrapolation (1 + 1/(2r)) D_t - D_prev / (2r) overshoots: with an exact
  Gaussian denoiser it inflates the covariance by ~20 % at K = 20, against ~0.1 % when first order.

The last step of every solver goes from t = 0 to the clean sample (alpha = 1, sigma = 0), which is
x_0 = D_0: exactly the ancestral sampler's final, noise-free step (docs/reference.md 2.6, since
1 - abar_0 = beta_0). So K steps mean K network evaluations, T-1 and 0 included.

The per-step coefficients are computed once in float64 numpy from the float32 schedule, so every step
is one fused affine update ``x_s = a x_t + b D_t + c D_prev + d z`` of the carried state.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax.numpy as jnp
import numpy as np

from cgjax._validate import is_int, is_real
from cgjax.diffusion.schedule import Schedule, ddpm_step
from cgjax.errors import ConfigError

KINDS = ("ddpm", "ddim", "dpm")


@dataclasses.dataclass(frozen=True)
class SolverConfig:
    """Which reverse process to run: ``ddpm`` (ancestral, every timestep; the paper), or an
    accelerated solver on ``steps`` timesteps of the schedule (``ddim`` with ``eta``, ``dpm``)."""

    kind: str = "ddpm"
    steps: int | None = None  # None: every timestep of the schedule
    eta: float = 0.0  # DDIM stochasticity (0 = deterministic, 1 = DDPM-like)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ConfigError(f"--sampler (SolverConfig.kind) must be one of {KINDS}, got {self.kind!r}")
        if self.steps is not None and (not is_int(self.steps) or self.steps < 2):
            raise ConfigError(f"--steps (SolverConfig.steps) must be an integer >= 2 (t = T-1 and t = 0), "
                              f"got {self.steps!r}")
        if not (is_real(self.eta) and 0.0 <= self.eta <= 1.0):
            raise ConfigError(f"--eta (SolverConfig.eta) must be in [0, 1], got {self.eta!r}")
        if self.kind != "ddim" and self.eta != 0:
            raise ConfigError(f"--eta applies to --sampler ddim only (got kind={self.kind!r}, eta={self.eta})")



class Solver(NamedTuple):
    """A reverse process as seen by the sampler's scan.

    timesteps: int[K] the timesteps visited, T-1 first (the network is evaluated at each).
    stochastic: whether ``step`` uses its noise argument (the sampler then draws row_noise(t)).
    xs: pytree of per-step arrays with leading axis K (fed to the scan next to ``timesteps``).
    init: x_T f32[N, F] -> aux, the solver's extra carry.
    step: (aux, x_t f32[N, F], eps_hat f32[N, F], z f32[N, F] | None, xs_k) -> (x_next, aux).
    """

    timesteps: np.ndarray
    stochastic: bool
    xs: object
    init: Callable
    step: Callable


def solver_timesteps(T: int, steps: int | None) -> np.ndarray:
    """K uniformly spaced timesteps of a T-step schedule, T-1 first and 0 last (int64[K])."""
    K = T if steps is None else int(steps)
    if not 2 <= K <= T:
        raise ConfigError(f"--steps (SolverConfig.steps) must be in [2, {T}] (the schedule's T), got {K}")
    # spacing (T-1)/(K-1) >= 1, so rounding keeps the K values distinct
    return np.round(np.linspace(T - 1, 0, K)).astype(np.int64)


def _alpha_sigma(schedule: Schedule, timesteps: np.ndarray):
    abar = np.asarray(schedule.alpha_bars, np.float64)[timesteps]
    return np.sqrt(abar), np.sqrt(1.0 - abar)


def ddim_coefficients(schedule: Schedule, timesteps: np.ndarray, eta: float) -> np.ndarray:
    """f64[K, 4] coefficients (a, b, c, d) of x_s = a x_t + b D_t + c D_prev + d z for DDIM (c = 0).

    In terms of D_t: eps_hat = (x_t - alpha_t D_t) / sigma_t, so
    x_s = (sqrt(sigma_s^2 - vs^2) / sigma_t) x_t + (alpha_s - sqrt(sigma_s^2 - vs^2) alpha_t / sigma_t) D_t + vs z.
    """
    a_t, s_t = _alpha_sigma(schedule, timesteps)
    a_s = np.append(a_t[1:], 1.0)  # the step after t = 0 lands on the clean sample
    s_s = np.append(s_t[1:], 0.0)
    vs = eta * np.sqrt(s_s ** 2 / s_t ** 2 * (1.0 - a_t ** 2 / a_s ** 2))
    keep = np.sqrt(np.maximum(s_s ** 2 - vs ** 2, 0.0))  # the share of eps_hat kept in x_s
    return np.stack([keep / s_t, a_s - keep * a_t / s_t, np.zeros_like(a_t), vs], axis=1)


def dpm_coefficients(schedule: Schedule, timesteps: np.ndarray) -> np.ndarray:
    """f64[K, 4] coefficients (a, b, c, d) of DPM-Solver++(2M) (d = 0): first order at the first
    step and at the step into t = 0, second order in between, and D_0 at the last step (t = 0 ->
    clean, where h is infinite)."""
    a_t, s_t = _alpha_sigma(schedule, timesteps)
    lam = np.log(a_t / s_t)
    K = len(timesteps)
    coef = np.zeros((K, 4))
    for k in range(K - 1):  # t = timesteps[k] -> s = timesteps[k + 1]
        h = lam[k + 1] - lam[k]
        phi = -a_t[k + 1] * np.expm1(-h)  # -alpha_s (e^{-h} - 1) > 0
        coef[k, 0] = s_t[k + 1] / s_t[k]
        if k == 0 or k == K - 2:
            coef[k, 1] = phi
        else:
            r = (lam[k] - lam[k - 1]) / h
            coef[k, 1] = phi * (1.0 + 0.5 / r)
            coef[k, 2] = -phi * 0.5 / r
    coef[K - 1, 1] = 1.0  # x_0 = D_0
    return coef


def make_solver(schedule: Schedule, cfg: SolverConfig = SolverConfig()) -> Solver:
    """The :class:`Solver` for ``cfg`` on ``schedule``."""
    T = schedule.timesteps
    if cfg.kind == "ddpm":
        if cfg.steps not in (None, T):
            raise ConfigError(f"--sampler ddpm runs every timestep (--steps unset or {T}); use ddim with "
                              "--eta 1 to stride")
        timesteps = np.arange(T - 1, -1, -1)
        step = lambda aux, x_t, eps_hat, z, t: (ddpm_step(schedule, x_t, t, eps_hat, z), aux)
        return Solver(timesteps, True, jnp.asarray(timesteps, jnp.int32), lambda x_T: (), step)

    timesteps = solver_timesteps(T, cfg.steps)
    alpha, sigma = _alpha_sigma(schedule, timesteps)
    coef = dpm_coefficients(schedule, timesteps) if cfg.kind == "dpm" else ddim_coefficients(schedule, timesteps,
                                                                                             cfg.eta)
    stochastic = bool(np.any(coef[:, 3] > 0))
    xs = {"alpha": jnp.asarray(alpha, jnp.float32), "sigma": jnp.asarray(sigma, jnp.float32),
          "coef": jnp.asarray(coef, jnp.float32)}

    def step(d_prev, x_t, eps_hat, z, c):
        d_t = (x_t - c["sigma"] * eps_hat) / c["alpha"]  # the data prediction D_t
        a, b, cp, dz = c["coef"][0], c["coef"][1], c["coef"][2], c["coef"][3]
        x_s = a * x_t + b * d_t + cp * d_prev
        if stochastic:
            x_s = x_s + dz * z
        return x_s, d_t

    return Solver(timesteps, stochastic, xs, lambda x_T: jnp.zeros_like(x_T), step)
