"""Model-size presets (plain dicts: no import cost, so the CLI can show them in its help), used by
the CLI and :class:`cgjax.Imputer`; :func:`cgjax.diffusion.configs.build_configs` turns them into
configs."""

# The quickstart's models: small enough to train in a few minutes on 2 CPU cores.
# Measured on the synthetic cohort (see README): with fewer samples the finite-sample error of any
# learner, not the sampler, dominates; batch 512 with a cosine-decayed learning rate converges in a
# few thousand steps.
QUICK_ARCH = dict(hidden=256, n_layers=3, time_dim=32, cond_embed_dim=32)
QUICK_SCHEDULE = dict(timesteps=100)
QUICK_TRAIN = dict(epochs=120, eval_every=60, batch_size=512, steps_per_call=50, learning_rate=3e-3,
                   lr_schedule="cosine", cond_dropout=0.2, val_replicates=3)
QUICK_SAMPLES = 10000
# At T = 100 the paper's sigma_t^2 = beta_t over-disperses the samples (an exact Gaussian denoiser
# gives +3% variance at T = 100, +8% at T = 50; nothing at T = 1000). DDIM with eta = 1 over every
# timestep is the ancestral sampler with the posterior variance beta_tilde_t instead; measured on the
# quickstart models it brings the output variance to the oracle's (experiments/RESULTS.md).
QUICK_SOLVER_ARGS = ("ddim", None, 1.0)
