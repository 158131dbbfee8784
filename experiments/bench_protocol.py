"""Time the paper's whole sampling protocol through the library (issue 4's GPU target).

Every target (4) x every non-empty subset of the other three modalities (7) x three methods
(single: each row's best model of the subset; coherent: the weighted consensus; multi: the masked
multi-condition model) = 84 sampling runs of R x N rows (paper: 10 x 1,350 = 13,500) at T = 1000,
each one call of :func:`cgjax.ensemble.sample_target`, as an experiment script would make them.

The models have the paper's ``norm_mlp`` size (hidden 512, 5 layers, time embedding 128, condition
embedding 32, 32 features per modality) with random weights: the timing does not depend on the
values, except through rejection, so rejection is off by default (a trained ensemble passes nearly
every row at the first attempt; ``--rejection`` turns it on, which with random weights redraws most
rows up to 10 times). Compilation (one program per distinct (group, member count)) is timed
separately: a warm-up pass runs first, then ``--repeats`` timed passes (median reported).

    python experiments/bench_protocol.py                                 # the paper's protocol
    python experiments/bench_protocol.py --rows 64 --replicates 2 --timesteps 50 --repeats 1   # CPU smoke
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time

import numpy as np

import jax

from cgjax.diffusion.denoiser import ArchConfig
from cgjax.diffusion.schedule import ScheduleConfig
from cgjax.diffusion.train import TrainConfig
from cgjax.ensemble import new_training_run, sample_target
from cgjax.sampling.coherent import RejectionConfig
from cgjax.sampling.options import SampleOptions

MODALITIES = ("cna", "rnaseq", "rppa", "wsi")
METHODS = ("single", "coherent", "multi")


def paper_size_model_set(dim: int, arch: ArchConfig, timesteps: int, seed: int = 0):
    """Every single- and multi-condition model of 4 modalities, untrained, with distinct validation
    scores (so the ensemble weights are not uniform)."""
    rng = np.random.default_rng(seed)
    n = 256
    data = {m: rng.normal(size=(n, dim)).astype(np.float32) for m in MODALITIES}
    masks = {m: np.ones(n, bool) for m in MODALITIES}
    run = new_training_run(data, masks, modalities=MODALITIES, dims={m: dim for m in MODALITIES}, arch=arch,
                           schedule_cfg=ScheduleConfig(timesteps=timesteps), train_cfg=TrainConfig(seed=seed),
                           scalers={}, feature_names={m: [f"{m}_{i}" for i in range(dim)] for m in MODALITIES})
    ms = run.model_set
    for name, g in ms.groups.items():
        g.params, g.batch_stats = run.states[name].params, run.states[name].batch_stats
        for j, spec in enumerate(g.specs):
            ms.val_metrics[spec.name] = {"mse": 0.5 + 0.1 * (j % 5)}
    return ms


def protocol(ms, given_all: dict, replicates: int, rejection: RejectionConfig):
    """The 84 runs: yields ((target, subset, method), seconds)."""
    for t in MODALITIES:
        others = [m for m in MODALITIES if m != t]
        for k in (1, 2, 3):
            for subset in itertools.combinations(others, k):
                given = {m: given_all[m] for m in subset}
                for method in METHODS:
                    t0 = time.perf_counter()
                    res = sample_target(ms, t, given, SampleOptions(method=method, replicates=replicates, seed=1,
                                                                          rejection=rejection))
                    assert np.isfinite(res.x).all(), (t, subset, method)
                    yield (t, subset, method), time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1350, help="N test rows (paper 1,350)")
    ap.add_argument("--replicates", type=int, default=10, help="R (paper 10)")
    ap.add_argument("--timesteps", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=32, help="features per modality (paper 32)")
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--rejection", action="store_true", help="coherent runs with rejection (random weights: slow)")
    ap.add_argument("--repeats", type=int, default=2, help="timed passes after the warm-up pass")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)

    dev = jax.devices()[0]
    print(f"device: {dev.device_kind} ({dev.platform}), jax {jax.__version__}, {os.cpu_count()} CPUs", flush=True)
    arch = ArchConfig(hidden=args.hidden, n_layers=args.layers, time_dim=128, cond_embed_dim=32)
    ms = paper_size_model_set(args.dim, arch, args.timesteps)
    rng = np.random.default_rng(2)
    given_all = {m: rng.normal(size=(args.rows, args.dim)).astype(np.float32) for m in MODALITIES}
    rejection = RejectionConfig(enabled=args.rejection)

    t0 = time.perf_counter()
    warm = dict(protocol(ms, given_all, args.replicates, rejection))
    warm_total = time.perf_counter() - t0
    passes = []
    for _ in range(args.repeats):
        passes.append(dict(protocol(ms, given_all, args.replicates, rejection)))
    totals = [sum(p.values()) for p in passes]
    total = statistics.median(totals) if totals else float("nan")
    by_method = {m: statistics.median([sum(s for (_, _, mm), s in p.items() if mm == m) for p in passes])
                 for m in METHODS} if passes else {}
    rows = args.rows * args.replicates
    print(f"\nprotocol: 4 targets x 7 subsets x 3 methods = {len(warm)} runs of {rows:,} rows, T = {args.timesteps}, "
          f"rejection {'on' if args.rejection else 'off'}")
    print(f"first pass (compiles included): {warm_total:8.1f} s")
    for m, s in by_method.items():
        print(f"  {m:<9} {s:8.2f} s")
    print(f"timed passes (median of {len(totals)}): {total:8.2f} s  "
          f"({len(warm) * rows / total:,.0f} rows/s; target on one H100 at the paper's size: < 60 s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": dev.device_kind, "platform": dev.platform, "runs": len(warm), "rows_per_run": rows,
                       "timesteps": args.timesteps, "hidden": args.hidden, "layers": args.layers,
                       "rejection": args.rejection, "first_pass_seconds": warm_total, "pass_seconds": totals,
                       "median_seconds": total, "median_seconds_by_method": by_method}, f, indent=2)
        print(f"wrote {args.json}")
    return total


if __name__ == "__main__":
    sys.exit(0 if np.isfinite(main()) else 1)
