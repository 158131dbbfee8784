"""Coherent Denoising throughput: our sampler against a PyTorch baseline structured like the reference.

One run, the same weights and sizes for every implementation: M = 3 norm_mlp denoisers of the paper's
size (5 layers, hidden 512, time embedding 128, condition embedding 32, F = 32), N rows (1,350: the
test set; 13,500: its 10 repetitions batched), T = 1000 steps of the ancestral sampler, one attempt
(no rejection retries; every implementation still computes the pairwise cosine distances and counts
incoherent steps at every step, as the reference does).

Implementations timed:
  * ``cgjax_folded``: our sampler as shipped (one jitted scan; BatchNorm folded, time tables and
    condition projections precomputed; :mod:`cgjax.sampling.algebra`).
  * ``cgjax_plain``: the same jitted scan evaluating the network as trained (no algebra).
  * ``cgjax_<solver>_K``: the accelerated solver on K of the T steps (``--solver``, ``--solver-steps``).
  * ``torch_eager``: the reference's structure (docs/reference.md 7): a Python loop over the T steps, over
    the M models (one forward each: concatenations, Linear, BatchNorm1d in eval mode, ReLU) and over
    the model pairs for ``F.cosine_similarity``; default torch threads, eager, ``torch.no_grad``.
  * ``torch_tuned``: the same loop under ``torch.inference_mode``, threads = physical cores, denormals
    flushed; ``torch_compile`` / ``torch_compile_freeze``: additionally the whole per-step function
    (M forwards, consensus, cosines, update) compiled by ``torch.compile`` (inductor, C++ backend;
    ``freeze`` turns on inductor's weight freezing, which prepacks the Linear weights for oneDNN).
    ``torch_best`` is the fastest of these.

Long runs are extrapolated from fewer steps: every step of a T-step run does the same work, so for our
sampler we time S1 and S2 steps (compilation excluded and reported apart) and fit time = a + b S; for
torch, time per step x T. The output says which cases were extrapolated. Every implementation is
compiled / warmed up first; then ``--repeats`` rounds each time every implementation once, in a
rotated order, and we quote medians, so that load from other jobs falls on all of them alike.

The floor is the network's FLOPs (plain network: 2 x MACs of its matrix products per row, model and
step) divided by the best float32 GEMM rate measured in this run (a large square jnp.dot, np.dot and
torch.mm). The machine is shared (2 cores; other jobs may run), so rates and times are noisy: each
number is a median, and the GEMM rate is measured before and after.

Usage:
  pip install torch==2.13.0   # benchmark only; never a dependency of cgjax
  python experiments/bench_sampling.py --json bench.json
  python experiments/bench_sampling.py --quick
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

import numpy as np

import jax
import jax.numpy as jnp

from cgjax.diffusion import denoiser
from cgjax.diffusion.schedule import Schedule, ScheduleConfig, make_schedule
from cgjax.sampling import algebra
from cgjax.sampling.coherent import RejectionConfig, make_sampler
from cgjax.sampling.solvers import SolverConfig

PAPER = denoiser.DenoiserConfig(x_dim=32, cond_dims=(32,), hidden=512, n_layers=5, time_dim=128, cond_embed_dim=32)
NO_RETRY = RejectionConfig(enabled=False)  # distances and counts are still computed at every step


# ---- shared weights and inputs ------------------------------------------------------------------

def make_members(M: int, cfg: denoiser.DenoiserConfig = PAPER, seed: int = 0):
    """M models stacked along axis 0 with non-trivial BatchNorm affine parameters and running stats
    (as after training), so that folding is really exercised."""
    rng = np.random.default_rng(seed)
    members = []
    for m in range(M):
        params, stats = denoiser.init(jax.random.PRNGKey(seed * 100 + m), cfg)
        params["bn"] = [{"scale": jnp.asarray(1 + 0.2 * rng.normal(size=b["scale"].shape), jnp.float32),
                         "bias": jnp.asarray(0.1 * rng.normal(size=b["bias"].shape), jnp.float32)} for b in params["bn"]]
        stats = [{"mean": jnp.asarray(0.2 * rng.normal(size=s["mean"].shape), jnp.float32),
                  "var": jnp.asarray(np.exp(0.3 * rng.normal(size=s["var"].shape)), jnp.float32)} for s in stats]
        members.append((params, stats))
    stack = lambda trees: jax.tree.map(lambda *xs: jnp.stack(xs), *trees)
    return stack([p for p, _ in members]), stack([s for _, s in members])


def make_inputs(N: int, M: int, cfg: denoiser.DenoiserConfig = PAPER, seed: int = 1):
    rng = np.random.default_rng(seed)
    conds = rng.normal(size=(N, M, 1, cfg.cond_dims[0])).astype(np.float32)
    weights = np.tile(np.array([0.5, 0.3, 0.2][:M] if M == 3 else np.full(M, 1.0 / M), np.float32), (N, 1))
    weights /= weights.sum(1, keepdims=True)
    return conds, weights


def first_steps(schedule: Schedule, S: int) -> Schedule:
    """The schedule's first S timesteps: a reverse run over it does S steps of exactly the per-step
    work of the full schedule (used to time S << T steps and extrapolate)."""
    return Schedule(schedule.betas[:S], schedule.alphas[:S], schedule.alpha_bars[:S])


# ---- GEMM rate ----------------------------------------------------------------------------------

def _median_time(fn, repeats: int) -> float:
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def gemm_rates(n: int = 4096, repeats: int = 3, torch=None) -> dict:
    """GFLOP/s of a float32 n x n x n GEMM by jnp.dot (jitted), np.dot, torch.mm; and of one layer's
    shape [13,500 x 512] @ [512 x 512] by jnp.dot."""
    rng = np.random.default_rng(0)
    a, b = (rng.normal(size=(n, n)).astype(np.float32) for _ in range(2))
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    dot = jax.jit(jnp.dot)
    dot(ja, jb).block_until_ready()
    flops = 2.0 * n ** 3
    out = {"jnp_dot": flops / _median_time(lambda: dot(ja, jb).block_until_ready(), repeats) / 1e9}
    a @ b
    out["np_dot"] = flops / _median_time(lambda: a @ b, repeats) / 1e9
    if torch is not None:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        torch.mm(ta, tb)
        out["torch_mm"] = flops / _median_time(lambda: torch.mm(ta, tb), repeats) / 1e9
    la, lb = jnp.asarray(rng.normal(size=(13500, 512)), jnp.float32), jnp.asarray(rng.normal(size=(512, 512)), jnp.float32)
    dot(la, lb).block_until_ready()
    out["jnp_dot_13500x512x512"] = 2.0 * 13500 * 512 * 512 / _median_time(lambda: dot(la, lb).block_until_ready(),
                                                                             repeats * 3) / 1e9
    return out


# ---- our sampler --------------------------------------------------------------------------------

def our_runner(schedule: Schedule, params, stats, conds, weights, *, algebra_name="folded",
               solver: SolverConfig = SolverConfig()):
    """A zero-argument callable running our jitted sampler once (blocking), and its compile time
    (first call minus a second, steady call)."""
    N, M = conds.shape[:2]
    args = (params, stats, jax.random.PRNGKey(0), jnp.asarray(conds), jnp.ones((N, M, 1), jnp.float32),
            jnp.asarray(weights), jnp.arange(N, dtype=jnp.int32))
    sampler = make_sampler(algebra.make_model(PAPER, schedule.timesteps, algebra_name), schedule, rejection=NO_RETRY,
                           solver=solver)
    fn = lambda: sampler(*args).x0.block_until_ready()
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    fn()
    return fn, max(first - (time.perf_counter() - t0), 0.0)


def fit_steps(s1: int, t1: float, s2: int, t2: float, T: int) -> tuple[float, float, float]:
    """time = a + b S through two (steps, seconds) points, evaluated at T: (seconds, b, a)."""
    b = (t2 - t1) / (s2 - s1)
    a = max(t1 - b * s1, 0.0)
    return a + b * T, b, a


def run_rounds(timers: dict, rounds: int) -> dict:
    """Seconds of every callable in ``timers``, ``rounds`` times, interleaved (each round runs every
    callable once, in a rotated order), so that a burst of load from other jobs does not fall on one
    implementation only. Returns name -> list of seconds."""
    names = list(timers)
    out = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            timers[n]()
            out[n].append(time.perf_counter() - t0)
    return out


# ---- the PyTorch baseline -----------------------------------------------------------------------

def torch_baseline(torch, cfg: denoiser.DenoiserConfig):
    """A norm_mlp module written as the reference writes it (docs/reference.md 2.3-2.5): concatenated inputs,
    one Linear per layer, BatchNorm1d (eval), ReLU, time embedding re-concatenated."""
    nn = torch.nn

    class NormMLP(nn.Module):
        def __init__(self):
            super().__init__()
            F, H, Dt, E, C = cfg.x_dim, cfg.hidden, cfg.time_dim, cfg.cond_embed_dim, cfg.cond_dims[0]
            self.time = nn.Linear(Dt, Dt)
            self.cond = nn.Linear(C, E)
            sizes = [F + Dt + E] + [H + Dt] * (cfg.n_layers - 1)
            outs = [H] * (cfg.n_layers - 1) + [F]
            self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(sizes, outs))
            self.bns = nn.ModuleList(nn.BatchNorm1d(H, eps=cfg.bn_eps) for _ in range(cfg.n_layers - 1))
            half = Dt // 2
            self.register_buffer("freqs", torch.exp(-torch.arange(half, dtype=torch.float32)
                                                    * (math.log(10000.0) / (half - 1))))

        def forward(self, x, t, c):
            ang = t.float()[:, None] * self.freqs[None]
            t_emb = torch.relu(self.time(torch.cat([torch.sin(ang), torch.cos(ang)], dim=1)))
            c_emb = torch.relu(self.cond(c))
            h = torch.cat([x, t_emb, c_emb], dim=1)
            for lin, bn in zip(self.layers[:-1], self.bns):
                h = torch.cat([torch.relu(bn(lin(h))), t_emb], dim=1)
            return self.layers[-1](h)

    return NormMLP


def load_torch_models(torch, cfg, params, stats):
    """Our stacked weights into M NormMLP modules (eval mode). Split blocks are concatenated in the
    reference's input order [x, t_emb, c_emb] / [h, t_emb]; torch stores Linear weights as [out, in]."""
    NormMLP = torch_baseline(torch, cfg)
    P = jax.tree.map(np.asarray, params)
    S = jax.tree.map(np.asarray, stats)
    models = []
    for m in range(P["time"]["w"].shape[0]):
        mod = NormMLP()
        t = lambda a: torch.from_numpy(np.array(a[m].T))  # np.array: a writable copy
        v = lambda a: torch.from_numpy(np.array(a[m]))
        with torch.no_grad():
            mod.time.weight.copy_(t(P["time"]["w"]))
            mod.time.bias.copy_(v(P["time"]["b"]))
            mod.cond.weight.copy_(t(P["cond"][0]["w"]))
            mod.cond.bias.copy_(v(P["cond"][0]["b"]))
            for i, (lin, layer) in enumerate(zip(mod.layers, P["layers"])):
                blocks = ["w_x", "w_t", "w_c"] if i == 0 else ["w_h", "w_t"]
                w = np.concatenate([layer[k][m] for k in blocks], axis=0)
                lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T)))
                lin.bias.copy_(v(layer["b"]))
            for bn, pb, sb in zip(mod.bns, P["bn"], S):
                bn.weight.copy_(v(pb["scale"]))
                bn.bias.copy_(v(pb["bias"]))
                bn.running_mean.copy_(v(sb["mean"]))
                bn.running_var.copy_(v(sb["var"]))
        models.append(mod.eval())
    return models


