"""The noise process and the norm_mlp denoiser, checked against float64 numpy and closed forms."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cgjax.diffusion import denoiser
from cgjax.diffusion.schedule import ScheduleConfig, ddpm_step, make_schedule, q_sample


def test_schedule_matches_float64_numpy():
    s = make_schedule(ScheduleConfig(timesteps=1000))
    betas = np.linspace(1e-4, 0.02, 1000)
    abar = np.cumprod(1.0 - betas)
    np.testing.assert_allclose(np.asarray(s.betas), betas, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(s.alpha_bars), abar, rtol=2e-6)
    # the values docs/reference.md 2.1 quotes
    assert abs(float(s.alpha_bars[0]) - 0.9999) < 1e-7
    assert abs(float(s.alpha_bars[499]) - 0.0786) < 5e-4
    assert abs(float(s.alpha_bars[999]) - 4.04e-5) < 1e-7


def test_short_schedule_keeps_total_noise():
    s = make_schedule(ScheduleConfig(timesteps=100))
    np.testing.assert_allclose(np.asarray(s.betas), np.linspace(1e-3, 0.2, 100), rtol=1e-6)
    assert float(s.alpha_bars[-1]) < 1e-4
    with pytest.raises(ValueError, match="too few timesteps"):
        make_schedule(ScheduleConfig(timesteps=20))


def test_q_sample_moments():
    s = make_schedule(ScheduleConfig(timesteps=1000))
    key = jax.random.PRNGKey(0)
    x0 = jnp.full((200_000, 1), 2.0)
    t = jnp.full((200_000,), 300)
    x_t = q_sample(s, x0, t, jax.random.normal(key, x0.shape))
    a = float(np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))[300])
    assert abs(float(x_t.mean()) - 2.0 * np.sqrt(a)) < 0.01
    assert abs(float(x_t.var()) - (1 - a)) < 0.01


def test_ddpm_step_matches_numpy():
    s = make_schedule(ScheduleConfig(timesteps=50))
    rng = np.random.default_rng(0)
    x, e, z = (rng.normal(size=(3, 4)) for _ in range(3))
    b = np.linspace(1e-4, 0.02, 50) * 20
    abar = np.cumprod(1 - b)
    for t in (0, 1, 49):
        ref = (x - b[t] / np.sqrt(1 - abar[t]) * e) / np.sqrt(1 - b[t]) + (np.sqrt(b[t]) * z if t > 0 else 0)
        out = ddpm_step(s, jnp.asarray(x, jnp.float32), t, jnp.asarray(e, jnp.float32), jnp.asarray(z, jnp.float32))
        np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-5, atol=1e-5)


CFG = denoiser.DenoiserConfig(x_dim=6, cond_dims=(5, 3), hidden=16, n_layers=4, time_dim=8, cond_embed_dim=4)


def test_param_count_matches_closed_form():
    params, _ = denoiser.init(jax.random.PRNGKey(0), CFG)
    n = sum(x.size for x in jax.tree.leaves(params))
    assert n == denoiser.param_count(CFG)
    paper = denoiser.DenoiserConfig(x_dim=32, cond_dims=(32,), hidden=512, n_layers=5, time_dim=128, cond_embed_dim=32)
    params, _ = denoiser.init(jax.random.PRNGKey(0), paper)
    assert sum(x.size for x in jax.tree.leaves(params)) == denoiser.param_count(paper)
    # REFERENCE 2.5 closed form: time MLP, condition embedding, layer 0, 3 hidden layers, output, 4 BN affines
    assert denoiser.param_count(paper) == (128 * 128 + 128 + 32 * 32 + 32 + (32 + 128 + 32) * 512 + 512
                                           + 3 * ((512 + 128) * 512 + 512) + (512 + 128) * 32 + 32
                                           + 4 * 2 * 512) == 1_125_568


def test_param_shapes_is_the_layout_init_draws():
    """param_shapes (the one definition the cost model reads) has init's exact pytree and shapes."""
    params, _ = denoiser.init(jax.random.PRNGKey(0), CFG)
    assert jax.tree.map(lambda a: a.shape, params) == denoiser.param_shapes(CFG)
    named = [(path[-1].key, leaf.shape) for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]]
    assert sorted(denoiser.param_leaves(CFG)) == sorted(named)


def test_sinusoidal_embedding_reference_formula():
    emb = np.asarray(denoiser.sinusoidal_embedding(jnp.array([0, 7, 999]), 9))
    h = 4
    freqs = np.exp(-np.arange(h) * np.log(10000) / (h - 1))
    for row, t in zip(emb, (0, 7, 999)):
        np.testing.assert_allclose(row[:h], np.sin(t * freqs), atol=1e-4)
        np.testing.assert_allclose(row[h:2 * h], np.cos(t * freqs), atol=1e-4)
        assert row[-1] == 0.0


