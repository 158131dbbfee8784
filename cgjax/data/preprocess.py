"""The paper's per-modality preprocessing, as small pure functions (docs/reference.md 1.3-1.5).

Every table is **samples x features** (rows = samples, as returned by :mod:`cgjax.data.xena`).
Transforms that learn something from data (the RNA gene filter, per-protein RPPA medians, the
sparse-feature filter, the imputers) are split into a *fit* on training rows and an *apply*;
:func:`preprocess_modalities` fits every one of them on the training rows only and applies them to
train, val and test alike.

Steps per modality (in this order):

======================  =======================================================================
transform               steps
======================  =======================================================================
``rna_log2_counts``     counts = 2^x - 1 -> CPM -> keep genes with CPM > 1 (or >= 1) in >= 20 % of
                        train samples -> log2(CPM + 1)   (Xena ``star_counts``)
``rna_counts``          the same from counts (or normalised counts, e.g. miniACC RSEM, miRNA)
``cna_absolute``        0 -> NaN, log2(CN / 2), clip to [-2, 2]   (Xena ``gene-level_absolute``)
``rppa``                median centring per protein (paper) or per sample (reference)
``zscore``              already z-scored tables (e.g. cBioPortal mRNA z-scores): values as they are,
                        optionally clipped to [-c, c] (``zscore_clip``) against extreme values
``none``                values as they are (e.g. GISTIC calls, slide embeddings)
======================  =======================================================================

then for every modality: drop features with >= 10 % missing in train (docs/reference.md 1.5), impute
(KNN k = 5 for RNA and RPPA, median for CNA), fitted on train.

Deviations from the reference (see docs/real_data.md):

- The RNA gene filter is fitted on the training samples only; the reference computes it on all
  samples of all cohorts *before* the split (docs/reference.md 1.3, 6.10), which lets val/test rows
  choose the genes.
- The gene filter threshold is strict (CPM > 1) by default, as the paper says; ``strict=False``
  gives the reference's CPM >= 1.
- RPPA is centred per protein by default (paper; medians from train rows); ``per_sample`` gives
  the reference's centring (docs/reference.md 6.9).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from cgjax.data.cohort import SPLITS
from cgjax.errors import CohortError

TRANSFORMS = ("rna_log2_counts", "rna_counts", "cna_absolute", "rppa", "zscore", "none")
IMPUTERS = ("knn", "median", "none")
RPPA_MODES = ("per_protein", "per_sample")


# ---------------------------------------------------------------------------------------------
# RNA-seq
# ---------------------------------------------------------------------------------------------
def rna_log2_to_counts(df: pd.DataFrame) -> pd.DataFrame:
    """Xena ``star_counts`` values log2(count + 1) -> counts = 2^x - 1 (float64)."""
    return np.exp2(df.astype(np.float64)) - 1.0


def cpm(counts: pd.DataFrame) -> pd.DataFrame:
    """Counts per million: each sample's (row's) counts / its library size x 1e6.

    The library size is the row sum over all features present (NaN cells, i.e. genes the
    sample's cohort lacks, are skipped). Negative counts and empty libraries are errors.
    """
    x = counts.astype(np.float64)
    neg = x.to_numpy() < 0
    if neg.any():
        i, j = map(int, np.argwhere(neg)[0])
        raise CohortError(f"sample '{x.index[i]}', feature '{x.columns[j]}': negative count "
                          f"{x.iat[i, j]:g} (are the values log-transformed?)")
    lib = x.sum(axis=1, min_count=1)
    bad = ~(lib > 0)
    if bad.any():
        raise CohortError(f"sample '{lib.index[np.flatnonzero(bad.to_numpy())[0]]}': library size is "
                          f"zero (no counts); cannot compute CPM")
    return x.div(lib, axis=0) * 1e6


def log2_cpm1(cpm_df: pd.DataFrame) -> pd.DataFrame:
    """log2(CPM + 1)."""
    return np.log2(cpm_df.astype(np.float64) + 1.0)


def filter_genes_cpm(cpm_df: pd.DataFrame, min_cpm: float = 1.0, min_frac: float = 0.20,
                     strict: bool = True) -> pd.Index:
    """Genes expressed in enough samples (docs/reference.md 1.3 step 3).

    A gene is kept iff the number of samples (rows) with CPM > ``min_cpm`` (``strict``, the paper)
    or CPM >= ``min_cpm`` (``strict=False``, the reference code) is >= ``min_frac`` x the number of
    rows. A missing CPM counts as not expressed.

    Returns:
      the kept columns, in their order.
    """
    x = cpm_df.to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):
        expressed = (x > min_cpm) if strict else (x >= min_cpm)
    keep = expressed.sum(axis=0) >= min_frac * x.shape[0]
    return cpm_df.columns[keep]


# ---------------------------------------------------------------------------------------------
# CNA, RPPA
# ---------------------------------------------------------------------------------------------
def cna_transform(df: pd.DataFrame) -> pd.DataFrame:
    """Absolute copy number -> log2(CN / 2) clipped to [-2, 2]; CN = 0 becomes NaN.

    docs/reference.md 1.3: homozygous deletions (CN 0) are treated as missing rather than as -inf.
    """
    x = df.astype(np.float64)
    neg = x.to_numpy() < 0
    if neg.any():
        i, j = map(int, np.argwhere(neg)[0])
        raise CohortError(f"sample '{x.index[i]}', feature '{x.columns[j]}': negative copy number "
                          f"{x.iat[i, j]:g} (is this absolute copy number?)")
    x = x.where(x != 0)
    return np.log2(x / 2.0).clip(-2.0, 2.0)


def rppa_center(df: pd.DataFrame, mode: str = "per_protein",
                reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """Median-centre RPPA values.

    - ``per_protein`` (paper, default): subtract each protein's (column's) median over the samples
      of ``reference`` (default: ``df`` itself; :func:`preprocess_modalities` passes train rows).
    - ``per_sample`` (reference code, docs/reference.md 6.9): subtract each sample's (row's) median over
      its proteins. Needs no fitting; ``reference`` is ignored.

    Missing cells are skipped by the medians and stay missing.
    """
    x = df.astype(np.float64)
    if mode == "per_protein":
        ref = x if reference is None else reference.astype(np.float64)
        return x - ref.median(axis=0, skipna=True).reindex(x.columns)
    if mode == "per_sample":
        return x.sub(x.median(axis=1, skipna=True), axis=0)
    raise CohortError(f"unknown RPPA centring mode '{mode}' (choose from {RPPA_MODES})")


# ---------------------------------------------------------------------------------------------
# Sparse features and imputation (docs/reference.md 1.5)
# ---------------------------------------------------------------------------------------------
def drop_sparse_features(train_df: pd.DataFrame, max_missing: float = 0.10) -> pd.Index:
    """Columns whose missing fraction over the rows of ``train_df`` is < ``max_missing``.

    A feature missing in 10 % or more of the training samples is dropped (kept iff < 0.10).
    """
    if len(train_df) == 0:
        raise CohortError("no training rows to compute missing fractions on")
    frac = train_df.isna().to_numpy().mean(axis=0)
    return train_df.columns[frac < max_missing]


@dataclasses.dataclass(frozen=True)
class FittedImputer:
    """An imputer fitted on training rows: ``kind`` in ``IMPUTERS``, the ``columns`` it was fitted
    on (in order) and the fitted sklearn ``model`` (None for ``none``)."""

    kind: str
    columns: pd.Index
    model: object = None


def fit_imputer(train_df: pd.DataFrame, kind: str = "knn", n_neighbors: int = 5) -> FittedImputer:
    """Fit an imputer on training rows.

    ``knn``: sklearn ``KNNImputer(n_neighbors)`` (uniform weights, nan-euclidean distance), used for
    RNA and RPPA; ``median``: ``SimpleImputer(strategy="median")``, used for CNA; ``none``: no
    imputation.
    """
    from sklearn.impute import KNNImputer, SimpleImputer

    if kind not in IMPUTERS:
        raise CohortError(f"unknown imputer '{kind}' (choose from {IMPUTERS})")
    if len(train_df) == 0:
        raise CohortError("no training rows to fit the imputer on")
    x = train_df.to_numpy(dtype=np.float64)
    if kind == "knn":
        model = KNNImputer(n_neighbors=n_neighbors, keep_empty_features=True).fit(x)
    elif kind == "median":
        model = SimpleImputer(strategy="median", keep_empty_features=True).fit(x)
    else:
        model = None
    return FittedImputer(kind=kind, columns=train_df.columns, model=model)


def apply_imputer(imputer: FittedImputer, df: pd.DataFrame) -> pd.DataFrame:
    """Fill the missing cells of ``df`` (same columns as the fit) with a fitted imputer."""
    if not df.columns.equals(imputer.columns):
        missing = imputer.columns.difference(df.columns)
        extra = df.columns.difference(imputer.columns)
        raise CohortError(f"imputer was fitted on other columns (missing here: {list(missing[:5])}, "
                          f"extra here: {list(extra[:5])})")
    if imputer.model is None or len(df) == 0:
        return df.astype(np.float64)
    out = imputer.model.transform(df.to_numpy(dtype=np.float64))
    return pd.DataFrame(out, index=df.index, columns=df.columns)


# ---------------------------------------------------------------------------------------------
# Clinical
# ---------------------------------------------------------------------------------------------
_STAGE = re.compile(r"^(?:stage\s*)?(iv|iii|ii|i|0)(a|b|c|d|s|is)?$")
_STAGE_MISSING = {"", "x", "stage x", "not reported", "unknown", "not available", "[not available]",
                  "[unknown]", "[not applicable]", "[not evaluated]", "[discrepancy]", "'--", "--",
                  "na", "nan", "none"}
_STAGE_GROUP = {"0": 1, "i": 1, "ii": 2, "iii": 3, "iv": 4}


def group_stage(series: pd.Series, *, source: str = "stage") -> pd.Series:
    """AJCC stage text -> group 1-4 (docs/reference.md 1.3), float with NaN for missing.

    ``Stage 0`` -> 1 (merged into I); ``Stage I/IA/IB/IS`` -> 1; ``Stage II/IIA/IIB/IIC`` -> 2;
    ``Stage III/IIIA/IIIB/IIIC`` -> 3; ``Stage IV/IVA/IVB/IVC`` -> 4; ``Stage X``, ``Not Reported``,
    empty, NaN and the usual "unknown" tokens -> NaN. Case and the ``Stage`` prefix are optional
    (miniACC writes ``stage ii``). Any other text is an error naming the value and the sample, so
    that a new spelling is never silently dropped.
    """
    out = np.full(len(series), np.nan)
    for k, (sid, v) in enumerate(series.items()):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            continue
        s = re.sub(r"\s+", " ", str(v).strip().lower())
        if s in _STAGE_MISSING:
            continue
        m = _STAGE.match(s)
        if m is None:
            raise CohortError(f"{source}: sample '{sid}': unrecognised stage '{v}' (expected e.g. "
                              f"'Stage IIA', 'Stage X' or 'Not Reported')")
        out[k] = _STAGE_GROUP[m.group(1)]
    return pd.Series(out, index=series.index, name="stage")


# ---------------------------------------------------------------------------------------------
# Orchestration
# ---------------------------------------------------------------------------------------------
def _default_transforms():
    return {"rnaseq": "rna_log2_counts", "cna": "cna_absolute", "rppa": "rppa"}


def _default_imputers():
    return {"rnaseq": "knn", "rppa": "knn", "cna": "median"}


@dataclasses.dataclass(frozen=True)
class PreprocessOptions:
    """Options of :func:`preprocess_modalities`; defaults follow the paper.

    Attributes:
      transforms: modality -> transform in ``TRANSFORMS``; a modality not listed gets ``none``.
        Default: Xena layout (rnaseq = log2(count+1), cna = absolute copy number, rppa).
      imputers: modality -> imputer in ``IMPUTERS``; a modality not listed gets ``default_imputer``.
      default_imputer: see above.
      n_neighbors: k of the KNN imputer (5).
      rna_min_cpm, rna_min_frac, rna_cpm_strict: the gene filter (:func:`filter_genes_cpm`);
        ``rna_cpm_strict=False`` is the reference's CPM >= 1.
      rppa_centering: ``per_protein`` (paper) or ``per_sample`` (reference code).
      max_missing: features missing in >= this fraction of train rows are dropped.
      zscore_clip: for ``zscore`` modalities, clip values to [-zscore_clip, zscore_clip] (None:
        no clipping).
    """

    transforms: Mapping[str, str] = dataclasses.field(default_factory=_default_transforms)
    imputers: Mapping[str, str] = dataclasses.field(default_factory=_default_imputers)
    default_imputer: str = "knn"
    n_neighbors: int = 5
    rna_min_cpm: float = 1.0
    rna_min_frac: float = 0.20
    rna_cpm_strict: bool = True
    rppa_centering: str = "per_protein"
    max_missing: float = 0.10
    zscore_clip: float | None = None

    def transform_of(self, name: str) -> str:
        t = self.transforms.get(name, "none")
        if t not in TRANSFORMS:
            raise CohortError(f"modality '{name}': unknown transform '{t}' (choose from {TRANSFORMS})")
        return t

    def imputer_of(self, name: str) -> str:
        k = self.imputers.get(name, self.default_imputer)
        if k not in IMPUTERS:
            raise CohortError(f"modality '{name}': unknown imputer '{k}' (choose from {IMPUTERS})")
        return k


@dataclasses.dataclass(frozen=True)
class FittedModality:
    """Everything :func:`fit_modality` learnt from the training rows of one modality.

    Attributes:
      name, transform: the modality and its transform.
      genes: RNA genes kept by the CPM filter (None for other transforms).
      rppa_mode: RPPA centring mode (None unless ``transform == "rppa"``).
      rppa_medians: per-protein train medians (``per_protein`` only).
      features: columns kept after the transform and the sparse-feature filter.
      imputer: fitted on the kept columns of the transformed train rows.
      clip: ``zscore`` only: the clipping bound (None: none).
    """

    name: str
    transform: str
    genes: pd.Index | None
    rppa_mode: str | None
    rppa_medians: pd.Series | None
    features: pd.Index
    imputer: FittedImputer
    clip: float | None = None


def _transform(df: pd.DataFrame, transform: str, genes, rppa_mode, rppa_medians, clip=None) -> pd.DataFrame:
    if transform in ("rna_log2_counts", "rna_counts"):
        counts = rna_log2_to_counts(df) if transform == "rna_log2_counts" else df.astype(np.float64)
        # CPM uses every gene's counts (library size before filtering), as the reference does.
        return log2_cpm1(cpm(counts).reindex(columns=genes))
    if transform == "cna_absolute":
        return cna_transform(df)
    if transform == "rppa":
        if rppa_mode == "per_protein":
            return df.astype(np.float64) - rppa_medians.reindex(df.columns)
        return rppa_center(df, mode="per_sample")
    if transform == "zscore" and clip is not None:
        return df.astype(np.float64).clip(-clip, clip)
    return df.astype(np.float64)


def fit_modality(name: str, train_df: pd.DataFrame,
                 options: PreprocessOptions | None = None) -> FittedModality:
    """Fit one modality's preprocessing on its training rows (and nothing else).

    Args:
      name: modality name (selects the transform and imputer in ``options``).
      train_df: samples x features, training samples that have the modality.
    """
    opt = options or PreprocessOptions()
    transform, imputer_kind = opt.transform_of(name), opt.imputer_of(name)
    if len(train_df) == 0:
        raise CohortError(f"modality '{name}': no training sample has it; nothing to fit on")
    genes = rppa_mode = rppa_medians = None
    clip = opt.zscore_clip if transform == "zscore" else None
    if clip is not None and not clip > 0:
        raise CohortError(f"modality '{name}': zscore_clip must be > 0, got {clip}")
    try:
        if transform in ("rna_log2_counts", "rna_counts"):
            counts = rna_log2_to_counts(train_df) if transform == "rna_log2_counts" else train_df
            genes = filter_genes_cpm(cpm(counts), opt.rna_min_cpm, opt.rna_min_frac, opt.rna_cpm_strict)
            if len(genes) == 0:
                raise CohortError(f"no gene passes the CPM filter (CPM {'>' if opt.rna_cpm_strict else '>='} "
                                  f"{opt.rna_min_cpm:g} in >= {opt.rna_min_frac:.0%} of train samples)")
        if transform == "rppa":
            if opt.rppa_centering not in RPPA_MODES:
                raise CohortError(f"unknown RPPA centring mode '{opt.rppa_centering}' "
                                  f"(choose from {RPPA_MODES})")
            rppa_mode = opt.rppa_centering
            if rppa_mode == "per_protein":
                rppa_medians = train_df.astype(np.float64).median(axis=0, skipna=True)
        x = _transform(train_df, transform, genes, rppa_mode, rppa_medians, clip)
        features = drop_sparse_features(x, opt.max_missing)
        if len(features) == 0:
            raise CohortError(f"every feature is missing in >= {opt.max_missing:.0%} of train samples")
        imputer = fit_imputer(x[features], imputer_kind, opt.n_neighbors)
    except CohortError as e:
        raise CohortError(f"modality '{name}': {e}") from None
    return FittedModality(name=name, transform=transform, genes=genes, rppa_mode=rppa_mode,
                          rppa_medians=rppa_medians, features=features, imputer=imputer, clip=clip)


def apply_modality(fitted: FittedModality, df: pd.DataFrame) -> pd.DataFrame:
    """Apply fitted preprocessing to any rows of the modality; returns float32 samples x features.

    A feature the fit kept but ``df`` lacks is treated as missing (and imputed).
    """
    try:
        x = _transform(df, fitted.transform, fitted.genes, fitted.rppa_mode, fitted.rppa_medians, fitted.clip)
        x = apply_imputer(fitted.imputer, x.reindex(columns=fitted.features))
    except CohortError as e:
        raise CohortError(f"modality '{fitted.name}': {e}") from None
    return x.astype(np.float32)


def _check_split(split: pd.Series) -> pd.Series:
    if not isinstance(split, pd.Series):
        raise CohortError(f"split must be a pandas Series sample_id -> train/val/test, got {type(split).__name__}")
    split = split.copy()
    split.index = pd.Index([str(s) for s in split.index], name="sample_id")
    dup = split.index[split.index.duplicated()]
    if len(dup):
        raise CohortError(f"split: duplicated sample id '{dup[0]}'")
    bad = split.notna() & ~split.isin(SPLITS)
    if bad.any():
        sid = bad[bad].index[0]
        raise CohortError(f"split: sample '{sid}' has split '{split[sid]}', not one of {SPLITS}")
    return split.dropna()


def _present_rows(name: str, df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df.index = pd.Index([str(s) for s in df.index], name="sample_id")
    dup = df.index[df.index.duplicated()]
    if len(dup):
        raise CohortError(f"modality '{name}': duplicated sample id '{dup[0]}'")
    return df[~df.isna().all(axis=1)]


def fit_preprocess(train: Mapping[str, pd.DataFrame],
                   options: PreprocessOptions | None = None) -> dict[str, FittedModality]:
    """Fit every modality on the given (training) rows; see :func:`fit_modality`."""
    return {name: fit_modality(name, _present_rows(name, df), options) for name, df in train.items()}


def apply_preprocess(fitted: Mapping[str, FittedModality],
                     raw: Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Apply fitted preprocessing to every modality of ``raw`` (all-NaN rows are dropped)."""
    missing = [m for m in raw if m not in fitted]
    if missing:
        raise CohortError(f"no fitted preprocessing for modality '{missing[0]}'")
    return {name: apply_modality(fitted[name], _present_rows(name, df)) for name, df in raw.items()}


