"""The ensemble sampler: closed-form Gaussian oracle, float64 re-derivation, subsets, rejection."""

import jax
import jax.numpy as jnp
import numpy as np

from cgjax.diffusion import denoiser
from cgjax.diffusion.schedule import ScheduleConfig, make_schedule
from cgjax.sampling.coherent import RejectionConfig, make_sampler, normalise_weights, row_noise

NO_REJECT = RejectionConfig(enabled=False)


def gaussian_eps_fn(mu, cov, schedule):
    """Exact E[eps | x_t] for x_0 ~ N(mu, cov): sqrt(1 - abar) S_t^{-1} (x_t - sqrt(abar) mu),
    S_t = abar cov + (1 - abar) I. ``params`` is unused; one ensemble member."""
    mu, cov = jnp.asarray(mu), jnp.asarray(cov)

    def eps(params, batch_stats, x_t, t, conds, masks):
        a = schedule.alpha_bars[t]
        S = a * cov + (1 - a) * jnp.eye(len(mu))
        e = jnp.sqrt(1 - a) * jnp.linalg.solve(S, (x_t - jnp.sqrt(a) * mu[None]).T).T
        return e[None]

    return eps


def test_exact_gaussian_denoiser_reproduces_data_distribution():
    cfg = denoiser.DenoiserConfig(x_dim=2, cond_dims=(1,), hidden=4, n_layers=2, time_dim=2, cond_embed_dim=1)
    schedule = make_schedule(ScheduleConfig(timesteps=1000))
    mu = np.array([1.5, -0.5])
    cov = np.array([[1.0, 0.6], [0.6, 0.5]])
    sampler = make_sampler(cfg, schedule, rejection=NO_REJECT, eps_fn=gaussian_eps_fn(mu, cov, schedule))
    N = 4000
    res = sampler(None, None, jax.random.PRNGKey(0), jnp.zeros((N, 1, 1, 1)), jnp.ones((N, 1, 1)),
                  jnp.ones((N, 1)), jnp.arange(N))
    x = np.asarray(res.x0, np.float64)
    se = np.sqrt(np.diag(cov) / N)
    assert np.all(np.abs(x.mean(0) - mu) < 4 * se), (x.mean(0), mu)
    emp = np.cov(x.T)
    # sampling error of a covariance entry ~ sqrt((c_ii c_jj + c_ij^2) / N) ~ 0.02 here
    np.testing.assert_allclose(emp, cov, atol=0.06)


# ---- a small random ensemble, and a float64 numpy re-derivation of the whole sampler ----------------

CFG = denoiser.DenoiserConfig(x_dim=3, cond_dims=(2,), hidden=8, n_layers=3, time_dim=4, cond_embed_dim=2)
SCHEDULE_CFG = ScheduleConfig(timesteps=30)


def _ensemble(M, seed=0):
    members = [denoiser.init(k, CFG) for k in jax.random.split(jax.random.PRNGKey(seed), M)]
    # non-trivial running statistics
    members = [(p, [{"mean": s["mean"] + 0.3, "var": s["var"] * 1.7} for s in st]) for p, st in members]
    stack = lambda trees: jax.tree.map(lambda *xs: jnp.stack(xs), *trees)
    return stack([m[0] for m in members]), stack([m[1] for m in members])


