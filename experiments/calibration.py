"""Are cgjax's samples calibrated on cohorts it was never tuned on? A grid over the zoo of laws.

For every law of ``--laws`` (names of ``cgjax.datasets.zoo.ZOO`` or int seeds) and every cohort size
of ``--sizes``: draw the cohort, train a model set with the library (``cgjax.pipeline.train``; the
same number of optimiser steps, ``--train-steps``, at every size), and
impute ``--target`` (default: each law's first modality) for the complete test rows from every
other modality, with each method (single, multi, coherent) and each sampler:

  * ``ancestral``: DDPM on every timestep (the paper's sampler, sigma^2 = beta; the library's default);
  * ``ddim1@all``: DDIM with eta 1 on every timestep, i.e. the ancestral sampler with the posterior
    variance beta_tilde (``cgjax quickstart``'s sampler until 2026-11-30);
  * ``ddim1@K`` / ``ddim0@K``: DDIM with eta 1 / 0 on K timesteps;  ``dpm@K``: DPM-Solver++(2M).

Each sampler draws ``--coverage-replicates`` (>= 50) replicates per row; the first ``--replicates``
(10) are scored as a user's 10 replicates, against the exact posterior of the law
(:mod:`cgjax.scoring.calibration`, in the models' standardised space):

  r2_mean: pooled R2 of the 10-replicate mean; gap_closed: its share of the R2 gap from KNN (k = 10)
  to the exact posterior mean; energy_excess_pct: energy score vs 10 exact posterior draws;
  variance_ratio: sampled / exact posterior variance; coverage: of the central 90% interval of all
  replicates; pit_deviation / pit_centre_excess: rank histogram of the truth among all replicates
  (> 0 centre excess = over-dispersed).

Next to them: KNN (k = 10) and IterativeImputer (BayesianRidge) point predictions, exact posterior
draws (the ideal sampler, same R), and the probabilistic baselines of
:mod:`cgjax.evaluate.probabilistic` (``gaussian_sample``, ``joint_gaussian_sample``, ``mixture_sample``,
``mice_sample``, ``knn_sample`` with k = 10; fitted on the train split's complete rows,
``joint_gaussian_sample`` on every row with the target, ``mixture_sample``'s weights on every row
with the given modalities; scored exactly like the samplers), with the energy score
of multi / coherent over each of theirs in ``calibration.md`` (issue 14). Writes ``calibration.csv``,
``calibration.md`` (the table, the issue-11 targets, met or missed, with numbers, and the energy
ratios) and ``calibration.png`` (calibration against cohort size) to ``--out``.

Targets (issue 11), checked on laws with >= 3000 samples for multi and coherent with the ancestral
sampler: variance ratio in [0.8, 1.25], energy excess <= 5%, gap closed >= 60%; and an accelerated
sampler with <= 50 network evaluations within 2% of the ancestral energy score.

``--model-preset quick`` trains with a library preset (``cgjax train --preset quick``: its sizes,
epochs, batch and T) instead of the grid's ``--hidden`` / ``--n-layers`` / ``--timesteps`` /
``--train-steps``; architecture and training flags given explicitly (``--hidden``, ``--n-layers``,
``--cond-embed-dim``, ``--parametrisation``, ``--anchor``, ``--min-steps``, ``--ema-decay``, ...) replace the
preset's values, and the CSV records what was trained. Note that ``--train-steps`` counts epochs
of the whole train split (epochs = steps x 256 / train rows) while an epoch is ceil(n_valid / batch)
steps of a group's median model, so with missing modalities the models take fewer optimiser steps
than ``--train-steps``.

Usage:
  python experiments/calibration.py --quick --out /tmp/calibration      # ~50 min on 2 CPU cores at load 15
  python experiments/calibration.py --model-preset quick --laws issue11 noisy_small --sizes 3000 --steps 20
  python experiments/calibration.py --model-preset quick --laws issue11 --sizes 3000 --models /tmp/models \
      --samplers ddim1@all   # reuses the models the previous line's run saved with --models /tmp/models
  python experiments/calibration.py --laws issue11 two_wide five_narrow large 0 1 2 \\
      --sizes 500 3000 30000 --train-steps 6000 --timesteps 1000 --steps 10 20 50 --out results/calibration
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from cgjax import pipeline
from cgjax.data import Scalers, split_cohort
from cgjax.datasets import zoo
from cgjax.diffusion.schedule import ScheduleConfig
from cgjax.diffusion.train import TrainConfig
from cgjax.diffusion.denoiser import ArchConfig
from cgjax.diffusion.configs import build_configs
from cgjax.presets import PRESETS
from cgjax.diffusion.anchor import ANCHORS
from cgjax.diffusion.parametrisation import LOSS_WEIGHTINGS, PARAMETRISATIONS
from cgjax.ensemble import sample_target
from cgjax.scoring import calibration as cal
from cgjax.evaluate.baselines import iterative_impute, knn_impute
from cgjax.evaluate.probabilistic import (gaussian_conditional_sample, joint_gaussian_sample, knn_sample, mice_sample,
                                         mixture_conditional_sample)
from cgjax.scoring.metrics import r2_pooled
from cgjax.sampling.options import SampleOptions
from cgjax.sampling.solvers import SolverConfig

METHODS = ("single", "multi", "coherent")
# Probabilistic baselines (cgjax.evaluate.probabilistic; fitted on the train split, like the point
# baselines): name -> f(train, test, given, target, replicates, seed) -> f32[R, N, D].
PROB_BASELINES = {
    "gaussian_sample": lambda tr, te, g, t, r, s: gaussian_conditional_sample(tr, te, g, t, replicates=r, seed=s),
    "joint_gaussian_sample": lambda tr, te, g, t, r, s: joint_gaussian_sample(tr, te, g, t, replicates=r, seed=s),
    "mixture_sample": lambda tr, te, g, t, r, s: mixture_conditional_sample(tr, te, g, t, replicates=r, seed=s),
    "mice_sample": lambda tr, te, g, t, r, s: mice_sample(tr, te, g, t, replicates=r, seed=s),
    "knn_sample": lambda tr, te, g, t, r, s: knn_sample(tr, te, g, t, replicates=r, seed=s, k=10),
}
QUICK = dict(laws=("issue11", "two_wide"), sizes=(1000, 3000), methods=METHODS, steps=(10,), timesteps=100,
             train_steps=1500, hidden=128, n_layers=3, max_rows=150, coverage_replicates=50)
FULL = dict(laws=tuple(zoo.ZOO), sizes=(500, 3000, 30000), methods=METHODS, steps=(10, 20, 50), timesteps=1000,
            train_steps=6000, hidden=256, n_layers=3, max_rows=500, coverage_replicates=100)
TRAIN = dict(batch_size=256, steps_per_call=50, learning_rate=3e-3, lr_schedule="cosine")


def samplers(steps) -> dict[str, SolverConfig]:
    """Sampler name -> solver: the ancestral sampler (the paper's, sigma^2 = beta), the same with the
    posterior variance (DDIM eta 1 on every timestep), then DDIM (eta 1, 0) and DPM-Solver++ per K."""
    out = {"ancestral": SolverConfig("ddpm"), "ddim1@all": SolverConfig("ddim", None, eta=1.0)}
    for k in steps:
        out[f"ddim1@{k}"] = SolverConfig("ddim", k, eta=1.0)
        out[f"ddim0@{k}"] = SolverConfig("ddim", k, eta=0.0)
        out[f"dpm@{k}"] = SolverConfig("dpm", k)
    return out


def model_dir(models, law: str, n_samples: int, seed: int) -> Path | None:
    """Where ``--models`` keeps one cell's checkpoint (None without ``--models``); other scripts
    (eps_error_by_noise.py) read the same models from here."""
    return Path(models) / f"{law}-n{n_samples}-seed{seed}" if models else None


def draw(ms, target: str, given: dict, method: str, solver: SolverConfig, replicates: int, seed: int,
         composition: str = "average", corrector_steps: int = 0, corrector_snr: float = 0.5) -> np.ndarray:
    """The one call into the library's sampling API (kept here alone so that API changes touch one
    function): f32[R, N, D] samples of ``target`` in the models' standardised space."""
    options = SampleOptions(method=method, replicates=replicates, seed=seed, solver=solver, composition=composition,
                            corrector_steps=corrector_steps, corrector_snr=corrector_snr)
    return sample_target(ms, target, given, options).x


