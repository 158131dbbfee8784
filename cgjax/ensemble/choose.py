"""Choices made per model after training, by validation score: with or without the Gaussian anchor,
and how much of an anchored network's residual to keep.

The Gaussian anchor (:mod:`cgjax.diffusion.anchor`) helps a model whose conditional law is close to
linear-Gaussian and can hurt one whose law is not (docs/calibration.md). Which is which shows in the
validation score each model was selected by (``train_cfg.select_by``; the energy score with the
quick preset), measured on the same validation rows with the same noise when both sets come from the
same cohort, split and seed. :func:`choose_per_model` keeps, for every model, the set whose score is
lower. A plain network is an anchored one whose anchor is all zero (its prediction is then exactly
0), so the result is one model set with ``arch.anchor = "gaussian"``.

:func:`choose_residual_gain` scales each anchored model's network output by the gain (of, e.g.,
0, 0.5, 1) that validates best: on a small cohort the learned residual carries estimation error,
and where the law is nearly linear-Gaussian the anchor alone, or half the residual, samples closer
to the law (``train.residual_gains``; docs/calibration.md).
"""

from __future__ import annotations

import copy
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from cgjax.diffusion import anchor as anchor_lib
from cgjax.ensemble.arrays import group_arrays
from cgjax.ensemble.fit import validate_group
from cgjax.ensemble.spec import ModelSet
from cgjax.errors import CgjaxError


def choose_per_model(anchored: ModelSet, plain: ModelSet, val_data=None, val_masks=None, *,
                     seed: int = 0) -> tuple[ModelSet, dict[str, str]]:
    """(the combined model set, model name -> ``"gaussian"`` or ``"none"``, the anchor it kept).

    ``anchored`` was trained with ``arch.anchor = "gaussian"``, ``plain`` with ``"none"``, otherwise
    with the same configuration on the same cohort and split (checked: a mismatch is a
    :class:`CgjaxError` naming what differs). A model keeps its anchored version unless the plain
    one's validation score is strictly lower; the combined set's ``val_metrics`` are those of the
    versions kept, each with ``"anchored"`` 1.0 or 0.0 (and a plain one with ``"residual_gain"`` 1.0,
    so that :func:`choose_residual_gain` never scales it). The scores compared are those stored in
    ``val_metrics`` or, with ``val_data`` / ``val_masks`` (the validation split's scaled arrays and
    masks), both sets re-scored on those rows with one noise key (a paired comparison: the stored
    scores may come from different epochs' noise, and an anchored set's from its residual-gain choice).
    """
    if anchored.arch.anchor != "gaussian" or plain.arch.anchor != "none":
        raise CgjaxError(f"choose_per_model takes a set trained with arch.anchor = 'gaussian' and one with 'none', "
                         f"got {anchored.arch.anchor!r} and {plain.arch.anchor!r}")
    checks = {"architecture": (dataclasses.replace(anchored.arch, anchor="none"), plain.arch),
              "schedule": (anchored.schedule_cfg, plain.schedule_cfg),
              # residual_gains is applied after training, and only with an anchor
              "training configuration": (dataclasses.replace(anchored.train_cfg, residual_gains=()),
                                         dataclasses.replace(plain.train_cfg, residual_gains=())),
              "modalities": ((anchored.modalities, anchored.dims), (plain.modalities, plain.dims)),
              "scalers (cohort)": (anchored.scalers, plain.scalers), "split": (anchored.split, plain.split)}
    for what, (a, b) in checks.items():
        if a != b:
            raise CgjaxError(f"the two model sets differ in their {what}: train both on the same cohort and split "
                             f"with the same configuration but arch.anchor")
    crit = anchored.train_cfg.select_by
    out = copy.copy(anchored)
    out.groups = {name: copy.copy(g) for name, g in anchored.groups.items()}
    out.val_metrics = {}
    chosen = {}
    metrics = {"gaussian": anchored.val_metrics, "none": plain.val_metrics}
    if val_data is not None:
        metrics = {a: {k: dict(v) for k, v in m.items()} for a, m in metrics.items()}
        key = jax.random.PRNGKey(seed)
        # both sets group the same models (same modalities and configuration, checked above): one set of arrays
        val = {name: group_arrays(g, val_data, val_masks) for name, g in anchored.groups.items()}
        for a, ms in (("gaussian", anchored), ("none", plain)):
            for name, g in ms.groups.items():
                scores = validate_group(g, ms.schedule_cfg, val[name], ms.train_cfg.val_replicates, key)
                for m, spec in enumerate(g.specs):
                    metrics[a][spec.name].update({k: float(v[m]) for k, v in scores.items()})
    for name, g in out.groups.items():
        p = plain.groups[name]
        keep_plain = np.array([metrics["none"][s.name][crit] < metrics["gaussian"][s.name][crit] for s in g.specs])
        sel = lambda a, b: jnp.where(jnp.asarray(keep_plain).reshape((-1,) + (1,) * (a.ndim - 1)), b, a)
        net = {k: v for k, v in g.params.items() if k != "anchor"}
        params = jax.tree.map(sel, net, p.params)
        params["anchor"] = jax.tree.map(lambda a: sel(a, jnp.zeros_like(a)), g.params["anchor"])
        g.params, g.batch_stats = params, jax.tree.map(sel, g.batch_stats, p.batch_stats)
        for s, plain_won in zip(g.specs, keep_plain):
            chosen[s.name] = "none" if plain_won else "gaussian"
            out.val_metrics[s.name] = {**metrics[chosen[s.name]][s.name], "anchored": 0.0 if plain_won else 1.0}
            if plain_won:  # its anchor is zero: no residual to scale (train.residual_gains leaves it alone)
                out.val_metrics[s.name]["residual_gain"] = 1.0
    return out, chosen


