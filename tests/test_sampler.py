"""The ensemble sampler: closed-form Gaussian oracle, float64 re-derivation, subsets, rejection."""

import jax
import jax.numpy as jnp
import numpy as np

from cgjax.diffusion import denoiser
from cgjax.diffusion.schedule import ScheduleConfig, make_schedule
from cgjax.sampling.algebra import make_model
from cgjax.sampling.coherent import RejectionConfig, make_sampler, row_noise
from cgjax.sampling.weights import ensemble_weights
from oracles import eps_model, gaussian_model

NO_REJECT = RejectionConfig(enabled=False)


def test_exact_gaussian_denoiser_reproduces_data_distribution():
    schedule = make_schedule(ScheduleConfig(timesteps=1000))
    mu = np.array([1.5, -0.5])
    cov = np.array([[1.0, 0.6], [0.6, 0.5]])
    sampler = make_sampler(gaussian_model(mu, cov, schedule), schedule, rejection=NO_REJECT)
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
    weights = np.asarray(ensemble_weights(None, np.array([0.5, 0.3, 0.2]), avail))
    key, row_ids = jax.random.PRNGKey(3), jnp.arange(N)
    schedule = make_schedule(SCHEDULE_CFG)
    sampler = make_sampler(make_model(CFG, schedule.timesteps), schedule, rejection=NO_REJECT, return_distance=True)
    res = sampler(params, stats, key, jnp.asarray(conds), jnp.ones((N, M, 1)), jnp.asarray(weights), row_ids)
    noises = {t: np.asarray(row_noise(jax.random.fold_in(key, 0), row_ids, t, 3), np.float64)
              for t in range(SCHEDULE_CFG.timesteps + 1)}
    x_ref, d_ref = _np_coherent(params, stats, conds.astype(np.float64), weights.astype(np.float64), noises)
    np.testing.assert_allclose(np.asarray(res.x0), x_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(res.distance), d_ref, rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(res.distance)[2] == 1.0)  # one available model: no pair, d = 1


