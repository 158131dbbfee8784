"""Cohort-level workflows: train a model set on a cohort, and impute a cohort's missing modalities.

These wire the library together for the CLI and the experiment scripts: split and scaling
(:mod:`cgjax.data`), grouped training (:mod:`cgjax.ensemble`), checkpoints (:mod:`cgjax.checkpoint`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import jax
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cgjax import checkpoint, distributed, output
from cgjax.data import (Cohort, Scalers, align_features, apply_scalers, check_modalities, fit_scalers,
                        invert_scalers)
from cgjax.data.split import split_record
from cgjax.diffusion.anchor import FITTED, components as anchor_components
from cgjax.diffusion.denoiser import ArchConfig
from cgjax.diffusion.schedule import ScheduleConfig
from cgjax.diffusion.train import TrainConfig
from cgjax.ensemble import Imputation, ModelSet, iter_sample_target, new_training_run, train_model_set
from cgjax.ensemble.choose import choose_per_model, choose_residual_gain
from cgjax.errors import CgjaxError, CheckpointError, CohortError
from cgjax.sampling.options import SampleOptions


def split_and_scale(cohort: Cohort, *, split_seed: int = 42, record: bool = False):
    """Split (unless the cohort fixes its own split), fit scalers on train, and return the scaled
    train and validation cohorts with the scalers (and, with ``record``, the split's description
    :func:`cgjax.data.split.split_record`, stored in checkpoints)."""
    cohort, rec = split_record(cohort, seed=split_seed)
    counts = cohort.clinical["split"].value_counts()
    if counts.get("train", 0) == 0:
        raise CohortError(f"{cohort.source}: the training split is empty")
    if counts.get("val", 0) == 0:
        raise CohortError(f"{cohort.source}: the validation split is empty (it is drawn from complete samples "
                          "only; the cohort needs more samples that have every modality)")
    train, val = cohort.split("train"), cohort.split("val")
    scalers = fit_scalers(train)
    scaled = apply_scalers(train, scalers), apply_scalers(val, scalers), scalers
    return (*scaled, rec) if record else scaled


def train(cohort: Cohort, out: str | Path | None, *, arch: ArchConfig = ArchConfig(),
          schedule_cfg: ScheduleConfig = ScheduleConfig(), train_cfg: TrainConfig = TrainConfig(),
          resume: bool = True, progress: bool = True, split_seed: int = 42,
          preset: dict | None = None) -> ModelSet:
    """Train every single- and multi-condition model of ``cohort``; checkpoint to ``out`` at every
    validation. With ``resume`` and a checkpoint already at ``out`` from the same configuration,
    training continues from it.

    ``preset``: how the configuration was chosen (``cgjax train``'s ``{"name", "overridden_by"}``),
    recorded in the checkpoint's metadata by every save, so an interrupted run's checkpoint has it
    from its first validation on. A resumed run records a new one before training (it may have
    nothing left to train), and keeps the checkpoint's own when given None."""
    if out is not None:  # before any work: never train for an hour and then find --out unwritable
        checkpoint.check_output(out)
    if arch.anchor == "auto":
        return _train_anchor_auto(cohort, out, arch=arch, schedule_cfg=schedule_cfg, train_cfg=train_cfg,
                                  resume=resume, progress=progress, split_seed=split_seed, preset=preset)
    train_c, val_c, scalers, split = split_and_scale(cohort, split_seed=split_seed, record=True)
    run = None
    if out is not None and resume and (Path(out) / checkpoint.META_FILE).exists():
        try:
            run = checkpoint.load_run(out)
        except CheckpointError as e:
            raise CheckpointError(f"{e}; cannot resume from it: choose another --out or pass --no-resume to "
                                  "overwrite it") from None
        if run is not None:
            ms = run.model_set
            post_hoc = {"epochs": None, "residual_gains": None}  # more epochs, or gains chosen after training
            same = (ms.arch == arch and ms.schedule_cfg == schedule_cfg and ms.dims == train_c.dims()
                    and (ms.split is None or ms.split == split)
                    and ms.train_cfg.to_dict() | post_hoc == train_cfg.to_dict() | post_hoc)
            if not same:
                raise CgjaxError(f"{out}: holds a checkpoint trained with another configuration or cohort; "
                                 "choose another --out or pass --no-resume to overwrite it")
            ms.train_cfg = train_cfg  # more epochs may be asked for
            stored = checkpoint.read_meta(out).get("preset")
            if preset is None:
                preset = stored
            elif preset != stored:
                checkpoint.write_preset(out, preset)
            if progress:
                print(f"resuming from {out} at epoch {run.epoch}")
    if run is None:
        run = new_training_run(train_c.data, train_c.masks, modalities=train_c.modalities, dims=train_c.dims(),
                               arch=arch, schedule_cfg=schedule_cfg, train_cfg=train_cfg,
                               scalers=scalers.to_dict(), feature_names=train_c.feature_names)
        run.model_set.split = split
    on_validation = (lambda r: checkpoint.save(out, r.model_set, r, preset=preset)) if out is not None else None
    run = train_model_set(run, train_c.data, train_c.masks, val_c.data, val_c.masks, progress=progress,
                          on_validation=on_validation)
    if arch.anchor == "mixture" and progress:
        print(_mixture_summary(run.model_set))
    if train_cfg.residual_gains and arch.anchor in FITTED:  # without an anchor: nothing to scale
        _choose_residual_gains(run, val_c, progress)
        if on_validation is not None:
            on_validation(run)
    return run.model_set


def _mixture_summary(ms: ModelSet) -> str:
    """One line on where a mixture anchor kept subtypes: the patterns with more than one component,
    per model, and each such model's components with every condition present."""
    used = {s.name: u for g in ms.groups.values() for s, u in zip(g.specs, anchor_components(g.params["anchor"]))}
    mixed = {name: u for name, u in used.items() if (u > 1).any()}
    n_patterns = sum(len(u) for u in used.values())
    if not mixed:
        return (f"arch.anchor = mixture: no pattern of the {len(used)} models' anchors gained enough from subtypes; "
                "every anchor is the Gaussian anchor's")
    return (f"arch.anchor = mixture: subtypes kept in {sum(int((u > 1).sum()) for u in mixed.values())} of "
            f"{n_patterns} patterns, in {len(mixed)} of {len(used)} models (components with every condition "
            "present): " + ", ".join(f"{k} {int(u[-1])}" for k, u in mixed.items()))


def _choose_residual_gains(run, val_c: Cohort, progress: bool) -> None:
    """``train.residual_gains``: per model, the gain on the network's residual that validates best
    (:func:`cgjax.ensemble.choose.choose_residual_gain`), for the models that have none yet (a model
    that kept its gain through a resumed run is not scaled twice). The scores kept for selection
    become the chosen ones, so that more epochs must beat the scaled model."""
    ms = run.model_set
    todo = {s.name for g in ms.groups.values() for s in g.specs if "residual_gain" not in ms.val_metrics.get(s.name, {})}
    if not todo:
        return
    chosen = choose_residual_gain(ms, val_c.data, val_c.masks, ms.train_cfg.residual_gains, skip=set(ms.val_metrics) - todo)
    crit = ms.train_cfg.select_by
    for name, g in ms.groups.items():
        run.best_scores[name] = np.array([ms.val_metrics[s.name][crit] for s in g.specs])
    if progress:
        counts = {gain: sum(v == gain for v in chosen.values()) for gain in ms.train_cfg.residual_gains}
        print("train.residual_gains: models per gain on the network's residual (validation "
              f"{crit}): " + ", ".join(f"{gain:g}: {n}" for gain, n in counts.items()))


def anchor_parts(out: str | Path) -> dict[str, Path]:
    """Where ``arch.anchor = "auto"`` keeps its two model sets: beside ``out``, as
    ``<out>.anchor-none`` and ``<out>.anchor-gaussian`` (each a resumable checkpoint)."""
    out = Path(out)
    return {a: out.with_name(f"{out.name}.anchor-{a}") for a in ("none", "gaussian")}


def _train_anchor_auto(cohort: Cohort, out, *, arch: ArchConfig, preset: dict | None, **kw) -> ModelSet:
    """``arch.anchor = "auto"``: train the model set without and with the Gaussian anchor (twice the
    time; each resumable in :func:`anchor_parts`) and keep, per model, the one with the lower
    validation score (:func:`cgjax.ensemble.choose.choose_per_model`). The combined set is written
    to ``out``, which alone is what imputation needs. Both sets are re-scored on the validation rows
    with one noise key for the choice."""
    parts = anchor_parts(out) if out is not None else {"none": None, "gaussian": None}
    sets = {}
    for a, where in parts.items():
        if kw["progress"]:
            print(f"arch.anchor = auto: training with anchor '{a}'" + (f" in {where}" if where else ""))
        sets[a] = train(cohort, where, arch=dataclasses.replace(arch, anchor=a), preset=preset, **kw)
    _, val_c, _ = split_and_scale(cohort, split_seed=kw["split_seed"])
    ms, chosen = choose_per_model(sets["gaussian"], sets["none"], val_c.data, val_c.masks)
    if kw["progress"]:
        kept = sum(a == "gaussian" for a in chosen.values())
        print(f"arch.anchor = auto: the anchor is kept by {kept} of {len(chosen)} models (validation "
              f"{ms.train_cfg.select_by})")
    if out is not None:
        checkpoint.save(out, ms, preset=preset)
    return ms


def scaled_inputs(ms: ModelSet, cohort: Cohort) -> dict[str, np.ndarray]:
    """The cohort's modalities in the models' standardised space, NaN rows where absent. Checks
    every modality against the models (name and width); modalities the models know but the cohort
    lacks are simply absent for every row."""
    where = f"models trained on {list(ms.modalities)}"
    check_modalities(cohort, ms.dims, where=where)
    cohort = align_features(cohort, ms.feature_names, where=where)  # match columns by name, not position
    scalers = Scalers.from_dict(ms.scalers)
    out = {}
    for m in ms.modalities:
        if m in cohort.data:
            mu, sd = scalers[m]
            out[m] = np.where(cohort.masks[m][:, None], (cohort.data[m] - mu) / sd, np.nan).astype(np.float32)
    return out


def impute(ms: ModelSet, cohort: Cohort, options: SampleOptions = SampleOptions(), *,
           targets: Sequence[str] | None = None, progress: bool = True, mesh=None,
           out_dir: str | Path | None = None, process_index: int | None = None,
           process_count: int | None = None) -> dict:
    """Fill every missing modality of every sample from the modalities it has, sampled as
    ``options`` says (:class:`cgjax.sampling.options.SampleOptions`; target t uses the seed
    ``options.seed + 1000 i`` for its index i among the models' modalities).

    Returns, per modality with at least one missing sample, a DataFrame with columns ``sample_id``,
    ``replicate``, then the features in the cohort's original scale (replicate-major rows), plus
    ``attempts`` and ``passed`` of the coherence rejection. Samples with no modality the models know
    are an error.

    Scale-out (:mod:`cgjax.distributed`; none of it changes the samples):
      options.max_batch: (sample, replicate) pairs per compiled call (default: from the device's memory).
      mesh: split each call's rows over the devices of this :class:`jax.sharding.Mesh`
        (``"auto"``: every local device, when there are several).
      out_dir: stream the tables to ``out_dir/<modality>.parquet`` chunk by chunk instead of returning
        DataFrames (host memory: one chunk); returns modality -> path. With several processes
        (``process_count``, default ``jax.process_count()``) each samples and writes only its own
        contiguous block of the replicate-major rows to a part file; after a barrier process 0
        concatenates the parts in order into ``<modality>.parquet``.
    """
    if mesh == "auto":
        mesh = distributed.make_mesh() if len(jax.local_devices()) > 1 else None
    multi = process_index is not None or process_count is not None
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    if count > 1 and out_dir is None:
        raise CgjaxError("with several processes, impute writes part files: give out_dir")
    given = scaled_inputs(ms, cohort)
    scalers = Scalers.from_dict(ms.scalers)
    N = cohort.n_samples
    present = {m: (~np.isnan(given[m]).all(axis=1)) if m in given else np.zeros(N, bool) for m in ms.modalities}
    none = ~np.any(np.stack(list(present.values()), 1), axis=1)
    if none.any():
        raise CohortError(f"{cohort.source}: sample '{cohort.sample_ids[np.flatnonzero(none)[0]]}' has none of the "
                          f"modalities the models know ({list(ms.modalities)})")
    targets = [t for t in (targets or ms.modalities) if (~present[t]).any()]
    out = {}
    for i, t in enumerate(tqdm(targets, desc=f"imputing ({options.method})", disable=not progress)):
        rows = np.flatnonzero(~present[t])
        n = len(rows)
        flat = distributed.process_range(options.replicates * n, index, count)
        chunks = iter_sample_target(ms, t, {m: g[rows] for m, g in given.items() if m != t},
                                    dataclasses.replace(options, seed=options.seed + 1000 * ms.modalities.index(t)),
                                    mesh=mesh, flat_range=flat)

        def frame(a, b, res):
            k, r = np.arange(a, b) // n, rows[np.arange(a, b) % n]
            df = pd.DataFrame(invert_scalers(t, res.x, scalers), columns=ms.feature_names[t])
            df.insert(0, "replicate", k)
            df.insert(0, "sample_id", cohort.sample_ids[r])
            df["attempts"] = res.attempts
            df["passed"] = res.passed
            return df

        if out_dir is None:
            frames = [frame(a, b, res) for a, b, res in chunks]
            out[t] = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        else:
            out[t] = output.write_parts(out_dir, t, (frame(a, b, res) for a, b, res in chunks), index, count,
                                        frame(0, 0, _empty_chunk(ms, t)), merge=not multi)
    if out_dir is not None and count > 1 and not multi:  # real processes: merge once all parts are there
        distributed.sync("cgjax-impute-parts")
        if index == 0:
            out = {t: output.merge_parts(out_dir, t, count) for t in out}
        distributed.sync("cgjax-impute-merged")
    return out


def _empty_chunk(ms: ModelSet, t: str):
    return Imputation(t, "", np.zeros((0, ms.dims[t]), np.float32), np.zeros(0, np.int32), np.zeros(0, bool),
                      np.zeros(0, np.float32))
