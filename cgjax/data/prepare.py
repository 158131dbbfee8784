"""Raw tables -> a cohort of latents the diffusion models train on, plus the maps back to features.

The whole real-data pipeline of the paper (docs/reference.md 1.2-1.9), with nothing fitted on
validation or test rows:

1. read the raw tables (:func:`cgjax.data.xena.read_xena`, or :func:`read_matrices` for plain
   per-modality matrices) into a :class:`cgjax.data.xena.RawCohort`;
2. split the samples with :func:`cgjax.data.split_cohort` (stratified by cancer type; val and test
   only from complete samples), unless the clinical table already fixes a complete split;
3. preprocess every modality (:func:`cgjax.data.preprocess.preprocess_modalities`: transforms,
   sparse-feature filter, imputation), fitted on the training rows;
4. fit the embeddings (:func:`cgjax.embedding.fit_embedding`: autoencoders, WSI PCA) on the
   training rows, with the validation rows for early stopping only;
5. encode every sample (train, val, test) to its latents.

:func:`write_prepared` writes the result as a cohort directory that ``cgjax train`` reads::

    COHORT_DIR/
      <modality>.csv     latents (sample_id, z0..z{d-1}; WSI pc1..pc{d})
      clinical.csv       cancer_type, stage, os_time, os_event and the split used here
      embedding/         the fitted encoders/decoders (cgjax.embedding), for --decode
      preprocess/        the fitted preprocessing (cgjax.data.preprocess.save_preprocess), so that
                         new raw patients get exactly the same steps (:func:`apply_prepared`)
      features/          (optional) the preprocessed feature tables, itself a cohort directory

The latents are not standardised here: ``cgjax train`` fits its standard scalers on the training
rows (docs/reference.md 1.8), as for any cohort.
"""

from __future__ import annotations

import csv
import dataclasses
import lzma
import warnings
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from cgjax.data import quality
from cgjax.data.cohort import SPLITS, Cohort, from_arrays, normalise_clinical
from cgjax.data.io import open_text, scan_tables, write_cohort
from cgjax.embedding.choice import compare_with_pca
from cgjax.data.preprocess import (PreprocessOptions, apply_preprocess, group_stage, load_preprocess,
                                   preprocess_modalities, save_preprocess)
from cgjax.data.split import PAPER_FRACTIONS, split_cohort
from cgjax.data.xena import NA_TOKENS, RawCohort, read_xena
from cgjax._atomic import atomic_directory
from cgjax.embedding import (EMBEDDING_DIR, META_FILE, Embedding, EmbeddingOptions, fit_embedding,
                             load_embedding, save_embedding)
from cgjax.errors import CgjaxError, CohortError

__all__ = ["PrepareOptions", "PreparedCohort", "assign_split", "prepare", "write_prepared", "read_matrices",
           "prepare_xena", "prepare_matrices", "apply_prepared", "summary", "FEATURES_DIR", "MATRIX_SUFFIXES"]

FEATURES_DIR = "features"
PREPROCESS_DIR = "preprocess"
MATRIX_SUFFIXES = (".csv", ".tsv", ".parquet", ".csv.gz", ".tsv.gz", ".csv.xz", ".tsv.xz")


@dataclasses.dataclass(frozen=True)
class PrepareOptions:
    """Options of :func:`prepare`.

    Attributes:
      preprocess: :class:`cgjax.data.preprocess.PreprocessOptions` (transforms, imputers, filters).
      embedding: :class:`cgjax.embedding.EmbeddingOptions` (latent size, autoencoders, PCA).
      split_seed, fractions: of :func:`cgjax.data.split_cohort` (paper: 42, 80/5/15).
      structural: a feature absent for every sample of a cancer type (absent from that type's
        file: :func:`cgjax.data.quality.structural_gaps`) is ``drop``-ped from the modality
        (default; an error when no feature is measured in every type) or left to the imputer
        (``impute``, as before: filled from other types' values, reported and warned about).
      embedding_choice: ``best`` (default): an autoencoder is replaced by PCA of the same size
        when the PCA reconstructs the validation rows better; ``configured``: keep the configured
        method. Both reconstruction R2s are recorded either way
        (:func:`cgjax.embedding.choice.compare_with_pca`).
    """

    preprocess: PreprocessOptions = dataclasses.field(default_factory=PreprocessOptions)
    embedding: EmbeddingOptions = dataclasses.field(default_factory=EmbeddingOptions)
    split_seed: int = 42
    fractions: tuple = PAPER_FRACTIONS
    structural: str = "drop"
    embedding_choice: str = "best"


