"""How the cost of Coherent Denoising sampling grows with the work and with the devices it is split over.

For each device count (``--devices``, default 1 2 4) a fresh subprocess is started (the device count
must be fixed before jax is imported): on CPU with ``XLA_FLAGS=--xla_force_host_platform_device_count``
(virtual devices: they SHARE the machine's cores, so more of them shows the overhead of sharding,
not a speedup), on an accelerator with the first n real devices. It samples ``--rows`` rows (each
count run in chunks of at most ``--max-batch``) with an ensemble of ``--models`` random norm_mlp
denoisers (BatchNorm folded, one jitted scan, no rejection retries) and reports the median wall
time of ``--repeats`` runs after a warm-up call (compilation excluded), rows per second, and the
per-row cost relative to the smallest run.

``--train`` adds data-parallel training steps of ``--models`` stacked models (batch ``--batch``).
``--memory`` adds the peak resident memory of ``pipeline.impute`` streaming to parquet for growing
cohorts (fresh process each): flat in the number of rows when chunks are streamed.

Usage:
  python experiments/bench_scaling.py                       # CPU, small sizes
  python experiments/bench_scaling.py --devices 1 --rows 13500 --timesteps 1000 --hidden 512 \\
      --layers 5 --features 32 --train --json out.json      # the paper's scale, on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(args) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from cgjax import distributed
    from cgjax.diffusion import denoiser
    from cgjax.diffusion.schedule import ScheduleConfig, make_schedule
    from cgjax.sampling.algebra import make_model
    from cgjax.sampling.coherent import RejectionConfig, make_sampler

    devices = jax.devices()[: args.n]
    assert len(devices) == args.n, f"asked for {args.n} devices, have {len(jax.devices())}"
    mesh = distributed.make_mesh(devices) if args.n > 1 else None
    F, M = args.features, args.models
    cfg = denoiser.DenoiserConfig(x_dim=F, cond_dims=(F,), hidden=args.hidden, n_layers=args.layers,
                                  time_dim=min(128, args.hidden), cond_embed_dim=32)
    init = jax.jit(denoiser.init, static_argnums=(1, 2))
    members = [init(jax.random.PRNGKey(i), cfg, (F,)) for i in range(M)]
    params = jax.tree.map(lambda *xs: jnp.stack(xs), *[m[0] for m in members])
    stats = jax.tree.map(lambda *xs: jnp.stack(xs), *[m[1] for m in members])
    schedule = make_schedule(ScheduleConfig(timesteps=args.timesteps))
    sampler = make_sampler(make_model(cfg, schedule.timesteps), schedule, rejection=RejectionConfig(enabled=False))
    key = jax.random.PRNGKey(0)
    out = {"devices": args.n, "platform": devices[0].platform, "device_kind": devices[0].device_kind,
           "sampling": [], "training": None}
    rng = np.random.default_rng(0)
    for rows in args.rows:
        size = distributed.round_up(min(rows, args.max_batch), args.n)
        conds = rng.normal(size=(size, M, 1, F)).astype(np.float32)
        masks = np.ones((size, M, 1), np.float32)
        weights = np.full((size, M), 1.0 / M, np.float32)

        def run():
            for a, b in distributed.chunk_ranges(0, rows, size):
                ids = np.arange(a, b, dtype=np.int32)
                res = distributed.sample_sharded(sampler, mesh, params, stats, key, conds[: b - a], masks[: b - a],
                                                 weights[: b - a], ids, size=size)
            return res

        t0 = time.perf_counter()
        run()
        compile_s = time.perf_counter() - t0
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        sec = statistics.median(times)
        out["sampling"].append({"rows": rows, "chunk": size, "seconds": sec, "first_call_s": compile_s,
                                "rows_per_s": rows / sec, "us_per_row_step": 1e6 * sec / rows / args.timesteps})
    if args.train:
        from cgjax.diffusion.train import GroupData, TrainConfig, TrainState, make_optimizer, make_train_fn

        tcfg = TrainConfig(batch_size=args.batch, steps_per_call=args.train_steps)
        n = args.train_rows
        data = GroupData(jnp.asarray(rng.normal(size=(M, n, F)), jnp.float32),
                         jnp.asarray(rng.normal(size=(M, n, 1, F)), jnp.float32),
                         jnp.ones((M, n, 1), bool), jnp.ones((M, n), bool))
        opt = jax.vmap(make_optimizer(tcfg).init)(params)
        fn = make_train_fn(cfg, schedule, tcfg, multi=False, mesh=mesh)
        state = TrainState(jax.tree.map(jnp.copy, params), jax.tree.map(jnp.copy, stats), opt, jnp.int32(0), None)
        t0 = time.perf_counter()
        state, loss = fn(state, data, key)
        jax.block_until_ready(loss)
        compile_s = time.perf_counter() - t0
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            state, loss = fn(state, data, key)
            jax.block_until_ready(loss)
            times.append(time.perf_counter() - t0)
        sec = statistics.median(times)
        out["training"] = {"models": M, "batch": args.batch, "steps": args.train_steps, "seconds": sec,
                           "first_call_s": compile_s, "steps_per_s": args.train_steps / sec}
    return out


def memory_worker(rows: int, max_batch: int) -> dict:
    """Peak RSS of a streamed impute of ``rows`` samples that all lack one modality (tiny models)."""
    import tempfile

    import numpy as np

    sys.path.insert(0, str(ROOT / "tests"))
    from test_distributed import tiny_model_set

    from cgjax import pipeline
    from cgjax.data import from_arrays
    from cgjax.sampling.options import SampleOptions

    ms, _, _, _ = tiny_model_set(n_samples=64, dim=8, timesteps=25)
    rng = np.random.default_rng(1)
    data = {m: rng.normal(size=(rows, 8)) for m in ("cna", "rnaseq", "rppa")}
    data["wsi"] = np.full((rows, 8), np.nan)
    data["wsi"][0] = 0.0  # one sample has it (a cohort needs one); every other sample is imputed
    cohort = from_arrays([f"s{i}" for i in range(rows)], data)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        pipeline.impute(ms, cohort, SampleOptions(replicates=2, max_batch=max_batch), targets=["wsi"], progress=False,
                        out_dir=d)
        sec = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in Path(d).iterdir())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"rows": rows, "replicates": 2, "max_batch": max_batch, "seconds": sec,
            "peak_rss_mb": peak / 1024, "rss_before_impute_mb": before / 1024, "parquet_mb": size / 2**20}


def _spawn(argv: list[str], n_cpu_devices: int | None) -> dict:
    env = dict(os.environ)
    env.pop("XLA_PYTHON_CLIENT_PREALLOCATE", None)
    if n_cpu_devices:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n_cpu_devices}").strip()
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"worker {argv} failed:\n{proc.stderr[-3000:]}")
    return json.loads([l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1][7:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--rows", type=int, nargs="+", default=[512, 2048, 8192])
    ap.add_argument("--max-batch", type=int, default=4096)
    ap.add_argument("--timesteps", type=int, default=50)
    ap.add_argument("--models", type=int, default=3)
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--train", action="store_true", help="also time data-parallel training steps")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--train-steps", type=int, default=20)
    ap.add_argument("--train-rows", type=int, default=13_500)
    ap.add_argument("--memory", type=int, nargs="*", help="also peak RSS of streamed impute for these row counts")
    ap.add_argument("--cpu", action="store_true", help="force virtual CPU devices even where a GPU is present")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--memory-worker", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        args.n = args.worker
        print("RESULT " + json.dumps(worker(args)))
        return
    if args.memory_worker:
        print("RESULT " + json.dumps(memory_worker(args.memory_worker, args.max_batch)))
        return

    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # the parent must leave the GPU to its workers
    import jax  # the parent only looks at the platform

    on_cpu = args.cpu or jax.devices()[0].platform == "cpu"
    if args.cpu:
        os.environ["JAX_PLATFORMS"] = "cpu"
    passthrough = [a for a in sys.argv[1:] if a not in ("--cpu",)]
    results = []
    for n in args.devices:
        if not on_cpu and n > len(jax.devices()):
            print(f"skipping {n} devices: only {len(jax.devices())} here")
            continue
        results.append(_spawn([*passthrough, "--worker", str(n)], n if on_cpu else None))
    print(f"\nsampling: M = {args.models}, F = {args.features}, hidden {args.hidden} x {args.layers} layers, "
          f"T = {args.timesteps}, chunks of <= {args.max_batch} rows, median of {args.repeats}")
    if on_cpu:
        print("NOTE: virtual CPU devices share this machine's cores: more devices shows the cost of sharding, "
              "not a speedup")
    print(f"{'devices':>7} {'rows':>8} {'seconds':>9} {'rows/s':>10} {'us/row/step':>12} {'1st call s':>10}")
    for r in results:
        for s in r["sampling"]:
            print(f"{r['devices']:>7} {s['rows']:>8} {s['seconds']:>9.3f} {s['rows_per_s']:>10.0f} "
                  f"{s['us_per_row_step']:>12.3f} {s['first_call_s']:>10.2f}")
    if args.train:
        print(f"\ntraining: {args.models} stacked models, batch {args.batch}, {args.train_steps} steps per call")
        print(f"{'devices':>7} {'seconds':>9} {'steps/s':>9} {'1st call s':>10}")
        for r in results:
            t = r["training"]
            print(f"{r['devices']:>7} {t['seconds']:>9.3f} {t['steps_per_s']:>9.1f} {t['first_call_s']:>10.2f}")
    memory = []
    for rows in args.memory or []:
        memory.append(_spawn(["--memory-worker", str(rows), "--max-batch", str(args.max_batch)], None))
    if memory:
        print(f"\nstreamed impute (tiny models, 2 replicates, chunks of <= {args.max_batch}): peak host memory")
        print(f"{'rows':>8} {'seconds':>8} {'peak RSS MB':>11} {'RSS before MB':>13} {'parquet MB':>10}")
        for m in memory:
            print(f"{m['rows']:>8} {m['seconds']:>8.1f} {m['peak_rss_mb']:>11.0f} {m['rss_before_impute_mb']:>13.0f} "
                  f"{m['parquet_mb']:>10.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results, "memory": memory}, indent=1))


if __name__ == "__main__":
    main()
