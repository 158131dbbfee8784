"""``cgjax train``, ``cgjax impute`` and ``cgjax quickstart``."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import time
from pathlib import Path

from cgjax.errors import CgjaxError

# The quickstart's models: small enough to train in a few minutes on 2 CPU cores.
# Measured on the synthetic cohort (see README): with fewer samples the finite-sample error of any
# learner, not the sampler, dominates; batch 512 with a cosine-decayed learning rate converges in a
# few thousand steps.
QUICK_ARCH = dict(hidden=256, n_layers=3, time_dim=32, cond_embed_dim=32)
QUICK_SCHEDULE = dict(timesteps=100)
QUICK_TRAIN = dict(epochs=120, eval_every=60, batch_size=512, steps_per_call=50, learning_rate=3e-3,
                   lr_schedule="cosine", cond_dropout=0.2, val_replicates=3)
QUICK_SAMPLES = 10000
# At T = 100 the paper's sigma_t^2 = beta_t over-disperses the samples (an exact Gaussian denoiser
# gives +3% variance at T = 100, +8% at T = 50; nothing at T = 1000). DDIM with eta = 1 over every
# timestep is the ancestral sampler with the posterior variance beta_tilde_t instead; measured on the
# quickstart models it brings the output variance to the oracle's (experiments/RESULTS.md).
QUICK_SOLVER_ARGS = ("ddim", None, 1.0)
# Written into every `cgjax impute --out` directory: only such a directory (or an empty or absent
# one) is written into, so that --out can never overwrite a cohort's own tables.
IMPUTE_MARKER = "cgjax_imputation.json"


def load_config(path: str | None) -> dict:
    """A JSON or TOML file with optional sections ``arch``, ``schedule``, ``train``."""
    if path is None:
        return {}
    p = Path(path)
    if not p.exists():
        raise CgjaxError(f"{p}: config file not found")
    try:
        if p.suffix == ".toml":
            import tomllib

            cfg = tomllib.loads(p.read_text())
        else:
            cfg = json.loads(p.read_text())
    except Exception as e:
        raise CgjaxError(f"{p}: cannot parse config ({e})") from None
    unknown = set(cfg) - {"arch", "schedule", "train"}
    if unknown:
        raise CgjaxError(f"{p}: unknown config section(s) {sorted(unknown)}; expected arch, schedule, train")
    return cfg


def _configs(cfg: dict, epochs=None, timesteps=None, defaults=None):
    from cgjax.diffusion.denoiser import ArchConfig
    from cgjax.diffusion.schedule import ScheduleConfig
    from cgjax.diffusion.train import TrainConfig

    defaults = defaults or {}
    try:
        arch = ArchConfig(**{**defaults.get("arch", {}), **cfg.get("arch", {})})
        sched = {**defaults.get("schedule", {}), **cfg.get("schedule", {})}
        train = {**defaults.get("train", {}), **cfg.get("train", {})}
        if timesteps is not None:
            sched["timesteps"] = timesteps
        if epochs is not None:
            train["epochs"] = epochs
        return arch, ScheduleConfig(**sched), TrainConfig(**train)
    except (TypeError, ValueError) as e:
        raise CgjaxError(f"bad configuration: {e}") from None


def add_solver_args(p) -> None:
    p.add_argument("--sampler", choices=("ddpm", "ddim", "dpm"), default="ddpm",
                   help="ddpm: the paper's ancestral sampler over every timestep (sigma^2 = beta); ddim "
                        "(with --eta) and dpm (DPM-Solver++) on --steps timesteps")
    p.add_argument("--steps", type=int, help="timesteps the ddim/dpm solver takes (default: all)")
    p.add_argument("--eta", type=float, default=None,
                   help="DDIM noise: 0 deterministic, 1 = ancestral with the posterior variance (default 0)")


def solver_from_args(args):
    """The :class:`SolverConfig` of ``--sampler``, ``--steps``, ``--eta`` (a ConfigError naming the flag)."""
    from cgjax.errors import ConfigError
    from cgjax.sampling.solvers import SolverConfig

    if args.sampler == "ddpm" and (args.steps is not None or args.eta is not None):
        raise ConfigError("--steps and --eta apply to --sampler ddim or dpm")
    return SolverConfig(args.sampler, args.steps, 0.0 if args.eta is None else args.eta)


def sample_options_from_args(args):
    """The one :class:`SampleOptions` of ``cgjax impute``'s flags, validated before anything is read."""
    from cgjax.sampling.coherent import RejectionConfig
    from cgjax.sampling.options import SampleOptions

    rejection = RejectionConfig(enabled=not args.no_rejection, max_fraction=args.reject_fraction,
                                max_attempts=args.max_attempts)
    return SampleOptions(method=args.method, weighting=args.weighting, rejection=rejection,
                         solver=solver_from_args(args), replicates=args.replicates, seed=args.seed,
                         max_batch=args.max_batch)


