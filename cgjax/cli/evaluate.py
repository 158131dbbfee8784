"""``cgjax evaluate CKPT_DIR COHORT --out DIR``: every experiment of the paper on one cohort."""

from __future__ import annotations

from pathlib import Path

from cgjax.errors import CgjaxError


def cmd_evaluate(args) -> int:
    from cgjax import checkpoint
    from cgjax.data import read_cohort
    from cgjax.evaluate.run import STEPS, EvalConfig, evaluate

    overrides = {}
    for name in ("replicates", "runs", "seed", "embedding", "solver", "solver_steps"):
        v = getattr(args, name)
        if v is not None:
            overrides[name] = v
    if args.trees is not None:
        overrides["rf_trees"] = args.trees
    if args.steps:
        steps = tuple(s.strip() for s in args.steps.split(",") if s.strip())
        bad = [s for s in steps if s not in STEPS]
        if bad:
            raise CgjaxError(f"--steps: unknown step(s) {bad}; choose from {', '.join(STEPS)}")
        overrides["steps"] = steps
    if args.counterfactual_score:
        overrides["counterfactual_score"] = args.counterfactual_score
    preset = "quick" if args.quick else args.protocol
    cfg = EvalConfig.preset(preset, **overrides)
    if args.quick and args.protocol == "reference":
        ref = EvalConfig.preset("reference")
        for k in ("counterfactual_score", "counterfactual_ablation", "weighting", "reject_fraction"):
            if k not in overrides:
                setattr(cfg, k, getattr(ref, k))
    if cfg.replicates < 2:
        raise CgjaxError("--replicates must be >= 2 (calibration and spread need at least two generations)")
    if cfg.runs < 1:
        raise CgjaxError("--runs must be >= 1")
    ms = checkpoint.load(args.checkpoint)
    cohort = read_cohort(args.cohort)
    if ms.split is None:
        from cgjax.data.split import apply_split_record

        print(f"note: {apply_split_record(cohort, None)[1][0]}")
    metrics = evaluate(ms, cohort, args.out, cfg, oracle=args.oracle, progress=not args.quiet,
                       calibration=not args.no_calibration_check)
    out = Path(args.out)
    for w in metrics.get("calibration_check", {}).get("warnings", []):
        print(f"WARNING: {w}")
    for note in metrics.get("calibration_check", {}).get("notes", []):
        print(f"note: {note}")
    print(f"report: {out / 'report.md'}; metrics: {out / 'metrics.json'}; figures in {out / 'figures'} "
          f"({metrics['seconds']['total']:.0f} s)")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="run every experiment of the paper (tables, figures, raw numbers)",
                       description="Run the paper's evaluation protocol (reconstruction, manifold, predictive "
                                   "signal, downstream rescue, counterfactual prioritisation, privacy) with our "
                                   "samplers beside classical imputers and, on the synthetic cohort, the exact "
                                   "oracle. Writes DIR/report.md, DIR/metrics.json, CSVs and DIR/figures/*.png.")
    p.add_argument("checkpoint", help="checkpoint directory written by 'cgjax train'")
    p.add_argument("cohort", help="the cohort the models were trained on (directory or .h5mu), with its split")
    p.add_argument("--out", required=True, help="directory for the report, metrics, CSVs and figures")
    p.add_argument("--replicates", type=int, help="generations per test row (paper 10; quick 3)")
    p.add_argument("--runs", type=int, help="downstream / counterfactual runs (paper 10; quick 3)")
    p.add_argument("--quick", action="store_true",
                   help="small forests, 3 replicates and runs: minutes on a CPU (the quick preset)")
    p.add_argument("--protocol", choices=("paper", "reference"), default="paper",
                   help="where the paper and the authors' code disagree, follow the paper (default) or the code")
    p.add_argument("--oracle", choices=("auto", "synthetic", "none"), default="auto",
                   help="oracle rows from the synthetic law: auto-detect the synthetic cohort (default), force, or off")
    p.add_argument("--steps", help="comma-separated subset of the steps (default all)")
    p.add_argument("--trees", type=int, help="trees per random forest classifier (paper 500, reference 100)")
    p.add_argument("--counterfactual-score", choices=("prob_variance", "disagreement"),
                   help="variance score (paper: prob_variance; reference code: disagreement)")
    p.add_argument("--embedding", choices=("umap", "pca"), help="2-D embedding of the manifold figure (default umap)")
    p.add_argument("--solver", choices=("ddpm", "ddim", "dpm"), help="reverse process (default ddpm, the paper)")
    p.add_argument("--solver-steps", type=int, help="timesteps of an accelerated solver")
    p.add_argument("--seed", type=int, help="sampling and classifier seed (default: the preset's)")
    p.add_argument("--no-calibration-check", action="store_true",
                   help="leave out the calibration check on the validation split (docs/calibration.md)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_evaluate)
