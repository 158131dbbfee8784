"""Training many denoisers of the same shape as one compiled program.

The M models of a group (e.g. the 12 single-condition models of a 4-modality cohort) are stacked
along a leading axis and trained together by one jitted step, ``vmap``-ed over the models: each
model draws its own minibatch from its own rows (a per-model row mask keeps every shape fixed) and
has its own Adam state. ``steps_per_call`` optimiser steps run inside one ``lax.scan``, which is what
makes a small MLP fast: one dispatch per many steps (the "substeps" of google-research/vdm).

Arrays of a group (built by :func:`cgjax.ensemble` from a scaled train cohort):
  x0:      f32[M, N, F]     the target modality of model m on every train row (0 where absent)
  conds:   f32[M, N, K, C]  its conditions (0 where absent; slot-padded)
  present: bool[M, N, K]    which conditions the row really has
  valid:   bool[M, N]       rows model m trains on (single: target and condition present;
                            multi: target present)

Minibatches are drawn with replacement, uniformly over a model's valid rows; an "epoch" is
ceil(n_valid / batch_size) steps of the median model.

Multi-condition models (docs/reference.md 3.4) see each row with its present conditions, and with
probability ``cond_dropout`` a uniformly random subset of them (the empty one included), so that at
inference they handle any subset. Single-condition models see their condition always, unless
``single_cond_dropout`` > 0: then each row's condition is masked with that probability, which gives
the model an unconditional mode (its output with the mask at 0), needed by the product-of-experts
composition (:mod:`cgjax.sampling.composition`). Masks stay aligned with their rows: we do not reproduce the
reference's misalignment bug (docs/reference.md 6.4).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from cgjax._validate import is_int, is_real
from cgjax.diffusion import anchor, denoiser
from cgjax.diffusion.parametrisation import LOSS_WEIGHTINGS, loss_weight, regression_target
from cgjax.diffusion.schedule import Schedule, q_sample
from cgjax.errors import ConfigError
from cgjax.distributed import active_mesh, replicate, replicated_sharding


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 128
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"  # "constant" (reference) or "cosine" (decay to 5% over the run)
    epochs: int = 1000
    # > 0: a floor on the optimiser steps of every group. Epochs are raised to
    # ceil(min_steps / steps per epoch) of the group with the fewest (cgjax.ensemble.fit.planned_epochs),
    # so that a small cohort is not left with a few hundred steps; an explicit --epochs sets it to 0.
    min_steps: int = 0
    steps_per_call: int = 100  # optimiser steps per compiled call (lax.scan substeps)
    eval_every: int = 100  # epochs between validations (model selection, checkpoints)
    val_replicates: int = 5  # samples per validation row (reference: val tiled x5)
    select_by: str = "mse"  # "mse" (reference) or "energy" (energy score, a proper scoring rule)
    cond_dropout: float = 0.5  # multi models: probability of training on a random subset of conditions
    single_cond_dropout: float = 0.0  # single models: probability of masking the condition (0: never, the paper)
    ema_decay: float = 0.0  # > 0: keep an exponential moving average of the weights and select/sample with it
    # how the squared error is weighted across noise levels (cgjax.diffusion.parametrisation.loss_weight):
    # "native" (the parametrisation's own; the paper's with eps), "eps" or "min_snr" (capped at min_snr_gamma)
    loss_weighting: str = "native"
    min_snr_gamma: float = 5.0
    # > 0: decoupled weight decay (AdamW, Loshchilov & Hutter 2019) on the weight matrices only (those
    # of the embeddings included; not biases or BatchNorm's scale and shift): each step multiplies
    # them by 1 - lr_t * weight_decay
    weight_decay: float = 0.0
    # with the Gaussian anchor (ArchConfig.anchor): after training, each model keeps the network's
    # residual scaled by whichever of these gains validates best (cgjax.ensemble.choose.choose_residual_gain;
    # 0 = the anchor alone); () keeps every model as trained, as does a model set without the anchor
    residual_gains: tuple = ()
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.residual_gains, list):  # from a config file or a checkpoint's JSON
            object.__setattr__(self, "residual_gains", tuple(self.residual_gains))
        def need(ok, field, rule, flag=None):
            if not ok:
                name = f"{flag} (TrainConfig.{field})" if flag else f"TrainConfig.{field}"
                raise ConfigError(f"{name} must be {rule}, got {getattr(self, field)!r}")

        need(is_int(self.epochs) and self.epochs >= 1, "epochs", "an integer >= 1", "--epochs")
        need(is_int(self.min_steps) and self.min_steps >= 0, "min_steps", "an integer >= 0")
        need(is_int(self.seed) and 0 <= self.seed < 2 ** 32, "seed", "an integer in [0, 2^32)", "--seed")
        need(is_int(self.batch_size) and self.batch_size >= 2, "batch_size", "an integer >= 2 (BatchNorm needs a batch)")
        need(is_real(self.learning_rate) and self.learning_rate > 0, "learning_rate", "a finite number > 0")
        need(self.lr_schedule in ("constant", "cosine"), "lr_schedule", "'constant' or 'cosine'")
        need(is_int(self.steps_per_call) and self.steps_per_call >= 1, "steps_per_call", "an integer >= 1")
        need(is_int(self.eval_every) and self.eval_every >= 1, "eval_every", "an integer >= 1")
        need(is_int(self.val_replicates) and self.val_replicates >= 1, "val_replicates", "an integer >= 1")
        need(self.select_by in ("mse", "energy"), "select_by", "'mse' or 'energy'")
        need(self.select_by != "energy" or self.val_replicates >= 2, "val_replicates",
             ">= 2 with select_by='energy' (the energy score compares samples)")
        need(is_real(self.cond_dropout) and 0 <= self.cond_dropout <= 1, "cond_dropout", "in [0, 1]")
        need(is_real(self.single_cond_dropout) and 0 <= self.single_cond_dropout < 1, "single_cond_dropout",
             "in [0, 1)")
        need(is_real(self.ema_decay) and 0 <= self.ema_decay < 1, "ema_decay", "in [0, 1)")
        need(self.loss_weighting in LOSS_WEIGHTINGS, "loss_weighting", f"one of {LOSS_WEIGHTINGS}")
        need(is_real(self.min_snr_gamma) and self.min_snr_gamma > 0, "min_snr_gamma", "a finite number > 0")
        need(is_real(self.weight_decay) and self.weight_decay >= 0, "weight_decay", "a finite number >= 0")
        need(isinstance(self.residual_gains, tuple) and all(is_real(g) and g >= 0 for g in self.residual_gains),
             "residual_gains", "a list of finite numbers >= 0 (empty: keep the models as trained)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class GroupData(NamedTuple):
    x0: jnp.ndarray
    conds: jnp.ndarray
    present: jnp.ndarray
    valid: jnp.ndarray


class TrainState(NamedTuple):
    params: dict  # stacked [M, ...]
    batch_stats: list  # stacked [M, ...]
    opt_state: tuple  # stacked [M, ...]
    step: jnp.ndarray  # i32[] optimiser steps taken
    ema: dict | None  # stacked [M, ...] moving average of params; None when ema_decay = 0

    def inference_params(self):
        """The weights to validate and sample with: the moving average, or the live weights without EMA.
        With EMA their BatchNorm statistics are not ``batch_stats`` (those follow the live weights):
        use :func:`make_inference_fn`."""
        return self.params if self.ema is None else self.ema


def make_optimizer(cfg: TrainConfig, total_steps: int = 1):
    """Adam with torch's defaults (docs/reference.md 3.1), no clipping; a constant learning rate as in the
    reference, or a cosine decay to 5% of it over ``total_steps`` (converges in fewer steps, which
    is what a CPU-sized run needs). With ``weight_decay`` > 0, AdamW on the weight matrices."""
    lr = cfg.learning_rate
    if cfg.lr_schedule == "cosine":
        lr = optax.cosine_decay_schedule(cfg.learning_rate, max(total_steps, 1), alpha=0.05)
    if cfg.weight_decay > 0:
        # one model's params; a Gaussian anchor (cgjax.diffusion.anchor) is fitted, not trained: no decay
        matrices = lambda params: {k: jax.tree.map(lambda w: w.ndim >= 2 and k != "anchor", v)
                                   for k, v in params.items()}
        return optax.adamw(lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=cfg.weight_decay, mask=matrices)
    return optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8)


def init_state(key, dcfg: denoiser.DenoiserConfig, true_cond_dims, tcfg: TrainConfig,
               fitted_anchor: dict | None = None) -> TrainState:
    """Initialise M models (M = len(true_cond_dims)), each from its own key, stacked. With an anchor
    (``dcfg.anchor``), ``fitted_anchor`` is the group's fitted one (:func:`fit_anchor`); without it
    the anchor is left at zero (the shapes a checkpoint is restored into)."""
    fitted_anchor = None if dcfg.anchor == "none" else fitted_anchor
    if fitted_anchor is not None:
        want = jax.tree.map(lambda a: (len(true_cond_dims),) + a.shape, jax.eval_shape(lambda: anchor.zeros(dcfg)))
        got = jax.tree.map(jnp.shape, fitted_anchor)
        if got != want:
            raise ValueError(f"the fitted anchor's shapes {got} are not those of {dcfg} ({want}): build the "
                             f"config with fit_anchor")
    keys = jax.random.split(key, len(true_cond_dims))
    members = [denoiser.init(k, dcfg, dims) for k, dims in zip(keys, true_cond_dims)]
    params = jax.tree.map(lambda *xs: jnp.stack(xs), *[m[0] for m in members])
    if fitted_anchor is not None:
        params["anchor"] = fitted_anchor
    stats = jax.tree.map(lambda *xs: jnp.stack(xs), *[m[1] for m in members])
    opt_state = jax.vmap(make_optimizer(tcfg).init)(params)
    ema = jax.tree.map(jnp.copy, params) if tcfg.ema_decay > 0 else None
    return TrainState(params, stats, opt_state, jnp.int32(0), ema)


def fit_anchor(dcfg: denoiser.DenoiserConfig, true_cond_dims, data: GroupData):
    """Fit a group's anchors on its training ``data`` (:func:`cgjax.diffusion.anchor.fit_group`):
    (the config with a mixture anchor's component axis set to what the fit needs, the anchors; None
    without an anchor). Pass both to :func:`init_state`."""
    if dcfg.anchor == "none":
        return dcfg, None
    fitted = anchor.fit_group(data, true_cond_dims, dcfg.anchor)
    if dcfg.anchor == "mixture":
        # fit_group packs the axis as wide as the most components kept: that many, exactly
        dcfg = dataclasses.replace(dcfg, anchor_components=int(anchor.components(fitted).max()))
    return dcfg, fitted


def _split_step_key(key):
    """A training step's key -> (the three minibatch-draw keys, the loss key)."""
    k_idx, k_drop, k_sub, k_loss = jax.random.split(key, 4)
    return (k_idx, k_drop, k_sub), k_loss


