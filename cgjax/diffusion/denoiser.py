"""The paper's denoiser, ``norm_mlp`` (docs/reference.md 2.3-2.5), as pure functions over a pytree.

    t_emb  = ReLU(W_t sinusoid(t) + b_t)                                  # [Dt]
    e_i    = mask_i * ReLU(W_ci c_i + b_ci)          for each condition i  # [E]
    h_1    = ReLU(BN_1(W_0 [x_t, t_emb, e_1..e_K] + b_0))                  # [H]
    h_l+1  = ReLU(BN_l+1(W_l [h_l, t_emb] + b_l))     l = 1 .. n-2         # [H]
    out    = W_n-1 [h_n-1, t_emb] + b_n-1     (eps_hat, or v / x_0 hat)  # [F]

Every weight that multiplies a concatenation is stored split by input block (``w_x``, ``w_t``,
``w_c``, ``w_h``), which is the same linear map as the concatenated matrix but lets the sampler
precompute the blocks that do not change along a trajectory (see ``cgjax.sampling.algebra``).

Parameters are initialised as PyTorch's ``nn.Linear`` does, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for
weights and biases (docs/reference.md 2.5 "Init note"): this matters for the ReLU(b) embedding that a zero,
unmasked condition produces.

BatchNorm uses batch statistics in training and running statistics in inference (PyTorch defaults:
momentum 0.1, eps 1e-5, running variance updated with the unbiased batch variance). In inference the
network is row-independent.
"""

from __future__ import annotations

import dataclasses
import math

import chex
import jax
import jax.numpy as jnp

from cgjax._validate import is_int
from cgjax.diffusion import anchor as anchor_lib
from cgjax.diffusion.anchor import ANCHORS
from cgjax.diffusion.parametrisation import PARAMETRISATIONS
from cgjax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class ArchConfig:
    """The network's size, one for every model of a set (paper grid: hidden 256-1024, 4-7 layers,
    Dt 64/128).

    hidden: H. n_layers: number of Linear layers (>= 2), so n_layers - 1 BatchNorm layers.
    time_dim: Dt, the sinusoidal embedding size. cond_embed_dim: E per condition.
    parametrisation: what the output predicts, ``"eps"`` (the noise; the paper's recipe), ``"v"`` or
      ``"x0"`` (:mod:`cgjax.diffusion.parametrisation`). The training loss regresses it and the
      sampler converts it to eps; checkpoints written before the option existed are ``"eps"``.
    anchor: ``"none"`` (the paper's network) or ``"gaussian"``: add the exact denoiser of a
      linear-Gaussian conditional law fitted on the training rows to the network's output, so that the
      network learns the residual (:mod:`cgjax.diffusion.anchor`); ``"mixture"``: the same with a
      mixture of such laws whose weights depend on the conditions (subtypes); ``"auto"``: :func:`cgjax.pipeline.train`
      trains both and keeps, per model, the one with the better validation score
      (:mod:`cgjax.ensemble.choose`; a model set's own value is then ``"gaussian"``).
    """

    hidden: int = 512
    n_layers: int = 5
    time_dim: int = 128
    cond_embed_dim: int = 32
    parametrisation: str = "eps"
    anchor: str = "none"

    def __post_init__(self):
        for field, least in (("hidden", 1), ("n_layers", 2), ("time_dim", 1), ("cond_embed_dim", 1)):
            v = getattr(self, field)
            if not (is_int(v) and v >= least):
                raise ConfigError(f"ArchConfig.{field} must be an integer >= {least}, got {v!r}")
        if self.parametrisation not in PARAMETRISATIONS:
            raise ConfigError(f"--parametrisation (ArchConfig.parametrisation) must be one of "
                              f"{', '.join(PARAMETRISATIONS)}, got {self.parametrisation!r}")
        if self.anchor not in ANCHORS:
            raise ConfigError(f"ArchConfig.anchor (config key arch.anchor) must be one of {', '.join(ANCHORS)}, "
                              f"got {self.anchor!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DenoiserConfig(ArchConfig):
    """Shape of one ``norm_mlp`` denoiser: an :class:`ArchConfig` with the widths of its data.

    x_dim: F, features of the target modality.
    cond_dims: one entry per condition slot (1 for a single-condition model, K for a multi-condition
      model); inputs narrower than their slot are zero-padded, which leaves the function unchanged.
    bn_momentum, bn_eps: of the BatchNorm layers (PyTorch's defaults).
    anchor_components: the component axis of a mixture anchor's arrays (``anchor = "mixture"``): set
      from the fit, the most components any model of the group kept in any pattern
      (:func:`cgjax.diffusion.anchor.fit_group`); checkpoints written before the field hold the
      maximum, :data:`cgjax.diffusion.anchor.MAX_COMPONENTS`. Unused by the other anchors.
    """

    x_dim: int
    cond_dims: tuple[int, ...]
    bn_momentum: float = 0.1  # PyTorch convention: running = (1 - m) running + m batch
    bn_eps: float = 1e-5
    anchor_components: int = anchor_lib.MAX_COMPONENTS

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "cond_dims", tuple(int(c) for c in self.cond_dims))
        if not (is_int(self.anchor_components) and self.anchor_components >= 1):
            raise ConfigError(f"DenoiserConfig.anchor_components must be an integer >= 1, "
                              f"got {self.anchor_components!r}")
        if self.anchor == "auto":
            raise ConfigError("arch.anchor = 'auto' is resolved by cgjax.pipeline.train (two model sets); a "
                              "network has anchor 'none', 'gaussian' or 'mixture'")
        if self.anchor != "none" and self.n_conds > anchor_lib.MAX_SLOTS:
            raise ConfigError(f"arch.anchor = {self.anchor!r} supports models of at most {anchor_lib.MAX_SLOTS} "
                              f"conditions (2^K patterns per step); this model has {self.n_conds}")

    @property
    def n_conds(self) -> int:
        return len(self.cond_dims)

    @classmethod
    def from_dict(cls, d: dict) -> "DenoiserConfig":
        return cls(**{**d, "cond_dims": tuple(d["cond_dims"])})


