"""Test-only denoisers for the ensemble sampler (:func:`cgjax.sampling.coherent.make_sampler`),
wrapped as the :class:`cgjax.sampling.algebra.Model` it takes."""

import jax.numpy as jnp

from cgjax.sampling.algebra import Model


def eps_model(eps_fn, x_dim: int, parametrisation: str = "eps") -> Model:
    """Wrap ``eps_fn(params, batch_stats, x_t f32[N, F], t, conds, masks) -> f32[M, N, F]`` (F =
    ``x_dim``; an output in the given ``parametrisation``) as a :class:`Model` whose ``prepare`` only
    holds its arguments."""

    def prepare(params, batch_stats, conds, masks):
        return (params, batch_stats, conds, masks)

    def eps(prepared, x_t, t):
        params, batch_stats, conds, masks = prepared
        return eps_fn(params, batch_stats, x_t, t, conds, masks)

    return Model(prepare, eps, x_dim, parametrisation)


def gaussian_eps_fn(mu, cov, schedule):
    """The exact denoiser of x_0 ~ N(mu, cov), one ensemble member (params unused):
    E[eps | x_t] = sqrt(1 - abar_t) S_t^{-1} (x_t - sqrt(abar_t) mu),  S_t = abar_t cov + (1 - abar_t) I."""
    mu, cov = jnp.asarray(mu, jnp.float32), jnp.asarray(cov, jnp.float32)

    def eps(params, batch_stats, x_t, t, conds, masks):
        a = schedule.alpha_bars[t]
        S = a * cov + (1 - a) * jnp.eye(len(mu))
        return (jnp.sqrt(1 - a) * jnp.linalg.solve(S, (x_t - jnp.sqrt(a) * mu[None]).T).T)[None]

    return eps


def gaussian_model(mu, cov, schedule) -> Model:
    """:func:`gaussian_eps_fn` as a :class:`Model`."""
    return eps_model(gaussian_eps_fn(mu, cov, schedule), len(mu))