def draw_minibatch(keys, x0, conds, present, valid, size: int, *, multi: bool, cond_dropout: float,
                   single_cond_dropout: float = 0.0):
    """One model's training minibatch: ``size`` rows drawn with replacement, uniformly over its
    valid rows, with condition dropout for a multi model (with prob. ``cond_dropout`` a uniformly
    random subset of the present conditions) and, for a single model, its condition masked with
    prob. ``single_cond_dropout``. Returns (x0 f32[B, F], conds f32[B, K, C], masks
    f32[B, K]); a masked condition is also zeroed (docs/reference.md 3.4)."""
    k_idx, k_drop, k_sub = keys
    p = valid.astype(jnp.float32)
    idx = jax.random.choice(k_idx, x0.shape[0], (size,), p=p / jnp.sum(p))
    keep = present[idx]
    if multi:
        drop_row = jax.random.bernoulli(k_drop, cond_dropout, (size, 1))
        subset = jax.random.bernoulli(k_sub, 0.5, keep.shape)
        keep = keep & (~drop_row | subset)
    elif single_cond_dropout > 0:  # a Python branch: no extra draw (same minibatches) at 0
        keep = keep & ~jax.random.bernoulli(k_drop, single_cond_dropout, (size, 1))
    masks = keep.astype(jnp.float32)
    return x0[idx], conds[idx] * masks[..., None], masks


