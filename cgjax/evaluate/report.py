"""Markdown reports of evaluation results: the quickstart's short report and the full evaluation
report written by ``cgjax evaluate`` (:func:`full_report`)."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import pandas as pd

METHOD_ORDER = ("single", "multi", "coherent", "gaussian_sample", "gaussian_type_sample", "joint_gaussian_sample",
                "mixture_sample", "mice_sample", "knn_sample", "knn", "iterative", "mean", "oracle_mean", "oracle_sample")


def _fmt(rec: dict | None, key="r2_mean", std="r2_std") -> str:
    if rec is None:
        return "—"
    s = f"{rec[key]:.3f}"
    if std in rec and rec.get(std):
        s += f" ± {rec[std]:.3f}"
    if "variance_pct" in rec and key == "r2_mean":
        s += f" ({rec['variance_pct']:.1f}%)"
    return s


def _num(v, digits=3, signed=False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def _p(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.1e}" if v < 1e-3 else f"{v:.3f}"


def _methods(df: pd.DataFrame) -> list[str]:
    present = set(df["method"])
    return [m for m in METHOD_ORDER if m in present] + sorted(present - set(METHOD_ORDER))


# Under every figure of a report: what it shows and what a good result looks like.
FIGURE_CAPTIONS = {
    "reconstruction": "Pooled R² (mean ± std over replicates) of each method per target, every other modality "
                      "given. Good: our samplers' bars reach `Oracle (posterior draws)`, the R² of exact posterior "
                      "draws. `Oracle (posterior mean)` is the ceiling of a point prediction and is higher by design: "
                      "a sampler above the draws' bar gives too little spread, it is not better. Without an oracle "
                      "(real data), compare with the probabilistic baselines (`*_sample`), not the point predictors.",
    "calibration": "Share of entries whose true value has rank 0..R among its R replicates, per target, every other "
                   "modality given. Good: flat along the dotted line 1/(R+1), as exact posterior draws are "
                   "(dashed). A U (extreme ranks too common) = replicates too narrow, over-confident; a hump in the "
                   "middle = too wide; a slope = biased.",
    "manifold": "Real test profiles and each method's reconstructions in an embedding fitted on the real ones, "
                "coloured by cancer type. Good: reconstructions fill the same regions as the real profiles, with "
                "each cancer type in its real cluster; a collapsed or shifted cloud is structure the sampler lost.",
    "predictive": "A classifier trained on real data, tested on real or generated test data. Good: bars on "
                  "generated data as high as on real data; a drop is class signal the generation lost.",
    "downstream": "Models tested with modalities removed (ablation) or removed then imputed. Good: imputed points "
                  "rise from the ablation back towards the full-data band (grey); at the ablation's level the "
                  "imputation added nothing.",
    "counterfactual": "Metric vs fraction of patients with the modality observed. Good: the informed curves (solid) "
                      "above random acquisition (dashed), i.e. the generated data picks the patients worth measuring.",
    "privacy_pca": "Unconditional samples (colour) over the train profiles (grey), PCA fitted on train. Good: the "
                   "generated points cover the grey cloud as the held-out real ones do, neither a small part of it "
                   "nor outside it.",
    "privacy_umap": "Unconditional samples (colour) over the train profiles (grey), UMAP fitted on train. Good: the "
                    "generated points cover the grey cloud as the held-out real ones do, neither a small part of it "
                    "nor outside it.",
    "dcr": "Distance of each generated row to its closest training record, against that of held-out real rows. "
           "Good: the two histograms alike, with about 5% of generated rows left of the dotted line (the held-out "
           "5th percentile); more there means rows copied from the training set.",
}


def figure_markdown(key: str, path: str, alt: str) -> str:
    """A report figure: the image link, then its caption (:data:`FIGURE_CAPTIONS`) on the next line."""
    return f"![{alt}]({path})\n\n*Figure: {alt}.* {FIGURE_CAPTIONS[key]}\n"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def reconstruction_markdown(records: list[dict]) -> str:
    """One row per (target, given set), columns methods; 'R2 ± std (variance %)'."""
    df = pd.DataFrame(records)
    methods = _methods(df)
    lines = ["| target | given | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for (t, g), sub in df.groupby([df["target"], df["given"].map(lambda g: "+".join(g))], sort=False):
        by = {r["method"]: r for r in sub.to_dict("records")}
        lines.append(f"| {t} | {g} | " + " | ".join(_fmt(by.get(m)) for m in methods) + " |")
    return "\n".join(lines)


def energy_markdown(records: list[dict]) -> str:
    """Energy score / 90% coverage of the methods that draw (point predictors have neither:
    :func:`cgjax.evaluate.reconstruction.score_samples`)."""
    df = pd.DataFrame([r for r in records if "energy_score" in r])
    if df.empty:
        return ""
    methods = _methods(df)
    lines = ["| target | given | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for (t, g), sub in df.groupby([df["target"], df["given"].map(lambda g: "+".join(g))], sort=False):
        by = {r["method"]: r for r in sub.to_dict("records")}
        lines.append(f"| {t} | {g} | " + " | ".join(
            f"{by[m]['energy_score']:.3f} / {by[m].get('coverage_range', float('nan')):.2f}" if m in by else "—"
            for m in methods) + " |")
    return "\n".join(lines)


def quick_report(records: list[dict], ms, *, seconds: dict, n_test: int, replicates: int,
                 figures: Mapping[str, str] | None = None, compositions: Mapping[str, str] | None = None) -> str:
    """The quickstart's report; ``figures``: key -> path relative to the report
    (:func:`cgjax.evaluate.figures.report_figures`), embedded with their captions; ``compositions``:
    target -> how ``coherent`` combined its models (:func:`cgjax.ensemble.sample.composition_for`)."""
    figures = figures or {}
    how = sorted(set((compositions or {}).values()))
    composed = (f" `coherent` combines the single models with the {' / '.join(how)} composition "
                "(docs/calibration.md, \"Sampler options that change the spread\")." if how else "")
    fig = lambda key, alt: figure_markdown(key, figures[key], alt) if key in figures else ""
    n_models = sum(len(g.specs) for g in ms.groups.values())
    return "\n".join([
        "# cgjax quickstart",
        "",
        f"Synthetic TCGA-like cohort (exact oracle). {n_models} models "
        f"(hidden {ms.arch.hidden}, {ms.arch.n_layers} layers, T = {ms.schedule_cfg.timesteps}, "
        f"{ms.train_cfg.epochs} epochs) trained in {seconds['train']:.0f} s; total {seconds['total']:.0f} s.",
        f"Test set: {n_test} complete samples, each target generated from the other modalities, "
        f"{replicates} replicates.{composed}",
        "",
        "## Reconstruction R2 (pooled, standardised scale): mean ± std over replicates (output variance % of real)",
        "",
        "`oracle_sample` is what a perfectly calibrated sampler scores (exact posterior draws); "
        "`oracle_mean` is the best any point prediction can do. A good sampler matches `oracle_sample`, "
        "not `oracle_mean`.",
        "",
        reconstruction_markdown(records),
        "",
        fig("reconstruction", "reconstruction R² against the oracle"),
        "## Calibration: energy score (lower is better) / coverage of the replicates' range",
        "",
        f"The range [min, max] of R = {replicates} calibrated replicates covers the truth with probability "
        f"(R - 1) / (R + 1) = {(replicates - 1) / (replicates + 1):.2f}; compare with `oracle_sample`.",
        "",
        energy_markdown(records),
        "",
        fig("calibration", "rank histogram of the truth among the replicates"),
        *(["## Real vs generated profiles", "", fig("manifold", "PCA of real vs reconstructed test profiles")]
          if "manifold" in figures else []),
    ])


# ---- the full report -------------------------------------------------------------------------------

def _full_sets(records: list[dict]) -> dict[str, int]:
    n = {}
    for r in records:
        n[r["target"]] = max(n.get(r["target"], 0), len(r["given"]))
    return n


def table1_markdown(records: list[dict]) -> str:
    """The paper's Table 1 layout: rows target; single-condition from each source, then every other
    method given all the other modalities. Cells: R2 ± std (output variance %)."""
    full = _full_sets(records)
    targets = list(dict.fromkeys(r["target"] for r in records))
    sources = [t for t in targets if any(t in r["given"] for r in records)]
    methods = [m for m in _methods(pd.DataFrame(records)) if m != "single"]
    single = {(r["target"], r["given"][0]): r for r in records if r["method"] == "single" and len(r["given"]) == 1}
    allg = {(r["target"], r["method"]): r for r in records if len(r["given"]) == full[r["target"]]}
    header = ["target"] + ([f"single from {s}" for s in sources] if single else []) + [f"{m} (all)" for m in methods]
    rows = []
    for t in targets:
        row = [t] + ([_fmt(single.get((t, s))) for s in sources] if single else [])
        row += [_fmt(allg.get((t, m))) for m in methods]
        rows.append(row)
    return _table(header, rows)


def calibration_markdown(records: list[dict]) -> str:
    """Per target (all other modalities given) and method that draws: R2 of the replicate mean,
    energy score, range coverage and its calibrated expectation, variance ratio to the oracle
    posterior, rejected %. Point predictors are left out (their energy score would be their mean
    distance to the truth)."""
    full = _full_sets(records)
    rows = []
    for r in records:
        if len(r["given"]) != full[r["target"]] or "energy_score" not in r:
            continue
        rows.append([r["target"], r["method"], _num(r.get("r2_of_mean")), _num(r.get("energy_score")),
                     _num(r.get("coverage_range"), 2), _num(r.get("coverage_range_expected"), 2),
                     _num(r.get("variance_ratio"), 2), _num(r.get("rejected_pct"), 1)])
    return _table(["target", "method", "R2 of replicate mean", "energy score ↓", "range coverage",
                   "calibrated: (R-1)/(R+1)",
                   "variance / oracle posterior", "rejected %"], rows)


def per_cancer_markdown(per_cancer: pd.DataFrame, methods: Sequence[str] = ("multi", "coherent", "knn", "oracle_mean")) -> str:
    """Rows cancer type, columns target x method: per-cancer R2 (def. C), replicate mean."""
    if per_cancer is None or per_cancer.empty:
        return "_not computed_"
    df = per_cancer[per_cancer.method.isin(methods)]
    cols = [(t, m) for t in dict.fromkeys(df["target"]) for m in methods if ((df.target == t) & (df.method == m)).any()]
    wide = df.pivot_table(index="cancer_type", columns=["target", "method"], values="r2_mean", aggfunc="first")
    n = df.groupby("cancer_type")["n"].first()
    rows = [[c, int(n[c])] + [_num(wide.loc[c].get(col)) if col in wide.columns else "—" for col in cols]
            for c in wide.index]
    return _table(["cancer type", "n"] + [f"{t} {m}" for t, m in cols], rows)


def tests_markdown(tests: pd.DataFrame, keys: Sequence[str]) -> str:
    """Paired tests: the key columns, a vs b, mean difference, p, corrected p, significant."""
    if tests is None or tests.empty:
        return "_not enough replicates/runs for paired tests_"
    keys = [k for k in keys if k in tests.columns]
    rows = []
    for r in tests.to_dict("records"):
        rows.append([r[k] for k in keys] + [f"{r['method_a']} − {r['method_b']}", _num(r["mean_diff"], 4, True),
                                             _p(r["p"]), _p(r["p_corrected"]), "yes" if r["reject"] else "no"])
    return _table(keys + ["comparison", "mean diff", "p", "p corrected", "significant"], rows)


def feature_space_markdown(summary: pd.DataFrame) -> str:
    """Rows target x method: pooled R² of a draw, of the replicate mean, mean per-feature R²."""
    if summary is None or summary.empty:
        return "_not computed (no target with complete train and test rows in the feature tables)_"
    rows = [[r["target"], r["method"], _num(r["r2_draw"]), _num(r["r2_of_mean"]), _num(r["r2_feature_mean"]),
             r["n_features"]] for r in summary.to_dict("records")]
    return _table(["target", "method", "R² per draw", "R² of replicate mean", "mean per-feature R²", "features"],
                  rows)


def predictive_markdown(summary: pd.DataFrame) -> str:
    if summary is None or summary.empty:
        return "_not computed (the cohort has no cancer type or stage labels)_"
    datas = list(dict.fromkeys(summary["data"]))
    rows = []
    for (task, mod), sub in summary.groupby(["task", "modality"], sort=False):
        by = sub.set_index("data")
        rows.append([task, mod] + [
            f"{by.loc[d, 'macro_f1_mean']:.3f} ± {by.loc[d, 'macro_f1_std']:.3f} / "
            f"{by.loc[d, 'balanced_accuracy_mean']:.3f}" if d in by.index else "—" for d in datas])
    return _table(["task", "modality"] + [f"{d}: F1 ± std / bal. acc." for d in datas], rows)


def table2_markdown(summary: pd.DataFrame, tests: pd.DataFrame | None = None) -> str:
    """The paper's Table 2: drop (ablation - full) and gain (method - ablation) per condition, with
    the corrected p-value of each gain vs ablation in brackets."""
    if summary is None or summary.empty:
        return "_not computed (the cohort has no stage or survival labels)_"
    out = []
    for task, sub in summary.groupby("task", sort=False):
        gains = [c[len("gain_"):-len("_mean")] for c in sub.columns if c.startswith("gain_") and c.endswith("_mean")
                 and sub[c].notna().any()]
        gains = [g for g in METHOD_ORDER + ("oracle",) if g in gains] + [g for g in gains if g not in METHOD_ORDER]
        pv = {}
        if tests is not None and not tests.empty:
            tt = tests[(tests.task == task) & (tests.method_b == "ablation")]
            pv = {(r.condition, r.method_a): r.p_corrected for r in tt.itertuples()}
        metric = sub["metric"].iloc[0]
        full = sub["full_mean"].iloc[0]
        header = ["condition", "ablation", "drop"] + [f"gain {g}" for g in gains]
        rows = []
        for r in sub.to_dict("records"):
            row = [r["condition"], _num(r["ablation_mean"]), f"{_num(r['drop_mean'], 3, True)} ± {_num(r['drop_std'])}"]
            for g in gains:
                m = r.get(f"gain_{g}_mean")
                if m is None or (isinstance(m, float) and math.isnan(m)):
                    row.append("—")
                    continue
                cell = f"{_num(m, 3, True)} ± {_num(r[f'gain_{g}_std'])}"
                if (r["condition"], g) in pv:
                    cell += f" (p={_p(pv[(r['condition'], g)])})"
                row.append(cell)
            rows.append(row)
        name = {"stage": "Stage classification", "survival": "Survival"}.get(task, task)
        out.append(f"**{name}** ({metric}; full data {full:.3f})\n\n" + _table(header, rows))
    return "\n\n".join(out)


def counterfactual_markdown(auc: pd.DataFrame) -> str:
    if auc is None or auc.empty:
        return "_not computed (the cohort has no stage or survival labels)_"
    g = auc.groupby(["task", "target", "method"], sort=False)["auc"]
    df = g.mean().to_frame("mean").join(g.std(ddof=0).to_frame("std")).reset_index()
    methods = list(dict.fromkeys(df["method"]))
    rows = []
    for (task, target), sub in df.groupby(["task", "target"], sort=False):
        by = sub.set_index("method")
        rows.append([task, target] + [f"{by.loc[m, 'mean']:.4f} ± {by.loc[m, 'std']:.4f}" if m in by.index else "—"
                                      for m in methods])
    return _table(["task", "target"] + [f"AUC {m}" for m in methods], rows)


def privacy_markdown(table: pd.DataFrame) -> str:
    if table is None or table.empty:
        return "_not computed_"
    rows = []
    for r in table.to_dict("records"):
        rows.append([r["method"], r["reference"]] + [f"{r[f'{k}_mean']:.4f} ± {r[f'{k}_std']:.4f}" for k in
                                                     ("precision", "recall", "f1", "energy_distance")])
    return _table(["method", "reference", "precision", "recall", "F1", "energy distance"], rows)


def dcr_markdown(dcr: pd.DataFrame) -> str:
    if dcr is None or dcr.empty:
        return "_not computed_"
    rows = [[r["method"], r["modality"], _num(r["median_generated"]), _num(r["median_holdout"]),
             _num(r["frac_generated_below_holdout_p5"])] for r in dcr.to_dict("records")]
    return _table(["method", "modality", "median DCR generated", "median DCR held-out",
                   "fraction generated below held-out 5th pct (≈0.05 = no copying)"], rows)


def full_report(res: Mapping, *, figures: Mapping[str, str], header: Sequence[str] = (),
                embedding: str = "umap") -> str:
    """The report of :func:`cgjax.evaluate.run.run_evaluation`: ``res`` holds the step results
    (keys reconstruction, predictive, downstream, counterfactual, privacy; each optional);
    ``embedding`` ("umap" | "pca") is the one the manifold figure was drawn with."""
    fig = lambda key, alt: figure_markdown(key, figures[key], alt) + "\n" if key in figures else ""
    L = ["# cgjax evaluation report", "", *header, ""]
    rec = res.get("reconstruction")
    if rec is not None:
        L += ["## 1. Reconstruction (Table 1, S2)", "",
              "Pooled R² (definition A, standardised scale), mean ± std (ddof 0) over replicates; in brackets the "
              "output variance as % of the real variance. `oracle_sample` (exact posterior draws) is what a "
              "perfectly calibrated sampler scores; `oracle_mean` (the posterior mean) is the best any point "
              "prediction can do. The baselines are fitted on the train set: point predictors (`knn`, "
              "`iterative`, `mean`) and probabilistic baselines drawing as many replicates as our samplers "
              "(`gaussian_sample`: regression + residual covariance; `gaussian_type_sample`: one per cancer type, "
              "which our samplers are not told; `joint_gaussian_sample`: one multivariate normal fitted by EM on "
              "every train row with the target, incomplete ones too; `mixture_sample`: a mixture of such regressions whose weights "
              "depend on the given modalities, subtypes found without labels; `mice_sample`: IterativeImputer posterior draws; `knn_sample`: "
              "one of the 5 nearest training profiles).", "",
              "### Table 1: each target from the other modalities", "", table1_markdown(rec.records), "",
              fig("reconstruction", "reconstruction R2"),
              "### Calibration (all other modalities given)", "",
              "Only methods that draw are compared here. A point predictor's energy score is just its mean "
              "distance to the truth (that of a point mass), so beating it shows only that spread helps, not "
              "that a sampler beats an imputer that models its uncertainty: the probabilistic baselines are that "
              "comparison (a point predictor's `mean_distance` is in metrics.json). "
              "Energy score: lower is better (a proper scoring rule: the exact posterior is optimal). Range "
              "coverage: fraction of true values inside the range [min, max] of their R replicates; a calibrated "
              "sampler covers (R − 1) / (R + 1) in expectation (0.82 for R = 10; the next column), less when "
              "overconfident, more when overdispersed; compare with `oracle_sample`. "
              "Variance ratio: replicate variance over the oracle's posterior variance (1 when calibrated, 0 for "
              "a point prediction).", "", calibration_markdown(rec.records), "",
              fig("calibration", "rank histogram of the truth among the replicates"),
              "### Paired tests over replicates (Bonferroni per target)", "",
              tests_markdown(rec.tests, ["target"]), "",
              "### Per cancer type (R² definition C, all other modalities given, replicate mean)", "",
              per_cancer_markdown(rec.per_cancer), "",
              "### Table S2: every subset of given modalities", "", reconstruction_markdown(rec.records), ""]
    fs = res.get("feature_space")
    if fs is not None:
        L += ["### Feature space (prepared cohort: draws decoded to features)", "",
              "Each target from all other modalities, decoded by the cohort's embedding and scored against the "
              "real preprocessed features (standardised by their train mean and std). `ridge` and `train mean` are "
              "fitted in feature space on the train rows; `ceiling` is decode(encode(truth)), the best any "
              "latent-space method can reach. Per-gene / per-protein R² in feature_space_per_feature.csv.", "",
              feature_space_markdown(fs["summary"]), ""]
    if "manifold" in figures:
        L += ["## 2. Manifold (Fig 1)", "", fig("manifold", f"{embedding.upper()} of real vs reconstructed profiles"), ""]
    pred = res.get("predictive")
    if pred is not None:
        L += ["## 3. Predictive signal (Fig 2)", "",
              "A random forest per modality, trained on real train data; tested on the real test modality and on "
              "the one generated from the other three. Macro F1 ± std over replicates / balanced accuracy.", "",
              predictive_markdown(pred["summary"]), "", fig("predictive", "predictive signal"),
              "Paired tests (Bonferroni within each modality, task and metric):", "",
              tests_markdown(pred["tests"][pred["tests"].metric == "macro_f1"] if not pred["tests"].empty
                             else pred["tests"], ["task", "modality"]), ""]
    ds = res.get("downstream")
    if ds is not None:
        L += ["## 4. Downstream rescue (Table 2, Fig 3)", "",
              "Drop = ablation − full data; gain = completed − ablation; per-run differences, mean ± std (ddof 1) "
              "over runs. In brackets the corrected p-value of the paired test of the gain (stage: two-sided, "
              "Bonferroni; survival: one-sided, Benjamini–Hochberg).", "",
              table2_markdown(ds.summary, ds.tests), "", fig("downstream", "downstream"),
              "Coherent vs multi-condition completion (paired by run, two-sided, Bonferroni; every test is in "
              "downstream_tests.csv):", "",
              tests_markdown(ds.tests[(ds.tests.method_a == "coherent") & (ds.tests.method_b == "multi")]
                             if not ds.tests.empty else ds.tests, ["task", "condition"]), ""]
    cf = res.get("counterfactual")
    if cf is not None:
        L += ["## 5. Counterfactual prioritisation (Fig 4, S5)", "",
              "Area under the acquisition curve (metric vs fraction of patients observed), mean ± std over runs.", "",
              counterfactual_markdown(cf.auc), "", fig("counterfactual", "acquisition curves"),
              "Paired tests of the AUCs (Bonferroni per task and target):", "",
              tests_markdown(cf.tests, ["task", "target"]), ""]
    pv = res.get("privacy")
    if pv is not None:
        L += ["## 6. Unconditional generation and privacy (Table 3, Fig 5)", "",
              "PRDC (k = 10) and energy distance of unconditional samples against a random train subset of the "
              "same size (redrawn per replicate) and against the test set; modalities averaged per replicate, "
              "then mean ± std over replicates. `real (test)` scores the held-out real rows: the ideal. Each modality "
              "is generated on its own, so in the figures (modalities side by side) a generated profile mixes "
              "independent draws: even the oracle's fall between the cancer-type clusters of real profiles.", "",
              privacy_markdown(pv.table), "", "### Distance to the closest training record", "",
              dcr_markdown(pv.dcr), "", fig("privacy_pca", "PCA of unconditional samples"),
              fig("privacy_umap", "UMAP of unconditional samples"), fig("dcr", "DCR histograms"), ""]
    return "\n".join(L)


def calibration_check_markdown(check: Mapping, figure: str | None = None) -> list[str]:
    """The section of a calibration check (:func:`cgjax.calibration_check.check_model_set`) as lines."""
    R = check["replicates"]
    has_compare = check.get("compare") is not None
    header = ["target", "verdict", "range coverage", f"expected (R = {R})", "z", "centre excess", "uniformity p"]
    if has_compare:
        header += ["spread ratio", "coverage (2nd)"]
    rows = []
    for m, a in check["modalities"].items():
        row = [m, a["verdict"], _num(a["range_coverage"]), _num(a["expected_coverage"]), f"{a['coverage_z']:+.1f}",
               _num(a["centre_excess"], signed=True), _p(a["uniformity_p"])]
        if has_compare:
            row += [_num(a["spread_ratio"], 2), _num(a["compare"]["range_coverage"])]
        rows.append(row)
    L = ["## Calibration check (validation split)", "",
         f"Each modality generated from all the others for {check['rows']} complete validation rows, {R} replicates, "
         f"with {check['sampler']}" + (f" (and, to compare, {check['compare']})" if has_compare else "") + ". "
         f"A calibrated sampler's range [min, max] of {R} replicates covers the truth with probability "
         f"(R − 1) / (R + 1) = {(R - 1) / (R + 1):.3f}: more = over-dispersed samples, less = over-confident; "
         "z is the deviation in Monte-Carlo standard errors (rows independent, features not), flagged beyond "
         f"±{check.get('z', 3):g}. Centre excess: share of ranks in the middle half minus that of uniform ranks "
         "(> 0 a hump = over-dispersed, < 0 a U = over-confident). Spread ratio: the second sampler's replicate "
         f"spread over the first's (warned outside 1/{check['spread_factor']:g}..{check['spread_factor']:g}). "
         "See docs/calibration.md.", "", _table(header, rows), ""]
    if figure:
        L += [f"![PIT histograms]({figure})", "",
              "PIT / rank histograms: the rank of each true value among its replicates. A good sampler's is flat "
              "(the dashed line); a hump in the middle means the samples are too spread, a U that they are too "
              "narrow, a slope that they sit off the truth.", ""]
    L += [f"- WARNING: {w}" for w in check["warnings"]] + ([""] if check["warnings"] else [])
    for other in check.get("methods", {}).values():
        L += [f"The same check with {other['sampler']}, on the same rows:", "",
              _table(["target", "verdict", "range coverage", "z", "centre excess"],
                     [[m, a["verdict"], _num(a["range_coverage"]), f"{a['coverage_z']:+.1f}",
                       _num(a["centre_excess"], signed=True)] for m, a in other["modalities"].items()]), ""]
    L += [f"- note: {n}" for n in check.get("notes", [])] + ([""] if check.get("notes") else [])
    return L