def sinusoidal_embedding(t, dim: int):
    """docs/reference.md 2.3: t as a float (not rescaled); freq_k = exp(-k ln(1e4) / (h - 1)), k < h = dim // 2;
    [sin(t freq), cos(t freq)], zero-padded by one column if ``dim`` is odd. t: [...] -> [..., dim]."""
    half = dim // 2
    freqs = jnp.exp(-jnp.arange(half, dtype=jnp.float32) * (math.log(10000.0) / max(half - 1, 1)))
    t = jnp.asarray(t, jnp.float32)
    angles = t[..., None] * freqs.reshape((1,) * t.ndim + (half,))
    emb = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, [(0, 0)] * (emb.ndim - 1) + [(0, 1)])
    return emb


def _uniform(key, shape, fan_in):
    bound = 1.0 / math.sqrt(fan_in)
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


def init(key, cfg: DenoiserConfig, true_cond_dims: tuple[int, ...] | None = None):
    """Initialise ``(params, batch_stats)``.

    ``true_cond_dims`` (<= cfg.cond_dims slot by slot) are the real condition widths of this model
    when it is stacked with wider models: rows beyond them are zero, and the fan-in is the real
    one, so the padded model is exactly the unpadded one.
    """
    true_cond_dims = cfg.cond_dims if true_cond_dims is None else tuple(true_cond_dims)
    F, H, Dt, E, K, n = cfg.x_dim, cfg.hidden, cfg.time_dim, cfg.cond_embed_dim, cfg.n_conds, cfg.n_layers
    keys = iter(jax.random.split(key, 4 + 2 * K + 2 * n))
    params = {"time": {"w": _uniform(next(keys), (Dt, Dt), Dt), "b": _uniform(next(keys), (Dt,), Dt)}}
    conds = []
    for slot, (c_pad, c) in enumerate(zip(cfg.cond_dims, true_cond_dims)):
        if c > c_pad:
            raise ValueError(f"condition {slot}: true width {c} exceeds its slot {c_pad}")
        w = jnp.zeros((c_pad, E), jnp.float32).at[:c].set(_uniform(next(keys), (c, E), c))
        conds.append({"w": w, "b": _uniform(next(keys), (E,), c)})
    params["cond"] = conds
    out_dims = [H] * (n - 1) + [F]
    fan0 = F + Dt + E * K
    layers = [{
        "w_x": _uniform(next(keys), (F, out_dims[0]), fan0),
        "w_t": _uniform(next(keys), (Dt, out_dims[0]), fan0),
        "w_c": _uniform(next(keys), (E * K, out_dims[0]), fan0),
        "b": _uniform(next(keys), (out_dims[0],), fan0),
    }]
    for d_out in out_dims[1:]:
        k1, k2 = jax.random.split(next(keys))
        layers.append({
            "w_h": _uniform(k1, (H, d_out), H + Dt),
            "w_t": _uniform(k2, (Dt, d_out), H + Dt),
            "b": _uniform(next(keys), (d_out,), H + Dt),
        })
    params["layers"] = layers
    params["bn"] = [{"scale": jnp.ones((H,)), "bias": jnp.zeros((H,))} for _ in range(n - 1)]
    batch_stats = [{"mean": jnp.zeros((H,)), "var": jnp.ones((H,))} for _ in range(n - 1)]
    if cfg.anchor != "none":  # not trained: fitted from the data (cgjax.diffusion.anchor.fit_group)
        params["anchor"] = anchor_lib.zeros(cfg)
    return params, batch_stats