# ---- how much of the network's residual to keep ------------------------------------------------------

RESIDUAL_GAINS = (0.0, 0.5, 1.0)  # the gains choose_residual_gain tries (0: the Gaussian anchor alone)


def scale_residual(params: dict, gain) -> dict:
    """An anchored model's parameters with the network's output multiplied by ``gain`` (a scalar or
    f[M], one per stacked model): the output layer is linear in its weights and bias, so scaling them
    scales the network's output exactly and leaves the anchor as it is. Everything else is shared,
    not copied."""
    gain = jnp.asarray(gain, jnp.float32)
    layers = list(params["layers"])
    layers[-1] = jax.tree.map(lambda a: a * gain.reshape(gain.shape + (1,) * (a.ndim - gain.ndim)), layers[-1])
    return {**params, "layers": layers}


def choose_residual_gain(ms: ModelSet, val_data, val_masks, gains=RESIDUAL_GAINS, *, seed: int = 0,
                         skip=frozenset()) -> dict[str, float]:
    """Per model, how much of the network's learned residual to keep, by validation score.

    An anchored model predicts anchor + network (:mod:`cgjax.diffusion.anchor`). On a small cohort the
    network's part carries estimation error as well as what the Gaussian misses, and where the law is
    close to linear-Gaussian the error can outweigh it. Each model's network output is scaled by each
    of ``gains`` (:func:`scale_residual`; 0 keeps the Gaussian anchor alone, 1 the model as trained),
    its validation rows are sampled as in training (:func:`cgjax.ensemble.fit.validate_group`: the same
    rows, replicates and score, ``train_cfg.select_by``, with one noise key for every gain, so the
    comparison is paired), and the lowest score is kept. ``ms`` is changed in place: its parameters,
    and ``val_metrics[model]`` gets the kept gain's scores and ``"residual_gain"``. Returns model ->
    gain for the models not in ``skip`` (names of models left exactly as they are). ``val_data`` /
    ``val_masks``: the validation split's scaled modality arrays and masks.
    """
    if ms.arch.anchor not in anchor_lib.FITTED:
        raise CgjaxError(f"choose_residual_gain needs a model set trained with arch.anchor = 'gaussian' or 'mixture', "
                         f"got {ms.arch.anchor!r}")
    gains = np.asarray(gains, np.float64)
    if gains.ndim != 1 or not len(gains) or not np.all(np.isfinite(gains)):
        raise CgjaxError(f"residual gains must be a non-empty list of finite numbers, got {gains.tolist()}")
    crit, key = ms.train_cfg.select_by, jax.random.PRNGKey(seed)
    chosen = {}
    for name, g in ms.groups.items():
        keep = np.array([s.name in skip for s in g.specs])
        if keep.all():
            continue
        val = group_arrays(g, val_data, val_masks)
        scores = [validate_group(dataclasses.replace(g, params=scale_residual(g.params, gain)), ms.schedule_cfg,
                                 val, ms.train_cfg.val_replicates, key) for gain in gains]
        crits = np.stack([s[crit] for s in scores])  # [G, M]; a diverged sample scores inf, never best
        best = np.argmin(np.where(np.isfinite(crits), crits, np.inf), axis=0)  # first (smallest gain) on ties
        g.params = scale_residual(g.params, np.where(keep, 1.0, gains[best]))
        for m, spec in enumerate(g.specs):
            if keep[m]:
                continue
            chosen[spec.name] = float(gains[best[m]])
            ms.val_metrics[spec.name] = {**ms.val_metrics.get(spec.name, {}),
                                         **{k: float(v[m]) for k, v in scores[best[m]].items()},
                                         "residual_gain": chosen[spec.name]}
    return chosen
