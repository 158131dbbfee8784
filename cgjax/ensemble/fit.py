"""A trained set of models for one cohort: build, train, select, and sample from it.

For modalities {m_1..m_P} cgjax trains
  * a single-condition model ``<target>_from_<source>`` for every ordered pair (P (P - 1) models),
    on the train rows that have both (docs/reference.md 3.4), and
  * a multi-condition model ``<target>_from_multi`` per target, on the rows that have the target,
    its absent conditions zeroed and masked (docs/reference.md 3.4, masks aligned with their rows).
Models of the same shape form a *group* and are trained together as one stacked program
(:mod:`cgjax.diffusion.train`). Everything here works in the standardised space of the train
scalers; :mod:`cgjax.pipeline` converts to and from the cohort's original scale.

At sampling time, for a target and per-row sets of given modalities:
  * ``coherent``: the single models of the target whose condition the row has, combined by
    Coherent Denoising with per-row renormalised weights (:mod:`cgjax.sampling.coherent`);
  * ``multi``: the target's multi-condition model with per-row condition masks;
  * ``single``: per row, the single model with the best validation score among those available.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from cgjax import distributed
from cgjax.diffusion import denoiser
from cgjax.diffusion.denoiser import ArchConfig
from cgjax.diffusion.schedule import ScheduleConfig, make_schedule
from cgjax.diffusion.train import (GroupData, TrainConfig, TrainState, init_state, make_inference_fn,
                                   make_train_fn)
from cgjax.errors import CgjaxError
from cgjax.sampling.coherent import RejectionConfig, make_sampler
from cgjax.sampling.options import SampleOptions
from cgjax.sampling.weights import best_available, ensemble_weights
from cgjax.scoring.metrics import energy_score


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One denoiser: the target it generates and the condition modalities it reads, in slot order."""

    target: str
    conds: tuple[str, ...]
    kind: str  # "single" or "multi"

    @property
    def name(self) -> str:
        return f"{self.target}_from_{self.conds[0] if self.kind == 'single' else 'multi'}"


@dataclasses.dataclass
class Group:
    """Stacked models of one shape. ``params``/``batch_stats`` have a leading axis over ``specs``."""

    name: str
    dcfg: denoiser.DenoiserConfig
    specs: tuple[ModelSpec, ...]
    true_cond_dims: tuple[tuple[int, ...], ...]
    params: dict | None = None
    batch_stats: list | None = None

    def member(self, idx: Sequence[int]):
        """(params, batch_stats) of the given members, stacked in that order."""
        idx = np.asarray(idx)
        take = lambda a: a[idx]
        return jax.tree.map(take, self.params), jax.tree.map(take, self.batch_stats)


@dataclasses.dataclass
class ModelSet:
    """Everything needed to sample: models, schedule, scalers, validation scores."""

    modalities: tuple[str, ...]
    dims: dict[str, int]
    arch: ArchConfig
    schedule_cfg: ScheduleConfig
    train_cfg: TrainConfig
    groups: dict[str, Group]
    scalers: dict  # modality -> {"mean": [...], "std": [...]} in the original feature scale
    feature_names: dict[str, list]
    val_metrics: dict[str, dict] = dataclasses.field(default_factory=dict)  # model name -> scores
    split: dict | None = None  # the train/val/test split trained on (cgjax.data.split.split_record)

    def find(self, name: str) -> tuple[Group, int]:
        for g in self.groups.values():
            for i, s in enumerate(g.specs):
                if s.name == name:
                    return g, i
        raise CgjaxError(f"no model named '{name}' in this model set")

    def val_score(self, name: str) -> float:
        """The selection score of a model (validation MSE of its samples, by default)."""
        m = self.val_metrics.get(name, {})
        return float(m.get("mse", math.nan))


def model_specs(modalities: Sequence[str]) -> list[ModelSpec]:
    """Single models for every ordered pair, then one multi model per target (conds in cohort order)."""
    singles = [ModelSpec(t, (s,), "single") for t in modalities for s in modalities if s != t]
    multis = [ModelSpec(t, tuple(s for s in modalities if s != t), "multi") for t in modalities]
    return singles + multis


