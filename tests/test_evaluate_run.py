"""The whole protocol with fake samplers (the oracle, blurred): files, metrics.json contract,
report sections, split handling and synthetic-cohort detection."""

import json

import numpy as np
import pandas as pd
import pytest

from cgjax.data import fit_scalers, from_arrays, split_cohort
from cgjax.datasets import default_law, synthetic_tcga
from cgjax.errors import CgjaxError
from cgjax.evaluate.reconstruction import OracleSampler
from cgjax.evaluate.run import EvalConfig, detect_synthetic, prepare_data, run_evaluation
from test_report_figures import assert_report_figures

DIM = 3
TINY = dict(replicates=2, runs=2, rf_trees=5, n_random=3, embedding="pca", baselines=("knn",), baseline_sets="full",
            rsf=dict(n_estimators=3, max_depth=3, min_samples_leaf=10, max_features="sqrt"), rsf_time_bin=60.0,
            n_jobs=1, counterfactual_targets=("rnaseq",))


class Blurred:
    def __init__(self, oracle, scale):
        self.oracle, self.scale = oracle, scale

    def __call__(self, target, given, *, replicates=1, seed=0, unconditional=False):
        x = self.oracle(target, given, replicates=replicates, seed=seed, unconditional=unconditional)
        return x + self.scale * np.random.default_rng(seed + 1).normal(size=x.shape).astype(np.float32)


@pytest.fixture(scope="module")
def cohort():
    return split_cohort(synthetic_tcga(n_samples=700, seed=2, dim=DIM))


@pytest.fixture(scope="module")
def evaluated(cohort, tmp_path_factory):
    law = default_law(dim=DIM)
    data = prepare_data(cohort, fit_scalers(cohort.split("train")))
    o = OracleSampler(law, data.scalers, type_prior=law.type_prior(complete_only=True))
    samplers = {"single": Blurred(o, 0.5), "multi": Blurred(o, 0.2), "coherent": Blurred(o, 0.1)}
    out = tmp_path_factory.mktemp("eval")
    metrics = run_evaluation(data, samplers, out, EvalConfig.preset("quick", **TINY), law=law, progress=False)
    return out, metrics


