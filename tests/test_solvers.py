"""Accelerated solvers: timestep grids, float64 re-derivations of one DDIM and one DPM-Solver++(2M)
step, the DDPM limit of DDIM, exact-Gaussian-denoiser oracles, and rejection over the steps taken."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cgjax.diffusion import denoiser
from cgjax.diffusion.schedule import ScheduleConfig, make_schedule
from cgjax.sampling.coherent import RejectionConfig, make_sampler
from cgjax.sampling.solvers import SolverConfig, make_solver, solver_timesteps

SCHEDULE = make_schedule(ScheduleConfig(timesteps=1000))
ABAR = np.asarray(SCHEDULE.alpha_bars, np.float64)
CFG = denoiser.DenoiserConfig(x_dim=2, cond_dims=(1,), hidden=4, n_layers=2, time_dim=2, cond_embed_dim=1)


def test_solver_timesteps_are_uniform_and_include_both_ends():
    np.testing.assert_array_equal(solver_timesteps(1000, None), np.arange(999, -1, -1))
    np.testing.assert_array_equal(solver_timesteps(1000, 1000), np.arange(999, -1, -1))
    ts = solver_timesteps(1000, 20)
    assert len(ts) == 20 and ts[0] == 999 and ts[-1] == 0 and np.all(np.diff(ts) < 0)
    assert set(np.diff(ts)) <= {-52, -53}  # 999 / 19 = 52.6
    np.testing.assert_array_equal(solver_timesteps(30, 10), [29, 26, 23, 19, 16, 13, 10, 6, 3, 0])
    with pytest.raises(ValueError):
        solver_timesteps(30, 31)
    with pytest.raises(ValueError):
        SolverConfig("dpm", 10, eta=0.5)
    with pytest.raises(ValueError):
        SolverConfig("ddim", 1)
    with pytest.raises(ValueError):
        make_solver(SCHEDULE, SolverConfig("ddpm", 50))


def _one_step(solver, k, x, eps, d_prev, z):
    xs_k = jax.tree.map(lambda a: a[k], solver.xs)
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    x_s, d_t = solver.step(f32(d_prev), f32(x), f32(eps), f32(z), xs_k)
    return np.asarray(x_s, np.float64), np.asarray(d_t, np.float64)


def test_one_ddim_step_matches_float64():
    """Song et al. (2021) eq. 12 in float64, at an interior step and at the last one (t = 0 -> x_0)."""
    rng = np.random.default_rng(0)
    x, eps, z = (rng.normal(size=(5, 3)) for _ in range(3))
    ts = solver_timesteps(1000, 50)
    solver = make_solver(SCHEDULE, SolverConfig("ddim", 50, eta=0.7))
    assert solver.stochastic
    for k in (0, 17, 49):
        a_t = ABAR[ts[k]]
        a_s = ABAR[ts[k + 1]] if k + 1 < 50 else 1.0
        x0 = (x - np.sqrt(1 - a_t) * eps) / np.sqrt(a_t)
        sig = 0.7 * np.sqrt((1 - a_s) / (1 - a_t)) * np.sqrt(1 - a_t / a_s)
        ref = np.sqrt(a_s) * x0 + np.sqrt(1 - a_s - sig ** 2) * eps + sig * z
        out, d = _one_step(solver, k, x, eps, np.zeros_like(x), z)
        np.testing.assert_allclose(d, x0, rtol=2e-5, atol=2e-5 / np.sqrt(a_t))
        np.testing.assert_allclose(out, ref, rtol=2e-5, atol=2e-5 / np.sqrt(a_t))
    assert not make_solver(SCHEDULE, SolverConfig("ddim", 50)).stochastic  # eta = 0: no noise drawn


def test_one_dpm_solver_pp_2m_step_matches_float64():
    """Lu et al. (2022) DPM-Solver++(2M) in float64: first order at the first step and into t = 0,
    the multistep correction with r = h_prev / h in between, and x_0 = D_0 at the last."""
    rng = np.random.default_rng(1)
    x, eps, d_prev = (rng.normal(size=(5, 3)) for _ in range(3))
    K = 20
    ts = solver_timesteps(1000, K)
    alpha, sigma = np.sqrt(ABAR[ts]), np.sqrt(1 - ABAR[ts])
    lam = np.log(alpha / sigma)
    solver = make_solver(SCHEDULE, SolverConfig("dpm", K))
    assert not solver.stochastic
    for k in (0, 1, 9, K - 2, K - 1):
        d = (x - sigma[k] * eps) / alpha[k]
        if k == K - 1:
            ref = d
        else:
            h = lam[k + 1] - lam[k]
            if k in (0, K - 2):
                mix = d
            else:
                r = (lam[k] - lam[k - 1]) / h
                mix = (1 + 1 / (2 * r)) * d - 1 / (2 * r) * d_prev
            ref = sigma[k + 1] / sigma[k] * x - alpha[k + 1] * (np.exp(-h) - 1) * mix
        out, d_out = _one_step(solver, k, x, eps, d_prev, np.zeros_like(x))
        tol = 2e-5 / alpha[k]  # D_t divides float32 rounding by alpha_t (0.006 at t = T-1)
        np.testing.assert_allclose(d_out, d, rtol=2e-5, atol=tol)
        np.testing.assert_allclose(out, ref, rtol=2e-5, atol=tol)


def test_ddim_eta_one_on_every_step_is_the_ddpm_posterior():
    """With K = T and eta = 1 DDIM's step is q(x_{t-1} | x_t, x_0 = D_t): its mean is the DDPM
    posterior mean and its variance beta_tilde_t = beta_t (1 - abar_{t-1}) / (1 - abar_t) (not the
    ancestral sampler's beta_t)."""
    solver = make_solver(SCHEDULE, SolverConfig("ddim", None, eta=1.0))
    coef = np.asarray(solver.xs["coef"], np.float64)[:-1]  # t = 999 .. 1
    t = np.arange(999, 0, -1)
    a_t, a_prev = ABAR[t], ABAR[t - 1]
    beta = 1 - a_t / a_prev  # DDIM sees the schedule through abar only (float32 betas differ by ~1e-4 relative)
    np.testing.assert_allclose(coef[:, 3] ** 2, beta * (1 - a_prev) / (1 - a_t), rtol=1e-4)
    np.testing.assert_allclose(coef[:, 0], np.sqrt(1 - beta) * (1 - a_prev) / (1 - a_t), rtol=1e-4)
    np.testing.assert_allclose(coef[:, 1], np.sqrt(a_prev) * beta / (1 - a_t), rtol=1e-4, atol=1e-7)


MU = np.array([1.5, -0.5])
COV = np.array([[1.0, 0.6], [0.6, 0.5]])


def _gaussian_eps_fn(mu, cov):
    """Exact E[eps | x_t] for x_0 ~ N(mu, cov), one ensemble member (see tests/test_sampler.py)."""
    mu, cov = jnp.asarray(mu, jnp.float32), jnp.asarray(cov, jnp.float32)

    def eps(params, batch_stats, x_t, t, conds, masks):
        a = SCHEDULE.alpha_bars[t]
        S = a * cov + (1 - a) * jnp.eye(len(mu))
        return (jnp.sqrt(1 - a) * jnp.linalg.solve(S, (x_t - jnp.sqrt(a) * mu[None]).T).T)[None]

    return eps


def _exact_law(solver: SolverConfig):
    """The exact output law of a deterministic solver with the exact Gaussian denoiser, in float64:
    eps_hat is affine in x_t, so every step is an affine map of x_{T-1} ~ N(0, I); we carry
    x = A z + b (and the previous data prediction) through the K steps with the textbook formulas
    (DDIM: Song et al. eq. 12; DPM-Solver++(2M): Lu et al. alg. 2, first order at the first step and
    into t = 0). Returns (mean, cov)."""
    ts = solver_timesteps(1000, solver.steps)
    al, sg = np.sqrt(ABAR[ts]), np.sqrt(1 - ABAR[ts])
    al_next, sg_next = np.append(al[1:], 1.0), np.append(sg[1:], 0.0)
    lam = np.log(al / sg)
    A, b = np.eye(2), np.zeros(2)
    D_prev = None
    for k, t in enumerate(ts):
        Si = np.linalg.inv(ABAR[t] * COV + (1 - ABAR[t]) * np.eye(2))
        eA, eb = sg[k] * Si @ A, sg[k] * Si @ (b - al[k] * MU)  # eps_hat = eA z + eb
        D = ((A - sg[k] * eA) / al[k], (b - sg[k] * eb) / al[k])
        if solver.kind == "ddim":
            A, b = al_next[k] * D[0] + sg_next[k] * eA, al_next[k] * D[1] + sg_next[k] * eb
        elif k == len(ts) - 1:
            A, b = D
        else:
            h = lam[k + 1] - lam[k]
            mix = D
            if 0 < k < len(ts) - 2:
                r = (lam[k] - lam[k - 1]) / h
                mix = tuple((1 + 0.5 / r) * d - 0.5 / r * p for d, p in zip(D, D_prev))
            A = sg_next[k] / sg[k] * A - al_next[k] * np.expm1(-h) * mix[0]
            b = sg_next[k] / sg[k] * b - al_next[k] * np.expm1(-h) * mix[1]
        D_prev = D
    return b, A @ A.T


@pytest.mark.parametrize("solver, law_tol", [(SolverConfig("ddim", 50), 0.08), (SolverConfig("dpm", 20), 0.02)],
                         ids=["ddim50", "dpm20"])
def test_exact_gaussian_denoiser_reproduces_data_distribution(solver, law_tol):
    """With the exact noise prediction the probability-flow solvers carry N(0, I) to the data law up
    to their discretisation error. The samples match the float64 law of the K-step solver within
    sampling error; that law is within ``law_tol`` of the data covariance. DDIM is first order: on
    this schedule at K = 50 it shrinks the variance by ~7 % (each step contracts by cos of its angle
    in the (alpha, sigma) plane), DPM-Solver++(2M) at K = 20 is within ~1 %."""
    sampler = make_sampler(CFG, SCHEDULE, rejection=RejectionConfig(enabled=False), solver=solver,
                           eps_fn=_gaussian_eps_fn(MU, COV))
    N = 4000
    res = sampler(None, None, jax.random.PRNGKey(0), jnp.zeros((N, 1, 1, 1)), jnp.ones((N, 1, 1)),
                  jnp.ones((N, 1)), jnp.arange(N))
    x = np.asarray(res.x0, np.float64)
    law_mean, law_cov = _exact_law(solver)
    se = np.sqrt(np.diag(COV) / N)
    assert np.all(np.abs(x.mean(0) - MU) < 4 * se), (x.mean(0), MU)
    assert np.all(np.abs(x.mean(0) - law_mean) < 4 * se), (x.mean(0), law_mean)
    np.testing.assert_allclose(np.cov(x.T), law_cov, atol=0.06)  # sampling error of an entry ~ 0.02
    np.testing.assert_allclose(law_cov, COV, atol=law_tol)
    np.testing.assert_allclose(np.cov(x.T), COV, atol=0.06 + law_tol)


def test_rejection_counts_the_fraction_of_steps_taken():
    """Two members that disagree (opposite sign) exactly while t >= 25: with DDIM on 10 of 30 steps
    [29, 26, 23, ...] that is 2 of the 10 steps taken, so frac = 0.2 (it would be 5/30 over T)."""
    schedule = make_schedule(ScheduleConfig(timesteps=30))
    N = 3

    def eps(params, batch_stats, x_t, t, conds, masks):
        sign = jnp.where(t >= 25, -1.0, 1.0)
        return jnp.stack([x_t + 1.0, sign * (x_t + 1.0)])

    args = (None, None, jax.random.PRNGKey(0), jnp.zeros((N, 2, 1, 1)), jnp.ones((N, 2, 1)),
            jnp.full((N, 2), 0.5), jnp.arange(N))
    sampler = make_sampler(CFG, schedule, rejection=RejectionConfig(max_fraction=0.15, max_attempts=3),
                           solver=SolverConfig("ddim", 10, eta=1.0), eps_fn=eps, return_distance=True)
    res = sampler(*args)
    np.testing.assert_allclose(np.asarray(res.frac_incoherent), 0.2)
    assert res.distance.shape == (N, 10)
    np.testing.assert_allclose(np.asarray(res.distance[:, :2]), 2.0, atol=1e-6)
    assert np.all(np.asarray(res.attempts) == 3) and not np.any(np.asarray(res.passed))
