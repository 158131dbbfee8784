"""Orbax checkpoints of a trained :class:`cgjax.ensemble.ModelSet`.

One directory per trained set of models::

    CKPT_DIR/
      cgjax_checkpoint.json   configs, modality names and widths, feature names, scalers, validation
                              metrics and history, coherent-ensemble weights (null for a target
                              with an unscored model), format version, and optionally the
                              calibration check run after training (``calibration``,
                              :func:`write_calibration`; absent in older checkpoints), and how
                              ``cgjax train`` chose the configuration (``preset``, from the
                              first save of its run on; absent when not given)
      models/                 Orbax PyTree: {group: {"params", "batch_stats"}} (the selected models)
      resume/                 Orbax PyTree of the live training state (optimiser included), if any

Writes are atomic: everything goes to a sibling temporary directory that is renamed into place only
once complete, and the metadata file, written last, carries ``"complete": true``. A process killed
mid-write leaves at most a ``*.tmp-*`` directory, which is never read; the previous checkpoint
stays intact. Restoring needs only cgjax and the directory.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import jax
import numpy as np

from cgjax.diffusion import denoiser
from cgjax.diffusion.denoiser import ArchConfig
from cgjax.diffusion.schedule import ScheduleConfig
from cgjax.diffusion.train import TrainConfig, TrainState, init_state
from cgjax.distributed import is_primary, sync
from cgjax.ensemble import Group, ModelSet, ModelSpec, TrainingRun
from cgjax.sampling.weights import ensemble_weights
from cgjax._atomic import atomic_directory, atomic_file, check_replaceable, probe_writable, write_json_synced
from cgjax.errors import CgjaxError, CheckpointError

FORMAT_VERSION = 1
META_FILE = "cgjax_checkpoint.json"


def _checkpointer():
    """An Orbax checkpointer for this process alone. Under ``jax.distributed`` Orbax would otherwise
    synchronise every process on each save and restore; cgjax instead saves host copies from
    process 0 only (:func:`save`) and lets every process restore on its own."""
    import orbax.checkpoint as ocp

    if jax.process_count() == 1:
        return ocp.PyTreeCheckpointer()
    me = jax.process_index()
    mp = ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})
    return ocp.Checkpointer(ocp.PyTreeCheckpointHandler(multiprocessing_options=mp), multiprocessing_options=mp)


def _model_tree(ms: ModelSet) -> dict:
    return {name: {"params": g.params, "batch_stats": g.batch_stats} for name, g in ms.groups.items()}


def coherent_weights(ms: ModelSet, weighting: str = "inverse_mse") -> dict:
    """Per target, the base ensemble weight of each single model (all conditions available), by
    :func:`cgjax.sampling.weights.ensemble_weights`; None for a target whose weights are undefined
    (a model without a finite validation score, e.g. one that never improved on its first check)."""
    out = {}
    for t in ms.modalities:
        sources = [s for s in ms.modalities if s != t]
        try:
            w = ensemble_weights([ms.val_score(f"{t}_from_{s}") for s in sources], weighting,
                                 names=[f"{t}_from_{s}" for s in sources])
        except CgjaxError:
            out[t] = None
            continue
        out[t] = {s: float(x) for s, x in zip(sources, w)}
    return out


def _meta(ms: ModelSet, run: TrainingRun | None, preset: dict | None = None) -> dict:
    groups = {name: {"config": g.dcfg.to_dict(),
                     "models": [{"target": s.target, "conds": list(s.conds), "kind": s.kind} for s in g.specs],
                     "true_cond_dims": [list(d) for d in g.true_cond_dims]}
              for name, g in ms.groups.items()}
    meta = {
        "format_version": FORMAT_VERSION,
        "cgjax_version": __import__("cgjax").__version__,
        "modalities": list(ms.modalities),
        "dims": ms.dims,
        "feature_names": ms.feature_names,
        "arch": ms.arch.to_dict(),
        "schedule": dataclasses.asdict(ms.schedule_cfg),
        "train": ms.train_cfg.to_dict(),
        "scalers": ms.scalers,
        "groups": groups,
        "val_metrics": ms.val_metrics,
        "coherent_weights": coherent_weights(ms),
        "split": ms.split,
        "complete": True,
    }
    if preset is not None:
        meta["preset"] = preset
    if run is not None:
        meta["training"] = {"epoch": run.epoch, "history": run.history,
                            "best_scores": {k: [float(x) for x in v] for k, v in run.best_scores.items()}}
    return meta


def save(path, ms: ModelSet, run: TrainingRun | None = None, *, preset: dict | None = None) -> Path:
    """Write ``ms`` (and, for resuming, the live state of ``run``) atomically to ``path``, with
    ``preset`` (how ``cgjax train`` chose the configuration, :func:`write_preset`) in the metadata
    when given.

    With several processes (``jax.distributed``) every process must call it: the (replicated)
    weights are copied to the host, process 0 alone writes, and all return once the checkpoint is
    in place."""
    path = Path(path).absolute()  # Orbax accepts absolute paths only
    models = _model_tree(ms)
    resume = None if run is None else {name: {"params": s.params, "batch_stats": s.batch_stats,
                                              "opt_state": s.opt_state, "step": s.step, "ema": s.ema}
                                       for name, s in run.states.items()}
    # host copies: the checkpoint holds no device layout, so weights trained on a mesh (or several
    # processes, where only replicated values are readable) restore on any machine
    models, resume = jax.tree.map(np.asarray, (models, resume))
    if is_primary():
        with atomic_directory(path, marker=META_FILE, what="cgjax checkpoint") as tmp:
            ck = _checkpointer()
            ck.save(tmp / "models", models)
            if resume is not None:
                ck.save(tmp / "resume", resume)
            meta = _meta(ms, run, preset)
            meta["files"] = _manifest(tmp)
            # written last: its presence means the rest is there
            write_json_synced(tmp / META_FILE, meta, indent=1, default=float)
    sync(f"cgjax-checkpoint-{path}")
    return path


def _set_meta(path, key: str, value) -> None:
    """Set ``key`` of the checkpoint's metadata to ``value``, atomically, without rewriting the
    models; process 0 alone writes, every process waits for it."""
    path = Path(path)
    meta = read_meta(path)
    meta[key] = value
    if is_primary():
        with atomic_file(path / META_FILE) as tmp:
            write_json_synced(tmp, meta, indent=1, default=float)
    sync(f"cgjax-checkpoint-{key}-{path.absolute()}")


def write_preset(path, preset: dict) -> None:
    """Record how ``cgjax train`` chose the configuration (``{"name": ..., "overridden_by": [...]}``)
    under the key ``preset`` of the checkpoint's metadata, atomically (the models are not rewritten;
    the configs themselves are in ``arch`` / ``schedule`` / ``train``). Process 0 alone writes.
    :func:`save` records it too (``preset=``), which is how :func:`cgjax.pipeline.train` keeps it in
    every checkpoint of a run; this refreshes it in a checkpoint that is not saved again."""
    _set_meta(path, "preset", preset)


def write_calibration(path, result: dict) -> None:
    """Store a calibration check (:func:`cgjax.calibration_check.check_model_set`) under the key
    ``calibration`` of the checkpoint's metadata, atomically (the models are not rewritten); read it
    back with ``read_meta(path).get("calibration")`` (None for a checkpoint without one). Process 0
    alone writes."""
    _set_meta(path, "calibration", result)


def check_output(path) -> Path:
    """Refuse (:class:`cgjax.errors.OutputError`, one line) to write a checkpoint to ``path`` unless
    it is absent, an empty directory, or a cgjax checkpoint (holds ``cgjax_checkpoint.json``), and
    unless a new entry can be created beside it."""
    path = check_replaceable(path, META_FILE, "cgjax checkpoint")
    probe_writable(path)
    return path


def _manifest(path: Path) -> dict:
    """Relative path -> size in bytes of every file Orbax wrote under ``path``."""
    return {str(f.relative_to(path)): f.stat().st_size for f in sorted(path.rglob("*")) if f.is_file()}


def check_files(path, meta: dict, parts=("models", "resume")) -> None:
    """Raise CheckpointError naming the first file of ``parts`` that the checkpoint's manifest lists
    but that is missing or has another size (a copy cut short, a file deleted by hand). Checkpoints
    written before the manifest existed are not checked here (Orbax's own error then applies)."""
    path = Path(path)
    files = meta.get("files")
    if files is None:
        return
    for name, size in files.items():
        if name.split("/", 1)[0] not in parts:
            continue
        f = path / name
        if not f.is_file():
            n = sum(1 for k in files if k.split("/", 1)[0] == name.split("/", 1)[0] and not (path / k).is_file())
            raise CheckpointError(f"{path}: damaged checkpoint: {name} is missing ({n} of the files it was written "
                                  f"with are gone); copy the whole directory again or retrain")
        if f.stat().st_size != size:
            raise CheckpointError(f"{path}: damaged checkpoint: {name} has {f.stat().st_size} bytes, written with "
                                  f"{size} (truncated copy?); copy the whole directory again or retrain")


def _orbax_failure(path: Path, part: str, e: Exception) -> CheckpointError:
    """One line for an Orbax/tensorstore failure: its messages quote whole JSON specs; keep the
    status and the array it was reading."""
    import re

    text = str(e)
    status = re.search(r"\b(NOT_FOUND|DATA_LOSS|INVALID_ARGUMENT|FAILED_PRECONDITION|OUT_OF_RANGE)\b", text)
    array = re.search(r'Error reading "([^"]+)"', text)
    what = status.group(1).lower().replace("_", " ") if status else type(e).__name__
    where = f" reading {array.group(1)}" if array else ""
    return CheckpointError(f"{path}: damaged checkpoint: cannot read {part}/ ({what}{where}); copy the whole "
                           f"directory again or retrain")


def read_meta(path) -> dict:
    path = Path(path)
    meta_file = path / META_FILE
    if not path.is_dir():
        olds = sorted(path.parent.glob(path.name + ".old-*")) if path.parent.is_dir() else []
        hint = f" (a previous version survives as {olds[-1]})" if olds else ""
        raise CheckpointError(f"{path}: no such checkpoint directory{hint}")
    if not meta_file.exists():
        raise CheckpointError(f"{path}: not a complete cgjax checkpoint (no {META_FILE}; half-written or not a checkpoint)")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{meta_file}: corrupt metadata ({e})") from None
    if not meta.get("complete"):
        raise CheckpointError(f"{path}: checkpoint is marked incomplete")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version}; this cgjax reads version {FORMAT_VERSION}")
    return meta