def _inputs(key, B, cfg=CFG):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    x = jax.random.normal(k1, (B, cfg.x_dim))
    t = jax.random.randint(k2, (B,), 0, 100)
    c = jax.random.normal(k3, (B, cfg.n_conds, max(cfg.cond_dims)))
    m = jax.random.bernoulli(k4, 0.6, (B, cfg.n_conds)).astype(jnp.float32)
    return x, t, c, m


def _trained_stats(params, stats, key):
    """A few BN updates so that running statistics are not the trivial (0, 1)."""
    for i in range(3):
        x, t, c, m = _inputs(jax.random.fold_in(key, i), 32)
        _, stats = denoiser.apply(params, stats, x * 3 + 1, t, c, m, CFG, train=True)
    return stats


def test_inference_is_row_independent():
    params, stats = denoiser.init(jax.random.PRNGKey(1), CFG)
    stats = _trained_stats(params, stats, jax.random.PRNGKey(2))
    x, t, c, m = _inputs(jax.random.PRNGKey(3), 10)
    full, _ = denoiser.apply(params, stats, x, t, c, m, CFG, train=False)
    x2 = x.at[1:].set(100.0)  # change every other row
    alone, _ = denoiser.apply(params, stats, x2, t, c, m, CFG, train=False)
    np.testing.assert_allclose(np.asarray(full[0]), np.asarray(alone[0]), rtol=1e-6, atol=1e-6)
    one, _ = denoiser.apply(params, stats, x[:1], t[:1], c[:1], m[:1], CFG, train=False)
    np.testing.assert_allclose(np.asarray(full[:1]), np.asarray(one), rtol=1e-5, atol=1e-6)
    # in training, BatchNorm couples the rows: the same change moves row 0
    tr_full, _ = denoiser.apply(params, stats, x, t, c, m, CFG, train=True)
    tr_alone, _ = denoiser.apply(params, stats, x2, t, c, m, CFG, train=True)
    assert np.abs(np.asarray(tr_full[0] - tr_alone[0])).max() > 1e-3


def test_hidden_activations_are_what_the_output_layer_reads():
    """``return_hidden``: the same output, plus n_layers - 1 post-ReLU activations [B, H], the last
    of which the output layer maps to the prediction (re-derived here in float64 numpy)."""
    params, stats = denoiser.init(jax.random.PRNGKey(1), CFG)
    stats = _trained_stats(params, stats, jax.random.PRNGKey(2))
    x, t, c, m = _inputs(jax.random.PRNGKey(3), 10)
    out, _ = denoiser.apply(params, stats, x, t, c, m, CFG, train=False)
    out2, _, hidden = denoiser.apply(params, stats, x, t, c, m, CFG, train=False, return_hidden=True)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(out2))
    assert len(hidden) == CFG.n_layers - 1 and all(h.shape == (10, CFG.hidden) for h in hidden)
    assert all(float(jnp.min(h)) >= 0 for h in hidden)
    last = params["layers"][-1]
    f64 = lambda a: np.asarray(a, np.float64)
    t_emb = f64(denoiser.time_embedding(params, t, CFG.time_dim))
    np.testing.assert_allclose(f64(hidden[-1]) @ f64(last["w_h"]) + t_emb @ f64(last["w_t"]) + f64(last["b"]),
                               f64(out), rtol=1e-4, atol=1e-5)


def test_batchnorm_running_stats_follow_torch():
    params, stats = denoiser.init(jax.random.PRNGKey(1), CFG)
    x, t, c, m = _inputs(jax.random.PRNGKey(3), 12)
    _, new = denoiser.apply(params, stats, x, t, c, m, CFG, train=True)
    # recompute layer 0's pre-activation in float64
    P = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    temb = np.maximum(np.asarray(denoiser.sinusoidal_embedding(t, 8), np.float64) @ P["time"]["w"] + P["time"]["b"], 0)
    cn = np.asarray(c, np.float64)
    mm = np.asarray(m, np.float64)
    cemb = np.concatenate([np.maximum(cn[:, i, :CFG.cond_dims[i]] @ P["cond"][i]["w"] + P["cond"][i]["b"], 0) * mm[:, i:i + 1]
                           for i in range(2)], axis=1)
    h0 = np.asarray(x, np.float64) @ P["layers"][0]["w_x"] + temb @ P["layers"][0]["w_t"] + cemb @ P["layers"][0]["w_c"] + P["layers"][0]["b"]
    np.testing.assert_allclose(np.asarray(new[0]["mean"]), 0.1 * h0.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(new[0]["var"]), 0.9 + 0.1 * h0.var(0, ddof=1), rtol=1e-4)


