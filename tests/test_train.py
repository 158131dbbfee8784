"""The stacked training step (cgjax.diffusion.train): members train independently of each other,
and a multi-condition model trains on random subsets of each row's present conditions."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from cgjax.diffusion import denoiser, train
from cgjax.diffusion.schedule import ScheduleConfig, make_schedule
from cgjax.diffusion.train import GroupData, TrainConfig, init_state, make_train_fn

CFG = denoiser.DenoiserConfig(x_dim=3, cond_dims=(2, 2, 2), hidden=8, n_layers=3, time_dim=4, cond_embed_dim=2)
SCHED = make_schedule(ScheduleConfig(timesteps=30))
TCFG = TrainConfig(batch_size=16, steps_per_call=3, epochs=1, seed=0)
M, N, K, C = 3, 40, 3, 2


def _data(seed, present_pattern=(True, True, True)):
    rng = np.random.default_rng(seed)
    x0 = rng.normal(size=(M, N, CFG.x_dim)).astype(np.float32)
    conds = (rng.normal(size=(M, N, K, C)) + 3.0).astype(np.float32)  # never zero
    present = np.broadcast_to(np.asarray(present_pattern), (M, N, K)).copy()
    valid = np.ones((M, N), bool)
    return GroupData(jnp.asarray(x0), jnp.asarray(conds), jnp.asarray(present), jnp.asarray(valid))


def test_stacked_members_train_as_if_alone():
    """Member 1 gets other initial weights and other data: members 0 and 2 end exactly where they
    end in the unchanged stack (no coupling through vmap, BatchNorm or the optimiser), member 1 does not."""
    fn = make_train_fn(CFG, SCHED, TCFG, multi=True)
    key = jax.random.PRNGKey(5)
    data = _data(0)
    state = init_state(jax.random.PRNGKey(1), CFG, [CFG.cond_dims] * M, TCFG)
    other = init_state(jax.random.PRNGKey(2), CFG, [CFG.cond_dims] * M, TCFG)
    swap = lambda a, b: a.at[1].set(b[1])
    # a copy: the compiled step donates its input state
    mixed_state = jax.tree.map(jnp.copy, state._replace(params=jax.tree.map(swap, state.params, other.params)))
    mixed_data = GroupData(*[swap(a, b) for a, b in zip(data, _data(1))])
    for _ in range(2):  # two calls: the step counter and the optimiser state carry over
        state, loss = fn(state, data, key)
        mixed_state, mixed_loss = fn(mixed_state, mixed_data, key)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(mixed_state.params)):
        a, b = np.asarray(a), np.asarray(b)
        np.testing.assert_allclose(a[[0, 2]], b[[0, 2]], rtol=1e-6, atol=1e-7)
    assert not np.allclose(np.asarray(state.params["layers"][0]["w_x"][1]),
                           np.asarray(mixed_state.params["layers"][0]["w_x"][1]))
    np.testing.assert_allclose(np.asarray(loss)[[0, 2]], np.asarray(mixed_loss)[[0, 2]], rtol=1e-6)


def _training_masks(monkeypatch, cond_dropout, present_pattern, multi=True):
    """Run one compiled call and return every (masks f32[B, K], conds f32[B, K, C]) the denoiser saw."""
    seen = []
    real = denoiser.apply

    def spy(params, batch_stats, x_t, t, conds, masks, cfg, *, train):
        jax.debug.callback(lambda m, c: seen.append((np.asarray(m), np.asarray(c))), masks, conds)
        return real(params, batch_stats, x_t, t, conds, masks, cfg, train=train)

    monkeypatch.setattr(train.denoiser, "apply", spy)
    tcfg = dataclasses.replace(TCFG, batch_size=256, steps_per_call=2, cond_dropout=cond_dropout)
    fn = make_train_fn(CFG, SCHED, tcfg, multi=multi)
    state = init_state(jax.random.PRNGKey(1), CFG, [CFG.cond_dims] * M, tcfg)
    _, loss = fn(state, _data(0, present_pattern), jax.random.PRNGKey(3))
    jax.block_until_ready(loss)
    masks = np.concatenate([m.reshape(-1, K) for m, _ in seen])
    conds = np.concatenate([c.reshape(-1, K, C) for _, c in seen])
    return masks, conds


def test_condition_dropout_trains_on_subsets_of_the_present_conditions(monkeypatch):
    present = np.array([True, True, False])  # the third condition is absent in every row
    for p in (0.0, 0.5, 1.0):
        masks, conds = _training_masks(monkeypatch, p, tuple(present))
        assert masks.shape[0] == 2 * M * 256  # every step of every member
        assert set(np.unique(masks)) <= {0.0, 1.0}
        assert not masks[:, ~present].any()  # an absent condition is never switched on
        # a masked condition is also zeroed; a kept one is the data (never zero here)
        assert np.all(conds[masks == 0] == 0) and np.all(conds[masks == 1] != 0)
        full = np.all(masks[:, present] == 1, axis=1).mean()
        # P(all present kept) = (1 - p) + p / 2^2 for two present conditions (each subset bit ~ Bernoulli(1/2))
        expected = (1 - p) + p / 4
        assert abs(full - expected) < 0.05, (p, full, expected)
        if p > 0:  # each present condition alone is kept with probability (1 - p) + p / 2
            np.testing.assert_allclose(masks[:, present].mean(axis=0), (1 - p) + p / 2, atol=0.05)


def test_single_models_never_drop_their_condition(monkeypatch):
    masks, _ = _training_masks(monkeypatch, 1.0, (True, True, True), multi=False)
    assert np.all(masks == 1)


def test_weight_decay_shrinks_weight_matrices_only():
    """AdamW's decoupled decay: with zero gradients Adam's own update is 0, so one step multiplies
    each weight matrix by 1 - lr * weight_decay and leaves biases (1-d) as they were; without
    weight decay nothing moves. Checked on one member's params and on the stacked members the
    trainer vmaps over."""
    import optax

    from cgjax.diffusion.train import TrainConfig, make_optimizer

    params = {"layers": [{"w_x": jnp.full((3, 2), 2.0), "b": jnp.ones(2)}], "bn": [{"scale": jnp.ones(4)}]}
    zeros = jax.tree.map(jnp.zeros_like, params)
    for wd, factor in ((0.5, 1 - 0.1 * 0.5), (0.0, 1.0)):
        opt = make_optimizer(TrainConfig(learning_rate=0.1, weight_decay=wd))
        updates, _ = opt.update(zeros, opt.init(params), params)
        new = optax.apply_updates(params, updates)
        np.testing.assert_allclose(new["layers"][0]["w_x"], 2.0 * factor, rtol=1e-6)
        np.testing.assert_allclose(new["layers"][0]["b"], 1.0)
        np.testing.assert_allclose(new["bn"][0]["scale"], 1.0)
    stacked = jax.tree.map(lambda a: jnp.stack([a, 3 * a]), params)  # [M = 2, ...]: matrices are 3-d here
    opt = make_optimizer(TrainConfig(learning_rate=0.1, weight_decay=0.5))
    state = jax.vmap(opt.init)(stacked)
    updates, _ = jax.vmap(opt.update)(jax.tree.map(jnp.zeros_like, stacked), state, stacked)
    new = optax.apply_updates(stacked, updates)
    np.testing.assert_allclose(new["layers"][0]["w_x"][1], 6.0 * 0.95, rtol=1e-6)
    np.testing.assert_allclose(new["layers"][0]["b"][1], 3.0)
