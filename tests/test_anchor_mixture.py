"""The mixture anchor (``arch.anchor = "mixture"``, cgjax.diffusion.anchor): its exact denoiser against
float64 Bayes over the components, its gate against scikit-learn, the choice of the number of
components on laws with and without subtypes, sampling with the anchor alone, and its place in
training and checkpoints."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cgjax import checkpoint, pipeline
from cgjax.diffusion import anchor, denoiser
from cgjax.diffusion.schedule import ScheduleConfig, make_schedule
from cgjax.errors import ConfigError
from cgjax.sampling.algebra import make_model
from cgjax.sampling.coherent import RejectionConfig, make_sampler
from cgjax.scoring.metrics import energy_score
from conftest import TINY_ARCH, TINY_SCHED, TINY_TRAIN

F, K, C = 3, 2, 2


def _random_law(rng, n_components, cols):
    """A Mixture on the flattened K * C conditions using only ``cols`` of them."""
    coef, bias, cov = [], [], []
    for _ in range(n_components):
        a = np.zeros((K * C, F))
        a[cols] = rng.normal(size=(len(cols), F))
        r = rng.normal(size=(F, F))
        coef.append(a), bias.append(rng.normal(size=F)), cov.append(r @ r.T / F + 0.05 * np.eye(F))
    if n_components == 1:
        return anchor.Mixture(coef, bias, cov, None)
    d = 2
    proj = np.zeros((K * C, d))
    proj[cols] = rng.normal(size=(len(cols), d))
    prec = np.stack([np.linalg.cholesky(np.linalg.inv(np.eye(d) * rng.uniform(0.5, 2))) for _ in range(n_components)])
    gate = anchor.Gate(rng.normal(size=d), proj, rng.normal(size=(n_components, d)), prec,
                       rng.normal(size=n_components))
    return anchor.Mixture(coef, bias, cov, gate)


def _random_mixture_anchor(rng):
    """Patterns 0 and 1 with one component, 2 and 3 with three: as the arrays of zeros(cfg)."""
    laws = {0: _random_law(rng, 1, []), 1: _random_law(rng, 1, [0, 1]), 2: _random_law(rng, 3, [2, 3]),
            3: _random_law(rng, 3, [0, 1, 2, 3])}
    return {k: jnp.asarray(v) for k, v in anchor._pack(laws, "mixture").items()}, laws


def _bayes(law, c, x_t, abar, parametrisation):
    """float64 posterior expectation under ``law`` given one row's flattened conditions c and x_t:
    component posteriors w_j(c) N(x_t; a mu_j, a^2 S_j + s^2 I) from full-covariance solves."""
    a, s = np.sqrt(abar), np.sqrt(1 - abar)
    w = anchor.mixture_weights(law, c[None])[0]
    logpost, outs = [], []
    for j in range(len(law.coef)):
        mu = law.bias[j] + c @ law.coef[j]
        var = a * a * law.cov[j] + s * s * np.eye(F)
        r = x_t - a * mu
        logpost.append(np.log(w[j]) - 0.5 * (r @ np.linalg.solve(var, r) + np.linalg.slogdet(var)[1]))
        e_eps = s * np.linalg.solve(var, r)
        e_x0 = (x_t - s * e_eps) / a
        outs.append({"eps": e_eps, "x0": e_x0, "v": a * e_eps - s * e_x0}[parametrisation])
    post = np.exp(np.array(logpost) - max(logpost))
    return post / post.sum() @ np.array(outs)


@pytest.mark.parametrize("parametrisation", ["eps", "v", "x0"])
def test_mixture_prediction_is_the_posterior_expectation(parametrisation):
    rng = np.random.default_rng(0)
    arrays, laws = _random_mixture_anchor(rng)
    B = 8
    masks = np.array([[1, 1], [1, 0], [0, 1], [0, 0]] * 2, np.float32)
    conds = rng.normal(size=(B, K, C)) * masks[..., None]
    x_t = rng.normal(size=(B, F)) * 2
    prepared = anchor.prepare(arrays, jnp.asarray(conds, jnp.float32), jnp.asarray(masks))
    for abar in (0.97, 0.5, 0.02):
        got = np.asarray(anchor.predict(prepared, jnp.asarray(x_t, jnp.float32), jnp.float32(abar), parametrisation))
        for b in range(B):
            p = int(masks[b, 0] + 2 * masks[b, 1])
            want = _bayes(laws[p], conds[b].reshape(-1), x_t[b], abar, parametrisation)
            np.testing.assert_allclose(got[b], want, rtol=2e-4, atol=2e-4)


def test_the_gate_is_scikit_learns_mixture_on_the_projected_conditions():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(size=(150, 5)) - 2, rng.normal(size=(150, 5)) + 2])
    gate, gm = anchor._fit_gate(x, 3, seed=0)
    law = anchor.Mixture([np.zeros((5, 1))] * 3, [np.zeros(1)] * 3, [np.eye(1)] * 3, gate)
    x_new = rng.normal(size=(20, 5)) * 2
    z = (x_new - x.mean(axis=0)) / x.std(axis=0) @ np.linalg.svd((x - x.mean(0)) / x.std(0))[2][:5].T
    np.testing.assert_allclose(anchor.mixture_weights(law, x_new), gm.predict_proba(z), atol=1e-6)


def _subtype_law(rng, n, separated):
    """Conditions x f[n, 4] and a target y f[n, 5]: two subtypes whose targets follow x with opposite
    slopes, their x apart by 6 standard deviations (``separated``) or not at all (one Gaussian law)."""
    sub = rng.integers(0, 2, n)
    x = rng.normal(size=(n, 4)) + (6.0 * sub[:, None] if separated else 0.0)
    slope = np.random.default_rng(99).normal(size=(4, 5))  # the same law for every call
    sign = np.where(sub == 1, -1.0, 1.0) if separated else np.ones(n)
    y = sign[:, None] * ((x - (3.0 if separated else 0.0)) @ slope) + 0.3 * rng.normal(size=(n, 5))
    return x, y


def test_ridge_mixture_keeps_one_gaussian_and_finds_subtypes():
    """On one Gaussian law the cross-validated choice keeps a single component (the Gaussian anchor's
    law exactly); on two subtypes with opposite slopes it finds more, and its draws score better on
    fresh rows than the single regression's."""
    rng = np.random.default_rng(2)
    x, y = _subtype_law(rng, 600, separated=False)
    one = anchor.ridge_mixture(x, y)
    assert len(one.coef) == 1 and one.gate is None
    a, b, cov = anchor.ridge_gaussian(x, y)
    np.testing.assert_allclose(one.coef[0], a), np.testing.assert_allclose(one.cov[0], cov)

    x, y = _subtype_law(rng, 600, separated=True)
    law = anchor.ridge_mixture(x, y)
    assert len(law.coef) >= 2
    x_new, y_new = _subtype_law(np.random.default_rng(3), 300, separated=True)
    draw = lambda m: anchor.mixture_sample(m, x_new, 10, np.random.default_rng(0))
    single = anchor.Mixture(*[[v] for v in anchor.ridge_gaussian(x, y)], None)
    assert energy_score(draw(law), y_new).mean() < 0.7 * energy_score(draw(single), y_new).mean()


