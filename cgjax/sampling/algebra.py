"""Inference algebra for ``norm_mlp``: the same function, fewer FLOPs per reverse step.

In inference the denoiser (docs/reference.md 2.5a) is affine between its ReLUs, and along a reverse
trajectory two of its inputs never change for a row (its conditions) and one is the same for every
row (the timestep). Three exact rewrites follow:

1. **BatchNorm folding.** With running statistics, BN is the affine map
   ``BN(z) = (z - mu) * s + beta``, ``s = gamma / sqrt(var + eps)``. It follows a linear layer
   ``z = u @ W + b``, so ``BN(z) = u @ (W * s) + ((b - mu) * s + beta)``: scale W's columns by s and
   replace the bias. Every block of a split weight (``w_x``, ``w_t``, ``w_c``, ``w_h``) is scaled
   the same way.

2. **Time table.** Layer l reads ``[h, t_emb]``, so its pre-activation is ``h @ w_h + (t_emb @ w_t + b)``.
   The bracket depends on t only, not on the row: for T timesteps it is a table f32[T, d_out]
   computed once (T * (Dt^2 + Dt * sum d_out) FLOPs for the whole run, instead of that much per row
   and step), then read by index inside the scan. The time MLP itself disappears from the step.

3. **Condition projection.** Layer 0 reads ``[x_t, t_emb, c_emb]``; ``c_emb @ w_c`` depends on the
   row's conditions only, so it is computed once per row before the scan (f32[N, H]). The
   condition embedding MLPs disappear from the step.

What is left per row and step is ``x_t @ w_x (F x H)``, the hidden ``w_h`` (H x H) blocks and the
output ``w_h`` (H x F): for the paper's size (F 32, H 512, Dt 128, E 32, 5 layers) 0.82 M MACs
instead of 1.12 M (-27 %), with no BatchNorm or concatenation.

The ensemble samplers take a model as a pair (:class:`Model`): ``prepare`` runs once, outside the
reverse loop (folding, tables, projections); ``eps`` runs at every step. ``plain_model`` is the
network as trained (for tests and benchmarks); ``folded_model`` the rewritten one.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from cgjax.diffusion import anchor as anchor_lib
from cgjax.diffusion import denoiser


class Model(NamedTuple):
    """An ensemble denoiser split into the part run once and the part run at every step.

    prepare(params, batch_stats, conds f32[N, M, K, C], masks f32[N, M, K]) -> prepared (a pytree),
      for params and batch_stats stacked along M;
    eps(prepared, x_t f32[N, F], t i32[]) -> f32[M, N, F], the members' noise predictions;
    x_dim: F, the width of the target it denoises.
    parametrisation: what ``eps`` actually predicts, eps, v or x_0
      (:mod:`cgjax.diffusion.parametrisation`); the sampler converts it to eps.
    offset: None, or offset(prepared, x_t f32[N, F], abar f32[]) -> f32[M, N, F], an analytic term the
      sampler adds to ``eps``'s output (in the parametrisation's units) before converting it: the
      Gaussian anchor (:func:`anchored`).
    """

    prepare: Callable
    eps: Callable
    x_dim: int
    parametrisation: str = "eps"
    offset: Callable | None = None


# ---- one model ----------------------------------------------------------------------------------

def fold_batch_norm(params, batch_stats, cfg: denoiser.DenoiserConfig):
    """Fold each inference-mode BatchNorm into the linear layer before it (rewrite 1).

    Returns ``folded``: params of the same layout without ``"bn"``; layer l < n-1 has its weight
    blocks' columns scaled by s_l and bias (b_l - mu_l) s_l + beta_l. One model (not stacked).
    """
    layers = []
    for i, layer in enumerate(params["layers"]):
        if i < len(params["bn"]):
            bn, st = params["bn"][i], batch_stats[i]
            s = bn["scale"] * jax.lax.rsqrt(st["var"] + cfg.bn_eps)  # [H]
            layer = {k: (v * s[None] if k.startswith("w_") else v) for k, v in layer.items()}
            layer["b"] = (params["layers"][i]["b"] - st["mean"]) * s + bn["bias"]
        layers.append(layer)
    return {"time": params["time"], "cond": params["cond"], "layers": layers}


def apply_folded(folded, x_t, t, conds, masks, cfg: denoiser.DenoiserConfig):
    """The folded network: ``denoiser.apply(..., train=False)`` without BatchNorm.

    x_t: f32[B, F]; t: int[B]; conds: f32[B, K, C]; masks: f32[B, K]. Returns f32[B, F].
    """
    t_emb = denoiser.time_embedding(folded, t, cfg.time_dim)
    c_emb = denoiser.cond_embedding(folded, conds, masks)
    l0 = folded["layers"][0]
    h = x_t @ l0["w_x"] + t_emb @ l0["w_t"] + c_emb @ l0["w_c"] + l0["b"][None]
    for layer in folded["layers"][1:]:
        h = jax.nn.relu(h) @ layer["w_h"] + t_emb @ layer["w_t"] + layer["b"][None]
    return h


def time_table(folded, timesteps, cfg: denoiser.DenoiserConfig):
    """Rewrite 2: per layer, ``t_emb(t) @ w_t + b`` for every t in ``timesteps`` int[S].

    Returns a list over layers of f32[S, d_out_l] (d_out = H, ..., H, F), biases included.
    """
    t_emb = denoiser.time_embedding(folded, timesteps, cfg.time_dim)  # [S, Dt]
    return [t_emb @ layer["w_t"] + layer["b"][None] for layer in folded["layers"]]


def cond_projection(folded, conds, masks):
    """Rewrite 3: ``c_emb @ w_c`` of layer 0 for every row. conds f32[B, K, C], masks f32[B, K] -> f32[B, H]."""
    return denoiser.cond_embedding(folded, conds, masks) @ folded["layers"][0]["w_c"]


def apply_precomputed(weights, time_row, cond_proj, x_t):
    """The per-step remainder of the folded network.

    weights: ``{"w_x": f32[F, H], "w_h": [f32[H, H], ..., f32[H, F]]}``; time_row: list over layers of
    f32[d_out_l] (one row of :func:`time_table`); cond_proj: f32[B, H]; x_t: f32[B, F]. Returns f32[B, F].
    """
    h = x_t @ weights["w_x"] + cond_proj + time_row[0][None]
    for w_h, tb in zip(weights["w_h"], time_row[1:]):
        h = jax.nn.relu(h) @ w_h + tb[None]
    return h


# ---- ensembles (params stacked along M) -----------------------------------------------------------

def plain_model(cfg: denoiser.DenoiserConfig) -> Model:
    """The network as trained, evaluated in full at every step (no algebra)."""

    def prepare(params, batch_stats, conds, masks):
        return {"params": params, "batch_stats": batch_stats, "conds": conds, "masks": masks}

    def one(params, batch_stats, x_t, t, conds, masks):
        t_vec = jnp.full((x_t.shape[0],), t, jnp.int32)
        eps_hat, _ = denoiser.apply(params, batch_stats, x_t, t_vec, conds, masks, cfg, train=False)
        return eps_hat

    def eps(prepared, x_t, t):
        p = prepared
        return jax.vmap(one, in_axes=(0, 0, None, None, 1, 1))(p["params"], p["batch_stats"], x_t, t,
                                                               p["conds"], p["masks"])

    return Model(prepare, eps, cfg.x_dim, cfg.parametrisation)


def folded_model(cfg: denoiser.DenoiserConfig, timesteps: int) -> Model:
    """Rewrites 1-3 for a schedule of ``timesteps`` steps (t in 0..timesteps-1).

    ``prepare`` costs M * (T * (Dt^2 + Dt * sum d_out) + N * (sum_k C_k E + K E H)) MACs, once; the
    prepared pytree holds f32[M, T, d_out] time tables and an f32[M, N, H] condition projection.
    """
    all_t = jnp.arange(timesteps, dtype=jnp.int32)

    def prepare_one(params, batch_stats, conds, masks):
        folded = fold_batch_norm(params, batch_stats, cfg)
        weights = {"w_x": folded["layers"][0]["w_x"], "w_h": [layer["w_h"] for layer in folded["layers"][1:]]}
        return {"weights": weights, "time": time_table(folded, all_t, cfg),
                "cond": cond_projection(folded, conds, masks)}

    def prepare(params, batch_stats, conds, masks):
        return jax.vmap(prepare_one, in_axes=(0, 0, 1, 1))(params, batch_stats, conds, masks)

    def eps(prepared, x_t, t):
        time_row = [table[:, t] for table in prepared["time"]]  # [M, d_out] each
        return jax.vmap(apply_precomputed, in_axes=(0, 0, 0, None))(prepared["weights"], time_row,
                                                                    prepared["cond"], x_t)

    return Model(prepare, eps, cfg.x_dim, cfg.parametrisation)


ALGEBRAS = ("folded", "plain")


def anchored(model: Model, parametrisation: str) -> Model:
    """``model`` with its members' Gaussian anchors (``params["anchor"]``, :mod:`cgjax.diffusion.anchor`)
    as the :class:`Model`'s ``offset``: each row's pattern mean is computed once in ``prepare``."""

    def prepare(params, batch_stats, conds, masks):
        return {"net": model.prepare(params, batch_stats, conds, masks),
                "anchor": jax.vmap(anchor_lib.prepare, in_axes=(0, 1, 1))(params["anchor"], conds, masks)}

    def eps(prepared, x_t, t):
        return model.eps(prepared["net"], x_t, t)

    def offset(prepared, x_t, abar):
        return jax.vmap(anchor_lib.predict, in_axes=(0, None, None, None))(prepared["anchor"], x_t, abar,
                                                                            parametrisation)

    return Model(prepare, eps, model.x_dim, model.parametrisation, offset)


def make_model(cfg: denoiser.DenoiserConfig, timesteps: int, algebra: str = "folded") -> Model:
    """The ensemble model by name: ``folded`` (default; rewrites 1-3) or ``plain``; with its Gaussian
    anchor when ``cfg.anchor`` asks for one."""
    if algebra == "folded":
        model = folded_model(cfg, timesteps)
    elif algebra == "plain":
        model = plain_model(cfg)
    else:
        raise ValueError(f"unknown algebra '{algebra}'; choose one of {ALGEBRAS}")
    return anchored(model, cfg.parametrisation) if cfg.anchor != "none" else model


STEP_BLOCKS = {"plain": ("w", "w_x", "w_t", "w_c", "w_h"), "folded": ("w_x", "w_h")}


def step_macs(cfg: denoiser.DenoiserConfig, algebra: str) -> int:
    """Multiply-accumulates per row, model and reverse step of the network's matrix products: the
    sizes of the weight blocks (:func:`cgjax.diffusion.denoiser.param_shapes`) a step multiplies.

    plain: every block, i.e. time MLP (Dt^2), condition embeddings (sum C_k E), layer 0
    ((F + Dt + K E) H), hidden layers ((H + Dt) H each), output ((H + Dt) F). folded: only
    x_t @ w_x and the w_h blocks (F H + (n - 2) H^2 + H F); the rest is in the prepared tables.
    """
    if algebra not in STEP_BLOCKS:
        raise ValueError(f"unknown algebra '{algebra}'; choose one of {ALGEBRAS}")
    return sum(math.prod(shape) for name, shape in denoiser.param_leaves(cfg) if name in STEP_BLOCKS[algebra])
