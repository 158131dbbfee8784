"""Cohort files: read and write a :class:`~cgjax.data.cohort.Cohort`, check it against a model, describe it.

Two on-disk layouts are supported (see ``docs/cohorts.md``):

* a **directory** with one table per modality, ``<modality>.csv``, ``.tsv`` or ``.parquet``
  (rows = samples, first column ``sample_id``, the other columns numeric features), plus an optional
  clinical table ``clinical.csv|tsv|parquet`` (``sample_id`` first, then any of ``cancer_type``,
  ``stage``, ``os_time``, ``os_event``, ``split``); files with other extensions are ignored;
* a **MuData file** ``*.h5mu``: one ``mod`` per modality (``obs_names`` = sample ids, ``var_names`` =
  feature names, ``X`` = the present rows only) and the clinical labels in ``mdata.obs``.

The samples of a cohort read from disk are the *union* of the modality tables' sample ids, in sorted
order (so that the result does not depend on row order in the files). A sample lacks a modality
when it is absent from that table or when its row there is entirely empty/NaN. Every user mistake
raises :class:`cgjax.errors.CohortError` whose message names the file, the sample and the problem.
"""

from __future__ import annotations

import bz2
import csv
import dataclasses
import gzip
import lzma
import os
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from cgjax.data.cohort import (CLINICAL_COLUMNS, Cohort, check_clinical_values, from_arrays,
                               normalise_clinical)
from cgjax._atomic import atomic_file, make_directory
from cgjax.errors import CohortError

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet")
FORMATS = ("csv", "tsv", "parquet", "h5mu")
CLINICAL_NAME = "clinical"
# 9 significant digits are enough to round-trip every finite float32 exactly through decimal text
# (float32 needs at most 9; the parse goes via float64, which is far from any float32 rounding tie).
FLOAT32_FORMAT = "%.9g"

__all__ = ["read_cohort", "read_mudata", "write_cohort", "check_modalities", "align_features", "describe_cohort",
           "describe_modalities", "open_text", "scan_tables", "TABLE_SUFFIXES", "FORMATS"]


# ------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------
def read_cohort(path) -> Cohort:
    """Read a cohort directory or a ``.h5mu`` file.

    Args:
      path: a directory of per-modality tables, or a ``.h5mu`` MuData file.

    Returns:
      A :class:`Cohort` over the sorted union of the modalities' sample ids; each modality
      ``f32[N, D_m]`` with NaN rows (and a False mask) where the sample lacks it.

    Raises:
      CohortError: the path does not exist, holds no modality table, or a table is malformed.
    """
    path = Path(path)
    if not path.exists():
        raise CohortError(f"{path}: no such cohort directory or .h5mu file")
    if path.is_dir():
        return _read_directory(path)
    if path.suffix.lower() == ".h5mu":
        return _read_h5mu(path)
    raise CohortError(f"{path}: not a cohort: expected a directory of modality tables or a .h5mu file")


def scan_tables(directory: Path, suffixes=TABLE_SUFFIXES) -> tuple[dict[str, Path], Path | None]:
    """The cohort file scan: map modality name -> table file, and the clinical table (or None).

    A table is a visible file ``<name><suffix>`` for one of ``suffixes`` (matched case-insensitively,
    e.g. ``.csv.gz``); other files are ignored. Two tables of one modality (``rnaseq.csv`` and
    ``rnaseq.parquet``) or several clinical tables are an error: refusing is safer than silently
    picking one."""
    tables: dict[str, Path] = {}
    clinical: list[Path] = []
    for f in sorted(directory.iterdir()):
        if not f.is_file() or f.name.startswith("."):
            continue
        suffix = next((x for x in suffixes if f.name.lower().endswith(x)), None)
        if suffix is None:
            continue
        name = f.name[: -len(suffix)]
        if name == CLINICAL_NAME:
            clinical.append(f)
        elif name in tables:
            raise CohortError(f"{directory}: modality '{name}' has two tables, {tables[name].name} and {f.name}; "
                              f"keep one")
        else:
            tables[name] = f
    if len(clinical) > 1:
        raise CohortError(f"{directory}: several clinical tables ({', '.join(c.name for c in clinical)}); keep one")
    return tables, (clinical[0] if clinical else None)


def open_text(path: Path):
    """A text file (UTF-8, universal newlines off for csv), decompressing ``.gz``, ``.bz2`` and ``.xz``."""
    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(path.suffix.lower(), open)
    return opener(path, "rt", encoding="utf-8", newline="")


