"""Sampling a target from a model set, chunk by chunk.

For a target and per-row sets of given modalities (all in the standardised space of the train
scalers; :mod:`cgjax.pipeline` converts to and from the cohort's original scale):
  * ``coherent``: the single models of the target whose condition the row has, combined by
    Coherent Denoising with per-row renormalised weights (:mod:`cgjax.sampling.weights`,
    :mod:`cgjax.sampling.coherent`);
  * ``multi``: the target's multi-condition model with per-row condition masks;
  * ``single``: per row, the single model with the best validation score among those available.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Mapping

import jax
import numpy as np

from cgjax import distributed
from cgjax.diffusion.schedule import make_schedule
from cgjax.ensemble.arrays import pad_columns
from cgjax.ensemble.spec import ModelSet
from cgjax.errors import CgjaxError
from cgjax.sampling.algebra import make_model
from cgjax.sampling.coherent import make_sampler
from cgjax.sampling.options import SampleOptions
from cgjax.sampling.weights import best_available, ensemble_weights


@functools.lru_cache(maxsize=None)
def _ensemble_sampler(dcfg, schedule_cfg, rejection, return_distance, solver, composition="average",
                      corrector_steps=0, corrector_snr=0.5, base_slots=None):
    schedule = make_schedule(schedule_cfg)
    return make_sampler(make_model(dcfg, schedule.timesteps), schedule, rejection=rejection,
                        return_distance=return_distance, solver=solver, composition=composition,
                        corrector_steps=corrector_steps, corrector_snr=corrector_snr, base_slots=base_slots)


def _anchored_problem(ms: ModelSet, target: str, group, members: list[int], sources: list[str]) -> str | None:
    """Why ``--composition anchored`` cannot combine the coherent members of ``target`` (indices
    ``members`` of ``group``) whose conditions are ``sources``, or None if it can: it needs the target's
    multi-condition model and a fitted anchor in every model (one that kept the plain network under
    ``--anchor auto`` has an all-zero anchor, and the composition would be silently wrong)."""
    name = f"{target}_from_multi"
    try:
        mgroup, idx = ms.find(name)
    except CgjaxError:
        return f"it takes the anchor of '{name}', which this model set lacks"
    for g, what in ((group, f"'{target}_from_{sources[0]}'"), (mgroup, f"'{name}'")):
        if g.dcfg.anchor == "none":
            return f"it needs models with an anchor, but {what} has none (trained with anchor = \"none\")"
    names = [f"{target}_from_{s}" for s in sources] + [name]
    # only the anchors' bases are read (an unfitted anchor is all zero), not the members' networks
    bases = [*np.asarray(group.params["anchor"]["basis"])[members], np.asarray(mgroup.params["anchor"]["basis"][idx])]
    unfitted = [n for n, b in zip(names, bases) if not np.any(b)]
    if unfitted:
        return f"it needs a fitted anchor in every model it combines, but {unfitted} kept the plain network (anchor all zero)"
    return None


def _base_anchor(ms: ModelSet, target: str, sources: list[str]):
    """For ``--composition anchored``: the anchor of ``target``'s multi-condition model (one model's
    arrays) and the slots of its conditions that ``sources`` (the coherent members' conditions, in
    order) fill, followed by its number of slots (:func:`cgjax.sampling.coherent.make_sampler`)."""
    mgroup, idx = ms.find(f"{target}_from_multi")
    conds = list(mgroup.specs[idx].conds)
    base = jax.tree.map(lambda a: a[idx], mgroup.params["anchor"])
    return base, tuple(conds.index(s) for s in sources) + (len(conds),)


def composition_for(ms: ModelSet, target: str, options: SampleOptions) -> str:
    """The composition ``options`` gives for ``target`` (``auto``: ``anchored`` where every model
    that can be combined for it, its single models and its multi model, has a fitted anchor, else
    ``average``). An explicit ``anchored`` that cannot be is a :class:`CgjaxError`."""
    composition = options.composition
    if options.method != "coherent" or composition not in ("auto", "anchored"):
        return "average" if composition == "auto" else composition
    if options.unconditional:
        return "average"  # auto only: SampleOptions refuses anchored without conditions
    sources = [m for m in ms.modalities if m != target]
    group, _ = ms.find(f"{target}_from_{sources[0]}")
    members = [ms.find(f"{target}_from_{s}")[1] for s in sources]
    problem = _anchored_problem(ms, target, group, members, sources)
    if problem is None:
        return "anchored"
    if composition == "anchored":
        raise CgjaxError(f"--composition anchored: {problem}; use --composition average")
    return "average"


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
        conds = np.stack([pad_columns(filled[c] * avail[:, sources.index(c), None], max(group.dcfg.cond_dims))
                          for c in spec.conds], 1)[:, None]  # [N, 1, K, C]
        masks = np.stack([avail[:, sources.index(c)] for c in spec.conds], 1)[:, None].astype(np.float32)
        weights = np.ones((N, 1), np.float32)
        members = [idx]
    else:
        names = [f"{target}_from_{s}" for s in sources]
        located = [ms.find(n) for n in names]
        group = located[0][0]
        members = [i for _, i in located]
        conds = np.stack([pad_columns(filled[s], max(group.dcfg.cond_dims)) for s in sources],
                         1)[:, :, None]  # [N, M, 1, C]
        masks = np.ones(conds.shape[:3], np.float32)
        scores = np.array([ms.val_score(n) for n in names])
        if method == "single":  # one-hot on the best available model of each row
            weights = best_available(scores, avail, names=names)
        else:
            weights = ensemble_weights(scores, weighting, avail, names=names)
        if options.composition == "product" and not ms.train_cfg.single_cond_dropout > 0:
            # a single model trained with its condition always present has no unconditional mode:
            # its masked output is not eps_u, and the product would be silently wrong
            raise CgjaxError(f"--composition product needs each model's unconditional prediction, which "
                             f"'{names[0]}' lacks (trained with single_cond_dropout = 0): retrain with "
                             "single_cond_dropout > 0 in the [train] section of --config")
    return group, members, conds.astype(np.float32), masks.astype(np.float32), weights.astype(np.float32), N


def iter_sample_target(ms: ModelSet, target: str, given: Mapping[str, np.ndarray],
                       options: SampleOptions = SampleOptions(), *, key=None, return_distance: bool = False,
                       row_offset: int = 0, n_total: int | None = None, mesh=None,
                       flat_range: tuple[int, int] | None = None):
    """Draw ``options.replicates`` samples of ``target`` for N rows from whatever modalities each row
    has, chunk by chunk, without holding them all (:func:`sample_target` collects them).

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
    base_slots = None
    sources = [m for m in ms.modalities if m != target]
    composition = composition_for(ms, target, options)  # one answer per target, whichever rows come
    if composition == "anchored":
        base, base_slots = _base_anchor(ms, target, [sources[i] for i in used])
        params = {"members": params, "base": base}
    sampler = _ensemble_sampler(group.dcfg, ms.schedule_cfg, rejection if method == "coherent" else
                                dataclasses.replace(rejection, enabled=False), return_distance, solver,
                                composition, options.corrector_steps, options.corrector_snr, base_slots)
    n_dev = 1 if mesh is None else mesh.size
    max_batch = options.max_batch
    if max_batch is None:
        n_steps = (solver.steps or ms.schedule_cfg.timesteps) if return_distance else 0
        max_batch = distributed.default_max_batch(group.dcfg, len(members), n_steps=n_steps,
                                                  return_distance=return_distance,
                                                  composition=composition,
                                                  corrector_steps=options.corrector_steps)
    size = distributed.round_up(min(max_batch, max(hi - lo, 1)), n_dev)
    for a, b in distributed.chunk_ranges(lo, hi, size):
        flat = np.arange(a, b)
        k, r = flat // N, flat % N
        row_ids = (k * n_total + row_offset + r).astype(np.int32)
        res = distributed.sample_sharded(sampler, mesh, params, stats, key, conds[r], masks[r], weights[r],
                                         row_ids, size=size)
        yield a, b, Imputation(target, method, res.x0, res.attempts, res.passed, res.frac_incoherent, res.distance)


def sample_target(ms: ModelSet, target: str, given: Mapping[str, np.ndarray],
                  options: SampleOptions = SampleOptions(), **kw) -> Imputation:
    """All the samples of :func:`iter_sample_target` (same arguments, ``flat_range`` excepted) at
    once: an :class:`Imputation` with ``x`` f32[R, N, F] and the other arrays [R, N, ...]."""
    chunks = [chunk for _, _, chunk in iter_sample_target(ms, target, given, options, **kw)]

    def collect(field):
        parts = [getattr(c, field) for c in chunks]
        return None if parts[0] is None else np.concatenate(parts).reshape(options.replicates, -1,
                                                                           *parts[0].shape[1:])

    return Imputation(target, options.method, *(collect(f) for f in
                                                ("x", "attempts", "passed", "frac_incoherent", "distance")))