PREPROCESS_FILE = "preprocess.json"
PREPROCESS_VERSION = 1


def save_preprocess(fitted: Mapping[str, FittedModality], directory) -> Path:
    """Write fitted preprocessing to ``directory``: ``preprocess.json`` (transforms, kept genes and
    features, RPPA medians, imputer kinds) and one ``<modality>.npz`` per imputer (the KNN imputer's
    training matrix, or the median imputer's statistics), so that new raw samples can be put
    through exactly the same steps (:func:`load_preprocess`, :func:`apply_preprocess`)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"format_version": PREPROCESS_VERSION, "modalities": {}}
    for name, f in fitted.items():
        imp = f.imputer
        entry = {"transform": f.transform, "genes": None if f.genes is None else [str(g) for g in f.genes],
                 "rppa_mode": f.rppa_mode,
                 "rppa_medians": None if f.rppa_medians is None else
                 {str(k): float(v) for k, v in f.rppa_medians.items()},
                 "features": [str(c) for c in f.features], "imputer": imp.kind, "clip": f.clip}
        if imp.kind == "knn":
            entry["n_neighbors"] = int(imp.model.n_neighbors)
            np.savez(directory / f"{name}.npz", fit_X=imp.model._fit_X)  # what KNNImputer.fit keeps
        elif imp.kind == "median":
            np.savez(directory / f"{name}.npz", statistics=imp.model.statistics_)
        meta["modalities"][name] = entry
    (directory / PREPROCESS_FILE).write_text(json.dumps(meta, indent=1))
    return directory


def load_preprocess(directory) -> dict[str, FittedModality]:
    """Read what :func:`save_preprocess` wrote; the imputers are refitted on their saved matrices,
    which restores them exactly."""
    from sklearn.impute import KNNImputer, SimpleImputer

    directory = Path(directory)
    f = directory / PREPROCESS_FILE
    if not f.exists():
        raise CohortError(f"{directory}: no saved preprocessing ({PREPROCESS_FILE})")
    meta = json.loads(f.read_text())
    if meta.get("format_version") != PREPROCESS_VERSION:
        raise CohortError(f"{f}: preprocessing format version {meta.get('format_version')}; "
                          f"this cgjax reads version {PREPROCESS_VERSION}")
    out = {}
    for name, e in meta["modalities"].items():
        features = pd.Index(e["features"])
        model = None
        if e["imputer"] == "knn":
            fit_x = np.load(directory / f"{name}.npz")["fit_X"]
            model = KNNImputer(n_neighbors=e["n_neighbors"], keep_empty_features=True).fit(fit_x)
        elif e["imputer"] == "median":
            stats = np.load(directory / f"{name}.npz")["statistics"]
            model = SimpleImputer(strategy="median", keep_empty_features=True).fit(stats[None, :])
        medians = None if e["rppa_medians"] is None else pd.Series(e["rppa_medians"], dtype=np.float64)
        out[name] = FittedModality(name=name, transform=e["transform"],
                                   genes=None if e["genes"] is None else pd.Index(e["genes"]),
                                   rppa_mode=e["rppa_mode"], rppa_medians=medians, features=features,
                                   imputer=FittedImputer(kind=e["imputer"], columns=features, model=model),
                                   clip=e.get("clip"))
    return out


def preprocess_modalities(raw: Mapping[str, pd.DataFrame], split: pd.Series,
                          options: PreprocessOptions | None = None, *, return_fitted: bool = False):
    """The paper's preprocessing of every modality, fitted on training rows only.

    For each modality: transform (RNA: counts -> CPM -> gene filter -> log2(CPM+1); CNA:
    log2(CN/2) clipped; RPPA: median centring), drop features missing in >= ``max_missing`` of
    train rows, impute (KNN or median). **Nothing is fitted on val or test rows**: the gene filter,
    the per-protein RPPA medians, the sparse-feature filter and the imputer see only the rows whose
    split is ``train`` (:func:`fit_preprocess` is handed those rows alone); val and test rows are
    only transformed with what was fitted.

    Deviation from the reference: the reference computes the RNA gene filter on all samples (all
    cohorts, before the split, docs/reference.md 1.3 and 6.10); here it is fitted on train only.

    Args:
      raw: modality -> samples x features DataFrame (index = sample id). A row that is entirely
        NaN means the sample lacks the modality and is dropped. Xena tables come from
        :mod:`cgjax.data.xena`.
      split: sample id -> ``train`` / ``val`` / ``test``. As in the reference (docs/reference.md 1.5),
        a sample without a split (absent or NaN) is left out.
      options: :class:`PreprocessOptions` (default: the paper's choices).

    Returns:
      modality -> float32 samples x features DataFrame with no missing cell, holding the samples of
      any split that have the modality, in the order of ``raw``; with ``return_fitted``, also the
      fitted preprocessing (modality -> :class:`FittedModality`, for :func:`save_preprocess`).
    """
    split = _check_split(split)
    rows = {name: _present_rows(name, df) for name, df in raw.items()}
    rows = {name: df[df.index.isin(split.index)] for name, df in rows.items()}
    train = {}
    for name, df in rows.items():
        is_train = (split.reindex(df.index) == "train").to_numpy()
        if not is_train.any():
            raise CohortError(f"modality '{name}': no training sample has it; nothing to fit on")
        train[name] = df[is_train]
    fitted = fit_preprocess(train, options)
    features = apply_preprocess(fitted, rows)
    return (features, fitted) if return_fitted else features
