"""Completed cohorts: every sample, observed rows as they were, missing rows imputed, and a flag.

:func:`cgjax.pipeline.impute` returns only the imputed rows. The functions here put them back into
the cohort so that a user gets the whole table: per modality ``m``

    x_completed[r, i] = x[i]              if sample i has m  (observed: copied exactly)
                        x_hat[r, i]       otherwise           (replicate r of the imputation)
    imputed[i]        = not has(i, m)

and write it in the cohort's own file format (per-modality tables with an ``imputed`` column) or as
a MuData following the scverse conventions (:func:`to_mudata`).
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from cgjax import pipeline
from cgjax._atomic import atomic_file
from cgjax.data import Cohort
from cgjax.errors import CgjaxError
from cgjax.sampling.options import SampleOptions


@dataclasses.dataclass(frozen=True)
class Completion:
    """A cohort with every modality filled in for every sample.

    Attributes:
      cohort: the input cohort (its observed values and clinical labels).
      replicates: modality -> f32[R, N, D_m]; observed rows equal ``cohort.data[m]`` in every replicate.
      imputed: modality -> bool[N]; True where the row was imputed.
      provenance: how the imputation was made (checkpoint, method, sampler, seed, ...).
    """

    cohort: Cohort
    replicates: Mapping[str, np.ndarray]
    imputed: Mapping[str, np.ndarray]
    provenance: Mapping

    @property
    def n_replicates(self) -> int:
        return int(next(iter(self.replicates.values())).shape[0])

    def values(self, m: str, fill: str | int = "mean") -> np.ndarray:
        """f32[N, D_m]: observed rows, and imputed rows as the replicate mean (``fill="mean"``) or
        replicate number ``fill``."""
        x = self.replicates[m]
        if isinstance(fill, str):
            if fill != "mean":
                raise CgjaxError(f"fill must be 'mean' or a replicate number, got {fill!r}")
            return x.mean(axis=0, dtype=np.float64).astype(np.float32)
        if not 0 <= int(fill) < x.shape[0]:
            raise CgjaxError(f"fill={fill}: there are {x.shape[0]} replicate(s) (numbered from 0)")
        return x[int(fill)]


def complete(ms, cohort: Cohort, tables: Mapping[str, pd.DataFrame], replicates: int,
             provenance: Mapping | None = None) -> Completion:
    """Merge the imputed rows ``tables`` (from :func:`cgjax.pipeline.impute`, in memory) into ``cohort``.

    Args:
      ms: the :class:`cgjax.ensemble.ModelSet` the tables came from (its modalities and features).
      cohort: the cohort that was imputed.
      tables: modality -> DataFrame with ``sample_id``, ``replicate`` and the features.
      replicates: R, the replicates per imputed row.
    """
    N = cohort.n_samples
    pos = pd.Index(cohort.sample_ids.astype(str))
    reps, flags = {}, {}
    for m in ms.modalities:
        D = ms.dims[m]
        observed = cohort.masks[m] if m in cohort.data else np.zeros(N, bool)
        x = np.zeros((replicates, N, D), np.float32)
        if m in cohort.data:
            x[:, observed] = cohort.data[m][observed]
        if (~observed).any():
            df = tables[m]
            rows = pos.get_indexer(df["sample_id"].astype(str))
            x[df["replicate"].to_numpy(), rows] = df[list(ms.feature_names[m])].to_numpy(np.float32)
        reps[m], flags[m] = x, ~observed
    return Completion(cohort, reps, flags, dict(provenance or {}))


def provenance(checkpoint, options: SampleOptions) -> dict:
    """How an imputation was made, for :attr:`Completion.provenance` (the h5mu's ``uns["cgjax"]``):
    the checkpoint, method, composition (as asked: ``auto`` is ``anchored`` for a target whose
    models all have a fitted anchor, else ``average``), sampler, its steps (-1: every timestep) and
    eta (-1: the sampler has none; only DDIM does), seed, replicates and the cgjax version. One record for ``cgjax impute
    --complete`` and :class:`cgjax.Imputer`."""
    solver = options.solver
    return {"checkpoint": str(checkpoint), "method": options.method, "composition": options.composition,
            "sampler": solver.kind,
            "steps": -1 if solver.steps is None else int(solver.steps),
            "eta": float(solver.eta) if solver.kind == "ddim" else -1.0, "seed": int(options.seed),
            "replicates": int(options.replicates), "cgjax_version": __import__("cgjax").__version__}


def impute_complete(ms, cohort: Cohort, options: SampleOptions = SampleOptions(), *,
                    provenance: Mapping | None = None, progress: bool = True) -> Completion:
    """Impute ``cohort`` with :func:`cgjax.pipeline.impute` and complete it."""
    tables = pipeline.impute(ms, cohort, options, progress=progress)
    return complete(ms, cohort, tables, options.replicates, provenance)


def modality_table(c: Completion, m: str, names) -> pd.DataFrame:
    """Replicate-major rows ``sample_id, [replicate,] imputed, <features>`` of every sample (the
    ``replicate`` column only with several replicates)."""
    R, N = c.n_replicates, c.cohort.n_samples
    df = pd.DataFrame(c.replicates[m].reshape(R * N, -1), columns=list(names))
    if R > 1:
        df.insert(0, "replicate", np.repeat(np.arange(R), N))
    df.insert(0 if R == 1 else 1, "imputed", np.tile(c.imputed[m], R))
    df.insert(0, "sample_id", np.tile(c.cohort.sample_ids.astype(str), R))
    return df


def write_tables(c: Completion, out, suffix: str, feature_names: Mapping[str, list]) -> dict[str, Path]:
    """Write ``out/<modality><suffix>`` (``.csv``, ``.tsv`` or ``.parquet``) for every modality;
    each file is written under a temporary name and renamed into place. Returns modality -> path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for m in c.replicates:
        df = modality_table(c, m, feature_names[m])
        dest = out / f"{m}{suffix}"
        with atomic_file(dest) as tmp:  # a kill leaves no partial table at the path
            if suffix == ".parquet":
                df.to_parquet(tmp, index=False)
            else:
                df.to_csv(tmp, index=False, sep="\t" if suffix == ".tsv" else ",", float_format="%.9g")
        paths[m] = dest
    return paths


def to_mudata(c: Completion, feature_names: Mapping[str, list], fill: str | int = "mean"):
    """The completion as a :class:`mudata.MuData`, scverse conventions:

    - ``mod[m].X``: f32[N, D_m], observed rows exactly, imputed rows by ``fill`` (replicate mean
      or one replicate);
    - ``mod[m].obs["imputed"]``: bool, the rows that were imputed;
    - ``mod[m].layers["replicate_<r>"]``: each replicate in full (observed rows repeated);
    - ``.obs``: the cohort's clinical labels; ``.uns["cgjax"]``: the provenance.
    """
    import anndata
    import mudata

    ids = pd.Index(c.cohort.sample_ids.astype(str))
    mods = {}
    for m in c.replicates:
        ad = anndata.AnnData(X=c.values(m, fill), obs=pd.DataFrame({"imputed": c.imputed[m]}, index=ids),
                             var=pd.DataFrame(index=pd.Index([str(n) for n in feature_names[m]])))
        for r in range(c.n_replicates):
            ad.layers[f"replicate_{r}"] = c.replicates[m][r]
        mods[m] = ad
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "var_names are not unique" across modalities
        mdata = mudata.MuData(mods)
        clin = c.cohort.clinical.copy()
        clin.index = ids
        for col in clin.columns:
            v = clin[col]
            mdata.obs[col] = pd.Categorical(v.where(v.notna(), None)) if v.dtype == object else v
        mdata.uns["cgjax"] = {k: ("" if v is None else v) for k, v in {**c.provenance, "fill": str(fill)}.items()}
    return mdata


def write_h5mu(c: Completion, f, feature_names: Mapping[str, list], fill: str | int = "mean") -> Path:
    """Write :func:`to_mudata` to the ``.h5mu`` file ``f`` (through a temporary name)."""
    f = Path(f)
    with atomic_file(f, suffix=".h5mu") as tmp, warnings.catch_warnings():  # mudata picks the format from the suffix
        warnings.simplefilter("ignore")
        to_mudata(c, feature_names, fill).write(tmp)
    return f
