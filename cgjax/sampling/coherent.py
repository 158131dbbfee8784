"""Coherent Denoising: the reverse process of a stacked ensemble as one compiled ``lax.scan``.

M denoisers of one target modality (stacked along a leading axis) each predict the noise from the
same x_t and their own conditions; the step uses the weighted consensus (docs/reference.md 4.2)

    eps_bar[n] = sum_m w[n, m] eps_hat_m[n],     sum_m w[n, m] = 1,

where each row n carries its own weights: a model whose condition the patient lacks gets weight 0
and the rest are renormalised, so one compiled program imputes a batch in which every patient has a
different set of modalities. At every step and row we also measure how much the models disagree,
the pair-weighted mean cosine distance (docs/reference.md 4.3)

    d[n, t] = 1 - sum_{i<j} w_ij cos(eps_hat_i[n], eps_hat_j[n]) / sum_{i<j} w_ij,
    w_ij = (w[n, i] + w[n, j]) / 2 for available pairs,

and count the steps where d > threshold. Only a row with at least two available models can be
incoherent: with one (M = 1, or one available model in a row) there is no pair, d is reported as
1 and the step never counts, whatever the threshold. A trajectory whose fraction of such steps
exceeds ``max_fraction`` is rejected and redrawn with fresh noise (docs/reference.md 4.4), inside a
``lax.while_loop`` with fixed shapes. The first attempt runs every row; each retry runs only the
rows still pending, gathered into a batch of the smallest of a few fixed sizes (N, N/4, N/16, ...;
:func:`retry_sizes`) that holds them, so the cost of retries scales with the rows retried and the
number of compiled programs stays bounded. A row that passes at the first attempt is exactly the
row of a run without rejection. A row that never passes keeps its least incoherent attempt and is
reported as not passed.

The same code samples a single-condition model (M = 1, one condition slot) and the multi-condition
model (M = 1, several condition slots with per-row masks).

Noise is drawn per row from ``fold_in(fold_in(fold_in(key, attempt), row_id), t)``: a row's sample
depends only on its own id, never on the batch it is in, so chunked and sharded runs give the same
result as one big batch.

The update applied to the consensus noise is a solver (:mod:`cgjax.sampling.solvers`): the paper's
ancestral DDPM step at every timestep (default), or DDIM / DPM-Solver++(2M) on K of them. With K
steps the coherence test counts incoherent steps among the K steps taken (fraction = count / K).

The denoiser is a :class:`cgjax.sampling.algebra.Model`: ``prepare`` runs once per call (and once
per retry of a subset of the rows), outside the reverse loop (BatchNorm folding, the [T, ...] time
tables, each row's condition projection), ``eps`` at every step. For a trained network it is
:func:`cgjax.sampling.algebra.make_model` (the folded network by default, or the network as
trained with ``"plain"``); the tests pass exact closed-form denoisers the same way.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from cgjax._validate import is_int, is_real
from cgjax.diffusion import anchor as anchor_lib
from cgjax.diffusion.parametrisation import to_eps
from cgjax.diffusion.schedule import Schedule
from cgjax.errors import ConfigError
from cgjax.sampling.algebra import Model
from cgjax.sampling import composition as comp
from cgjax.sampling.solvers import SolverConfig, make_solver

__all__ = ["Model", "RejectionConfig", "SampleResult", "SolverConfig", "make_sampler", "pairwise_cosine_distance",
           "row_noise"]


@dataclasses.dataclass(frozen=True)
class RejectionConfig:
    """Cosine-coherence rejection (docs/reference.md 4.4; paper defaults, the reference used 0.10)."""

    enabled: bool = True
    cos_threshold: float = 1.0  # a step is incoherent when d > threshold (strict)
    max_fraction: float = 0.05  # accept when the fraction of incoherent steps is <= this
    max_attempts: int = 10

    def __post_init__(self):
        if not isinstance(self.enabled, bool):
            raise ConfigError(f"RejectionConfig.enabled must be True or False, got {self.enabled!r}")
        if not (is_real(self.cos_threshold) and 0.0 <= self.cos_threshold <= 2.0):
            raise ConfigError(f"RejectionConfig.cos_threshold must be in [0, 2] (a cosine distance), "
                              f"got {self.cos_threshold!r}")
        if not (is_real(self.max_fraction) and 0.0 <= self.max_fraction <= 1.0):
            raise ConfigError(f"--reject-fraction (RejectionConfig.max_fraction) must be in [0, 1], "
                              f"got {self.max_fraction!r}")
        if not (is_int(self.max_attempts) and self.max_attempts >= 1):
            raise ConfigError(f"--max-attempts (RejectionConfig.max_attempts) must be an integer >= 1, "
                              f"got {self.max_attempts!r}")


class SampleResult(NamedTuple):
    x0: jnp.ndarray  # f32[N, F] the samples
    attempts: jnp.ndarray  # i32[N] attempts used (1 = accepted at the first)
    passed: jnp.ndarray  # bool[N] whether the returned trajectory passed the coherence test
    frac_incoherent: jnp.ndarray  # f32[N] fraction of incoherent steps of the returned trajectory
    distance: Optional[jnp.ndarray] = None  # f32[N, K] d[n, k] of the returned trajectory per step (T-1 first)


def pairwise_cosine_distance(eps_all, weights):
    """d[n] = 1 - weighted mean over available pairs i < j of cos(eps_i[n], eps_j[n]).

    eps_all: f32[M, N, F]; weights: f32[N, M] (0 for absent models). Pairs with a zero-weight member
    are excluded; rows with no pair get d = 1 (s_bar = 0, as the reference's M = 1 case).
    """
    M = eps_all.shape[0]
    norms = jnp.linalg.norm(eps_all, axis=-1)  # [M, N]
    unit = eps_all / jnp.maximum(norms, 1e-8)[..., None]
    # M is small (2-3): an elementwise product and a sum over F, rather than an [N]-batched M x M
    # matrix product, which XLA:CPU runs as N tiny GEMMs
    cos = jnp.sum(unit[:, None] * unit[None, :], axis=-1)  # [M, M, N]
    w, avail = weights.T, (weights.T > 0).astype(eps_all.dtype)  # [M, N]
    pair_w = 0.5 * (w[:, None] + w[None, :]) * avail[:, None] * avail[None, :]
    upper = jnp.triu(jnp.ones((M, M), eps_all.dtype), k=1)[..., None]
    pair_w = pair_w * upper
    num = jnp.sum(pair_w * cos, axis=(0, 1))
    den = jnp.sum(pair_w, axis=(0, 1))
    s_bar = jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)
    return 1.0 - s_bar


def row_noise(key, row_ids, t, dim: int):
    """f32[N, dim] standard normal noise for step ``t``, from each row's own key."""
    keys = jax.vmap(lambda r: jax.random.fold_in(jax.random.fold_in(key, r), t))(row_ids)
    return jax.vmap(lambda k: jax.random.normal(k, (dim,), jnp.float32))(keys)


RETRY_SHRINK = 4  # retry batch sizes: N, ceil(N / 4), ceil(N / 16), ... down to RETRY_MIN_ROWS
RETRY_MIN_ROWS = 16


def retry_sizes(n: int) -> tuple[int, ...]:
    """The batch sizes a retry of an N-row call may run at, largest first: N, then N / 4, N / 16, ...
    (rounded up) while at least :data:`RETRY_MIN_ROWS`. A retry of P pending rows runs at the
    smallest size >= P, so it costs at most 4 P rows (or RETRY_MIN_ROWS), never the whole batch
    for a few stubborn rows, and one call compiles at most log_4(N / 16) + 1 retry programs."""
    sizes = [n]
    while -(-sizes[-1] // RETRY_SHRINK) >= RETRY_MIN_ROWS and sizes[-1] > RETRY_MIN_ROWS:
        sizes.append(-(-sizes[-1] // RETRY_SHRINK))
    return tuple(sizes)


def make_sampler(model: Model, schedule: Schedule, *, rejection: RejectionConfig = RejectionConfig(),
                 return_distance: bool = False, solver: SolverConfig = SolverConfig(),
                 composition: str = "average", corrector_steps: int = 0, corrector_snr: float = 0.5,
                 base_slots: tuple[int, ...] | None = None):
    """Build the jitted ensemble sampler of ``model`` (:class:`cgjax.sampling.algebra.Model`; for a
    trained network, :func:`cgjax.sampling.algebra.make_model`).

    Returns ``sample(params, batch_stats, key, conds, masks, weights, row_ids) -> SampleResult`` with
      params, batch_stats: stacked along M (passed to ``model.prepare`` as they are);
      conds: f32[N, M, K, C];  masks: f32[N, M, K];
      weights: f32[N, M], each row summing to 1 over its available models;  row_ids: i32[N] global
      row identities (replicate-major), which alone decide each row's noise.

    ``solver`` picks the reverse process (:mod:`cgjax.sampling.solvers`); ``distance`` is then
    f32[N, K] over the K steps taken. The model's output is read as ``model.parametrisation`` says
    (eps, v or x_0) and converted to eps here, once per step
    (:func:`cgjax.diffusion.parametrisation.to_eps`), before the consensus, the coherence test and the
    solver, which all work on eps.

    ``composition`` (``average``, the paper's, ``product`` or ``anchored``) and ``corrector_steps`` /
    ``corrector_snr`` (Langevin steps at each visited level before the solver step) are described in
    :mod:`cgjax.sampling.composition`. ``product`` runs the members a second time per evaluation with
    every condition masked (their unconditional predictions). ``anchored`` needs a model with an
    anchor (``model.offset``) and the anchor of the target's multi-condition model: ``params`` is then
    ``{"members": the stacked members' params, "base": that anchor's arrays (one model, not
    stacked)}``, and ``base_slots`` (static) gives, per member, the condition slot of the multi model
    its condition fills, followed by the multi model's number of slots; a row's base pattern is the
    set of its members with weight > 0. The coherence distance d is always measured on the members'
    conditional eps at the solver's evaluation, as without these options.
    """
    comp.validate(composition, corrector_steps, corrector_snr, owner="make_sampler")
    if composition == "auto":
        raise ConfigError("make_sampler takes a concrete composition: resolve 'auto' for a model set with "
                          "cgjax.ensemble.sample.composition_for")
    if composition == "anchored" and (model.offset is None or not base_slots):
        raise ConfigError("--composition anchored needs models with an anchor (ArchConfig.anchor) and the "
                          "multi model's anchor with its condition slots (make_sampler's base_slots)")
    sol = make_solver(schedule, solver)
    K = len(sol.timesteps)
    T = schedule.timesteps
    F = model.x_dim
    timesteps = jnp.asarray(sol.timesteps, jnp.int32)

    def prepare(params, batch_stats, conds, masks, weights):
        """The prepared model, and for ``product`` the same members with every condition masked, for
        ``anchored`` the multi model's anchor prepared for each row's pattern."""
        if composition == "anchored":
            *slots, n_slots = base_slots
            N = conds.shape[0]
            C = max(conds.shape[-1], params["base"]["coef"].shape[-2] // n_slots)  # the wider slot width
            base_conds = jnp.zeros((N, n_slots, C), conds.dtype).at[:, jnp.asarray(slots), :conds.shape[-1]].set(
                conds[:, :, 0])
            base_masks = jnp.zeros((N, n_slots), conds.dtype).at[:, jnp.asarray(slots)].set(
                (weights > 0).astype(conds.dtype))
            return (model.prepare(params["members"], batch_stats, conds, masks),
                    anchor_lib.prepare(params["base"], base_conds, base_masks))
        prepared = model.prepare(params, batch_stats, conds, masks)
        if composition != "product":
            return prepared, None
        return prepared, model.prepare(params, batch_stats, jnp.zeros_like(conds), jnp.zeros_like(masks))

    def as_eps(out, x_t, t):
        # the members' outputs as noise predictions (identity for the paper's eps-prediction)
        return to_eps(model.parametrisation, out, x_t[None], schedule.alpha_bars[t])

    def member_eps(prepared, x_t, t):
        out = model.eps(prepared, x_t, t)
        if model.offset is not None:  # e.g. the Gaussian anchor, in the output's units
            out = out + model.offset(prepared, x_t, schedule.alpha_bars[t])
        return as_eps(out, x_t, t)

    def composed(both, weights, x_t, t):
        """(the composed eps f32[N, F], the members' conditional eps f32[M, N, F]) at (x_t, t)."""
        if composition == "anchored":
            abar = schedule.alpha_bars[t]
            offset = model.offset(both[0], x_t, abar)
            eps_all = as_eps(model.eps(both[0], x_t, t) + offset, x_t, t)
            base = anchor_lib.predict(both[1], x_t, abar, "eps")
            return comp.anchored(eps_all, as_eps(offset, x_t, t), base, weights), eps_all
        eps_all = member_eps(both[0], x_t, t)  # [M, N, F]
        if composition == "product":
            return comp.product(eps_all, member_eps(both[1], x_t, t), weights), eps_all
        # the consensus (docs/reference.md 4.2) as an elementwise weighted sum over the few members
        return comp.average(eps_all, weights), eps_all

    def correct(both, key, weights, row_ids, x_t, t):
        """``corrector_steps`` Langevin steps at level t, each with its own noise per row."""
        ckey = jax.random.fold_in(key, comp.CORRECTOR_NOISE_TAG)

        def one(j, x):
            z = row_noise(jax.random.fold_in(ckey, j), row_ids, t, F)
            return comp.langevin_step(x, composed(both, weights, x, t)[0], z, schedule.alphas[t],
                                      schedule.alpha_bars[t], corrector_snr)

        return jax.lax.fori_loop(0, corrector_steps, one, x_t)

    def trajectory(prepared, key, weights, row_ids):
        """One full reverse process for every row. Returns x0, incoherent-step count, distances."""
        x_T = row_noise(key, row_ids, T, F)  # the initial noise uses the otherwise unused index T
        # only a row with a pair of available models can be incoherent (d = 1 means "no pair")
        has_pair = jnp.sum(weights > 0, axis=1) >= 2

        def step(carry, inputs):
            x_t, aux, n_bad = carry
            t, xs_k = inputs
            if corrector_steps:
                x_t = correct(prepared, key, weights, row_ids, x_t, t)
            eps_bar, eps_all = composed(prepared, weights, x_t, t)
            d = pairwise_cosine_distance(eps_all, weights)
            n_bad = n_bad + ((d > rejection.cos_threshold) & has_pair).astype(jnp.int32)
            z = row_noise(key, row_ids, t, F) if sol.stochastic else None
            x_next, aux = sol.step(aux, x_t, eps_bar, z, xs_k)
            return (x_next, aux, n_bad), (d if return_distance else None)

        init = (x_T, sol.init(x_T), jnp.zeros(x_T.shape[0], jnp.int32))
        (x0, _, n_bad), dist = jax.lax.scan(step, init, (timesteps, sol.xs))
        return x0, n_bad, (None if dist is None else dist.T)

    def sample(params, batch_stats, key, conds, masks, weights, row_ids):
        N = conds.shape[0]
        # once per call: folding, time tables, condition projections of every row
        prepared = prepare(params, batch_stats, conds, masks, weights)
        x0, n_bad, dist = trajectory(prepared, jax.random.fold_in(key, 0), weights, row_ids)
        frac = n_bad.astype(jnp.float32) / K  # over the K steps taken
        if not rejection.enabled:
            return SampleResult(x0, jnp.ones(N, jnp.int32), jnp.ones(N, bool), frac, dist)
        passed = frac <= rejection.max_fraction
        sizes = retry_sizes(N)

        def retry(attempt, pending):
            """Attempt ``attempt`` for the pending rows only: they are gathered to the front of a
            batch of the smallest size in ``sizes`` that holds them all (one branch per size, all
            compiled once), run, and scattered back; other rows' outputs are zero and unused."""
            order = jnp.argsort(~pending, stable=True)  # pending rows first, in row order
            akey = jax.random.fold_in(key, attempt)

            def branch(size):
                def run(_):
                    if size == N:  # everything pending: no gather, reuse the prepared model
                        return trajectory(prepared, akey, weights, row_ids)
                    idx = order[:size]
                    sub = prepare(params, batch_stats, conds[idx], masks[idx], weights[idx])
                    x, nb, d = trajectory(sub, akey, weights[idx], row_ids[idx])
                    scatter = lambda a: jnp.zeros((N,) + a.shape[1:], a.dtype).at[idx].set(a)
                    return scatter(x), scatter(nb), (None if d is None else scatter(d))
                return run

            which = jnp.sum(jnp.asarray(sizes) >= jnp.sum(pending)) - 1  # the smallest size that fits
            return jax.lax.switch(which, [branch(s) for s in sizes], None)

        init = (jnp.int32(1), x0, frac, passed, jnp.ones(N, jnp.int32), dist)

        def cond(state):
            attempt, _, _, passed, _, _ = state
            return (attempt < rejection.max_attempts) & ~jnp.all(passed)

        def body(state):
            attempt, best_x, best_frac, passed, attempts, best_dist = state
            pending = ~passed
            x_new, n_bad, dist_new = retry(attempt, pending)
            f_new = n_bad.astype(jnp.float32) / K
            ok = pending & (f_new <= rejection.max_fraction)
            # pending rows take an accepted attempt, or a rejected one that is less incoherent
            take = ok | (pending & (f_new < best_frac))
            best_x = jnp.where(take[:, None], x_new, best_x)
            best_frac = jnp.where(take, f_new, best_frac)
            if best_dist is not None:
                best_dist = jnp.where(take[:, None], dist_new, best_dist)
            attempts = jnp.where(pending, attempt + 1, attempts)
            return attempt + 1, best_x, best_frac, passed | ok, attempts, best_dist

        _, x0, frac, passed, attempts, dist = jax.lax.while_loop(cond, body, init)
        return SampleResult(x0, attempts, passed, frac, dist)

    return jax.jit(sample)