# Checkpoints written before ArchConfig.parametrisation existed hold eps-prediction networks,
# whatever today's default is.
_OLD_ARCH = {"parametrisation": "eps"}


def _groups_from_meta(meta: dict) -> dict[str, Group]:
    groups = {}
    for name, g in meta["groups"].items():
        specs = tuple(ModelSpec(m["target"], tuple(m["conds"]), m["kind"]) for m in g["models"])
        groups[name] = Group(name, denoiser.DenoiserConfig.from_dict({**_OLD_ARCH, **g["config"]}), specs,
                             tuple(tuple(d) for d in g["true_cond_dims"]))
    return groups


def _abstract_state(groups: dict[str, Group], tcfg: TrainConfig):
    return {name: jax.eval_shape(lambda g=g: init_state(jax.random.PRNGKey(0), g.dcfg, g.true_cond_dims, tcfg))
            for name, g in groups.items()}


def _restore(path: Path, target):
    """Restore as host arrays, whatever devices the checkpoint was written from."""
    import orbax.checkpoint as ocp

    path = Path(path).absolute()  # Orbax accepts absolute paths only
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
        tree = _checkpointer().restore(path, item=target, restore_args=args)
    return jax.tree.map(np.asarray, tree)


def load(path) -> ModelSet:
    """Restore the selected models and everything needed to sample from them."""
    path = Path(path)
    meta = read_meta(path)
    groups = _groups_from_meta(meta)
    tcfg = TrainConfig(**meta["train"])
    abstract = _abstract_state(groups, tcfg)
    target = {n: {"params": a.params, "batch_stats": a.batch_stats} for n, a in abstract.items()}
    check_files(path, meta, ("models",))
    try:
        tree = _restore(path / "models", target)
    except Exception as e:  # orbax raises many types for a damaged directory
        raise _orbax_failure(path, "models", e) from None
    for name, g in groups.items():
        g.params, g.batch_stats = tree[name]["params"], tree[name]["batch_stats"]
    return ModelSet(
        modalities=tuple(meta["modalities"]), dims={k: int(v) for k, v in meta["dims"].items()},
        arch=ArchConfig(**{**_OLD_ARCH, **meta["arch"]}), schedule_cfg=ScheduleConfig(**meta["schedule"]),
        train_cfg=tcfg,
        groups=groups, scalers=meta["scalers"], feature_names=meta["feature_names"],
        val_metrics=meta["val_metrics"], split=meta.get("split"))


def load_run(path) -> TrainingRun:
    """Restore a training run to resume it (raises CheckpointError if the checkpoint has no state)."""
    path = Path(path)
    ms = load(path)
    meta = read_meta(path)
    if "training" not in meta or not (path / "resume").exists():
        raise CheckpointError(f"{path}: checkpoint holds no training state to resume from")
    abstract = _abstract_state(ms.groups, ms.train_cfg)
    target = {n: {"params": a.params, "batch_stats": a.batch_stats, "opt_state": a.opt_state, "step": a.step,
                  "ema": a.ema} for n, a in abstract.items()}
    check_files(path, meta, ("resume",))
    try:
        tree = _restore(path / "resume", target)
    except Exception as e:
        raise _orbax_failure(path, "resume", e) from None
    states = {n: TrainState(t["params"], t["batch_stats"], t["opt_state"], t["step"], t["ema"])
              for n, t in tree.items()}
    tr = meta["training"]
    return TrainingRun(ms, states, {k: np.asarray(v) for k, v in tr["best_scores"].items()},
                       tr["history"], int(tr["epoch"]))
