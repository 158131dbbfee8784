"""Test-wide settings and the trained model set the test files share.

* ``jax_numpy_rank_promotion="raise"``: an operation between arrays of different ranks must say so
  (``x[:, None]``, ``jnp.broadcast_to``) instead of broadcasting silently, so a missing axis in the
  library is an error in the tests rather than a silently wrong shape.
* a compilation cache for the session (a temporary directory): the many tiny trainings and samplers
  of the same shapes compile once (XLA's compile dominates their time on CPU); results are
  unchanged, only where the compiled code comes from.
* :func:`tiny_cohort` and :func:`tiny_trained`: one tiny synthetic cohort and one model set trained
  on it (4 epochs, 30 timesteps) for the whole session; tests that only read the models use it
  instead of training their own.
"""

import jax
import pytest

from cgjax import pipeline
from cgjax.data import split_cohort
from cgjax.datasets import synthetic_tcga
from cgjax.diffusion.denoiser import ArchConfig
from cgjax.diffusion.schedule import ScheduleConfig
from cgjax.diffusion.train import TrainConfig

jax.config.update("jax_numpy_rank_promotion", "raise")

# Test files that take longest (minutes on two CPU cores: subprocesses, several trainings), run
# first. Under pytest-xdist, pyproject's ``--dist loadfile`` gives each worker whole files (so a
# file's module-scoped models are trained once, not once per worker), the next file in this order
# to whichever worker is free: longest first keeps the two workers' ends close. Only the order
# changes; a file missing here runs after these, in the usual order.
SLOW_FIRST = ("test_multiprocess.py", "test_imputer.py", "test_distributed.py", "test_calibration_check.py",
              "test_faults.py", "test_tutorial.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: in-file order kept



@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("jax_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    yield


def compilation_cache_env() -> dict:
    """Environment variables that point a subprocess's jax at this session's compilation cache, so
    that a CLI run in a subprocess reuses what the tests compiled in-process (same programs, same
    device count) instead of compiling them again."""
    return {"JAX_COMPILATION_CACHE_DIR": str(jax.config.jax_compilation_cache_dir or ""),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


TINY_ARCH = ArchConfig(hidden=16, n_layers=3, time_dim=8, cond_embed_dim=8)
TINY_SCHED = ScheduleConfig(timesteps=30)
TINY_TRAIN = TrainConfig(epochs=4, eval_every=2, batch_size=32, steps_per_call=10, val_replicates=2)


@pytest.fixture(scope="session")
def tiny_cohort():
    """600 synthetic samples, 4 modalities of width 6, split 80/5/15."""
    return split_cohort(synthetic_tcga(n_samples=600, seed=1, dim=6))


@pytest.fixture(scope="session")
def tiny_trained(tiny_cohort, tmp_path_factory):
    """(model set, its checkpoint directory), trained with TINY_ARCH / TINY_SCHED / TINY_TRAIN. Read only:
    a test that changes the models or the directory copies them first."""
    out = tmp_path_factory.mktemp("tiny_trained") / "models"
    ms = pipeline.train(tiny_cohort, out, arch=TINY_ARCH, schedule_cfg=TINY_SCHED, train_cfg=TINY_TRAIN,
                        progress=False)
    return ms, out
