"""The models of a cohort and how they are grouped.

For modalities {m_1..m_P} cgjax trains
  * a single-condition model ``<target>_from_<source>`` for every ordered pair (P (P - 1) models),
    on the train rows that have both (docs/reference.md 3.4), and
  * a multi-condition model ``<target>_from_multi`` per target, on the rows that have the target,
    its absent conditions zeroed and masked (docs/reference.md 3.4, masks aligned with their rows).
Models of the same shape form a *group* and are trained together as one stacked program
(:mod:`cgjax.diffusion.train`). A :class:`ModelSet` holds the groups with everything needed to
sample from them.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import jax
import numpy as np

from cgjax.diffusion import denoiser
from cgjax.diffusion.denoiser import ArchConfig
from cgjax.diffusion.schedule import ScheduleConfig
from cgjax.diffusion.train import TrainConfig
from cgjax.errors import CgjaxError


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
