"""``cgjax prepare xena|matrices|apply``: raw tables -> a cohort of latents for ``cgjax train`` (+ its embedding)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cgjax.errors import CgjaxError


def _pairs(values, what: str, choices=None) -> dict:
    """``["rnaseq=rna_counts", ...]`` -> ``{"rnaseq": "rna_counts"}``."""
    out = {}
    for v in values or []:
        name, sep, val = v.partition("=")
        if not sep or not name or not val:
            raise CgjaxError(f"--{what} '{v}': expected MODALITY=VALUE")
        if choices is not None and val not in choices:
            raise CgjaxError(f"--{what} '{v}': '{val}' is not one of {list(choices)}")
        out[name.strip()] = val.strip()
    return out


def _options(args, transforms_default: dict | None):
    from cgjax.embedding import METHODS, EmbeddingOptions
    from cgjax.data.prepare import PrepareOptions
    from cgjax.data.preprocess import IMPUTERS, RPPA_MODES, TRANSFORMS, PreprocessOptions

    transforms = dict(PreprocessOptions().transforms if transforms_default is None else transforms_default)
    transforms.update(_pairs(args.transform, "transform", TRANSFORMS))
    imputers = dict(PreprocessOptions().imputers)
    imputers.update(_pairs(args.imputer, "imputer", IMPUTERS))
    if args.rppa_centering not in RPPA_MODES:
        raise CgjaxError(f"--rppa-centering must be one of {list(RPPA_MODES)}")
    methods = {"wsi": "pca"}
    methods.update(_pairs(args.embed, "embed", METHODS))
    try:
        pre = PreprocessOptions(transforms=transforms, imputers=imputers, rna_cpm_strict=not args.rna_cpm_ge,
                                rppa_centering=args.rppa_centering, max_missing=args.max_missing,
                                zscore_clip=args.zscore_clip)
        emb = EmbeddingOptions(latent_dim=args.latent_dim, methods=methods, max_epochs=args.max_epochs,
                               patience=args.patience, batch_size=args.batch_size, seed=args.seed,
                               standardize=args.standardize_inputs)
        if args.latent_dim < 1 or args.max_epochs < 1 or args.patience < 1 or args.batch_size < 2:
            raise ValueError("--latent-dim, --max-epochs and --patience must be >= 1, --batch-size >= 2")
    except (TypeError, ValueError) as e:
        raise CgjaxError(f"bad options: {e}") from None
    return PrepareOptions(preprocess=pre, embedding=emb, split_seed=args.split_seed, structural=args.structural,
                          embedding_choice=args.embedding_choice)


def cmd_xena(args) -> int:
    from cgjax.data.prepare import prepare_xena, summary

    cohorts = [c.strip() for c in args.cohorts.split(",") if c.strip()] if args.cohorts else None
    prepared = prepare_xena(args.raw_dir, args.out, cohorts=cohorts, wsi=args.wsi, options=_options(args, None),
                            overwrite=args.overwrite, write_features=args.write_features, progress=not args.quiet)
    print(summary(prepared))
    print(f"cohort of latents in {args.out} (train it with 'cgjax train {args.out} --out CKPT'); "
          f"encoders/decoders in {Path(args.out) / 'embedding'}")
    return 0


def cmd_matrices(args) -> int:
    from cgjax.data.prepare import prepare_matrices, summary

    prepared = prepare_matrices(args.directory, args.out, options=_options(args, {}), overwrite=args.overwrite,
                                write_features=args.write_features, progress=not args.quiet)
    print(summary(prepared))
    print(f"cohort of latents in {args.out} (train it with 'cgjax train {args.out} --out CKPT'); "
          f"encoders/decoders in {Path(args.out) / 'embedding'}")
    return 0


def _common(p: argparse.ArgumentParser, transform_help: str) -> None:
    p.add_argument("--out", required=True, help="cohort directory to write (latents, clinical.csv, embedding/)")
    p.add_argument("--latent-dim", type=int, default=32, help="latent size of every modality (default 32)")
    p.add_argument("--max-epochs", type=int, default=10000, help="autoencoder epochs at most (default 10000)")
    p.add_argument("--patience", type=int, default=10, help="early-stopping patience in epochs (default 10)")
    p.add_argument("--batch-size", type=int, default=64, help="autoencoder batch size (default 64)")
    p.add_argument("--seed", type=int, default=0, help="autoencoder initialisation and shuffling (default 0)")
    p.add_argument("--standardize-inputs", action="store_true",
                   help="train the autoencoders on standardised features (reference: raw values)")
    p.add_argument("--split-seed", type=int, default=42, help="seed of the train/val/test split (default 42)")
    p.add_argument("--transform", action="append", metavar="MOD=T", help=transform_help)
    p.add_argument("--imputer", action="append", metavar="MOD=I",
                   help="imputer of a modality: knn, median or none (default knn; cna median)")
    p.add_argument("--embed", action="append", metavar="MOD=M",
                   help="embedding of a modality: autoencoder, pca or none (default autoencoder; wsi pca)")
    p.add_argument("--rppa-centering", default="per_protein",
                   help="per_protein (paper, default) or per_sample (reference code)")
    p.add_argument("--rna-cpm-ge", action="store_true",
                   help="keep genes with CPM >= 1 (reference code) instead of > 1 (paper)")
    p.add_argument("--max-missing", type=float, default=0.10,
                   help="drop features missing in at least this fraction of train samples (default 0.10)")
    p.add_argument("--zscore-clip", type=float, metavar="C",
                   help="modalities with --transform MOD=zscore (already z-scored tables): clip values to [-C, C]")
    p.add_argument("--embedding-choice", choices=("best", "configured"), default="best",
                   help="best (default): an autoencoder is replaced by PCA of the same size when PCA reconstructs "
                        "the validation rows better; configured: keep the configured method (both R2s reported)")
    p.add_argument("--structural", choices=("drop", "impute"), default="drop",
                   help="a feature absent for every sample of a cancer type (missing from that type's file): "
                        "drop it (default) or let the imputer fill it from other types (reported, warned)")
    p.add_argument("--write-features", action="store_true",
                   help="also write the preprocessed feature tables to OUT/features/")
    p.add_argument("--overwrite", action="store_true", help="replace a cohort previously prepared at --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def cmd_apply(args) -> int:
    from cgjax.data import write_cohort
    from cgjax.data.prepare import apply_prepared, read_matrices

    cohort = apply_prepared(read_matrices(args.directory), args.prepared)
    write_cohort(cohort, args.out, overwrite=args.overwrite)
    print(f"{cohort.n_samples} new samples, modalities {list(cohort.modalities)}: latents in {args.out} "
          f"(impute them with 'cgjax impute CKPT {args.out} --out DIR --decode --embedding "
          f"{Path(args.prepared) / 'embedding'}')")
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("prepare", help="raw data -> cohort of latents + encoders (xena | matrices)",
                                   description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="prepare_command", required=True)

    p = sub.add_parser("xena", help="from UCSC Xena GDC-hub files TCGA-<C>.<kind>.tsv[.gz]",
                       description="Read Xena files (star_counts, gene-level_absolute, protein, clinical, "
                                   "survival), split, preprocess, fit autoencoders / WSI PCA on train, "
                                   "and write a cohort of latents (see docs/real_data.md).")
    p.add_argument("raw_dir", help="directory searched recursively for TCGA-<C>.<kind>.tsv[.gz]")
    p.add_argument("--cohorts", help="comma-separated cohort codes to read (default: all found)")
    p.add_argument("--wsi", help="slide embeddings: a directory of .h5 files or a CSV")
    _common(p, "transform of a modality (default rnaseq=rna_log2_counts, cna=cna_absolute, rppa=rppa)")
    p.set_defaults(func=cmd_xena)

    p = sub.add_parser("matrices", help="from per-modality samples x features tables <modality>.csv",
                       description="Read <modality>.csv|.tsv|.parquet tables (samples x features, first column "
                                   "the sample id) and an optional clinical table, then as 'prepare xena'.")
    p.add_argument("directory", help="directory of <modality>.csv tables (+ optional clinical.csv)")
    _common(p, "transform of a modality: rna_log2_counts, rna_counts, cna_absolute, rppa or none (default none)")
    p.set_defaults(func=cmd_matrices)

    p = sub.add_parser("apply", help="new patients' raw tables through a saved preparation (nothing refitted)",
                       description="Put new samples' <modality>.csv|.tsv|.parquet tables through the "
                                   "preprocessing and encoders saved in a prepared cohort directory, and write "
                                   "their latents as a cohort that 'cgjax impute' reads.")
    p.add_argument("prepared", help="a cohort directory written by 'cgjax prepare xena|matrices'")
    p.add_argument("directory", help="directory of the new samples' <modality>.csv tables (+ optional clinical.csv)")
    p.add_argument("--out", required=True, help="cohort directory to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing cohort at --out")
    p.set_defaults(func=cmd_apply)
