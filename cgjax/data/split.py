"""The train/val/test split of a cohort and the per-modality standard scaling.

Split (paper rule, `docs/reference.md` section 1.4, with one deliberate difference): stratified by cancer
type; in a stratum of n samples, n_val = floor(0.05 n) and n_test = floor(0.15 n), both drawn only
from the *complete* samples (every modality present), val first then test. If the stratum has fewer
complete samples than n_val + n_test, val = floor(complete * n_val / (n_val + n_test)) and test is
the rest of the complete pool. Every other sample goes to train: unlike the reference script, which
samples a nominal n_train and silently drops the leftovers (OV, GBM, THCA), no sample is dropped.

Scaling (section 1.8): per modality a standard scaler (mean, population std) fitted on the train
rows that have the modality; absent rows stay NaN.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from fractions import Fraction
from typing import Iterator, Mapping

import numpy as np
import pandas as pd

from cgjax.data.cohort import Cohort
from cgjax.errors import CohortError

__all__ = ["split_cohort", "split_counts", "split_record", "apply_split_record", "Scalers", "fit_scalers", "apply_scalers", "invert_scalers"]

PAPER_FRACTIONS = (0.80, 0.05, 0.15)


# ------------------------------------------------------------------------------------------------
# split
# ------------------------------------------------------------------------------------------------
def split_counts(n: int, n_complete: int, fractions=PAPER_FRACTIONS) -> tuple[int, int, int]:
    """(n_train, n_val, n_test) for one stratum of ``n`` samples of which ``n_complete`` are complete.

    n_val = floor(f_val n), n_test = floor(f_test n), computed in exact rational arithmetic (so that
    e.g. 0.15 * 20 is 3, not 2.9999...); shrunk pro rata when the complete pool is too small.
    """
    _, f_val, f_test = _check_fractions(fractions)
    n_val, n_test = math.floor(f_val * n), math.floor(f_test * n)
    if n_complete < n_val + n_test:
        # The reference's rule: keep the val:test ratio within what the complete pool can give.
        val = n_complete * n_val // (n_val + n_test)
        n_val, n_test = val, n_complete - val
    return n - n_val - n_test, n_val, n_test


def _check_fractions(fractions) -> tuple[Fraction, Fraction, Fraction]:
    try:
        f = tuple(Fraction(str(float(v))) for v in fractions)
    except (TypeError, ValueError):
        raise CohortError(f"split fractions must be three numbers (train, val, test), got {fractions!r}") from None
    if len(f) != 3 or any(v < 0 for v in f) or abs(sum(f) - 1) > Fraction(1, 10**6):
        raise CohortError(f"split fractions must be three non-negative numbers (train, val, test) summing "
                          f"to 1, got {tuple(fractions)}")
    return f


def _stratum_rng(seed: int, stratum: str) -> np.random.Generator:
    # One generator per stratum, seeded by (seed, stable hash of the name): adding or removing a
    # cancer type does not reshuffle the others, and the result never depends on stratum order.
    return np.random.default_rng([int(seed), zlib.crc32(stratum.encode("utf-8"))])


def split_cohort(cohort: Cohort, *, seed: int = 42, fractions=PAPER_FRACTIONS, force: bool = False) -> Cohort:
    """Assign every sample to train/val/test (the clinical column ``split``).

    Args:
      cohort: the cohort. Strata are its ``cancer_type`` values (a missing type is a stratum of its
        own; no ``cancer_type`` column = one stratum).
      seed: the split depends only on (seed, sample ids, cancer types, presence masks): not on row
        order.
      fractions: (train, val, test); val and test are floored per stratum, train gets the rest.
      force: recompute even if the cohort already has a complete ``split`` column.

    Returns:
      The cohort with its ``split`` column set (or the same cohort if it already had a complete one).

    Raises:
      CohortError: the existing split column is only partially filled (and not ``force``), or the
        fractions are invalid.
    """
    _check_fractions(fractions)
    if "split" in cohort.clinical.columns and not force:
        have = cohort.clinical["split"].notna().to_numpy()
        if have.all():
            return cohort  # a cohort file may fix its own split; keep it
        if have.any():
            i = int(np.flatnonzero(~have)[0])
            raise CohortError(f"{cohort.source}: split column is partially filled: sample '{cohort.sample_ids[i]}' "
                              f"has none ({int((~have).sum())} of {len(have)} missing); complete it, remove it, "
                              f"or re-split with force=True")
    ct = cohort.label("cancer_type")
    strata = (np.full(cohort.n_samples, "", dtype=object) if ct is None
              else np.asarray(["\0missing" if pd.isna(v) else str(v) for v in ct], dtype=object))
    complete = cohort.complete()
    ids = cohort.sample_ids.astype(str)
    split = np.full(cohort.n_samples, "train", dtype=object)
    for stratum in sorted(set(strata)):
        members = np.flatnonzero(strata == stratum)
        pool = members[complete[members]]
        pool = pool[np.argsort(ids[pool], kind="stable")]  # canonical order before shuffling
        _, n_val, n_test = split_counts(len(members), len(pool), fractions)
        drawn = _stratum_rng(seed, stratum).permutation(pool)
        split[drawn[:n_val]] = "val"
        split[drawn[n_val:n_val + n_test]] = "test"
    clinical = cohort.clinical.copy()
    clinical["split"] = split
    return dataclasses.replace(cohort, clinical=clinical)


def _ids_digest(ids) -> str:
    import hashlib

    return hashlib.sha256("\n".join(sorted(str(i) for i in ids)).encode("utf-8")).hexdigest()


def split_record(cohort: Cohort, *, seed: int = 42, fractions=PAPER_FRACTIONS) -> dict:
    """Split ``cohort`` as :func:`split_cohort` does and describe that split so that it can be
    reproduced later (it is stored in checkpoints): ``{"source": "cohort" (the cohort's own
    complete split column) | "split_cohort", "seed", "fractions", "counts": {split: n},
    "sha256": {split: digest of the sorted sample ids}}``. Returns ``(split cohort, record)``."""
    own = "split" in cohort.clinical.columns and cohort.clinical["split"].notna().all()
    cohort = split_cohort(cohort, seed=seed, fractions=fractions)
    split = np.asarray(cohort.label("split"), dtype=object)
    record = {"source": "cohort" if own else "split_cohort", "seed": int(seed),
              "fractions": [float(f) for f in fractions],
              "counts": {s: int((split == s).sum()) for s in ("train", "val", "test")},
              "sha256": {s: _ids_digest(cohort.sample_ids[split == s]) for s in ("train", "val", "test")}}
    return cohort, record


def apply_split_record(cohort: Cohort, record: Mapping | None) -> tuple[Cohort, list[str]]:
    """Give ``cohort`` the split a model set was trained with (``record`` from :func:`split_record`,
    as stored in its checkpoint). Returns the split cohort and notes saying what was done: with no
    record (a checkpoint written before checkpoints recorded their split) the cohort's own complete ``split``
    column is used, else ``split_cohort(seed=42)`` with the paper's fractions, which is what
    training did by default; a cohort whose split differs from the recorded one is noted."""
    if record is None:
        own = "split" in cohort.clinical.columns and cohort.clinical["split"].notna().all()
        if own:
            return cohort, ["Split: the checkpoint records no split (written by an older cgjax); assumed the "
                            "cohort's own `split` column, which training used when present."]
        return split_cohort(cohort, seed=42, force=True), [
            "Split: the checkpoint records no split (written by an older cgjax) and the cohort has no complete "
            "`split` column; assumed `split_cohort(seed=42)` with the paper's fractions, the training default. "
            "If the models were trained with another split, test rows may have been seen in training."]
    if record["source"] == "cohort":
        if "split" not in cohort.clinical.columns or not cohort.clinical["split"].notna().all():
            raise CohortError(f"{cohort.source}: the models were trained on the cohort's own split column, which "
                              f"this cohort lacks; give the cohort file the models were trained on")
        notes = ["Split: the cohort's own `split` column (as in training)."]
    else:
        cohort = split_cohort(cohort, seed=record["seed"], fractions=tuple(record["fractions"]), force=True)
        notes = [f"Split: `split_cohort(seed={record['seed']}, fractions={tuple(record['fractions'])})`, as recorded "
                 f"in the checkpoint."]
    split = np.asarray(cohort.label("split"), dtype=object)
    changed = [s for s in ("train", "val", "test")
               if _ids_digest(cohort.sample_ids[split == s]) != record.get("sha256", {}).get(s)]
    if changed:
        notes.append(f"WARNING: the {'/'.join(changed)} samples differ from those the models were trained with "
                     f"(the cohort has changed since): recorded {record.get('counts')}, now "
                     f"{ {s: int((split == s).sum()) for s in ('train', 'val', 'test')} }.")
    return cohort, notes


# ------------------------------------------------------------------------------------------------
# scaling
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)  # __eq__ below: arrays have no single truth value
class Scalers(Mapping):
    """Per-modality standard scalers: a read-only mapping name -> (mean f32[D], std f32[D]).

    ``std`` is the population std (ddof 0, as sklearn's StandardScaler) with constant features set
    to 1. JSON-serialisable through :meth:`to_dict` / :meth:`from_dict` (exact for float32).
    """

    params: Mapping[str, tuple[np.ndarray, np.ndarray]]

    def __getitem__(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        return self.params[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.params)

    def __len__(self) -> int:
        return len(self.params)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Mapping) or set(self) != set(other):
            return False
        return all(np.array_equal(a, b) for m in self for a, b in zip(self[m], other[m]))

    __hash__ = None

    def dims(self) -> dict[str, int]:
        return {m: int(mu.shape[0]) for m, (mu, _) in self.params.items()}

    def to_dict(self) -> dict:
        # A float32 converted to a Python float is exact, and JSON writes floats with repr: the
        # float32 values come back bit for bit.
        return {"kind": "standard", "version": 1,
                "modalities": {m: {"mean": [float(v) for v in mu], "std": [float(v) for v in sd]}
                               for m, (mu, sd) in self.params.items()}}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Scalers":
        try:
            if d.get("kind", "standard") != "standard":
                raise ValueError(f"unknown scaler kind {d.get('kind')!r}")
            params = {}
            for m, p in d["modalities"].items():
                mu = np.asarray(p["mean"], dtype=np.float32)
                sd = np.asarray(p["std"], dtype=np.float32)
                if mu.ndim != 1 or mu.shape != sd.shape:
                    raise ValueError(f"modality '{m}': mean and std must be vectors of one length")
                if not (np.isfinite(mu).all() and np.isfinite(sd).all() and (sd > 0).all()):
                    raise ValueError(f"modality '{m}': mean/std must be finite and std > 0")
                params[m] = (mu, sd)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CohortError(f"malformed scalers: {e}") from None
        return cls(params)


def fit_scalers(train_cohort: Cohort) -> Scalers:
    """Fit one standard scaler per modality on the rows where the modality is present.

    Args:
      train_cohort: the training samples only (``cohort.split("train")``). A cohort whose ``split``
        column says some rows are not train is refused, so that val/test never leak into the fit.

    Returns:
      :class:`Scalers`, name -> (mean f32[D_m], std f32[D_m]).
    """
    sp = train_cohort.label("split")
    if sp is not None:
        not_train = pd.notna(sp) & (sp != "train")
        if not_train.any():
            raise CohortError(f"{train_cohort.source}: fit_scalers got {int(not_train.sum())} non-train samples "
                              f"(e.g. '{train_cohort.sample_ids[np.flatnonzero(not_train)[0]]}'); "
                              f"pass cohort.split('train')")
    params = {}
    for m, x in train_cohort.data.items():
        rows = x[train_cohort.masks[m]].astype(np.float64)  # accumulate in float64 for accuracy
        if len(rows) == 0:
            raise CohortError(f"{train_cohort.source}: modality '{m}' has no train sample to fit its scaler on")
        mu = rows.mean(axis=0)
        sd = rows.std(axis=0, ddof=0)
        # sklearn's rule: a (numerically) constant feature is left unscaled rather than divided by ~0.
        sd = np.where(sd < 10 * np.finfo(np.float64).eps * np.maximum(1.0, np.abs(mu)), 1.0, sd)
        params[m] = (mu.astype(np.float32), sd.astype(np.float32))
    return Scalers(params)


def _check_scaler(name: str, d: int, scalers: Mapping, where: str) -> tuple[np.ndarray, np.ndarray]:
    if name not in scalers:
        raise CohortError(f"{where}: no scaler for modality '{name}' (scalers know {sorted(scalers)})")
    mu, sd = scalers[name]
    if mu.shape[0] != d:
        raise CohortError(f"{where}: modality '{name}' has {d} features but its scaler was fitted on {mu.shape[0]}")
    return np.asarray(mu, np.float32), np.asarray(sd, np.float32)


def apply_scalers(cohort: Cohort, scalers: Mapping) -> Cohort:
    """The cohort with every modality standardised: ``(x - mean) / std`` in float32; NaN rows stay NaN."""
    data = {}
    for m, x in cohort.data.items():
        mu, sd = _check_scaler(m, x.shape[1], scalers, cohort.source)
        data[m] = ((x - mu) / sd).astype(np.float32)
    return cohort.with_modalities(data, cohort.masks)


def invert_scalers(name: str, x, scalers: Mapping) -> np.ndarray:
    """Back to the original units: f32[..., D] ``x * std + mean`` for modality ``name``."""
    x = np.asarray(x, dtype=np.float32)
    mu, sd = _check_scaler(name, x.shape[-1], scalers, "invert_scalers")
    return (x * sd + mu).astype(np.float32)
