"""Reproduce every experiment of the paper: train the model set, then run the whole evaluation.

    # the paper's scale (a GPU host; days of training at 20,000 epochs):
    python experiments/reproduce_paper.py --out runs/paper
    # real data: a prepared cohort directory (docs/real_data.md) instead of the synthetic cohort
    python experiments/reproduce_paper.py --out runs/tcga --cohort data/tcga_cohort
    # about 10 minutes on 2 CPU cores: synthetic cohort, tiny models, few timesteps/replicates, small forests
    python experiments/reproduce_paper.py --out runs/quick --quick

Writes OUT/cohort (the cohort with its split), OUT/checkpoint (the models; an existing one from the
same configuration is resumed, or reused as is with --skip-train) and OUT/eval (report.md,
metrics.json, CSVs, figures/). The paper's hyper-parameters (docs/reference.md 8.1): T = 1000 linear
betas, norm_mlp denoisers (hidden 512, 5 layers, time embedding 128, condition embedding 32), Adam
1e-3, batch 128, 20,000 epochs, validation every 200 epochs on 5 replicates, selection by
validation MSE; evaluation with 10 replicates and 10 runs, 500-tree forests (``--protocol
reference`` for the authors' code choices). The synthetic cohort has the paper's 10,098 samples.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PAPER = dict(arch=dict(hidden=512, n_layers=5, time_dim=128, cond_embed_dim=32),
             schedule=dict(timesteps=1000),
             train=dict(epochs=20_000, eval_every=200, batch_size=128, learning_rate=1e-3, val_replicates=5,
                        steps_per_call=100, select_by="mse"),
             n_samples=10_098)
# quick: minutes on 2 CPU cores. Small models trained briefly on a 3000-sample cohort, 50 timesteps.
QUICK = dict(arch=dict(hidden=128, n_layers=3, time_dim=32, cond_embed_dim=16),
             schedule=dict(timesteps=50),
             train=dict(epochs=300, eval_every=150, batch_size=256, learning_rate=3e-3, lr_schedule="cosine",
                        val_replicates=2, steps_per_call=50, cond_dropout=0.2),
             n_samples=3000)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--quick", action="store_true", help="tiny models and small evaluation: ~10 min on 2 CPU cores")
    p.add_argument("--cohort", type=Path, help="a cohort directory or .h5mu (default: the synthetic cohort)")
    p.add_argument("--n-samples", type=int, help="synthetic cohort size (paper 10,098; quick 3000)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--timesteps", type=int)
    p.add_argument("--replicates", type=int)
    p.add_argument("--runs", type=int)
    p.add_argument("--protocol", choices=("paper", "reference"), default="paper")
    p.add_argument("--steps", help="comma-separated evaluation steps (default all)")
    p.add_argument("--skip-train", action="store_true", help="evaluate the checkpoint in OUT/checkpoint as it is")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)

    from cgjax import checkpoint, pipeline
    from cgjax.data import read_cohort, split_cohort, write_cohort
    from cgjax.datasets import synthetic_tcga
    from cgjax.diffusion.denoiser import ArchConfig
    from cgjax.diffusion.schedule import ScheduleConfig
    from cgjax.diffusion.train import TrainConfig
    from cgjax.evaluate.run import EvalConfig, evaluate

    setup = QUICK if args.quick else PAPER
    t0 = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    cohort_dir, ck = args.out / "cohort", args.out / "checkpoint"
    if args.cohort is not None:
        cohort = split_cohort(read_cohort(args.cohort))
    elif cohort_dir.exists():
        cohort = read_cohort(cohort_dir)
    else:
        n = args.n_samples or setup["n_samples"]
        cohort = split_cohort(synthetic_tcga(n_samples=n, seed=args.seed))
        write_cohort(cohort, cohort_dir)
    print(f"cohort: {cohort.n_samples} samples, modalities {list(cohort.modalities)} ({cohort.source})")

    train_cfg = dict(setup["train"], seed=args.seed)
    if args.epochs:
        train_cfg["epochs"] = args.epochs
        train_cfg["eval_every"] = min(train_cfg["eval_every"], args.epochs)
    sched = dict(setup["schedule"], **({"timesteps": args.timesteps} if args.timesteps else {}))
    arch, sched, tcfg = ArchConfig(**setup["arch"]), ScheduleConfig(**sched), TrainConfig(**train_cfg)
    t_train = time.time()
    if args.skip_train:
        ms = checkpoint.load(ck)
    else:
        pipeline.train(cohort, ck, arch=arch, schedule_cfg=sched, train_cfg=tcfg, resume=True, progress=not args.quiet)
        ms = checkpoint.load(ck)
    t_train = time.time() - t_train
    print(f"models ready in {t_train:.0f} s")

    overrides = {k: v for k, v in dict(replicates=args.replicates, runs=args.runs, seed=args.seed).items()
                 if v is not None}
    if args.steps:
        overrides["steps"] = tuple(s.strip() for s in args.steps.split(",") if s.strip())
    cfg = EvalConfig.preset("quick" if args.quick else args.protocol, **overrides)
    if args.quick and args.protocol == "reference":
        ref = EvalConfig.preset("reference")
        for k in ("counterfactual_score", "counterfactual_ablation", "weighting", "reject_fraction"):
            setattr(cfg, k, getattr(ref, k))
    metrics = evaluate(ms, cohort, args.out / "eval", cfg, progress=not args.quiet)
    total = time.time() - t0
    summary = {"train_seconds": round(t_train, 1), "eval_seconds": metrics["seconds"], "total_seconds": round(total, 1),
               "arch": dataclasses.asdict(arch), "schedule": dataclasses.asdict(sched), "train": dataclasses.asdict(tcfg),
               "eval": cfg.to_dict()}
    (args.out / "run.json").write_text(json.dumps(summary, indent=1, default=str))
    print(f"done in {total:.0f} s (training {t_train:.0f} s, evaluation {metrics['seconds']['total']:.0f} s); "
          f"report: {args.out / 'eval' / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
