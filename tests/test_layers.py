"""The package's layers point down only (docs/architecture.md): every ``cgjax`` import, at the top of
a module or inside a function, goes to a lower layer or stays inside its own package, the module
import graph has no cycle, and importing a lower package does not load the ones above it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "cgjax"

# bottom to top; a module may import its own package and anything on a lower line
LAYERS = (
    ("errors", "_validate", "presets"),
    ("_atomic",),
    ("scoring", "embedding", "distributed"),
    ("data",),
    ("datasets", "diffusion"),
    ("sampling",),
    ("ensemble",),
    ("checkpoint", "output"),
    ("pipeline",),
    ("complete", "calibration_check"),
    ("evaluate",),
    ("imputer",),
    ("cli",),
    ("__main__",),
)
RANK = {unit: r for r, units in enumerate(LAYERS) for unit in units}


def _module_name(f: Path) -> str:
    parts = f.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(f: Path) -> set[str]:
    """Every cgjax module ``f`` imports (``from cgjax.x import y`` counts as cgjax.x.y when that is a
    module, else cgjax.x)."""
    out = set()
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("cgjax")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cgjax"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                is_mod = (ROOT.parent / sub.replace(".", "/")).with_suffix(".py").exists() or \
                    (ROOT.parent / sub.replace(".", "/") / "__init__.py").exists()
                out.add(sub if is_mod else node.module)
    return out


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _graph() -> dict[str, set[str]]:
    """module -> the cgjax modules it imports; importing ``cgjax.p.m`` from outside package ``cgjax.p``
    runs ``cgjax/p/__init__.py`` first, so that counts as an import of ``cgjax.p`` too."""
    graph = {}
    for f in ROOT.rglob("*.py"):
        mod = _module_name(f)
        deps = _imports(f)
        graph[mod] = deps | {".".join(d.split(".")[:2]) for d in deps
                             if d.count(".") > 1 and _unit(d) != _unit(mod)}
    return graph


def test_every_module_has_a_layer():
    assert {_unit(m) for m in _graph()} - {"__init__"} <= set(RANK)


def test_imports_point_down_only():
    bad = []
    for mod, deps in _graph().items():
        u = _unit(mod)
        for d in deps:
            v = _unit(d)
            if u == "__init__" or v in (u, "__init__"):  # the root package is lazy (PEP 562): it loads nothing
                continue
            if RANK[v] >= RANK[u]:
                bad.append(f"{mod} -> {d}")
    assert not bad, bad


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m):
        state[m] = 1
        path.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                raise AssertionError("cycle: " + " -> ".join(path[path.index(d):] + [d]))
            if d in graph and d not in state:
                visit(d)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def _loaded_after(stmt: str) -> set[str]:
    code = f"import sys; {stmt}; print(' '.join(sorted(m for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT.parent).stdout.split()
    return set(out)


def test_lower_packages_do_not_load_the_upper_ones():
    loaded = _loaded_after("import cgjax.datasets")
    assert not {m for m in loaded if m.startswith(("cgjax.evaluate", "cgjax.ensemble", "cgjax.sampling"))}
    assert "jax" not in loaded  # the synthetic law is numpy/scipy
    loaded = _loaded_after("import cgjax.data")
    assert "jax" not in loaded and "flax" not in loaded and "cgjax.embedding" not in loaded
    loaded = _loaded_after("import cgjax.scoring.metrics, cgjax.scoring.stats")
    assert {m for m in loaded if m.startswith("cgjax.")} == {"cgjax.scoring", "cgjax.scoring.metrics",
                                                             "cgjax.scoring.stats"}
