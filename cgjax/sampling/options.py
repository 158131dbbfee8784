"""How to sample: one frozen, validated :class:`SampleOptions`, built once (by the CLI from its
flags, or by a library user) and passed down whole to :func:`cgjax.pipeline.impute` and
:func:`cgjax.ensemble.sample_target`.

Every field is checked at construction; an out-of-range value raises
:class:`cgjax.errors.ConfigError` with a one-line message naming the CLI flag that sets it (the
field name in brackets), e.g. ``--replicates (SampleOptions.replicates) must be an integer >= 1, got 0``.
What can only be checked against a model set (explicit weights of the right length, ``--steps`` not
above the schedule's T) is checked when sampling, with the same kind of message.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from cgjax._validate import is_int, is_real
from cgjax.errors import ConfigError
from cgjax.sampling.coherent import RejectionConfig
from cgjax.sampling.composition import validate as validate_composition
from cgjax.sampling.solvers import SolverConfig
from cgjax.sampling.weights import WEIGHTINGS

METHODS = ("coherent", "multi", "single")


@dataclasses.dataclass(frozen=True)
class SampleOptions:
    """Everything that decides the samples of a request (results depend on nothing else).

    method: ``coherent`` (the single models of the row's modalities, Coherent Denoising),
      ``multi`` (the multi-condition model) or ``single`` (the best available single model per row).
    weighting: the coherent ensemble's weights, a name of :data:`cgjax.sampling.weights.WEIGHTINGS`
      or one non-negative number per member (:func:`cgjax.sampling.weights.ensemble_weights`).
    rejection: the coherence rejection (used by ``coherent`` only).
    solver: the reverse process and its steps / eta.
    replicates: samples per row (>= 1). seed: the base random seed.
    unconditional: sample without conditions (see :func:`cgjax.ensemble.sample_target`).
    max_batch: (row, replicate) pairs per compiled call (None: from the device's memory); the
      samples do not depend on it.
    composition: how the coherent members' predictions are combined: ``auto`` (default: ``anchored``
      where every model it combines has a fitted anchor, as the quick preset's have, else
      ``average``), ``average`` (the paper's), ``product`` (product of experts; needs models trained
      with ``single_cond_dropout > 0``) or ``anchored`` (the members' residuals averaged around the
      multi model's anchor for the row's conditions; needs models with an anchor).
    corrector_steps, corrector_snr: Langevin corrector steps per visited timestep (0: none, the
      paper's) and their signal-to-noise ratio r (:mod:`cgjax.sampling.composition`).
    """

    method: str = "coherent"
    weighting: str | tuple[float, ...] = "inverse_mse"
    rejection: RejectionConfig = RejectionConfig()
    solver: SolverConfig = SolverConfig()
    replicates: int = 1
    seed: int = 0
    unconditional: bool = False
    max_batch: int | None = None
    composition: str = "auto"
    corrector_steps: int = 0
    corrector_snr: float = 0.5

    def __post_init__(self):
        if self.method not in METHODS:
            raise ConfigError(f"--method (SampleOptions.method) must be one of {METHODS}, got {self.method!r}")
        if isinstance(self.weighting, str):
            if self.weighting not in WEIGHTINGS:
                raise ConfigError(f"--weighting (SampleOptions.weighting) must be one of {WEIGHTINGS} or "
                                  f"explicit numbers, got {self.weighting!r}")
        else:
            w = tuple(self.weighting) if isinstance(self.weighting, Sequence) else None
            if not w or not all(is_real(x) and x >= 0 for x in w) or sum(w) <= 0:
                raise ConfigError("--weighting (SampleOptions.weighting) numbers must be non-negative and "
                                  f"finite with a positive sum, got {self.weighting!r}")
            object.__setattr__(self, "weighting", tuple(float(x) for x in w))  # hashable, immutable
        if not isinstance(self.rejection, RejectionConfig):
            raise ConfigError(f"SampleOptions.rejection must be a RejectionConfig, got {type(self.rejection).__name__}")
        if not isinstance(self.solver, SolverConfig):
            raise ConfigError(f"SampleOptions.solver must be a SolverConfig, got {type(self.solver).__name__}")
        if not (is_int(self.replicates) and self.replicates >= 1):
            raise ConfigError(f"--replicates (SampleOptions.replicates) must be an integer >= 1, "
                              f"got {self.replicates!r}")
        if not (is_int(self.seed) and 0 <= self.seed < 2 ** 32):
            raise ConfigError(f"--seed (SampleOptions.seed) must be an integer in [0, 2^32), got {self.seed!r}")
        if not isinstance(self.unconditional, bool):
            raise ConfigError(f"SampleOptions.unconditional must be True or False, got {self.unconditional!r}")
        if self.max_batch is not None and not (is_int(self.max_batch) and self.max_batch >= 1):
            raise ConfigError(f"--max-batch (SampleOptions.max_batch) must be an integer >= 1, got {self.max_batch!r}")
        validate_composition(self.composition, self.corrector_steps, self.corrector_snr, owner="SampleOptions")
        if self.composition in ("product", "anchored") and self.method != "coherent":
            raise ConfigError(f"--composition {self.composition} combines the single models of --method coherent, "
                              f"not --method {self.method}")
        if self.composition == "anchored" and self.unconditional:
            raise ConfigError("--composition anchored takes the anchor of the conditions each row has; "
                              "unconditional generation has none: use --composition average")


def with_method(o: SampleOptions, method: str) -> SampleOptions:
    """``o`` for another method: a composition only ``coherent`` has (``product``, ``anchored``)
    becomes ``auto`` for the others, which have nothing to compose."""
    keep = method == "coherent" or o.composition in ("auto", "average")
    return dataclasses.replace(o, method=method, composition=o.composition if keep else "auto")


def describe_solver(s: SolverConfig) -> str:
    """A short name of a solver, e.g. ``ddim (eta 0, 50 steps)``."""
    extra = [f"eta {s.eta:g}"] if s.kind == "ddim" else []
    if s.steps is not None:
        extra.append(f"{s.steps} steps")
    return s.kind + (f" ({', '.join(extra)})" if extra else "")


def describe_options(o: SampleOptions) -> str:
    """A short name of a sampler, e.g. ``coherent, ddim (eta 0, 50 steps)``."""
    return f"{o.method}, {describe_solver(o.solver)}"
