"""experiments/exact_denoiser_samplers.py drives the library's solvers with an exact noise prediction.
For a Gaussian law every step is affine in x_t plus fresh noise, so the output law of the ancestral
sampler (sigma^2 = beta) and of DDIM with eta = 1 on every step (sigma^2 = beta_tilde) has a closed
form, carried here in float64 with the textbook DDPM formulas (Ho et al. 2020, eqs. 7 and 11). The
script's samples must match it, and the closed form shows the property the script reports: at
T = 100 the posterior variance beta_tilde under-disperses by several percent, beta does not."""

import numpy as np
import pytest

from cgjax.diffusion.schedule import ScheduleConfig, make_schedule
from cgjax.sampling.solvers import SolverConfig, make_solver
from experiment_scripts import load

MU = np.array([1.5, -0.5])
COV = np.array([[1.0, 0.6], [0.6, 0.5]])


def closed_form(schedule, kind: str):
    """(mean, cov) of the sampler's output from x_{T-1} ~ N(0, I) with the exact eps of N(MU, COV)."""
    abar = np.asarray(schedule.alpha_bars, np.float64)
    beta = np.asarray(schedule.betas, np.float64)
    m, C, I = np.zeros(2), np.eye(2), np.eye(2)
    for t in range(schedule.timesteps - 1, -1, -1):
        a, s = np.sqrt(abar[t]), np.sqrt(1 - abar[t])
        Si = np.linalg.inv(abar[t] * COV + (1 - abar[t]) * I)
        E, e = s * Si, -s * Si @ (a * MU)  # eps*(x) = E x + e
        if kind == "ddpm":  # x_{t-1} = (x_t - beta_t / s eps) / sqrt(1 - beta_t) + sqrt(beta_t) z
            M, c = (I - beta[t] / s * E) / np.sqrt(1 - beta[t]), -beta[t] / s * e / np.sqrt(1 - beta[t])
            var = beta[t] if t > 0 else 0.0
        else:  # the DDPM posterior q(x_{t-1} | x_t, x_0 = D_t), variance beta_tilde; x_0 = D_0 last
            Dm, dc = (I - s * E) / a, -s * e / a
            if t == 0:
                M, c, var = Dm, dc, 0.0
            else:
                ap = abar[t - 1]
                bt = 1 - abar[t] / ap
                c0, c1 = np.sqrt(1 - bt) * (1 - ap) / (1 - abar[t]), np.sqrt(ap) * bt / (1 - abar[t])
                M, c, var = c0 * I + c1 * Dm, c1 * dc, bt * (1 - ap) / (1 - abar[t])
        m, C = M @ m + c, M @ C @ M.T + var * I
    return m, C


@pytest.mark.parametrize("name, kind", [("ancestral", "ddpm"), ("ddim1@all", "ddim1")])
def test_exact_eps_samples_match_the_closed_form_law(name, kind):
    exp = load("exact_denoiser_samplers")
    schedule = make_schedule(ScheduleConfig(timesteps=100))
    n = 20000
    weights, means, covs = np.ones((n, 1)), np.broadcast_to(MU, (n, 1, 2)), COV[None]
    eps_fn = lambda x, a, s: exp.exact_eps(x, a, s, weights, means, covs)
    rng = np.random.default_rng(0)
    solver = make_solver(schedule, exp.samplers([50])[name])
    x = exp.run(rng.standard_normal((n, 2)), solver, schedule, eps_fn, rng)
    mean, cov = closed_form(schedule, kind)
    np.testing.assert_allclose(mean, MU, atol=1e-4)  # exact eps keeps the mean (x_{T-1} ~ N(0, I) is not quite q)
    assert np.all(np.abs(x.mean(0) - mean) < 4 * np.sqrt(np.diag(cov) / n))
    # variances within ~4 standard errors (relative se sqrt(2 / n) = 1%)
    np.testing.assert_allclose(np.diag(np.cov(x.T)), np.diag(cov), rtol=0.04)
    ratio = np.diag(cov) / np.diag(COV)
    if kind == "ddpm":
        np.testing.assert_allclose(ratio, 1.0, atol=0.02)
    else:  # beta_tilde at T = 100 loses ~8% of the variance, at T = 1000 ~1%
        assert np.all(ratio < 0.95), ratio
        ratio_1000 = np.diag(closed_form(make_schedule(ScheduleConfig(timesteps=1000)), kind)[1]) / np.diag(COV)
        assert np.all(ratio_1000 > 0.98), ratio_1000


def test_samplers_match_calibration_experiment():
    """The script scores the same samplers, by the same names, as experiments/calibration.py."""
    ours, theirs = load("exact_denoiser_samplers").samplers([50]), load("calibration").samplers([50])
    assert set(ours) <= set(theirs)
    assert all(ours[k] == theirs[k] for k in ours)
    assert SolverConfig("ddim", None, eta=1.0) == ours["ddim1@all"]
