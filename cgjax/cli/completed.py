"""``cgjax impute --complete`` and ``--format h5mu``: every sample written back, imputed rows flagged."""

from __future__ import annotations

from pathlib import Path

from cgjax.complete import impute_complete, provenance, write_h5mu, write_tables
from cgjax.data.io import scan_tables
from cgjax.sampling.options import describe_options


def cohort_suffixes(cohort_path, modalities) -> dict[str, str]:
    """Per modality, the table format (``.csv``, ``.tsv``, ``.parquet``) of the cohort directory; a
    modality the cohort lacks gets its first table's format."""
    tables, _ = scan_tables(Path(cohort_path))
    first = next(iter(tables.values())).suffix.lower()
    return {m: tables[m].suffix.lower() if m in tables else first for m in modalities}


def write_completed(args, ms, cohort, options, *, progress: bool = True) -> dict[str, Path]:
    """Impute ``cohort`` and write it completed to ``args.out``: ``completed.h5mu`` for ``--format
    h5mu`` or a ``.h5mu`` cohort, else ``<modality>.<the cohort's suffix>`` tables with an
    ``imputed`` column. Returns modality -> file written."""
    c = impute_complete(ms, cohort, options, provenance=provenance(Path(args.checkpoint).absolute(), options),
                        progress=progress)
    out = Path(args.out)
    if args.format == "h5mu" or Path(args.cohort).suffix.lower() == ".h5mu":
        f = write_h5mu(c, out / "completed.h5mu", ms.feature_names)
        paths = {m: f for m in c.replicates}
    else:
        suffixes = cohort_suffixes(args.cohort, ms.modalities)
        paths = {}
        for m in ms.modalities:  # one call per suffix keeps write_tables simple
            sub = type(c)(c.cohort, {m: c.replicates[m]}, {m: c.imputed[m]}, c.provenance)
            paths.update(write_tables(sub, out, suffixes[m], ms.feature_names))
    for m, f in paths.items():
        print(f"{m}: {cohort.n_samples} samples ({int(c.imputed[m].sum())} imputed) x {args.replicates} "
              f"replicate(s), {describe_options(options)} -> {f}")
    return paths