@dataclasses.dataclass
class PreparedCohort:
    """What :func:`prepare` made.

    Attributes:
      cohort: the latents, ``f32[N, d_m]`` per modality with presence masks, clinical with ``split``.
      embedding: the fitted :class:`cgjax.embedding.Embedding` (``info`` records the run).
      features: modality -> preprocessed samples x features DataFrame (every sample that has it).
      split: sample id -> train / val / test.
      preprocess: modality -> fitted :class:`cgjax.data.preprocess.FittedModality`.
    """

    cohort: Cohort
    embedding: Embedding
    features: dict
    split: pd.Series
    preprocess: dict | None = None


# ---------------------------------------------------------------------------------------------
# Split
# ---------------------------------------------------------------------------------------------
def _present(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df.index = pd.Index([str(s) for s in df.index], name="sample_id")
    return df[~df.isna().all(axis=1)]


def _presence_cohort(raw: RawCohort) -> Cohort:
    """A stand-in cohort with the raw samples, their presence masks and clinical labels (one dummy
    column per modality: raw rows may have missing cells, which a Cohort does not allow)."""
    rows = {m: _present(df) for m, df in raw.modalities.items()}
    for m, df in rows.items():
        if len(df) == 0:
            raise CohortError(f"{raw.source}: modality '{m}' has no sample (every row is empty)")
        dup = df.index[df.index.duplicated()]
        if len(dup):
            raise CohortError(f"{raw.source}: modality '{m}': duplicated sample id '{dup[0]}'")
    ids = np.asarray(sorted(set().union(*(df.index for df in rows.values()))), dtype=object)
    pos = pd.Index(ids)
    data, masks = {}, {}
    for m, df in rows.items():
        mask = np.zeros(len(ids), bool)
        mask[pos.get_indexer(df.index)] = True
        data[m] = np.where(mask, 0.0, np.nan).astype(np.float32)[:, None]
        masks[m] = mask
    clinical = raw.clinical.copy() if raw.clinical is not None else None
    if clinical is not None:
        clinical.index = pd.Index([str(s) for s in clinical.index], name="sample_id")
        clinical = clinical[~clinical.index.duplicated(keep="first")]
    return from_arrays(ids, data, masks=masks, clinical=clinical, source=raw.source)


def assign_split(raw: RawCohort, *, seed: int = 42, fractions=PAPER_FRACTIONS) -> pd.Series:
    """The split of :func:`cgjax.data.split_cohort` for the samples of ``raw``.

    Samples are the union of the modalities' samples; a sample is complete when it has every
    modality of ``raw``. A complete ``split`` column in ``raw.clinical`` is kept as it is.

    Returns:
      Series sample_id -> ``train`` / ``val`` / ``test``, sorted by sample id.
    """
    stub = split_cohort(_presence_cohort(raw), seed=seed, fractions=fractions)
    return pd.Series(stub.clinical["split"].to_numpy(), index=pd.Index(stub.sample_ids, name="sample_id"),
                     name="split")


# ---------------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------------
def prepare(raw: RawCohort, options: PrepareOptions | None = None, *, progress: bool = False) -> PreparedCohort:
    """Split, preprocess, fit the embeddings and encode every sample (see the module docstring).

    Only training rows fit anything: the preprocessing (gene filter, RPPA medians, sparse-feature
    filter, imputers), the autoencoders' weights and the PCA. Validation rows choose the
    autoencoders' stopping epoch; test rows are only transformed and encoded.

    Args:
      raw: the raw tables (e.g. :func:`cgjax.data.xena.read_xena`, :func:`read_matrices`).
      options: :class:`PrepareOptions`.
      progress: print what is being done.

    Returns:
      :class:`PreparedCohort`.
    """
    opt = options or PrepareOptions()
    stub = split_cohort(_presence_cohort(raw), seed=opt.split_seed, fractions=opt.fractions)
    split = pd.Series(stub.clinical["split"].to_numpy(), index=pd.Index(stub.sample_ids, name="sample_id"))
    if progress:
        counts = split.value_counts()
        print(f"{raw.source}: {len(split)} samples, modalities {list(raw.modalities)}; split "
              + ", ".join(f"{s} {int(counts.get(s, 0))}" for s in SPLITS), flush=True)
    if opt.structural not in ("drop", "impute"):
        raise CgjaxError(f"structural must be 'drop' or 'impute', got {opt.structural!r}")
    types = raw.clinical["cancer_type"] if raw.clinical is not None and "cancer_type" in raw.clinical else None
    gaps = quality.structural_gaps(raw.modalities, types)
    mods, dropped = (quality.drop_structural(raw.modalities, gaps, source=raw.source) if opt.structural == "drop"
                     else (dict(raw.modalities), {m: [] for m in raw.modalities}))
    if progress:
        for m, d in dropped.items():
            if d:
                print(f"  {m}: {len(d)} features absent from some cancer type's table dropped", flush=True)
    features, fitted = preprocess_modalities(mods, split, opt.preprocess, return_fitted=True)
    features = {m: df.rename(columns=str) for m, df in features.items()}
    for m, df in features.items():
        if progress:
            print(f"  {m}: {raw.modalities[m].shape[1]} raw features -> {df.shape[1]} after preprocessing "
                  f"({opt.preprocess.transform_of(m)})", flush=True)
    part = {m: split.reindex(df.index).to_numpy() for m, df in features.items()}
    train = {m: df[part[m] == "train"] for m, df in features.items()}
    val = {m: df[part[m] == "val"] for m, df in features.items()}
    embedding = fit_embedding(train, val, opt.embedding, progress=progress)
    choice = compare_with_pca(embedding, train, val, opt.embedding, choose=opt.embedding_choice)
    if progress:
        for m, rec in choice.items():
            r2 = rec["reconstruction_r2_val"]
            print(f"  {m}: " + ("no validation rows: autoencoder kept" if r2 is None else
                              f"validation reconstruction R2 autoencoder {r2['autoencoder']:.3f}, PCA "
                              f"{r2['pca']:.3f} -> {rec['chosen_method']}"), flush=True)

    ids = stub.sample_ids
    data, masks, names = _encode(ids, features, embedding)
    for m, df in features.items():
        e = embedding[m]
        e.info.update(raw_features=int(raw.modalities[m].shape[1]), features=int(df.shape[1]),
                      transform=opt.preprocess.transform_of(m), imputer=opt.preprocess.imputer_of(m),
                      n_samples=int(len(df)), n_test=int((part[m] == "test").sum()))
        fill = quality.filled_fraction(raw.modalities[m], df, gaps.get(m), types)
        warns = quality.degenerate_warnings(m, df, types)
        e.info.update(filled_fraction=fill["filled"], structural_filled_fraction=fill["structural"],
                      structural_dropped=len(dropped[m]), structural_dropped_features=dropped[m][:20],
                      warnings=warns)
        for w in warns:
            warnings.warn(f"{raw.source}: {w}", stacklevel=2)
        if progress and e.method == "autoencoder":
            ae = e.model
            print(f"  {m}: autoencoder {e.input_dim} -> {list(ae.config.hidden)} -> {e.latent_dim}, "
                  f"{len(ae.history)} epochs, best epoch {ae.best_epoch}"
                  + (f" (val MSE {ae.best_val_loss:.4f})" if ae.best_val_loss is not None else ""), flush=True)
    cohort = from_arrays(ids, data, masks=masks, clinical=stub.clinical, feature_names=names, source=raw.source)
    counts = split.value_counts()
    embedding.info = {
        "created_by": "cgjax.data.prepare", "cgjax_version": __import__("cgjax").__version__,
        "source": raw.source, "n_samples": int(len(ids)),
        "split": {s: int(counts.get(s, 0)) for s in SPLITS}, "split_seed": opt.split_seed,
        "fractions": [float(f) for f in opt.fractions],
        "preprocess": _options_dict(opt.preprocess), "embedding": _options_dict(opt.embedding),
        "structural": opt.structural, "embedding_choice": opt.embedding_choice,
    }
    return PreparedCohort(cohort, embedding, features, split, fitted)


def _encode(ids, features: Mapping[str, pd.DataFrame], embedding: Embedding):
    """Latents of every modality as ``f32[N, d]`` arrays in the order of ``ids`` (NaN rows where a
    sample lacks it), with presence masks and latent names."""
    pos = pd.Index(ids)
    data, masks, names = {}, {}, {}
    for m, df in features.items():
        e = embedding[m]
        z = embedding.encode_frame(m, df)
        x = np.full((len(ids), e.latent_dim), np.nan, np.float32)
        at = pos.get_indexer(z.index)
        x[at] = z.to_numpy(np.float32)
        mask = np.zeros(len(ids), bool)
        mask[at] = True
        data[m], masks[m], names[m] = x, mask, e.latent_names
    return data, masks, names


def apply_prepared(raw: RawCohort, prepared_dir) -> Cohort:
    """New raw patients -> a cohort of latents, through a preparation saved by :func:`write_prepared`.

    Nothing is fitted: each modality goes through the saved transform, feature selection and
    imputer, then the saved encoder, exactly as the prepared cohort's own samples did (a sample
    prepared with the cohort gets the same latents here). Features the preparation kept but the
    new tables lack are treated as missing cells and imputed. The result has no split: impute it
    with ``cgjax impute CKPT NEW_COHORT`` (models trained on the prepared cohort).
    """
    d = Path(prepared_dir)
    if not (d / EMBEDDING_DIR / META_FILE).exists():
        raise CgjaxError(f"{d}: not a cohort written by 'cgjax prepare' (no {EMBEDDING_DIR}/{META_FILE})")
    if not (d / PREPROCESS_DIR).is_dir():
        raise CgjaxError(f"{d}: holds no saved preprocessing ({PREPROCESS_DIR}/; prepared by an older cgjax): "
                         "prepare the training cohort again")
    fitted = load_preprocess(d / PREPROCESS_DIR)
    unknown = [m for m in raw.modalities if m not in fitted]
    if unknown:
        raise CohortError(f"{raw.source}: modality '{unknown[0]}' is not one the preparation in {d} knows "
                          f"({list(fitted)})")
    embedding = load_embedding(d / EMBEDDING_DIR)
    stub = _presence_cohort(raw)
    features = apply_preprocess({m: fitted[m] for m in raw.modalities}, raw.modalities)
    features = {m: df.rename(columns=str) for m, df in features.items()}
    data, masks, names = _encode(stub.sample_ids, features, embedding)
    return from_arrays(stub.sample_ids, data, masks=masks, clinical=stub.clinical, feature_names=names,
                       source=raw.source)


def _options_dict(o) -> dict:
    return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in dataclasses.asdict(o).items()}