def _read_directory(directory: Path) -> Cohort:
    tables, clinical_file = scan_tables(directory)
    if not tables:
        raise CohortError(f"{directory}: empty cohort: no modality table (<modality>.csv, .tsv or .parquet)")
    modalities = {name: _read_modality_table(f) for name, f in tables.items()}
    clinical = _read_clinical_table(clinical_file) if clinical_file is not None else None
    return _assemble(modalities, clinical, source=str(directory),
                     clinical_source=str(clinical_file) if clinical_file is not None else str(directory))


def _read_raw_table(f: Path, **csv_kwargs) -> pd.DataFrame:
    """The table as a DataFrame with column ``sample_id`` first; checks header and emptiness."""
    suffix = f.suffix.lower()
    try:
        if suffix == ".parquet":
            df = pd.read_parquet(f)
            if df.index.name == "sample_id" and "sample_id" not in df.columns:
                df = df.reset_index()  # written with the ids as the pandas index
            header = [str(c) for c in df.columns]
        else:
            sep = "\t" if suffix == ".tsv" else ","
            header = _csv_header(f, sep)
            if header is None:
                raise CohortError(f"{f}: empty table: the file has no header and no rows")
            dup = _first_duplicate(header)
            if dup is not None:
                raise CohortError(f"{f}: column '{dup}' appears more than once in the header")
            # float_precision="round_trip" makes the decimal -> float64 parse exact (correctly rounded).
            # index_col=False: without it, rows longer than the header silently turn their first
            # fields into an index; with it pandas only warns, which we make an error.
            with warnings.catch_warnings():
                warnings.simplefilter("error", pd.errors.ParserWarning)
                try:
                    df = pd.read_csv(f, sep=sep, float_precision="round_trip", low_memory=False, index_col=False,
                                     **csv_kwargs)
                except pd.errors.ParserWarning:
                    raise CohortError(f"{f}: cannot read table: a row has more fields than the header "
                                      f"({len(header)} columns)") from None
    except CohortError:
        raise
    except Exception as e:  # a corrupt parquet, a ragged CSV, an unreadable file...
        raise CohortError(f"{f}: cannot read table: {type(e).__name__}: {e}") from None
    if not header or header[0] != "sample_id":
        first = header[0] if header else "(none)"
        raise CohortError(f"{f}: the first column must be 'sample_id', found '{first}'")
    if len(df) == 0:
        raise CohortError(f"{f}: empty table: no rows")
    return df


def _csv_header(f: Path, sep: str) -> list[str] | None:
    with open(f, newline="", encoding="utf-8-sig") as fh:
        row = next(csv.reader(fh, delimiter=sep), None)
    return None if row is None or row == [] else row


def _first_duplicate(names) -> str | None:
    seen = set()
    for n in names:
        if n in seen:
            return n
        seen.add(n)
    return None


def _sample_ids(df: pd.DataFrame, f: Path) -> np.ndarray:
    """str[R] sample ids of a table; rejects missing and duplicated ids."""
    ids = df["sample_id"]
    if ids.isna().any() and f.suffix.lower() != ".parquet":
        # The default CSV reader turns ids such as "NA" or "nan" into NaN: re-read the column as text.
        sep = "\t" if f.suffix.lower() == ".tsv" else ","
        ids = pd.read_csv(f, sep=sep, usecols=[0], dtype=str, keep_default_na=False).iloc[:, 0]
    ids = ids.astype(object)
    missing = ids.isna() | (ids.astype(str).str.strip() == "")
    if missing.any():
        r = int(np.flatnonzero(missing.to_numpy())[0])
        raise CohortError(f"{f}: row {r + 1} has an empty sample_id")
    ids = np.asarray([str(s).strip() for s in ids], dtype=object)
    dup = _first_duplicate(ids)
    if dup is not None:
        raise CohortError(f"{f}: duplicated sample id '{dup}'")
    return ids


def _read_modality_table(f: Path) -> dict:
    """Read one modality table -> {"ids": str[R], "x": f32[R, D], "features": [D]} (rows as in the file).

    Rows that are entirely empty/NaN are kept here (as NaN rows) and become absent later.
    """
    df = _read_raw_table(f, dtype={"sample_id": str})
    ids = _sample_ids(df, f)
    feats = df.drop(columns=["sample_id"])
    if feats.shape[1] == 0:
        raise CohortError(f"{f}: no feature columns after 'sample_id'")
    x = _numeric_matrix(feats, ids, f)
    return {"ids": ids, "x": x, "features": [str(c) for c in feats.columns], "file": f}


