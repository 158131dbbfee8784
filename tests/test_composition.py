"""Compositions (average, product of experts, anchored) and the Langevin corrector of the ensemble
sampler, against float64 moment propagation of linear-Gaussian oracles (cgjax.sampling.composition)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cgjax.diffusion.schedule import ScheduleConfig, make_schedule
from cgjax.diffusion.train import TrainConfig, draw_minibatch
from cgjax.ensemble import sample_target
from cgjax.errors import CgjaxError, ConfigError
from cgjax.sampling import composition as comp
from cgjax.sampling.coherent import RejectionConfig, make_sampler
from cgjax.sampling.options import SampleOptions
from oracles import eps_model

NO_REJECT = RejectionConfig(enabled=False)
SCHEDULE = make_schedule(ScheduleConfig(timesteps=100))

# x ~ N(0, 1) per coordinate; condition i observes c_i = x + noise of variance S2[i], independently
# given x, so p(x | c_1, c_2) = p(x | c_1) p(x | c_2) / p(x). One observed value C[i] per condition.
S2 = np.array([0.25, 0.5])
C = np.array([1.0, 0.6])


def posterior(which):
    """(mean, variance) of x given the conditions in ``which`` (a tuple of indices)."""
    prec = 1.0 + sum(1.0 / S2[i] for i in which)
    return sum(C[i] / S2[i] for i in which) / prec, 1.0 / prec


def _eps_coef(t, which):
    """E[eps | x_t] = A x_t + b for x_0 ~ posterior(which): A = sigma / S_t, b = -sigma a m / S_t."""
    ab = np.float64(SCHEDULE.alpha_bars[t])
    a, s = np.sqrt(ab), np.sqrt(1 - ab)
    m, v = posterior(which)
    S = a * a * v + s * s
    return s / S, -s * a * m / S


def oracle_moments(kind, L=0, snr=0.5):
    """Float64 mean and variance of the DDPM sampler's output (one coordinate) when the composed eps
    is the linear map of ``kind`` ("average" with equal weights, "product", "exact"), with L corrector
    steps per timestep: every update is affine in x plus independent noise, so moments propagate."""
    be = np.asarray(SCHEDULE.betas, np.float64)
    al, abar = 1 - be, np.asarray(SCHEDULE.alpha_bars, np.float64)
    mean, var = 0.0, 1.0
    for t in range(len(be) - 1, -1, -1):
        (A1, b1), (A2, b2) = _eps_coef(t, (0,)), _eps_coef(t, (1,))
        Au, bu = _eps_coef(t, ())
        A, b = {"average": ((A1 + A2) / 2, (b1 + b2) / 2), "product": (A1 + A2 - Au, b1 + b2 - bu),
                "exact": _eps_coef(t, (0, 1))}[kind]
        s = np.sqrt(1 - abar[t])
        h = 2 * al[t] * (snr * s) ** 2
        for _ in range(L):  # x <- x - (h / s)(A x + b) + sqrt(2h) z
            k = 1 - h / s * A
            mean, var = k * mean - h / s * b, k * k * var + 2 * h
        c1, c2 = 1 / np.sqrt(al[t]), be[t] / s
        k = c1 * (1 - c2 * A)
        mean, var = k * mean - c1 * c2 * b, k * k * var + (be[t] if t > 0 else 0.0)
    return mean, var


def _gauss_eps(x_t, t, m, v, schedule=SCHEDULE):
    a = schedule.alpha_bars[t]
    return jnp.sqrt(1 - a) * (x_t - jnp.sqrt(a) * m) / (a * v + 1 - a)


def two_members(F, schedule=SCHEDULE):
    """Two exact single-condition members whose masked output is the exact unconditional eps."""
    def eps_fn(params, batch_stats, x_t, t, conds, masks):
        outs = []
        for i in range(2):
            m, v = posterior((i,))
            cond = _gauss_eps(x_t, t, m, v, schedule)
            prior = _gauss_eps(x_t, t, 0.0, 1.0, schedule)
            on = masks[:, i, 0][:, None]
            outs.append(on * cond + (1 - on) * prior)
        return jnp.stack(outs)
    return eps_model(eps_fn, F)


def run(N=6000, F=2, composition="average", L=0, key=0, row_ids=None, rejection=NO_REJECT, snr=0.5,
        schedule=SCHEDULE):
    sampler = make_sampler(two_members(F, schedule), schedule, rejection=rejection, composition=composition,
                           corrector_steps=L, corrector_snr=snr)
    row_ids = jnp.arange(N) if row_ids is None else row_ids
    n = len(row_ids)
    return sampler(None, None, jax.random.PRNGKey(key), jnp.zeros((n, 2, 1, 1)), jnp.ones((n, 2, 1)),
                   jnp.full((n, 2), 0.5), row_ids)


@pytest.mark.parametrize("composition,L", [("average", 0), ("product", 0), ("product", 3)])
def test_sampler_matches_moment_propagation(composition, L):
    x = np.asarray(run(composition=composition, L=L).x0, np.float64).ravel()  # 2 independent coordinates
    mean, var = oracle_moments(composition, L)
    n = len(x)
    assert abs(x.mean() - mean) < 4 * np.sqrt(var / n), (x.mean(), mean)
    assert abs(x.var() / var - 1) < 4 * np.sqrt(2 / n), (x.var(), var)


def test_product_beats_average_and_the_corrector_closes_the_gap():
    """On this law (conditions independent given x) the product targets the exact posterior; the
    average is a compromise that is too wide and shrunk. At t > 0 the diffused conditionals are not a
    product, so without corrector the product is biased (narrow); Langevin steps reduce the bias."""
    m, v = posterior((0, 1))
    err = lambda kind, L=0: (abs(oracle_moments(kind, L)[0] - m) / np.sqrt(v),
                             abs(np.log(oracle_moments(kind, L)[1] / v)))
    avg, prod, prod3 = err("average"), err("product"), err("product", 3)
    assert avg[0] > 2 * prod[0] and avg[1] > 2 * prod[1], (avg, prod)
    assert prod3[0] < 0.6 * prod[0] and prod3[1] < 0.5 * prod[1], (prod, prod3)
    # the sampler agrees: the exact posterior is far outside the average's MC error
    x = np.asarray(run(composition="average").x0, np.float64).ravel()
    assert x.var() / v > 1.15 and abs(x.mean() - m) > 5 * np.sqrt(v / len(x))


def test_langevin_leaves_the_exact_law_nearly_invariant_and_relaxes_a_wrong_variance():
    t, snr, N, n_steps = 40, 0.5, 20000, 60
    m, v = posterior((0, 1))
    ab = SCHEDULE.alpha_bars[t]
    S = float(ab * v + 1 - ab)  # variance of the exact law at level t
    h = float(comp.corrector_step_size(SCHEDULE.alphas[t], ab, snr))
    stationary = S / (1 - h / (2 * S))  # of the discretised chain on a Gaussian
    assert stationary / S < 1 / (1 - snr ** 2)
    centre = float(jnp.sqrt(ab) * m)
    for start_var in (S, 4 * S):
        x = centre + np.sqrt(start_var) * jax.random.normal(jax.random.PRNGKey(1), (N,))
        for j in range(n_steps):
            z = jax.random.normal(jax.random.PRNGKey(100 + j), (N,))
            x = comp.langevin_step(x, _gauss_eps(x, t, m, v), z, SCHEDULE.alphas[t], ab, snr)
        k = 1 - h / S
        expect = stationary + (start_var - stationary) * k ** (2 * n_steps)
        got = float(jnp.var(x))
        assert abs(got / expect - 1) < 4 * np.sqrt(2 / N), (start_var, got, expect)
        assert abs(float(jnp.mean(x)) - centre) < 4 * np.sqrt(expect / N)
    assert abs(expect / S - 1) < 0.5 * 3  # from 4 S (excess 3) to within half of it


def test_exact_eps_with_corrector_keeps_the_exact_posterior():
    m, v = posterior((0, 1))
    exact_moments = oracle_moments("exact", 2)
    assert abs(exact_moments[1] / v - 1) < 0.05 and abs(exact_moments[0] - m) < 0.01 * np.sqrt(v)

    def eps_fn(params, batch_stats, x_t, t, conds, masks):
        return _gauss_eps(x_t, t, m, v)[None]
    sampler = make_sampler(eps_model(eps_fn, 2), SCHEDULE, rejection=NO_REJECT, corrector_steps=2)
    N = 6000
    x = np.asarray(sampler(None, None, jax.random.PRNGKey(3), jnp.zeros((N, 1, 1, 1)), jnp.ones((N, 1, 1)),
                           jnp.ones((N, 1)), jnp.arange(N)).x0, np.float64).ravel()
    assert abs(x.var() / exact_moments[1] - 1) < 4 * np.sqrt(2 / len(x))
    assert abs(x.var() / v - 1) < 0.05 + 4 * np.sqrt(2 / len(x))


def test_corrector_and_product_are_deterministic_and_chunk_invariant():
    rej = RejectionConfig(cos_threshold=0.2, max_fraction=0.1, max_attempts=3)  # some rows retry
    ids = jnp.arange(40)
    sched = make_schedule(ScheduleConfig(timesteps=30))
    go = lambda ids, L=2, rej=rej: run(composition="product", L=L, row_ids=ids, rejection=rej, schedule=sched)
    full = go(ids)
    assert 1 < int(full.attempts.max()) and int(full.attempts.min()) == 1  # the retry path runs
    np.testing.assert_array_equal(full.x0, go(ids).x0)
    parts = [go(ids[a:b]) for a, b in ((0, 13), (13, 40))]
    np.testing.assert_allclose(np.concatenate([p.x0 for p in parts]), full.x0, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.concatenate([p.attempts for p in parts]), full.attempts)
    # the corrector's noise is its own: L = 2 is not L = 0 with the same key
    assert not np.allclose(go(ids, 0, NO_REJECT).x0, go(ids, 2, NO_REJECT).x0)


def test_defaults_auto_without_corrector_and_make_sampler_averages():
    """SampleOptions default to ``auto`` (resolved per model set: tests/test_anchor.py); the sampler
    itself averages unless told otherwise, and refuses an unresolved ``auto``."""
    opts = SampleOptions()
    assert (opts.composition, opts.corrector_steps) == ("auto", 0)
    with pytest.raises(ConfigError, match="resolve 'auto'"):
        make_sampler(two_members(2), SCHEDULE, composition="auto")
    a = run(N=50)
    sampler = make_sampler(two_members(2), SCHEDULE, rejection=NO_REJECT)
    b = sampler(None, None, jax.random.PRNGKey(0), jnp.zeros((50, 2, 1, 1)), jnp.ones((50, 2, 1)),
                jnp.full((50, 2), 0.5), jnp.arange(50))
    np.testing.assert_array_equal(a.x0, b.x0)


@pytest.mark.parametrize("kw,flag", [
    (dict(composition="sum"), "--composition"),
    (dict(composition="product", method="multi"), "--composition product"),
    (dict(corrector_steps=-1), "--corrector-steps"),
    (dict(corrector_steps=1.5), "--corrector-steps"),
    (dict(corrector_snr=0.0), "--corrector-snr"),
    (dict(corrector_snr=1.0), "--corrector-snr"),
])
def test_options_validation(kw, flag):
    with pytest.raises(ConfigError, match=flag) as e:
        SampleOptions(**kw)
    assert "\n" not in str(e.value)


def test_make_sampler_validation():
    with pytest.raises(ConfigError, match="--composition"):
        make_sampler(two_members(2), SCHEDULE, composition="sum")
    with pytest.raises(ConfigError, match="single_cond_dropout"):
        TrainConfig(single_cond_dropout=1.0)


def test_product_refused_without_an_unconditional_mode(tiny_trained):
    ms, _ = tiny_trained
    assert ms.train_cfg.single_cond_dropout == 0
    target = ms.modalities[0]
    given = {m: np.zeros((3, ms.dims[m]), np.float32) for m in ms.modalities if m != target}
    with pytest.raises(CgjaxError, match=f"'{target}_from_.*' lacks .*single_cond_dropout") as e:
        sample_target(ms, target, given, SampleOptions(composition="product"))
    assert "\n" not in str(e.value)


def test_single_cond_dropout_masks_the_condition():
    n, size = 50, 4000
    args = (jnp.ones((n, 2)), jnp.ones((n, 1, 3)), jnp.ones((n, 1), bool), jnp.ones(n, bool), size)
    keys = tuple(jax.random.split(jax.random.PRNGKey(0), 3))
    _, c0, m0 = draw_minibatch(keys, *args, multi=False, cond_dropout=0.5)
    _, c1, m1 = draw_minibatch(keys, *args, multi=False, cond_dropout=0.5, single_cond_dropout=0.3)
    assert np.all(m0 == 1)
    frac = 1 - float(jnp.mean(m1))
    assert abs(frac - 0.3) < 4 * np.sqrt(0.21 / size)
    np.testing.assert_array_equal(c1, c0 * m1[..., None])  # a masked condition is zeroed


# ---- anchored: the members' residuals around the anchor of the row's whole pattern ----------------

def _pattern_anchor(slots=(0, 1)):
    """The Gaussian anchor (cgjax.diffusion.anchor's arrays) of a 2-slot multi model for this law:
    pattern p (bit k: slot k given) has the posterior given the conditions in those slots, where
    slot k holds condition ``slots.index(k)``; the means are constants (coef 0), as C is fixed."""
    P, F = 4, 2
    bias, eig = np.zeros((P, F)), np.zeros((P, F))
    for p in range(P):
        m, v = posterior(tuple(slots.index(k) for k in range(2) if p >> k & 1))
        bias[p], eig[p] = m, v
    return {"coef": jnp.zeros((P, 2, F)), "bias": jnp.asarray(bias, jnp.float32),
            "basis": jnp.tile(jnp.eye(F), (P, 1, 1)), "eig": jnp.asarray(eig, jnp.float32)}


def _members_with_anchor(shift):
    """Two members: anchor A_m the exact eps of posterior((m,)) (the model's ``offset``), network
    residual the constant shift[m] (eps units)."""
    from cgjax.sampling.algebra import Model

    def prepare(params, batch_stats, conds, masks):
        return None

    def net(prepared, x_t, t):
        return jnp.broadcast_to(jnp.asarray(shift, jnp.float32)[:, None, None], (2,) + x_t.shape)

    def offset(prepared, x_t, abar):
        t = jnp.argmin(jnp.abs(SCHEDULE.alpha_bars - abar))
        return jnp.stack([_gauss_eps(x_t, t, *posterior((m,))) for m in range(2)])

    return Model(prepare, net, 2, "eps", offset)


def _fixed_members(eps_of_member):
    """A model whose member m outputs eps_of_member(m, x_t, t) (no anchor): the reference."""
    return eps_model(lambda p, b, x_t, t, c, m: jnp.stack([eps_of_member(i, x_t, t) for i in range(2)]), 2)


def _anchored_run(shift, weights, slots=(0, 1), N=4000):
    sampler = make_sampler(_members_with_anchor(shift), SCHEDULE, rejection=NO_REJECT, composition="anchored",
                           base_slots=tuple(slots) + (2,))
    params = {"members": None, "base": _pattern_anchor(slots)}
    return sampler(params, None, jax.random.PRNGKey(0), jnp.zeros((N, 2, 1, 1)), jnp.ones((N, 2, 1)),
                   jnp.broadcast_to(jnp.asarray(weights, jnp.float32), (N, 2)), jnp.arange(N)).x0


def test_anchored_with_zero_residuals_samples_the_whole_pattern_posterior():
    """Residuals 0: the anchored composition is the exact denoiser of x | c_1, c_2 (float64 moment
    propagation), where the average of the same two members is too wide and shrunk."""
    x = np.asarray(_anchored_run((0.0, 0.0), (0.5, 0.5)), np.float64).ravel()
    mean, var = oracle_moments("exact")
    n = len(x)
    assert abs(x.mean() - mean) < 4 * np.sqrt(var / n), (x.mean(), mean)
    assert abs(x.var() / var - 1) < 4 * np.sqrt(2 / n), (x.var(), var)


@pytest.mark.parametrize("weights,slots", [((0.3, 0.7), (0, 1)), ((1.0, 0.0), (0, 1)), ((1.0, 0.0), (1, 0)),
                                           ((0.0, 1.0), (1, 0))])
def test_anchored_is_the_base_anchor_plus_the_weighted_residuals(weights, slots):
    """eps = A_base + sum_m w_m (eps_m - A_m), A_base the anchor of the pattern of the members with
    weight > 0, in the multi model's slots: the same trajectories as an average of members that each
    output A_base + r_m directly."""
    shift = (0.3, -0.2)
    which = tuple(m for m in range(2) if weights[m] > 0)
    base = lambda x_t, t: _gauss_eps(x_t, t, *posterior(which))
    ref = make_sampler(_fixed_members(lambda m, x_t, t: base(x_t, t) + shift[m]), SCHEDULE, rejection=NO_REJECT)
    N = 64
    want = ref(None, None, jax.random.PRNGKey(0), jnp.zeros((N, 2, 1, 1)), jnp.ones((N, 2, 1)),
               jnp.broadcast_to(jnp.asarray(weights, jnp.float32), (N, 2)), jnp.arange(N)).x0
    np.testing.assert_allclose(_anchored_run(shift, weights, slots, N=N), want, rtol=1e-4, atol=1e-4)


def test_anchored_refuses_a_model_without_an_anchor():
    with pytest.raises(ConfigError, match="--composition anchored needs models with an anchor"):
        make_sampler(two_members(2), SCHEDULE, composition="anchored", base_slots=(0, 1, 2))
    with pytest.raises(ConfigError, match="--composition anchored .*unconditional"):
        SampleOptions(composition="anchored", unconditional=True)
    with pytest.raises(ConfigError, match="--composition anchored combines the single models"):
        SampleOptions(composition="anchored", method="multi")


def test_with_method_drops_a_composition_only_coherent_has():
    from cgjax.sampling.options import with_method

    o = SampleOptions(composition="anchored", replicates=3)
    assert with_method(o, "multi") == SampleOptions(method="multi", composition="auto", replicates=3)
    assert with_method(o, "coherent") == o
    avg = SampleOptions(composition="average", seed=2)
    assert with_method(avg, "single") == SampleOptions(method="single", composition="average", seed=2)
