"""The calibration check on a model set trained on a law cgjax was not tuned on (zoo ``issue11``).

Trains hidden 128 x 3, T = 100, 60 epochs (cosine LR 3e-3, batch 256) on 3,000 samples, then runs
:func:`cgjax.calibration_check.check_cohort` on the validation split (128 rows, R = 20) for
``multi`` and ``coherent`` with the ancestral DDPM, against the deterministic DDIM (eta 0, 50 steps).

    PYTHONPATH=. python experiments/calibration_check_demo.py
"""
import time
from cgjax import pipeline, calibration_check as cc
from cgjax.data import split_cohort
from cgjax.datasets import zoo
from cgjax.diffusion.denoiser import ArchConfig
from cgjax.diffusion.schedule import ScheduleConfig
from cgjax.diffusion.train import TrainConfig
from cgjax.sampling.options import SampleOptions
from cgjax.sampling.solvers import SolverConfig
t=time.time()
co = split_cohort(zoo.law("issue11", n_samples=3000).cohort(0))
ms = pipeline.train(co, None, arch=ArchConfig(hidden=128, n_layers=3, time_dim=32, cond_embed_dim=32),
    schedule_cfg=ScheduleConfig(timesteps=100), train_cfg=TrainConfig(epochs=60, eval_every=30, batch_size=256,
    steps_per_call=20, learning_rate=3e-3, lr_schedule="cosine", val_replicates=2), progress=False)
print("train s", time.time()-t, flush=True)
for method in ("multi", "coherent"):
    o = SampleOptions(method=method, replicates=20)
    r = cc.check_cohort(ms, co, o, cc.default_compare(ms, o))
    print(method, r["rows"]); [print(" ", l) for l in r["lines"]]; [print(" W", w) for w in r["warnings"]]
    print(flush=True)
