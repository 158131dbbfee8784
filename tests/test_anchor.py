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
from conftest import TINY_ARCH, TINY_SCHED, TINY_TRAIN

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


def test_a_large_pattern_is_fitted_on_a_bounded_subset(monkeypatch):
    """Per-pattern ridge regressions (targets and conditions wider than JOINT_MAX_DIMS): with a
    memory budget for 3,000 rows, a 40,000-row fit uses a fixed subset: the same every time, still
    close to the population regression, and not the fit on all rows."""
    monkeypatch.setattr(anchor, "JOINT_MAX_DIMS", 0)
    rng = np.random.default_rng(7)
    n = 40_000
    y, c1, c2, cov = _joint_gaussian_sample(rng, n)
    conds = np.zeros((n, 1, 2))
    conds[:, 0] = c1
    args = (y, conds, np.ones((n, 1), bool), np.ones(n, bool), (2,))
    full = anchor.fit(*args)
    monkeypatch.setattr(anchor, "LOO_BYTES", 3000 * 2 * len(anchor.ALPHAS) * 8)
    small, again = anchor.fit(*args), anchor.fit(*args)
    np.testing.assert_array_equal(small["coef"], again["coef"])
    assert not np.array_equal(small["coef"], full["coef"])
    beta = np.linalg.solve(cov[2:4, 2:4], cov[2:4, :2])
    np.testing.assert_allclose(small["coef"][1], beta, atol=0.1)


def test_a_one_feature_target_is_fitted_as_that_feature_of_a_wider_one():
    """Penalties are chosen per feature, so the fit of feature 0 alone is column 0 of the fit of
    features 0 and 1 (scikit-learn drops a dimension for a single target; the fit must not)."""
    rng = np.random.default_rng(11)
    y, c1, _, _ = _joint_gaussian_sample(rng, 500)
    one, two = anchor.ridge_gaussian(c1, y[:, :1]), anchor.ridge_gaussian(c1, y)
    assert one[0].shape == (2, 1) and one[1].shape == (1,) and one[2].shape == (1, 1)
    np.testing.assert_allclose(one[0], two[0][:, :1], rtol=1e-8)
    np.testing.assert_allclose(one[1], two[1][:1], rtol=1e-8)
    np.testing.assert_allclose(one[2], two[2][:1, :1], rtol=1e-8)


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


def test_training_steps_leave_the_anchor_as_fitted():
    """With weight decay and EMA on, optimiser steps change the network but not the anchor (live
    weights and average)."""
    from cgjax.diffusion.train import GroupData, TrainConfig, fit_anchor, init_state, make_train_fn

    rng = np.random.default_rng(6)
    M, N = 2, 96
    x0 = rng.normal(size=(M, N, F)).astype(np.float32)
    conds = rng.normal(size=(M, N, 1, C)).astype(np.float32)
    data = GroupData(jnp.asarray(x0), jnp.asarray(conds), jnp.ones((M, N, 1), bool), jnp.ones((M, N), bool))
    cfg = denoiser.DenoiserConfig(hidden=8, n_layers=3, time_dim=4, cond_embed_dim=4, parametrisation="v",
                                  anchor="gaussian", x_dim=F, cond_dims=(C,))
    tcfg = TrainConfig(batch_size=16, steps_per_call=5, weight_decay=0.5, ema_decay=0.9, learning_rate=1e-2)
    cfg, fitted = fit_anchor(cfg, ((C,), (C,)), data)
    state = init_state(jax.random.PRNGKey(0), cfg, ((C,), (C,)), tcfg, fitted)
    fitted = jax.tree.map(np.asarray, state.params["anchor"])
    assert np.abs(fitted["coef"]).max() > 0.01
    step = make_train_fn(cfg, make_schedule(TINY_SCHED), tcfg, multi=False)
    w0 = np.asarray(state.params["layers"][0]["w_x"])
    for i in range(2):
        state, _ = step(state, data, jax.random.PRNGKey(i))
    assert np.abs(np.asarray(state.params["layers"][0]["w_x"]) - w0).max() > 1e-4
    for tree in (state.params, state.ema):
        for key, want in fitted.items():
            np.testing.assert_array_equal(np.asarray(tree["anchor"][key]), want)


