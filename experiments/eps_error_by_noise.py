"""Where along the reverse process do a trained multi model's noise predictions go wrong? Against
the law's exact eps, per timestep (issue 11: why samples over-disperse and why the probability-flow
ODE diverged from the stochastic sampler on some laws).

For a zoo law, train a multi-condition model set with the quick preset (``--parametrisation``,
``--loss-weighting``), then for the complete test rows (target: the law's first modality, given
every other one):

  * on points of the *exact* forward process (x_t = a x_0 + s eps with x_0 an exact posterior draw):
    the relative error of the network's eps against the exact posterior eps,
    ||eps_net - eps*||^2 / ||eps*||^2, the error it implies in x_0 (times s / a), and the share of
    active ReLU units in each hidden layer (0 = a dead network at that t);
  * along the network's *own* ancestral trajectory: E|x_t|^2 / D (1 for the exact process).

The exact eps is -s grad log p_t(x_t | given), p_t the law's Gaussian-mixture posterior pushed
through the forward process: a mixture of N(a m_c, a^2 S_c + s^2 I) (float64).

Usage:
  python experiments/eps_error_by_noise.py --law two_wide --parametrisation eps
  python experiments/eps_error_by_noise.py --law two_wide --parametrisation v --loss-weighting eps
  python experiments/eps_error_by_noise.py --law issue11 --models /tmp/models   # the quick preset's model
                                                                   # that calibration.py --models trained
"""

from __future__ import annotations

import argparse
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from cgjax import pipeline
from cgjax.data import Scalers, split_cohort
from cgjax.datasets import zoo
from cgjax.diffusion import anchor, denoiser
from cgjax.diffusion.configs import build_configs
from cgjax.diffusion.parametrisation import LOSS_WEIGHTINGS, PARAMETRISATIONS, to_eps
from cgjax.diffusion.schedule import ddpm_step, make_schedule
from cgjax.presets import PRESETS

from calibration import model_dir  # a sibling script: where its --models keeps each law's checkpoint