def make_inference_fn(dcfg: denoiser.DenoiserConfig, schedule: Schedule, tcfg: TrainConfig, *, multi: bool,
                      rows: int | None = None):
    """Return ``inference(state, data, key) -> (params, batch_stats)``, stacked over the M models:
    the weights to validate, select and sample with, and BatchNorm statistics that belong to them.

    Without EMA these are the live weights and their running statistics. With EMA the averaged
    weights are a different network from the live one, and the running statistics (a moving average
    of the *live* network's batch statistics) do not describe its activations; sampling with them
    shifts every BatchNorm layer. So the statistics are recomputed for the averaged weights, as SWA
    does ("bn_update"): one forward pass in training mode over ``rows`` (default 10 x batch_size,
    about the span of the running average, momentum 0.1) training examples drawn exactly as in
    training (rows, condition dropout, t and noise), whose batch mean and unbiased variance per
    layer become the statistics (the network's own BatchNorm with momentum 1). A moving average of
    the live statistics would be cheaper but is not the statistics of the averaged weights.
    """
    if tcfg.ema_decay == 0:
        return lambda state, data, key: (state.params, state.batch_stats)
    rows = 10 * tcfg.batch_size if rows is None else rows
    dcfg_batch = dataclasses.replace(dcfg, bn_momentum=1.0)  # running <- this batch's statistics

    def member(params, batch_stats, x0, conds, present, valid, key):
        k_draw, k_loss = _split_step_key(key)
        x0_b, c, masks = draw_minibatch(k_draw, x0, conds, present, valid, rows, multi=multi,
                                        cond_dropout=tcfg.cond_dropout,
                                        single_cond_dropout=tcfg.single_cond_dropout)
        k_t, k_eps = jax.random.split(k_loss)
        t = jax.random.randint(k_t, (rows,), 0, schedule.timesteps)
        x_t = q_sample(schedule, x0_b, t, jax.random.normal(k_eps, x0_b.shape, jnp.float32))
        _, stats = denoiser.apply(params, batch_stats, x_t, t, c, masks, dcfg_batch, train=True)
        return stats

    @jax.jit
    def inference(state: TrainState, data: GroupData, key):
        keys = jax.random.split(key, data.x0.shape[0])
        stats = jax.vmap(member)(state.ema, state.batch_stats, data.x0, data.conds, data.present, data.valid, keys)
        return state.ema, stats

    return inference


