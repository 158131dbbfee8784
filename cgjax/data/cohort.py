"""The cohort data model.

A :class:`Cohort` is a set of named modalities measured on shared samples, plus optional clinical
labels. Each modality is a float32 matrix ``f32[N, D_m]`` over *all* N samples of the cohort, with a
presence mask ``bool[N]``: a sample lacks a modality when its mask is False, and then its row holds
NaN (so that it can never be used by accident). Present rows are always finite; the constructor
checks it.

Clinical labels are a :class:`pandas.DataFrame` indexed by sample id, with any of the columns
``cancer_type`` (str), ``stage`` (float 1-4 or NaN), ``os_time`` (float >= 0 or NaN),
``os_event`` (float 0/1 or NaN) and ``split`` (``train``/``val``/``test``).
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from cgjax.errors import CohortError

CLINICAL_COLUMNS = ("cancer_type", "stage", "os_time", "os_event", "split")
SPLITS = ("train", "val", "test")
DEFAULT_MODALITIES = ("cna", "rnaseq", "rppa", "wsi")


@dataclasses.dataclass(frozen=True)
class Cohort:
    """Samples x modalities, with presence masks and clinical labels.

    Attributes:
      sample_ids: str[N], unique.
      data: modality name -> f32[N, D_m]; NaN rows where the modality is absent.
      masks: modality name -> bool[N]; True where the sample has the modality.
      feature_names: modality name -> list of D_m feature names.
      clinical: DataFrame indexed by sample id (same order as ``sample_ids``), columns a subset of
        ``CLINICAL_COLUMNS``. May have no columns.
      source: where the cohort came from (a path or a description), used in error messages.
    """

    sample_ids: np.ndarray
    data: Mapping[str, np.ndarray]
    masks: Mapping[str, np.ndarray]
    feature_names: Mapping[str, list]
    clinical: pd.DataFrame
    source: str = "<memory>"

    def __post_init__(self):
        validate(self)

    # ---- views ------------------------------------------------------------------------------
    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.data)

    @property
    def n_samples(self) -> int:
        return len(self.sample_ids)

    def dims(self) -> dict[str, int]:
        return {m: int(x.shape[1]) for m, x in self.data.items()}

    def filled(self, modality: str, value: float = 0.0) -> np.ndarray:
        """f32[N, D] with absent rows replaced by ``value`` (0 = train mean after scaling)."""
        x = self.data[modality]
        return np.where(self.masks[modality][:, None], x, np.float32(value)).astype(np.float32)

    def mask_matrix(self, modalities: Iterable[str] | None = None) -> np.ndarray:
        """bool[N, M] presence of each modality (columns in ``modalities`` order)."""
        mods = self.modalities if modalities is None else tuple(modalities)
        return np.stack([self.masks[m] for m in mods], axis=1)

    def complete(self) -> np.ndarray:
        """bool[N]: samples that have every modality."""
        return self.mask_matrix().all(axis=1)

    def label(self, column: str) -> np.ndarray | None:
        """The clinical column as a numpy array in sample order, or None if the cohort lacks it."""
        if column not in self.clinical.columns:
            return None
        return self.clinical[column].to_numpy()

    def subset(self, rows) -> "Cohort":
        """A new cohort with the given rows (bool mask or integer indices), in that order."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        return Cohort(
            sample_ids=self.sample_ids[rows],
            data={m: x[rows] for m, x in self.data.items()},
            masks={m: k[rows] for m, k in self.masks.items()},
            feature_names=dict(self.feature_names),
            clinical=self.clinical.iloc[rows],
            source=self.source,
        )

    def split(self, name: str) -> "Cohort":
        """Rows whose clinical ``split`` column equals ``name``."""
        if "split" not in self.clinical.columns:
            raise CohortError(f"{self.source}: cohort has no split; call cgjax.data.split_cohort first")
        return self.subset(self.clinical["split"].to_numpy() == name)

    def with_modalities(self, data: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray],
                        feature_names: Mapping[str, list] | None = None) -> "Cohort":
        """A copy whose modality arrays are replaced (e.g. scaled or imputed); same samples."""
        names = dict(self.feature_names)
        if feature_names:
            names.update(feature_names)
        return dataclasses.replace(self, data=dict(data), masks=dict(masks),
                                   feature_names={m: names[m] for m in data})


def from_arrays(sample_ids, data: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray] | None = None,
                clinical: pd.DataFrame | None = None, feature_names: Mapping[str, list] | None = None,
                source: str = "<memory>") -> Cohort:
    """Build a cohort from arrays. Without ``masks``, a row is absent iff it is entirely NaN.

    Absent rows are set to NaN; clinical is reindexed to ``sample_ids`` (missing labels -> NaN).
    """
    sample_ids = np.asarray([str(s) for s in sample_ids], dtype=object)
    out_data, out_masks = {}, {}
    for m, x in data.items():
        x = np.array(x, dtype=np.float32, copy=True)
        if x.ndim != 2:
            raise CohortError(f"{source}: modality '{m}' must be a 2-D samples x features matrix, got shape {x.shape}")
        mask = (~np.isnan(x).all(axis=1)) if masks is None or m not in masks else np.asarray(masks[m], dtype=bool)
        if x.shape[1] == 0:
            mask = np.zeros(len(x), dtype=bool) if masks is None or m not in masks else mask
        x[~mask] = np.nan
        out_data[m], out_masks[m] = x, mask
    names = {m: list(feature_names[m]) if feature_names and m in feature_names
             else [f"{m}_{j}" for j in range(out_data[m].shape[1])] for m in out_data}
    if clinical is None:
        clinical = pd.DataFrame(index=pd.Index(sample_ids, name="sample_id"))
    else:
        clinical = normalise_clinical(clinical, source)
        clinical = clinical.reindex(pd.Index(sample_ids, name="sample_id"))
    return Cohort(sample_ids=sample_ids, data=out_data, masks=out_masks, feature_names=names,
                  clinical=clinical, source=source)