@pytest.mark.parametrize("joint", [True, False])
def test_a_one_component_mixture_anchor_predicts_as_the_gaussian_anchor(monkeypatch, joint):
    """On a Gaussian law every pattern keeps one component, and the mixture anchor's prediction is the
    Gaussian anchor's (same fit: the joint Gaussian's conditionals, or per-pattern regressions where
    the joint fit is off; only the arrays' layout differs)."""
    if not joint:
        monkeypatch.setattr(anchor, "JOINT_MAX_DIMS", 0)  # the Gaussian anchor's per-pattern fit
    rng = np.random.default_rng(4)
    n = 400
    conds = rng.normal(size=(n, K, C))
    y = conds.reshape(n, -1) @ rng.normal(size=(K * C, F)) + 0.5 * rng.normal(size=(n, F))
    present = rng.random((n, K)) > 0.2
    conds = conds * present[..., None]
    args = (y, conds, present, np.ones(n, bool), [C, C])
    mix, gauss = anchor.fit(*args, kind="mixture"), anchor.fit(*args, kind="gaussian")
    assert mix["gate_logw"].shape == (anchor.n_patterns(K), 1)  # the component axis is what the fit needs
    np.testing.assert_array_equal(anchor.components(mix), np.ones(anchor.n_patterns(K), int))
    np.testing.assert_array_equal(anchor.components(gauss), np.ones(anchor.n_patterns(K), int))
    x_t = jnp.asarray(rng.normal(size=(n, F)), jnp.float32)
    outs = [anchor.output({k: jnp.asarray(v) for k, v in a.items()}, jnp.asarray(conds, jnp.float32),
                          jnp.asarray(present, jnp.float32), x_t, jnp.float32(0.3), "v") for a in (mix, gauss)]
    np.testing.assert_allclose(np.asarray(outs[0]), np.asarray(outs[1]), rtol=1e-5, atol=1e-5)