def summary(prepared: PreparedCohort) -> str:
    """A few lines saying what :func:`prepare` did, per modality."""
    info = prepared.embedding.info
    lines = [f"{info.get('source')}: {info.get('n_samples')} samples; split "
             + ", ".join(f"{k} {v}" for k, v in info.get("split", {}).items())]
    if not info.get("split", {}).get("val"):
        lines.append("  warning: the validation split is empty (it is drawn from samples that have every "
                     "modality): no early stopping here, and 'cgjax train' will refuse this cohort")
    for m, e in prepared.embedding.modalities.items():
        i = e.info
        what = {"autoencoder": "autoencoder", "pca": "StandardScaler + PCA", "none": "kept as is"}[e.method]
        extra = ""
        if e.method == "autoencoder":
            ae = e.model
            extra = (f", hidden {list(ae.config.hidden)}, {len(ae.history)} epochs, best {ae.best_epoch}"
                     + (f", val MSE {ae.best_val_loss:.4g}" if ae.best_val_loss is not None else ", no val rows"))
        elif e.method == "pca":
            extra = f", {100 * float(e.model.explained_variance_ratio.sum()):.1f}% of train variance"
        lines.append(f"  {m}: {i.get('n_samples')} samples (train {i.get('n_train')}, val {i.get('n_val')}, "
                     f"test {i.get('n_test')}); {i.get('raw_features')} raw -> {i.get('features')} features "
                     f"({i.get('transform')}) -> {e.latent_dim} latents by {what}{extra}")
        r2 = i.get("reconstruction_r2_val")
        if r2:
            lines.append(f"    validation reconstruction R2: autoencoder {r2['autoencoder']:.3f}, PCA {r2['pca']:.3f} "
                         f"-> {i['chosen_method']}")
        if "filled_fraction" in i:
            lines.append(f"    {100 * i['filled_fraction']:.1f}% of cells filled by the imputer "
                         f"({100 * i['structural_filled_fraction']:.1f}% structural gaps); "
                         f"{i['structural_dropped']} features absent from some type's table dropped")
        lines += [f"    warning: {w}" for w in i.get("warnings", [])]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse to clobber anything but a previous prepared cohort (and that only with overwrite)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise CgjaxError(f"{out}: exists and is not a directory")
    if not any(out.iterdir()):
        return
    if not overwrite:
        raise CgjaxError(f"{out}: already exists; pass --overwrite (overwrite=True) to replace it")
    if not (out / EMBEDDING_DIR / META_FILE).exists():
        raise CgjaxError(f"{out}: is not a cohort written by 'cgjax prepare' (no {EMBEDDING_DIR}/{META_FILE}); "
                         f"refusing to replace it")