def run_cell(law_name, n_samples: int, args, solvers: dict) -> list[dict]:
    """Train on one cohort of one law and score every method x sampler and the baselines."""
    member = zoo.law(int(law_name) if str(law_name).lstrip("-").isdigit() else law_name, n_samples=n_samples)
    cohort = member.cohort(seed=args.seed)
    target = args.target or member.modalities[0]
    t0 = time.time()
    split = split_cohort(cohort, seed=42)  # the split pipeline.train uses (its default split_seed)
    test_c, train_c = split.split("test"), split.split("train")
    # The same number of optimiser steps at every cohort size (epochs of the whole train split).
    # training flags given on the command line (None: the preset's value, or TrainConfig's default)
    given = {k: getattr(args, k) for k in ("select_by", "ema_decay", "single_cond_dropout", "loss_weighting",
                                           "min_snr_gamma", "eval_every", "min_steps", "weight_decay",
                                           "residual_gains")
             if getattr(args, k) is not None}
    if args.model_preset:  # the library's preset (cgjax train --preset): its sizes, epochs and schedule
        arch, sched, train_cfg = build_configs({}, args.epochs, None, PRESETS[args.model_preset])
        train_cfg = dataclasses.replace(train_cfg, seed=args.seed, **given)
        # sizes given on the command line replace the preset's
        arch = dataclasses.replace(arch, **args.arch_given)
    else:
        epochs = args.epochs or max(1, -(-args.train_steps * TRAIN["batch_size"] // train_c.n_samples))
        train_cfg = TrainConfig(**{**TRAIN, "epochs": epochs, "eval_every": epochs, "seed": args.seed, **given})
        arch = ArchConfig(**{"hidden": args.hidden, "n_layers": args.n_layers, "time_dim": 32,
                             "parametrisation": "eps", **args.arch_given})
        sched = ScheduleConfig(timesteps=args.timesteps)
    # --models: one checkpoint per cell, resumed (a finished one is reused as is), so that another
    # sampler or composition can be scored on the same models without training them again
    ms = pipeline.train(cohort, model_dir(args.models, member.name, n_samples, args.seed), arch=arch,
                        schedule_cfg=sched, train_cfg=train_cfg, progress=False)
    t_train = time.time() - t0
    train_cfg, epochs = ms.train_cfg, ms.train_cfg.epochs  # as trained (min_steps may raise the epochs)
    test = pipeline.scaled_inputs(ms, test_c)
    rows = slice(0, min(args.max_rows, test_c.n_samples))
    test = {m: v[rows] for m, v in test.items()}
    train = pipeline.scaled_inputs(ms, train_c)
    given_names = [m for m in ms.modalities if m != target]
    given = {m: test[m] for m in given_names}

    # The exact posterior of the complete test rows, mapped to the standardised space.
    mu, sd = Scalers.from_dict(ms.scalers)[target]
    cond = member.conditional(target, {m: test_c.data[m][rows].astype(np.float64) for m in given_names})
    y = test[target].astype(np.float64)
    post_mean = (cond.mean() - mu) / sd
    post_var = cond.variance() / sd ** 2
    exact = (cond.sample(args.seed + 1, args.replicates) - mu) / sd
    exact_many = (cond.sample(args.seed + 2, args.coverage_replicates) - mu) / sd
    knn = knn_impute(train, given, given_names, target, k=10)
    mice = iterative_impute(train, given, given_names, target)

    base = dict(law=member.name, n_samples=n_samples, parametrisation=ms.arch.parametrisation,
                loss_weighting=train_cfg.loss_weighting, select_by=train_cfg.select_by, ema_decay=train_cfg.ema_decay,
                weight_decay=train_cfg.weight_decay, anchor=ms.arch.anchor,
                residual_gains=" ".join(f"{g:g}" for g in train_cfg.residual_gains),
                hidden=ms.arch.hidden, n_layers=ms.arch.n_layers, cond_embed_dim=ms.arch.cond_embed_dim,
                preset=args.model_preset or f"grid {args.train_steps or '-'} steps", target=target,
                dims=member.describe()["dims"],
                n_rows=len(y), epochs=epochs, train_seconds=round(t_train, 1))
    na = dict.fromkeys(("variance_ratio", "energy_excess_pct", "energy_excess_se_pct", "coverage", "pit_deviation",
                        "pit_centre_excess"), np.nan)
    rec = lambda method, sampler, scores, composition="average", corrector=0: {
        **base, "method": method, "sampler": sampler, "composition": composition, "corrector": corrector, **scores}
    out = [rec("knn", "-", {**na, "r2_mean": r2_pooled(y, knn), "gap_closed": 0.0}),
           rec("iterative", "-", {**na, "r2_mean": r2_pooled(y, mice), "gap_closed": cal.gap_closed(y, mice, knn, post_mean)})]

    def score(samples):
        ten = cal.calibration_scores(samples[: args.replicates], y, exact=exact, posterior_mean=post_mean,
                                     posterior_var=post_var, baseline=knn)
        wide = cal.calibration_scores(samples, y, exact=exact_many, posterior_mean=post_mean, posterior_var=post_var)
        ten.update(coverage=wide["coverage"], pit_deviation=wide["pit_deviation"],
                   pit_centre_excess=wide["pit_centre_excess"])
        return ten

    out.append(rec("exact", "posterior", score(np.concatenate([exact, (cond.sample(args.seed + 3, args.coverage_replicates
                                                                                   - args.replicates) - mu) / sd]))))
    if not args.no_prob_baselines:
        # Fitted on the complete training rows (mice_sample then shares one fit across replicates).
        complete = np.all([~np.isnan(train[m]).all(axis=1) for m in [*given_names, target]], axis=0)
        train_cc = {m: train[m][complete] for m in [*given_names, target]}
        for name, fn in PROB_BASELINES.items():  # scored exactly like the samplers, same replicates
            if args.prob_baselines and name not in args.prob_baselines:
                continue
            t1 = time.time()
            # mixture_sample's weights also learn from training rows without the target (its regressions
            # use the complete rows only)
            src = train if name in ("mixture_sample", "joint_gaussian_sample") else train_cc
            samples = fn(src, given, given_names, target, args.coverage_replicates, args.seed + 7)
            out.append({**rec(name, "-", score(samples)), "sample_seconds": round(time.time() - t1, 1)})
            r = out[-1]
            print(f"  {member.name:>12} n={n_samples:<6} {name:<16} R2 {r['r2_mean']:.3f} gap {r['gap_closed']:+.2f} "
                  f"ES {r['energy_excess_pct']:+6.1f}% var x{r['variance_ratio']:.2f} cov90 {r['coverage']:.2f}",
                  flush=True)
    combos = [(c, L) for c in args.compositions for L in args.corrector_steps]
    for method in args.methods:
        for (name, solver), (composition, L) in itertools.product(solvers.items(), combos):
            if composition != "average" and method != "coherent":
                continue  # a product of experts, or the anchored average, combines the coherent ensemble's members
            t1 = time.time()
            samples = draw(ms, target, given, method, solver, args.coverage_replicates, args.seed + 7,
                           composition, L, args.corrector_snr)
            out.append({**rec(method, name, score(samples), composition, L),
                        "sample_seconds": round(time.time() - t1, 1)})
            r = out[-1]
            print(f"  {member.name:>12} n={n_samples:<6} {method:<8} {name:<10} {composition:<7} L={L} R2 {r['r2_mean']:.3f} gap "
                  f"{r['gap_closed']:+.2f} ES {r['energy_excess_pct']:+6.1f}% var x{r['variance_ratio']:.2f} "
                  f"cov90 {r['coverage']:.2f}", flush=True)
    return out


def check_targets(df: pd.DataFrame) -> list[str]:
    """The issue-11 targets, one line per (law, size, method) that is checked, met or missed."""
    lines = []
    # tables written before the composition / corrector columns existed: the defaults
    df = df.assign(**{k: v for k, v in (("composition", "average"), ("corrector", 0)) if k not in df})
    full = df[(df.sampler == "ancestral") & df.method.isin(["multi", "coherent"]) & (df.n_samples >= 3000)]
    for _, r in full.iterrows():
        miss = []
        if not 0.8 <= r.variance_ratio <= 1.25:
            miss.append(f"variance ratio {r.variance_ratio:.2f} (target 0.8-1.25)")
        if r.energy_excess_pct > 5:
            miss.append(f"energy +{r.energy_excess_pct:.1f}% (target <= 5%)")
        if r.gap_closed < 0.6:
            miss.append(f"gap closed {100 * r.gap_closed:.0f}% (target >= 60%)")
        acc = df[(df.law == r.law) & (df.n_samples == r.n_samples) & (df.method == r.method)
                 & (df.composition == r.composition) & (df.corrector == r.corrector) & (df.sampler != "ancestral")]
        # accelerated: K <= 50 network evaluations ("ddim1@all" runs every timestep: not accelerated)
        acc = acc[pd.to_numeric(acc.sampler.str.split("@").str[1], errors="coerce") <= 50]
        ok = acc[acc.energy_excess_pct <= (1 + r.energy_excess_pct / 100) * 102 - 100]
        if len(acc) and not len(ok):
            best = acc.loc[acc.energy_excess_pct.idxmin()]
            rel = 100 * ((1 + best.energy_excess_pct / 100) / (1 + r.energy_excess_pct / 100) - 1)
            miss.append(f"no accelerated sampler within 2% of the ancestral energy score (best {best.sampler}: "
                        f"{rel:+.1f}%)")
        head = f"{r.law} n={r.n_samples} {r.method}"
        if (r.composition, r.corrector) != ("average", 0):
            head += f" {r.composition} L={r.corrector}"
        lines.append(f"- {head}: " + ("all targets met" if not miss else "MISSED: " + "; ".join(miss)))
    if not lines:
        lines.append("- no (law, size) with >= 3000 samples in this grid: the targets were not checked")
    return lines


def energy_ratios(df: pd.DataFrame) -> list[str]:
    """Issue 14: per (law, size, method, sampler) of multi / coherent, the energy score over each
    probabilistic baseline's on the same rows. Both excesses are against the same exact draws, so
    the ratio is (1 + excess_method) / (1 + excess_baseline)."""
    lines = []
    keys = [k for k in ("law", "n_samples", "parametrisation", "preset") if k in df.columns]
    for key, g in df.groupby(keys, sort=False):
        base = g[g.method.isin(PROB_BASELINES)].set_index("method").energy_excess_pct
        if base.empty:
            continue
        for _, r in g[g.method.isin(["multi", "coherent"])].iterrows():
            rel = {b: (1 + r.energy_excess_pct / 100) / (1 + e / 100) for b, e in base.items()}
            verdict = "better than every baseline" if all(v < 1 for v in rel.values()) else \
                "worse than " + ", ".join(b for b, v in rel.items() if v >= 1)
            head = " ".join(str(k) for k in (key if isinstance(key, tuple) else (key,)))
            extra = "" if (r.get("composition", "average"), r.get("corrector", 0)) == ("average", 0) else \
                f" {r.composition} L={r.corrector}"
            lines.append(f"- {head} {r.method} {r.sampler}{extra}: " + ", ".join(f"{b} {v:.3f}" for b, v in rel.items())
                         + f" ({verdict})")
    return lines


def write_outputs(df: pd.DataFrame, out: Path, command: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "calibration.csv", index=False)
    cols = ["law", "n_samples", "method", "sampler", "composition", "corrector", "r2_mean", "gap_closed", "energy_excess_pct", "variance_ratio",
            "coverage", "pit_centre_excess"]
    fmt = {"r2_mean": "{:.3f}", "gap_closed": "{:+.2f}", "energy_excess_pct": "{:+.1f}", "variance_ratio": "{:.2f}",
           "coverage": "{:.2f}", "pit_centre_excess": "{:+.2f}"}
    table = df[cols].copy()
    for c, f in fmt.items():
        table[c] = [("-" if pd.isna(v) else f.format(v)) for v in table[c]]
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    text = [f"`{command}`", "", *md, "", "Issue-11 targets:", *check_targets(df)]
    ratios = energy_ratios(df)
    if ratios:
        text += ["", "Energy score of each method over each probabilistic baseline (< 1: the method is better; "
                 "issue 14):", *ratios]
    (out / "calibration.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    anc = df[(df.sampler == "ancestral") & (df.composition.isin(["average", "-"])) & (df.corrector == 0)]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for (law, method), g in anc.groupby(["law", "method"]):
        g = g.sort_values("n_samples")
        for ax, col in zip(axes, ("variance_ratio", "energy_excess_pct", "gap_closed")):
            ax.plot(g.n_samples, g[col], marker="o", label=f"{law} {method}")
    for ax, col, band in zip(axes, ("variance ratio", "energy excess vs exact draws (%)", "share of KNN->exact gap"),
                             ((0.8, 1.25), (-5, 5), (0.6, 1.0))):
        ax.axhspan(*band, color="green", alpha=0.1)
        ax.set_yscale("symlog", linthresh=1.0)  # miscalibration spans orders of magnitude
        ax.set_xscale("log")
        ax.set_xlabel("cohort size")
        ax.set_title(col)
    axes[0].legend(fontsize=7)
    fig.suptitle("ancestral sampler, 10 replicates, against the exact posterior (green: issue-11 target)")
    fig.tight_layout()
    fig.savefig(out / "calibration.png", dpi=120)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"the quick grid: {QUICK}")
    ap.add_argument("--laws", nargs="+", default=None, help="zoo names or int seeds")
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="cohort sizes")
    ap.add_argument("--methods", nargs="+", default=None, choices=METHODS)
    ap.add_argument("--steps", type=int, nargs="+", default=None, help="K of the accelerated samplers")
    ap.add_argument("--timesteps", type=int, default=None, help="T of the schedule")
    ap.add_argument("--train-steps", type=int, default=None,
                    help="optimiser steps (batch 256) per model; epochs follow from the train split's size")
    ap.add_argument("--epochs", type=int, default=None, help="epochs instead of --train-steps")
    ap.add_argument("--hidden", type=int, default=None, help="with --model-preset: replaces the preset's")
    ap.add_argument("--n-layers", type=int, default=None)
    ap.add_argument("--cond-embed-dim", type=int, default=None)
    ap.add_argument("--min-steps", type=int, default=None, help="floor on optimiser steps (default: the preset's)")
    ap.add_argument("--weight-decay", type=float, default=None, help="AdamW decay of the weight matrices")
    ap.add_argument("--select-by", default=None, choices=("mse", "energy"),
                    help="TrainConfig.select_by (default: the preset's, else mse)")
    ap.add_argument("--ema-decay", type=float, default=None)
    ap.add_argument("--model-preset", default=None, choices=sorted(PRESETS),
                    help="train with a library preset (cgjax train --preset: sizes, epochs, T) instead of "
                         "--hidden / --n-layers / --timesteps / --train-steps; --epochs overrides its epochs")
    ap.add_argument("--parametrisation", default=None, choices=PARAMETRISATIONS,
                    help="what the networks predict (ArchConfig.parametrisation): eps (the paper's), v or x0 "
                         "(default: the preset's, else eps)")
    ap.add_argument("--anchor", default=None, choices=ANCHORS,
                    help="ArchConfig.anchor: none (the paper's network), gaussian (the network fits the residual "
                         "of a fitted linear-Gaussian denoiser) or mixture (of a mixture of them whose weights "
                         "depend on the conditions); default: the preset's, else none")
    ap.add_argument("--residual-gains", type=float, nargs="*", default=None,
                    help="TrainConfig.residual_gains, e.g. 0 0.5 1; none given: off (default: the preset's, else off)")
    ap.add_argument("--loss-weighting", default=None, choices=LOSS_WEIGHTINGS,
                    help="TrainConfig.loss_weighting: native (the parametrisation's own), eps or min_snr "
                         "(default: the preset's, else native)")
    ap.add_argument("--min-snr-gamma", type=float, default=None)
    ap.add_argument("--eval-every", type=int, default=None,
                    help="epochs between validations (model selection); default: the preset's, or once at the end")
    ap.add_argument("--prob-baselines", nargs="+", choices=tuple(PROB_BASELINES), default=None,
                    help="only these probabilistic baselines (default: all)")
    ap.add_argument("--no-prob-baselines", action="store_true",
                    help="skip the probabilistic baselines (gaussian_sample, joint_gaussian_sample, mixture_sample, "
                         "mice_sample, knn_sample k=10)")
    ap.add_argument("--compositions", nargs="+", default=["average"], choices=("average", "product", "anchored"),
                    help="coherent compositions (SampleOptions.composition), a row each")
    ap.add_argument("--corrector-steps", type=int, nargs="+", default=[0],
                    help="Langevin corrector steps per timestep (SampleOptions.corrector_steps), a row each")
    ap.add_argument("--corrector-snr", type=float, default=0.5)
    ap.add_argument("--single-cond-dropout", type=float, default=None,
                    help="TrainConfig.single_cond_dropout (default 0.2 when 'product' is asked for, else 0)")
    ap.add_argument("--samplers", nargs="+", default=None, help="keep only these sampler names (default all)")
    ap.add_argument("--max-rows", type=int, default=None, help="complete test rows scored")
    ap.add_argument("--replicates", type=int, default=10)
    ap.add_argument("--coverage-replicates", type=int, default=None, help=">= 50 for 90%% coverage")
    ap.add_argument("--target", default=None, help="modality to impute (default: each law's first)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="calibration_results")
    ap.add_argument("--models", default=None,
                    help="folder for the trained models, one checkpoint per law and size; a finished one "
                         "with the same configuration is reused instead of trained again")
    args = ap.parse_args(argv)
    # architecture flags given on the command line (before the grid's defaults fill the others in)
    args.arch_given = {k: getattr(args, k) for k in ("hidden", "n_layers", "cond_embed_dim", "parametrisation",
                                                     "anchor") if getattr(args, k) is not None}
    if args.model_preset:
        args.timesteps = PRESETS[args.model_preset].get("schedule", {}).get("timesteps", ScheduleConfig().timesteps)
    preset = QUICK if args.quick else FULL
    for k, v in preset.items():
        if getattr(args, k, None) is None and not (k == "train_steps" and args.epochs):
            setattr(args, k, v)
    if args.coverage_replicates < max(args.replicates, 2):
        ap.error("--coverage-replicates must be >= --replicates")
    solvers = samplers([k for k in args.steps if k <= args.timesteps])
    if args.samplers:
        solvers = {k: v for k, v in solvers.items() if k in args.samplers}
    if args.single_cond_dropout is None:
        args.single_cond_dropout = 0.2 if "product" in args.compositions else 0.0
    command = "python experiments/calibration.py " + " ".join(sys.argv[1:] if argv is None else argv)
    records = []
    for law_name in args.laws:
        for n in args.sizes:
            records += run_cell(law_name, n, args, solvers)
            Path(args.out).mkdir(parents=True, exist_ok=True)
            pd.DataFrame(records).to_csv(Path(args.out) / "calibration.csv", index=False)  # after every cell
    df = pd.DataFrame(records)
    write_outputs(df, Path(args.out), command)
    return df


if __name__ == "__main__":
    main()
