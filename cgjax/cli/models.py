"""``cgjax train``, ``cgjax impute`` and ``cgjax quickstart``."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from pathlib import Path

from cgjax.errors import CgjaxError
from cgjax.presets import PRESETS, QUICK_ARCH, QUICK_SAMPLES, QUICK_SCHEDULE, QUICK_SOLVER_ARGS, QUICK_TRAIN, describe

# The presets `cgjax train --preset` offers (cgjax.presets.PRESETS; "tiny" is for tests and the API only).
TRAIN_PRESETS = ("paper", "quick")

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
                         max_batch=args.max_batch, composition=args.composition,
                         corrector_steps=args.corrector_steps, corrector_snr=args.corrector_snr)


def cmd_train(args) -> int:
    from cgjax import pipeline
    from cgjax.data import read_cohort

    from cgjax import distributed

    several = distributed.initialize(args.distributed)  # first: before any computation
    arch, sched, train, preset = train_configs(args)  # cheap checks first
    check = None if args.no_calibration_check else calibration_options(args)  # checked before training
    cohort = read_cohort(args.cohort)
    with distributed.data_parallel() if (args.distributed or several) else contextlib.nullcontext():
        ms = pipeline.train(cohort, args.out, arch=arch, schedule_cfg=sched, train_cfg=train,
                            resume=not args.no_resume, progress=not args.quiet and distributed.is_primary(),
                            split_seed=args.split_seed, preset=preset)  # preset: shown by `cgjax info`
    print(f"trained {sum(len(g.specs) for g in ms.groups.values())} models; checkpoint in {args.out}")
    if check is not None and several:
        print("note: calibration check skipped with several processes; run 'cgjax evaluate' on one")
    elif check is not None:
        run_calibration_check(ms, cohort, args.out, check, rows=args.calibration_rows)
    return 0


def train_configs(args):
    """(ArchConfig, ScheduleConfig, TrainConfig, preset record) of ``cgjax train``'s flags: the
    ``--preset``'s values, then the ``--config`` file's, then the explicit flags (``--epochs``,
    ``--timesteps``, ``--seed``, ``--parametrisation``, ``--anchor``). The record (``{"name", "overridden_by"}``)
    goes into the checkpoint."""
    from cgjax.diffusion.configs import build_configs

    arch, sched, train = build_configs(load_config(args.config), args.epochs, args.timesteps, PRESETS[args.preset])
    if args.seed is not None:
        train = dataclasses.replace(train, seed=args.seed)
    if args.parametrisation is not None:
        arch = dataclasses.replace(arch, parametrisation=args.parametrisation)
    if args.anchor is not None:
        arch = dataclasses.replace(arch, anchor=args.anchor)
    flags = [f"--{f.replace('_', '-')}" for f in ("epochs", "timesteps", "seed", "parametrisation", "anchor")
             if getattr(args, f) is not None]
    return arch, sched, train, {"name": args.preset, "overridden_by": ([f"--config {args.config}"] if args.config
                                                                       else []) + flags}


def calibration_options(args):
    """The sampler the calibration check runs after training: the default :class:`SampleOptions`
    (what ``cgjax impute`` draws with) with ``--calibration-replicates``; validated up front."""
    from cgjax.errors import ConfigError
    from cgjax.sampling.options import SampleOptions

    if args.calibration_replicates < 2:
        raise ConfigError(f"--calibration-replicates must be >= 2, got {args.calibration_replicates}")
    if args.calibration_rows < 2:
        raise ConfigError(f"--calibration-rows must be >= 2, got {args.calibration_rows}")
    return SampleOptions(replicates=args.calibration_replicates)


def run_calibration_check(ms, cohort, out, options, *, rows: int) -> dict | None:
    """:func:`cgjax.calibration_check.check_cohort` on the validation split (against a second
    sampler, :func:`cgjax.calibration_check.default_compare`) and, for ``coherent``, the same check
    of ``multi`` (stored under ``methods``; ``notes`` name the modalities where only multi is
    calibrated): print one line per modality and the warnings, and
    store the result in the checkpoint at ``out``. A cohort the check cannot run on (fewer than 2
    complete validation rows) gets a note instead (None)."""
    from cgjax import calibration_check, checkpoint

    try:
        res = calibration_check.check_cohort(ms, cohort, options, calibration_check.default_compare(ms, options),
                                             max_rows=rows, also_multi=True)
    except CgjaxError as e:  # the models are trained and saved: say why there is no check, do not fail
        print(f"note: calibration check skipped: {e}")
        return None
    print(f"calibration check on {res['rows']} validation rows, {res['replicates']} replicates, "
          f"{res['sampler']} (vs {res['compare']}):")
    for line in res["lines"]:
        print(f"  {line}")
    for w in res["warnings"]:
        print(f"WARNING: {w}")
    for other in res.get("methods", {}).values():
        print(f"the same check with --method multi ({other['sampler']}):")
        for line in other["lines"]:
            print(f"  {line}")
    for note in res.get("notes", []):
        print(f"note: {note}")
    checkpoint.write_calibration(out, res)
    return res


def cmd_impute(args) -> int:
    from cgjax import checkpoint, pipeline
    from cgjax._atomic import atomic_file
    from cgjax.data import read_cohort
    from cgjax.sampling.options import describe_options

    from cgjax import distributed

    options = sample_options_from_args(args)  # the cheap checks first
    several = distributed.initialize(args.distributed)  # first: before any computation
    embedding = None
    if (args.complete or args.format == "h5mu") and (several or args.decode or args.embedding):
        raise CgjaxError("--complete and --format h5mu write the cohort's own features from one process; "
                         "they do not combine with --decode, --embedding or several processes")
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
    if args.complete or args.format == "h5mu":
        from cgjax.cli.completed import write_completed

        write_completed(args, ms, cohort, options, progress=not args.quiet)
        return 0
    # without --decode the tables stream to OUT chunk by chunk (per-process parts merged by process 0)
    tables = pipeline.impute(ms, cohort, options, progress=not args.quiet and distributed.is_primary(),
                             mesh="auto", out_dir=None if embedding is not None else out)
    if embedding is not None:
        tables = decode_imputations(tables, embedding)
    from cgjax.ensemble.sample import composition_for

    for m, df in tables.items():
        rows = int((~cohort.masks[m]).sum()) if m in cohort.masks else cohort.n_samples
        how = describe_options(options)
        if options.method == "coherent":
            how += f", {composition_for(ms, m, options)} composition"
        if isinstance(df, Path):
            if distributed.is_primary():
                print(f"{m}: {rows} samples x {args.replicates} replicate(s), {how} -> {df}")
            continue
        with atomic_file(out / f"{m}.parquet") as tmp:  # a kill leaves no partial table at the path
            df.to_parquet(tmp, index=False)
        print(f"{m}: {rows} samples x {args.replicates} replicate(s), {how} -> {out / (m + '.parquet')}")
    if not tables:
        print("nothing to impute: every sample has every modality")
    return 0


def write_quick_report(ms, test, law, out: Path, options, *, seconds: dict, progress: bool = False) -> str:
    """The quickstart's scoring and report: each modality of the complete ``test`` rows (a Cohort)
    generated from the other ones by ``multi`` and ``coherent`` (``options``: sampler, replicates,
    seed) and by ``law``'s oracle; writes OUT/report.md with its figures (OUT/figures/*.png: R2
    against the oracle, rank histogram, PCA of real vs generated) and OUT/metrics.json. ``seconds``
    holds the training time ("train") and the start time ("start", a time.time()). Returns the report."""
    from cgjax import pipeline
    from cgjax.data import Scalers
    from cgjax.ensemble.sample import composition_for
    from cgjax.evaluate.figures import report_figures
    from cgjax.sampling.options import with_method
    from cgjax.evaluate.reconstruction import ModelSampler, oracle_records, reconstruction_study
    from cgjax.evaluate.report import quick_report

    scaled = pipeline.scaled_inputs(ms, test)
    given = {t: [tuple(m for m in ms.modalities if m != t)] for t in ms.modalities}
    samplers = {m: ModelSampler(ms, with_method(options, m)) for m in ("multi", "coherent")}
    res = reconstruction_study(samplers, scaled, modalities=ms.modalities, given_sets=given,
                               replicates=options.replicates, seed=options.seed, progress=progress)
    records = res.records + oracle_records(law, test.data, Scalers.from_dict(ms.scalers), given,
                                           type_prior=law.type_prior(complete_only=True),
                                           n_draws=options.replicates, seed=options.seed)
    figs = report_figures(records, out, truth=scaled, samples=res.samples,
                          cancer_types=test.clinical["cancer_type"].to_numpy()
                          if "cancer_type" in test.clinical else None)
    total = time.time() - seconds["start"]
    coherent = with_method(options, "coherent")
    report = quick_report(records, ms, seconds={"train": seconds["train"], "total": total}, n_test=test.n_samples,
                          replicates=options.replicates, figures=figs,
                          compositions={t: composition_for(ms, t, coherent) for t in ms.modalities})
    (out / "report.md").write_text(report)
    (out / "metrics.json").write_text(json.dumps({"reconstruction": records, "val_metrics": ms.val_metrics,
                                                  "seconds": {"train": seconds["train"], "total": total}}, indent=1))
    return report


def cmd_quickstart(args) -> int:
    from cgjax import checkpoint, pipeline
    from cgjax.data import split_cohort
    from cgjax.datasets import default_law, synthetic_tcga
    from cgjax.sampling.options import SampleOptions
    from cgjax.sampling.solvers import SolverConfig
    from cgjax.diffusion.configs import build_configs

    options = SampleOptions(solver=SolverConfig(*QUICK_SOLVER_ARGS), replicates=args.replicates, seed=args.seed)
    arch, sched, train = build_configs({}, args.epochs, None, {"arch": QUICK_ARCH, "schedule": QUICK_SCHEDULE,
                                                               "train": QUICK_TRAIN})
    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cohort = split_cohort(synthetic_tcga(n_samples=args.n_samples, seed=args.seed))
    print(f"synthetic cohort: {cohort.n_samples} samples, modalities {list(cohort.modalities)}")
    pipeline.train(cohort, args.checkpoint, arch=arch, schedule_cfg=sched, train_cfg=train,
                   resume=True, progress=not args.quiet)
    t_train = time.time() - t0
    ms = checkpoint.load(args.checkpoint)
    report = write_quick_report(ms, cohort.split("test"), default_law(), out, options,
                                seconds={"start": t0, "train": t_train}, progress=not args.quiet)
    print(report)
    print(f"models in {args.checkpoint}; report in {out / 'report.md'} (figures in {out / 'figures'}), "
          f"metrics in {out / 'metrics.json'}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train every single- and multi-condition model of a cohort")
    p.add_argument("cohort", help="cohort directory or .h5mu file")
    p.add_argument("--out", required=True, help="checkpoint directory to write (resumed if it exists)")
    p.add_argument("--preset", choices=TRAIN_PRESETS, default="paper",
                   help="model sizes and training, overridden by --config and the flags below: "
                        + "; ".join(f"{n}{' (default)' if n == 'paper' else ''}: {describe(n)}"
                                    for n in TRAIN_PRESETS)
                        + ". quick trains in minutes on 2 CPU cores (experiments/RESULTS.md)")
    p.add_argument("--config", help="JSON or TOML file with sections arch, schedule, train (over the --preset)")
    p.add_argument("--epochs", type=int, help="training epochs, exactly (overrides the preset and the config, "
                                              "and the preset's min_steps)")
    p.add_argument("--timesteps", type=int, help="diffusion timesteps T (overrides the preset and the config)")
    p.add_argument("--seed", type=int, help="initialisation and batching seed (overrides the config; default 0)")
    p.add_argument("--parametrisation", default=None,
                   help="what the networks predict: eps (the noise; the paper's recipe, default), v "
                        "(v-prediction) or x0; overrides the config's arch.parametrisation")
    p.add_argument("--anchor", default=None, choices=("none", "gaussian", "mixture", "auto"),
                   help="none (the paper's networks), gaussian (each network learns the residual of a "
                        "linear-Gaussian denoiser fitted on its training rows), mixture (the quick preset's: the same, "
                        "with a mixture of linear-Gaussian laws whose weights depend on the conditions on the "
                        "patterns where it lowers the cross-validated energy score by 5%% or more) or auto (train "
                        "both, in "
                        "OUT.anchor-none and OUT.anchor-gaussian, and keep per model the better by validation "
                        "score: twice the training time; docs/calibration.md); overrides the config's arch.anchor")
    p.add_argument("--split-seed", type=int, default=42,
                   help="seed of the train/val/test split when the cohort has no split column; "
                        "recorded in the checkpoint, which 'cgjax evaluate' reuses")
    p.add_argument("--no-resume", action="store_true", help="start afresh even if --out holds a checkpoint")
    p.add_argument("--distributed", action="store_true",
                   help="start jax.distributed (automatic under srun) and train data-parallel over every device")
    p.add_argument("--no-calibration-check", action="store_true",
                   help="skip the calibration check on the validation split after training (docs/calibration.md)")
    p.add_argument("--calibration-rows", type=int, default=128,
                   help="validation rows the calibration check generates each modality for")
    p.add_argument("--calibration-replicates", type=int, default=20,
                   help="replicates per row in the calibration check (ranks 0..R)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("impute", help="fill in every missing modality of every sample of a cohort")
    p.add_argument("checkpoint", help="checkpoint directory written by 'cgjax train'")
    p.add_argument("cohort", help="cohort directory or .h5mu file (may hold new patients)")
    p.add_argument("--method", choices=("coherent", "multi", "single"), default="coherent",
                   help="coherent: Coherent Denoising over the single models a sample's modalities allow (the "
                        "paper); multi: the masked multi-condition model; single: the best single model")
    p.add_argument("--replicates", type=int, default=1, help="imputations drawn per missing modality of a sample")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (same seed, same imputations)")
    p.add_argument("--out", required=True, help="directory for <modality>.parquet")
    p.add_argument("--weighting", default="inverse_mse", choices=("inverse_mse", "softmax_inverse_mse", "uniform"),
                   help="coherent ensemble weights from the validation MSE (paper: inverse_mse; reference code: "
                        "softmax_inverse_mse)")
    p.add_argument("--reject-fraction", type=float, default=0.05,
                   help="accept a trajectory when at most this fraction of steps is incoherent (paper 0.05, reference 0.10)")
    p.add_argument("--max-attempts", type=int, default=10,
                   help="trajectories tried per row before keeping the least incoherent one")
    p.add_argument("--no-rejection", action="store_true", help="accept every trajectory (no coherence test)")
    # the names of cgjax.sampling.composition.COMPOSITIONS (written out: the CLI imports no jax to parse)
    p.add_argument("--composition", default="auto", choices=("auto", "average", "product", "anchored"),
                   help="how coherent members combine: auto (default: anchored where every model has a fitted "
                        "anchor, else average), weighted average of their noise (paper), product of "
                        "experts (needs models trained with single_cond_dropout > 0), or anchored (the average of "
                        "the members' residuals around the multi model's anchor for the row's conditions; needs "
                        "models with an anchor, as the quick preset has)")
    p.add_argument("--corrector-steps", type=int, default=0,
                   help="Langevin corrector steps at each timestep before the solver step (default 0: none)")
    p.add_argument("--corrector-snr", type=float, default=0.5,
                   help="signal-to-noise ratio r of the corrector's step 2 alpha_t (r sigma_t)^2, in (0, 1)")
    p.add_argument("--max-batch", type=int, help="samples per compiled call (default: from the device's memory)")
    p.add_argument("--distributed", action="store_true",
                   help="start jax.distributed (automatic under srun); each process imputes its block of rows")
    add_solver_args(p)
    p.add_argument("--decode", action="store_true",
                   help="write imputations in feature space (genes, proteins), decoded with COHORT/embedding")
    p.add_argument("--embedding", help="embedding directory written by 'cgjax prepare' (implies --decode; "
                                       "default COHORT/embedding)")
    p.add_argument("--complete", action="store_true",
                   help="write every sample per modality (observed rows as they were, missing rows imputed, "
                        "an 'imputed' column) in the cohort's file format, instead of the imputed rows only")
    p.add_argument("--format", choices=("parquet", "h5mu"), default="parquet",
                   help="h5mu: write OUT/completed.h5mu, a MuData of every sample (obs 'imputed' flags, "
                        "replicates in layers, provenance in uns['cgjax'])")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_impute)

    p = sub.add_parser("quickstart", help="the main job on the embedded synthetic cohort, in a few minutes on a CPU")
    p.add_argument("--out", default="quickstart_out", help="directory for report.md, figures/ and metrics.json")
    p.add_argument("--checkpoint", default="checkpoints/quickstart", help="where the trained models go")
    p.add_argument("--n-samples", type=int, default=QUICK_SAMPLES, help="samples of the synthetic cohort")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"training epochs (default {QUICK_TRAIN['epochs']}, raised to at least "
                        f"{QUICK_TRAIN['min_steps']} optimiser steps; a value given here is exact)")
    p.add_argument("--replicates", type=int, default=5, help="imputations per test sample in the report")
    p.add_argument("--seed", type=int, default=0, help="cohort, training and sampling seed")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_quickstart)
