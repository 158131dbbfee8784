"""Readers for the raw per-cohort files the paper used, and for the bundled miniACC export.

UCSC Xena GDC hub (docs/reference.md 1.1-1.3), one set of files per cohort ``TCGA-<C>``:

- ``TCGA-<C>.star_counts.tsv``: STAR gene counts as log2(count + 1), features x samples;
- ``TCGA-<C>.gene-level_absolute.tsv``: ABSOLUTE gene-level copy number, features x samples;
- ``TCGA-<C>.protein.tsv``: RPPA, features x samples;
- ``TCGA-<C>.clinical.tsv``: clinical fields, samples x fields;
- ``TCGA-<C>.survival.tsv``: columns ``sample, OS, OS.time, _PATIENT``.

Matrices are tab-separated, their first column holds the feature ids and the other header cells
are sample barcodes. Readers return **samples x features** ``float32`` DataFrames indexed by the
barcode as written in the file; :func:`dedup_trimmed` then re-keys them by the trimmed sample id
of docs/reference.md 1.2 (the barcode without its vial letter, one row per sample).

Every problem with a file raises :class:`cgjax.errors.CohortError` whose message names the file
and what is wrong with it (line, column and value where there is one).

Nothing here transforms values; the paper's transforms are in :mod:`cgjax.data.preprocess`.
"""

from __future__ import annotations

import csv
import dataclasses
import lzma
import re
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from cgjax.data.io import open_text
from cgjax.data.preprocess import group_stage
from cgjax.errors import CohortError

# Xena file kind (the part between ``TCGA-<C>.`` and ``.tsv``) -> our modality name.
XENA_MODALITIES = {"star_counts": "rnaseq", "gene-level_absolute": "cna", "protein": "rppa"}
XENA_KINDS = ("star_counts", "gene-level_absolute", "protein", "clinical", "survival")
_XENA_NAME = re.compile(r"^TCGA-([A-Za-z0-9]+)\.(" + "|".join(re.escape(k) for k in XENA_KINDS)
                        + r")\.tsv(\.gz)?$")

# Cells that mean "missing" in the matrices. Anything else that is not a number is an error.
NA_TOKENS = ("", "NA", "NaN", "nan", "N/A", "null", "NULL")

# TCGA barcode: project-TSS-participant-sampletype, then the vial letter, then (in aliquot and
# slide barcodes) portion/analyte/plate/centre or slide fields after '-' or '.'.
_TCGA = re.compile(r"^(TCGA-[A-Za-z0-9]{2}-[A-Za-z0-9]{4}-\d{2})([A-Za-z])?(?=$|[-.])")

# Clinical columns that hold the AJCC pathologic stage, in the order they are looked for.
STAGE_COLUMNS = ("ajcc_pathologic_stage.diagnoses", "ajcc_pathologic_stage", "tumor_stage.diagnoses",
                 "pathologic_stage", "ajcc_pathologic_tumor_stage", "tumor_stage")
PROJECT_COLUMNS = ("project_id.project", "project_id")

MINIACC_FILES = {"rnaseq": "RNASeq2GeneNorm.csv", "cna": "gistict.csv", "rppa": "RPPAArray.csv",
                 "mirna": "miRNASeqGene.csv"}


# ---------------------------------------------------------------------------------------------
# Sample identifiers (docs/reference.md 1.2)
# ---------------------------------------------------------------------------------------------
def trim_barcode(barcode: str) -> str:
    """The sample id of a barcode: the barcode without its vial letter (docs/reference.md 1.2).

    ``TCGA-OR-A5J1-01A`` -> ``TCGA-OR-A5J1-01``. TCGA aliquot and slide barcodes are cut to the
    sample too (``TCGA-OR-A5J1-01A-11R-A29S-07`` -> ``TCGA-OR-A5J1-01``), and an already trimmed
    TCGA sample id is returned unchanged (the reference would cut one more character; we do not).
    Any other id loses its last character, which is the reference rule.
    """
    s = str(barcode).strip()
    m = _TCGA.match(s)
    if m:
        return m.group(1)
    if len(s) < 2:
        raise CohortError(f"barcode '{barcode}' is too short to trim its vial letter")
    return s[:-1]


def vial_letter(barcode: str) -> str:
    """The vial letter of a barcode (``TCGA-OR-A5J1-01A`` -> ``A``); '' for a trimmed TCGA id."""
    s = str(barcode).strip()
    m = _TCGA.match(s)
    if m:
        return (m.group(2) or "").upper()
    return s[-1:]


