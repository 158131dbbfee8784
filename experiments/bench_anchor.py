"""What an anchor costs per denoiser call, against the network it is added to.

    python experiments/bench_anchor.py [--rows 512 --conds 4 --width 49 --hidden 256 --layers 3]
                                       [--components 1 2 4 6 8] [--repeats 20] [--json FILE]

One model with ``--conds`` condition slots (2^K patterns) and a ``--width``-wide target, ``--rows``
rows of random conditions with random masks (every pattern present), random anchor arrays of the
Gaussian anchor and of the mixture anchor with a component axis of each ``--components`` (what
``DenoiserConfig.anchor_components`` is after the fit: the most components any pattern kept).
``step`` is what a sampler pays per step, :func:`cgjax.diffusion.anchor.predict` (jitted);
``prepare`` what it pays once per trajectory (:func:`cgjax.diffusion.anchor.prepare`: every
component's mean and the gate's weights from the conditions). The baseline is the network's forward
pass of the quick preset's size (``denoiser.apply``, jitted) on the same rows, once per step. The
floor of a step is the anchor's arithmetic, 2 x 2 P J F^2 multiply-adds per row (each row is
projected on every pattern's eigenbases and back, the row's own pattern selected), at the
machine's float32 GEMM rate measured in the same run. Medians over ``--repeats`` calls after one
warm-up call (compile excluded).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from cgjax.diffusion import anchor, denoiser

try:  # run as a script: the training benchmark's GEMM rate, one definition
    from bench_training import gemm_rate
except ImportError:  # pragma: no cover
    from experiments.bench_training import gemm_rate


def random_anchor(rng, P: int, J: int | None, KC: int, F: int) -> dict:
    """Anchor arrays of the shapes of :func:`cgjax.diffusion.anchor.zeros` (J None: the Gaussian
    anchor, no component axis) with random, well-conditioned values; every component used."""
    shape = (P,) if J is None else (P, J)
    q = np.linalg.qr(rng.normal(size=shape + (F, F)))[0]
    out = {"coef": rng.normal(size=shape + (KC, F)) / np.sqrt(KC), "bias": rng.normal(size=shape + (F,)),
           "basis": q, "eig": rng.uniform(0.1, 2.0, size=shape + (F,))}
    if J is not None:
        D = anchor.GATE_DIMS
        out.update(gate_shift=np.zeros((P, D)), gate_proj=rng.normal(size=(P, KC, D)) / np.sqrt(KC),
                   gate_mean=rng.normal(size=(P, J, D)), gate_prec=np.broadcast_to(np.eye(D), (P, J, D, D)),
                   gate_logw=np.zeros((P, J)))
    return {k: jnp.asarray(v, jnp.float32) for k, v in out.items()}


def median_ms(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # warm-up: compile
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(ts))


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--conds", type=int, default=4, help="condition slots K (2^K patterns)")
    ap.add_argument("--cond-width", type=int, default=40, help="columns per condition slot")
    ap.add_argument("--width", type=int, default=49, help="target features F")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--components", type=int, nargs="+", default=[1, 2, 4, 6, 8])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    rng = np.random.default_rng(0)
    B, K, C, F = args.rows, args.conds, args.cond_width, args.width
    P, KC = anchor.n_patterns(K), K * C
    conds = jnp.asarray(rng.normal(size=(B, K, C)), jnp.float32)
    masks = jnp.asarray(np.arange(B)[:, None] >> np.arange(K)[None] & 1, jnp.float32)  # every pattern
    x_t = jnp.asarray(rng.normal(size=(B, F)), jnp.float32)
    abar = jnp.float32(0.5)

    dcfg = denoiser.DenoiserConfig(hidden=args.hidden, n_layers=args.layers, time_dim=32, cond_embed_dim=32,
                                   parametrisation="v", x_dim=F, cond_dims=(C,) * K)
    params, stats = denoiser.init(jax.random.PRNGKey(0), dcfg)
    t = jnp.full((B,), 50, jnp.int32)
    net = jax.jit(lambda p, s, x, c, m: denoiser.apply(p, s, x, t, c, m, dcfg, train=False)[0])
    net_ms = median_ms(net, params, stats, x_t, conds, masks, repeats=args.repeats)
    prepare, predict = jax.jit(anchor.prepare), jax.jit(anchor.predict, static_argnums=3)
    rate = gemm_rate()

    rows = []
    for name, J in [("gaussian", None)] + [(f"mixture J={j}", j) for j in args.components]:
        arrays = random_anchor(rng, P, J, KC, F)
        prep_ms = median_ms(prepare, arrays, conds, masks, repeats=args.repeats)
        prepared = prepare(arrays, conds, masks)
        ms = median_ms(predict, prepared, x_t, abar, "v", repeats=args.repeats)
        floor_ms = 1e3 * 2 * 2 * P * (J or 1) * F * F * B / rate
        rows.append({"anchor": name, "components": J or 1, "prepare_ms": prep_ms, "step_ms": ms,
                     "network_ms": net_ms, "step_over_network": ms / net_ms, "floor_ms": floor_ms,
                     "over_floor": ms / floor_ms})

    print(f"rows {B}, {K} conditions ({P} patterns), target width {F}; network {args.hidden} x {args.layers}; "
          f"GEMM rate {rate / 1e9:.1f} GFLOP/s; devices {jax.devices()[0].device_kind}")
    print("| anchor | prepare ms (once) | step ms | network ms | step / network | step floor ms | step / floor |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['anchor']} | {r['prepare_ms']:.2f} | {r['step_ms']:.2f} | {r['network_ms']:.2f} | "
              f"{r['step_over_network']:.2f} | {r['floor_ms']:.2f} | {r['over_floor']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