def _assert_same_run(a, b):
    """Two float32 runs of the same T-step sampler that differ only in batch shapes (M = 3 vs 1
    vmapped models, N = 6 vs 2 rows) agree up to rounding: XLA:CPU picks its dot kernels, and so the
    order of float32 sums, by shape and by the machine's vector width (AVX2, AVX-512), so the two
    need not be bitwise equal. Each reverse step adds a few eps32 of relative rounding to x (network
    sums over <= 12 terms, the update's 3 operations); the later steps scale it together with x (the
    same noise in both runs; x grows to ~1e3 through 1 / sqrt(alpha_bar)), so the runs agree to
    T * 4 * eps32 ~ 1.4e-5 of each row's largest |x| (measured: 2.6e-7 and 0 on an AVX-512 Xeon). An
    entrywise relative tolerance is the wrong measure: a row's rounding scales with the row, not
    with each of its entries. A wrong member or weight changes x by O(|x|)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.abs(a).max(axis=-1, keepdims=True)
    tol = SCHEDULE_CFG.timesteps * 4 * np.finfo(np.float32).eps * scale
    assert np.all(np.abs(a - b) <= tol), (np.abs(a - b) / scale).max()


def test_one_hot_ensemble_equals_single_model_and_subsets_equal_separate_runs():
    M, N = 3, 6
    params, stats = _ensemble(M, seed=1)
    schedule = make_schedule(SCHEDULE_CFG)
    sampler = make_sampler(make_model(CFG, schedule.timesteps), schedule, rejection=NO_REJECT)
    rng = np.random.default_rng(1)
    conds = jnp.asarray(rng.normal(size=(N, M, 1, 2)), jnp.float32)
    key, ids = jax.random.PRNGKey(0), jnp.arange(N)
    one_hot = jnp.tile(jnp.array([[0.0, 1.0, 0.0]]), (N, 1))
    ens = sampler(params, stats, key, conds, jnp.ones((N, M, 1)), one_hot, ids)
    single = sampler(jax.tree.map(lambda a: a[1:2], params), jax.tree.map(lambda a: a[1:2], stats), key,
                     conds[:, 1:2], jnp.ones((N, 1, 1)), jnp.ones((N, 1)), ids)
    _assert_same_run(ens.x0, single.x0)

    avail = np.array([[1, 1, 1], [1, 0, 0], [0, 1, 1], [1, 1, 1], [1, 0, 0], [0, 1, 1]], bool)
    w = ensemble_weights(None, np.array([0.2, 0.3, 0.5]), avail)
    mixed = np.asarray(sampler(params, stats, key, conds, jnp.ones((N, M, 1)), w, ids).x0)
    for pattern in ({0, 3}, {1, 4}, {2, 5}):
        rows = np.array(sorted(pattern))
        alone = sampler(params, stats, key, conds[rows], jnp.ones((len(rows), M, 1)), w[rows], ids[rows])
        _assert_same_run(mixed[rows], alone.x0)


def _fixed_model(signs):
    """M members predicting signs[m] * (x_t + 1): identical up to sign."""
    signs = jnp.asarray(signs, jnp.float32)

    def eps(params, batch_stats, x_t, t, conds, masks):
        return signs[:, None, None] * (x_t + 1.0)[None]

    return eps_model(eps, CFG.x_dim)


def test_opposite_models_always_rejected_identical_never():
    schedule = make_schedule(SCHEDULE_CFG)
    N = 4
    rej = RejectionConfig(enabled=True, max_attempts=4)
    args = (None, None, jax.random.PRNGKey(0), jnp.zeros((N, 2, 1, 1)), jnp.ones((N, 2, 1)),
            jnp.full((N, 2), 0.5), jnp.arange(N))
    bad = make_sampler(_fixed_model([1.0, -1.0]), schedule, rejection=rej)(*args)
    assert np.all(np.asarray(bad.attempts) == 4)
    assert not np.any(np.asarray(bad.passed))
    assert np.all(np.asarray(bad.frac_incoherent) == 1.0)
    assert np.all(np.isfinite(np.asarray(bad.x0))) and np.any(np.asarray(bad.x0) != 0)  # never a zero vector
    good = make_sampler(_fixed_model([1.0, 1.0]), schedule, rejection=rej)(*args)
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
    model = eps_model(eps, CFG.x_dim)
    rej = make_sampler(model, schedule, rejection=RejectionConfig(max_attempts=3))(*args)
    plain = make_sampler(model, schedule, rejection=NO_REJECT)(*args)
    np.testing.assert_array_equal(np.asarray(rej.attempts), [3, 1, 1])
    np.testing.assert_array_equal(np.asarray(rej.passed), [False, True, True])
    np.testing.assert_allclose(np.asarray(rej.x0[1:]), np.asarray(plain.x0[1:]))


def _flag_model(record=None):
    """Two members: member 0 predicts x_t + 1, member 1 predicts c (x_t + 1) with c = the row's
    condition of member 1 (+1 agrees, -1 opposes). With ``record``, each executed first step
    appends the number of rows it ran on (the batch size of that attempt)."""

    def eps(params, batch_stats, x_t, t, conds, masks):
        if record is not None:
            jax.debug.callback(lambda t_, n=x_t.shape[0]: record.append(n) if int(t_) == SCHEDULE_CFG.timesteps - 1
                               else None, t)
        c = conds[:, 1, 0, :1]
        return jnp.stack([x_t + 1.0, c * (x_t + 1.0)])

    return eps_model(eps, CFG.x_dim)


def _flag_args(flags, weights, seed=0):
    """Sampler arguments for rows with member-1 condition ``flags`` and per-row ``weights`` f[N, 2]."""
    N = len(flags)
    conds = np.zeros((N, 2, 1, 1), np.float32)
    conds[:, 1, 0, 0] = flags
    return (None, None, jax.random.PRNGKey(seed), jnp.asarray(conds), jnp.ones((N, 2, 1)),
            jnp.asarray(weights, jnp.float32), jnp.arange(N))


def test_rows_with_one_available_model_always_pass_below_threshold_one():
    """cos_threshold < 1: a row with one model has no pair (d = 1 is "no pair"), so it passes at the
    first attempt; a coherent pair passes; an opposed pair (d = 2) is rejected every time."""
    schedule = make_schedule(SCHEDULE_CFG)
    flags = [1.0, -1.0, -1.0, 1.0]
    weights = [[0.5, 0.5], [0.5, 0.5], [1.0, 0.0], [0.0, 1.0]]  # pair, opposed pair, member 0 only, member 1 only
    res = make_sampler(_flag_model(), schedule, rejection=RejectionConfig(cos_threshold=0.5, max_attempts=3),
                       return_distance=True)(*_flag_args(flags, weights))
    np.testing.assert_array_equal(np.asarray(res.passed), [True, False, True, True])
    np.testing.assert_array_equal(np.asarray(res.attempts), [1, 3, 1, 1])
    np.testing.assert_array_equal(np.asarray(res.frac_incoherent), [0.0, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(np.asarray(res.distance)[2:], 1.0)  # reported as "no pair", never counted


def test_retries_run_only_the_rejected_rows_and_passed_rows_equal_a_run_without_rejection():
    """64 rows, 3 of them always rejected: the first attempt runs 64 rows, each retry the smallest
    retry size that holds 3 (16 = 64 / 4), not 64; rows passing at once equal the no-rejection run
    bit for bit."""
    from cgjax.sampling.coherent import retry_sizes

    schedule = make_schedule(SCHEDULE_CFG)
    N, bad = 64, np.array([5, 40, 63])
    flags = np.ones(N, np.float32)
    flags[bad] = -1.0
    args = _flag_args(flags, np.full((N, 2), 0.5))
    record = []
    rej = make_sampler(_flag_model(record), schedule, rejection=RejectionConfig(max_attempts=4))(*args)
    jax.effects_barrier()
    assert retry_sizes(N) == (64, 16)
    assert record == [64, 16, 16, 16], record  # 112 rows sampled, against 4 x 64 = 256 rerunning the chunk
    plain = make_sampler(_flag_model(), schedule, rejection=NO_REJECT)(*args)
    good = np.setdiff1d(np.arange(N), bad)
    np.testing.assert_array_equal(np.asarray(rej.x0)[good], np.asarray(plain.x0)[good])
    np.testing.assert_array_equal(np.asarray(rej.attempts)[bad], 4)
    assert not np.asarray(rej.passed)[bad].any() and np.asarray(rej.passed)[good].all()
    # many pending rows use the full batch again (no gather)
    record.clear()
    make_sampler(_flag_model(record), schedule, rejection=RejectionConfig(max_attempts=2))(
        *_flag_args(-np.ones(N, np.float32), np.full((N, 2), 0.5)))
    jax.effects_barrier()
    assert record == [64, 64], record


def test_a_row_that_never_passes_keeps_its_least_incoherent_attempt():
    """Member 1 opposes member 0 at the steps where x_t[0] < 0, so each attempt of a row has its own
    incoherent fraction; with max_fraction 0 no row passes. Allowing one more attempt must keep the
    kept trajectory when the new attempt is not less incoherent, and switch to it when it is: the
    kept fraction is the running minimum over attempts."""
    schedule = make_schedule(SCHEDULE_CFG)
    N = 16

    def eps(params, batch_stats, x_t, t, conds, masks):
        sign = jnp.where(x_t[:, :1] < 0, -1.0, 1.0)
        return jnp.stack([x_t + 1.0, sign * (x_t + 1.0)])

    args = (None, None, jax.random.PRNGKey(11), jnp.zeros((N, 2, 1, 1)), jnp.ones((N, 2, 1)),
            jnp.full((N, 2), 0.5), jnp.arange(N))
    runs = [make_sampler(eps_model(eps, CFG.x_dim), schedule,
                         rejection=RejectionConfig(max_fraction=0.0, max_attempts=m))(*args) for m in (1, 2, 3, 4)]
    fracs = np.stack([np.asarray(r.frac_incoherent) for r in runs])
    xs = np.stack([np.asarray(r.x0) for r in runs])
    assert not any(np.asarray(r.passed).any() for r in runs)
    assert np.all(np.diff(fracs, axis=0) <= 0)  # never a more incoherent trajectory
    switched = np.diff(fracs, axis=0) < 0
    assert switched.any() and (~switched).any()  # both branches taken
    for m in range(3):
        same = ~switched[m]
        np.testing.assert_array_equal(xs[m + 1][same], xs[m][same])
        assert np.all(np.any(xs[m + 1][~same] != xs[m][~same], axis=1))
    np.testing.assert_array_equal(np.asarray(runs[-1].attempts), 4)


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
    weights = np.asarray(ensemble_weights(None, np.array([0.5, 0.3, 0.2]),
                                           np.array([[1, 1, 1], [1, 0, 1], [0, 1, 0], [1, 1, 0]], bool)))
    key, row_ids = jax.random.PRNGKey(4), jnp.arange(N)
    noises = {t: np.asarray(row_noise(jax.random.fold_in(key, 0), row_ids, t, 3), np.float64)
              for t in range(SCHEDULE_CFG.timesteps + 1)}
    for solver in (SolverConfig("ddim", K, eta=0.5), SolverConfig("dpm", K)):
        schedule = make_schedule(SCHEDULE_CFG)
        sampler = make_sampler(make_model(CFG, schedule.timesteps), schedule, rejection=NO_REJECT, solver=solver)
        res = sampler(params, stats, key, jnp.asarray(conds), jnp.ones((N, M, 1)), jnp.asarray(weights), row_ids)
        ref = _np_solver_coherent(params, stats, conds.astype(np.float64), weights.astype(np.float64), noises,
                                  solver.kind, K, solver.eta)
        np.testing.assert_allclose(np.asarray(res.x0), ref, rtol=1e-4, atol=1e-4)
