"""EMA weights get BatchNorm statistics of their own (not the live weights'): recomputed exactly as
the batch statistics of the averaged network on training-distributed inputs, and used by validation
(hence selection, checkpoints and sampling)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from cgjax.diffusion import denoiser
from cgjax.ensemble import fit
from cgjax.diffusion.schedule import ScheduleConfig, make_schedule, q_sample
from cgjax.diffusion.train import (GroupData, TrainConfig, _split_step_key, draw_minibatch, init_state,
                                   make_inference_fn)

CFG = denoiser.DenoiserConfig(x_dim=3, cond_dims=(2,), hidden=8, n_layers=3, time_dim=4, cond_embed_dim=2)
SCHEDULE = make_schedule(ScheduleConfig(timesteps=30))
TCFG = TrainConfig(batch_size=16, steps_per_call=10, learning_rate=3e-2, ema_decay=0.9, epochs=1)


def _data(M=2, N=48, seed=0):
    rng = np.random.default_rng(seed)
    x0 = rng.normal(size=(M, N, CFG.x_dim)).astype(np.float32) * 2 + 1
    conds = rng.normal(size=(M, N, 1, 2)).astype(np.float32)
    valid = rng.random((M, N)) < 0.8
    return GroupData(jnp.asarray(x0), jnp.asarray(conds), jnp.ones((M, N, 1), bool), jnp.asarray(valid))


def _state(tcfg=TCFG, M=2):
    """Initial weights, with the moving average set apart from them (as after training) without
    compiling a training step: every weight of the average is perturbed."""
    data = _data(M)
    state = init_state(jax.random.PRNGKey(0), CFG, ((2,),) * M, tcfg)
    if state.ema is not None:
        leaves, tree = jax.tree.flatten(state.ema)
        keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
        noisy = [a + 0.3 * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys)]
        state = state._replace(ema=jax.tree.unflatten(tree, noisy))
    return state, data


def test_ema_statistics_are_the_averaged_networks_own():
    """Layer 0's recomputed running mean / variance equal, in float64, the mean and unbiased variance
    of the averaged network's first pre-BatchNorm activations on the same training draw; and they
    differ from the live statistics (which the averaged weights used to be sampled with)."""
    state, data = _state()
    rows = 200
    key = jax.random.PRNGKey(7)
    params, stats = make_inference_fn(CFG, SCHEDULE, TCFG, multi=False, rows=rows)(state, data, key)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(state.ema)))
    @jax.jit
    def layer0(ema, k, x0, conds, present, valid):
        """The draw of make_inference_fn for one model, and its first pre-BatchNorm activations."""
        draw, k_loss = _split_step_key(k)
        x0, c, masks = draw_minibatch(draw, x0, conds, present, valid, rows, multi=False,
                                      cond_dropout=TCFG.cond_dropout)
        k_t, k_eps = jax.random.split(k_loss)
        t = jax.random.randint(k_t, (rows,), 0, SCHEDULE.timesteps)
        x_t = q_sample(SCHEDULE, x0, t, jax.random.normal(k_eps, x0.shape, jnp.float32))
        return x_t, denoiser.time_embedding(ema, t, CFG.time_dim), denoiser.cond_embedding(ema, c, masks)

    for m, k in enumerate(jax.random.split(key, 2)):
        member = jax.tree.map(lambda a: a[m], state.ema)
        x_t, t_emb, c_emb = (np.asarray(a, np.float64) for a in layer0(
            member, k, data.x0[m], data.conds[m], data.present[m], data.valid[m]))
        l0 = jax.tree.map(lambda a: np.asarray(a, np.float64), member)["layers"][0]
        z0 = x_t @ l0["w_x"] + t_emb @ l0["w_t"] + c_emb @ l0["w_c"] + l0["b"]  # float64
        np.testing.assert_allclose(np.asarray(stats[0]["mean"][m]), z0.mean(0), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(np.asarray(stats[0]["var"][m]), z0.var(0, ddof=1), rtol=1e-4, atol=1e-5)
    live = state.batch_stats
    assert np.abs(np.asarray(stats[0]["mean"]) - np.asarray(live[0]["mean"])).max() > 0.05


def test_without_ema_the_live_weights_and_statistics_are_used():
    tcfg = dataclasses.replace(TCFG, ema_decay=0.0)
    state, data = _state(tcfg)
    params, stats = make_inference_fn(CFG, SCHEDULE, tcfg, multi=False)(state, data, jax.random.PRNGKey(0))
    assert params is state.params and stats is state.batch_stats


class _RecordingBar:
    """Stands in for tqdm: records every position the bar is moved to."""

    positions: list = []

    def __init__(self, *, total, initial=0, disable=False, **kw):
        self.total, self.n = total, initial
        type(self).positions = [initial]

    def update(self, k):
        self.n += k
        self.positions.append(self.n)

    def set_postfix_str(self, *a, **k):
        pass

    def close(self):
        pass


def test_training_loop_validates_ema_with_its_own_statistics_and_moves_the_bar_every_call(monkeypatch):
    """Through the training loop: the group validated (and kept) holds the EMA weights and
    statistics recomputed for them, not the live running statistics. The progress bar counts
    optimiser steps and moves after every compiled call (so its ETA is live), up to the total."""
    monkeypatch.setattr(fit, "tqdm", _RecordingBar)
    rng = np.random.default_rng(1)
    n = 40
    # equal widths: one group of single models and one of multi models
    data = {"a": rng.normal(size=(n, 2)).astype(np.float32), "b": rng.normal(size=(n, 2)).astype(np.float32)}
    masks = {m: np.ones(n, bool) for m in data}
    tcfg = TrainConfig(batch_size=8, steps_per_call=5, epochs=1, eval_every=1, val_replicates=1, ema_decay=0.8,
                       learning_rate=3e-2)
    run = fit.new_training_run(data, masks, modalities=("a", "b"), dims={"a": 2, "b": 2},
                               arch=denoiser.ArchConfig(hidden=8, n_layers=3, time_dim=4, cond_embed_dim=2),
                               schedule_cfg=ScheduleConfig(timesteps=30), train_cfg=tcfg, scalers={},
                               feature_names={"a": ["a0", "a1"], "b": ["b0", "b1"]})
    seen = {}
    validate = fit.validate_group
    monkeypatch.setattr(fit, "validate_group",
                        lambda group, *a, **k: seen.setdefault(group.name, group) and validate(group, *a, **k))
    calls = []
    make = fit.make_train_fn

    def counting_make(*a, **k):
        fn = make(*a, **k)
        return lambda *x: (calls.append(1), fn(*x))[1]

    monkeypatch.setattr(fit, "make_train_fn", counting_make)
    fit.train_model_set(run, data, masks, data, masks, progress=True)
    steps = _RecordingBar.positions
    assert len(steps) == len(calls) + 1 and np.all(np.diff(steps) > 0), (steps, len(calls))
    assert steps[-1] == sum(int(s.step) for s in run.states.values())  # one epoch = steps_per_call here
    assert set(seen) == set(run.model_set.groups)
    for name, group in seen.items():
        state = run.states[name]
        for a, b in zip(jax.tree.leaves(group.params), jax.tree.leaves(state.ema)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        gap = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                  for a, b in zip(jax.tree.leaves(group.batch_stats), jax.tree.leaves(state.batch_stats)))
        assert gap > 1e-3, name  # not the live running statistics
        kept = run.model_set.groups[name]  # the first validation keeps what it validated
        for a, b in zip(jax.tree.leaves(kept.batch_stats), jax.tree.leaves(group.batch_stats)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