def test_a_pattern_keeps_the_mixture_only_where_it_gains_enough(monkeypatch):
    """_subtype_law keeps a pattern's Gaussian law (None) unless the screen's mixture lowers the
    cross-validated energy score by SUBTYPE_MIN_GAIN: thresholds just below and just above the gain
    measured by mixture_cv on the same rows and folds give the mixture and the Gaussian law; a law
    without subtypes keeps the Gaussian law at the default threshold, one with them the mixture."""
    rng = np.random.default_rng(7)
    x, y = _subtype_law(rng, 600, separated=True)
    y = y + 2.0 * rng.normal(size=y.shape)  # subtypes that matter, not by a factor of two
    cand, scores, _ = anchor.mixture_cv(x, y, candidates=(1, anchor.SCREEN_COMPONENTS), seed=3)
    gain = 1 - scores[1].mean() / scores[0].mean()
    assert cand == [1, anchor.SCREEN_COMPONENTS] and 0.02 < gain < 0.9
    monkeypatch.setattr(anchor, "SUBTYPE_MIN_GAIN", gain - 0.01)
    law = anchor._subtype_law(x, y, x, seed=3)
    assert law is not None and len(law.coef) >= 2
    monkeypatch.setattr(anchor, "SUBTYPE_MIN_GAIN", gain + 0.01)
    assert anchor._subtype_law(x, y, x, seed=3) is None
    monkeypatch.undo()
    x, y = _subtype_law(rng, 600, separated=False)
    assert anchor._subtype_law(x, y, x, seed=3) is None


def test_a_group_shares_the_widest_members_component_axis(monkeypatch):
    """fit_group stacks members whose fits kept different numbers of components: the axis is the
    widest member's, the narrower member's extra slots are unused (weight exactly 0) and it predicts
    as its own fit does; fit_anchor puts that width in the config, whose zeros(cfg) (the shapes a
    checkpoint restores into) then match the fitted arrays. (At most 3 components by 2 folds: fast.)"""
    from cgjax.diffusion.train import GroupData, TrainConfig, fit_anchor, init_state

    monkeypatch.setattr(anchor, "MAX_COMPONENTS", 3)
    monkeypatch.setattr(anchor, "FOLDS", 2)
    rng = np.random.default_rng(5)
    n = 400
    x_sub, y_sub = _subtype_law(rng, n, separated=True)  # member 0: two subtypes
    x_one, y_one = _subtype_law(rng, n, separated=False)  # member 1: one Gaussian law
    conds = np.stack([x_sub, x_one])[:, :, None, :]  # one condition slot of 4 columns
    data = GroupData(jnp.asarray(np.stack([y_sub, y_one]), jnp.float32), jnp.asarray(conds, jnp.float32),
                     jnp.ones((2, n, 1), bool), jnp.ones((2, n), bool))
    cfg = denoiser.DenoiserConfig(hidden=8, n_layers=2, time_dim=4, cond_embed_dim=4, anchor="mixture",
                                  x_dim=5, cond_dims=(4,))
    assert cfg.anchor_components == 8  # the default: the widest a checkpoint from before the field has
    cfg, fitted = fit_anchor(cfg, ((4,), (4,)), data)
    used = anchor.components(fitted)  # [M, P]
    assert used[0, 1] >= 2 and used[1, 1] == 1 and cfg.anchor_components == used.max() <= 3
    assert np.all(np.asarray(fitted["gate_logw"])[1, 1, 1:] == anchor.EMPTY)
    own = anchor.fit(y_one, x_one[:, None], np.ones((n, 1), bool), np.ones(n, bool), (4,), kind="mixture")
    x_t, masks = jnp.asarray(rng.normal(size=(n, 5)), jnp.float32), jnp.ones((n, 1), jnp.float32)
    c = jnp.asarray(x_one[:, None], jnp.float32)
    member1 = {k: v[1] for k, v in fitted.items()}
    output = jax.jit(anchor.output, static_argnums=5)  # one compile, not one per operation
    got, want = (output(a, c, masks, x_t, jnp.float32(0.4), "eps") for a in (member1, own))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
    assert jax.tree.map(jnp.shape, anchor.zeros(cfg)) == jax.tree.map(lambda a: a.shape[1:], fitted)
    with pytest.raises(ConfigError, match=r"DenoiserConfig.anchor_components must be an integer >= 1, got 0"):
        dataclasses.replace(cfg, anchor_components=0)
    narrow = dataclasses.replace(cfg, anchor_components=1)
    with pytest.raises(ValueError, match="fitted anchor's shapes"):
        init_state(jax.random.PRNGKey(0), narrow, ((4,), (4,)), TrainConfig(batch_size=16), fitted)