def cmd_train(args) -> int:
    from cgjax import pipeline
    from cgjax.data import read_cohort

    from cgjax import distributed

    several = distributed.initialize(args.distributed)  # first: before any computation
    arch, sched, train = _configs(load_config(args.config), args.epochs, args.timesteps)  # cheap checks first
    if args.seed is not None:
        train = dataclasses.replace(train, seed=args.seed)
    if args.parametrisation is not None:
        arch = dataclasses.replace(arch, parametrisation=args.parametrisation)
    cohort = read_cohort(args.cohort)
    with distributed.data_parallel() if (args.distributed or several) else contextlib.nullcontext():
        ms = pipeline.train(cohort, args.out, arch=arch, schedule_cfg=sched, train_cfg=train,
                            resume=not args.no_resume, progress=not args.quiet and distributed.is_primary(),
                            split_seed=args.split_seed)
    print(f"trained {sum(len(g.specs) for g in ms.groups.values())} models; checkpoint in {args.out}")
    return 0


def cmd_impute(args) -> int:
    from cgjax import checkpoint, pipeline
    from cgjax._atomic import atomic_file
    from cgjax.data import read_cohort

    from cgjax import distributed

    options = sample_options_from_args(args)  # the cheap checks first
    several = distributed.initialize(args.distributed)  # first: before any computation
    embedding = None
    if several and (args.decode or args.embedding):
        raise CgjaxError("--decode is not supported with several processes; decode the merged tables afterwards")
    if args.decode or args.embedding:  # found and read first: fail before sampling, not after
        from cgjax.embedding import decode_imputations, find_embedding, load_embedding

        embedding = load_embedding(find_embedding(args.cohort, args.embedding))
    ms = checkpoint.load(args.checkpoint)
    cohort = read_cohort(args.cohort)
    out = Path(args.out)
    if distributed.is_primary():  # never write into a directory of something else (e.g. the cohort)
        from cgjax._atomic import claim_output_dir

        claim_output_dir(out, IMPUTE_MARKER, "cgjax imputation directory",
                         {"checkpoint": str(args.checkpoint), "cohort": str(args.cohort), "method": args.method,
                          "replicates": args.replicates, "seed": args.seed})
    # without --decode the tables stream to OUT chunk by chunk (per-process parts merged by process 0)
    tables = pipeline.impute(ms, cohort, options, progress=not args.quiet and distributed.is_primary(),
                             mesh="auto", out_dir=None if embedding is not None else out)
    if embedding is not None:
        tables = decode_imputations(tables, embedding)
    for m, df in tables.items():
        if isinstance(df, Path):
            if distributed.is_primary():
                print(f"{m}: {args.replicates} replicates -> {df}")
            continue
        with atomic_file(out / f"{m}.parquet") as tmp:  # a kill leaves no partial table at the path
            df.to_parquet(tmp, index=False)
        print(f"{m}: {df['sample_id'].nunique()} samples x {args.replicates} replicates -> {out / (m + '.parquet')}")
    if not tables:
        print("nothing to impute: every sample has every modality")
    return 0


