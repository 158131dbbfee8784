"""``cgjax cohort synth|describe``: make a synthetic cohort, summarise a cohort."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("cohort", help="make or inspect a cohort (directory or .h5mu file)",
                                   description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cohort_command", required=True)

    synth = sub.add_parser("synth", help="write a synthetic TCGA-like cohort",
                           description="Write a synthetic TCGA-like cohort (cgjax.datasets.synthetic_tcga).")
    synth.add_argument("--out", required=True, type=Path,
                       help="cohort directory to create (or a .h5mu file with --format h5mu)")
    synth.add_argument("--n-samples", type=int, default=1000, help="number of samples (default 1000)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument("--format", choices=("csv", "tsv", "parquet", "h5mu"), default=None,
                       help="table format (default: h5mu if --out ends in .h5mu, else csv)")
    synth.add_argument("--split", action="store_true",
                       help="also store a train/val/test split (paper rule, --split-seed)")
    synth.add_argument("--split-seed", type=int, default=42, help="seed of the split (default 42)")
    synth.add_argument("--overwrite", action="store_true", help="replace an existing cohort at --out")
    synth.set_defaults(func=run_synth)

    describe = sub.add_parser("describe", help="print per-modality and per-cancer-type counts",
                              description="Print per-modality and per-cancer-type sample counts "
                                          "(like Table 4 of the paper), and split counts if any.")
    describe.add_argument("path", type=Path, help="cohort directory or .h5mu file")
    describe.add_argument("--csv", type=Path, default=None, help="also write the per-type table to this CSV")
    describe.set_defaults(func=run_describe)


def run_synth(args: argparse.Namespace) -> int:
    from cgjax.data import split_cohort, write_cohort
    from cgjax.errors import CohortError
    try:
        from cgjax.datasets import synthetic_tcga
    except ImportError as e:  # only while the datasets module is being written
        raise CohortError(f"cgjax.datasets.synthetic_tcga is not available: {e}") from None
    if args.n_samples < 1:
        raise CohortError(f"--n-samples must be >= 1, got {args.n_samples}")
    fmt = args.format or ("h5mu" if args.out.suffix.lower() == ".h5mu" else "csv")
    cohort = synthetic_tcga(n_samples=args.n_samples, seed=args.seed)
    if args.split:
        cohort = split_cohort(cohort, seed=args.split_seed, force=True)
    path = write_cohort(cohort, args.out, format=fmt, overwrite=args.overwrite)
    print(f"wrote {cohort.n_samples} samples, modalities {', '.join(cohort.modalities)} to {path}")
    return 0


def run_describe(args: argparse.Namespace) -> int:
    from cgjax.data import describe_cohort, describe_modalities, read_cohort
    cohort = read_cohort(args.path)
    out = sys.stdout
    print(f"cohort {cohort.source}: {cohort.n_samples} samples, {len(cohort.modalities)} modalities", file=out)
    print("", file=out)
    print(describe_modalities(cohort).to_string(index=False), file=out)
    print("", file=out)
    table = describe_cohort(cohort)
    print(table.to_string(index=False), file=out)
    if args.csv is not None:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.csv, index=False)
    return 0
