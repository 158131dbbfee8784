"""Model-size presets (plain dicts: no import cost, so the CLI can show them in its help), the one
source of the sizes ``cgjax train --preset``, ``cgjax quickstart`` and :class:`cgjax.Imputer` use;
:func:`cgjax.diffusion.configs.build_configs` turns them into configs."""

# The paper's norm_mlp and training (hidden 512, 5 layers, T = 1000, 1000 epochs of batch 128 at a
# constant 1e-3): the defaults of ArchConfig / ScheduleConfig / TrainConfig, spelled out so that the
# CLI can show them without importing JAX (tests/test_presets.py checks that they are the defaults).
PAPER_ARCH = dict(hidden=512, n_layers=5, time_dim=128, cond_embed_dim=32)
PAPER_SCHEDULE = dict(timesteps=1000)
PAPER_TRAIN = dict(epochs=1000, eval_every=100, batch_size=128, learning_rate=1e-3, lr_schedule="constant")

# The quickstart's models: small enough to train in a few minutes on 2 CPU cores.
# Measured on the synthetic cohort (see README): with fewer samples the finite-sample error of any
# learner, not the sampler, dominates; batch 512 with a cosine-decayed learning rate converges in a
# few thousand steps.
# v-prediction trained with the eps loss's weighting, at least 2,000 optimiser steps, each model kept
# at its best validation energy score: measured on 7 laws of the zoo at 3,000 samples against the
# paper's eps recipe at this size (experiments/RESULTS.md, "The quick preset's training recipe"). With
# eps the samples exploded on a 128-wide target (variance 136-233x the posterior's): an eps network's
# error at the top of the schedule is multiplied by sqrt((1 - abar) / abar) (> 100) in the x_0 it
# implies; v follows x_t there by construction. The step floor gives small cohorts a usable budget
# (120 epochs of a 3,000-sample cohort are ~500 steps), and selection by the energy score keeps the
# longer run from collapsing the spread on low-signal laws, which selection by the MSE of the samples
# rewards. An exponential moving average of the weights (decay 0.99, about the last 100 steps; BatchNorm
# statistics recomputed for it) removed most of what v cost `multi` on low-signal laws.
# The Gaussian anchor (cgjax.diffusion.anchor): each network learns the residual of a ridge-fitted
# linear-Gaussian denoiser. On 7 zoo laws at 3,000 samples it lowered the energy score on 13 of 14
# method x law rows (two_wide +6-8% -> +2.3%, every issue-11 target met there); it over-disperses
# issue11 (variance ratio 1.13-1.20 -> 1.42-1.53) and was +2.8 points on five_narrow multi (ahead on a
# second cohort of that law; experiments/RESULTS.md, "The Gaussian anchor"). arch.anchor = "auto"
# picks per model. After training each model keeps 0, 0.5 or all of its network's residual over the
# anchor, whichever validates best (train.residual_gains): on 9 zoo laws at 3,000 samples (2 of them
# never used for any choice before) it lowered multi's energy excess by 3.3-3.4 points where the
# learned residual was mostly estimation error (five_narrow, random4) and moved no other row by more
# than 0.8 points (experiments/RESULTS.md, "How much of the residual to keep").
# The mixture anchor (session 13): the Gaussian anchor's laws, except on patterns where a mixture of
# regressions gated by the conditions (subtypes with their own loadings) lowers the cross-validated
# energy score by 5% or more; only there does a pattern pay for its components. On 10 zoo laws at
# 3,000 samples and the quickstart's cohort, only issue11 (every pattern, gains 8-29%) and random7
# (one of two, 17%) passed; every other pattern of every law stayed Gaussian (gains < 4.6%), so those
# laws train and sample as with the Gaussian anchor (the quickstart: one component everywhere, the
# same energy scores to within 0.002). Where it passes, energy excess over exact draws at 3,000
# samples: issue11 multi +18.9% -> +9.4%, coherent +17.5% -> +8.0%; random7 +13.5% -> +9.8%, +16.0%
# -> +11.3% (experiments/RESULTS.md, "The mixture anchor where subtypes pay").
QUICK_ARCH = dict(hidden=256, n_layers=3, time_dim=32, cond_embed_dim=32, parametrisation="v", anchor="mixture")
QUICK_SCHEDULE = dict(timesteps=100)
QUICK_TRAIN = dict(epochs=120, eval_every=60, batch_size=512, steps_per_call=50, learning_rate=3e-3,
                   lr_schedule="cosine", cond_dropout=0.2, val_replicates=3, loss_weighting="eps",
                   select_by="energy", min_steps=2000, ema_decay=0.99, residual_gains=(0.0, 0.5, 1.0))
QUICK_SAMPLES = 10000
# The quickstart's sampler: the ancestral sampler on every timestep (the paper's, sigma_t^2 = beta_t,
# the library's default). With the law's exact noise prediction at T = 100 it keeps the posterior
# variance on 7 zoo laws (ratio 0.99-1.06), while the posterior variance beta_tilde (DDIM eta = 1 on
# every step, this preset's sampler until 2026-11-30) loses 6-17% of it; with the quick preset's
# trained models its energy score is as good or better on every law measured
# (experiments/exact_denoiser_samplers.py, experiments/calibration.py; experiments/RESULTS.md).
QUICK_SOLVER_ARGS = ("ddpm", None, 0.0)

TINY_ARCH = dict(hidden=16, n_layers=2, time_dim=8, cond_embed_dim=8)
TINY_SCHEDULE = dict(timesteps=25)
TINY_TRAIN = dict(epochs=40, eval_every=40, batch_size=16, steps_per_call=50, learning_rate=3e-3, val_replicates=1)

# Model sizes by name (sections arch / schedule / train over the config classes' defaults).
# "paper": the paper's; "quick": the quickstart's (minutes on 2 CPU cores for 10,000 samples);
# "tiny": seconds, for tests and trying the API (not for real use).
PRESETS = {
    "paper": {"arch": PAPER_ARCH, "schedule": PAPER_SCHEDULE, "train": PAPER_TRAIN},
    "quick": {"arch": QUICK_ARCH, "schedule": QUICK_SCHEDULE, "train": QUICK_TRAIN},
    "tiny": {"arch": TINY_ARCH, "schedule": TINY_SCHEDULE, "train": TINY_TRAIN},
}


def describe(name: str) -> str:
    """One line of a preset's values, e.g. for ``--help``: ``hidden=256, n_layers=3, ...``."""
    return ", ".join(f"{k}={v}" for section in ("arch", "schedule", "train")
                     for k, v in PRESETS[name].get(section, {}).items())
