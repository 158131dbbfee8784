"""Saving and loading an :class:`cgjax.embedding.maps.Embedding`: a directory with
``embedding.json`` and one ``.npz`` per modality, written atomically like :mod:`cgjax.checkpoint`,
and finding a prepared cohort's embedding (:func:`find_embedding`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from cgjax._atomic import atomic_directory, write_json_synced
from cgjax.embedding.autoencoder import AEConfig, FittedAutoencoder, make_autoencoder
from cgjax.embedding.maps import Embedding, FittedPCA, ModalityEmbedding
from cgjax.errors import CgjaxError, CheckpointError

FORMAT_VERSION = 1
META_FILE = "embedding.json"
EMBEDDING_DIR = "embedding"  # the embedding's place inside a prepared cohort directory

__all__ = ["EMBEDDING_DIR", "FORMAT_VERSION", "META_FILE", "find_embedding", "load_embedding", "save_embedding"]


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(_flatten(v, key))
        else:
            out[key] = np.asarray(v)
    return out


def _unflatten(flat: Mapping[str, np.ndarray]) -> dict:
    tree: dict = {}
    for key, v in flat.items():
        node = tree
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = np.asarray(v)
    return tree


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        return None if not np.isfinite(x) else float(x)
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    return x


def _modality_record(e: ModalityEmbedding) -> tuple[dict, dict[str, np.ndarray]]:
    rec = {"method": e.method, "feature_names": list(e.feature_names), "latent_names": list(e.latent_names),
           "info": e.info}
    arrays: dict[str, np.ndarray] = {}
    if e.method == "autoencoder":
        m: FittedAutoencoder = e.model
        rec.update(config=m.config.to_dict(), history=m.history, best_epoch=m.best_epoch,
                   best_val_loss=m.best_val_loss, stopped_early=m.stopped_early)
        arrays.update({f"params/{k}": v for k, v in _flatten(m.params).items()})
        arrays.update({f"batch_stats/{k}": v for k, v in _flatten(m.batch_stats).items()})
        if m.input_mean is not None:
            arrays.update(input_mean=m.input_mean, input_std=m.input_std)
    elif e.method == "pca":
        p: FittedPCA = e.model
        arrays.update(mean=p.mean, scale=p.scale, components=p.components, pca_mean=p.pca_mean,
                      explained_variance_ratio=p.explained_variance_ratio)
    return rec, arrays


def save_embedding(embedding: Embedding, path) -> Path:
    """Write ``embedding`` atomically to the directory ``path`` (replacing what is there).

    Layout: ``embedding.json`` (methods, feature and latent names, autoencoder configs and training
    histories, ``info``; written last with ``"complete": true``) and ``modality_<i>.npz`` (arrays).
    Everything is written to a sibling temporary directory first and renamed into place.
    """
    path = Path(path)
    with atomic_directory(path, marker=META_FILE, what="cgjax embedding") as tmp:
        meta = {"format_version": FORMAT_VERSION, "kind": "cgjax_embedding", "modalities": {},
                "info": embedding.info}
        for i, (name, e) in enumerate(embedding.modalities.items()):
            rec, arrays = _modality_record(e)
            rec["file"] = f"modality_{i}.npz"
            np.savez(tmp / rec["file"], **arrays)
            meta["modalities"][name] = rec
        meta["complete"] = True
        write_json_synced(tmp / META_FILE, _jsonable(meta), indent=1)  # last: marks the rest complete
    return path


def load_embedding(path) -> Embedding:
    """Read an embedding directory written by :func:`save_embedding`.

    Raises:
      CheckpointError naming the directory or file: missing, half-written, another format version,
      or arrays that do not fit the recorded configuration.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such embedding directory")
    meta_file = path / META_FILE
    if not meta_file.exists():
        raise CheckpointError(f"{path}: not a complete cgjax embedding (no {META_FILE}; half-written or not "
                              f"an embedding)")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{meta_file}: corrupt metadata ({e})") from None
    if meta.get("kind") != "cgjax_embedding" or not meta.get("complete"):
        raise CheckpointError(f"{path}: not a complete cgjax embedding")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: embedding format version {meta.get('format_version')}; this cgjax "
                              f"reads version {FORMAT_VERSION}")
    mods = {}
    for name, rec in meta["modalities"].items():
        f = path / rec["file"]
        try:
            with np.load(f) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{f}: cannot read the arrays of modality '{name}' ({e})") from None
        method = rec["method"]
        try:
            if method == "autoencoder":
                cfg = AEConfig(**rec["config"])
                params = _unflatten({k[len("params/"):]: v for k, v in arrays.items() if k.startswith("params/")})
                stats = _unflatten({k[len("batch_stats/"):]: v for k, v in arrays.items()
                                    if k.startswith("batch_stats/")})
                _check_ae_shapes(cfg, params, stats, f)
                if cfg.standardize and not {"input_mean", "input_std"} <= set(arrays):
                    raise ValueError("the standardisation arrays are missing")
                model = FittedAutoencoder(cfg, params, stats, rec.get("history", []), rec.get("best_epoch"),
                                          rec.get("best_val_loss"), bool(rec.get("stopped_early")),
                                          arrays.get("input_mean"), arrays.get("input_std"))
            elif method == "pca":
                model = FittedPCA(*(np.asarray(arrays[k], np.float64) for k in
                                    ("mean", "scale", "components", "pca_mean", "explained_variance_ratio")))
                if model.components.shape != (len(rec["latent_names"]), len(rec["feature_names"])):
                    raise ValueError(f"PCA components have shape {model.components.shape}")
            elif method == "none":
                model = None
            else:
                raise ValueError(f"unknown method '{method}'")
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{f}: modality '{name}' does not match its record in {META_FILE} ({e})") from None
        mods[name] = ModalityEmbedding(name, method, rec["feature_names"], rec["latent_names"], model,
                                       rec.get("info", {}))
    return Embedding(mods, meta.get("info", {}))


def _check_ae_shapes(cfg: AEConfig, params, stats, f: Path) -> None:
    want = jax.eval_shape(lambda: make_autoencoder(cfg).init(jax.random.PRNGKey(0), jnp.zeros((2, cfg.input_dim)),
                                                             False))
    for what, tree, ref in (("params", params, want["params"]), ("batch_stats", stats, want["batch_stats"])):
        got = {k: v.shape for k, v in _flatten(tree).items()}
        exp = {k: tuple(v.shape) for k, v in _flatten_abstract(ref).items()}
        if got != exp:
            diff = sorted(set(got.items()) ^ set(exp.items()))[:3]
            raise ValueError(f"{what} do not fit the recorded config (differences: {diff})")


def _flatten_abstract(tree, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(_flatten_abstract(v, key))
        else:
            out[key] = v
    return out


def find_embedding(cohort_path, explicit=None) -> Path:
    """The embedding directory to decode with: ``explicit`` if given, else ``<cohort dir>/embedding``.

    Raises:
      CgjaxError saying where it looked, when neither exists.
    """
    if explicit is not None:
        p = Path(explicit)
        if not (p / META_FILE).exists():
            raise CheckpointError(f"{p}: not an embedding directory (no {META_FILE}); pass the 'embedding' "
                                  f"directory written by 'cgjax prepare'")
        return p
    c = Path(cohort_path)
    if c.is_dir() and (c / EMBEDDING_DIR / META_FILE).exists():
        return c / EMBEDDING_DIR
    raise CgjaxError(f"cannot decode: {c} has no {EMBEDDING_DIR}/{META_FILE} (only cohorts written by "
                     f"'cgjax prepare' carry one); pass --embedding DIR")