def build_groups(modalities: Sequence[str], dims: Mapping[str, int], arch: ArchConfig) -> dict[str, Group]:
    """Group models by (kind, target width, number of conditions); pad condition slots to the widest."""
    buckets: dict[tuple, list[ModelSpec]] = {}
    for spec in model_specs(modalities):
        buckets.setdefault((spec.kind, dims[spec.target], len(spec.conds)), []).append(spec)
    groups = {}
    for (kind, F, K), specs in buckets.items():
        true_dims = tuple(tuple(dims[c] for c in s.conds) for s in specs)
        slot_dims = tuple(max(d[k] for d in true_dims) for k in range(K))
        dcfg = denoiser.DenoiserConfig(x_dim=F, cond_dims=slot_dims, **arch.to_dict())
        name = kind if sum(1 for b in buckets if b[0] == kind) == 1 else f"{kind}_F{F}_K{K}"
        groups[name] = Group(name, dcfg, tuple(specs), true_dims)
    return groups


# ---- arrays -----------------------------------------------------------------------------------

def _pad(x: np.ndarray, width: int) -> np.ndarray:
    return np.pad(x, ((0, 0), (0, width - x.shape[1]))) if x.shape[1] < width else x


def group_arrays(group: Group, data: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray]) -> GroupData:
    """Training arrays of a group from scaled modality arrays (absent rows may hold anything)."""
    x0, conds, present, valid = [], [], [], []
    for spec in group.specs:
        tgt_mask = masks[spec.target]
        x0.append(np.where(tgt_mask[:, None], data[spec.target], 0.0))
        cs, ps = [], []
        for k, c in enumerate(spec.conds):
            ps.append(masks[c])
            cs.append(_pad(np.where(masks[c][:, None], data[c], 0.0), max(group.dcfg.cond_dims)))
        conds.append(np.stack(cs, axis=1))
        present.append(np.stack(ps, axis=1))
        valid.append(tgt_mask & masks[spec.conds[0]] if spec.kind == "single" else tgt_mask)
    as_f32 = lambda xs: jnp.asarray(np.stack(xs), jnp.float32)
    return GroupData(as_f32(x0), as_f32(conds), jnp.asarray(np.stack(present)), jnp.asarray(np.stack(valid)))


# ---- validation ---------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _member_sampler(dcfg: denoiser.DenoiserConfig, schedule_cfg: ScheduleConfig):
    """jit(vmap over models) of the plain (no-ensemble, no-rejection) sampler: every model of a
    group samples its own validation conditions in one program."""
    sampler = make_sampler(dcfg, make_schedule(schedule_cfg), rejection=RejectionConfig(enabled=False))

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


# ---- sampling -----------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _ensemble_sampler(dcfg, schedule_cfg, rejection, return_distance, solver):
    return make_sampler(dcfg, make_schedule(schedule_cfg), rejection=rejection, return_distance=return_distance,
                        solver=solver)


@dataclasses.dataclass
class Imputation:
    """Samples of one target: x f32[R, N, F] (standardised scale), attempts i32[R, N], passed bool[R, N]."""

    target: str
    method: str
    x: np.ndarray
    attempts: np.ndarray
    passed: np.ndarray
    frac_incoherent: np.ndarray
    distance: np.ndarray | None = None


