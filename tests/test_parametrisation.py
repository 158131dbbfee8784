"""The network's parametrisation (eps, v, x0): conversion identities in float64, the same samples
from an exact Gaussian denoiser written in each form, the training target, and checkpoints."""

import copy
import dataclasses
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cgjax import checkpoint, pipeline
from cgjax.diffusion import denoiser, train
from cgjax.diffusion.denoiser import ArchConfig
from cgjax.diffusion.parametrisation import regression_target, to_eps
from cgjax.diffusion.schedule import ScheduleConfig, make_schedule
from cgjax.diffusion.train import GroupData, TrainConfig, init_state, make_train_fn
from cgjax.ensemble import sample_target
from cgjax.errors import ConfigError
from cgjax.sampling.coherent import RejectionConfig, make_sampler
from cgjax.sampling.options import SampleOptions
from cgjax.sampling.solvers import SolverConfig
from oracles import eps_model, gaussian_eps_fn


def test_conversions_round_trip_against_closed_forms_in_float64():
    """x_t = a x0 + s eps. v = a eps - s x0 (Salimans & Ho 2022) gives back eps = s x_t + a v and
    x0 = (x_t - s eps) / a = a x_t - s v; the x0 form gives back eps = (x_t - a x0) / s."""
    rng = np.random.default_rng(0)
    x0, eps = rng.normal(size=(2, 50, 7))
    abar = rng.uniform(1e-5, 1 - 1e-4, size=(50, 1))
    a, s = np.sqrt(abar), np.sqrt(1 - abar)
    x_t = a * x0 + s * eps
    with jax.enable_x64(True):
        v = np.asarray(regression_target("v", x0, eps, abar))
        np.testing.assert_allclose(v, a * eps - s * x0, rtol=1e-13, atol=1e-13)
        eps_v = np.asarray(to_eps("v", v, x_t, abar))
        np.testing.assert_allclose(eps_v, eps, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose((x_t - s * eps_v) / a, x0, rtol=1e-7, atol=1e-7)  # x0 from the eps
        np.testing.assert_allclose(a * x_t - s * v, x0, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(np.asarray(to_eps("x0", regression_target("x0", x0, eps, abar), x_t, abar)), eps,
                                   rtol=1e-7, atol=1e-7)
        np.testing.assert_array_equal(np.asarray(to_eps("eps", eps, x_t, abar)), eps)
    with pytest.raises(ValueError, match="parametrisation"):
        to_eps("score", eps, x_t, abar)


def test_unknown_parametrisation_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match=r"--parametrisation .* eps, v, x0, got 'w'"):
        ArchConfig(parametrisation="w")


def _as(parametrisation, eps_fn, schedule):
    """The exact denoiser's output rewritten in ``parametrisation`` (from its eps and x_t)."""

    def out(params, batch_stats, x_t, t, conds, masks):
        e = eps_fn(params, batch_stats, x_t, t, conds, masks)
        abar = schedule.alpha_bars[t]
        x0 = (x_t[None] - jnp.sqrt(1 - abar) * e) / jnp.sqrt(abar)
        return jnp.sqrt(abar) * e - jnp.sqrt(1 - abar) * x0 if parametrisation == "v" else x0

    return out


def test_exact_gaussian_denoiser_in_v_or_x0_form_gives_the_eps_forms_samples():
    """The sampler converts a v (x0) output to eps: the exact Gaussian denoiser written in that form
    draws the samples of the eps form, with the stochastic and the deterministic solvers; read as
    eps (the wrong parametrisation) it does not."""
    schedule = make_schedule(ScheduleConfig(timesteps=30))
    mu, cov = np.array([1.5, -0.5]), np.array([[1.0, 0.6], [0.6, 0.5]])
    eps_fn = gaussian_eps_fn(mu, cov, schedule)
    cfg = denoiser.DenoiserConfig(x_dim=2, cond_dims=(1,), hidden=4, n_layers=2, time_dim=2, cond_embed_dim=1)
    N = 300
    args = (None, None, jax.random.PRNGKey(0), jnp.zeros((N, 1, 1, 1)), jnp.ones((N, 1, 1)), jnp.ones((N, 1)),
            jnp.arange(N))
    draw = lambda c, fn, solver: np.asarray(make_sampler(eps_model(fn, c.x_dim, c.parametrisation), schedule,
                                                         rejection=RejectionConfig(enabled=False),
                                                         solver=solver)(*args).x0)
    refs = {}
    for solver in (SolverConfig("ddpm"), SolverConfig("ddim", 10, eta=0.0)):
        ref = refs[solver.kind] = draw(cfg, eps_fn, solver)
        assert abs(ref.mean(0) - mu).max() < 0.25  # draws of the data law
        for p in ("v", "x0"):
            got = draw(dataclasses.replace(cfg, parametrisation=p), _as(p, eps_fn, schedule), solver)
            np.testing.assert_allclose(got, ref, atol=2e-3)
    wrong = draw(cfg, _as("v", eps_fn, schedule), SolverConfig("ddpm"))  # v read as eps
    assert np.abs(wrong - refs["ddpm"]).max() > 0.5


CFG = denoiser.DenoiserConfig(x_dim=2, cond_dims=(2,), hidden=16, n_layers=3, time_dim=8, cond_embed_dim=4)
SCHED = make_schedule(ScheduleConfig(timesteps=30))


def test_the_loss_regresses_the_parametrisations_target(monkeypatch):
    """With x0 = 0, x_t = s eps: an output of 0 scores mean(eps^2) = mean(x_t^2 / s^2) for eps,
    mean(v^2) = mean(abar x_t^2 / s^2) for v and exactly 0 for x0 (from the x_t and t the network saw)."""
    seen = []

    def zero(params, batch_stats, x_t, t, conds, masks, cfg, *, train):
        jax.debug.callback(lambda x, tt: seen.append((np.asarray(x, np.float64), np.asarray(tt))), x_t, t)
        return jnp.zeros_like(x_t), batch_stats

    monkeypatch.setattr(train.denoiser, "apply", zero)
    tcfg = TrainConfig(batch_size=64, steps_per_call=1, epochs=1)
    data = GroupData(jnp.zeros((1, 40, 2)), jnp.ones((1, 40, 1, 2)), jnp.ones((1, 40, 1), bool), jnp.ones((1, 40), bool))
    abar = np.asarray(SCHED.alpha_bars, np.float64)
    for p, weight in (("eps", lambda ab: 1 / (1 - ab)), ("v", lambda ab: ab / (1 - ab)), ("x0", lambda ab: 0 * ab)):
        seen.clear()
        cfg = dataclasses.replace(CFG, parametrisation=p)
        state = init_state(jax.random.PRNGKey(1), cfg, [cfg.cond_dims], tcfg)
        _, loss = make_train_fn(cfg, SCHED, tcfg, multi=False)(state, data, jax.random.PRNGKey(2))
        jax.block_until_ready(loss)
        (x_t, t), = seen  # one step of one model
        x_t, t = x_t.reshape(-1, 2), t.reshape(-1)
        expected = np.mean(weight(abar[t])[:, None] * x_t ** 2)
        np.testing.assert_allclose(float(loss[0]), expected, rtol=1e-5, atol=1e-7)


def test_training_with_v_lowers_the_loss():
    """A tiny problem (x0 = a linear map of the condition plus noise): the v loss of the last 100
    steps is well under that of the first 100."""
    rng = np.random.default_rng(0)
    c = rng.normal(size=(400, 2))
    x0 = c @ np.array([[1.0, -0.5], [0.3, 0.8]]) + 0.3 * rng.normal(size=(400, 2))
    data = GroupData(jnp.asarray(x0[None], jnp.float32), jnp.asarray(c[None, :, None], jnp.float32),
                     jnp.ones((1, 400, 1), bool), jnp.ones((1, 400), bool))
    cfg = dataclasses.replace(CFG, parametrisation="v")
    tcfg = TrainConfig(batch_size=64, steps_per_call=100, learning_rate=3e-3, epochs=1)
    fn = make_train_fn(cfg, SCHED, tcfg, multi=False)
    state = init_state(jax.random.PRNGKey(0), cfg, [cfg.cond_dims], tcfg)
    losses = []
    for i in range(4):
        state, loss = fn(state, data, jax.random.PRNGKey(3))
        losses.append(float(loss[0]))
    assert np.isfinite(losses).all() and losses[-1] < 0.7 * losses[0], losses


def _with_parametrisation(ms, parametrisation):
    out = copy.deepcopy(ms)
    out.arch = dataclasses.replace(ms.arch, parametrisation=parametrisation)
    for g in out.groups.values():
        g.dcfg = dataclasses.replace(g.dcfg, parametrisation=parametrisation)
    return out


def test_checkpoint_keeps_the_parametrisation_and_old_checkpoints_load_as_eps(tiny_trained, tiny_cohort, tmp_path):
    ms, out = tiny_trained
    given = {m: v[:20] for m, v in pipeline.scaled_inputs(ms, tiny_cohort.split("test")).items() if m != "rnaseq"}
    opts = SampleOptions("coherent", replicates=2, seed=3)
    as_v = _with_parametrisation(ms, "v")
    checkpoint.save(tmp_path / "v", as_v)
    restored = checkpoint.load(tmp_path / "v")
    assert restored.arch.parametrisation == "v"
    assert all(g.dcfg.parametrisation == "v" for g in restored.groups.values())
    v_samples = sample_target(restored, "rnaseq", given, opts).x
    np.testing.assert_array_equal(v_samples, sample_target(as_v, "rnaseq", given, opts).x)
    eps_samples = sample_target(ms, "rnaseq", given, opts).x
    assert not np.allclose(v_samples, eps_samples)  # the same weights read as v sample something else

    # a checkpoint written before the option existed has no "parametrisation" anywhere: eps
    old = tmp_path / "old"
    shutil.copytree(out, old)
    meta_file = old / checkpoint.META_FILE
    meta = json.loads(meta_file.read_text())
    assert meta["arch"]["parametrisation"] == "eps"
    del meta["arch"]["parametrisation"]
    for g in meta["groups"].values():
        del g["config"]["parametrisation"]
    meta_file.write_text(json.dumps(meta))
    loaded = checkpoint.load(old)
    assert loaded.arch.parametrisation == "eps"
    assert all(g.dcfg.parametrisation == "eps" for g in loaded.groups.values())
    np.testing.assert_array_equal(sample_target(loaded, "rnaseq", given, opts).x, eps_samples)


@pytest.mark.parametrize("weighting", ["eps", "min_snr"])
def test_loss_weighting_gives_the_x0_unit_weight_whatever_the_network_predicts(monkeypatch, weighting):
    """An output of 0 implies x0_hat = x_t / a (eps), a x_t (v) or 0 (x0); with x0 = 0 the weighted
    loss must be mean(W(t) x0_hat^2) with W = snr (``eps``) or min(snr, gamma) (``min_snr``),
    derived here from the implied x0_hat in float64, not from the library's weight."""
    seen = []

    def zero(params, batch_stats, x_t, t, conds, masks, cfg, *, train):
        jax.debug.callback(lambda x, tt: seen.append((np.asarray(x, np.float64), np.asarray(tt))), x_t, t)
        return jnp.zeros_like(x_t), batch_stats

    monkeypatch.setattr(train.denoiser, "apply", zero)
    gamma = 0.5  # binds on most of this schedule's steps
    tcfg = TrainConfig(batch_size=64, steps_per_call=1, epochs=1, loss_weighting=weighting, min_snr_gamma=gamma)
    data = GroupData(jnp.zeros((1, 40, 2)), jnp.ones((1, 40, 1, 2)), jnp.ones((1, 40, 1), bool), jnp.ones((1, 40), bool))
    abar = np.asarray(SCHED.alpha_bars, np.float64)
    implied = {"eps": lambda x, a: x / a, "v": lambda x, a: a * x, "x0": lambda x, a: 0 * x}
    for p, x0_hat in implied.items():
        seen.clear()
        cfg = dataclasses.replace(CFG, parametrisation=p)
        state = init_state(jax.random.PRNGKey(1), cfg, [cfg.cond_dims], tcfg)
        _, loss = make_train_fn(cfg, SCHED, tcfg, multi=False)(state, data, jax.random.PRNGKey(2))
        jax.block_until_ready(loss)
        (x_t, t), = seen
        x_t, t = x_t.reshape(-1, 2), t.reshape(-1)
        snr = abar[t] / (1 - abar[t])
        w = snr if weighting == "eps" else np.minimum(snr, gamma)
        expected = np.mean(w[:, None] * x0_hat(x_t, np.sqrt(abar[t])[:, None]) ** 2)
        np.testing.assert_allclose(float(loss[0]), expected, rtol=1e-4, atol=1e-7)


def test_unknown_loss_weighting_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match=r"loss_weighting must be one of .*'native'.*got 'snr'"):
        TrainConfig(loss_weighting="snr")
    with pytest.raises(ConfigError, match=r"min_snr_gamma must be a finite number > 0"):
        TrainConfig(min_snr_gamma=0.0)
