"""The inference algebra equals the plain network (BatchNorm folding, time tables, condition
projections), alone, stacked as an ensemble, and inside the sampler."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cgjax.diffusion import denoiser
from cgjax.diffusion.schedule import ScheduleConfig, make_schedule
from cgjax.sampling import algebra
from cgjax.sampling.coherent import RejectionConfig, make_sampler
from cgjax.sampling.weights import ensemble_weights
from oracles import eps_model

# two condition slots of different widths, non-square hidden/time sizes
CFG = denoiser.DenoiserConfig(x_dim=6, cond_dims=(5, 3), hidden=24, n_layers=4, time_dim=10, cond_embed_dim=4)
T = 50
RTOL = ATOL = 2e-5  # float32 rounding of a reordered sum of O(1) terms


def _model(seed, cfg=CFG):
    """One model with random weights (numpy, no per-op compilation), non-trivial BatchNorm affine
    parameters and running statistics."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda: denoiser.init(jax.random.PRNGKey(0), cfg))
    params, stats = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape) / 4, jnp.float32), shapes)
    params["bn"] = [{"scale": jnp.asarray(1 + 0.5 * rng.normal(size=bn["scale"].shape), jnp.float32),
                     "bias": bn["bias"]} for bn in params["bn"]]
    stats = [{"mean": st["mean"], "var": jnp.asarray(np.exp(rng.normal(size=st["var"].shape)), jnp.float32)}
             for st in stats]
    return params, stats


def _inputs(seed, B, cfg=CFG):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(B, cfg.x_dim)), jnp.float32)
    t = jnp.asarray(rng.integers(0, T, B), jnp.int32)
    c = jnp.asarray(rng.normal(size=(B, cfg.n_conds, max(cfg.cond_dims))), jnp.float32)
    m = jnp.asarray(rng.random((B, cfg.n_conds)) < 0.6, jnp.float32)
    return x, t, c, m


@jax.jit
def _plain(params, stats, x, t, c, m):
    return denoiser.apply(params, stats, x, t, c, m, CFG, train=False)[0]


def test_batchnorm_folding_is_exact():
    params, stats = _model(0)
    x, t, c, m = _inputs(1, 64)
    folded = algebra.fold_batch_norm(params, stats, CFG)
    assert "bn" not in folded
    out = np.asarray(jax.jit(algebra.apply_folded, static_argnums=5)(folded, x, t, c, m, CFG))
    np.testing.assert_allclose(out, _plain(params, stats, x, t, c, m), rtol=RTOL, atol=ATOL)


def test_time_table_and_condition_projection_are_exact():
    params, stats = _model(2)
    x, _, c, m = _inputs(3, 32)
    folded = algebra.fold_batch_norm(params, stats, CFG)
    table = algebra.time_table(folded, jnp.arange(T), CFG)
    assert [tab.shape for tab in table] == [(T, 24)] * 3 + [(T, 6)]
    proj = algebra.cond_projection(folded, c, m)
    assert proj.shape == (32, 24)
    weights = {"w_x": folded["layers"][0]["w_x"], "w_h": [layer["w_h"] for layer in folded["layers"][1:]]}
    step = jax.jit(lambda t: algebra.apply_precomputed(weights, [tab[t] for tab in table], proj, x))
    for t in (0, 17, T - 1):
        out = np.asarray(step(t))
        ref = _plain(params, stats, x, jnp.full((32,), t), c, m)
        np.testing.assert_allclose(out, ref, rtol=RTOL, atol=ATOL)


def _stacked(M, seed):
    members = [_model(seed + m) for m in range(M)]
    stack = lambda trees: jax.tree.map(lambda *xs: jnp.stack(xs), *trees)
    return stack([p for p, _ in members]), stack([s for _, s in members])