def _target_inputs(ms: ModelSet, target: str, given: Mapping[str, np.ndarray], options: SampleOptions):
    """Validate a sampling request; return (group, members, conds, masks, weights, N) for its N rows."""
    method, weighting, unconditional = options.method, options.weighting, options.unconditional
    if target not in ms.modalities:
        raise CgjaxError(f"unknown target modality '{target}'; the models know {list(ms.modalities)}")
    for m in given:
        if m not in ms.modalities:
            raise CgjaxError(f"unknown modality '{m}'; the models know {list(ms.modalities)}")
        if given[m].ndim != 2 or given[m].shape[1] != ms.dims[m]:
            raise CgjaxError(f"modality '{m}' has {given[m].shape[-1]} features but the models expect {ms.dims[m]}")
    sources = [m for m in ms.modalities if m != target]
    n_rows = {len(v) for m, v in given.items() if m != target}
    if len(n_rows) > 1:
        raise CgjaxError(f"given modalities have different row counts: {sorted(n_rows)}")
    N = n_rows.pop() if n_rows else 0
    if N == 0:
        raise CgjaxError(f"no rows to sample for target '{target}'")
    avail = np.stack([~np.isnan(given[s]).all(axis=1) if s in given else np.zeros(N, bool) for s in sources], 1)
    if unconditional:
        avail[:] = method != "multi"
    elif not avail.any(axis=1).all():
        i = int(np.flatnonzero(~avail.any(axis=1))[0])
        raise CgjaxError(f"row {i} has none of {sources} to condition '{target}' on; "
                         "ask for unconditional generation explicitly")
    filled = {s: np.nan_to_num(given[s], nan=0.0).astype(np.float32) if s in given and not unconditional
              else np.zeros((N, ms.dims[s]), np.float32) for s in sources}

    if method == "multi":
        group, idx = ms.find(f"{target}_from_multi")
        spec = group.specs[idx]
        conds = np.stack([_pad(filled[c] * avail[:, sources.index(c), None], max(group.dcfg.cond_dims))
                          for c in spec.conds], 1)[:, None]  # [N, 1, K, C]
        masks = np.stack([avail[:, sources.index(c)] for c in spec.conds], 1)[:, None].astype(np.float32)
        weights = np.ones((N, 1), np.float32)
        members = [idx]
    else:
        names = [f"{target}_from_{s}" for s in sources]
        located = [ms.find(n) for n in names]
        group = located[0][0]
        members = [i for _, i in located]
        conds = np.stack([_pad(filled[s], max(group.dcfg.cond_dims)) for s in sources], 1)[:, :, None]  # [N, M, 1, C]
        masks = np.ones(conds.shape[:3], np.float32)
        scores = np.array([ms.val_score(n) for n in names])
        if method == "single":  # one-hot on the best available model of each row
            weights = best_available(scores, avail, names=names)
        else:
            weights = ensemble_weights(scores, weighting, avail, names=names)
    return group, members, conds.astype(np.float32), masks.astype(np.float32), weights.astype(np.float32), N


def iter_sample_target(ms: ModelSet, target: str, given: Mapping[str, np.ndarray],
                       options: SampleOptions = SampleOptions(), *, key=None, return_distance: bool = False,
                       row_offset: int = 0, n_total: int | None = None, mesh=None,
                       flat_range: tuple[int, int] | None = None):
    """The samples of :func:`sample_target` chunk by chunk, without holding them all.

    The R x N requested samples (R = ``options.replicates``) are numbered replicate-major (flat
    index i = k N + r for replicate k of row r). Yields ``(lo, hi, chunk)`` for consecutive flat
    ranges covering ``flat_range`` (default all of them), where ``chunk`` is an :class:`Imputation`
    whose arrays have a leading axis of hi - lo flat rows (``x`` f32[hi - lo, F], ...). Every chunk
    has the same padded shape (one compilation) of at most ``options.max_batch`` rows (default:
    :func:`cgjax.distributed.default_max_batch` for the device), rounded up to a multiple of the mesh
    size, and is split over ``mesh`` when given. The samples are those of one big batch: each keeps
    its global row id.
    """
    method, rejection, solver = options.method, options.rejection, options.solver
    group, members, conds, masks, weights, N = _target_inputs(ms, target, given, options)
    used = np.flatnonzero(weights.any(axis=0))
    if len(used) < len(members):
        # a member no row uses (weight 0 everywhere: "single", or a condition absent from the whole
        # batch) would cost a forward pass per step and change nothing (its pairs have weight 0)
        members = [members[i] for i in used]
        conds, masks, weights = conds[:, used], masks[:, used], weights[:, used]
    R = options.replicates
    total = R * N
    lo, hi = (0, total) if flat_range is None else (int(flat_range[0]), int(flat_range[1]))
    if not 0 <= lo <= hi <= total:
        raise CgjaxError(f"flat range [{lo}, {hi}) outside the {total} samples")
    n_total = N + row_offset if n_total is None else n_total
    key = jax.random.PRNGKey(options.seed) if key is None else key
    params, stats = group.member(members)
    sampler = _ensemble_sampler(group.dcfg, ms.schedule_cfg, rejection if method == "coherent" else
                                dataclasses.replace(rejection, enabled=False), return_distance, solver)
    n_dev = 1 if mesh is None else mesh.size
    max_batch = options.max_batch
    if max_batch is None:
        n_steps = (solver.steps or ms.schedule_cfg.timesteps) if return_distance else 0
        max_batch = distributed.default_max_batch(group.dcfg, len(members), n_steps=n_steps,
                                                  return_distance=return_distance)
    size = distributed.round_up(min(max_batch, max(hi - lo, 1)), n_dev)
    for a, b in distributed.chunk_ranges(lo, hi, size):
        flat = np.arange(a, b)
        k, r = flat // N, flat % N
        row_ids = (k * n_total + row_offset + r).astype(np.int32)
        res = distributed.sample_sharded(sampler, mesh, params, stats, key, conds[r], masks[r], weights[r],
                                         row_ids, size=size)
        yield a, b, Imputation(target, method, res.x0, res.attempts, res.passed, res.frac_incoherent, res.distance)