def _numeric_matrix(feats: pd.DataFrame, ids: np.ndarray, f: Path) -> np.ndarray:
    """f32[R, D] from the feature columns; rejects text, partial rows and float32 overflow."""
    for col in feats.columns:
        s = feats[col]
        if s.dtype == bool or pd.api.types.is_numeric_dtype(s.dtype):
            continue
        num = pd.to_numeric(s, errors="coerce")
        bad = num.isna() & s.notna()
        if bad.any():
            r = int(np.flatnonzero(bad.to_numpy())[0])
            raise CohortError(f"{f}: sample '{ids[r]}', column '{col}': non-numeric value '{s.iloc[r]}'")
    # Only text columns need the (slow) per-column conversion; by now their text is all NaN-like.
    text = [c for c in feats.columns if not (feats[c].dtype == bool or pd.api.types.is_numeric_dtype(feats[c].dtype))]
    if text:
        feats = feats.assign(**{c: pd.to_numeric(feats[c], errors="coerce") for c in text})
    x64 = feats.to_numpy(dtype=np.float64)
    finite = np.isfinite(x64)
    empty_row = np.isnan(x64).all(axis=1)
    partial = ~finite.all(axis=1) & ~empty_row
    if partial.any():
        r = int(np.flatnonzero(partial)[0])
        j = int(np.flatnonzero(~finite[r])[0])
        what = "empty cell (missing value)" if np.isnan(x64[r, j]) else f"value {x64[r, j]}"
        raise CohortError(f"{f}: sample '{ids[r]}', column '{feats.columns[j]}': {what} in a row that "
                          f"is otherwise present (partially filled rows are not allowed; impute the value or "
                          f"leave the whole row empty)")
    with np.errstate(over="ignore"):
        x = x64.astype(np.float32)
    over = np.isinf(x) & np.isfinite(x64)
    if over.any():
        r, j = (int(v[0]) for v in np.nonzero(over))
        raise CohortError(f"{f}: sample '{ids[r]}', column '{feats.columns[j]}': value {x64[r, j]:g} "
                          f"overflows float32")
    return x


def _read_clinical_table(f: Path) -> pd.DataFrame:
    """Clinical table indexed by sample id, canonical dtypes (see :func:`normalise_clinical`)."""
    df = _read_raw_table(f, dtype={"sample_id": str, "cancer_type": str, "split": str})
    ids = _sample_ids(df, f)
    df = df.drop(columns=["sample_id"])
    df.index = pd.Index(ids, name="sample_id")
    for col in ("cancer_type", "split"):
        if col in df:
            df[col] = df[col].map(lambda v: v.strip() if isinstance(v, str) else v)
    out = normalise_clinical(df, source=str(f))
    check_clinical_values(out, str(f))
    return out


def _assemble(modalities: Mapping[str, dict], clinical: pd.DataFrame | None, source: str,
              clinical_source: str) -> Cohort:
    """Build the cohort over the sorted union of the modality tables' sample ids.

    Args:
      modalities: name -> {"ids": str[R_m], "x": f32[R_m, D_m], "features": [D_m]}.
      clinical: indexed by sample id, or None.
    """
    present_ids = set()
    for name, t in modalities.items():
        rows = ~np.isnan(t["x"]).all(axis=1)
        if not rows.any():
            raise CohortError(f"{t.get('file', source)}: modality '{name}': every row is empty (no sample has it)")
        present_ids.update(t["ids"][rows])
    # Samples whose rows are empty in every table have no modality at all: they are not samples.
    ids = np.asarray(sorted(present_ids), dtype=object)
    pos = pd.Index(ids)
    data, masks, names = {}, {}, {}
    for name, t in modalities.items():
        x = np.full((len(ids), t["x"].shape[1]), np.nan, dtype=np.float32)
        keep = ~np.isnan(t["x"]).all(axis=1)
        at = pos.get_indexer(t["ids"][keep])
        x[at] = t["x"][keep]
        mask = np.zeros(len(ids), dtype=bool)
        mask[at] = True
        data[name], masks[name], names[name] = x, mask, t["features"]
    if clinical is not None:
        orphans = ~clinical.index.isin(pos)
        if orphans.any():
            warnings.warn(f"{clinical_source}: {int(orphans.sum())} clinical row(s) for samples with no modality "
                          f"(e.g. '{clinical.index[orphans][0]}') are ignored", stacklevel=3)
    return from_arrays(ids, data, masks=masks, clinical=clinical, feature_names=names, source=source)