def _np_apply(p, st, x, t, c):
    """norm_mlp in float64 numpy, inference mode, one condition with mask 1."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
    st = jax.tree.map(lambda a: np.asarray(a, np.float64), st)
    half = CFG.time_dim // 2
    freqs = np.exp(-np.arange(half) * np.log(10000.0) / (half - 1))
    sin = np.concatenate([np.sin(t * freqs), np.cos(t * freqs)])
    temb = np.maximum(sin @ p["time"]["w"] + p["time"]["b"], 0)
    cemb = np.maximum(c @ p["cond"][0]["w"] + p["cond"][0]["b"], 0)
    l0 = p["layers"][0]
    h = x @ l0["w_x"] + temb @ l0["w_t"] + cemb @ l0["w_c"] + l0["b"]
    for i, layer in enumerate(p["layers"][1:]):
        h = (h - st[i]["mean"]) / np.sqrt(st[i]["var"] + CFG.bn_eps) * p["bn"][i]["scale"] + p["bn"][i]["bias"]
        h = np.maximum(h, 0) @ layer["w_h"] + temb @ layer["w_t"] + layer["b"]
    return h


def _np_coherent(params, stats, conds, weights, noises):
    """Float64 numpy Coherent Denoising: consensus, DDPM update, pair-weighted cosine distances."""
    M = weights.shape[1]
    T = SCHEDULE_CFG.timesteps
    b = np.linspace(1e-4, 0.02, T) * 1000 / T
    abar = np.cumprod(1 - b)
    member = lambda m: (jax.tree.map(lambda a: a[m], params), jax.tree.map(lambda a: a[m], stats))
    x = noises[T].astype(np.float64)
    dists = []
    for t in range(T - 1, -1, -1):
        eps = np.stack([_np_apply(*member(m), x, t, conds[:, m, 0]) for m in range(M)])  # [M, N, F]
        eps_bar = np.einsum("mnf,nm->nf", eps, weights)
        d = []
        for n in range(x.shape[0]):
            num = den = 0.0
            for i in range(M):
                for j in range(i + 1, M):
                    if weights[n, i] > 0 and weights[n, j] > 0:
                        w = 0.5 * (weights[n, i] + weights[n, j])
                        cos = eps[i, n] @ eps[j, n] / (np.linalg.norm(eps[i, n]) * np.linalg.norm(eps[j, n]))
                        num, den = num + w * cos, den + w
            d.append(1 - (num / den if den > 0 else 0.0))
        dists.append(d)
        x = (x - b[t] / np.sqrt(1 - abar[t]) * eps_bar) / np.sqrt(1 - b[t])
        if t > 0:
            x = x + np.sqrt(b[t]) * noises[t]
    return x, np.array(dists).T


def test_coherent_sampler_matches_float64_numpy():
    M, N = 3, 5
    params, stats = _ensemble(M)
    rng = np.random.default_rng(0)
    conds = rng.normal(size=(N, M, 1, 2)).astype(np.float32)
    avail = np.array([[1, 1, 1], [1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 1, 1]], bool)
    weights = np.asarray(normalise_weights(np.array([0.5, 0.3, 0.2]), avail))
    key, row_ids = jax.random.PRNGKey(3), jnp.arange(N)
    schedule = make_schedule(SCHEDULE_CFG)
    sampler = make_sampler(CFG, schedule, rejection=NO_REJECT, return_distance=True)
    res = sampler(params, stats, key, jnp.asarray(conds), jnp.ones((N, M, 1)), jnp.asarray(weights), row_ids)
    noises = {t: np.asarray(row_noise(jax.random.fold_in(key, 0), row_ids, t, 3), np.float64)
              for t in range(SCHEDULE_CFG.timesteps + 1)}
    x_ref, d_ref = _np_coherent(params, stats, conds.astype(np.float64), weights.astype(np.float64), noises)
    np.testing.assert_allclose(np.asarray(res.x0), x_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(res.distance), d_ref, rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(res.distance)[2] == 1.0)  # one available model: no pair, d = 1


def test_one_hot_ensemble_equals_single_model_and_subsets_equal_separate_runs():
    M, N = 3, 6
    params, stats = _ensemble(M, seed=1)
    schedule = make_schedule(SCHEDULE_CFG)
    sampler = make_sampler(CFG, schedule, rejection=NO_REJECT)
    rng = np.random.default_rng(1)
    conds = jnp.asarray(rng.normal(size=(N, M, 1, 2)), jnp.float32)
    key, ids = jax.random.PRNGKey(0), jnp.arange(N)
    one_hot = jnp.tile(jnp.array([[0.0, 1.0, 0.0]]), (N, 1))
    ens = sampler(params, stats, key, conds, jnp.ones((N, M, 1)), one_hot, ids)
    single = sampler(jax.tree.map(lambda a: a[1:2], params), jax.tree.map(lambda a: a[1:2], stats), key,
                     conds[:, 1:2], jnp.ones((N, 1, 1)), jnp.ones((N, 1)), ids)
    np.testing.assert_allclose(np.asarray(ens.x0), np.asarray(single.x0), rtol=1e-6, atol=1e-6)

    avail = np.array([[1, 1, 1], [1, 0, 0], [0, 1, 1], [1, 1, 1], [1, 0, 0], [0, 1, 1]], bool)
    w = normalise_weights(np.array([0.2, 0.3, 0.5]), avail)
    mixed = np.asarray(sampler(params, stats, key, conds, jnp.ones((N, M, 1)), w, ids).x0)
    for pattern in ({0, 3}, {1, 4}, {2, 5}):
        rows = np.array(sorted(pattern))
        alone = sampler(params, stats, key, conds[rows], jnp.ones((len(rows), M, 1)), w[rows], ids[rows])
        np.testing.assert_allclose(mixed[rows], np.asarray(alone.x0), rtol=1e-6, atol=1e-6)


def _fixed_eps_fn(signs):
    """M members predicting signs[m] * (x_t + 1): identical up to sign."""
    signs = jnp.asarray(signs, jnp.float32)

    def eps(params, batch_stats, x_t, t, conds, masks):
        return signs[:, None, None] * (x_t + 1.0)[None]

    return eps


def test_opposite_models_always_rejected_identical_never():
    schedule = make_schedule(SCHEDULE_CFG)
    N = 4
    rej = RejectionConfig(enabled=True, max_attempts=4)
    args = (None, None, jax.random.PRNGKey(0), jnp.zeros((N, 2, 1, 1)), jnp.ones((N, 2, 1)),
            jnp.full((N, 2), 0.5), jnp.arange(N))
    bad = make_sampler(CFG, schedule, rejection=rej, eps_fn=_fixed_eps_fn([1.0, -1.0]))(*args)
    assert np.all(np.asarray(bad.attempts) == 4)
    assert not np.any(np.asarray(bad.passed))
    assert np.all(np.asarray(bad.frac_incoherent) == 1.0)
    assert np.all(np.isfinite(np.asarray(bad.x0))) and np.any(np.asarray(bad.x0) != 0)  # never a zero vector
    good = make_sampler(CFG, schedule, rejection=rej, eps_fn=_fixed_eps_fn([1.0, 1.0]))(*args)
    assert np.all(np.asarray(good.attempts) == 1)
    assert np.all(np.asarray(good.passed))
    assert np.all(np.asarray(good.frac_incoherent) == 0.0)


def test_rejection_redraws_only_pending_rows():
    """A member that disagrees only on row 0 makes row 0 fail; the others are accepted at once and
    keep their first-attempt samples."""
    schedule = make_schedule(SCHEDULE_CFG)
    N = 3

    def eps(params, batch_stats, x_t, t, conds, masks):
        flip = jnp.where(jnp.arange(x_t.shape[0]) == 0, -1.0, 1.0)[:, None]
        return jnp.stack([x_t + 1.0, flip * (x_t + 1.0)])

    args = (None, None, jax.random.PRNGKey(5), jnp.zeros((N, 2, 1, 1)), jnp.ones((N, 2, 1)),
            jnp.full((N, 2), 0.5), jnp.arange(N))
    rej = make_sampler(CFG, schedule, rejection=RejectionConfig(max_attempts=3), eps_fn=eps)(*args)
    plain = make_sampler(CFG, schedule, rejection=NO_REJECT, eps_fn=eps)(*args)
    np.testing.assert_array_equal(np.asarray(rej.attempts), [3, 1, 1])
    np.testing.assert_array_equal(np.asarray(rej.passed), [False, True, True])
    np.testing.assert_allclose(np.asarray(rej.x0[1:]), np.asarray(plain.x0[1:]))


# ---- accelerated solvers inside the coherent sampler ---------------------------------------------

def _np_solver_coherent(params, stats, conds, weights, noises, kind, K, eta=0.0):
    """Float64 numpy Coherent Denoising with DDIM (Song et al. eq. 12) or DPM-Solver++(2M) (Lu et al.
    alg. 2; first order at the first step and into t = 0) on K uniformly spaced timesteps."""
    M = weights.shape[1]
    T = SCHEDULE_CFG.timesteps
    abar = np.cumprod(1 - np.linspace(1e-4, 0.02, T) * 1000 / T)
    ts = np.round(np.linspace(T - 1, 0, K)).astype(int)
    member = lambda m: (jax.tree.map(lambda a: a[m], params), jax.tree.map(lambda a: a[m], stats))
    lam = lambda t: 0.5 * np.log(abar[t] / (1 - abar[t]))
    x, d_prev = noises[T].astype(np.float64), None
    for k, t in enumerate(ts):
        eps = np.stack([_np_apply(*member(m), x, t, conds[:, m, 0]) for m in range(M)])
        e = np.einsum("mnf,nm->nf", eps, weights)
        x0 = (x - np.sqrt(1 - abar[t]) * e) / np.sqrt(abar[t])
        if k == K - 1:
            x = x0
        elif kind == "ddim":
            s = ts[k + 1]
            sig = eta * np.sqrt((1 - abar[s]) / (1 - abar[t]) * (1 - abar[t] / abar[s]))
            x = np.sqrt(abar[s]) * x0 + np.sqrt(1 - abar[s] - sig ** 2) * e + sig * noises[t]
        else:
            s = ts[k + 1]
            h = lam(s) - lam(t)
            mix = x0
            if 0 < k < K - 2:
                r = (lam(t) - lam(ts[k - 1])) / h
                mix = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * d_prev
            x = np.sqrt((1 - abar[s]) / (1 - abar[t])) * x - np.sqrt(abar[s]) * (np.exp(-h) - 1) * mix
        d_prev = x0
    return x


def test_accelerated_solvers_match_float64_numpy():
    """DDIM (eta 0.5, its per-step noise from the same row keys as the ancestral sampler) and
    DPM-Solver++(2M) on 8 of 30 timesteps, through the whole ensemble sampler."""
    from cgjax.sampling.solvers import SolverConfig

    M, N, K = 3, 4, 8
    params, stats = _ensemble(M, seed=2)
    rng = np.random.default_rng(2)
    conds = rng.normal(size=(N, M, 1, 2)).astype(np.float32)
    weights = np.asarray(normalise_weights(np.array([0.5, 0.3, 0.2]),
                                           np.array([[1, 1, 1], [1, 0, 1], [0, 1, 0], [1, 1, 0]], bool)))
    key, row_ids = jax.random.PRNGKey(4), jnp.arange(N)
    noises = {t: np.asarray(row_noise(jax.random.fold_in(key, 0), row_ids, t, 3), np.float64)
              for t in range(SCHEDULE_CFG.timesteps + 1)}
    for solver in (SolverConfig("ddim", K, eta=0.5), SolverConfig("dpm", K)):
        sampler = make_sampler(CFG, make_schedule(SCHEDULE_CFG), rejection=NO_REJECT, solver=solver)
        res = sampler(params, stats, key, jnp.asarray(conds), jnp.ones((N, M, 1)), jnp.asarray(weights), row_ids)
        ref = _np_solver_coherent(params, stats, conds.astype(np.float64), weights.astype(np.float64), noises,
                                  solver.kind, K, solver.eta)
        np.testing.assert_allclose(np.asarray(res.x0), ref, rtol=1e-4, atol=1e-4)