def time_embedding(params, t, time_dim: int):
    """ReLU(Linear(sinusoid(t))): t int[B] -> f32[B, Dt]."""
    return jax.nn.relu(sinusoidal_embedding(t, time_dim) @ params["time"]["w"] + params["time"]["b"][None])


def cond_embedding(params, conds, masks):
    """Concatenated, masked condition embeddings.

    conds: f32[B, K, C] with C >= every slot's width (slot i reads its first cond_dims[i] columns);
    masks: f32[B, K] in {0, 1}. Returns f32[B, K * E].
    A masked condition contributes an exactly-zero embedding (docs/reference.md 2.4).
    """
    embs = [jax.nn.relu(conds[:, i, :p["w"].shape[0]] @ p["w"] + p["b"][None]) * masks[:, i, None]
            for i, p in enumerate(params["cond"])]
    return jnp.concatenate(embs, axis=-1)


def _batch_norm(x, p, s, cfg: DenoiserConfig, train: bool):
    if train:
        mean = jnp.mean(x, axis=0)
        var = jnp.mean(jnp.square(x - mean[None]), axis=0)
        n = x.shape[0]
        unbiased = var * (n / max(n - 1, 1))
        m = cfg.bn_momentum
        new_s = {"mean": (1 - m) * s["mean"] + m * mean, "var": (1 - m) * s["var"] + m * unbiased}
    else:
        mean, var, new_s = s["mean"], s["var"], s
    y = (x - mean[None]) * jax.lax.rsqrt(var + cfg.bn_eps)[None] * p["scale"][None] + p["bias"][None]
    return y, new_s


