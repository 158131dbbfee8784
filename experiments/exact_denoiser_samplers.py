"""How calibrated is each sampler when the denoiser is perfect? The floor a trained network cannot beat.

``experiments/calibration.py`` scores trained models; part of what it measures may be the sampler
itself (its variance schedule, its step count), not the network. Here every sampler of the library
(:func:`cgjax.sampling.solvers.make_solver`, the same ``step`` the models' scan runs) is driven by the
*exact* posterior noise prediction of a zoo law, eps*(x_t) = -s grad log p_t(x_t | given), with p_t
the law's Gaussian-mixture posterior pushed through the forward process
(``experiments/eps_error_by_noise.py``'s ``exact_eps``, float64), on the same rows and standardised
space as ``calibration.py`` (complete test rows of the law's cohort, split seed 42; the law's first
modality given every other one), and scored by the same :func:`cgjax.scoring.calibration.calibration_scores`
against exact posterior draws.

Whatever energy excess or variance ratio a sampler shows here comes from its discretisation of the
reverse process alone, at the schedule's T.

Usage:
  python experiments/exact_denoiser_samplers.py                                   # 7 laws, T = 100
  python experiments/exact_denoiser_samplers.py --laws issue11 --timesteps 100 1000 --max-rows 60
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from cgjax import pipeline
from cgjax.data import split_cohort
from cgjax.datasets import zoo
from cgjax.diffusion.schedule import ScheduleConfig, make_schedule
from cgjax.sampling.solvers import make_solver
from cgjax.scoring import calibration as cal

# sibling scripts (``python experiments/<name>.py`` puts this folder on the path): the exact
# posterior eps, and the samplers calibration.py scores, under the same names
from calibration import samplers
from eps_error_by_noise import exact_eps

LAWS = ("issue11", "two_wide", "noisy_small", "five_narrow", "tcga_default", "0", "1")


def run(x_T, solver, schedule, eps_fn, rng):
    """The solver's reverse process from x_T f64[M, D] with ``eps_fn(x, t)``, in float64 except for
    the solver's own float32 coefficients (a diagnostic loop, not a hot path)."""
    x = jnp.asarray(x_T, jnp.float32)
    aux = solver.init(x)
    abar = np.asarray(schedule.alpha_bars, np.float64)
    for k, t in enumerate(solver.timesteps):
        a, s = np.sqrt(abar[t]), np.sqrt(1 - abar[t])
        eps = jnp.asarray(eps_fn(np.asarray(x, np.float64), a, s), jnp.float32)
        z = jnp.asarray(rng.standard_normal(x.shape), jnp.float32) if solver.stochastic else None
        x, aux = solver.step(aux, x, eps, z, jax.tree.map(lambda v: v[k], solver.xs))
    return np.asarray(x, np.float64)


def law_rows(law_name, n_samples: int, max_rows: int, seed: int):
    """The law, its target, the given modalities and the exact posterior of the complete test rows
    in the standardised space of calibration.py (scalers fitted on the train split)."""
    member = zoo.law(int(law_name) if str(law_name).lstrip("-").isdigit() else law_name, n_samples=n_samples)
    cohort = member.cohort(seed=seed)
    target = member.modalities[0]
    _, _, scalers = pipeline.split_and_scale(cohort, split_seed=42)
    test_c = split_cohort(cohort, seed=42).split("test")
    rows = slice(0, min(max_rows, test_c.n_samples))
    given = [m for m in member.modalities if m != target]
    post = member.conditional(target, {m: test_c.data[m][rows].astype(np.float64) for m in given})
    mu, sd = scalers[target]
    y = (test_c.data[target][rows].astype(np.float64) - mu) / sd
    return member, target, post, mu, sd, y


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--laws", nargs="+", default=list(LAWS), help="zoo names or int seeds")
    ap.add_argument("--n-samples", type=int, default=3000)
    ap.add_argument("--timesteps", type=int, nargs="+", default=[100])
    ap.add_argument("--steps", type=int, default=50, help="K of the accelerated samplers")
    ap.add_argument("--max-rows", type=int, default=150)
    ap.add_argument("--replicates", type=int, default=10)
    ap.add_argument("--coverage-replicates", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="CSV of every row")
    args = ap.parse_args(argv)
    records = []
    for law_name in args.laws:
        member, target, post, mu, sd, y = law_rows(law_name, args.n_samples, args.max_rows, args.seed)
        means, covs = (post.means - mu) / sd, post.covs / np.outer(sd, sd)[None]
        N, _, D = means.shape
        R = args.coverage_replicates
        # replicate-major rows, as the samplers' [R, N, D]
        w_rep, m_rep = np.tile(post.weights, (R, 1)), np.tile(means, (R, 1, 1))
        eps_fn = lambda x, a, s: exact_eps(x, a, s, w_rep, m_rep, covs)
        post_mean, post_var = (post.mean() - mu) / sd, post.variance() / sd ** 2
        exact = (post.sample(args.seed + 1, args.replicates) - mu) / sd
        exact_many = (post.sample(args.seed + 2, R) - mu) / sd
        for T in args.timesteps:
            schedule = make_schedule(ScheduleConfig(timesteps=T))
            for name, cfg in samplers([min(args.steps, T)]).items():
                rng = np.random.default_rng(args.seed + 7)
                x = run(rng.standard_normal((R * N, D)), make_solver(schedule, cfg), schedule, eps_fn, rng)
                samples = x.reshape(R, N, D)
                ten = cal.calibration_scores(samples[: args.replicates], y, exact=exact, posterior_mean=post_mean,
                                             posterior_var=post_var)
                wide = cal.calibration_scores(samples, y, exact=exact_many, posterior_mean=post_mean,
                                              posterior_var=post_var)
                rec = dict(law=member.name, n_rows=N, dims=member.describe()["dims"], target=target, timesteps=T,
                           sampler=name, variance_ratio=ten["variance_ratio"],
                           energy_excess_pct=ten["energy_excess_pct"], energy_excess_se_pct=ten["energy_excess_se_pct"],
                           r2_mean=ten["r2_mean"], r2_exact_mean=ten["r2_exact_mean"], coverage=wide["coverage"],
                           pit_centre_excess=wide["pit_centre_excess"])
                records.append(rec)
                print(f"{member.name:>12} T={T:<5} {name:<10} var x{rec['variance_ratio']:.3f} "
                      f"ES {rec['energy_excess_pct']:+.2f}% (se {rec['energy_excess_se_pct']:.2f}) "
                      f"R2 {rec['r2_mean']:.3f}/{rec['r2_exact_mean']:.3f} cov90 {rec['coverage']:.3f}", flush=True)
    df = pd.DataFrame(records)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(args.out, index=False)
    print(df.pivot_table(index=["law", "timesteps"], columns="sampler", values="energy_excess_pct").round(2)
          .to_string())
    return df


if __name__ == "__main__":
    main()