def _read_h5mu(f: Path) -> Cohort:
    try:
        import mudata
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # mudata/anndata chatter about future defaults
            mdata = mudata.read_h5mu(f)
    except Exception as e:
        raise CohortError(f"{f}: cannot read MuData file: {type(e).__name__}: {e}") from None
    return cohort_from_mudata(mdata, f)


def read_mudata(data) -> Cohort:
    """A cohort from a :class:`mudata.MuData` object or a ``.h5mu`` file: one modality per ``mod``
    (its ``X``, samples = ``obs_names``), clinical labels from the known columns of ``.obs``."""
    if isinstance(data, (str, os.PathLike)):
        f = Path(data)
        if not f.exists():
            raise CohortError(f"{f}: no such .h5mu file")
        return _read_h5mu(f)
    return cohort_from_mudata(data, "<MuData>")


def cohort_from_mudata(mdata, f) -> Cohort:
    """The cohort held by the MuData object ``mdata`` (``f``: where it came from, for errors)."""
    if len(mdata.mod) == 0:
        raise CohortError(f"{f}: empty cohort: the MuData file has no modality (mod)")
    modalities = {}
    for name, ad in mdata.mod.items():
        where = Path(f"{f}[mod/{name}]")
        if ad.n_obs == 0:
            raise CohortError(f"{where}: empty table: no rows")
        if ad.n_vars == 0:
            raise CohortError(f"{where}: no features")
        ids = np.asarray([str(s) for s in ad.obs_names], dtype=object)
        dup = _first_duplicate(ids)
        if dup is not None:
            raise CohortError(f"{where}: duplicated sample id '{dup}'")
        x = ad.X
        if hasattr(x, "toarray"):
            x = x.toarray()
        x = np.asarray(x)
        if not (x.dtype == bool or np.issubdtype(x.dtype, np.number)):
            raise CohortError(f"{where}: X has non-numeric dtype {x.dtype}")
        feats = [str(v) for v in ad.var_names]
        x = _numeric_matrix(pd.DataFrame(x, columns=feats, copy=False), ids, where)
        modalities[name] = {"ids": ids, "x": x, "features": feats, "file": where}
    obs = mdata.obs
    clinical = None
    cols = [c for c in CLINICAL_COLUMNS if c in obs.columns]
    if cols:
        clin = obs[cols].copy()
        for c in ("cancer_type", "split"):
            if c in clin:  # stored as categoricals: back to str/None
                clin[c] = clin[c].astype(object).where(clin[c].notna(), None)
        clin.index = pd.Index([str(s) for s in obs.index], name="sample_id")
        clinical = normalise_clinical(clin, source=f"{f}[obs]")
        check_clinical_values(clinical, f"{f}[obs]")
    return _assemble(modalities, clinical, source=str(f), clinical_source=f"{f}[obs]")


# ------------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------------
def write_cohort(cohort: Cohort, path, format: str = "csv", *, overwrite: bool = False) -> Path:
    """Write ``cohort`` so that :func:`read_cohort` gives it back bit for bit.

    Only present rows are written (absent rows are simply missing from a modality's table). The
    samples read back are in sorted id order, so a cohort whose ids are not sorted comes back
    permuted (``cohort.subset(np.argsort(cohort.sample_ids))`` is what you get).

    Args:
      cohort: the cohort; every sample must have at least one modality (a sample with none could
        not be stored in any table).
      path: the directory to create (csv/tsv/parquet), or the ``.h5mu`` file (h5mu).
      format: "csv", "tsv", "parquet" or "h5mu". CSV/TSV write float32 with 9 significant digits,
        which round-trips exactly.
      overwrite: replace an existing cohort at ``path``. For a directory, only the files that
        :func:`read_cohort` would read (``*.csv``, ``*.tsv``, ``*.parquet``) are removed first, so
        that stale modality tables cannot leak into the new cohort.

    Returns:
      The path written.
    """
    if format not in FORMATS:
        raise CohortError(f"{path}: unknown cohort format '{format}'; expected one of {list(FORMATS)}")
    path = Path(path)
    none = ~cohort.mask_matrix().any(axis=1)
    if none.any():
        raise CohortError(f"{cohort.source}: sample '{cohort.sample_ids[np.flatnonzero(none)[0]]}' has no modality "
                          f"({int(none.sum())} such sample(s)); a cohort file cannot store it: drop it first")
    for m, names in cohort.feature_names.items():
        dup = _first_duplicate([str(n) for n in names])
        if dup is not None:
            raise CohortError(f"{cohort.source}: modality '{m}' has feature name '{dup}' twice; a table cannot store it")
        if m == CLINICAL_NAME:
            raise CohortError(f"{cohort.source}: a modality cannot be named '{CLINICAL_NAME}' (reserved)")
    if format == "h5mu":
        return _write_h5mu(cohort, path, overwrite)
    return _write_directory(cohort, path, format, overwrite)