def make_torch_step(torch, models, weights_row, schedule: Schedule, threshold: float = 1.0):
    """One reverse step as the reference's coherent sampler does it (docs/reference.md 4.2-4.3): every model's
    forward, the weighted consensus, the pair-weighted cosine distance (a loop over pairs) and the
    ancestral update. ``weights_row``: the M weights (shared by all rows, as in the reference)."""
    F_ = torch.nn.functional
    betas, alphas, abars = (torch.from_numpy(np.array(a, np.float32)) for a in schedule)
    w = [float(x) for x in weights_row]
    # returns (step, coefs f32[T, 3]); the loop passes coefs[t]
    M = len(models)

    def step(x, t_vec, coef, conds, z, n_bad):
        """coef: f32[3] = (beta_t, alpha_t, abar_t), passed in so that the step has no data-dependent
        indexing (torch.compile graphs it whole)."""
        eps = [models[i](x, t_vec, conds[i]) for i in range(M)]
        eps_bar = sum(w[i] * eps[i] for i in range(M))
        num, den = 0.0, 0.0
        for i in range(M):
            for j in range(i + 1, M):
                wij = 0.5 * (w[i] + w[j])
                num = num + wij * F_.cosine_similarity(eps[i], eps[j], dim=1, eps=1e-8)
                den = den + wij
        n_bad = n_bad + ((1.0 - num / den) > threshold).int()
        beta, alpha, abar = coef[0], coef[1], coef[2]
        mean = (x - beta / torch.sqrt(1.0 - abar) * eps_bar) / torch.sqrt(alpha)
        sigma = torch.where(t_vec[0] > 0, torch.sqrt(beta), torch.zeros_like(beta))
        return mean + sigma * z, n_bad

    coefs = torch.stack([betas, alphas, abars], dim=1)  # [T, 3]
    return step, coefs


