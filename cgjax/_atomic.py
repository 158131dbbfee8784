"""Atomic replacement of a directory, shared by checkpoints, embeddings and prepared cohorts."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_directory(path):
    """Yield a fresh sibling temporary directory; on success it replaces ``path`` in one rename.

    A process killed inside the block leaves at most a ``<name>.tmp-*`` directory, never read by
    cgjax; an exception removes it. The previous ``path``, if any, is kept until the new one is in
    place (for an instant as ``<name>.old-<pid>``) and then deleted.
    """
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=path.name + ".tmp-", dir=path.parent))
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.with_name(f"{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json_synced(file, obj, **dump_kwargs) -> None:
    """Write JSON and fsync it: used for the metadata file written last, whose presence marks a
    complete directory."""
    with open(file, "w") as f:
        json.dump(obj, f, **dump_kwargs)
        f.flush()
        os.fsync(f.fileno())