def test_mixture_anchor_alone_samples_its_mixture():
    """A model whose network outputs 0 draws, with the ancestral sampler, from its anchor's mixture:
    two components of weights 0.3 / 0.7 at -3 and +3 (the share of draws in each, and each one's mean
    and spread)."""
    cfg = denoiser.DenoiserConfig(hidden=8, n_layers=2, time_dim=4, cond_embed_dim=4, parametrisation="v",
                                  anchor="mixture", anchor_components=2, x_dim=2, cond_dims=(1,))
    params, stats = denoiser.init(jax.random.PRNGKey(0), cfg)
    params["layers"][-1] = jax.tree.map(jnp.zeros_like, params["layers"][-1])
    cov = np.diag([0.5, 0.2])
    gate = anchor.Gate(np.zeros(1), np.zeros((1, 1)), np.zeros((2, 1)), np.ones((2, 1, 1)), np.log([0.3, 0.7]))
    law = anchor.Mixture([np.zeros((1, 2))] * 2, [np.full(2, -3.0), np.full(2, 3.0)], [cov, cov], gate)
    params["anchor"] = {k: jnp.asarray(v) for k, v in anchor._pack({0: law, 1: law}, "mixture").items()}
    schedule = make_schedule(ScheduleConfig(timesteps=100))
    sampler = make_sampler(make_model(cfg, 100), schedule, rejection=RejectionConfig(enabled=False))
    n = 4000
    stack = lambda t: jax.tree.map(lambda a: a[None], t)
    x = np.asarray(sampler(stack(params), stack(stats), jax.random.PRNGKey(1), jnp.zeros((n, 1, 1, 1)),
                           jnp.ones((n, 1, 1)), jnp.ones((n, 1)), jnp.arange(n, dtype=jnp.int32)).x0, np.float64)
    high = x[:, 0] > 0
    assert abs(high.mean() - 0.7) < 0.03
    for side, centre in ((high, 3.0), (~high, -3.0)):
        np.testing.assert_allclose(x[side].mean(0), centre, atol=0.1)
        ratio = x[side].var(0) / np.diag(cov)
        assert np.all((ratio > 0.85) & (ratio < 1.15)), ratio


