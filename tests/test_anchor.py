"""The Gaussian anchor (cgjax.diffusion.anchor): its closed form against float64 Gaussian conditioning,
its fit against the population regression, and its place in training, checkpoints and sampling."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cgjax import checkpoint, pipeline
from cgjax.diffusion import anchor, denoiser
from cgjax.diffusion.denoiser import ArchConfig
from cgjax.diffusion.schedule import ScheduleConfig, make_schedule
from cgjax.ensemble.arrays import group_arrays
from cgjax.errors import ConfigError
from cgjax.sampling.algebra import make_model
from cgjax.sampling.coherent import RejectionConfig, make_sampler
from conftest import TINY_SCHED, TINY_TRAIN

F, K, C = 3, 2, 2


def _random_anchor(rng):
    """An anchor with a random mean map and covariance for each of the 2^K patterns."""
    P = anchor.n_patterns(K)
    coef = rng.normal(size=(P, K * C, F))
    for p in range(P):  # rows of absent slots are 0
        for k in range(K):
            if not p >> k & 1:
                coef[p, k * C:(k + 1) * C] = 0
    covs = []
    for _ in range(P):
        a = rng.normal(size=(F, F))
        covs.append(a @ a.T / F + 0.05 * np.eye(F))
    eig, basis = zip(*(np.linalg.eigh(c) for c in covs))
    arrays = {"coef": coef, "bias": rng.normal(size=(P, F)), "basis": np.stack(basis), "eig": np.stack(eig)}
    return {k: jnp.asarray(v, jnp.float32) for k, v in arrays.items()}, coef, arrays["bias"], covs


@pytest.mark.parametrize("parametrisation", ["eps", "v", "x0"])
def test_prediction_is_the_gaussian_posterior_expectation(parametrisation):
    """E[eps | x_t], E[x_0 | x_t] and E[v | x_t] of x_0 ~ N(mu_p(c), S_p), from the joint Gaussian of
    (x_0, eps, x_t) conditioned in float64 with a linear solve (not the anchor's eigenbasis)."""
    rng = np.random.default_rng(0)
    arrays, coef, bias, covs = _random_anchor(rng)
    B = 8
    conds = rng.normal(size=(B, K, C))
    masks = np.array([[1, 1], [1, 0], [0, 1], [0, 0]] * 2, np.float32)
    conds = conds * masks[..., None]
    x_t = rng.normal(size=(B, F))
    for abar in (0.97, 0.5, 0.02):
        got = np.asarray(anchor.predict(anchor.prepare(arrays, jnp.asarray(conds, jnp.float32), jnp.asarray(masks)),
                                        jnp.asarray(x_t, jnp.float32), jnp.float32(abar), parametrisation))
        a, s = np.sqrt(abar), np.sqrt(1 - abar)
        for b in range(B):
            p = int(masks[b, 0] + 2 * masks[b, 1])
            mu = bias[p] + conds[b].reshape(-1) @ coef[p]
            S = covs[p]
            var_xt = a * a * S + s * s * np.eye(F)
            gain_x0 = (a * S) @ np.linalg.inv(var_xt)  # Cov(x0, x_t) Var(x_t)^-1
            gain_eps = s * np.linalg.inv(var_xt)  # Cov(eps, x_t) Var(x_t)^-1
            e_x0 = mu + gain_x0 @ (x_t[b] - a * mu)
            e_eps = gain_eps @ (x_t[b] - a * mu)
            want = {"eps": e_eps, "x0": e_x0, "v": a * e_eps - s * e_x0}[parametrisation]
            np.testing.assert_allclose(got[b], want, rtol=2e-4, atol=2e-4)


def test_per_example_noise_levels_match_a_scalar_one():
    """Training passes abar f32[B, 1]; the sampler a scalar: the same prediction row by row."""
    rng = np.random.default_rng(1)
    arrays = _random_anchor(rng)[0]
    conds = jnp.asarray(rng.normal(size=(4, K, C)), jnp.float32)
    masks = jnp.ones((4, K))
    x_t = jnp.asarray(rng.normal(size=(4, F)), jnp.float32)
    prep = anchor.prepare(arrays, conds, masks)
    abar = jnp.asarray([[0.9], [0.5], [0.1], [0.3]], jnp.float32)
    rows = anchor.predict(prep, x_t, abar, "v")
    for b in range(4):
        one = anchor.predict(jax.tree.map(lambda a: a, prep), x_t, abar[b, 0], "v")
        np.testing.assert_allclose(rows[b], one[b], rtol=1e-5, atol=1e-6)


def _joint_gaussian_sample(rng, n):
    """(target f[n, 2], c1 f[n, 2], c2 f[n, 1]) jointly Gaussian, and its covariance."""
    L = rng.normal(size=(5, 5)) / 2 + np.eye(5)
    cov = L @ L.T
    z = rng.normal(size=(n, 5)) @ L.T + np.array([0.5, -1.0, 0.2, 0.0, 1.0])
    return z[:, :2], z[:, 2:4], z[:, 4:5], cov


def test_fit_recovers_each_patterns_population_regression():
    """Multi model (K = 2) on 40,000 rows, each condition missing at random in 30%: every pattern's
    coefficients and residual covariance are the population's Schur complement (to sampling error)."""
    rng = np.random.default_rng(2)
    n = 40_000
    y, c1, c2, cov = _joint_gaussian_sample(rng, n)
    conds = np.zeros((n, 2, 2))
    conds[:, 0, :2], conds[:, 1, :1] = c1, c2
    present = rng.random((n, 2)) > 0.3
    conds = conds * present[..., None]
    fitted = anchor.fit(y, conds, present, np.ones(n, bool), (2, 1))
    slot_cols = {0: [2, 3], 1: [4]}  # the conditions' columns in the joint covariance
    for p in range(4):
        cols = [c for k in (0, 1) if p >> k & 1 for c in slot_cols[k]]
        if cols:
            beta = np.linalg.solve(cov[np.ix_(cols, cols)], cov[np.ix_(cols, [0, 1])])
            resid = cov[:2, :2] - cov[np.ix_([0, 1], cols)] @ beta
        else:
            beta, resid = np.zeros((0, 2)), cov[:2, :2]
        flat = [k * 2 + j for k in (0, 1) if p >> k & 1 for j in range(len(slot_cols[k]))]
        np.testing.assert_allclose(fitted["coef"][p][flat], beta, atol=0.05)
        others = [r for r in range(4) if r not in flat]
        assert np.all(fitted["coef"][p][others] == 0)
        S = fitted["basis"][p] @ np.diag(fitted["eig"][p]) @ fitted["basis"][p].T
        np.testing.assert_allclose(S, resid, atol=0.06 * np.abs(resid).max())


def test_a_pattern_with_too_few_rows_falls_back_to_a_sub_pattern():
    rng = np.random.default_rng(3)
    n = 2000
    y, c1, c2, _ = _joint_gaussian_sample(rng, n)
    conds = np.zeros((n, 2, 2))
    conds[:, 0, :2], conds[:, 1, :1] = c1, c2
    present = np.ones((n, 2), bool)
    present[5:, 1] = False  # c2 on 5 rows only: patterns {c2} and {c1, c2} cannot be fitted
    fitted = anchor.fit(y, conds * present[..., None], present, np.ones(n, bool), (2, 1))
    for key in ("coef", "bias", "eig"):
        np.testing.assert_array_equal(fitted[key][3], fitted[key][1])  # {c1, c2} -> {c1}
        np.testing.assert_array_equal(fitted[key][2], fitted[key][0])  # {c2} -> nothing
    assert np.abs(fitted["coef"][1]).max() > 0.1


def test_anchor_alone_samples_the_gaussian_conditional():
    """A model whose network outputs 0 is the anchor alone: the ancestral sampler then draws from the
    fitted N(mu(c), S) (exact-denoiser sampling; the spread to within 10%, as measured for this
    sampler at T = 100)."""
    rng = np.random.default_rng(4)
    cfg = denoiser.DenoiserConfig(hidden=8, n_layers=2, time_dim=4, cond_embed_dim=4, parametrisation="v",
                                  anchor="gaussian", x_dim=F, cond_dims=(C,))
    params, stats = denoiser.init(jax.random.PRNGKey(0), cfg)
    params["layers"][-1] = jax.tree.map(jnp.zeros_like, params["layers"][-1])  # network output 0
    arrays, coef, bias, covs = _random_anchor(np.random.default_rng(5))
    one_slot = {"coef": arrays["coef"][:2, :C], "bias": arrays["bias"][:2], "basis": arrays["basis"][:2],
                "eig": arrays["eig"][:2]}
    params["anchor"] = one_slot
    schedule = make_schedule(ScheduleConfig(timesteps=100))
    sampler = make_sampler(make_model(cfg, 100), schedule, rejection=RejectionConfig(enabled=False))
    n = 4000
    c = rng.normal(size=(C,))
    conds = jnp.tile(jnp.asarray(c, jnp.float32)[None, None, None], (n, 1, 1, 1))
    stack = lambda t: jax.tree.map(lambda a: a[None], t)
    x = np.asarray(sampler(stack(params), stack(stats), jax.random.PRNGKey(1), conds, jnp.ones((n, 1, 1)),
                           jnp.ones((n, 1)), jnp.arange(n, dtype=jnp.int32)).x0, np.float64)
    mu = bias[1] + c @ coef[1, :C]
    se = np.sqrt(np.diag(covs[1]) / n)
    assert np.all(np.abs(x.mean(0) - mu) < 5 * se + 0.02)
    ratio = np.diag(np.cov(x, rowvar=False)) / np.diag(covs[1])
    assert np.all((ratio > 0.9) & (ratio < 1.1)), ratio


def test_training_keeps_the_fitted_anchor_and_the_checkpoint_restores_it(tiny_cohort, tmp_path):
    """Weight decay and EMA on: after training, every model's anchor is exactly its fit on the train
    rows, the checkpoint restores it, and the model set samples finite values."""
    arch = ArchConfig(hidden=16, n_layers=3, time_dim=8, cond_embed_dim=8, parametrisation="v", anchor="gaussian")
    tcfg = dataclasses.replace(TINY_TRAIN, epochs=2, eval_every=2, weight_decay=0.5, ema_decay=0.9)
    ms = pipeline.train(tiny_cohort, tmp_path / "m", arch=arch, schedule_cfg=TINY_SCHED, train_cfg=tcfg,
                        progress=False)
    train = pipeline.scaled_inputs(ms, tiny_cohort.split("train"))
    masks = {m: ~np.isnan(v).all(axis=1) for m, v in train.items()}
    loaded = checkpoint.load(tmp_path / "m")
    for name, g in ms.groups.items():
        want = anchor.fit_group(group_arrays(g, {m: np.nan_to_num(v) for m, v in train.items()}, masks),
                                g.true_cond_dims)
        assert np.abs(np.asarray(want["coef"])).max() > 0.05  # fitted, not the zero template
        for key in want:
            np.testing.assert_array_equal(np.asarray(g.params["anchor"][key]), np.asarray(want[key]), err_msg=name)
            np.testing.assert_array_equal(np.asarray(loaded.groups[name].params["anchor"][key]),
                                          np.asarray(want[key]), err_msg=name)
    from cgjax.ensemble import sample_target
    from cgjax.sampling.options import SampleOptions
    test = pipeline.scaled_inputs(ms, tiny_cohort.split("test"))
    target = ms.modalities[0]
    for method in ("coherent", "multi"):
        x = sample_target(loaded, target, {m: test[m][:20] for m in ms.modalities[1:]},
                          SampleOptions(method=method, replicates=2, seed=0)).x
        assert np.isfinite(x).all()


def test_bad_anchor_is_a_config_error():
    with pytest.raises(ConfigError, match="arch.anchor"):
        ArchConfig(anchor="linear")
    with pytest.raises(ConfigError, match="at most 6 conditions"):
        denoiser.DenoiserConfig(anchor="gaussian", x_dim=2, cond_dims=(1,) * 7)
