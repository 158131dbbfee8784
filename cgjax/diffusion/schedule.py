"""The DDPM noise process (docs/reference.md 2.1, 2.2, 2.6).

Linear beta schedule, epsilon prediction, and the ancestral update with sigma_t^2 = beta_t.
Timesteps are 0-based: t in {0, ..., T-1}; x_{T-1} is (almost) pure noise and the last reverse step
(t = 0) adds no noise.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from cgjax._validate import is_int, is_real
from cgjax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """T timesteps with betas linearly spaced from ``beta_start`` to ``beta_end`` (paper: 1000, 1e-4, 0.02)."""

    timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    # With fewer than 1000 steps the paper's betas would leave much of x_0 in x_{T-1} (abar_{T-1} =
    # 0.37 at T = 100). When True, betas are multiplied by 1000 / T, which keeps the total noise
    # sum(beta) and so abar_{T-1} ~ 4e-5 as at T = 1000. No effect at T = 1000.
    scale_to_timesteps: bool = True

    def __post_init__(self):
        if not (is_int(self.timesteps) and self.timesteps >= 1):
            raise ConfigError(f"--timesteps (ScheduleConfig.timesteps) must be an integer >= 1, got {self.timesteps!r}")
        if not (is_real(self.beta_start) and is_real(self.beta_end) and 0.0 < self.beta_start <= self.beta_end < 1.0):
            raise ConfigError(f"ScheduleConfig needs 0 < beta_start <= beta_end < 1, got {self.beta_start}, {self.beta_end}")
        top = self.beta_end * (1000.0 / self.timesteps if self.scale_to_timesteps and self.timesteps > 1 else 1.0)
        if top >= 1.0:
            raise ConfigError(f"beta_end * 1000 / T = {top:.3g} >= 1: too few timesteps ({self.timesteps}) "
                             "for this schedule; use more steps or scale_to_timesteps=False")


class Schedule(NamedTuple):
    """Per-timestep constants, each f32[T]."""

    betas: jnp.ndarray
    alphas: jnp.ndarray  # 1 - beta_t
    alpha_bars: jnp.ndarray  # prod_{s <= t} alpha_s

    @property
    def timesteps(self) -> int:
        return int(self.betas.shape[0])


def make_schedule(cfg: ScheduleConfig = ScheduleConfig()) -> Schedule:
    """Build the schedule. The cumulative product is taken in float64 and only then cast to
    float32, so alpha_bar is accurate to float32 rounding even for T = 1000 (the reference takes
    it in float32; the two agree to ~1e-6 relative)."""
    scale = 1000.0 / cfg.timesteps if cfg.scale_to_timesteps else 1.0
    if cfg.timesteps == 1:
        betas = np.array([cfg.beta_start], dtype=np.float64)
    else:
        betas = np.linspace(cfg.beta_start * scale, cfg.beta_end * scale, cfg.timesteps, dtype=np.float64)
    alphas = 1.0 - betas
    alpha_bars = np.cumprod(alphas)
    return Schedule(*(jnp.asarray(a, dtype=jnp.float32) for a in (betas, alphas, alpha_bars)))


def q_sample(schedule: Schedule, x0, t, eps):
    """Draw x_t ~ q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) given the noise ``eps``.

    x0, eps: f32[..., D]; t: int[...] (broadcast against the leading axes of x0).
    """
    abar = schedule.alpha_bars[t][..., None]
    return jnp.sqrt(abar) * x0 + jnp.sqrt(1.0 - abar) * eps


def ddpm_step(schedule: Schedule, x_t, t, eps_hat, z):
    """One ancestral step x_t -> x_{t-1} (docs/reference.md 2.6):

        x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) * eps_hat) / sqrt(alpha_t) + sigma_t z,

    with sigma_t^2 = beta_t and no noise at t = 0. We divide by sqrt(alpha_0) at t = 0 as the
    reference's single-model sampler does (its coherent sampler divides by 1 there, docs/reference.md 6.18;
    the difference is a factor 1.00005). ``t`` is a scalar int; x_t, eps_hat, z: f32[..., D].
    """
    beta = schedule.betas[t]
    coef = beta / jnp.sqrt(1.0 - schedule.alpha_bars[t])
    mean = (x_t - coef * eps_hat) / jnp.sqrt(schedule.alphas[t])
    sigma = jnp.where(t > 0, jnp.sqrt(beta), 0.0)
    return mean + sigma * z
