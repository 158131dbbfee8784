"""Our samplers inside the evaluation: a tiny (untrained) model set sits between the oracle's
optima, and ``cgjax evaluate`` runs end to end on a model set and a cohort directory."""

import json

import numpy as np
import pytest

from cgjax import checkpoint
from cgjax.cli import main as cli
from cgjax.data import Scalers, fit_scalers, split_cohort, write_cohort
from cgjax.datasets import default_law, synthetic_tcga
from cgjax.diffusion.denoiser import ArchConfig
from cgjax.diffusion.schedule import ScheduleConfig
from cgjax.diffusion.train import TrainConfig
from cgjax.ensemble import ModelSet, build_groups
from cgjax.evaluate.reconstruction import ModelSampler, OracleSampler, reconstruction, reconstruction_study
from cgjax.evaluate.report import quick_report
from cgjax.evaluate.run import prepare_data
from cgjax.sampling.options import SampleOptions

DIM = 3
R = 3
ARCH = ArchConfig(hidden=16, n_layers=3, time_dim=8, cond_embed_dim=8)


def random_model_set(cohort, scalers, seed=0):
    """An untrained model set with random weights, built without compiling anything (the shapes come
    from ``jax.eval_shape``): sampling, not training, is what is under test here."""
    import jax

    groups = build_groups(cohort.modalities, cohort.dims(), ARCH)
    tcfg = TrainConfig(epochs=1, batch_size=32)
    rng = np.random.default_rng(seed)
    for name, state in checkpoint._abstract_state(groups, tcfg).items():
        def init(path, a):  # weights [M, in, out] ~ N(0, 1/in); biases 0; BatchNorm scales 1
            if len(a.shape) == 3:
                return (rng.normal(size=a.shape) / np.sqrt(a.shape[1])).astype(a.dtype)
            return np.full(a.shape, 1.0 if "scale" in jax.tree_util.keystr(path) else 0.0, a.dtype)

        groups[name].params = jax.tree_util.tree_map_with_path(init, state.params)
        groups[name].batch_stats = [{k: np.zeros(v.shape, v.dtype) if k == "mean" else np.ones(v.shape, v.dtype)
                                     for k, v in bs.items()} for bs in state.batch_stats]
    # equal validation scores (inverse-MSE weights then uniform): an unscored model set is refused
    scores = {s.name: {"mse": 1.0} for g in groups.values() for s in g.specs}
    return ModelSet(tuple(cohort.modalities), cohort.dims(), ARCH, ScheduleConfig(timesteps=30), tcfg, groups,
                    scalers.to_dict(), dict(cohort.feature_names), scores)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    cohort = split_cohort(synthetic_tcga(n_samples=500, seed=4, dim=DIM))
    ms = random_model_set(cohort, fit_scalers(cohort.split("train")))
    write_cohort(cohort, root / "cohort")
    return ms, cohort, root


def test_tiny_model_sits_between_the_oracle_optima(files):
    ms, cohort, _ = files
    law = default_law(dim=DIM)
    data = prepare_data(cohort, Scalers.from_dict(ms.scalers), ms.modalities)
    prior = law.type_prior(complete_only=True)
    o_s = OracleSampler(law, data.scalers, type_prior=prior)
    samplers = {"multi": ModelSampler(ms, SampleOptions("multi")), "coherent": ModelSampler(ms, SampleOptions()),
                "oracle_sample": o_s, "oracle_mean": OracleSampler(law, data.scalers, mode="mean", type_prior=prior)}
    full = {t: [tuple(m for m in ms.modalities if m != t)] for t in ms.modalities}
    res = reconstruction_study(samplers, data.test, given_sets=full, replicates=R, seed=0, oracle=o_s)
    by = {(r["target"], r["method"]): r for r in res.records}
    for t in ms.modalities:
        for m in ("multi", "coherent"):
            rec = by[(t, m)]
            assert np.isfinite(rec["r2_mean"]) and rec["variance_pct"] > 0
            assert rec["r2_mean"] <= by[(t, "oracle_mean")]["r2_mean"]
            assert rec["energy_score"] >= by[(t, "oracle_sample")]["energy_score"]
        assert res.samples[t]["coherent"].shape == (R, len(data.test_ids), DIM)
    # the quickstart's entry points (cgjax/cli/models.py) on the same model set
    recs = reconstruction(ms, data.test, methods=("multi", "coherent"), given_sets=full, replicates=R)
    assert [(r["target"], r["method"]) for r in recs] == [(t, m) for t in ms.modalities for m in ("multi", "coherent")]
    text = quick_report(recs + [r for r in res.records if r["method"].startswith("oracle")], ms,
                        seconds={"train": 1.0, "total": 2.0}, n_test=len(data.test_ids), replicates=R)
    assert "oracle_sample" in text and "| rnaseq | cna+rppa+wsi |" in text
    for m in ("multi", "coherent"):  # unconditional generation (privacy) through the same samplers
        x = samplers[m]("wsi", {k: data.test[k] for k in ("cna", "rppa")}, replicates=R, unconditional=True)
        assert x.x.shape == (R, len(data.test_ids), DIM) and np.isfinite(x.x).all()


def test_cli_evaluate_end_to_end(files, tmp_path, capsys, monkeypatch):
    ms, _, root = files
    monkeypatch.setattr(checkpoint, "load", lambda path: ms)  # (checkpoint files are tested elsewhere)
    out = tmp_path / "eval"
    rc = cli(["evaluate", str(root / "ck"), str(root / "cohort"), "--out", str(out), "--quick", "--replicates", str(R),
              "--runs", str(R), "--trees", "5", "--steps", "downstream", "--quiet"])
    assert rc == 0
    assert "report:" in capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())  # (every step and the records: test_evaluate_run.py)
    assert m["config"]["replicates"] == R and m["config"]["rf_trees"] == 5 and m["config"]["steps"] == ["downstream"]
    assert any("own `split` column" in n for n in m["notes"]) and any("Oracle" in n for n in m["notes"])
    assert {r["condition"] for r in m["downstream"]} >= {"No Cna", "No Rnaseq, Rppa, Wsi"}
    assert {"gain_multi_mean", "gain_coherent_mean", "gain_oracle_sample_mean", "gain_knn_mean"} <= set(m["downstream"][0])
    text = (out / "report.md").read_text()
    assert "## 4. Downstream rescue" in text and "## 1." not in text


def test_cli_errors(files, tmp_path, capsys):
    _, _, root = files
    assert cli(["evaluate", str(root / "ck"), str(root / "cohort"), "--out", str(tmp_path), "--steps", "magic"]) == 2
    assert "unknown step" in capsys.readouterr().err
    assert cli(["evaluate", str(root / "ck"), str(root / "cohort"), "--out", str(tmp_path), "--replicates", "1"]) == 2
    assert cli(["evaluate", str(tmp_path / "nope"), str(root / "cohort"), "--out", str(tmp_path)]) == 2
