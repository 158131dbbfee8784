"""Scale-out with JAX's own runtime: device meshes, sharded and chunked sampling, multi-process rows.

Three independent levers, each giving the same samples as one big single-device batch (noise is
drawn per row from its global id, :mod:`cgjax.sampling.coherent`):

* **Sharding** (one process, several devices). A 1-D :class:`jax.sharding.Mesh` with axis ``"batch"``
  over the devices; the sampler's per-row inputs (conditions, masks, weights, row ids) are placed
  split along their row axis (``NamedSharding(mesh, P("batch"))``), the stacked parameters
  replicated, and the *same* jitted scan is called: jit partitions it, each device runs the reverse
  process of its rows, with no communication inside the scan. A batch whose size is not a multiple
  of the device count is padded with copies of its row 0 (same inputs, same row id, so the padding
  rows are valid, never change the rejection loop, and are trimmed).
* **Chunking** (bounded memory). The flat replicate-major rows (replicate k, row r) are sampled in
  chunks of at most ``max_batch`` rows; every chunk has the same padded shape (one compilation) and
  its rows keep their global ids. :func:`default_max_batch` derives the chunk from the device's
  memory (GPU) or uses a fixed size (CPU).
* **Processes** (several hosts, or one process per GPU). :func:`initialize` starts
  ``jax.distributed`` under a cluster launcher; :func:`process_range` gives each process a contiguous
  block of the flat rows, which it samples on its own local devices and writes to a part file;
  process 0 concatenates the parts in process order, so the output is complete and in order (the
  files: :mod:`cgjax.output`).

Training uses the same mesh over every device of every process, data-parallel
(:func:`data_parallel`, :func:`cgjax.diffusion.train.make_train_fn`).
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Iterator, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

BATCH = "batch"
CPU_MAX_BATCH = 16_384  # rows per chunk on CPU: a few hundred MB for the paper's sizes
GPU_MEMORY_FRACTION = 0.4  # of the device's memory that one chunk's working set may take
MAX_BATCH_CAP = 1 << 20

__all__ = ["BATCH", "active_mesh", "batch_sharding", "bytes_per_row", "chunk_ranges", "data_parallel",
           "default_max_batch", "initialize", "is_primary", "make_mesh", "pad_rows", "process_range",
           "replicate", "replicated_sharding", "sample_sharded", "shard_rows", "sync"]


# ---- runtime ------------------------------------------------------------------------------------

_INITIALIZED = False


def cluster_env(env: dict | None = None) -> str | None:
    """Which launcher, if any, started several processes: ``"slurm"`` (an ``srun`` step with more than
    one task), ``"explicit"`` (``JAX_COORDINATOR_ADDRESS`` or ``CGJAX_COORDINATOR_ADDRESS`` set), or None.
    ``CGJAX_NO_DISTRIBUTED=1`` turns detection off."""
    env = os.environ if env is None else env
    if env.get("CGJAX_NO_DISTRIBUTED", "") not in ("", "0"):
        return None
    if env.get("CGJAX_COORDINATOR_ADDRESS") or env.get("JAX_COORDINATOR_ADDRESS"):
        return "explicit"
    if "SLURM_JOB_ID" in env and int(env.get("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS", "1")) or 1) > 1 \
            and "SLURM_STEP_ID" in env:
        return "slurm"
    return None


def initialize(force: bool = False, env: dict | None = None) -> bool:
    """Start ``jax.distributed`` when running under a cluster launcher (or when ``force``), once, before
    any computation. Under SLURM JAX reads the coordinator, process count and id from the step's
    variables; otherwise ``CGJAX_COORDINATOR_ADDRESS`` (host:port), ``CGJAX_NUM_PROCESSES`` and
    ``CGJAX_PROCESS_ID`` are passed on (unset ones left to JAX's own detection). Returns whether
    this process is one of several."""
    global _INITIALIZED
    env = os.environ if env is None else env
    kind = cluster_env(env)
    if not _INITIALIZED and (force or kind is not None):
        kwargs = {}
        if env.get("CGJAX_COORDINATOR_ADDRESS"):
            kwargs["coordinator_address"] = env["CGJAX_COORDINATOR_ADDRESS"]
        if env.get("CGJAX_NUM_PROCESSES"):
            kwargs["num_processes"] = int(env["CGJAX_NUM_PROCESSES"])
        if env.get("CGJAX_PROCESS_ID"):
            kwargs["process_id"] = int(env["CGJAX_PROCESS_ID"])
        jax.distributed.initialize(**kwargs)
        _INITIALIZED = True
    return jax.process_count() > 1


def is_primary() -> bool:
    return jax.process_index() == 0


def sync(name: str) -> None:
    """Barrier over every process (nothing with one)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


# ---- meshes and placement -----------------------------------------------------------------------

def make_mesh(devices: Sequence | None = None, *, local: bool = True) -> Mesh:
    """A 1-D mesh with axis ``"batch"`` over ``devices`` (default: this process's devices when
    ``local``, every process's devices otherwise)."""
    if devices is None:
        devices = jax.local_devices() if local else jax.devices()
    return Mesh(np.asarray(list(devices)), (BATCH,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(BATCH))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def _host(a):
    """A host copy (numpy) of an array the process can read whole (local or fully replicated)."""
    return a if isinstance(a, np.ndarray) else np.asarray(a)


def replicate(tree, mesh: Mesh):
    """Every leaf replicated on the mesh (leaves already placed so are left as they are)."""
    rep = replicated_sharding(mesh)

    def put(a):
        if isinstance(a, jax.Array) and a.sharding.is_equivalent_to(rep, a.ndim):
            return a
        if isinstance(a, jax.Array) and jax.process_count() > 1:
            a = _host(a)  # a process-local array becomes the global, replicated value
        return jax.device_put(a, rep)

    return jax.tree.map(put, tree)


def shard_rows(tree, mesh: Mesh):
    """Every leaf split along its leading (row) axis, which must be a multiple of the mesh size."""
    return jax.tree.map(lambda a: jax.device_put(a, batch_sharding(mesh)), tree)


def pad_rows(arrays: Sequence[np.ndarray], size: int) -> list[np.ndarray]:
    """Pad each array along axis 0 to ``size`` rows with copies of its row 0 (valid inputs)."""
    out = []
    for a in arrays:
        a = np.asarray(a)
        n = a.shape[0]
        if n > size:
            raise ValueError(f"{n} rows do not fit a batch of {size}")
        out.append(a if n == size else np.concatenate([a, np.repeat(a[:1], size - n, axis=0)], axis=0))
    return out


def round_up(n: int, multiple: int) -> int:
    return int(math.ceil(n / multiple) * multiple)


def sample_sharded(sampler, mesh: Mesh | None, params, batch_stats, key, conds, masks, weights, row_ids, *,
                   size: int | None = None):
    """Call a sampler of :func:`cgjax.sampling.coherent.make_sampler` on rows padded to ``size`` (default:
    the next multiple of the mesh size) and split over ``mesh`` (None: the default device, no padding
    beyond ``size``). Returns the :class:`SampleResult` fields as numpy arrays trimmed to the real rows."""
    n = int(np.shape(conds)[0])
    n_dev = 1 if mesh is None else mesh.size
    size = round_up(n, n_dev) if size is None else size
    if size % n_dev:
        raise ValueError(f"batch of {size} rows is not a multiple of the {n_dev} devices")
    conds, masks, weights, row_ids = pad_rows([conds, masks, weights, row_ids], size)
    if mesh is not None:
        params, batch_stats, key = replicate((params, batch_stats, key), mesh)
        conds, masks, weights, row_ids = shard_rows((conds, masks, weights, row_ids), mesh)
    res = sampler(params, batch_stats, key, conds, masks, weights, row_ids)
    return type(res)(*(None if a is None else np.asarray(a)[:n] for a in res))


# ---- data-parallel training ---------------------------------------------------------------------

_ACTIVE_MESH: list = []


@contextlib.contextmanager
def data_parallel(mesh: Mesh | None = None):
    """Within this context, :func:`cgjax.diffusion.train.make_train_fn` builds data-parallel steps on
    ``mesh`` (default: every device of every process)."""
    _ACTIVE_MESH.append(make_mesh(local=False) if mesh is None else mesh)
    try:
        yield _ACTIVE_MESH[-1]
    finally:
        _ACTIVE_MESH.pop()


def active_mesh() -> Mesh | None:
    return _ACTIVE_MESH[-1] if _ACTIVE_MESH else None


# ---- memory budget and chunks -------------------------------------------------------------------

def bytes_per_row(dcfg, n_models: int, *, n_steps: int = 0, return_distance: bool = False,
                  composition: str = "average", corrector_steps: int = 0) -> int:
    """An upper estimate of the device memory one sampled row needs (float32): its inputs and the
    per-row condition projections, the scan and rejection-loop state, and the activations of one
    step of the M members (with a 2x margin for XLA's temporaries).

    ``composition="product"`` (:mod:`cgjax.sampling.composition`) runs the members a second time per
    evaluation with every condition masked: a second prepared model (its per-row condition
    projections) and a second set of member activations are counted. ``corrector_steps`` > 0 adds
    the Langevin corrector's per-row state (its x, noise and composed eps); its steps run one after
    the other, so they add no further activations. The [T, ...] time tables and the stacked
    parameters are shared by all rows and not counted."""
    M, F, H, L = n_models, dcfg.x_dim, dcfg.hidden, dcfg.n_layers
    K, C = len(dcfg.cond_dims), max(dcfg.cond_dims)
    passes = 2 if composition == "product" else 1  # conditional, and for product unconditional too
    inputs = M * K * (C + 1) + M + 1
    prepared = passes * M * H * 2
    state = 10 * F + 8  # x_t, solver history, best/new x, noise, counters
    activations = passes * M * (3 * H + 4 * F) + M * M
    corrector = 3 * F if corrector_steps else 0
    dist = 3 * n_steps if return_distance else 0
    return 4 * 2 * (inputs + prepared + state + activations + corrector + dist + L)


def default_max_batch(dcfg, n_models: int, *, n_steps: int = 0, return_distance: bool = False,
                      composition: str = "average", corrector_steps: int = 0, device=None,
                      fraction: float = GPU_MEMORY_FRACTION) -> int:
    """Rows per chunk: on an accelerator, ``fraction`` of its memory divided by :func:`bytes_per_row`
    (rounded down to a multiple of 1024, at most 2^20); on CPU (or when the device does not report
    its memory) :data:`CPU_MAX_BATCH`."""
    device = jax.local_devices()[0] if device is None else device
    if device.platform == "cpu":
        return CPU_MAX_BATCH
    try:
        limit = (device.memory_stats() or {}).get("bytes_limit")
    except Exception:  # some backends do not report memory
        limit = None
    if not limit:
        return CPU_MAX_BATCH
    per_row = bytes_per_row(dcfg, n_models, n_steps=n_steps, return_distance=return_distance,
                            composition=composition, corrector_steps=corrector_steps)
    rows = int(limit * fraction) // per_row
    return int(min(MAX_BATCH_CAP, max(1024, rows // 1024 * 1024)))


def chunk_ranges(start: int, stop: int, max_batch: int) -> list[tuple[int, int]]:
    """[start, stop) in consecutive ranges of at most ``max_batch``."""
    if max_batch < 1:
        raise ValueError("max_batch must be >= 1")
    return [(a, min(a + max_batch, stop)) for a in range(start, stop, max_batch)]


def process_range(total: int, index: int | None = None, count: int | None = None) -> tuple[int, int]:
    """The contiguous block [lo, hi) of ``total`` rows that process ``index`` of ``count`` handles
    (balanced: sizes differ by at most one; blocks in process order cover every row once)."""
    index = jax.process_index() if index is None else index
    count = jax.process_count() if count is None else count
    if not 0 <= index < count:
        raise ValueError(f"process index {index} outside 0..{count - 1}")
    base, extra = divmod(total, count)
    lo = index * base + min(index, extra)
    return lo, lo + base + (1 if index < extra else 0)


def iter_ranges(total: int, max_batch: int, index: int | None = None, count: int | None = None) -> Iterator[tuple[int, int]]:
    """This process's block of ``total`` rows in chunks of at most ``max_batch``."""
    lo, hi = process_range(total, index, count)
    yield from chunk_ranges(lo, hi, max_batch)