def make_train_fn(dcfg: denoiser.DenoiserConfig, schedule: Schedule, tcfg: TrainConfig, *, multi: bool,
                  total_steps: int = 1, mesh=None):
    """Return ``train(state, data, key) -> (state, mean_loss f32[M])`` running ``steps_per_call`` steps.
    ``total_steps`` is the length of the whole run (for the learning-rate schedule). The loss is the
    mean squared error of the network's output against the target of ``dcfg.parametrisation``
    (eps, v or x_0; :func:`cgjax.diffusion.parametrisation.regression_target`), per example weighted
    as ``tcfg.loss_weighting`` says (:func:`cgjax.diffusion.parametrisation.loss_weight`).

    Data-parallel: with a ``mesh`` (a 1-D :class:`jax.sharding.Mesh` with axis ``"batch"``, e.g.
    :func:`cgjax.distributed.make_mesh`; default the one of an enclosing
    :func:`cgjax.distributed.data_parallel` context, else none) the state and the group's arrays are
    replicated on every device and each model's gathered minibatch is split along its batch axis by a
    sharding constraint inside the jitted step. XLA then partitions the forward and backward passes
    over the devices and all-reduces what crosses rows: the BatchNorm batch statistics (global-batch
    BN) and the gradients. The computation is the single-device one (same minibatches, same noise),
    up to the order of float32 sums."""
    if mesh is None:
        mesh = active_mesh()
    optimizer = make_optimizer(tcfg, total_steps)
    B, T = tcfg.batch_size, schedule.timesteps
    if mesh is None:
        split = lambda a: a
    else:
        rows = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))
        split = lambda a: jax.lax.with_sharding_constraint(a, rows)  # under vmap: [M, B/devices, ...]

    def loss_fn(params, batch_stats, x0, conds, masks, key):
        k_t, k_eps = jax.random.split(key)
        t = jax.random.randint(k_t, (x0.shape[0],), 0, T)
        eps = jax.random.normal(k_eps, x0.shape, jnp.float32)
        x_t = q_sample(schedule, x0, t, eps)
        out, new_stats = denoiser.apply(params, batch_stats, x_t, t, conds, masks, dcfg, train=True)
        abar = schedule.alpha_bars[t][:, None]
        if dcfg.anchor != "none":  # the network fits the residual of the frozen anchor
            out = out + anchor.output(jax.lax.stop_gradient(params["anchor"]), conds, masks, x_t, abar,
                                      dcfg.parametrisation)
        sq = jnp.square(out - regression_target(dcfg.parametrisation, x0, eps, abar))
        if tcfg.loss_weighting != "native":  # (the paper's program is unchanged without it)
            sq = sq * loss_weight(dcfg.parametrisation, tcfg.loss_weighting, abar, tcfg.min_snr_gamma)
        return jnp.mean(sq), new_stats

    def member_step(params, batch_stats, opt_state, x0, conds, present, valid, key):
        k_draw, k_loss = _split_step_key(key)
        x0_b, c, masks = draw_minibatch(k_draw, x0, conds, present, valid, B, multi=multi,
                                        cond_dropout=tcfg.cond_dropout,
                                        single_cond_dropout=tcfg.single_cond_dropout)
        (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, batch_stats, split(x0_b), split(c), split(masks), k_loss)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_stats, opt_state, loss

    vstep = jax.vmap(member_step, in_axes=(0, 0, 0, 0, 0, 0, 0, 0))

    def train(state: TrainState, data: GroupData, key):
        M = data.x0.shape[0]

        def body(carry, i):
            params, stats, opt_state, ema = carry
            keys = jax.random.split(jax.random.fold_in(key, state.step + i), M)
            params, stats, opt_state, loss = vstep(params, stats, opt_state, data.x0, data.conds,
                                                   data.present, data.valid, keys)
            d = tcfg.ema_decay
            if ema is not None:
                ema = jax.tree.map(lambda e, p: d * e + (1 - d) * p, ema, params)
                if "anchor" in params:  # fitted, not trained: kept exactly (d e + (1 - d) e may round)
                    ema = {**ema, "anchor": params["anchor"]}
            return (params, stats, opt_state, ema), loss

        (params, stats, opt_state, ema), losses = jax.lax.scan(
            body, (state.params, state.batch_stats, state.opt_state, state.ema), jnp.arange(tcfg.steps_per_call))
        return TrainState(params, stats, opt_state, state.step + tcfg.steps_per_call, ema), jnp.mean(losses, axis=0)

    if mesh is None:
        return jax.jit(train, donate_argnums=0)

    jitted = jax.jit(train, donate_argnums=0, out_shardings=replicated_sharding(mesh))

    placed = {}  # the group's arrays, replicated once (kept with the original so its id stays unique)

    def train_data_parallel(state: TrainState, data: GroupData, key):
        if id(data) not in placed:
            placed.clear()
            placed[id(data)] = (data, replicate(data, mesh))
        # the state is replicated at the first call; later states come out of the step replicated
        return jitted(replicate(state, mesh), placed[id(data)][1], replicate(key, mesh))

    return train_data_parallel
