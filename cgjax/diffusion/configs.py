"""The three configs of a model set built from plain dicts (a config file's sections over a preset)."""

from __future__ import annotations

from cgjax.diffusion.denoiser import ArchConfig
from cgjax.diffusion.schedule import ScheduleConfig
from cgjax.diffusion.train import TrainConfig
from cgjax.errors import CgjaxError


def build_configs(cfg: dict, epochs=None, timesteps=None, defaults=None):
    """(ArchConfig, ScheduleConfig, TrainConfig) from a config dict with optional sections ``arch``,
    ``schedule``, ``train`` over ``defaults`` (same sections; e.g. the quick preset), with
    ``epochs`` / ``timesteps`` overriding both (``epochs`` also sets ``min_steps`` to 0). A bad value is
    one :class:`CgjaxError` line."""
    defaults = defaults or {}
    try:
        arch = ArchConfig(**{**defaults.get("arch", {}), **cfg.get("arch", {})})
        sched = {**defaults.get("schedule", {}), **cfg.get("schedule", {})}
        train = {**defaults.get("train", {}), **cfg.get("train", {})}
        if timesteps is not None:
            sched["timesteps"] = timesteps
        if epochs is not None:  # exactly these epochs: no floor on the steps (TrainConfig.min_steps)
            train["epochs"] = epochs
            train["min_steps"] = 0
        return arch, ScheduleConfig(**sched), TrainConfig(**train)
    except (TypeError, ValueError) as e:
        raise CgjaxError(f"bad configuration: {e}") from None
