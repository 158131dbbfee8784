"""Safe writes, shared by every cgjax writer: checkpoints, embeddings, prepared cohorts, imputations
and evaluation reports.

Two rules hold everywhere:

* **Never replace what is not ours.** A directory is replaced (or written into) only when it is
  absent, empty, or carries the *marker* file that the writer itself leaves there (e.g. a
  checkpoint's ``cgjax_checkpoint.json``). Anything else, a user's scratch directory or the cohort
  being trained on, is refused with one line naming it (:class:`cgjax.errors.OutputError`).
* **Never leave half a file.** Files and directories are written under a temporary sibling name and
  renamed into place in one ``os.replace``; a process killed mid-write leaves at most a
  ``<name>.tmp-*`` / ``.<name>.writing`` entry, never read by cgjax.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from cgjax.errors import OutputError


def check_replaceable(path, marker: str, what: str) -> Path:
    """Refuse (OutputError) unless ``path`` is absent, an empty directory, or holds ``marker``.

    Args:
      path: the directory about to be written or replaced.
      marker: a path relative to ``path`` whose presence marks a directory written by this writer.
      what: what the writer writes, for the message (e.g. "cgjax checkpoint").

    Returns:
      ``path`` as an absolute Path.
    """
    path = Path(path).absolute()
    if not path.exists() and not path.is_symlink():
        return path
    if not path.is_dir():
        raise OutputError(f"{path}: exists and is not a directory; refusing to replace it with a {what}")
    try:
        empty = not any(path.iterdir())
    except OSError as e:
        raise OutputError(f"{path}: cannot read the directory ({e.strerror})") from None
    if not empty and not (path / marker).exists():
        raise OutputError(f"{path}: exists and is not a {what} (no {marker}); refusing to replace or write into "
                          f"it: choose another output directory")
    return path


def make_directory(path: Path) -> None:
    """``mkdir -p``, failing with one line (OutputError) naming what is in the way."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        if blocker is None:
            raise OutputError(f"{path}: cannot create the directory ({e.strerror or e})") from None
        raise OutputError(f"{blocker}: exists and is not a directory; cannot create {path}") from None
    except OSError as e:
        raise OutputError(f"{path}: cannot create the directory ({e.strerror or e})") from None


def probe_writable(path) -> None:
    """Refuse (OutputError) now if ``path``'s parent cannot hold a new entry: creates the parent
    directories and a temporary sibling, then removes the latter. For writers that would otherwise
    find out only after hours of work."""
    path = Path(path).absolute()
    make_directory(path.parent)
    try:
        os.rmdir(tempfile.mkdtemp(prefix=path.name + ".probe-", dir=path.parent))
    except OSError as e:
        raise OutputError(f"{path}: cannot write here ({e.strerror or e})") from None


@contextlib.contextmanager
def atomic_directory(path, *, marker: str, what: str):
    """Yield a fresh sibling temporary directory; on success it replaces ``path`` in one rename.

    ``path`` must be absent, empty, or hold ``marker`` (:func:`check_replaceable`), checked on
    entry and again just before the replace; the block must write ``marker`` into the temporary
    directory. A process killed inside the block leaves at most a ``<name>.tmp-*`` directory, never
    read by cgjax; an exception removes it. The previous ``path``, if any, is kept until the new one
    is in place (for an instant as ``<name>.old-<pid>``) and then deleted.
    """
    path = check_replaceable(path, marker, what)
    make_directory(path.parent)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=path.name + ".tmp-", dir=path.parent))
    except OSError as e:
        raise OutputError(f"{path}: cannot write here ({e.strerror or e})") from None
    try:
        yield tmp
        if not (tmp / marker).exists():  # a writer bug, not a user error: the next replace would refuse
            raise RuntimeError(f"atomic_directory: the writer of {path} did not write its marker {marker}")
        check_replaceable(path, marker, what)
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


@contextlib.contextmanager
def atomic_file(path, suffix: str = ""):
    """Yield a temporary sibling path (``.<name>.writing<suffix>``); on success it is renamed to ``path``.

    ``suffix`` is for writers that pick the format from the file's extension (``".h5mu"`` for
    mudata). A kill inside the block leaves no file at ``path`` (a previous one stays intact); an
    exception removes the temporary file."""
    path = Path(path)
    make_directory(path.parent)
    tmp = path.with_name(f".{path.name}.writing{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except PermissionError as e:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write ({e.strerror})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def claim_output_dir(path, marker: str, what: str, info: dict) -> Path:
    """Make ``path`` an output directory of this writer: refuse it unless absent, empty or already
    holding ``marker`` (:func:`check_replaceable`), create it, and (re)write ``marker`` with
    ``info``. Used by writers that put several files into one directory (imputations, evaluation
    reports), each file then written with :func:`atomic_file`."""
    path = check_replaceable(path, marker, what)
    make_directory(path)
    with atomic_file(path / marker) as tmp:
        write_json_synced(tmp, {"kind": what, **info}, indent=1, default=str)
    return path


def write_json_synced(file, obj, **dump_kwargs) -> None:
    """Write JSON and fsync it: used for the metadata file written last, whose presence marks a
    complete directory."""
    with open(file, "w") as f:
        json.dump(obj, f, **dump_kwargs)
        f.flush()
        os.fsync(f.fileno())