def cmd_quickstart(args) -> int:
    from cgjax import checkpoint, pipeline
    from cgjax.data import split_cohort
    from cgjax.datasets import default_law, synthetic_tcga
    from cgjax.evaluate.reconstruction import oracle_records, reconstruction
    from cgjax.evaluate.report import quick_report
    from cgjax.sampling.options import SampleOptions
    from cgjax.sampling.solvers import SolverConfig

    options = SampleOptions(solver=SolverConfig(*QUICK_SOLVER_ARGS), replicates=args.replicates, seed=args.seed)
    arch, sched, train = _configs({}, args.epochs, None, {"arch": QUICK_ARCH, "schedule": QUICK_SCHEDULE,
                                                           "train": QUICK_TRAIN})
    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cohort = split_cohort(synthetic_tcga(n_samples=args.n_samples, seed=args.seed))
    print(f"synthetic cohort: {cohort.n_samples} samples, modalities {list(cohort.modalities)}")
    ms = pipeline.train(cohort, args.checkpoint, arch=arch, schedule_cfg=sched, train_cfg=train,
                        resume=True, progress=not args.quiet)
    t_train = time.time() - t0
    ms = checkpoint.load(args.checkpoint)
    test = cohort.split("test")
    scaled = pipeline.scaled_inputs(ms, test)
    given = {t: [tuple(m for m in ms.modalities if m != t)] for t in ms.modalities}
    records = reconstruction(ms, scaled, methods=("multi", "coherent"), given_sets=given,
                             replicates=args.replicates, seed=args.seed, progress=not args.quiet,
                             options=options)
    law = default_law()
    from cgjax.data import Scalers

    scalers = Scalers.from_dict(ms.scalers)
    records += oracle_records(law, test.data, scalers, given, type_prior=law.type_prior(complete_only=True),
                              n_draws=args.replicates, seed=args.seed)
    report = quick_report(records, ms, seconds={"train": t_train, "total": time.time() - t0},
                          n_test=test.n_samples, replicates=args.replicates)
    (out / "report.md").write_text(report)
    (out / "metrics.json").write_text(json.dumps({"reconstruction": records, "val_metrics": ms.val_metrics,
                                                  "seconds": {"train": t_train, "total": time.time() - t0}},
                                                 indent=1))
    print(report)
    print(f"models in {args.checkpoint}; report in {out / 'report.md'}, metrics in {out / 'metrics.json'}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train every single- and multi-condition model of a cohort")
    p.add_argument("cohort", help="cohort directory or .h5mu file")
    p.add_argument("--out", required=True, help="checkpoint directory to write (resumed if it exists)")
    p.add_argument("--config", help="JSON or TOML file with sections arch, schedule, train")
    p.add_argument("--epochs", type=int)
    p.add_argument("--timesteps", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--parametrisation", default=None,
                   help="what the networks predict: eps (the noise; the paper's recipe, default), v "
                        "(v-prediction) or x0; overrides the config's arch.parametrisation")
    p.add_argument("--split-seed", type=int, default=42,
                   help="seed of the train/val/test split when the cohort has no split column (default 42); "
                        "recorded in the checkpoint, which 'cgjax evaluate' reuses")
    p.add_argument("--no-resume", action="store_true", help="start afresh even if --out holds a checkpoint")
    p.add_argument("--distributed", action="store_true",
                   help="start jax.distributed (automatic under srun) and train data-parallel over every device")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("impute", help="fill in every missing modality of every sample of a cohort")
    p.add_argument("checkpoint", help="checkpoint directory written by 'cgjax train'")
    p.add_argument("cohort", help="cohort directory or .h5mu file (may hold new patients)")
    p.add_argument("--method", choices=("coherent", "multi", "single"), default="coherent")
    p.add_argument("--replicates", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="directory for <modality>.parquet")
    p.add_argument("--weighting", default="inverse_mse", choices=("inverse_mse", "softmax_inverse_mse", "uniform"))
    p.add_argument("--reject-fraction", type=float, default=0.05,
                   help="accept a trajectory when at most this fraction of steps is incoherent (paper 0.05, reference 0.10)")
    p.add_argument("--max-attempts", type=int, default=10)
    p.add_argument("--no-rejection", action="store_true")
    p.add_argument("--max-batch", type=int, help="samples per compiled call (default: from the device's memory)")
    p.add_argument("--distributed", action="store_true",
                   help="start jax.distributed (automatic under srun); each process imputes its block of rows")
    add_solver_args(p)
    p.add_argument("--decode", action="store_true",
                   help="write imputations in feature space (genes, proteins), decoded with COHORT/embedding")
    p.add_argument("--embedding", help="embedding directory written by 'cgjax prepare' (implies --decode; "
                                       "default COHORT/embedding)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_impute)

    p = sub.add_parser("quickstart", help="the main job on the embedded synthetic cohort, in a few minutes on a CPU")
    p.add_argument("--out", default="quickstart_out", help="directory for report.md and metrics.json")
    p.add_argument("--checkpoint", default="checkpoints/quickstart", help="where the trained models go")
    p.add_argument("--n-samples", type=int, default=QUICK_SAMPLES)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--replicates", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_quickstart)
