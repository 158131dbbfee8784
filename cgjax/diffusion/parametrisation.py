"""What the denoiser's output means: the noise (the paper's recipe), v, or x_0.

With x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (:func:`cgjax.diffusion.schedule.q_sample`) and
a = sqrt(abar_t), s = sqrt(1 - abar_t) (a^2 + s^2 = 1), the network can be trained to regress

  * ``"eps"``: eps, the noise (Ho et al. 2020; the paper's recipe and the default);
  * ``"v"``:   v = a eps - s x_0 (Salimans & Ho 2022, "v-prediction");
  * ``"x0"``:  x_0, the clean data.

The training loss is the plain mean squared error of the network's output against its own target
(:func:`regression_target`), so the three differ in how they weigh noise levels: measured in eps,
the v loss is ||eps_hat - eps||^2 / abar_t (up-weights the noisiest steps, where eps-prediction
learns least about x_0) and the x0 loss is ||eps_hat - eps||^2 (1 - abar_t) / abar_t.

Every solver consumes eps, so the sampler converts the output once, where it is produced
(:func:`to_eps`, in :func:`cgjax.sampling.coherent.make_sampler`):

  v:   eps_hat = s x_t + a v_hat         (from x_0 = a x_t - s v and eps = s x_t + a v)
  x0:  eps_hat = (x_t - a x0_hat) / s    (divides by s, which is small at t = 0)

For ``"eps"`` the output passes through untouched (the same program as before the option existed).

Loss weighting (:func:`loss_weight`). Written in x_0 units, with snr_t = abar_t / (1 - abar_t), the
plain losses are snr ||x0_hat - x0||^2 (eps), (snr + 1) ||x0_hat - x0||^2 (v) and ||x0_hat - x0||^2
(x0). ``TrainConfig.loss_weighting`` multiplies the plain loss per example so that the weight in x_0
units becomes

  * ``"native"``:  the parametrisation's own (no multiplier; the paper's recipe with eps);
  * ``"eps"``:     snr, the eps loss's, whatever the network predicts. With v this keeps the eps
    loss's emphasis on low noise but not its failure at high noise: eps_hat = s x_t + a v_hat
    follows x_t exactly as abar -> 0, where an eps network must learn the identity map itself, and
    any error it makes there is multiplied by s / a (> 100 at the top of the default schedules) in
    the implied x_0;
  * ``"min_snr"``: min(snr, gamma) (Hang et al. 2023, "min-SNR-gamma"): the eps weighting, capped at
    low noise.
"""

from __future__ import annotations

import jax.numpy as jnp

PARAMETRISATIONS = ("eps", "v", "x0")
LOSS_WEIGHTINGS = ("native", "eps", "min_snr")


def _coefs(abar):
    return jnp.sqrt(abar), jnp.sqrt(1.0 - abar)


def regression_target(parametrisation: str, x0, eps, abar):
    """The training target of the network for (x_0, eps) at noise level ``abar`` (broadcast against
    x0 f32[..., F]; e.g. f32[B, 1]): eps, v = sqrt(abar) eps - sqrt(1 - abar) x0, or x0."""
    if parametrisation == "eps":
        return eps
    a, s = _coefs(abar)
    if parametrisation == "v":
        return a * eps - s * x0
    if parametrisation == "x0":
        return x0
    raise ValueError(f"unknown parametrisation {parametrisation!r}; choose one of {PARAMETRISATIONS}")


def to_eps(parametrisation: str, out, x_t, abar):
    """The noise prediction implied by the network's output ``out`` at x_t (f32[..., F]; ``abar``
    broadcast against them): out itself, sqrt(1 - abar) x_t + sqrt(abar) out, or
    (x_t - sqrt(abar) out) / sqrt(1 - abar)."""
    if parametrisation == "eps":
        return out
    a, s = _coefs(abar)
    if parametrisation == "v":
        return s * x_t + a * out
    if parametrisation == "x0":
        return (x_t - a * out) / s
    raise ValueError(f"unknown parametrisation {parametrisation!r}; choose one of {PARAMETRISATIONS}")



def loss_weight(parametrisation: str, weighting: str, abar, gamma: float = 5.0):
    """The multiplier of the plain squared error per example (module docstring) at noise level
    ``abar``: 1 for ``"native"``, else the wanted x_0-unit weight (snr or min(snr, gamma)) over the
    parametrisation's own (snr, snr + 1 or 1)."""
    if weighting == "native":
        return jnp.ones_like(abar)
    snr = abar / (1.0 - abar)
    if weighting == "eps":
        wanted = snr
    elif weighting == "min_snr":
        wanted = jnp.minimum(snr, gamma)
    else:
        raise ValueError(f"unknown loss weighting {weighting!r}; choose one of {LOSS_WEIGHTINGS}")
    own = {"eps": snr, "v": snr + 1.0, "x0": jnp.ones_like(abar)}
    if parametrisation not in own:
        raise ValueError(f"unknown parametrisation {parametrisation!r}; choose one of {PARAMETRISATIONS}")
    return wanted / own[parametrisation]
