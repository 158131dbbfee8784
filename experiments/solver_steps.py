"""How few steps do the accelerated solvers need? R2 and energy score against the number of steps.

On the synthetic TCGA-like cohort (its law is known exactly: ``cgjax.datasets.default_law``), train a
small model set, then impute each target of the complete test samples from the three other
modalities by Coherent Denoising with
  * the full ancestral sampler (``ddpm``, all T steps: the paper's sampler), twice with different
    seeds: the second run shows how much the scores move by Monte-Carlo noise alone;
  * DDIM (eta = ``--eta``, default 0) and DPM-Solver++(2M) on K of the T timesteps, for each K of ``--steps``;
and score ``--replicates`` samples per row against the truth in the standardised space (pooled R2,
energy score; :func:`cgjax.evaluate.reconstruction.score_samples`), next to the oracle's exact
posterior draws (``oracle_sample``: what a perfectly calibrated sampler would score).

Prints a table (scores averaged over the targets) and, per solver, the fewest steps K whose energy
score is within ``--tolerance`` (2 %) of the full ancestral sampler's: ES_K <= (1 + tol) ES_ddpm (the
energy score is a proper scoring rule, lower is better, so a solver that scores better also
qualifies). Pooled R2 of single samples is printed too; note that it rewards under-dispersed samples
(a sampler collapsing onto the posterior mean gets the oracle mean's R2), so it can move the other
way. Every sampler run uses the same rows, key and rejection settings; seconds are wall time
including compilation, on a machine that may be shared.

Usage:
  python experiments/solver_steps.py --quick                  # a few minutes on 2 CPU cores
  python experiments/solver_steps.py --json solver_steps.json --checkpoint /tmp/solver_steps_models
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from cgjax import pipeline
from cgjax.data import Scalers, split_cohort
from cgjax.datasets import default_law, synthetic_tcga
from cgjax.diffusion.denoiser import ArchConfig
from cgjax.diffusion.schedule import ScheduleConfig
from cgjax.diffusion.train import TrainConfig
from cgjax.ensemble import sample_target
from cgjax.evaluate.reconstruction import oracle_records, score_samples
from cgjax.sampling.solvers import SolverConfig
from cgjax.sampling.options import SampleOptions

# Small models that train in minutes on 2 CPU cores (as the quickstart's), on the paper's T = 1000.
ARCH = dict(hidden=256, n_layers=3, time_dim=32, cond_embed_dim=32)
TRAIN = dict(batch_size=512, steps_per_call=50, learning_rate=3e-3,
             lr_schedule="cosine", cond_dropout=0.2)
QUICK = dict(n_samples=3000, epochs=80, steps=(5, 10, 20, 50, 100), replicates=8, max_rows=200,
             targets=("rnaseq", "wsi"))
FULL = dict(n_samples=8000, epochs=240, steps=(5, 10, 15, 20, 30, 50, 100, 200), replicates=10, max_rows=500,
            targets=None)


def run_solver(ms, test, targets, solver: SolverConfig, replicates: int, seed: int) -> dict:
    """Coherent samples of every target from the other modalities; scores per target and averaged."""
    per_target, seconds = {}, 0.0
    for i, t in enumerate(targets):
        given = {m: test[m] for m in ms.modalities if m != t}
        t0 = time.perf_counter()
        res = sample_target(ms, t, given, SampleOptions(replicates=replicates, seed=seed + i,
                                                          solver=solver))
        seconds += time.perf_counter() - t0
        rec = score_samples(res.x, test[t])
        rec["rejected_pct"] = float(100 * (1 - res.passed.mean()))
        per_target[t] = rec
    mean = lambda k: float(np.mean([r[k] for r in per_target.values()]))
    return {"kind": solver.kind, "steps": solver.steps, "eta": solver.eta, "r2": mean("r2_mean"),
            "energy": mean("energy_score"), "rejected_pct": mean("rejected_pct"), "seconds": seconds,
            "per_target": per_target}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples, epochs, rows, targets and step counts")
    ap.add_argument("--timesteps", type=int, default=1000, help="T of the schedule (paper: 1000)")
    ap.add_argument("--steps", type=int, nargs="+", default=None, help="K values to try")
    ap.add_argument("--solvers", nargs="+", default=["ddim", "dpm"], choices=("ddim", "dpm"))
    ap.add_argument("--eta", type=float, default=0.0, help="DDIM eta")
    ap.add_argument("--replicates", type=int, default=None)
    ap.add_argument("--tolerance", type=float, default=0.02, help="relative energy-score tolerance")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--n-samples", type=int, default=None)
    ap.add_argument("--targets", nargs="+", default=None)
    ap.add_argument("--checkpoint", default=None, help="keep (and reuse) the trained models here")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    preset = QUICK if args.quick else FULL
    steps = sorted(args.steps or preset["steps"])
    replicates = args.replicates or preset["replicates"]
    T = args.timesteps

    t0 = time.time()
    cohort = split_cohort(synthetic_tcga(n_samples=args.n_samples or preset["n_samples"], seed=args.seed))
    epochs = args.epochs or preset["epochs"]
    # validation (model selection) samples with the full T-step sampler: at the end of training only
    train_cfg = TrainConfig(**{**TRAIN, "epochs": epochs, "eval_every": epochs, "seed": args.seed})
    ms = pipeline.train(cohort, args.checkpoint, arch=ArchConfig(**ARCH), schedule_cfg=ScheduleConfig(timesteps=T),
                        train_cfg=train_cfg, progress=False)
    t_train = time.time() - t0
    test_native = cohort.split("test")
    test = pipeline.scaled_inputs(ms, test_native)
    rows = preset["max_rows"]
    if rows is not None and len(next(iter(test.values()))) > rows:
        test = {m: v[:rows] for m, v in test.items()}
    test_data = {m: v[: len(next(iter(test.values())))] for m, v in test_native.data.items()}
    targets = list(args.targets or preset["targets"] or ms.modalities)
    n_rows = len(next(iter(test.values())))
    print(f"synthetic cohort, {len(ms.modalities)} modalities; models trained in {t_train:.0f} s "
          f"({train_cfg.epochs} epochs, arch {ARCH}, T = {T}); {n_rows} complete test rows x {replicates} "
          f"replicates; targets {targets}, each from the other three (coherent, default rejection)", flush=True)

    law = default_law()
    oracle = oracle_records(law, test_data, Scalers.from_dict(ms.scalers),
                            {t: [tuple(m for m in ms.modalities if m != t)] for t in targets},
                            type_prior=law.type_prior(complete_only=True), n_draws=replicates, seed=args.seed)
    orc = [r for r in oracle if r["method"] == "oracle_sample"]
    records = [{"kind": "oracle_sample", "steps": None, "eta": None, "r2": float(np.mean([r["r2_mean"] for r in orc])),
                "energy": float(np.mean([r["energy_score"] for r in orc])), "rejected_pct": 0.0, "seconds": 0.0}]

    def show(rec, ref=None):
        rel = "" if ref is None else f"{100 * (rec['energy'] / ref - 1):+7.2f} %"
        k = "-" if rec["steps"] is None else rec["steps"]
        name = rec["kind"] + (f" (eta {rec['eta']:g})" if rec["kind"] == "ddim" else "")
        print(f"{name:<20} {k!s:>6} {rec['r2']:8.4f} {rec['energy']:10.4f} {rel:>10} {rec['rejected_pct']:8.2f} "
              f"{rec['seconds']:9.1f}", flush=True)

    print(f"\n{'solver':<20} {'steps':>6} {'R2':>8} {'energy':>10} {'vs ddpm':>10} {'rej %':>8} {'seconds':>9}")
    show(records[0])
    anc = run_solver(ms, test, targets, SolverConfig("ddpm"), replicates, args.seed)
    anc["steps"] = T
    records.append(anc)
    show(anc, anc["energy"])
    anc2 = run_solver(ms, test, targets, SolverConfig("ddpm"), replicates, args.seed + 10_000)
    anc2.update(steps=T, kind="ddpm (2nd seed)")
    records.append(anc2)
    show(anc2, anc["energy"])
    fewest = {}
    for kind in args.solvers:
        for K in steps:
            if K > T:
                continue
            rec = run_solver(ms, test, targets, SolverConfig(kind, K, eta=args.eta if kind == "ddim" else 0.0),
                             replicates, args.seed)
            records.append(rec)
            show(rec, anc["energy"])
            if kind not in fewest and rec["energy"] <= (1 + args.tolerance) * anc["energy"]:
                fewest[kind] = K
    print(f"\nMonte-Carlo noise: a second ancestral run differs by {100 * (anc2['energy'] / anc['energy'] - 1):+.2f} % "
          "in energy score")
    for kind in args.solvers:
        k = fewest.get(kind)
        print(f"fewest {kind} steps within {100 * args.tolerance:g} % of the full ancestral sampler's energy score: "
              + (f"{k} (of T = {T}: {T / k:.0f}x fewer network evaluations)" if k else f"none of {steps}"))
    out = {"config": {"timesteps": T, "arch": ARCH, "train": train_cfg.to_dict(), "replicates": replicates,
                      "rows": n_rows, "targets": targets, "tolerance": args.tolerance, "eta": args.eta,
                      "quick": args.quick},
           "records": records, "fewest_steps": {k: fewest.get(k) for k in args.solvers}}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
        print(f"wrote {args.json}")
    return out


if __name__ == "__main__":
    main()