def torch_runner(torch, step_coefs, conds_np, N, F, steps, context, threads: int):
    """A zero-argument callable running ``steps`` reverse steps of the Python loop (under ``context``,
    with ``threads`` torch threads), after 2 warm-up steps (compilation for the compiled variants);
    returns (callable, warm-up seconds)."""
    step, coefs = step_coefs
    conds = [torch.from_numpy(np.ascontiguousarray(conds_np[:, m, 0])) for m in range(conds_np.shape[1])]
    gen = torch.Generator().manual_seed(0)

    def run(n_steps=steps, start=steps - 1):
        torch.set_num_threads(threads)
        with context():
            x = torch.randn(N, F, generator=gen)
            n_bad = torch.zeros(N, dtype=torch.int32)
            for t in range(start, start - n_steps, -1):  # reversed(range(...)) as the reference
                x, n_bad = step(x, torch.full((N,), t, dtype=torch.long), coefs[t], conds,
                                torch.randn(N, F, generator=gen), n_bad)
        return x

    t0 = time.perf_counter()
    run(2, steps + 1)
    return run, time.perf_counter() - t0


def torch_eps_parity(torch, models, params, stats, conds, t: int = 500, n: int = 64) -> float:
    """Max |eps_torch - eps_ours| over n rows for every model (our plain network), a sanity check
    that the baseline computes the same function."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, PAPER.x_dim)).astype(np.float32)
    model = algebra.plain_model(PAPER)
    ours = np.asarray(model.eps(model.prepare(params, stats, jnp.asarray(conds[:n]),
                                              jnp.ones((n, conds.shape[1], 1))), jnp.asarray(x), t))
    with torch.no_grad():
        theirs = np.stack([models[m](torch.from_numpy(x), torch.full((n,), t), torch.from_numpy(conds[:n, m, 0]))
                           .numpy() for m in range(len(models))])
    return float(np.abs(ours - theirs).max())


# ---- main ---------------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: N = 1,350 only, few steps, 1 repeat")
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="row counts N (default 1350 13500)")
    ap.add_argument("--models", type=int, default=3, help="M")
    ap.add_argument("--timesteps", type=int, default=1000, help="T")
    ap.add_argument("--repeats", type=int, default=None, help="repeats per timing (median; default 3, quick 1)")
    ap.add_argument("--solver", default="dpm", choices=("ddim", "dpm"))
    ap.add_argument("--solver-steps", type=int, default=None,
                    help="K for the accelerated solver (default: from --solver-steps-json, else 20)")
    ap.add_argument("--solver-steps-json", default=None, help="experiments/solver_steps.py --json output")
    ap.add_argument("--torch-steps", type=int, default=None, help="torch steps timed per repeat (default by N)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)

    quick = args.quick
    sizes = args.sizes or ([1350] if quick else [1350, 13500])
    repeats = args.repeats or (1 if quick else 3)
    M, T = args.models, args.timesteps
    K = args.solver_steps
    if K is None and args.solver_steps_json:
        with open(args.solver_steps_json) as f:
            K = json.load(f)["fewest_steps"].get(args.solver)
    K = K or 20
    try:
        import torch
    except ImportError:
        torch = None
        print("torch is not installed: skipping the PyTorch baselines (pip install torch==2.13.0)", file=sys.stderr)

    load0 = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, load average {load0[0]:.2f} (shared: other jobs may be running, so the "
          "numbers are noisy), "
          f"jax {jax.__version__} on {jax.devices()[0].platform}" + (f", torch {torch.__version__} "
                                                                      f"({torch.get_num_threads()} threads)" if torch else ""))
    rates0 = gemm_rates(2048 if quick else 4096, repeats=2 if quick else 3, torch=torch)
    print("float32 GEMM GFLOP/s (before):", {k: round(v, 1) for k, v in rates0.items()})

    schedule = make_schedule(ScheduleConfig(timesteps=T))
    params, stats = make_members(M)
    macs = {a: algebra.step_macs(PAPER, a) for a in ("plain", "folded")}
    cases, extra = [], {}

    def add(impl, N, seconds, **info):
        cases.append({"impl": impl, "N": N, "T": T, "M": M, "seconds": seconds, "rows_per_s": N / seconds, **info})
        note = f"  [{info['extrapolated']}]" if info.get("extrapolated") else ""
        comp = f"  (compile {info['compile_seconds']:.1f} s excluded)" if "compile_seconds" in info else ""
        print(f"  {impl:<22} N={N:<6} {seconds:9.2f} s  {N / seconds:10.1f} rows/s{comp}{note}", flush=True)

    for N in sizes:
        conds, weights = make_inputs(N, M)
        print(f"\nN = {N}, M = {M}, T = {T}", flush=True)
        S1, S2 = (5, 15) if quick else ((10, 40) if N <= 2000 else (4, 12))
        timers, info = {}, {}
        for name in ("folded", "plain"):
            for S in (S1, S2):
                fn, comp = our_runner(first_steps(schedule, S), params, stats, conds, weights, algebra_name=name)
                timers[f"cgjax_{name}@{S}"], info[f"cgjax_{name}@{S}"] = fn, comp
        solver_name = f"cgjax_{args.solver}_{K}"
        timers[solver_name], info[solver_name] = our_runner(schedule, params, stats, conds, weights,
                                                            solver=SolverConfig(args.solver, K))
        t_steps = args.torch_steps or (3 if quick else (20 if N <= 2000 else 5))
        if torch is not None:
            models = load_torch_models(torch, PAPER, params, stats)
            diff = torch_eps_parity(torch, models, params, stats, conds)
            extra.setdefault("torch_eps_max_abs_diff", diff)
            print(f"  torch vs cgjax plain network: max |eps diff| = {diff:.2e}")
            sub = first_steps(schedule, t_steps + 2)
            default_threads = torch.get_num_threads()
            # threads: on a shared machine fewer threads than cores can win (an OpenMP region waits for
            # its slowest thread), so the tuned variants use whichever count is fastest right now
            probe = {}
            for n_threads in sorted({1, os.cpu_count() or default_threads, default_threads}):
                run, _ = torch_runner(torch, make_torch_step(torch, models, weights[0], sub), conds, N, PAPER.x_dim,
                                      2, torch.inference_mode, n_threads)
                probe[n_threads] = _median_time(run, 2) / 2
            threads = min(probe, key=probe.get)
            print("  torch threads probe (s/step): " + ", ".join(f"{k}: {v:.3f}" for k, v in probe.items())
                  + f" -> {threads}")
            variants = [("torch_eager", torch.no_grad, None, default_threads),
                        ("torch_tuned", torch.inference_mode, None, threads)]
            if not args.no_compile:
                variants += [("torch_compile", torch.inference_mode, "compile", threads),
                             ("torch_compile_freeze", torch.inference_mode, "freeze", threads)]
            for impl, ctx, compile_mode, n_threads in variants:
                torch.set_flush_denormal(impl != "torch_eager")
                step = make_torch_step(torch, models, weights[0], sub)
                if compile_mode:
                    import torch._inductor.config as inductor_config

                    inductor_config.freezing = compile_mode == "freeze"
                    step = (torch.compile(step[0], dynamic=False), step[1])
                try:
                    run, warm = torch_runner(torch, step, conds, N, PAPER.x_dim, t_steps, ctx, n_threads)
                    run()
                except Exception as e:  # e.g. no C++ toolchain for inductor: report and go on
                    print(f"  {impl:<22} failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
                    continue
                timers[impl], info[impl] = run, (warm, n_threads)
            torch.set_flush_denormal(False)
            torch.set_num_threads(default_threads)

        times = run_rounds(timers, repeats)
        med = {n: statistics.median(v) for n, v in times.items()}
        for name in ("folded", "plain"):
            secs, per_step, fixed = fit_steps(S1, med[f"cgjax_{name}@{S1}"], S2, med[f"cgjax_{name}@{S2}"], T)
            add(f"cgjax_{name}", N, secs, compile_seconds=max(info[f"cgjax_{name}@{S}"] for S in (S1, S2)),
                per_step=per_step, fixed=fixed,
                extrapolated=f"fit a + b*S on S = {S1}, {S2} steps, {repeats} interleaved repeats -> T = {T}")
        add(solver_name, N, med[solver_name], compile_seconds=info[solver_name], steps=K,
            extrapolated=f"all {K} steps, median of {repeats}")
        for impl in [n for n in timers if n.startswith("torch")]:
            warm, n_threads = info[impl]
            add(impl, N, med[impl] / t_steps * T, per_step=med[impl] / t_steps, warmup_seconds=warm,
                threads=n_threads, extrapolated=f"{t_steps} steps, {repeats} interleaved repeats, per-step x T = {T}")

    rates1 = gemm_rates(2048 if quick else 4096, repeats=2 if quick else 3, torch=torch)
    load1 = os.getloadavg()
    print("\nfloat32 GEMM GFLOP/s (after):", {k: round(v, 1) for k, v in rates1.items()},
          f"load average {load1[0]:.2f}")
    square = [v for r in (rates0, rates1) for k, v in r.items() if "13500" not in k]
    rate = max(square) * 1e9
    N_big = max(sizes)
    flops = {a: 2.0 * macs[a] * M * N_big * T for a in macs}
    get = lambda impl: next((c for c in cases if c["impl"] == impl and c["N"] == N_big), None)
    ours = get("cgjax_folded")
    floor_plain, floor_folded = flops["plain"] / rate, flops["folded"] / rate
    print(f"\nFLOPs at N = {N_big}, M = {M}, T = {T} (matrix products only): plain network {flops['plain']:.3e} "
          f"({2 * macs['plain']:,} per row, model, step), folded {flops['folded']:.3e} ({2 * macs['folded']:,})")
    print(f"best measured GEMM rate {rate / 1e9:.1f} GFLOP/s -> floor (plain network) {floor_plain:.1f} s, "
          f"floor (folded network) {floor_folded:.1f} s")
    summary = {"N": N_big, "gemm_gflops": rate / 1e9, "flops_plain": flops["plain"], "flops_folded": flops["folded"],
               "floor_seconds_plain": floor_plain, "floor_seconds_folded": floor_folded,
               "gemm_rates_before": rates0, "gemm_rates_after": rates1, "load_average": [load0[0], load1[0]],
               **extra}
    result = {"cases": cases, "summary": summary}
    if ours:
        result["floor_multiple"] = ours["seconds"] / floor_plain
        summary["floor_multiple_folded_flops"] = ours["seconds"] / floor_folded
        plain = get("cgjax_plain")
        print(f"cgjax_folded: {result['floor_multiple']:.2f} x the plain-network floor, "
              f"{summary['floor_multiple_folded_flops']:.2f} x the folded-network floor"
              + (f"; cgjax_plain: {plain['seconds'] / floor_plain:.2f} x the plain-network floor" if plain else ""))
    eager = get("torch_eager")
    torch_cases = [c for c in cases if c["impl"].startswith("torch") and c["N"] == N_big]
    if ours and eager:
        best = min(torch_cases, key=lambda c: c["seconds"])
        result["speedup_vs_torch_eager"] = eager["seconds"] / ours["seconds"]
        result["speedup_vs_torch_best"] = best["seconds"] / ours["seconds"]
        summary["torch_best_impl"] = best["impl"]
        # what the FLOP floor allows: the folded network at 100 % of the best measured GEMM rate
        summary["speedup_bound_vs_torch_eager"] = eager["seconds"] / floor_folded
        summary["speedup_bound_vs_torch_best"] = best["seconds"] / floor_folded
        print(f"speed-up of cgjax_folded at N = {N_big}: {result['speedup_vs_torch_eager']:.2f} x torch_eager, "
              f"{result['speedup_vs_torch_best']:.2f} x torch_best ({best['impl']}); the folded-network floor "
              f"bounds them at {summary['speedup_bound_vs_torch_eager']:.2f} x and "
              f"{summary['speedup_bound_vs_torch_best']:.2f} x")
        for c in cases:
            if c["N"] == N_big and c["impl"].startswith("cgjax"):
                print(f"  {c['impl']:<22} {eager['seconds'] / c['seconds']:8.2f} x torch_eager   "
                      f"{best['seconds'] / c['seconds']:8.2f} x torch_best")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