def test_folded_ensemble_model_equals_plain_ensemble_model():
    M, N = 3, 20
    params, stats = _stacked(M, 4)
    x, _, _, _ = _inputs(5, N)
    rng = np.random.default_rng(6)
    conds = jnp.asarray(rng.normal(size=(N, M, CFG.n_conds, 5)), jnp.float32)
    masks = jnp.asarray(rng.random((N, M, CFG.n_conds)) < 0.5, jnp.float32)
    plain, folded = algebra.make_model(CFG, T, "plain"), algebra.make_model(CFG, T, "folded")
    p_plain = plain.prepare(params, stats, conds, masks)
    p_fold = jax.jit(folded.prepare)(params, stats, conds, masks)
    assert p_fold["cond"].shape == (M, N, 24) and p_fold["time"][0].shape == (M, T, 24)
    eps_fold, eps_plain = jax.jit(folded.eps), jax.jit(plain.eps)
    for t in (0, 31, T - 1):
        a = np.asarray(eps_plain(p_plain, x, t))
        assert a.shape == (M, N, CFG.x_dim)
        np.testing.assert_allclose(np.asarray(eps_fold(p_fold, x, t)), a, rtol=RTOL, atol=ATOL)
    # the tests' six-argument hook (tests/oracles.py) is the same function
    plain_model = algebra.plain_model(CFG)

    def plain_eps_fn(params, batch_stats, x_t, t, conds, masks):
        return plain_model.eps(plain_model.prepare(params, batch_stats, conds, masks), x_t, t)

    legacy = eps_model(plain_eps_fn, CFG.x_dim)
    # the arrays are arguments, as for eps_plain: closed over, they become constants that XLA folds at
    # compile time with its reference evaluator (other rounding than the compiled kernels: 1.8e-6 on
    # |eps| ~ 6 on an AVX-512 Xeon). As arguments both programs run the same operations, so they agree
    # to a few float32 ulps of the output's scale (0.0 measured).
    legacy_eps = jax.jit(lambda p, s, c, m, x, t: legacy.eps(legacy.prepare(p, s, c, m), x, t))
    a = np.asarray(eps_plain(p_plain, x, 5))
    np.testing.assert_allclose(np.asarray(legacy_eps(params, stats, conds, masks, x, 5)), a, rtol=0,
                               atol=4 * np.finfo(np.float32).eps * np.abs(a).max())
    with pytest.raises(ValueError, match="unknown algebra"):
        algebra.make_model(CFG, T, "fast")


def test_folded_sampler_equals_plain_sampler():
    M, N = 2, 7
    params, stats = _stacked(M, 7)
    schedule = make_schedule(ScheduleConfig(timesteps=T))
    conds = jnp.asarray(np.random.default_rng(8).normal(size=(N, M, CFG.n_conds, 5)), jnp.float32)
    masks = jnp.ones((N, M, CFG.n_conds))
    weights = ensemble_weights(None, np.array([0.6, 0.4]), np.array([[1, 1]] * 5 + [[1, 0], [0, 1]], bool))
    args = (params, stats, jax.random.PRNGKey(9), conds, masks, weights, jnp.arange(N))
    kw = dict(rejection=RejectionConfig(enabled=False), return_distance=True)
    fold = make_sampler(algebra.make_model(CFG, T, "folded"), schedule, **kw)(*args)
    plain = make_sampler(algebra.make_model(CFG, T, "plain"), schedule, **kw)(*args)
    np.testing.assert_allclose(np.asarray(fold.x0), np.asarray(plain.x0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(fold.distance), np.asarray(plain.distance), rtol=1e-4, atol=1e-4)


def test_step_macs_paper_size():
    paper = denoiser.DenoiserConfig(x_dim=32, cond_dims=(32,), hidden=512, n_layers=5, time_dim=128, cond_embed_dim=32)
    # plain: Dt^2 + C E + (F + Dt + E) H + 3 (H + Dt) H + (H + Dt) F
    assert algebra.step_macs(paper, "plain") == 128 ** 2 + 32 * 32 + 192 * 512 + 3 * 640 * 512 + 640 * 32 == 1_119_232
    assert algebra.step_macs(paper, "folded") == 32 * 512 + 3 * 512 * 512 + 512 * 32 == 819_200