def write_prepared(prepared: PreparedCohort, out, *, overwrite: bool = False, write_features: bool = False,
                   format: str = "csv") -> Path:
    """Write a prepared cohort directory (layout in the module docstring), atomically.

    Everything goes to a sibling temporary directory that replaces ``out`` only when complete.

    Args:
      prepared: from :func:`prepare`.
      out: the cohort directory. An existing non-empty one is replaced only with ``overwrite`` and
        only if it is a previous prepared cohort.
      write_features: also write ``features/`` (the preprocessed tables, a cohort directory of
        parquet files).
      format: of the latent tables (``csv``, ``tsv`` or ``parquet``).
    """
    out = Path(out)
    _check_out(out, overwrite)
    with atomic_directory(out, marker=f"{EMBEDDING_DIR}/{META_FILE}", what="cohort written by 'cgjax prepare'") as tmp:
        write_cohort(dataclasses.replace(prepared.cohort, source=str(out)), tmp, format=format, overwrite=True)
        save_embedding(prepared.embedding, tmp / EMBEDDING_DIR)
        if prepared.preprocess is not None:
            save_preprocess(prepared.preprocess, tmp / PREPROCESS_DIR)
        if write_features:
            write_cohort(_feature_cohort(prepared), tmp / FEATURES_DIR, format="parquet")
    return out


