"""Load a script of ``experiments/`` as a module, so tests can call its functions (the scripts are
not a package: each runs as ``python experiments/<name>.py``, which puts ``experiments/`` on the
path, so a script may import its siblings; loading one here does the same)."""

import importlib.util
import pathlib
import sys

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"


def load(name: str):
    """The module of ``experiments/<name>.py``, freshly executed (and registered in ``sys.modules``:
    dataclasses defined in a script look their module up)."""
    if str(EXPERIMENTS) not in sys.path:
        sys.path.append(str(EXPERIMENTS))
    spec = importlib.util.spec_from_file_location(f"experiments_{name}", EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