def test_a_mixture_anchored_model_set_trains_saves_and_samples(tiny_cohort, tmp_path, monkeypatch, capsys):
    """pipeline.train with arch.anchor = "mixture" fits the anchor on the training rows, chooses the
    residual gains, and a reloaded checkpoint imputes the same finite values. (At most 2 components
    chosen by 2 folds: the choice itself is tested above, and the default 8 by 5 folds costs a minute
    on the tiny cohort's 44 patterns.)"""
    monkeypatch.setattr(anchor, "MAX_COMPONENTS", 2)
    monkeypatch.setattr(anchor, "FOLDS", 2)
    out = tmp_path / "m"
    tcfg = dataclasses.replace(TINY_TRAIN, epochs=2, residual_gains=(0.0, 1.0))
    ms = pipeline.train(tiny_cohort, out, arch=dataclasses.replace(TINY_ARCH, anchor="mixture"),
                        schedule_cfg=TINY_SCHED, train_cfg=tcfg, progress=True)
    assert all("residual_gain" in v for v in ms.val_metrics.values())
    said = capsys.readouterr().out
    g = next(iter(ms.groups.values()))
    used = anchor.components(g.params["anchor"])
    assert used.shape == g.params["anchor"]["bias"].shape[:2] and used.min() >= 1 and used.max() <= 2
    # the summary line names every model with a mixture pattern, or says there is none
    assert pipeline._mixture_summary(ms) in said
    per_model = {s.name: anchor.components(grp.params["anchor"])[i] for grp in ms.groups.values()
                 for i, s in enumerate(grp.specs)}
    mixed = [name for name, u in per_model.items() if (u > 1).any()]
    for name in mixed:
        assert f" {name} {per_model[name][-1]}" in said
    assert ("every anchor is the Gaussian anchor's" in said) == (not mixed)
    # the component axis is what the group's fit needs, and the config (hence the checkpoint) says so
    assert g.params["anchor"]["gate_logw"].shape[-1] == g.dcfg.anchor_components == used.max()
    assert np.abs(np.asarray(g.params["anchor"]["coef"])).max() > 0.05  # fitted, not the zero template
    loaded = checkpoint.load(out)
    assert loaded.arch.anchor == "mixture"
    from cgjax.ensemble import sample_target
    from cgjax.sampling.options import SampleOptions

    test = pipeline.scaled_inputs(ms, tiny_cohort.split("test"))
    target = ms.modalities[0]
    given = {m: test[m][:16] for m in ms.modalities if m != target}
    for method in ("multi", "coherent"):
        opts = SampleOptions(method=method, replicates=2, seed=3)
        got, again = sample_target(ms, target, given, opts).x, sample_target(loaded, target, given, opts).x
        assert np.isfinite(got).all()
        np.testing.assert_array_equal(got, again)


def test_bad_anchor_kind_and_too_few_rows_for_the_mixture_baseline_are_named():
    from cgjax.evaluate.probabilistic import mixture_conditional_sample

    rng = np.random.default_rng(6)
    n = 40
    args = (rng.normal(size=(n, F)), rng.normal(size=(n, K, C)), np.ones((n, K), bool), np.ones(n, bool), [C, C])
    with pytest.raises(ValueError, match="anchor kind must be one of .*'linear'"):
        anchor.fit(*args, kind="linear")
    train = {"a": rng.normal(size=(5, 2)), "t": np.full((5, 3), np.nan)}
    train["t"][0] = 1.0  # one complete training row
    with pytest.raises(ValueError, match="mixture model of 't' needs at least 2 complete training rows, got 1"):
        mixture_conditional_sample(train, {"a": rng.normal(size=(4, 2))}, ["a"], "t")


def test_the_training_summary_names_the_models_with_subtypes():
    """pipeline._mixture_summary counts the patterns with more than one component and names each
    model that has one, with its components given every condition (the last pattern)."""
    from types import SimpleNamespace

    E = anchor.EMPTY
    logw = np.array([[[0.0, E, E], [0.0, E, E]],            # a: one component everywhere
                     [[0.0, E, E], [0.0, -1.0, E]],         # b: two in its full pattern
                     [[0.0, -1.0, -2.0], [0.0, E, E]]])     # c: three in its empty pattern only
    group = SimpleNamespace(specs=[SimpleNamespace(name=n) for n in "abc"], params={"anchor": {"gate_logw": logw}})
    said = pipeline._mixture_summary(SimpleNamespace(groups={"g": group}))
    assert said == ("arch.anchor = mixture: subtypes kept in 2 of 6 patterns, in 2 of 3 models (components with "
                    "every condition present): b 2, c 1")
    group.params["anchor"]["gate_logw"] = logw[:1]
    group.specs = group.specs[:1]
    assert pipeline._mixture_summary(SimpleNamespace(groups={"g": group})).endswith("every anchor is the Gaussian anchor's")