@pytest.fixture(scope="module")
def anchored(tiny_cohort, tmp_path_factory):
    """The tiny model set of conftest's ``tiny_trained``, trained with the Gaussian anchor."""
    out = tmp_path_factory.mktemp("anchored") / "m"
    ms = pipeline.train(tiny_cohort, out, arch=dataclasses.replace(TINY_ARCH, anchor="gaussian"),
                        schedule_cfg=TINY_SCHED, train_cfg=TINY_TRAIN, progress=False)
    return ms, out


def test_the_anchor_is_fitted_on_the_train_rows_and_restored(tiny_cohort, anchored):
    ms, out = anchored
    train = pipeline.scaled_inputs(ms, tiny_cohort.split("train"))
    masks = {m: ~np.isnan(v).all(axis=1) for m, v in train.items()}
    loaded = checkpoint.load(out)
    for name, g in ms.groups.items():
        want = anchor.fit_group(group_arrays(g, {m: np.nan_to_num(v) for m, v in train.items()}, masks),
                                g.true_cond_dims)
        assert np.abs(np.asarray(want["coef"])).max() > 0.05  # fitted, not the zero template
        for key in want:
            np.testing.assert_array_equal(np.asarray(g.params["anchor"][key]), np.asarray(want[key]), err_msg=name)
            np.testing.assert_array_equal(np.asarray(loaded.groups[name].params["anchor"][key]),
                                          np.asarray(want[key]), err_msg=name)


def test_choose_per_model_keeps_the_better_validation_score(tiny_cohort, anchored, tiny_trained):
    """Each model comes from the set with the lower validation score; a model that kept the plain
    network samples exactly as it does in the plain set (its anchor is zero)."""
    from cgjax.ensemble import sample_target
    from cgjax.ensemble.choose import choose_per_model
    from cgjax.errors import CgjaxError
    from cgjax.sampling.options import SampleOptions

    (a_ms, _), (p_ms, _) = anchored, tiny_trained
    crit = a_ms.train_cfg.select_by
    # the tiny anchored models validate better everywhere: give the plain multi models better scores,
    # so that both branches are taken
    p_ms = dataclasses.replace(p_ms, val_metrics={
        n: {**v, crit: a_ms.val_metrics[n][crit] - 1.0} if n.endswith("_from_multi") else v
        for n, v in p_ms.val_metrics.items()})
    merged, chosen = choose_per_model(a_ms, p_ms)
    for name, kept in chosen.items():
        plain_better = p_ms.val_metrics[name][crit] < a_ms.val_metrics[name][crit]
        assert kept == ("none" if plain_better else "gaussian")
        assert merged.val_metrics[name][crit] == min(p_ms.val_metrics[name][crit], a_ms.val_metrics[name][crit])
    assert {chosen[n] for n in chosen if n.endswith("_from_multi")} == {"none"}
    # a plain network (zero anchor) is marked so that train.residual_gains never scales it
    assert all(merged.val_metrics[n].get("residual_gain") == 1.0 for n in chosen if chosen[n] == "none")
    assert "gaussian" in chosen.values()
    test = pipeline.scaled_inputs(merged, tiny_cohort.split("test"))
    for target in merged.modalities:
        src = p_ms if chosen[f"{target}_from_multi"] == "none" else a_ms
        given = {m: test[m][:16] for m in merged.modalities if m != target}
        opts = SampleOptions(method="multi", replicates=2, seed=3)
        got, want = sample_target(merged, target, given, opts).x, sample_target(src, target, given, opts).x
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # with validation rows, both sets are re-scored with one noise key and compared on those scores
    from cgjax.ensemble import validate_group

    _, val, _ = pipeline.split_and_scale(tiny_cohort)
    _, paired = choose_per_model(a_ms, p_ms, val.data, val.masks)
    crit_a, crit_p = {}, {}
    for ms_, out_ in ((a_ms, crit_a), (p_ms, crit_p)):
        for g in ms_.groups.values():
            sc = validate_group(g, ms_.schedule_cfg, group_arrays(g, val.data, val.masks), ms_.train_cfg.val_replicates,
                                jax.random.PRNGKey(0))[crit]
            out_.update({s.name: sc[m] for m, s in enumerate(g.specs)})
    assert paired == {n: "none" if crit_p[n] < crit_a[n] else "gaussian" for n in paired}
    with pytest.raises(CgjaxError, match="arch.anchor"):
        choose_per_model(a_ms, a_ms)
    other = dataclasses.replace(p_ms, train_cfg=dataclasses.replace(p_ms.train_cfg, seed=9))
    with pytest.raises(CgjaxError, match="training configuration"):
        choose_per_model(a_ms, other)


