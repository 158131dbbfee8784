"""Training all single-condition models of a cohort as one stacked program vs one after another.

    python experiments/bench_training.py [--hidden 512 --layers 5 --time-dim 128 --batch 128]
                                         [--steps 200 --repeats 5] [--json FILE]

Same models, same data, same number of optimiser steps per model. ``stacked``: the 12 models of a
4-modality cohort in one jitted, vmapped step (``cgjax.diffusion.train``), ``steps_per_call`` steps
per compiled call. ``sequential``: the same jitted step for one model (a one-member stack), run for
each model in turn. Compile time is excluded (one warm-up call each); the table quotes medians
over ``--repeats``. The floor is the arithmetic of forward + backward (3x the forward FLOPs) at the
machine's float32 GEMM rate measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from cgjax import pipeline
from cgjax.data import split_cohort
from cgjax.datasets import synthetic_tcga
from cgjax.diffusion.denoiser import ArchConfig
from cgjax.diffusion.schedule import ScheduleConfig, make_schedule
from cgjax.diffusion.train import GroupData, TrainConfig, init_state, make_train_fn
from cgjax.ensemble import build_groups, group_arrays


def gemm_rate(n: int = 2048, repeats: int = 5) -> float:
    """Measured float32 GEMM FLOP/s of this machine through XLA."""
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a).block_until_ready()
        ts.append(time.perf_counter() - t0)
    return 2 * n ** 3 / float(np.median(ts))


def forward_flops_per_row(dcfg) -> int:
    F, H, Dt, E, n = dcfg.x_dim, dcfg.hidden, dcfg.time_dim, dcfg.cond_embed_dim, dcfg.n_layers
    K = dcfg.n_conds
    macs = Dt * Dt + sum(c * E for c in dcfg.cond_dims) + (F + Dt + E * K) * H + (n - 2) * (H + Dt) * H + (H + Dt) * F
    return 2 * macs


def time_calls(fn, state, data, key, calls: int, repeats: int):
    state, loss = fn(state, data, key)  # warm-up: compile
    loss.block_until_ready()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            state, loss = fn(state, data, key)
        loss.block_until_ready()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)), state


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--time-dim", type=int, default=128)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=100, help="optimiser steps per model per timing")
    ap.add_argument("--steps-per-call", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n-samples", type=int, default=4000)
    ap.add_argument("--json")
    args = ap.parse_args()

    cohort = split_cohort(synthetic_tcga(n_samples=args.n_samples, seed=0))
    train, _, _ = pipeline.split_and_scale(cohort)
    arch = ArchConfig(hidden=args.hidden, n_layers=args.layers, time_dim=args.time_dim, cond_embed_dim=32)
    group = build_groups(train.modalities, train.dims(), arch)["single"]
    tcfg = TrainConfig(batch_size=args.batch, steps_per_call=args.steps_per_call)
    schedule = make_schedule(ScheduleConfig(timesteps=1000))
    data = group_arrays(group, train.data, train.masks)
    M = len(group.specs)
    calls = max(1, args.steps // args.steps_per_call)
    steps = calls * args.steps_per_call
    key = jax.random.PRNGKey(0)
    fn = make_train_fn(group.dcfg, schedule, tcfg, multi=False)

    state = init_state(key, group.dcfg, group.true_cond_dims, tcfg)
    t_stacked, _ = time_calls(fn, state, data, key, calls, args.repeats)

    # sequential: one model at a time, the same compiled one-member program for each
    one = lambda a, m: a[m:m + 1]
    t_seq = 0.0
    for m in range(M):
        d_m = GroupData(*(one(a, m) for a in data))
        s_m = init_state(jax.random.fold_in(key, m), group.dcfg, group.true_cond_dims[m:m + 1], tcfg)
        t, _ = time_calls(fn, s_m, d_m, key, calls, args.repeats)
        t_seq += t

    rate = gemm_rate()
    flops = 3 * forward_flops_per_row(group.dcfg) * args.batch * M * steps
    floor = flops / rate
    rows = [("stacked (one vmapped program)", t_stacked), ("sequential (one model at a time)", t_seq)]
    print(f"{M} single-condition models, norm_mlp hidden {args.hidden} x {args.layers} layers, "
          f"time dim {args.time_dim}, batch {args.batch}, {steps} steps per model, "
          f"{jax.devices()[0].device_kind} ({jax.device_count()} device), medians of {args.repeats}")
    print(f"{'impl':36s} {'seconds':>9s} {'model-steps/s':>14s} {'x floor':>8s}")
    for name, t in rows:
        print(f"{name:36s} {t:9.2f} {M * steps / t:14.1f} {t / floor:8.2f}")
    print(f"speedup stacked vs sequential: {t_seq / t_stacked:.2f}x; arithmetic floor {floor:.2f} s "
          f"({flops / 1e9:.1f} GFLOP at a measured {rate / 1e9:.0f} GFLOP/s float32 GEMM)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"models": M, "steps": steps, "batch": args.batch, "hidden": args.hidden,
                       "layers": args.layers, "stacked_s": t_stacked, "sequential_s": t_seq,
                       "speedup": t_seq / t_stacked, "floor_s": floor, "gemm_flops": rate}, f, indent=1)


if __name__ == "__main__":
    main()