def dedup_trimmed(df: pd.DataFrame, *, source: str = "<memory>", return_original: bool = False):
    """Re-key rows (indexed by barcode) by trimmed sample id, one row per sample.

    Rows are sorted on (trimmed id, vial letter) and the first row of each trimmed id is kept
    (docs/reference.md 1.2: alphabetically first vial; for WSI this keeps exactly one slide per sample).
    Rows with the same trimmed id and vial (e.g. two slides or aliquots of one vial) are ordered by
    their full barcode, so the result does not depend on the order of the file. Two *identical*
    barcodes are an error.

    Args:
      df: rows indexed by barcode.
      source: the file the rows came from, for error messages.
      return_original: also return a Series trimmed id -> kept original barcode.

    Returns:
      the DataFrame indexed by ``sample_id`` in sorted order (and the Series if asked).
    """
    original = pd.Index([str(s).strip() for s in df.index])
    dup = original[original.duplicated()]
    if len(dup):
        raise CohortError(f"{source}: barcode '{dup[0]}' appears more than once")
    try:
        trimmed = [trim_barcode(s) for s in original]
    except CohortError as e:
        raise CohortError(f"{source}: {e}") from None
    keys = pd.DataFrame({"trimmed": trimmed, "vial": [vial_letter(s) for s in original],
                         "original": list(original), "pos": np.arange(len(original))})
    keys = keys.sort_values(["trimmed", "vial", "original"], kind="stable")
    keys = keys.drop_duplicates("trimmed", keep="first")
    out = df.iloc[keys["pos"].to_numpy()].copy()
    out.index = pd.Index(keys["trimmed"].to_list(), name="sample_id")
    if return_original:
        return out, pd.Series(keys["original"].to_list(), index=out.index, name="original_id")
    return out


# ---------------------------------------------------------------------------------------------
# Matrices
# ---------------------------------------------------------------------------------------------
def _check_exists(path: Path, what: str) -> None:
    if not path.exists():
        raise CohortError(f"{path}: {what} file does not exist")
    if path.is_dir():
        raise CohortError(f"{path}: expected a {what} file, found a directory")


def _split_line(line: str, sep: str) -> list[str]:
    if '"' in line:
        return next(csv.reader([line], delimiter=sep))
    return line.split(sep)