def exact_eps(x, a, s, weights, means, covs):
    """f64[N, D]: -s grad log p_t(x) for the mixture sum_c w_nc N(a m_nc, a^2 S_c + s^2 I)."""
    N, C, D = means.shape
    logp, grads = np.empty((N, C)), np.empty((C, N, D))
    for c in range(C):
        cov = a * a * covs[c] + s * s * np.eye(D)
        prec = np.linalg.inv(cov)
        r = x - a * means[:, c]
        pr = r @ prec
        logp[:, c] = np.log(weights[:, c] + 1e-300) - 0.5 * (pr * r).sum(1) - 0.5 * np.linalg.slogdet(cov)[1]
        grads[c] = -pr
    resp = np.exp(logp - logp.max(1, keepdims=True))
    resp /= resp.sum(1, keepdims=True)
    return -s * np.einsum("nc,cnd->nd", resp, grads)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--law", default="two_wide")
    ap.add_argument("--n-samples", type=int, default=3000)
    ap.add_argument("--parametrisation", default=None, choices=PARAMETRISATIONS, help="default: the quick preset's")
    ap.add_argument("--loss-weighting", default=None, choices=LOSS_WEIGHTINGS, help="default: the quick preset's")
    ap.add_argument("--anchor", default=None, choices=("none", "gaussian", "mixture"), help="default: the quick preset's")
    ap.add_argument("--models", default=None,
                    help="calibration.py's --models folder: reuse (or write) this law's checkpoint there")
    ap.add_argument("--max-rows", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    member = zoo.law(args.law, n_samples=args.n_samples)
    cohort = member.cohort(seed=args.seed)
    arch, sched_cfg, tcfg = build_configs({}, None, None, PRESETS["quick"])
    arch = dataclasses.replace(arch, parametrisation=args.parametrisation or arch.parametrisation,
                               anchor=args.anchor or arch.anchor)
    tcfg = dataclasses.replace(tcfg, seed=args.seed, loss_weighting=args.loss_weighting or tcfg.loss_weighting)
    ms = pipeline.train(cohort, model_dir(args.models, member.name, args.n_samples, args.seed), arch=arch,
                        schedule_cfg=sched_cfg, train_cfg=tcfg, progress=False)

    target = member.modalities[0]
    test_c = split_cohort(cohort, seed=42).split("test")  # pipeline.train's split
    rows = slice(0, min(args.max_rows, test_c.n_samples))
    given_names = [m for m in ms.modalities if m != target]
    test = {m: v[rows] for m, v in pipeline.scaled_inputs(ms, test_c).items()}
    mu, sd = Scalers.from_dict(ms.scalers)[target]
    post = member.conditional(target, {m: test_c.data[m][rows].astype(np.float64) for m in given_names})
    means, covs = (post.means - mu) / sd, post.covs / np.outer(sd, sd)[None]
    N, _, D = means.shape

    # the multi model, all conditions present (slot order of its spec), in inference mode
    group, idx = ms.find(f"{target}_from_multi")
    cfg = group.dcfg
    params, stats = jax.tree.map(lambda a: a[idx], group.params), jax.tree.map(lambda a: a[idx], group.batch_stats)
    C = max(cfg.cond_dims)
    conds = jnp.asarray(np.stack([np.pad(test[c], ((0, 0), (0, C - test[c].shape[1])))
                                  for c in group.specs[idx].conds], 1), jnp.float32)
    masks = jnp.ones(conds.shape[:2], jnp.float32)
    schedule = make_schedule(ms.schedule_cfg)
    abar = np.asarray(schedule.alpha_bars, np.float64)

    @jax.jit
    def net(x, t):
        """(eps_hat f32[N, D], active share per hidden layer f32[L - 1])."""
        tv = jnp.full((N,), t, jnp.int32)
        out, _, hidden = denoiser.apply(params, stats, x, tv, conds, masks, cfg, train=False, return_hidden=True)
        if cfg.anchor != "none":  # the model's output is the network's plus its Gaussian anchor's
            out = out + anchor.output(params["anchor"], conds, masks, x, schedule.alpha_bars[t], cfg.parametrisation)
        active = jnp.stack([jnp.mean(h > 0) for h in hidden])
        return to_eps(cfg.parametrisation, out, x, schedule.alpha_bars[t]), active

    rng = np.random.default_rng(args.seed)
    x0 = post.sample(rng, 1)[0]
    x0 = (x0 - mu) / sd
    x = rng.standard_normal((N, D))  # the network's own ancestral trajectory
    print(f"{member.name}, n = {args.n_samples}, multi model, parametrisation {ms.arch.parametrisation}, "
          f"loss weighting {ms.train_cfg.loss_weighting}, T = {schedule.timesteps}, {N} test rows, "
          f"target {target} ({D})")
    print("|   t | abar | rel. eps error (exact x_t) | implied x0 error / D | active ReLU share | E|x_t|^2/D (own trajectory) |")
    print("|---|---|---|---|---|---|")
    for t in range(schedule.timesteps - 1, -1, -1):
        a, s = np.sqrt(abar[t]), np.sqrt(1 - abar[t])
        x_exact = a * x0 + s * rng.standard_normal((N, D))
        e_net, active = net(jnp.asarray(x_exact, jnp.float32), jnp.int32(t))
        e_star = exact_eps(x_exact, a, s, post.weights, means, covs)
        err = np.sum((np.asarray(e_net, np.float64) - e_star) ** 2, 1)
        own_sq = float(np.mean(x ** 2))
        e_own, _ = net(jnp.asarray(x, jnp.float32), jnp.int32(t))
        x = np.asarray(ddpm_step(schedule, jnp.asarray(x, jnp.float32), jnp.int32(t), e_own,
                                 jnp.asarray(rng.standard_normal((N, D)), jnp.float32)), np.float64)
        if t % 10 == 0 or t < 10 or t == schedule.timesteps - 1:
            print(f"| {t} | {abar[t]:.2g} | {err.mean() / np.sum(e_star ** 2, 1).mean():.3f} | "
                  f"{err.mean() * (s / a) ** 2 / D:.3g} | {', '.join(f'{v:.2f}' for v in np.asarray(active))} | "
                  f"{own_sq:.2f} |")
    dev = np.mean((x - (post.mean() - mu) / sd) ** 2)
    print(f"final samples: mean squared deviation from the posterior mean {dev:.3f} "
          f"(posterior variance {np.mean(post.variance() / sd ** 2):.3f})")


if __name__ == "__main__":
    main()