def test_anchor_auto_trains_both_and_keeps_the_better_per_model(tiny_cohort, anchored, tiny_trained, tmp_path):
    """pipeline.train with arch.anchor = 'auto' (here finding both parts already trained, as after an
    interrupted run) writes choose_per_model's combined set to --out."""
    import shutil

    from cgjax.ensemble.choose import choose_per_model

    out = tmp_path / "m"
    parts = pipeline.anchor_parts(out)
    shutil.copytree(tiny_trained[1], parts["none"])
    shutil.copytree(anchored[1], parts["gaussian"])
    ms = pipeline.train(tiny_cohort, out, arch=dataclasses.replace(TINY_ARCH, anchor="auto"), schedule_cfg=TINY_SCHED,
                        train_cfg=TINY_TRAIN, progress=False)
    _, val, _ = pipeline.split_and_scale(tiny_cohort)
    want, _ = choose_per_model(anchored[0], tiny_trained[0], val.data, val.masks)
    loaded = checkpoint.load(out)
    assert loaded.arch.anchor == "gaussian" and loaded.val_metrics == want.val_metrics == ms.val_metrics
    for name, g in want.groups.items():
        for a, b in zip(jax.tree.leaves(g.params), jax.tree.leaves(loaded.groups[name].params)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_scale_residual_scales_each_models_network_output_exactly(anchored):
    """Gain g_m on stacked model m multiplies its network output by g_m (the output layer is linear),
    leaving its anchor and every other model untouched."""
    from cgjax.ensemble.choose import scale_residual

    ms, _ = anchored
    g = max(ms.groups.values(), key=lambda g: len(g.specs))
    M, cfg = len(g.specs), g.dcfg
    gain = np.linspace(0.0, 1.5, M)
    rng = np.random.default_rng(12)
    B = 8
    x_t = jnp.asarray(rng.normal(size=(B, cfg.x_dim)), jnp.float32)
    t = jnp.asarray(rng.integers(0, TINY_SCHED.timesteps, B), jnp.int32)
    conds = jnp.asarray(rng.normal(size=(B, cfg.n_conds, max(cfg.cond_dims))), jnp.float32)
    masks = jnp.ones((B, cfg.n_conds), jnp.float32)
    run = jax.vmap(lambda p, s: denoiser.apply(p, s, x_t, t, conds, masks, cfg, train=False)[0])
    scaled = scale_residual(g.params, gain)
    want = np.asarray(run(g.params, g.batch_stats)) * gain[:, None, None]
    np.testing.assert_allclose(np.asarray(run(scaled, g.batch_stats)), want, rtol=1e-5, atol=1e-6)
    for key in g.params["anchor"]:
        assert scaled["anchor"][key] is g.params["anchor"][key]


def test_choose_residual_gain_drops_a_broken_residual(tiny_cohort, anchored):
    """Every network output of a copy of the anchored set is blown up 10 times: the gains that undo
    it (1/10) or drop the network (0) must win over keeping it (1) for every model, the parameters
    must be scaled by the gain chosen, and val_metrics must hold its score."""
    from cgjax.ensemble.choose import choose_residual_gain, scale_residual
    from cgjax.errors import CgjaxError

    ms = dataclasses.replace(anchored[0], val_metrics=dict(anchored[0].val_metrics))
    ms.groups = {n: dataclasses.replace(g, params=scale_residual(g.params, 10.0))
                       for n, g in anchored[0].groups.items()}
    broken = {n: g.params for n, g in ms.groups.items()}
    _, val, _ = pipeline.split_and_scale(tiny_cohort)
    chosen = choose_residual_gain(ms, val.data, val.masks, gains=(0.0, 0.1, 1.0))
    assert set(chosen) == {s.name for g in ms.groups.values() for s in g.specs}
    assert set(chosen.values()) <= {0.0, 0.1} and 0.1 in chosen.values()
    for n, g in ms.groups.items():
        gains = np.array([chosen[s.name] for s in g.specs])
        last = g.params["layers"][-1]["w_h"]
        np.testing.assert_allclose(np.asarray(last), np.asarray(broken[n]["layers"][-1]["w_h"]) * gains[:, None, None],
                                   rtol=1e-6)
        for s in g.specs:
            assert ms.val_metrics[s.name]["residual_gain"] == chosen[s.name]
            assert np.isfinite(ms.val_metrics[s.name][ms.train_cfg.select_by])
    with pytest.raises(CgjaxError, match="arch.anchor"):
        choose_residual_gain(dataclasses.replace(ms, arch=dataclasses.replace(ms.arch, anchor="none")),
                             val.data, val.masks)
    for bad in ((), (0.0, float("nan"))):
        with pytest.raises(CgjaxError, match="residual gains must be a non-empty list of finite numbers"):
            choose_residual_gain(ms, val.data, val.masks, gains=bad)


def test_train_residual_gains_are_chosen_once_and_saved(tiny_cohort, anchored, tiny_trained, tmp_path):
    """pipeline.train with train.residual_gains on a finished anchored checkpoint (nothing left to
    train) chooses each model's gain, scales it and saves it; running it again changes nothing (a
    model is never scaled twice); a set without the anchor is left as trained."""
    import shutil

    out = tmp_path / "m"
    shutil.copytree(anchored[1], out)
    arch = dataclasses.replace(TINY_ARCH, anchor="gaussian")
    tcfg = dataclasses.replace(TINY_TRAIN, residual_gains=(0.0, 1.0))
    ms = pipeline.train(tiny_cohort, out, arch=arch, schedule_cfg=TINY_SCHED, train_cfg=tcfg, progress=False)
    gains = {n: v["residual_gain"] for n, v in ms.val_metrics.items()}
    assert set(gains) == set(anchored[0].val_metrics) and set(gains.values()) <= {0.0, 1.0}
    for name, g in ms.groups.items():
        want = np.asarray(anchored[0].groups[name].params["layers"][-1]["b"]) * \
            np.array([gains[s.name] for s in g.specs])[:, None]
        np.testing.assert_array_equal(np.asarray(g.params["layers"][-1]["b"]), want)
    loaded = checkpoint.load(out)
    assert loaded.val_metrics == ms.val_metrics and loaded.train_cfg.residual_gains == (0.0, 1.0)
    again = pipeline.train(tiny_cohort, out, arch=arch, schedule_cfg=TINY_SCHED, train_cfg=tcfg, progress=False)
    for name, g in again.groups.items():
        for a, b in zip(jax.tree.leaves(g.params), jax.tree.leaves(ms.groups[name].params)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    plain_out = tmp_path / "plain"
    shutil.copytree(tiny_trained[1], plain_out)
    plain = pipeline.train(tiny_cohort, plain_out, arch=TINY_ARCH, schedule_cfg=TINY_SCHED, train_cfg=tcfg,
                           progress=False)
    assert plain.val_metrics == tiny_trained[0].val_metrics
    for name, g in plain.groups.items():
        for a, b in zip(jax.tree.leaves(g.params), jax.tree.leaves(tiny_trained[0].groups[name].params)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ConfigError, match="residual_gains"):
        dataclasses.replace(TINY_TRAIN, residual_gains=(-1.0,))


def test_bad_anchor_is_a_config_error():
    with pytest.raises(ConfigError, match="arch.anchor"):
        ArchConfig(anchor="linear")
    with pytest.raises(ConfigError, match="resolved by cgjax.pipeline.train"):
        denoiser.DenoiserConfig(anchor="auto", x_dim=2, cond_dims=(1,))
    with pytest.raises(ConfigError, match="at most 6 conditions"):
        denoiser.DenoiserConfig(anchor="gaussian", x_dim=2, cond_dims=(1,) * 7)


def _zero_networks(ms):
    """A copy of ``ms`` whose networks output 0 (last layer zeroed): each model is its anchor alone."""
    groups = {}
    for name, g in ms.groups.items():
        params = dict(g.params)
        params["layers"] = list(params["layers"])
        params["layers"][-1] = jax.tree.map(jnp.zeros_like, params["layers"][-1])
        groups[name] = dataclasses.replace(g, params=params)
    return dataclasses.replace(ms, groups=groups)


def test_anchored_composition_of_anchors_alone_is_the_multi_models_anchor(tiny_cohort, anchored):
    """With every network zeroed, ``--composition anchored`` samples the multi model's anchor law for
    each row's own pattern of conditions: the multi model's trajectories (same noise), on test rows
    that miss some modalities. The average of the same members does not."""
    from cgjax.ensemble import sample_target
    from cgjax.ensemble.sample import composition_for
    from cgjax.errors import CgjaxError
    from cgjax.sampling.options import SampleOptions

    ms = _zero_networks(anchored[0])
    test = pipeline.scaled_inputs(ms, tiny_cohort.split("test"))
    target = ms.modalities[0]
    given = {m: test[m][:24] for m in ms.modalities if m != target}
    given[ms.modalities[1]][:8] = np.nan  # rows without the first condition: another pattern
    no_rej = RejectionConfig(enabled=False)
    run = lambda **kw: sample_target(ms, target, given, SampleOptions(replicates=2, seed=5, rejection=no_rej, **kw)).x
    multi = run(method="multi")
    anchored_x = run(method="coherent", composition="anchored")
    np.testing.assert_allclose(anchored_x, multi, rtol=1e-4, atol=1e-4)
    assert np.abs(run(method="coherent", composition="average") - multi).max() > 1e-2
    # a model that kept the plain network (all-zero anchor, --anchor auto) is refused, not used
    plain = dataclasses.replace(ms, groups=dict(ms.groups))
    mgroup, idx = plain.find(f"{target}_from_multi")
    params = dict(mgroup.params)
    params["anchor"] = jax.tree.map(lambda a: a.at[idx].set(0), params["anchor"])
    plain.groups[mgroup.name] = dataclasses.replace(mgroup, params=params)
    with pytest.raises(CgjaxError, match=f"{target}_from_multi'\\] kept the plain network") as e:
        sample_target(plain, target, given, SampleOptions(composition="anchored"))
    assert "\n" not in str(e.value)
    # the default (auto) is anchored here, and the average where a model kept the plain network
    assert composition_for(ms, target, SampleOptions()) == "anchored"
    np.testing.assert_array_equal(run(method="coherent", composition="auto"), anchored_x)
    assert composition_for(plain, target, SampleOptions()) == "average"
    avg = SampleOptions(replicates=2, seed=5, rejection=no_rej, composition="average")
    np.testing.assert_array_equal(sample_target(plain, target, given, dataclasses.replace(avg, composition="auto")).x,
                                  sample_target(plain, target, given, avg).x)
    assert composition_for(ms, target, SampleOptions(unconditional=True)) == "average"
    assert composition_for(ms, target, SampleOptions(method="multi")) == "average"


def test_anchored_composition_refuses_models_without_an_anchor_and_auto_averages(tiny_trained):
    from cgjax.ensemble import sample_target
    from cgjax.ensemble.sample import composition_for
    from cgjax.errors import CgjaxError
    from cgjax.sampling.options import SampleOptions

    ms = tiny_trained[0]
    target = ms.modalities[0]
    given = {m: np.zeros((3, ms.dims[m]), np.float32) for m in ms.modalities if m != target}
    with pytest.raises(CgjaxError, match="--composition anchored: it needs models with an anchor") as e:
        sample_target(ms, target, given, SampleOptions(composition="anchored"))
    assert "use --composition average" in str(e.value) and "\n" not in str(e.value)
    assert composition_for(ms, target, SampleOptions()) == "average"
    opts = SampleOptions(replicates=2, seed=1)
    np.testing.assert_array_equal(sample_target(ms, target, given, opts).x,
                                  sample_target(ms, target, given, dataclasses.replace(opts, composition="average")).x)


def test_anchored_composition_refuses_a_model_set_without_the_multi_model(anchored):
    from cgjax.ensemble import sample_target
    from cgjax.ensemble.sample import composition_for
    from cgjax.errors import CgjaxError
    from cgjax.sampling.options import SampleOptions

    ms = anchored[0]
    target = ms.modalities[0]
    mgroup, _ = ms.find(f"{target}_from_multi")
    singles = dataclasses.replace(ms, groups={n: g for n, g in ms.groups.items() if n != mgroup.name})
    given = {m: np.zeros((3, ms.dims[m]), np.float32) for m in ms.modalities if m != target}
    with pytest.raises(CgjaxError, match=f"--composition anchored: it takes the anchor of '{target}_from_multi', "
                                         "which this model set lacks; use --composition average") as e:
        sample_target(singles, target, given, SampleOptions(composition="anchored"))
    assert "\n" not in str(e.value)
    assert composition_for(singles, target, SampleOptions()) == "average"  # auto falls back