def apply(params, batch_stats, x_t, t, conds, masks, cfg: DenoiserConfig, *, train: bool,
          return_hidden: bool = False):
    """Predict the noise (or v or x_0, as ``cfg.parametrisation`` says; the network is the same).

    x_t: f32[B, F]; t: int[B]; conds: f32[B, K, C] (C >= max(cond_dims)); masks: f32[B, K] (checked
    when traced: a wrong shape is an AssertionError naming the argument, not a broadcast).
    Returns (eps_hat f32[B, F], new batch_stats), and with ``return_hidden`` a third element: the
    n_layers - 1 hidden activations after BatchNorm and ReLU, f32[B, H] each (for diagnostics, e.g.
    which units are active). In inference (``train=False``) batch_stats are returned unchanged and
    every output row depends only on its own input row. ``params["anchor"]`` (``cfg.anchor`` =
    ``"gaussian"``) is not read here: the caller adds its output (:mod:`cgjax.diffusion.anchor`).
    """
    B, K = x_t.shape[0], cfg.n_conds
    chex.assert_shape([x_t, t, conds, masks], [(B, cfg.x_dim), (B,), (B, K, None), (B, K)])
    chex.assert_axis_dimension_gteq(conds, 2, max(cfg.cond_dims))
    t_emb = time_embedding(params, t, cfg.time_dim)
    c_emb = cond_embedding(params, conds, masks)
    l0 = params["layers"][0]
    h = x_t @ l0["w_x"] + t_emb @ l0["w_t"] + c_emb @ l0["w_c"] + l0["b"][None]
    new_stats, hidden = [], []
    for i, layer in enumerate(params["layers"][1:]):
        h, s = _batch_norm(h, params["bn"][i], batch_stats[i], cfg, train)
        new_stats.append(s)
        h = jax.nn.relu(h)
        hidden.append(h)
        h = h @ layer["w_h"] + t_emb @ layer["w_t"] + layer["b"][None]
    return (h, new_stats, hidden) if return_hidden else (h, new_stats)


def param_shapes(cfg: DenoiserConfig) -> dict:
    """The shape of every parameter, in the layout :func:`init` returns: the one definition of the
    network's size. :func:`param_count` sums it; the sampler's cost model
    (:func:`cgjax.sampling.algebra.step_macs`) sums the weight blocks a reverse step multiplies.

    time: w [Dt, Dt], b [Dt]; cond[i]: w [C_i, E], b [E]; layers[0]: w_x [F, H], w_t [Dt, H],
    w_c [K E, H], b [H]; layers[l], l = 1 .. n-1: w_h [H, d_l], w_t [Dt, d_l], b [d_l] with d_l = H but
    d_(n-1) = F; bn[l], l < n-1: scale [H], bias [H].
    """
    F, H, Dt, E, K, n = cfg.x_dim, cfg.hidden, cfg.time_dim, cfg.cond_embed_dim, cfg.n_conds, cfg.n_layers
    out_dims = [H] * (n - 1) + [F]
    return {
        "time": {"w": (Dt, Dt), "b": (Dt,)},
        "cond": [{"w": (c, E), "b": (E,)} for c in cfg.cond_dims],
        "layers": [{"w_x": (F, H), "w_t": (Dt, H), "w_c": (E * K, H), "b": (H,)}]
                  + [{"w_h": (H, d), "w_t": (Dt, d), "b": (d,)} for d in out_dims[1:]],
        "bn": [{"scale": (H,), "bias": (H,)} for _ in range(n - 1)],
    }


def param_leaves(cfg: DenoiserConfig) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every parameter of :func:`param_shapes`, in order (names repeat: ``w``, ``b``,
    ``w_x``, ``w_t``, ``w_c``, ``w_h``, ``scale``, ``bias``)."""
    def walk(node):
        if isinstance(node, dict):
            return [leaf for k, v in node.items() for leaf in ([(k, v)] if isinstance(v, tuple) else walk(v))]
        return [leaf for item in node for leaf in walk(item)]

    return walk(param_shapes(cfg))


def param_count(cfg: DenoiserConfig) -> int:
    """Trainable parameters (BN affine included, running statistics not; docs/reference.md 2.5),
    summed from :func:`param_shapes`."""
    return sum(math.prod(shape) for _, shape in param_leaves(cfg))