def _write_directory(cohort: Cohort, directory: Path, fmt: str, overwrite: bool) -> Path:
    if directory.exists() and not directory.is_dir():
        raise CohortError(f"{directory}: exists and is not a directory")
    if directory.exists():
        old = [f for f in directory.iterdir() if f.is_file() and f.suffix.lower() in TABLE_SUFFIXES]
        if old and not overwrite:
            raise CohortError(f"{directory}: already holds a cohort ({old[0].name}, ...); pass overwrite=True "
                              f"(CLI: --overwrite) to replace it")
        for f in old:
            f.unlink()
    make_directory(directory)
    suffix = "." + fmt
    for m in cohort.modalities:
        mask = cohort.masks[m]
        df = pd.DataFrame(cohort.data[m][mask], columns=[str(n) for n in cohort.feature_names[m]])
        df.insert(0, "sample_id", np.asarray(cohort.sample_ids[mask], dtype=str))
        _write_table(df, directory / f"{m}{suffix}", fmt, float_format=FLOAT32_FORMAT)
    if len(cohort.clinical.columns):
        clin = cohort.clinical.reset_index(drop=True)
        clin.insert(0, "sample_id", np.asarray(cohort.sample_ids, dtype=str))
        # Clinical numbers are float64: pandas' default repr already round-trips them.
        _write_table(clin, directory / f"{CLINICAL_NAME}{suffix}", fmt, float_format=None)
    return directory


def _write_table(df: pd.DataFrame, f: Path, fmt: str, float_format: str | None) -> None:
    with atomic_file(f) as tmp:  # write then rename: a crash never leaves a half table
        if fmt == "parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, sep="\t" if fmt == "tsv" else ",", index=False, float_format=float_format)


def _write_h5mu(cohort: Cohort, f: Path, overwrite: bool) -> Path:
    import anndata
    import mudata
    if f.suffix.lower() != ".h5mu":
        raise CohortError(f"{f}: a MuData cohort file must end in .h5mu")
    if f.exists() and not overwrite:
        raise CohortError(f"{f}: already exists; pass overwrite=True (CLI: --overwrite) to replace it")
    mods = {}
    for m in cohort.modalities:
        mask = cohort.masks[m]
        ad = anndata.AnnData(X=np.ascontiguousarray(cohort.data[m][mask]),
                             obs=pd.DataFrame(index=pd.Index(np.asarray(cohort.sample_ids[mask], dtype=str))),
                             var=pd.DataFrame(index=pd.Index([str(n) for n in cohort.feature_names[m]])))
        mods[m] = ad
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "var_names are not unique" across modalities
        mdata = mudata.MuData(mods)
        clin = cohort.clinical.copy()
        clin.index = pd.Index(np.asarray(cohort.sample_ids, dtype=str))
        clin = clin.reindex(mdata.obs_names)
        for c in clin.columns:
            col = clin[c]
            if col.dtype == object:  # str with None: store as categorical (h5 cannot hold mixed objects)
                col = pd.Categorical(col.where(col.notna(), None))
            mdata.obs[c] = col
        with atomic_file(f, suffix=".h5mu") as tmp:  # mudata picks the format from the suffix
            mdata.write(tmp)
    return f


# ------------------------------------------------------------------------------------------------
# checks and summaries
# ------------------------------------------------------------------------------------------------
def check_modalities(cohort: Cohort, expected: Mapping[str, int], where: str) -> None:
    """Check that ``cohort`` fits a model trained on modalities ``expected`` (name -> n_features).

    A cohort may lack some expected modalities entirely (they are then absent for every sample),
    but it may not bring a modality the model does not know, nor one with another feature count.

    Args:
      cohort: the cohort.
      expected: modality name -> number of features D_m the model was trained with.
      where: what expects them (e.g. the checkpoint path), named in the message.
    """
    for m, d in cohort.dims().items():
        if m not in expected:
            raise CohortError(f"{cohort.source}: modality '{m}' is unknown to {where} "
                              f"(it knows {sorted(expected)})")
        if int(expected[m]) != d:
            raise CohortError(f"{cohort.source}: modality '{m}' has {d} features but {where} expects "
                              f"{int(expected[m])}")


