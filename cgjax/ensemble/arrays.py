"""A group's stacked arrays: each member's target, its conditions padded to the group's widest
slot, which conditions are present and which rows it trains on."""

from __future__ import annotations

from typing import Mapping

import jax.numpy as jnp
import numpy as np

from cgjax.diffusion.train import GroupData
from cgjax.ensemble.spec import Group


def pad_columns(x: np.ndarray, width: int) -> np.ndarray:
    """x f32[N, D] zero-padded on the right to f32[N, width] (D <= width; a condition in a wider slot)."""
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
            cs.append(pad_columns(np.where(masks[c][:, None], data[c], 0.0), max(group.dcfg.cond_dims)))
        conds.append(np.stack(cs, axis=1))
        present.append(np.stack(ps, axis=1))
        valid.append(tgt_mask & masks[spec.conds[0]] if spec.kind == "single" else tgt_mask)
    as_f32 = lambda xs: jnp.asarray(np.stack(xs), jnp.float32)
    return GroupData(as_f32(x0), as_f32(conds), jnp.asarray(np.stack(present)), jnp.asarray(np.stack(valid)))