def test_outputs_and_metrics_contract(evaluated):
    out, metrics = evaluated
    for name in ("report.md", "metrics.json", "reconstruction.csv", "reconstruction_replicates.csv",
                 "reconstruction_per_cancer.csv", "predictive.csv", "downstream.csv", "downstream_summary.csv",
                 "counterfactual_curves.csv", "counterfactual_auc.csv", "privacy.csv", "privacy_dcr.csv"):
        assert (out / name).stat().st_size > 0, name
    for fig in ("reconstruction", "calibration", "manifold", "predictive", "downstream", "counterfactual",
                "privacy_pca", "dcr"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 5000, fig
    m = json.loads((out / "metrics.json").read_text())
    assert m == json.loads(json.dumps(metrics))
    recs = m["reconstruction"]
    assert {r["method"] for r in recs} == {"single", "multi", "coherent", "knn", "oracle_mean", "oracle_sample"}
    for r in recs:
        assert {"target", "given", "method", "r2_mean", "r2_std", "variance_pct"} <= set(r)
        # energy score only for distributions: point predictors report their mean distance instead
        assert ("energy_score" in r) == (r["method"] not in ("knn", "oracle_mean")) != ("mean_distance" in r)
        assert isinstance(r["given"], list) and r["target"] not in r["given"]
    assert len([r for r in recs if r["method"] == "coherent"]) == 4 * 7
    assert m["downstream"] and m["counterfactual"] and m["privacy"] and m["predictive"]
    raw = pd.read_csv(out / "reconstruction_replicates.csv")
    assert set(raw.columns) == {"target", "given", "method", "replicate", "r2"} and raw["replicate"].max() == 1
    # the reference's AnovaRM of R2: within target (4) x method (single, coherent, multi), 2 replicates
    anova = {r["effect"]: r for r in m["reconstruction_anova"]}
    assert set(anova) == {"target", "method", "target:method"}
    assert [(anova[e]["Num DF"], anova[e]["Den DF"]) for e in ("target", "method", "target:method")] == \
        [(3.0, 3.0), (2.0, 2.0), (6.0, 6.0)]
    assert all(0.0 <= r["Pr > F"] <= 1.0 for r in anova.values())
    # the same for the classifiers (within modality x data) and the downstream rescue (condition x
    # test type), per task and metric, as the reference's AnovaRM before its post-hoc tests
    pred = pd.DataFrame(m["predictive_anova"])
    assert set(pred["effect"]) == {"modality", "data", "modality:data"} and set(pred["metric"]) == {
        "macro_f1", "balanced_accuracy"}
    assert (pred["Den DF"] == pred["Num DF"] * (TINY["replicates"] - 1)).all()
    down = pd.DataFrame(m["downstream_anova"])
    assert set(down["effect"]) == {"condition", "test_type", "condition:test_type"}
    assert (down["Den DF"] == down["Num DF"] * (TINY["runs"] - 1)).all()
    assert (out / "predictive_anova.csv").exists() and (out / "downstream_anova.csv").exists()


def test_report_has_every_section_and_figure(evaluated):
    out, _ = evaluated
    text = (out / "report.md").read_text()
    for heading in ("## 1. Reconstruction", "### Table 1", "### Calibration", "### Per cancer type", "## 2. Manifold",
                    "## 3. Predictive signal", "## 4. Downstream rescue", "## 5. Counterfactual", "## 6. Unconditional"):
        assert heading in text, heading
    links = assert_report_figures(out / "report.md")  # each opens, is not blank, has a caption
    assert set(links) == {f"figures/{f}.png" for f in ("reconstruction", "calibration", "manifold", "predictive",
                                                       "downstream", "counterfactual", "privacy_pca", "dcr")}
    assert "No Cna, Rnaseq" in text and "oracle_sample" in text and "p=" in text


def test_steps_subset_and_unknown_step(cohort, tmp_path):
    law = default_law(dim=DIM)
    data = prepare_data(cohort, fit_scalers(cohort.split("train")))
    o = OracleSampler(law, data.scalers, type_prior=law.type_prior(complete_only=True))
    cfg = EvalConfig.preset("quick", **{**TINY, "steps": ("counterfactual",)})
    m = run_evaluation(data, {"multi": o, "coherent": o}, tmp_path, cfg, progress=False)
    assert "reconstruction" not in m and m["counterfactual"]  # full-condition samples drawn on demand
    with pytest.raises(CgjaxError, match="unknown steps"):
        run_evaluation(data, {"multi": o}, tmp_path, EvalConfig(steps=("magic",)), progress=False)


def test_split_is_kept_or_redone_with_the_training_seed(cohort):
    sc = fit_scalers(cohort.split("train"))
    kept = prepare_data(cohort, sc)
    assert "own `split` column" in kept.notes[0]
    bare = from_arrays(cohort.sample_ids, dict(cohort.data), masks=dict(cohort.masks),
                       clinical=cohort.clinical.drop(columns="split"))
    redone = prepare_data(bare, sc)
    assert "re-split" in redone.notes[0] and "seed=42" in redone.notes[0]
    np.testing.assert_array_equal(redone.test_ids, kept.test_ids)  # split_cohort(seed=42) again
    assert all(np.isfinite(v).all() for v in kept.test.values())
    other = prepare_data(bare, {m: (mu + 1.0, sd) for m, (mu, sd) in sc.items()})
    assert any("WARNING" in n for n in other.notes)


def test_detect_synthetic(cohort):
    law = detect_synthetic(cohort)
    assert law is not None and law.dim == DIM
    renamed = from_arrays(np.array([f"P{i}" for i in range(cohort.n_samples)], dtype=object), dict(cohort.data),
                          masks=dict(cohort.masks), clinical=cohort.clinical.set_index(
                              pd.Index([f"P{i}" for i in range(cohort.n_samples)], name="sample_id")))
    assert detect_synthetic(renamed) is None


def test_presets():
    paper, ref, quick = (EvalConfig.preset(n) for n in ("paper", "reference", "quick"))
    assert paper.rf_trees == 500 and ref.rf_trees == 100
    assert paper.counterfactual_score == "prob_variance" and ref.counterfactual_score == "disagreement"
    assert ref.counterfactual_ablation == "zero" and ref.weighting == "softmax_inverse_mse" and ref.reject_fraction == 0.1
    assert quick.replicates < paper.replicates and EvalConfig.preset("quick", runs=5).runs == 5
    with pytest.raises(CgjaxError):
        EvalConfig.preset("magic")
