"""Training a model set: the training loop over its groups, validation, and per-model selection of
the best parameters."""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from cgjax.diffusion import denoiser
from cgjax.diffusion.denoiser import ArchConfig
from cgjax.diffusion.schedule import ScheduleConfig, make_schedule
from cgjax.diffusion.train import (GroupData, TrainConfig, TrainState, fit_anchor, init_state,
                                   make_inference_fn, make_train_fn)
from cgjax.ensemble.arrays import group_arrays
from cgjax.ensemble.spec import Group, ModelSet, build_groups
from cgjax.errors import CgjaxError
from cgjax.sampling.algebra import make_model
from cgjax.sampling.coherent import RejectionConfig, make_sampler
from cgjax.scoring.metrics import energy_score


# ---- validation ---------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _member_sampler(dcfg: denoiser.DenoiserConfig, schedule_cfg: ScheduleConfig):
    """jit(vmap over models) of the plain (no-ensemble, no-rejection) sampler: every model of a
    group samples its own validation conditions in one program."""
    schedule = make_schedule(schedule_cfg)
    sampler = make_sampler(make_model(dcfg, schedule.timesteps), schedule, rejection=RejectionConfig(enabled=False))

    def one(params, batch_stats, key, conds, masks, row_ids):
        add = lambda a: a[None]
        n = conds.shape[0]
        res = sampler(jax.tree.map(add, params), jax.tree.map(add, batch_stats), key,
                      conds[:, None], masks[:, None], jnp.ones((n, 1), jnp.float32), row_ids)
        return res.x0

    return jax.jit(jax.vmap(one, in_axes=(0, 0, None, 0, 0, None)))


def validate_group(group: Group, schedule_cfg: ScheduleConfig, val: GroupData, replicates: int, key):
    """Sample every model's validation rows ``replicates`` times (all conditions present, as the
    reference validates, docs/reference.md 3.2) and score the samples. Returns dict of f64[M] arrays:
    mse (mean squared error over replicates, rows and features; the reference's selection score),
    energy (mean energy score per row over the replicates; only with replicates >= 2), r2 (pooled R2
    of the samples)."""
    M, N = val.x0.shape[:2]
    conds = jnp.tile(val.conds, (1, replicates, 1, 1))
    masks = jnp.ones(conds.shape[:3], jnp.float32)
    row_ids = jnp.arange(N * replicates, dtype=jnp.int32)
    x = np.asarray(_member_sampler(group.dcfg, schedule_cfg)(group.params, group.batch_stats, key,
                                                              conds, masks, row_ids))
    x = x.reshape(M, replicates, N, -1)
    truth = np.asarray(val.x0)
    out = {"mse": [], "energy": [], "r2": []} if replicates >= 2 else {"mse": [], "r2": []}
    for m in range(M):
        err = (x[m] - truth[m][None]) ** 2
        out["mse"].append(float(err.mean()))
        if "energy" in out:
            out["energy"].append(float(energy_score(x[m].astype(np.float64), truth[m].astype(np.float64)).mean()))
        ss_tot = float(((truth[m] - truth[m].mean()) ** 2).sum())
        out["r2"].append(float(1.0 - err.sum(axis=(1, 2)).mean() / ss_tot))
    return {k: np.asarray(v) for k, v in out.items()}


# ---- training -----------------------------------------------------------------------------------

@dataclasses.dataclass
class TrainingRun:
    """The state of a training run, enough to resume it: per group the live TrainState, the best
    parameters so far and their scores, and the validation history."""

    model_set: ModelSet  # groups hold the *best* params so far
    states: dict[str, TrainState]
    best_scores: dict[str, np.ndarray]  # group -> f64[M] selection score of the kept params
    history: list  # one record per validation: {"epoch", "model", "loss", "mse", "energy", "r2"}
    epoch: int = 0


def steps_per_epoch(data: GroupData, batch_size: int) -> int:
    """ceil(n_valid / batch_size) of the median model of the group."""
    n_valid = np.asarray(data.valid).sum(axis=1)
    return max(1, int(math.ceil(float(np.median(n_valid)) / batch_size)))


def planned_epochs(tcfg: TrainConfig, spes) -> int:
    """The epochs a run trains: ``tcfg.epochs``, raised so that the group with the fewest steps per
    epoch (``spes``, one per group) takes at least ``tcfg.min_steps`` optimiser steps."""
    if tcfg.min_steps <= 0:
        return tcfg.epochs
    return max(tcfg.epochs, math.ceil(tcfg.min_steps / min(spes)))


def new_training_run(train_data: Mapping[str, np.ndarray], train_masks: Mapping[str, np.ndarray], *,
                     modalities: Sequence[str], dims: Mapping[str, int], arch: ArchConfig,
                     schedule_cfg: ScheduleConfig, train_cfg: TrainConfig, scalers: dict,
                     feature_names: Mapping[str, list]) -> TrainingRun:
    """Initialise every model of the cohort (untrained), grouped and stacked."""
    groups = build_groups(modalities, dims, arch)
    key = jax.random.PRNGKey(train_cfg.seed)
    states, best = {}, {}
    for gi, (name, g) in enumerate(groups.items()):
        data = group_arrays(g, train_data, train_masks)
        n_valid = np.asarray(data.valid).sum(axis=1)
        for spec, n in zip(g.specs, n_valid):
            if n < train_cfg.batch_size // 2 or n < 2:
                raise CgjaxError(f"model '{spec.name}' has only {int(n)} training rows with both its target and "
                                 f"condition(s); need at least {max(2, train_cfg.batch_size // 2)}")
        g.dcfg, fitted = fit_anchor(g.dcfg, g.true_cond_dims, data)  # a mixture's width is the fit's
        states[name] = init_state(jax.random.fold_in(key, gi), g.dcfg, g.true_cond_dims, train_cfg, fitted)
        best[name] = np.full(len(g.specs), np.inf)
    ms = ModelSet(tuple(modalities), dict(dims), arch, schedule_cfg, train_cfg, groups, scalers,
                  {m: list(v) for m, v in feature_names.items()})
    return TrainingRun(ms, states, best, [])