def test_masked_condition_has_no_effect_and_padding_is_exact():
    params, stats = denoiser.init(jax.random.PRNGKey(4), CFG)
    x, t, c, _ = _inputs(jax.random.PRNGKey(5), 7)
    m = jnp.tile(jnp.array([[1.0, 0.0]]), (7, 1))
    a, _ = denoiser.apply(params, stats, x, t, c, m, CFG, train=False)
    b, _ = denoiser.apply(params, stats, x, t, c.at[:, 1].set(42.0), m, CFG, train=False)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # a model whose second slot really has width 3, padded to 5: the padding never matters
    padded_cfg = dataclasses.replace(CFG, cond_dims=(5, 5))
    p2, s2 = denoiser.init(jax.random.PRNGKey(4), padded_cfg, true_cond_dims=(5, 3))
    assert np.all(np.asarray(p2["cond"][1]["w"][3:]) == 0)
    c_pad = jnp.concatenate([c, jnp.zeros((7, 2, 2))], axis=-1).at[:, 1, 3:].set(0.0)
    m1 = jnp.ones((7, 2))
    out_pad, _ = denoiser.apply(p2, s2, x, t, c_pad, m1, padded_cfg, train=False)
    narrow = {**p2, "cond": [p2["cond"][0], {"w": p2["cond"][1]["w"][:3], "b": p2["cond"][1]["b"]}]}
    out_narrow, _ = denoiser.apply(narrow, s2, x, t, c_pad, m1, CFG, train=False)
    np.testing.assert_allclose(np.asarray(out_pad), np.asarray(out_narrow), rtol=1e-6)


def _np_forward(params, stats, x, t, c, m, cfg, train):
    """norm_mlp in float64 numpy, written from the module docstring's equations (REFERENCE 2.3-2.5)."""
    P = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    S = jax.tree.map(lambda a: np.asarray(a, np.float64), stats)
    x, c, m = (np.asarray(a, np.float64) for a in (x, c, m))
    half = cfg.time_dim // 2
    ang = np.asarray(t, np.float64)[:, None] * np.exp(-np.arange(half) * np.log(1e4) / (half - 1))[None]
    sinus = np.concatenate([np.sin(ang), np.cos(ang)], axis=1)
    temb = np.maximum(sinus @ P["time"]["w"] + P["time"]["b"], 0)
    cemb = np.concatenate([np.maximum(c[:, i, :w] @ P["cond"][i]["w"] + P["cond"][i]["b"], 0) * m[:, i:i + 1]
                           for i, w in enumerate(cfg.cond_dims)], axis=1)
    l0 = P["layers"][0]
    h = x @ l0["w_x"] + temb @ l0["w_t"] + cemb @ l0["w_c"] + l0["b"]
    for i, layer in enumerate(P["layers"][1:]):
        mean, var = (h.mean(0), h.var(0)) if train else (S[i]["mean"], S[i]["var"])
        h = np.maximum((h - mean) / np.sqrt(var + cfg.bn_eps) * P["bn"][i]["scale"] + P["bn"][i]["bias"], 0)
        h = h @ layer["w_h"] + temb @ layer["w_t"] + layer["b"]
    return h


class TestJitParity(chex.TestCase):
    """denoiser.apply gives the float64 forward pass with and without jit, in training and inference."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_apply_matches_float64_numpy(self):
        params, stats = denoiser.init(jax.random.PRNGKey(6), CFG)
        stats = _trained_stats(params, stats, jax.random.PRNGKey(8))
        x, t, c, m = _inputs(jax.random.PRNGKey(7), 9)
        for train in (False, True):
            apply = self.variant(lambda *a, train=train: denoiser.apply(*a, CFG, train=train)[0])
            np.testing.assert_allclose(np.asarray(apply(params, stats, x, t, c, m)),
                                       _np_forward(params, stats, x, t, c, m, CFG, train), rtol=1e-4, atol=1e-5)

    def test_apply_rejects_inputs_of_the_wrong_shape(self):
        params, stats = denoiser.init(jax.random.PRNGKey(6), CFG)
        x, t, c, m = _inputs(jax.random.PRNGKey(7), 9)
        for bad in ((x[:, :-1], t, c, m), (x, t[:-1], c, m), (x, t, c[:, :1], m), (x, t, c[..., :4], m), (x, t, c, m[:, :1])):
            with pytest.raises(AssertionError):
                denoiser.apply(params, stats, *bad, CFG, train=False)
