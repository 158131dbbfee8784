"""Scale-out: sharded, chunked and multi-process sampling and data-parallel training give the results
of one big single-device run.

Several devices on CPU need ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` before jax is
imported, so the multi-device checks run in a subprocess: this file run as a script (``python
tests/test_distributed.py``) does them all in one process and prints a JSON report that the tests
read. Run on a machine with several real devices, the script uses those instead.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

if __name__ != "__main__":
    import pytest

N_DEV = 4


def tiny_model_set(n_samples: int = 160, dim: int = 4, timesteps: int = 25, seed: int = 0):
    """An untrained model set (random weights, non-trivial enough to sample), its cohort, the live
    training states of its groups and the scaled train cohort. Weights are initialised by one jitted
    program per group (eager initialisation compiles every small op, slow on a busy CPU)."""
    import jax
    import jax.numpy as jnp

    from cgjax.data import apply_scalers, fit_scalers, from_arrays
    from cgjax.diffusion import denoiser
    from cgjax.diffusion.denoiser import ArchConfig
    from cgjax.diffusion.schedule import ScheduleConfig
    from cgjax.diffusion.train import TrainConfig, TrainState, make_optimizer
    from cgjax.ensemble import ModelSet, build_groups

    rng = np.random.default_rng(seed)
    mods = ("cna", "rnaseq", "rppa", "wsi")
    masks = rng.random((n_samples, len(mods))) < 0.7
    masks[np.arange(n_samples), rng.integers(0, len(mods), n_samples)] = True  # every row has one at least
    masks[:8] = True  # a few complete rows
    cohort = from_arrays([f"p{i:04d}" for i in range(n_samples)],
                         {m: rng.normal(size=(n_samples, dim)) for m in mods}, {m: masks[:, j] for j, m in enumerate(mods)})
    scalers = fit_scalers(cohort)
    train_c = apply_scalers(cohort, scalers)
    arch = ArchConfig(hidden=16, n_layers=3, time_dim=8, cond_embed_dim=8)
    tcfg = TrainConfig(batch_size=16, steps_per_call=3, epochs=1)
    groups = build_groups(train_c.modalities, train_c.dims(), arch)
    states = {}
    init = jax.jit(denoiser.init, static_argnums=(1, 2))  # one compilation per (config, widths)
    for gi, (name, g) in enumerate(groups.items()):
        keys = jax.random.split(jax.random.PRNGKey(100 + gi), len(g.true_cond_dims))
        members = [init(k, g.dcfg, d) for k, d in zip(keys, g.true_cond_dims)]
        params = jax.tree.map(lambda *xs: jnp.stack(xs), *[m[0] for m in members])
        stats = jax.tree.map(lambda *xs: jnp.stack(xs), *[m[1] for m in members])
        opt = jax.jit(jax.vmap(make_optimizer(tcfg).init))(params)
        states[name] = TrainState(params, stats, opt, jnp.int32(0), None)
        g.params, g.batch_stats = params, stats
    ms = ModelSet(tuple(train_c.modalities), train_c.dims(), arch, ScheduleConfig(timesteps=timesteps), tcfg,
                  groups, scalers.to_dict(), {m: list(v) for m, v in train_c.feature_names.items()})
    for i, g in enumerate(ms.groups.values()):  # distinct validation scores: non-uniform ensemble weights
        for j, s in enumerate(g.specs):
            ms.val_metrics[s.name] = {"mse": 0.5 + 0.1 * ((i + j) % 5)}
    return ms, cohort, states, train_c


# ---- the multi-device worker (a subprocess) -----------------------------------------------------

def worker() -> dict:
    from unittest import mock

    import jax
    import optax

    from cgjax import distributed, pipeline
    from cgjax.diffusion import train as train_module
    from cgjax.diffusion.schedule import make_schedule
    from cgjax.diffusion.train import make_train_fn
    from cgjax.ensemble import group_arrays, sample_target
    from cgjax.sampling.coherent import RejectionConfig
    from cgjax.sampling.options import SampleOptions

    report = {"devices": len(jax.devices()), "platform": jax.devices()[0].platform}
    ms, cohort, states, train_c = tiny_model_set()
    mesh = distributed.make_mesh()
    scaled = pipeline.scaled_inputs(ms, cohort)
    given = {m: scaled[m][:10] for m in ("cna", "rppa", "wsi")}  # 10 rows x 3 replicates: 30, not a multiple of 4
    diffs = {}
    cases = {("coherent", True): ("sharded", "sharded_chunked"), ("multi", False): ("sharded_chunked",)}
    for (method, rej), labels in cases.items():
        options = SampleOptions(method, replicates=3, seed=5, rejection=RejectionConfig(enabled=rej))
        base = sample_target(ms, "rnaseq", given, options)
        for label in labels:
            opts = dataclasses.replace(options, max_batch=7) if label == "sharded_chunked" else options
            res = sample_target(ms, "rnaseq", given, opts, mesh=mesh)
            diffs[f"{method}_{'rej' if rej else 'norej'}_{label}"] = {
                "x": float(np.abs(res.x - base.x).max() / np.abs(base.x).max()), "shape": list(res.x.shape),
                "attempts_equal": bool(np.array_equal(res.attempts, base.attempts)),
                "passed_equal": bool(np.array_equal(res.passed, base.passed))}
    report["sampling"] = diffs

    # data-parallel training: a few steps (two calls of 3 substeps) against one device, with plain SGD.
    # The two runs differ by the order of float32 sums (4 shards, then the all-reduces); SGD passes
    # that rounding into the weights linearly (lr * |dg|). Adam would not: its first steps are
    # lr * g / |g| = +-lr, so a parameter whose gradient is zero up to rounding (a bias before a
    # BatchNorm, an embedding bias behind ReLUs active on almost every row) steps by +-lr on the
    # sign of the rounding, and where the cancellation is not exact that perturbs the network itself,
    # which the next steps amplify (1.2e-4 on the loss after 6 steps on an AVX-512 Xeon). Adam's
    # update is elementwise on replicated, all-reduced arrays, identical on every device.
    schedule = make_schedule(ms.schedule_cfg)
    tcfg = ms.train_cfg
    sgd = optax.sgd(0.1)  # large enough that 6 steps move every weight with a gradient by > 1e-3
    train = {}
    for name, g in list(ms.groups.items())[:1]:  # the 12 stacked single-condition models
        data = group_arrays(g, train_c.data, train_c.masks)
        multi = g.specs[0].kind == "multi"
        out = {}
        for label, m in (("single", None), ("parallel", mesh)):
            with mock.patch.object(train_module, "make_optimizer", lambda cfg, total_steps=1: sgd):
                fn = make_train_fn(g.dcfg, schedule, tcfg, multi=multi, total_steps=6, mesh=m)
            state = states[name]._replace(opt_state=jax.vmap(sgd.init)(states[name].params))
            state = jax.tree.map(lambda a: a.copy() if a is not None else None, state)
            key = jax.random.PRNGKey(7)
            losses = []
            for _ in range(2):
                state, loss = fn(state, data, key)
                losses.append(np.asarray(loss))
            out[label] = (jax.tree.map(np.asarray, state), np.stack(losses))
        (s1, l1), (s2, l2) = out["single"], out["parallel"]
        keyed = lambda tree: {jax.tree_util.keystr(p): np.asarray(a) for p, a in jax.tree_util.tree_leaves_with_path(tree)}
        p1, p2, p0 = keyed(s1.params), keyed(s2.params), keyed(states[name].params)
        b1, b2 = keyed(s1.batch_stats), keyed(s2.batch_stats)
        train[name] = {"params": {k: float(np.abs(p1[k] - p2[k]).max()) for k in p1},
                       "moved": {k: float(np.abs(p1[k] - p0[k]).max()) for k in p1},
                       "batch_stats": {k: float(np.abs(b1[k] - b2[k]).max()) for k in b1},
                       "loss_max_abs": float(np.abs(l1 - l2).max()), "steps": int(s2.step),
                       "n_layers": g.dcfg.n_layers}
    report["training"] = train

    # the data-parallel step really is partitioned: the compiled step holds all-reduces
    g = next(iter(ms.groups.values()))
    fn = make_train_fn(g.dcfg, schedule, tcfg, multi=False, total_steps=6, mesh=mesh)
    report["allreduce_in_step"] = "all-reduce" in _compiled_text(fn, states[next(iter(ms.groups))],
                                                                 group_arrays(g, train_c.data, train_c.masks))

    # impute over every local device (mesh="auto") and in chunks equals the plain run
    sub = cohort.subset(np.arange(40))
    kw = dict(progress=False, targets=["wsi"])
    a = pipeline.impute(ms, sub, SampleOptions(replicates=2, seed=1), **kw)
    b = pipeline.impute(ms, sub, SampleOptions(replicates=2, seed=1, max_batch=9), mesh="auto", **kw)
    report["impute"] = {t: {"rows": len(a[t]), "max_rel": float(np.abs(a[t].iloc[:, 2:].to_numpy(float)
                                                                       - b[t].iloc[:, 2:].to_numpy(float)).max()
                                                                / np.abs(a[t].iloc[:, 2:].to_numpy(float)).max()),
                            "ids_equal": bool((a[t]["sample_id"].to_numpy() == b[t]["sample_id"].to_numpy()).all())}
                        for t in a}
    return report


def _compiled_text(fn, state, data) -> str:
    import jax

    from cgjax.distributed import replicate

    # the wrapper's jitted step is its closure's 'jitted'
    jitted = dict(zip(fn.__code__.co_freevars, (c.cell_contents for c in fn.__closure__)))["jitted"]
    mesh = dict(zip(fn.__code__.co_freevars, (c.cell_contents for c in fn.__closure__)))["mesh"]
    state = jax.tree.map(lambda a: a.copy() if a is not None else None, state)
    return jitted.lower(replicate(state, mesh), replicate(data, mesh),
                        replicate(jax.random.PRNGKey(0), mesh)).compile().as_text()


if __name__ == "__main__":
    print("REPORT " + json.dumps(worker()))
    sys.exit(0)


# ---- tests --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def report():
    env = dict(os.environ)
    if env.get("CGJAX_TEST_REAL_DEVICES", "") in ("", "0"):
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={N_DEV}").strip()
        env["JAX_PLATFORMS"] = "cpu"
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve())], capture_output=True, text=True,
                          env=env, cwd=root, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("REPORT ")][-1]
    return json.loads(line[len("REPORT "):])


def test_worker_saw_several_devices(report):
    assert report["devices"] >= 2 or os.environ.get("CGJAX_TEST_REAL_DEVICES")


def test_sharded_padded_and_chunked_sampling_equal_one_batch(report):
    s = report["sampling"]
    assert len(s) == 3
    for key, d in s.items():
        assert d["shape"] == [3, 10, 4], key  # padded to a multiple of the devices, then trimmed
        assert d["x"] < 1e-5, (key, d)  # relative to the largest sample (random weights: large values)
        assert d["attempts_equal"] and d["passed_equal"], (key, d)


def _cancelled_by_batchnorm(path: str, n_layers: int) -> bool:
    """Biases whose effect is (all or mostly) a constant shift before a BatchNorm: the hidden layers'
    ``b`` and, through ReLUs active on every row, the condition embeddings' ``b``. Their gradient is
    (nearly) zero up to rounding, which Adam's normalisation
    turns into +-lr steps whatever the device count, so they are not comparable across runs
    (test_multiprocess, which trains with Adam through the CLI)."""
    import re

    m = re.fullmatch(r"\['layers'\]\[(\d+)\]\['b'\]", path)
    return bool(m and int(m.group(1)) < n_layers - 1) or (path.startswith("['cond']") and path.endswith("['b']"))


def test_data_parallel_training_matches_one_device(report):
    if report["devices"] < 2:  # CGJAX_TEST_REAL_DEVICES=1 on a one-GPU machine
        pytest.skip("a single device: nothing to all-reduce")
    assert report["allreduce_in_step"]
    # Bounds: 6 SGD steps of lr * g (<= 0.03 per step here) whose gradients differ by the rounding of
    # reordered float32 sums over 16 rows (a few eps32 relative), on weights |w| <= 0.6 (ulp 6e-8):
    # ~1e-7 expected (measured <= 1.2e-7 on an AVX-512 Xeon, loss 1 ulp); 1e-5 leaves 100x for other
    # vector widths, and is 100x below the 1e-3 each weight moves.
    for name, d in report["training"].items():
        assert d["steps"] == 6 and d["loss_max_abs"] < 1e-5, (name, d["loss_max_abs"])
        for path, diff in d["params"].items():
            assert diff < 1e-5, (name, path, diff)
        # the steps really changed the weights: all but the hidden layers' biases, which a BatchNorm
        # cancels (zero gradient)
        still = [path for path, moved in d["moved"].items() if moved <= 1e-3]
        assert len(still) <= d["n_layers"] - 1 and all(p.endswith("['b']") for p in still), (name, still)
        for path, diff in d["batch_stats"].items():
            assert diff < 1e-5, (name, path, diff)


def test_impute_over_devices_and_chunks_equals_plain(report):
    assert report["impute"]
    for t, d in report["impute"].items():
        assert d["ids_equal"] and d["max_rel"] < 1e-5, (t, d)


# ---- one process, one device ---------------------------------------------------------------------

def test_process_ranges_cover_every_row_once_in_order():
    from cgjax.distributed import chunk_ranges, process_range

    for total in (0, 1, 7, 30, 1001):
        for count in (1, 2, 3, 8):
            blocks = [process_range(total, i, count) for i in range(count)]
            assert blocks[0][0] == 0 and blocks[-1][1] == total
            assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
            sizes = [hi - lo for lo, hi in blocks]
            assert max(sizes) - min(sizes) <= 1
    assert chunk_ranges(3, 20, 7) == [(3, 10), (10, 17), (17, 20)]
    assert chunk_ranges(5, 5, 4) == []
    with pytest.raises(ValueError):
        process_range(10, 3, 3)


def test_pad_rows_copies_row_zero_and_memory_budget():
    from cgjax.diffusion.denoiser import DenoiserConfig
    from cgjax.distributed import bytes_per_row, default_max_batch, pad_rows, round_up

    a, b = pad_rows([np.arange(6).reshape(3, 2), np.array([5, 6, 7])], 5)
    assert a.tolist() == [[0, 1], [2, 3], [4, 5], [0, 1], [0, 1]] and b.tolist() == [5, 6, 7, 5, 5]
    assert round_up(30, 4) == 32 and round_up(32, 4) == 32
    cfg = DenoiserConfig(x_dim=32, cond_dims=(32,), hidden=512, n_layers=5, time_dim=128, cond_embed_dim=32)
    per_row = bytes_per_row(cfg, 3)
    assert 10_000 < per_row < 200_000
    assert bytes_per_row(cfg, 3, n_steps=1000, return_distance=True) > per_row + 8_000
    assert default_max_batch(cfg, 3) >= 1024  # CPU: the fixed default


class _FakeAccelerator:
    """A device that reports its memory, as a GPU does (default_max_batch then divides it)."""
    platform = "gpu"

    def __init__(self, limit: int):
        self.limit = limit

    def memory_stats(self):
        return {"bytes_limit": self.limit}


def test_memory_budget_counts_the_product_pass_and_the_corrector():
    from cgjax.diffusion.denoiser import DenoiserConfig
    from cgjax.distributed import GPU_MEMORY_FRACTION, bytes_per_row, default_max_batch

    M, F, H = 3, 32, 512
    cfg = DenoiserConfig(x_dim=F, cond_dims=(F,), hidden=H, n_layers=5, time_dim=128, cond_embed_dim=32)
    avg = bytes_per_row(cfg, M)
    prod = bytes_per_row(cfg, M, composition="product")
    # the unconditional pass: a second per-row condition projection (M rows of H, 2 buffers) and a
    # second set of member activations (3 hidden-wide and 4 feature-wide vectors per member), float32
    # with the 2x margin
    assert prod - avg == 4 * 2 * (M * H * 2 + M * (3 * H + 4 * F))
    assert 1.5 * avg < prod < 2 * avg
    # the corrector's x, noise and composed eps, once whatever the number of steps (they run in turn)
    assert bytes_per_row(cfg, M, corrector_steps=1) - avg == 4 * 2 * 3 * F
    assert bytes_per_row(cfg, M, corrector_steps=5) == bytes_per_row(cfg, M, corrector_steps=1)
    gpu = _FakeAccelerator(80 * 2 ** 30)
    rows = {c: default_max_batch(cfg, M, composition=c, device=gpu) for c in ("average", "product")}
    for c, per_row in (("average", avg), ("product", prod)):
        assert rows[c] == int(gpu.limit * GPU_MEMORY_FRACTION) // per_row // 1024 * 1024
        assert rows[c] * per_row <= gpu.limit * GPU_MEMORY_FRACTION
    assert rows["product"] < rows["average"]


def test_cluster_detection():
    from cgjax.distributed import cluster_env

    assert cluster_env({}) is None
    assert cluster_env({"SLURM_JOB_ID": "1", "SLURM_NTASKS": "4"}) is None  # the batch script itself
    assert cluster_env({"SLURM_JOB_ID": "1", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "4"}) == "slurm"
    assert cluster_env({"SLURM_JOB_ID": "1", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "1"}) is None
    assert cluster_env({"CGJAX_COORDINATOR_ADDRESS": "h:1234"}) == "explicit"
    assert cluster_env({"CGJAX_COORDINATOR_ADDRESS": "h:1234", "CGJAX_NO_DISTRIBUTED": "1"}) is None


@pytest.fixture(scope="module")
def tiny():
    return tiny_model_set()


def test_flat_ranges_reassemble_the_whole_batch(tiny):
    from cgjax import pipeline
    from cgjax.ensemble import iter_sample_target, sample_target
    from cgjax.sampling.options import SampleOptions

    ms, cohort, _, _ = tiny
    scaled = pipeline.scaled_inputs(ms, cohort)
    given = {m: scaled[m][:9] for m in ("cna", "rnaseq")}
    whole = sample_target(ms, "wsi", given, SampleOptions(replicates=2, seed=3))
    x = np.full((18, 4), np.nan, np.float32)
    for lo, hi in ((0, 5), (5, 13), (13, 18)):  # three "processes", chunks of 4
        for a, b, chunk in iter_sample_target(ms, "wsi", given, SampleOptions(replicates=2, seed=3, max_batch=4),
                                              flat_range=(lo, hi)):
            assert lo <= a < b <= hi and chunk.x.shape == (b - a, 4)
            x[a:b] = chunk.x
    np.testing.assert_allclose(x.reshape(2, 9, 4), whole.x, atol=1e-5)


def test_sample_target_sizes_chunks_for_its_composition_and_corrector(tiny, monkeypatch):
    from cgjax import distributed, pipeline
    from cgjax.ensemble import sample_target
    from cgjax.sampling.options import SampleOptions

    ms, cohort, _, _ = tiny
    # product needs models with an unconditional mode; the sampling stops before it runs
    ms = dataclasses.replace(ms, train_cfg=dataclasses.replace(ms.train_cfg, single_cond_dropout=0.2))
    scaled = pipeline.scaled_inputs(ms, cohort)
    given = {m: scaled[m][:5] for m in ("cna", "rnaseq", "rppa")}
    seen = []

    class Sized(Exception):
        pass

    def capture(dcfg, n_models, **kw):
        seen.append((n_models, kw))
        raise Sized

    monkeypatch.setattr(distributed, "default_max_batch", capture)
    for options in (SampleOptions(), SampleOptions(composition="product", corrector_steps=2)):
        with pytest.raises(Sized):
            sample_target(ms, "wsi", given, options)
    assert [(n, kw["composition"], kw["corrector_steps"]) for n, kw in seen] == [(3, "average", 0),
                                                                                 (3, "product", 2)]


def test_simulated_processes_write_parts_merged_in_order(tiny, tmp_path):
    pytest.importorskip("pyarrow")
    import pandas as pd

    from cgjax import pipeline
    from cgjax.output import merge_parts, part_path
    from cgjax.sampling.options import SampleOptions

    ms, cohort, _, _ = tiny
    cohort, kw = cohort.subset(np.arange(60)), dict(progress=False, targets=["wsi"])
    options, batched = SampleOptions(replicates=2, seed=2), SampleOptions(replicates=2, seed=2, max_batch=16)
    ref = pipeline.impute(ms, cohort, options, **kw)
    count = 3
    for i in range(count):
        paths = pipeline.impute(ms, cohort, batched, out_dir=tmp_path, process_index=i, process_count=count,
                                **kw)
        assert all(p == part_path(tmp_path, t, i, count) for t, p in paths.items())
    for t in ref:
        merged = pd.read_parquet(merge_parts(tmp_path, t, count))
        assert not any(part_path(tmp_path, t, i, count).exists() for i in range(count))
        pd.testing.assert_frame_equal(merged[["sample_id", "replicate", "attempts", "passed"]],
                                      ref[t][["sample_id", "replicate", "attempts", "passed"]], check_dtype=False)
        np.testing.assert_allclose(merged.iloc[:, 2:-2].to_numpy(), ref[t].iloc[:, 2:-2].to_numpy(), rtol=1e-5, atol=1e-4)
    # one process, streamed straight to <modality>.parquet
    single = pipeline.impute(ms, cohort, batched, out_dir=tmp_path / "one", **kw)
    for t, p in single.items():
        assert p.name == f"{t}.parquet"
        assert len(pd.read_parquet(p)) == len(ref[t])


def test_merge_accepts_empty_parts_and_refuses_missing_ones(tmp_path):
    pytest.importorskip("pyarrow")
    import pandas as pd

    from cgjax.distributed import process_range
    from cgjax.output import merge_parts, part_path

    full = pd.DataFrame({"sample_id": [f"s{i}" for i in range(3)], "replicate": 0, "f": np.arange(3.0)})
    count = 5  # more processes than rows: two write empty parts
    for i in range(count - 1):
        lo, hi = process_range(len(full), i, count)
        full.iloc[lo:hi].to_parquet(part_path(tmp_path, "m", i, count), index=False)
    with pytest.raises(FileNotFoundError):
        merge_parts(tmp_path, "m", count)
    full.iloc[3:3].to_parquet(part_path(tmp_path, "m", count - 1, count), index=False)
    merged = pd.read_parquet(merge_parts(tmp_path, "m", count))
    pd.testing.assert_frame_equal(merged, full)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.parquet"]