def _scan_table(path: Path, sep: str) -> tuple[list[str], list[int]]:
    """Header cells and the line number of every data line; checks that all lines have as many
    fields as the header. One pass in Python (line.split is fast enough for whole Xena files)."""
    header, lines = None, []
    try:
        with open_text(path) as fh:
            for lineno, line in enumerate(fh, start=1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                if header is None:
                    header = [c.strip() for c in _split_line(line, sep)]
                    continue
                n = len(_split_line(line, sep)) if '"' in line else line.count(sep) + 1
                if n != len(header):
                    if n == len(header) + 1:
                        raise CohortError(
                            f"{path}: line {lineno} has {n} fields but the header has {len(header)}: "
                            f"the header lacks the first (feature id) column")
                    raise CohortError(f"{path}: line {lineno} has {n} fields but the header has "
                                      f"{len(header)}")
                lines.append(lineno)
    except UnicodeDecodeError:
        raise CohortError(f"{path}: not a UTF-8 text table (binary or wrongly compressed file?)") from None
    except (OSError, EOFError, lzma.LZMAError) as e:
        raise CohortError(f"{path}: cannot read the file ({e})") from None
    if header is None:
        raise CohortError(f"{path}: empty file")
    return header, lines


def _looks_like_barcode(s) -> bool:
    return bool(_TCGA.match(str(s).strip()))


def _first_bad_cell(values: pd.DataFrame):
    """(row position, column label, raw value) of the first non-numeric or infinite cell, or None."""
    for col in values.columns:
        x = values[col]
        if pd.api.types.is_bool_dtype(x) or not pd.api.types.is_numeric_dtype(x):
            num = pd.to_numeric(x, errors="coerce")
            bad = num.isna() & x.notna()
            if bad.any():
                i = int(np.flatnonzero(bad.to_numpy())[0])
                return i, col, x.iloc[i]
            x = num
        inf = np.isinf(x.to_numpy(dtype=np.float64))
        if inf.any():
            i = int(np.flatnonzero(inf)[0])
            return i, col, x.iloc[i]
    return None


def read_xena_matrix(path, *, sep: str = "\t") -> pd.DataFrame:
    """Read a features x samples matrix (Xena layout) as a samples x features float32 DataFrame.

    The first column holds feature ids (its header cell is the id column's name and may be empty,
    as in R's ``write.csv``); every other header cell is a sample barcode. Missing cells are any of
    ``NA_TOKENS``. ``.gz``, ``.bz2`` and ``.xz`` files are decompressed.

    Args:
      path: the file.
      sep: field separator (tab for Xena; ',' for the miniACC CSVs).

    Returns:
      f32[N_samples, D_features] with index ``barcode`` (as written in the header, stripped) and
      columns the feature ids in file order.

    Raises:
      CohortError naming the file and, where it applies, the line, column and value: a missing file,
      a header without the feature id column or whose first cell is a sample barcode, a transposed
      (samples x features) table, a ragged line, an empty or duplicated sample header, an empty or
      duplicated feature id, a non-numeric or infinite cell.
    """
    path = Path(path)
    _check_exists(path, "matrix")
    header, lines = _scan_table(path, sep)
    if len(header) < 2:
        raise CohortError(f"{path}: the header has a single field; expected a feature id column and "
                          f"sample columns separated by {sep!r}")
    if _looks_like_barcode(header[0]):
        raise CohortError(f"{path}: the first header cell '{header[0]}' is a sample barcode, not the "
                          f"name of a feature id column: the first column must hold feature ids")
    samples = header[1:]
    for j, s in enumerate(samples):
        if not s:
            raise CohortError(f"{path}: header column {j + 2} is empty (expected a sample barcode)")
    seen: dict[str, int] = {}
    for j, s in enumerate(samples):
        if s in seen:
            raise CohortError(f"{path}: barcode '{s}' appears twice in the header "
                              f"(columns {seen[s] + 2} and {j + 2})")
        seen[s] = j
    if not lines:
        raise CohortError(f"{path}: no feature rows after the header")

    raw = pd.read_csv(path, sep=sep, header=None, skiprows=1, names=list(range(len(header))),
                      index_col=False, dtype={0: str}, na_values=list(NA_TOKENS), keep_default_na=False,
                      skip_blank_lines=True, low_memory=False)
    if len(raw) != len(lines):  # e.g. a quoted field spanning lines; never in Xena files
        raise CohortError(f"{path}: could not parse the table consistently ({len(raw)} rows parsed, "
                          f"{len(lines)} lines)")
    features = raw[0].fillna("").astype(str).str.strip()
    empty = np.flatnonzero((features == "").to_numpy())
    if len(empty):
        raise CohortError(f"{path}: line {lines[empty[0]]} has an empty feature id")
    n_bar = int(features.map(_looks_like_barcode).sum())
    if n_bar > 0 and n_bar >= 0.5 * len(features):
        raise CohortError(f"{path}: the first column holds sample barcodes (e.g. '{features.iloc[0]}'): "
                          f"the table looks transposed; expected features x samples")
    dup = features.duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        first = int(np.flatnonzero((features == features.iloc[i]).to_numpy())[0])
        raise CohortError(f"{path}: feature '{features.iloc[i]}' appears twice "
                          f"(lines {lines[first]} and {lines[i]})")
    values = raw.drop(columns=[0])
    values.columns = samples
    bad = _first_bad_cell(values)
    if bad is not None:
        i, col, v = bad
        raise CohortError(f"{path}: line {lines[i]} (feature '{features.iloc[i]}'), column '{col}': "
                          f"value '{v}' is not a finite number")
    arr = values.to_numpy(dtype=np.float32).T
    return pd.DataFrame(arr, index=pd.Index(samples, name="barcode"),
                        columns=pd.Index(features.to_list(), name=header[0] or "feature"))


# ---------------------------------------------------------------------------------------------
# Sample tables (clinical, survival, WSI CSV)
# ---------------------------------------------------------------------------------------------
def _read_sample_table(path: Path, sep: str = "\t") -> pd.DataFrame:
    """A samples x fields table as strings; first column = sample id (checked non-empty, unique)."""
    header, lines = _scan_table(path, sep)
    if not lines:
        raise CohortError(f"{path}: no sample rows after the header")
    df = pd.read_csv(path, sep=sep, header=None, skiprows=1, names=list(range(len(header))),
                     index_col=False, dtype=str, keep_default_na=False, skip_blank_lines=True)
    df.columns = [h if h else f"column {j + 1}" for j, h in enumerate(header)]
    df.attrs["lines"] = lines
    ids = df.iloc[:, 0].str.strip()
    empty = np.flatnonzero((ids == "").to_numpy())
    if len(empty):
        raise CohortError(f"{path}: line {lines[empty[0]]} has an empty sample id")
    dup = ids.duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise CohortError(f"{path}: sample '{ids.iloc[i]}' appears more than once (line {lines[i]})")
    df.index = pd.Index(ids.to_list(), name="barcode")
    return df


def _numeric_column(df: pd.DataFrame, col: str, path: Path) -> pd.Series:
    raw = df[col].str.strip()
    missing = raw.isin(NA_TOKENS)
    num = pd.to_numeric(raw.where(~missing), errors="coerce")
    bad = num.isna() & ~missing
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise CohortError(f"{path}: line {df.attrs['lines'][i]} (sample '{df.index[i]}'), column "
                          f"'{col}': value '{raw.iloc[i]}' is not a number")
    return num.astype(np.float64)


def _cancer_type_from_name(path: Path) -> str | None:
    m = re.match(r"^TCGA-([A-Za-z0-9]+)\.", path.name)
    return m.group(1).upper() if m else None


def read_xena_clinical(path, *, cancer_type: str | None = None,
                       stage_column: str | None = None) -> pd.DataFrame:
    """Read ``TCGA-<C>.clinical.tsv`` (samples x fields; first column = sample barcode).

    The AJCC pathologic stage is grouped into 1-4 with :func:`cgjax.data.preprocess.group_stage`
    (docs/reference.md 1.3: Stage 0 -> 1; I/IA/IB/IS -> 1; II.. -> 2; III.. -> 3; IV.. -> 4;
    X / Not Reported -> missing). The stage column is ``stage_column`` or the first of
    ``STAGE_COLUMNS`` present; a cohort without any (GBM, LGG are not staged) gets a missing stage.
    Barcodes are trimmed and deduplicated as in :func:`dedup_trimmed`.

    Args:
      path: the file.
      cancer_type: the cohort's cancer type; default: a ``project_id`` column, else ``<C>`` of the
        file name ``TCGA-<C>.clinical.tsv``.
      stage_column: name of the stage column; an error if the file lacks it.

    Returns:
      DataFrame indexed by ``sample_id`` with columns ``cancer_type`` (str or None), ``stage``
      (float 1-4 or NaN) and ``stage_raw`` (the text in the file).
    """
    path = Path(path)
    _check_exists(path, "clinical")
    df = _read_sample_table(path)
    if stage_column is not None and stage_column not in df.columns:
        raise CohortError(f"{path}: no column '{stage_column}' (columns: {list(df.columns)[:20]})")
    col = stage_column or next((c for c in STAGE_COLUMNS if c in df.columns), None)
    out = pd.DataFrame(index=df.index)
    if cancer_type is None:
        pcol = next((c for c in PROJECT_COLUMNS if c in df.columns), None)
        if pcol is not None:
            out["cancer_type"] = df[pcol].str.strip().str.replace(r"^TCGA-", "", regex=True).replace("", None)
        else:
            out["cancer_type"] = _cancer_type_from_name(path)
    else:
        out["cancer_type"] = cancer_type
    if col is None:
        out["stage_raw"] = None
        out["stage"] = np.nan
    else:
        out["stage_raw"] = df[col].str.strip()
        out["stage"] = group_stage(df[col], source=f"{path}: column '{col}'").to_numpy()
    return dedup_trimmed(out, source=str(path))


def read_xena_survival(path) -> pd.DataFrame:
    """Read ``TCGA-<C>.survival.tsv`` (columns ``sample``, ``OS``, ``OS.time``, ``_PATIENT``).

    As in the reference (docs/reference.md 1.2): ``sample`` is trimmed, the first row of each trimmed id
    (in file order) is kept, then rows with a missing ``OS`` or ``OS.time`` are dropped.

    Returns:
      DataFrame indexed by ``sample_id`` with float columns ``os_time`` (days, >= 0) and
      ``os_event`` (1 = death observed, 0 = censored).
    """
    path = Path(path)
    _check_exists(path, "survival")
    header, _ = _scan_table(path, "\t")
    missing = [c for c in ("sample", "OS", "OS.time") if c not in header]
    if missing:
        raise CohortError(f"{path}: missing column(s) {missing} (found {header}); a Xena survival "
                          f"file has columns sample, OS, OS.time, _PATIENT")
    df = _read_sample_table(path)
    df = df.set_index(pd.Index(df["sample"].str.strip().to_list(), name="barcode"), drop=False)
    os_event = _numeric_column(df, "OS", path)
    os_time = _numeric_column(df, "OS.time", path)
    bad = os_event.notna() & ~os_event.isin([0, 1])
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise CohortError(f"{path}: line {df.attrs['lines'][i]} (sample '{df.index[i]}'), column 'OS': "
                          f"value {os_event.iloc[i]:g} must be 0 or 1")
    bad = os_time < 0
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise CohortError(f"{path}: line {df.attrs['lines'][i]} (sample '{df.index[i]}'), column "
                          f"'OS.time': negative survival time {os_time.iloc[i]:g}")
    try:
        trimmed = [trim_barcode(s) for s in df.index]
    except CohortError as e:
        raise CohortError(f"{path}: {e}") from None
    out = pd.DataFrame({"os_time": os_time.to_numpy(), "os_event": os_event.to_numpy()},
                       index=pd.Index(trimmed, name="sample_id"))
    out = out[~out.index.duplicated(keep="first")]
    return out.dropna(subset=["os_time", "os_event"])


# ---------------------------------------------------------------------------------------------
# WSI slide embeddings
# ---------------------------------------------------------------------------------------------
def read_wsi_embeddings(path, *, dataset: str = "features") -> pd.DataFrame:
    """Read slide embeddings: a directory of ``.h5`` files or a CSV.

    Directory: every ``*.h5`` file holds a 1-D dataset ``dataset`` (Trident/Titan slide features,
    docs/reference.md 1.1); its file stem is the slide barcode. CSV: first column = slide or sample id,
    other columns = embedding dimensions. Rows are *slides*; use :func:`dedup_trimmed` to keep
    one slide per sample (docs/reference.md 1.2).

    Returns:
      f32[N_slides, D] indexed by ``barcode`` (columns ``wsi_0..`` for h5, the CSV header for CSV).
    """
    import h5py

    path = Path(path)
    if not path.exists():
        raise CohortError(f"{path}: WSI embedding path does not exist")
    if not path.is_dir():
        df = _read_sample_table(path, sep="\t" if path.suffix.lower() in (".tsv", ".txt") else ",")
        values = df.iloc[:, 1:]
        if values.shape[1] == 0:
            raise CohortError(f"{path}: no embedding columns after the sample id column")
        cols = {c: _numeric_column(df, c, path) for c in values.columns}
        out = pd.DataFrame(cols, index=df.index).astype(np.float32)
        bad = out.isna() | np.isinf(out)
        if bad.to_numpy().any():
            i, j = map(int, np.argwhere(bad.to_numpy())[0])
            raise CohortError(f"{path}: line {df.attrs['lines'][i]} (sample '{out.index[i]}'), column "
                              f"'{out.columns[j]}': missing or infinite value")
        return out
    files = sorted(path.glob("*.h5"))
    if not files:
        raise CohortError(f"{path}: no .h5 slide embedding files in this directory")
    rows, dim = [], None
    for f in files:
        try:
            with h5py.File(f, "r") as h:
                if dataset not in h:
                    raise CohortError(f"{f}: no dataset '{dataset}' (found {sorted(h.keys())})")
                x = np.asarray(h[dataset][()], dtype=np.float32)
        except OSError as e:
            raise CohortError(f"{f}: cannot read as HDF5 ({e})") from None
        if x.ndim != 1:
            raise CohortError(f"{f}: dataset '{dataset}' has shape {x.shape}; expected a 1-D vector")
        if dim is None:
            dim = x.shape[0]
        elif x.shape[0] != dim:
            raise CohortError(f"{f}: embedding has {x.shape[0]} dimensions but {files[0].name} has {dim}")
        if not np.isfinite(x).all():
            raise CohortError(f"{f}: embedding has a non-finite value at position "
                              f"{int(np.flatnonzero(~np.isfinite(x))[0])}")
        rows.append(x)
    return pd.DataFrame(np.stack(rows), index=pd.Index([f.stem for f in files], name="barcode"),
                        columns=[f"wsi_{j}" for j in range(dim)])


# ---------------------------------------------------------------------------------------------
# Cohorts
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class XenaFiles:
    """The files of one Xena cohort ``TCGA-<cohort>``; a kind the directory lacks is None."""

    cohort: str
    star_counts: Path | None = None
    gene_level_absolute: Path | None = None
    protein: Path | None = None
    clinical: Path | None = None
    survival: Path | None = None

    def get(self, kind: str) -> Path | None:
        return getattr(self, kind.replace("-", "_"))


@dataclasses.dataclass(frozen=True)
class RawCohort:
    """Raw modality tables before preprocessing.

    Attributes:
      modalities: name -> samples x features float32 DataFrame indexed by trimmed ``sample_id``;
        only samples that have the modality appear (there may be missing cells).
      clinical: DataFrame indexed by ``sample_id`` with columns among ``cancer_type``, ``stage``,
        ``os_time``, ``os_event`` (and ``stage_raw``), ready for :func:`cgjax.data.from_arrays`.
      original_ids: name -> Series sample_id -> the barcode kept for that sample.
      source: where it came from, for messages.
    """

    modalities: Mapping[str, pd.DataFrame]
    clinical: pd.DataFrame
    original_ids: Mapping[str, pd.Series]
    source: str


def discover_xena(raw_dir) -> dict[str, XenaFiles]:
    """Find every cohort's Xena files under ``raw_dir`` (searched recursively) by file name.

    Names: ``TCGA-<C>.<kind>.tsv`` or ``.tsv.gz``, kind in ``XENA_KINDS``. Other files are ignored.

    Returns:
      cohort code (``"ACC"``) -> :class:`XenaFiles`, sorted by code.
    """
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise CohortError(f"{raw_dir}: Xena data directory does not exist")
    found: dict[str, dict[str, Path]] = {}
    for f in sorted(raw_dir.rglob("TCGA-*")):
        m = _XENA_NAME.match(f.name)
        if not m or not f.is_file():
            continue
        cohort, kind = m.group(1).upper(), m.group(2)
        files = found.setdefault(cohort, {})
        if kind in files:
            raise CohortError(f"{raw_dir}: two {kind} files for cohort TCGA-{cohort}: "
                              f"{files[kind]} and {f}")
        files[kind] = f
    if not found:
        raise CohortError(f"{raw_dir}: no Xena files named TCGA-<C>.<kind>.tsv[.gz] with kind in "
                          f"{list(XENA_KINDS)}")
    return {c: XenaFiles(cohort=c, **{k.replace("-", "_"): p for k, p in found[c].items()})
            for c in sorted(found)}


def _check_overlap(indices: Mapping[str, tuple[pd.Index, str]], what: str) -> None:
    """Each table must share at least one sample with the union of the others."""
    if len(indices) < 2:
        return
    for name, (idx, src) in indices.items():
        others = pd.Index([])
        for other, (oidx, _) in indices.items():
            if other != name:
                others = others.union(oidx)
        if len(idx.intersection(others)) == 0:
            other_srcs = ", ".join(s for o, (_, s) in indices.items() if o != name)
            ex = f"'{idx[0]}'" if len(idx) else "none"
            ex_o = f"'{others[0]}'" if len(others) else "none"
            raise CohortError(f"{src}: {what}: no sample in common with {other_srcs} "
                              f"(e.g. {ex} here vs {ex_o} there); do the barcodes match?")


def _check_table_overlap(table: pd.Index, path: Path, samples: pd.Index, idx, cohort: str) -> None:
    """A clinical or survival table must describe at least one sample of the modalities."""
    if len(table) and len(table.intersection(samples)) == 0:
        srcs = ", ".join(s for _, s in idx.values())
        raise CohortError(f"{path}: cohort TCGA-{cohort}: no sample in common with {srcs} "
                          f"(e.g. '{table[0]}' here vs '{samples[0]}' there); do the barcodes match?")


def read_xena_cohort(files: XenaFiles, *, wsi: pd.DataFrame | None = None,
                     wsi_source: str = "WSI embeddings", require_wsi_overlap: bool = True) -> RawCohort:
    """Read one cohort's Xena files into a :class:`RawCohort`.

    Matrices are read with :func:`read_xena_matrix` and re-keyed with :func:`dedup_trimmed`;
    clinical and survival are joined on the trimmed id. ``wsi`` (slides x dims, as returned by
    :func:`read_wsi_embeddings`) is reduced to one slide per sample of this cohort.

    Raises:
      CohortError when the cohort has no modality file, or when one modality (or the clinical or
      survival table, or ``wsi`` unless ``require_wsi_overlap`` is False) shares no sample with
      the others.
    """
    mods, orig, idx = {}, {}, {}
    for kind, name in XENA_MODALITIES.items():
        p = files.get(kind)
        if p is None:
            continue
        df, o = dedup_trimmed(read_xena_matrix(p), source=str(p), return_original=True)
        mods[name], orig[name], idx[name] = df, o, (df.index, str(p))
    if not mods:
        raise CohortError(f"cohort TCGA-{files.cohort}: no modality file (star_counts, "
                          f"gene-level_absolute or protein)")
    _check_overlap(idx, f"cohort TCGA-{files.cohort}")
    samples = pd.Index(sorted(set().union(*(d.index for d in mods.values()))), name="sample_id")
    if wsi is not None:
        w, o = dedup_trimmed(wsi, source=wsi_source, return_original=True)
        keep = w.index.intersection(samples)
        if len(keep) == 0 and require_wsi_overlap:
            raise CohortError(f"{wsi_source}: no slide of cohort TCGA-{files.cohort} "
                              f"(e.g. '{samples[0]}' here vs '{w.index[0]}' there); do the barcodes match?")
        if len(keep):
            mods["wsi"], orig["wsi"] = w.loc[keep], o.loc[keep]
    clinical = pd.DataFrame(index=samples)
    if files.clinical is not None:
        c = read_xena_clinical(files.clinical, cancer_type=files.cohort)
        _check_table_overlap(c.index, files.clinical, samples, idx, files.cohort)
        clinical = clinical.join(c, how="outer")
    if files.survival is not None:
        s = read_xena_survival(files.survival)
        _check_table_overlap(s.index, files.survival, samples, idx, files.cohort)
        clinical = clinical.join(s, how="outer")
    clinical["cancer_type"] = files.cohort
    clinical.index.name = "sample_id"
    return RawCohort(modalities=mods, clinical=clinical, original_ids=orig,
                     source=f"Xena cohort TCGA-{files.cohort}")


def read_xena(raw_dir, *, cohorts=None, wsi=None) -> RawCohort:
    """Read and merge every Xena cohort under ``raw_dir`` (docs/reference.md 1.3: rows concatenated,
    features outer-joined, so a feature a cohort lacks is NaN for its samples).

    Args:
      raw_dir: directory searched by :func:`discover_xena`.
      cohorts: cohort codes to read (default: all found); a code not found is an error.
      wsi: path of slide embeddings (:func:`read_wsi_embeddings`), or None.
    """
    found = discover_xena(raw_dir)
    codes = list(found) if cohorts is None else [str(c).upper().removeprefix("TCGA-") for c in cohorts]
    missing = [c for c in codes if c not in found]
    if missing:
        raise CohortError(f"{raw_dir}: no files for cohort(s) {missing} (found {list(found)})")
    slides = read_wsi_embeddings(wsi) if wsi is not None else None
    parts = [read_xena_cohort(found[c], wsi=slides, wsi_source=str(wsi), require_wsi_overlap=False)
             for c in codes]
    if slides is not None and not any("wsi" in p.modalities for p in parts):
        raise CohortError(f"{wsi}: no slide belongs to a sample of cohort(s) {codes} "
                          f"(e.g. slide '{slides.index[0]}'); do the barcodes match?")
    owner: dict[str, str] = {}
    for part in parts:
        for sid in part.clinical.index:
            if sid in owner:
                raise CohortError(f"{raw_dir}: sample '{sid}' is in two cohorts ({owner[sid]} and "
                                  f"{part.source})")
            owner[sid] = part.source
    names = [m for m in ("cna", "rnaseq", "rppa", "wsi") if any(m in p.modalities for p in parts)]
    mods = {m: pd.concat([p.modalities[m] for p in parts if m in p.modalities], axis=0, join="outer")
            .astype(np.float32) for m in names}
    orig = {m: pd.concat([p.original_ids[m] for p in parts if m in p.original_ids]) for m in names}
    clinical = pd.concat([p.clinical for p in parts], axis=0)
    return RawCohort(modalities=mods, clinical=clinical, original_ids=orig, source=str(raw_dir))


# ---------------------------------------------------------------------------------------------
# miniACC (exported from Bioconductor's MultiAssayExperiment; packaged copy: cgjax.datasets.mini_acc)
# ---------------------------------------------------------------------------------------------
def read_miniacc(directory, *, modalities: Mapping[str, str] | None = None) -> RawCohort:
    """Read the miniACC CSV export (TCGA-ACC, 92 patients) into a :class:`RawCohort`.

    Assay CSVs are features x samples with full aliquot barcodes as columns
    (``TCGA-OR-A5J1-01A-11R-A29S-07``); they are re-keyed by trimmed sample id
    (``TCGA-OR-A5J1-01``). Values are as exported: RNASeq2GeneNorm = RSEM normalised counts (not
    log-transformed), gistict = GISTIC thresholded copy number in -2..2 (not absolute copy number),
    RPPAArray = RPPA, miRNASeqGene = counts. ``sampleMap.csv`` maps each assay column to its patient;
    ``clinical.csv`` (one row per patient) gives, for each sample of a patient:

    - ``stage``: ``pathologic_stage`` ("stage ii", ...) grouped into 1-4;
    - ``os_event``: ``vital_status`` (1 = dead, 0 = alive);
    - ``os_time``: ``days_to_death`` for the dead, ``days_to_last_followup`` for the living.

    Patients with no sample in the read assays have no sample id and are left out.

    Args:
      directory: the miniACC directory.
      modalities: our name -> CSV file name; default ``MINIACC_FILES``.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CohortError(f"{directory}: miniACC directory does not exist")
    files = dict(MINIACC_FILES if modalities is None else modalities)
    smap_path = directory / "sampleMap.csv"
    _check_exists(smap_path, "miniACC sample map")
    smap = pd.read_csv(smap_path, dtype=str)
    need = {"assay", "primary", "colname"}
    if not need <= set(smap.columns):
        raise CohortError(f"{smap_path}: missing column(s) {sorted(need - set(smap.columns))}")
    patient_of = dict(zip(smap["colname"], smap["primary"]))

    mods, orig, idx = {}, {}, {}
    for name, fname in files.items():
        p = directory / fname
        df = read_xena_matrix(p, sep=",")
        unknown = [b for b in df.index if b not in patient_of]
        if unknown:
            raise CohortError(f"{p}: column '{unknown[0]}' is not in {smap_path.name}")
        df, o = dedup_trimmed(df, source=str(p), return_original=True)
        mods[name], orig[name], idx[name] = df, o, (df.index, str(p))
    _check_overlap(idx, "miniACC")

    clin_path = directory / "clinical.csv"
    _check_exists(clin_path, "miniACC clinical")
    clin = _read_sample_table(clin_path, sep=",")
    need = ["pathologic_stage", "vital_status", "days_to_death", "days_to_last_followup"]
    missing = [c for c in need if c not in clin.columns]
    if missing:
        raise CohortError(f"{clin_path}: missing column(s) {missing}")
    vital = _numeric_column(clin, "vital_status", clin_path)
    bad = vital.notna() & ~vital.isin([0, 1])
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise CohortError(f"{clin_path}: line {clin.attrs['lines'][i]} (patient '{clin.index[i]}'), "
                          f"column 'vital_status': value {vital.iloc[i]:g} must be 0 or 1")
    death = _numeric_column(clin, "days_to_death", clin_path)
    follow = _numeric_column(clin, "days_to_last_followup", clin_path)
    per_patient = pd.DataFrame({
        "stage": group_stage(clin["pathologic_stage"], source=f"{clin_path}: column 'pathologic_stage'").to_numpy(),
        "os_time": np.where(vital == 1, death, np.where(vital == 0, follow, np.nan)),
        "os_event": vital.to_numpy(),
    }, index=clin.index)
    per_patient.loc[per_patient["os_time"].isna(), "os_event"] = np.nan

    samples = pd.Index(sorted(set().union(*(d.index for d in mods.values()))), name="sample_id")
    patient_of_sample: dict[str, str] = {}
    for o in orig.values():
        for sid, barcode in o.items():
            patient_of_sample.setdefault(sid, patient_of[barcode])
    clinical = per_patient.reindex([patient_of_sample[s] for s in samples])
    clinical.index = samples
    clinical.insert(0, "cancer_type", "ACC")
    return RawCohort(modalities=mods, clinical=clinical, original_ids=orig, source=str(directory))
