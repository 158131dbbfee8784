"""``cgjax evaluate`` loses nothing: results are on disk as each experiment completes, a rerun
resumes from them, a missing optional dependency is found before the work (PCA instead of UMAP,
said so, and captioned so), and the output directory of something else is refused."""

import builtins
import json
import sys

import numpy as np
import pytest

from cgjax.data import fit_scalers, split_cohort
from cgjax.datasets import default_law, synthetic_tcga
from cgjax.errors import OutputError
from cgjax.evaluate import run as run_mod
from cgjax.evaluate.reconstruction import OracleSampler
from cgjax.evaluate.run import EvalConfig, prepare_data, run_evaluation

DIM = 3
TINY = dict(replicates=2, runs=2, rf_trees=5, n_random=3, embedding="pca", baselines=("knn",), baseline_sets="full",
            given_sets="full", rsf=dict(n_estimators=3, max_depth=3, min_samples_leaf=10, max_features="sqrt"),
            rsf_time_bin=60.0, n_jobs=1, counterfactual_targets=("rnaseq",))


@pytest.fixture(scope="module")
def setup():
    cohort = split_cohort(synthetic_tcga(n_samples=500, seed=3, dim=DIM))
    law = default_law(dim=DIM)
    data = prepare_data(cohort, fit_scalers(cohort.split("train")))
    o = OracleSampler(law, data.scalers, type_prior=law.type_prior(complete_only=True))
    return data, {"multi": o, "coherent": o}


def test_a_failing_step_keeps_the_earlier_ones_and_a_rerun_resumes(setup, tmp_path, monkeypatch):
    data, samplers = setup
    cfg = EvalConfig.preset("quick", **{**TINY, "steps": ("reconstruction", "manifold", "privacy")})
    out = tmp_path / "eval"

    def boom(*a, **k):
        raise RuntimeError("privacy step died")

    monkeypatch.setattr("cgjax.evaluate.privacy.privacy_study", boom)
    with pytest.raises(RuntimeError, match="privacy step died"):
        run_evaluation(data, samplers, out, cfg, progress=False)
    # the completed steps are on disk: their CSVs, figures, metrics and a report saying what is left
    first = (out / "reconstruction.csv").read_text()
    assert len(first.splitlines()) > 1 and (out / "figures" / "manifold.png").stat().st_size > 1000
    m = json.loads((out / "metrics.json").read_text())
    assert m["reconstruction"] and "privacy" not in m
    assert "Not done yet: privacy" in (out / "report.md").read_text()
    assert json.loads((out / run_mod.MARKER).read_text())["completed"] == ["reconstruction", "manifold"]

    # rerun: the finished steps are read back, not recomputed (recomputing them would raise here)
    monkeypatch.undo()

    def no_recompute(*a, **k):
        raise AssertionError("a completed step was recomputed")

    # run.py calls the reconstruction_study it imported: patch that name (patching the defining module
    # would make this check vacuous)
    monkeypatch.setattr(run_mod, "reconstruction_study", no_recompute)
    monkeypatch.setattr("cgjax.evaluate.figures.manifold_figure", no_recompute)
    m2 = run_evaluation(data, samplers, out, cfg, progress=False)
    assert m2["privacy"] and m2["reconstruction"] == m["reconstruction"]
    assert (out / "reconstruction.csv").read_text() == first
    assert "Not done yet" not in (out / "report.md").read_text()

    # other settings (another seed): nothing is reused, the step is recomputed
    monkeypatch.undo()
    calls = []
    orig = run_mod.reconstruction_study
    monkeypatch.setattr(run_mod, "reconstruction_study", lambda *a, **k: calls.append(1) or orig(*a, **k))
    run_evaluation(data, samplers, out, EvalConfig.preset("quick", **{**TINY, "seed": 1, "steps": ("reconstruction",)}),
                   progress=False)
    assert calls == [1]


def test_missing_umap_falls_back_to_pca_before_starting(setup, tmp_path, monkeypatch, capsys):
    data, samplers = setup
    real_import = builtins.__import__

    def no_umap(name, *a, **k):
        if name == "umap" or name.startswith("umap."):
            raise ModuleNotFoundError("No module named 'umap'", name="umap")
        return real_import(name, *a, **k)

    monkeypatch.delitem(sys.modules, "umap", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_umap)
    cfg = EvalConfig.preset("quick", **{**TINY, "embedding": "umap", "steps": ("manifold",)})
    m = run_evaluation(data, samplers, tmp_path / "e", cfg, progress=False)
    assert "umap-learn is not installed" in capsys.readouterr().err
    assert m["config"]["embedding"] == "pca" and any("instead of UMAP" in n for n in m["notes"])
    report = (tmp_path / "e" / "report.md").read_text()
    assert "PCA of real vs reconstructed profiles" in report and "UMAP of real" not in report


def test_refuses_a_directory_it_did_not_write(setup, tmp_path):
    data, samplers = setup
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(OutputError, match="not a cgjax evaluation directory"):
        run_evaluation(data, samplers, tmp_path, EvalConfig.preset("quick", **{**TINY, "steps": ("manifold",)}),
                       progress=False)
    assert (tmp_path / "mine.txt").read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]