def train_model_set(run: TrainingRun, train_data, train_masks, val_data, val_masks, *,
                    progress: bool = True, on_validation=None) -> TrainingRun:
    """Train every group up to ``train_cfg.epochs`` (raised by ``min_steps``: :func:`planned_epochs`;
    the model set's ``train_cfg`` then records the epochs trained), validating every ``eval_every``
    epochs and keeping each model's best parameters by ``train_cfg.select_by``. ``on_validation(run)``
    is called after each validation (the CLI writes a checkpoint there, so a killed run loses at most
    one period). A run restored from a checkpoint continues from its ``epoch``."""
    ms, tcfg = run.model_set, run.model_set.train_cfg
    schedule = make_schedule(ms.schedule_cfg)
    key = jax.random.PRNGKey(tcfg.seed)
    data = {name: group_arrays(g, train_data, train_masks) for name, g in ms.groups.items()}
    spes = {name: steps_per_epoch(d, tcfg.batch_size) for name, d in data.items()}
    epochs = planned_epochs(tcfg, list(spes.values()))
    if epochs != tcfg.epochs:
        tcfg = ms.train_cfg = dataclasses.replace(tcfg, epochs=epochs)
    prepared = {}
    for name, g in ms.groups.items():
        spe = spes[name]
        multi = g.specs[0].kind == "multi"
        prepared[name] = (data[name], group_arrays(g, val_data, val_masks), spe,
                          make_train_fn(g.dcfg, schedule, tcfg, multi=multi, total_steps=tcfg.epochs * spe),
                          make_inference_fn(g.dcfg, schedule, tcfg, multi=multi))
    # progress in optimiser steps of every group, advanced after each compiled call (which is awaited
    # when the bar is shown, so that its rate and ETA are real); validations show in the postfix
    total = sum(tcfg.epochs * p[2] for p in prepared.values())
    done = lambda: sum(min(int(run.states[n].step), tcfg.epochs * p[2]) for n, p in prepared.items())
    bar = tqdm(total=total, initial=min(done(), total), desc="training", unit="step", disable=not progress)
    while run.epoch < tcfg.epochs:
        target_epoch = min(tcfg.epochs, (run.epoch // tcfg.eval_every + 1) * tcfg.eval_every)
        losses = {}
        for gi, (name, (data, val, spe, train_fn, _)) in enumerate(prepared.items()):
            calls = max(1, math.ceil((target_epoch * spe - int(run.states[name].step)) / tcfg.steps_per_call))
            gkey = jax.random.fold_in(key, gi)
            for _ in range(calls):
                run.states[name], loss = train_fn(run.states[name], data, gkey)
                if progress:
                    jax.block_until_ready(loss)
                    bar.update(min(done(), total) - bar.n)
                    bar.set_postfix_str(f"epoch {run.epoch}->{target_epoch}, group {name}", refresh=False)
            losses[name] = np.asarray(loss)
        run.epoch = target_epoch
        bar.set_postfix_str(f"epoch {run.epoch}, validating")
        _select(run, prepared, losses, jax.random.fold_in(key, 10_000 + run.epoch))
        bar.set_postfix_str(f"epoch {run.epoch}, val_mse "
                            f"{np.mean([h['mse'] for h in run.history[-len(ms.val_metrics):]]):.3f}")
        if on_validation is not None:
            on_validation(run)
    bar.close()
    return run


def _select(run: TrainingRun, prepared, losses, key):
    """Validate the current weights of every group (the live ones, or the moving average with its own
    BatchNorm statistics, :func:`cgjax.diffusion.train.make_inference_fn`); keep, per model, the
    better of current and best."""
    ms, tcfg = run.model_set, run.model_set.train_cfg
    for gi, (name, g) in enumerate(ms.groups.items()):
        data, _, _, _, inference = prepared[name]
        params, stats = inference(run.states[name], data, jax.random.fold_in(key, 1_000 + gi))
        live = dataclasses.replace(g, params=params, batch_stats=stats)
        scores = validate_group(live, ms.schedule_cfg, prepared[name][1], tcfg.val_replicates, key)
        crit = scores[tcfg.select_by]
        better = crit < run.best_scores[name]
        if g.params is None:  # first validation: nothing kept yet (never alias the live, donated buffers)
            g.params, g.batch_stats = live.params, live.batch_stats
        pick = lambda new, old: jnp.where(better.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)
        g.params = jax.tree.map(pick, live.params, g.params)
        g.batch_stats = jax.tree.map(pick, live.batch_stats, g.batch_stats)
        run.best_scores[name] = np.where(better, crit, run.best_scores[name])
        for m, spec in enumerate(g.specs):
            rec = {"epoch": run.epoch, "model": spec.name, "loss": float(losses[name][m]),
                   **{k: float(v[m]) for k, v in scores.items()}}
            run.history.append(rec)
            if better[m]:
                ms.val_metrics[spec.name] = {**{k: float(v[m]) for k, v in scores.items()}, "epoch": run.epoch}
