"""TrainConfig.min_steps: a floor on the optimiser steps of every group (small cohorts), and an
explicit --epochs meaning exactly those epochs."""

import math

import numpy as np
import pytest

from cgjax.diffusion import denoiser
from cgjax.diffusion.configs import build_configs
from cgjax.diffusion.schedule import ScheduleConfig
from cgjax.diffusion.train import TrainConfig
from cgjax.ensemble import fit
from cgjax.errors import ConfigError


def test_planned_epochs_is_the_smallest_that_gives_every_group_the_floor():
    assert fit.planned_epochs(TrainConfig(epochs=3, min_steps=100), [7, 20]) == 15  # ceil(100 / 7)
    assert fit.planned_epochs(TrainConfig(epochs=30, min_steps=100), [7, 20]) == 30  # already enough
    assert fit.planned_epochs(TrainConfig(epochs=3), [7, 20]) == 3  # no floor
    with pytest.raises(ConfigError, match="min_steps must be an integer >= 0"):
        TrainConfig(min_steps=-1)


def test_explicit_epochs_remove_the_floor_and_the_preset_keeps_it():
    preset = {"train": {"epochs": 10, "min_steps": 500}}
    assert build_configs({}, None, None, preset)[2].min_steps == 500
    train = build_configs({}, 4, None, preset)[2]
    assert (train.epochs, train.min_steps) == (4, 0)


def _run(tcfg, n=40):
    rng = np.random.default_rng(1)
    data = {"a": rng.normal(size=(n, 2)).astype(np.float32), "b": rng.normal(size=(n, 2)).astype(np.float32)}
    masks = {m: np.ones(n, bool) for m in data}
    masks["b"][: n // 4] = False  # the single models see fewer rows than the multi model of 'a'
    run = fit.new_training_run(data, masks, modalities=("a", "b"), dims={"a": 2, "b": 2},
                               arch=denoiser.ArchConfig(hidden=8, n_layers=3, time_dim=4, cond_embed_dim=2),
                               schedule_cfg=ScheduleConfig(timesteps=25), train_cfg=tcfg, scalers={},
                               feature_names={"a": ["a0", "a1"], "b": ["b0", "b1"]})
    return fit.train_model_set(run, data, masks, data, masks, progress=False)


def test_a_small_cohort_trains_at_least_min_steps_in_every_group_and_records_its_epochs():
    tcfg = TrainConfig(batch_size=8, steps_per_call=1, epochs=1, eval_every=100, val_replicates=1, min_steps=23)
    run = _run(tcfg)
    steps = {name: int(s.step) for name, s in run.states.items()}
    assert min(steps.values()) >= 23, steps
    # the group with the most rows per epoch takes the most steps; the recorded epochs are those trained
    epochs = run.model_set.train_cfg.epochs
    assert epochs == run.epoch > 1 and run.model_set.train_cfg.min_steps == 23
    # 30 of 40 rows in the single models -> 4 steps an epoch; the multi models' median is 30 or 40
    assert epochs == math.ceil(23 / 4)