def _feature_cohort(prepared: PreparedCohort) -> Cohort:
    ids = prepared.cohort.sample_ids
    pos = pd.Index(ids)
    data, names = {}, {}
    for m, df in prepared.features.items():
        x = np.full((len(ids), df.shape[1]), np.nan, np.float32)
        x[pos.get_indexer(df.index)] = df.to_numpy(np.float32)
        data[m], names[m] = x, [str(c) for c in df.columns]
    return from_arrays(ids, data, clinical=prepared.cohort.clinical, feature_names=names,
                       source=prepared.cohort.source)


# ---------------------------------------------------------------------------------------------
# Plain matrices
# ---------------------------------------------------------------------------------------------
def _read_table(f: Path) -> pd.DataFrame:
    """The table as text cells (parquet: as stored), first column = sample ids; header checked."""
    if f.name.lower().endswith(".parquet"):
        try:
            df = pd.read_parquet(f)
        except Exception as e:  # pyarrow raises many types for a damaged file
            raise CohortError(f"{f}: cannot read as parquet ({type(e).__name__}: {e})") from None
        if not isinstance(df.index, pd.RangeIndex):
            df = df.reset_index()
        return df
    sep = "\t" if ".tsv" in f.name.lower() else ","
    try:
        with open_text(f) as fh:
            header = next(csv.reader(fh, delimiter=sep), None)
    except (UnicodeDecodeError, OSError, EOFError, lzma.LZMAError) as e:
        raise CohortError(f"{f}: cannot read the file as text ({type(e).__name__}: {e})") from None
    if header is None:
        raise CohortError(f"{f}: empty file")
    seen = set()
    for h in header:
        if h in seen:
            raise CohortError(f"{f}: column '{h}' appears more than once in the header")
        seen.add(h)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            df = pd.read_csv(f, sep=sep, dtype=str, keep_default_na=False, index_col=False)
    except (pd.errors.ParserError, pd.errors.ParserWarning, ValueError) as e:
        raise CohortError(f"{f}: malformed table ({str(e).splitlines()[0]})") from None
    if len(df.columns) != len(header):
        raise CohortError(f"{f}: could not parse the header consistently")
    return df


