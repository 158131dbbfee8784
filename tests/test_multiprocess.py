"""Real multi-process runs: ``cgjax train --distributed`` and ``cgjax impute`` as two local processes
of two virtual CPU devices each, joined by ``jax.distributed`` (gloo collectives on CPU), against
one process over four devices and one process over one device.

What it proves: the data-parallel step spans both processes and gives the one-process, four-device
weights; checkpoints are written once (by process 0, repeatedly, without the processes colliding)
and restore on a single device; every process imputes only its rows and process 0's merged tables
are complete, in order, and equal the single-process ones.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cgjax import checkpoint
from cgjax.cli import main as cli
from cgjax.data import write_cohort
from cgjax.datasets import synthetic_tcga

TINY = {"arch": {"hidden": 16, "n_layers": 3, "time_dim": 8, "cond_embed_dim": 8},
        "schedule": {"timesteps": 25},
        "train": {"epochs": 2, "eval_every": 1, "batch_size": 32, "steps_per_call": 4, "val_replicates": 2}}
ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_processes(args: list[str], n_proc: int, devices_per_proc: int, cwd: Path, timeout: int = 400,
                  python_args: list[str] = ("-m", "cgjax")) -> list[str]:
    """Run ``python -m cgjax ARGS`` as ``n_proc`` processes of one jax.distributed job; return their outputs."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", CGJAX_COORDINATOR_ADDRESS=f"localhost:{_free_port()}",
               CGJAX_NUM_PROCESSES=str(n_proc), PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices_per_proc}"
    procs = [subprocess.Popen([sys.executable, *python_args, *args], cwd=cwd, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=dict(env, CGJAX_PROCESS_ID=str(i)))
             for i in range(n_proc)]
    try:
        outs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:  # one failed process leaves the others waiting at a barrier
            p.kill()
    for i, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"process {i} of {n_proc}: exit {p.returncode}\n{out[-3000:]}"
    return outs


PREFLIGHT = """
import os, jax, numpy as np
jax.distributed.initialize(os.environ["CGJAX_COORDINATOR_ADDRESS"], int(os.environ["CGJAX_NUM_PROCESSES"]),
                           int(os.environ["CGJAX_PROCESS_ID"]))
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
mesh = Mesh(np.array(jax.devices()), ("b",))
x = jax.device_put(np.arange(4.0), NamedSharding(mesh, P("b")))
print("SUM", float(jax.jit(lambda a: a.sum(), out_shardings=NamedSharding(mesh, P()))(x)))
"""


def _multiprocess_jax_works(tmp) -> str | None:
    """Whether this machine can run a two-process jax.distributed job at all (loopback TCP, gloo):
    None if so, else why not. Independent of cgjax: a failure here is the environment's, and skips."""
    script = tmp / "preflight.py"
    script.write_text(PREFLIGHT)
    try:
        outs = run_processes([], n_proc=2, devices_per_proc=2, cwd=tmp, timeout=120, python_args=[str(script)])
    except (AssertionError, subprocess.TimeoutExpired) as e:
        return f"two jax.distributed processes cannot run here: {str(e).strip().splitlines()[-1][:200]}"
    return None if all("SUM 6.0" in o for o in outs) else "two jax.distributed processes gave a wrong sum"


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("multiprocess")
    write_cohort(synthetic_tcga(n_samples=400, seed=3, dim=4), d / "cohort")
    (d / "tiny.json").write_text(json.dumps(TINY))
    train = ["train", "cohort", "--config", "tiny.json", "--distributed", "--quiet"]
    try:
        outs = run_processes(train + ["--out", "two_procs"], n_proc=2, devices_per_proc=2, cwd=d)
    except (AssertionError, subprocess.TimeoutExpired):
        # skip if the machine cannot run two jax.distributed processes at all (checked only on a
        # failure: it costs two more jax start-ups); else the failure is cgjax's
        why = _multiprocess_jax_works(tmp_path_factory.mktemp("preflight"))
        if why:
            pytest.skip(why)
        raise
    # the reference run skips the post-training calibration check (the two-process run keeps it)
    run_processes(train + ["--out", "one_proc", "--no-calibration-check"], n_proc=1, devices_per_proc=4, cwd=d)
    return d, outs


def _leaves(tree) -> dict:
    import jax

    return {jax.tree_util.keystr(p): np.asarray(a) for p, a in jax.tree_util.tree_leaves_with_path(tree)}


def test_two_processes_train_the_weights_of_one_process_on_four_devices(work):
    from test_distributed import _cancelled_by_batchnorm

    d, outs = work
    assert "trained 16 models" in outs[0]
    two, one = checkpoint.load(d / "two_procs"), checkpoint.load(d / "one_proc")  # restored on one device
    assert sorted(p.name for p in d.iterdir()) == ["cohort", "one_proc", "tiny.json", "two_procs"]  # no leftovers
    assert checkpoint.read_meta(d / "two_procs")["training"]["epoch"] == 2
    for name, g in two.groups.items():
        a, b = _leaves(g.params), _leaves(one.groups[name].params)
        compared = [k for k in a if not _cancelled_by_batchnorm(k, g.dcfg.n_layers)]
        assert len(compared) >= 10
        for k in compared:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=f"{name} {k}")
        for k, v in _leaves(g.batch_stats).items():
            if k.endswith("['var']"):
                np.testing.assert_allclose(v, _leaves(one.groups[name].batch_stats)[k], rtol=1e-5, err_msg=k)


def test_two_processes_impute_the_single_process_tables(work, capsys):
    d, _ = work
    impute = ["impute", "two_procs", "cohort", "--replicates", "3", "--seed", "4", "--quiet"]
    run_processes(impute + ["--out", "out_two"], n_proc=2, devices_per_proc=2, cwd=d)
    assert cli([*impute[:1], str(d / "two_procs"), str(d / "cohort"), *impute[3:], "--out", str(d / "out_one")]) == 0
    capsys.readouterr()
    files = sorted(p.name for p in (d / "out_two").iterdir())
    # the four tables (parts merged, removed) and the marker that makes --out an imputation directory
    assert files == sorted(p.name for p in (d / "out_one").iterdir()) and len(files) == 5
    assert "cgjax_imputation.json" in files
    for f in (f for f in files if f.endswith(".parquet")):
        two, one = pd.read_parquet(d / "out_two" / f), pd.read_parquet(d / "out_one" / f)
        pd.testing.assert_frame_equal(two[["sample_id", "replicate", "attempts", "passed"]],
                                      one[["sample_id", "replicate", "attempts", "passed"]])
        x, y = two.iloc[:, 2:-2].to_numpy(float), one.iloc[:, 2:-2].to_numpy(float)
        assert np.abs(x - y).max() <= 1e-5 * np.abs(y).max(), f
