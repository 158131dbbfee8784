"""cgjax: fill in the missing modalities of patient profiles by conditional diffusion, in JAX.

``import cgjax`` is cheap: the subpackages (``cgjax.datasets``, ``cgjax.evaluate``, ...) and the
top-level names ``Imputer`` and ``read_mudata`` are imported on first access (PEP 562).
"""

import importlib

__version__ = "0.1.0"

# name -> (module, attribute or None for the module itself)
_LAZY = {
    "Imputer": ("cgjax.imputer", "Imputer"),
    "read_mudata": ("cgjax.data.io", "read_mudata"),
    **{m: (f"cgjax.{m}", None) for m in ("checkpoint", "cli", "complete", "data", "datasets", "diffusion",
                                          "distributed", "embedding", "ensemble", "errors", "evaluate", "imputer",
                                          "output", "pipeline", "presets", "sampling", "scoring")},
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'cgjax' has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = importlib.import_module(module)
    return value if attr is None else getattr(value, attr)


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
