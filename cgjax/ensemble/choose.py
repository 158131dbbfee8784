"""Per model, the better of two model sets trained on the same cohort: with and without the Gaussian anchor.

The Gaussian anchor (:mod:`cgjax.diffusion.anchor`) helps a model whose conditional law is close to
linear-Gaussian and can hurt one whose law is not (docs/calibration.md). Which is which shows in the
validation score each model was selected by (``train_cfg.select_by``; the energy score with the
quick preset), measured on the same validation rows with the same noise when both sets come from the
same cohort, split and seed. :func:`choose_per_model` keeps, for every model, the set whose score is
lower. A plain network is an anchored one whose anchor is all zero (its prediction is then exactly
0), so the result is one model set with ``arch.anchor = "gaussian"``.
"""

from __future__ import annotations

import copy
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from cgjax.ensemble.spec import ModelSet
from cgjax.errors import CgjaxError


def choose_per_model(anchored: ModelSet, plain: ModelSet) -> tuple[ModelSet, dict[str, str]]:
    """(the combined model set, model name -> ``"gaussian"`` or ``"none"``, the anchor it kept).

    ``anchored`` was trained with ``arch.anchor = "gaussian"``, ``plain`` with ``"none"``, otherwise
    with the same configuration on the same cohort and split (checked: a mismatch is a
    :class:`CgjaxError` naming what differs). A model keeps its anchored version unless the plain
    one's validation score is strictly lower; the combined set's ``val_metrics`` are those of the
    versions kept, each with ``"anchored"`` 1.0 or 0.0.
    """
    if anchored.arch.anchor != "gaussian" or plain.arch.anchor != "none":
        raise CgjaxError(f"choose_per_model takes a set trained with arch.anchor = 'gaussian' and one with 'none', "
                         f"got {anchored.arch.anchor!r} and {plain.arch.anchor!r}")
    checks = {"architecture": (dataclasses.replace(anchored.arch, anchor="none"), plain.arch),
              "schedule": (anchored.schedule_cfg, plain.schedule_cfg),
              "training configuration": (anchored.train_cfg, plain.train_cfg),
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
    for name, g in out.groups.items():
        p = plain.groups[name]
        keep_plain = np.array([plain.val_metrics[s.name][crit] < anchored.val_metrics[s.name][crit] for s in g.specs])
        sel = lambda a, b: jnp.where(jnp.asarray(keep_plain).reshape((-1,) + (1,) * (a.ndim - 1)), b, a)
        net = {k: v for k, v in g.params.items() if k != "anchor"}
        params = jax.tree.map(sel, net, p.params)
        params["anchor"] = jax.tree.map(lambda a: sel(a, jnp.zeros_like(a)), g.params["anchor"])
        g.params, g.batch_stats = params, jax.tree.map(sel, g.batch_stats, p.batch_stats)
        for s, plain_won in zip(g.specs, keep_plain):
            chosen[s.name] = "none" if plain_won else "gaussian"
            src = plain if plain_won else anchored
            out.val_metrics[s.name] = {**src.val_metrics[s.name], "anchored": 0.0 if plain_won else 1.0}
    return out, chosen