def _ids(df: pd.DataFrame, f: Path) -> pd.Index:
    ids = df.iloc[:, 0].astype(object).map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v))
                                           else str(v).strip())
    empty = np.flatnonzero((ids == "").to_numpy())
    if len(empty):
        raise CohortError(f"{f}: data row {int(empty[0]) + 1} has an empty sample id (first column)")
    dup = ids[ids.duplicated()]
    if len(dup):
        raise CohortError(f"{f}: sample '{dup.iloc[0]}' appears more than once")
    return pd.Index(ids.to_list(), name="sample_id")


def _read_matrix(f: Path) -> pd.DataFrame:
    """samples x features float32, NaN for missing cells; errors name the file, sample, column, value."""
    df = _read_table(f)
    if df.shape[1] < 2:
        raise CohortError(f"{f}: no feature columns after the sample id column")
    if len(df) == 0:
        raise CohortError(f"{f}: no sample rows after the header")
    ids = _ids(df, f)
    feats = df.iloc[:, 1:]
    cols = {}
    for c in feats.columns:
        s = feats[c]
        if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            v = s.astype(np.float64)
        else:
            txt = s.astype(object).map(lambda v: v.strip() if isinstance(v, str) else v)
            missing = txt.isna() | txt.isin(NA_TOKENS)
            v = pd.to_numeric(txt.where(~missing), errors="coerce")
            bad = v.isna() & ~missing
            if bad.any():
                i = int(np.flatnonzero(bad.to_numpy())[0])
                raise CohortError(f"{f}: sample '{ids[i]}', column '{c}': value '{txt.iloc[i]}' is not a number")
        inf = np.isinf(v.to_numpy(np.float64))
        if inf.any():
            i = int(np.flatnonzero(inf)[0])
            raise CohortError(f"{f}: sample '{ids[i]}', column '{c}': value {v.iloc[i]} is not finite")
        cols[str(c)] = v.to_numpy(np.float64)
    out = pd.DataFrame(cols, index=ids).astype(np.float32)
    if out.isna().all(axis=None):
        raise CohortError(f"{f}: every cell is missing")
    return out


def _read_matrix_clinical(f: Path) -> pd.DataFrame:
    df = _read_table(f)
    ids = _ids(df, f)
    df = df.iloc[:, 1:].copy()
    df.index = ids
    if "stage" in df.columns:
        st = df["stage"].astype(object).map(lambda v: v.strip() if isinstance(v, str) else v)
        st = st.where(~st.isin(NA_TOKENS))
        num = pd.to_numeric(st, errors="coerce")
        text = num.isna() & st.notna()
        if text.any():  # stage as text ("Stage IIA"): grouped into 1-4 (docs/reference.md 1.3)
            num[text] = group_stage(st[text], source=f"{f}: column 'stage'").to_numpy()
        df["stage"] = num
    for col in ("os_time", "os_event"):
        if col in df.columns:
            v = df[col].astype(object).map(lambda x: x.strip() if isinstance(x, str) else x)
            df[col] = v.where(~v.isin(NA_TOKENS))
    for col in ("cancer_type", "split"):
        if col in df.columns:
            v = df[col].astype(object).map(lambda x: x.strip() if isinstance(x, str) else x)
            df[col] = v.where(~v.isin(NA_TOKENS) & (v != ""), None)
    out = normalise_clinical(df, source=str(f))
    if "split" in out.columns:
        bad = out["split"].notna() & ~out["split"].isin(SPLITS)
        if bad.any():
            sid = bad[bad].index[0]
            raise CohortError(f"{f}: sample '{sid}': split '{out.loc[sid, 'split']}' is not one of {list(SPLITS)}")
    return out