def sample_target(ms: ModelSet, target: str, given: Mapping[str, np.ndarray],
                  options: SampleOptions = SampleOptions(), *, key=None, return_distance: bool = False,
                  row_offset: int = 0, n_total: int | None = None, mesh=None) -> Imputation:
    """Draw ``options.replicates`` samples of ``target`` for N rows from whatever modalities each row has.

    given: modality -> f32[N, D] in the standardised scale, NaN rows where the row lacks it
      (a modality left out of ``given`` is absent for every row; the target itself is ignored).
    options: how to sample (:class:`cgjax.sampling.options.SampleOptions`); with
      ``options.unconditional``, sample with no condition at all (multi: every condition masked;
      coherent and single: the single models fed all-zero conditions, as the reference does,
      docs/reference.md 5.7).
    key: overrides ``options.seed``.
    row_offset, n_total: index of the first row within, and size of, the whole batch these rows are a
      chunk of, so that every chunk draws the same noise as the whole batch would (row r of
      replicate k has id k * n_total + row_offset + r).
    mesh: a :class:`jax.sharding.Mesh` (:func:`cgjax.distributed.make_mesh`) to split the rows over
      its devices (batches padded to a multiple of its size, parameters replicated).
    """
    out = None
    for a, b, chunk in iter_sample_target(ms, target, given, options, key=key, return_distance=return_distance,
                                          row_offset=row_offset, n_total=n_total, mesh=mesh):
        fields = (chunk.x, chunk.attempts, chunk.passed, chunk.frac_incoherent, chunk.distance)
        if out is None:
            total = options.replicates * (len(next(v for m, v in given.items() if m != target)))
            out = [None if f is None else np.empty((total, *f.shape[1:]), f.dtype) for f in fields]
        for o, f in zip(out, fields):
            if o is not None:
                o[a:b] = f
    R = options.replicates
    shape = lambda a: None if a is None else a.reshape(R, -1, *a.shape[1:])
    return Imputation(target, options.method, *(shape(a) for a in out))


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
        states[name] = init_state(jax.random.fold_in(key, gi), g.dcfg, g.true_cond_dims, train_cfg)
        best[name] = np.full(len(g.specs), np.inf)
    ms = ModelSet(tuple(modalities), dict(dims), arch, schedule_cfg, train_cfg, groups, scalers,
                  {m: list(v) for m, v in feature_names.items()})
    return TrainingRun(ms, states, best, [])


def train_model_set(run: TrainingRun, train_data, train_masks, val_data, val_masks, *,
                    progress: bool = True, on_validation=None) -> TrainingRun:
    """Train every group up to ``train_cfg.epochs``, validating every ``eval_every`` epochs and keeping
    each model's best parameters by ``train_cfg.select_by``. ``on_validation(run)`` is called after
    each validation (the CLI writes a checkpoint there, so a killed run loses at most one period).
    A run restored from a checkpoint continues from its ``epoch``."""
    ms, tcfg = run.model_set, run.model_set.train_cfg
    schedule = make_schedule(ms.schedule_cfg)
    key = jax.random.PRNGKey(tcfg.seed)
    prepared = {}
    for name, g in ms.groups.items():
        data = group_arrays(g, train_data, train_masks)
        spe = steps_per_epoch(data, tcfg.batch_size)
        multi = g.specs[0].kind == "multi"
        prepared[name] = (data, group_arrays(g, val_data, val_masks), spe,
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