def align_features(cohort: Cohort, feature_names: Mapping[str, Sequence], where: str) -> Cohort:
    """The cohort with each modality's columns in the order of ``feature_names`` (what a model was
    trained on), matched by name: a table whose columns are the same names in another order is
    reordered; one with a name the model does not know (renamed, or from another panel) is refused.

    Args:
      cohort: the cohort (already checked with :func:`check_modalities`, or not: widths are checked).
      feature_names: modality -> the D_m feature names in the model's order. A modality absent
        from it, or with no names recorded, is left as it is.
      where: what expects them, named in the message.

    Raises:
      CohortError: naming the modality, its file and the first offending column.
    """
    data, names = dict(cohort.data), dict(cohort.feature_names)
    for m, have in cohort.feature_names.items():
        want = [str(n) for n in (feature_names.get(m) or [])]
        have = [str(n) for n in have]
        if not want or have == want:
            continue
        file = _modality_source(cohort, m)
        known = set(want)
        extra = next((n for n in have if n not in known), None)
        if extra is not None:
            raise CohortError(f"{file}: modality '{m}': column '{extra}' is not a feature of {where} "
                              f"(expected {len(want)} features such as '{want[0]}')")
        present = set(have)
        lacking = next((n for n in want if n not in present), None)
        if lacking is not None or len(have) != len(want):
            raise CohortError(f"{file}: modality '{m}': column '{lacking}' of {where} is missing")
        order = pd.Index(have).get_indexer(want)
        data[m], names[m] = cohort.data[m][:, order], want
    return dataclasses.replace(cohort, data=data, feature_names=names)


def _modality_source(cohort: Cohort, m: str) -> str:
    """The file a modality was read from (for messages): the table of a cohort directory, the
    ``mod/<m>`` of a .h5mu file, else the cohort's source."""
    src = Path(str(cohort.source))
    if src.is_dir():
        tables, _ = scan_tables(src)
        if m in tables:
            return str(tables[m])
    if src.suffix.lower() == ".h5mu":
        return f"{src}[mod/{m}]"
    return str(cohort.source)


def describe_modalities(cohort: Cohort) -> pd.DataFrame:
    """One row per modality: ``modality``, ``samples`` (present), ``absent``, ``features``."""
    return pd.DataFrame({
        "modality": list(cohort.modalities),
        "samples": [int(cohort.masks[m].sum()) for m in cohort.modalities],
        "absent": [int((~cohort.masks[m]).sum()) for m in cohort.modalities],
        "features": [cohort.dims()[m] for m in cohort.modalities],
    })


def describe_cohort(cohort: Cohort) -> pd.DataFrame:
    """Per cancer type counts, like the paper's Table 4, generalised to the cohort's modalities.

    Columns: ``cancer_type, total, <one per modality: samples that have it>, complete, incomplete``
    and, if the cohort has a ``split`` column, ``train, val, test`` (and ``unassigned`` when some
    samples have none). Rows: one per cancer type (missing type -> ``"unknown"``), largest first
    (ties by name), then a final ``"ALL"`` row. Without a ``cancer_type`` column, only ``"ALL"``.
    """
    ct = cohort.label("cancer_type")
    types = (np.full(cohort.n_samples, "ALL", dtype=object) if ct is None
             else np.asarray(["unknown" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
                              for v in ct], dtype=object))
    split = cohort.label("split")
    complete = cohort.complete()

    def row(name, sel):
        r = {"cancer_type": name, "total": int(sel.sum())}
        for m in cohort.modalities:
            r[m] = int((cohort.masks[m] & sel).sum())
        r["complete"] = int((complete & sel).sum())
        r["incomplete"] = r["total"] - r["complete"]
        if split is not None:
            for s in ("train", "val", "test"):
                r[s] = int(((split == s) & sel).sum())
            unassigned = int((pd.isna(split) & sel).sum())
            if pd.isna(split).any():
                r["unassigned"] = unassigned
        return r

    rows = [row(t, types == t) for t in np.unique(types)] if ct is not None else []
    rows.sort(key=lambda r: (-r["total"], r["cancer_type"]))
    rows.append(row("ALL", np.ones(cohort.n_samples, dtype=bool)))
    return pd.DataFrame(rows)