def read_matrices(directory) -> RawCohort:
    """Read plain per-modality matrices into a :class:`cgjax.data.xena.RawCohort`.

    The directory holds one table per modality, ``<modality>.csv`` (or ``.tsv``, ``.parquet``,
    ``.csv.gz``, ``.tsv.gz``, ``.csv.xz``, ``.tsv.xz``), **samples x features**: first column the
    sample id (any header), then one numeric column per feature; missing cells are empty or one of
    ``NA_TOKENS`` (they are imputed later). An optional ``clinical`` table (same formats) has the
    sample id first, then any of ``cancer_type``, ``stage`` (1-4 or AJCC text), ``os_time``,
    ``os_event``, ``split``; other columns are ignored. Sample ids are used as they are (no barcode
    trimming). Files with other names or extensions are ignored.

    Raises:
      CohortError naming the file and the problem (and the sample, column and value).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CohortError(f"{directory}: matrices directory does not exist")
    tables, clinical = scan_tables(directory, MATRIX_SUFFIXES)
    if not tables:
        raise CohortError(f"{directory}: no modality table (<modality>.csv, .tsv or .parquet, samples x features)")
    mods = {m: _read_matrix(f) for m, f in tables.items()}
    clin = _read_matrix_clinical(clinical) if clinical is not None else pd.DataFrame(index=pd.Index([], name="sample_id"))
    samples = set().union(*(df.index for df in mods.values()))
    if clinical is not None and len(clin) and not clin.index.isin(list(samples)).any():
        raise CohortError(f"{clinical}: no sample in common with the modality tables (e.g. '{clin.index[0]}' "
                          f"here vs '{sorted(samples)[0]}' there)")
    orig = {m: pd.Series(df.index.to_list(), index=df.index, name="original_id") for m, df in mods.items()}
    return RawCohort(modalities=mods, clinical=clin, original_ids=orig, source=str(directory))


# ---------------------------------------------------------------------------------------------
# Whole runs
# ---------------------------------------------------------------------------------------------
def prepare_xena(raw_dir, out, *, cohorts=None, wsi=None, options: PrepareOptions | None = None,
                 overwrite: bool = False, write_features: bool = False, progress: bool = False) -> PreparedCohort:
    """:func:`cgjax.data.xena.read_xena` -> :func:`prepare` -> :func:`write_prepared` to ``out``."""
    if out is not None:
        _check_out(Path(out), overwrite)  # fail before hours of training, not after
    prepared = prepare(read_xena(raw_dir, cohorts=cohorts, wsi=wsi), options, progress=progress)
    if out is not None:
        write_prepared(prepared, out, overwrite=overwrite, write_features=write_features)
    return prepared


def prepare_matrices(directory, out, *, options: PrepareOptions | None = None, overwrite: bool = False,
                     write_features: bool = False, progress: bool = False) -> PreparedCohort:
    """:func:`read_matrices` -> :func:`prepare` -> :func:`write_prepared` to ``out``.

    With ``options`` None the matrices are used as they are (transform ``none`` for every modality).
    """
    if options is None:
        options = PrepareOptions(preprocess=PreprocessOptions(transforms={}))
    if out is not None:
        _check_out(Path(out), overwrite)
    prepared = prepare(read_matrices(directory), options, progress=progress)
    if out is not None:
        write_prepared(prepared, out, overwrite=overwrite, write_features=write_features)
    return prepared