def normalise_clinical(clinical: pd.DataFrame, source: str = "<memory>") -> pd.DataFrame:
    """Keep the known clinical columns with their canonical dtypes; check their values."""
    clinical = clinical.copy()
    if "sample_id" in clinical.columns:
        clinical = clinical.set_index("sample_id")
    clinical.index = pd.Index([str(s) for s in clinical.index], name="sample_id")
    dup = clinical.index[clinical.index.duplicated()]
    if len(dup):
        raise CohortError(f"{source}: clinical table has duplicated sample id '{dup[0]}'")
    out = pd.DataFrame(index=clinical.index)
    if "cancer_type" in clinical:
        out["cancer_type"] = clinical["cancer_type"].astype(object).where(clinical["cancer_type"].notna(), None)
    for col in ("stage", "os_time", "os_event"):
        if col in clinical:
            vals = pd.to_numeric(clinical[col], errors="coerce")
            bad = vals.isna() & clinical[col].notna() & (clinical[col].astype(str).str.strip() != "")
            if bad.any():
                sid = bad[bad].index[0]
                raise CohortError(f"{source}: clinical column '{col}' has non-numeric value "
                                  f"'{clinical.loc[sid, col]}' for sample '{sid}'")
            out[col] = vals.astype(np.float64)
    if "split" in clinical:
        out["split"] = clinical["split"].astype(object).where(clinical["split"].notna(), None)
    return out


def validate(cohort: Cohort) -> None:
    """Raise :class:`CohortError` naming the source, modality and sample of the first problem."""
    src = cohort.source
    ids = cohort.sample_ids
    if len(cohort.data) == 0:
        raise CohortError(f"{src}: empty cohort: no modality")
    if len(ids) == 0:
        raise CohortError(f"{src}: empty cohort: no sample")
    uniq, counts = np.unique(ids.astype(str), return_counts=True)
    if (counts > 1).any():
        raise CohortError(f"{src}: duplicated sample id '{uniq[counts > 1][0]}'")
    if set(cohort.data) != set(cohort.masks) or set(cohort.data) != set(cohort.feature_names):
        raise CohortError(f"{src}: data, masks and feature names name different modalities")
    for m, x in cohort.data.items():
        mask = cohort.masks[m]
        if x.dtype != np.float32 or x.ndim != 2 or x.shape[0] != len(ids):
            raise CohortError(f"{src}: modality '{m}' must be float32 [{len(ids)}, D], got {x.dtype} {x.shape}")
        if mask.shape != (len(ids),) or mask.dtype != bool:
            raise CohortError(f"{src}: mask of modality '{m}' must be bool [{len(ids)}]")
        if len(cohort.feature_names[m]) != x.shape[1]:
            raise CohortError(f"{src}: modality '{m}' has {x.shape[1]} features but "
                              f"{len(cohort.feature_names[m])} feature names")
        if not mask.any():
            raise CohortError(f"{src}: modality '{m}' has no rows (no sample has it)")
        if x.shape[1] == 0:
            raise CohortError(f"{src}: modality '{m}' has no features")
        present = x[mask]
        bad_rows = ~np.isfinite(present).all(axis=1)
        if bad_rows.any():
            i = np.flatnonzero(mask)[np.flatnonzero(bad_rows)[0]]
            j = int(np.flatnonzero(~np.isfinite(x[i]))[0])
            raise CohortError(f"{src}: modality '{m}', sample '{ids[i]}': value {x[i, j]} in feature "
                              f"'{cohort.feature_names[m][j]}' of a row that is otherwise present "
                              f"(partially filled rows are not allowed; impute or drop the row)")
    clin = cohort.clinical
    if len(clin) != len(ids) or not (clin.index.astype(str) == ids.astype(str)).all():
        raise CohortError(f"{src}: clinical table is not aligned with the samples")
    unknown = set(clin.columns) - set(CLINICAL_COLUMNS)
    if unknown:
        raise CohortError(f"{src}: unknown clinical column(s) {sorted(unknown)}")
    check_clinical_values(clin, src)


def check_clinical_values(clin: pd.DataFrame, src: str) -> None:
    """Raise :class:`CohortError` for a stage outside 1-4, a negative or infinite survival time, an
    event that is not 0/1, or an unknown split; ``src`` (a file, or the cohort) opens the message."""
    ids = clin.index
    if "stage" in clin:
        st = clin["stage"].to_numpy(dtype=float)
        bad = ~np.isnan(st) & ~np.isin(st, [1, 2, 3, 4])
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise CohortError(f"{src}: sample '{ids[i]}': stage {st[i]:g} is outside 1-4")
    if "os_time" in clin:
        tt = clin["os_time"].to_numpy(dtype=float)
        bad = ~np.isnan(tt) & ((tt < 0) | np.isinf(tt))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            what = "negative" if tt[i] < 0 else "infinite"
            raise CohortError(f"{src}: sample '{ids[i]}': {what} survival time os_time={tt[i]:g}")
    if "os_event" in clin:
        ev = clin["os_event"].to_numpy(dtype=float)
        bad = ~np.isnan(ev) & ~np.isin(ev, [0, 1])
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise CohortError(f"{src}: sample '{ids[i]}': os_event {ev[i]:g} must be 0 or 1")
    if "split" in clin:
        sp = clin["split"]
        bad = sp.notna() & ~sp.isin(SPLITS)
        if bad.any():
            sid = bad[bad].index[0]
            raise CohortError(f"{src}: sample '{sid}': split '{sp[sid]}' is not one of {list(SPLITS)}")
