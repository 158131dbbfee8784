"""The evaluation's figures (PNG, matplotlib Agg). Each function takes plain results and a path.

2-D embeddings (:func:`embed`) use UMAP with the reference's settings (docs/reference.md 5.7 / 5.8:
n_neighbors 15, min_dist 0.8, spread 2, random_state 23) or PCA (2 components, random_state 42),
fitted on one real set and applied to the others.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from cgjax.evaluate.downstream import MAIN_METRIC

UMAP_SETTINGS = dict(n_components=2, n_neighbors=15, min_dist=0.8, spread=2.0, random_state=23)
PCA_SETTINGS = dict(n_components=2, random_state=42)
COLORS = {"real": "#4d4d4d", "full_data": "#4d4d4d", "ablation": "#d62728", "single": "#9467bd", "multi": "#1f77b4",
          "coherent": "#2ca02c", "knn": "#ff7f0e", "iterative": "#8c564b", "mean": "#bcbd22",
          "oracle_mean": "#17becf", "oracle_sample": "#e377c2", "oracle": "#e377c2", "random": "#7f7f7f",
          "real (test)": "#4d4d4d"}
LABELS = {"multi": "Multi-condition", "coherent": "Coherent Denoising", "single": "Single-condition",
          "knn": "KNN", "iterative": "Iterative", "mean": "Mean", "oracle_mean": "Oracle (posterior mean)",
          "oracle_sample": "Oracle (posterior draws)", "oracle": "Oracle", "real": "Real", "random": "Random",
          "ablation": "Ablation", "full_data": "Full data", "real (test)": "Real (held-out test)"}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _color(name: str, i: int = 0) -> str:
    if name in COLORS:
        return COLORS[name]
    return f"C{i % 10}"


def _label(name: str) -> str:
    return LABELS.get(name, name)


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    _plt().close(fig)
    return path


def embed(fit_x: np.ndarray, others: Mapping[str, np.ndarray], method: str = "umap", **kwargs):
    """Fit a 2-D embedding on ``fit_x`` f[N, D] and transform each of ``others``.

    Returns (f[N, 2] embedding of fit_x, name -> f[M, 2]). ``method``: "umap" (umap-learn with
    :data:`UMAP_SETTINGS`) or "pca" (:data:`PCA_SETTINGS`); kwargs override the settings.
    """
    fit_x = np.asarray(fit_x, np.float64)
    if method == "umap":
        import umap

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = umap.UMAP(**{**UMAP_SETTINGS, **kwargs})
            base = model.fit_transform(fit_x)
            return base, {k: model.transform(np.asarray(v, np.float64)) for k, v in others.items()}
    if method == "pca":
        from sklearn.decomposition import PCA

        model = PCA(**{**PCA_SETTINGS, **kwargs}).fit(fit_x)
        return model.transform(fit_x), {k: model.transform(np.asarray(v, np.float64)) for k, v in others.items()}
    raise ValueError(f"unknown embedding {method!r}; choose umap or pca")


def manifold_figure(real_emb: np.ndarray, gen_embs: Mapping[str, np.ndarray], cancer_types, path, *,
                    method: str = "UMAP") -> Path:
    """Fig 1: real test profiles and their reconstructions (each modality from the other three) in
    the embedding fitted on the real ones, coloured by cancer type."""
    plt = _plt()
    panels = {"real": real_emb, **gen_embs}
    types = np.asarray(cancer_types).astype(str)
    cats = sorted(set(types))
    cmap = plt.get_cmap("tab20")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.4), sharex=True, sharey=True, squeeze=False)
    colors = np.array([cmap(cats.index(t) % 20) for t in types])
    for ax, (name, e) in zip(axes[0], panels.items()):
        ax.scatter(e[:, 0], e[:, 1], s=6, c=colors, alpha=0.8, linewidths=0)
        ax.set_title(_label(name) if name == "real" else f"{_label(name)} reconstruction", fontsize=11)
        ax.set_xlabel(f"{method} 1")
    axes[0][0].set_ylabel(f"{method} 2")
    handles = [plt.Line2D([], [], marker="o", ls="", color=cmap(i % 20), label=c, markersize=5) for i, c in enumerate(cats)]
    fig.legend(handles=handles, title="Cancer type", loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
               ncol=1 if len(cats) <= 20 else 2, frameon=False)
    fig.suptitle(f"Test profiles: real vs reconstructed ({method} fitted on the real profiles)", fontsize=12)
    fig.tight_layout()
    return _save(fig, path)


def reconstruction_manifold(truth: Mapping[str, np.ndarray], samples: Mapping[str, Mapping[str, np.ndarray]],
                            names: Sequence[str], cancer_types, path, *, method: str = "umap") -> Path:
    """:func:`manifold_figure` of whole profiles: the real test rows (``truth``: modality -> f[N, D_m])
    and, per method of ``names``, the profile whose every modality is the first replicate of its
    reconstruction from the others (``samples[modality][method]`` f[R, N, D_m]), in the ``method``
    embedding (:func:`embed`) fitted on the real profiles. ``cancer_types``: str[N] or None."""
    mods = list(samples)
    real = np.concatenate([truth[m] for m in mods], axis=1)
    others = {n: np.concatenate([samples[t][n][0] for t in mods], axis=1) for n in names}
    base, embs = embed(real, others, method)
    types = np.full(len(real), "all") if cancer_types is None else cancer_types
    return manifold_figure(base, embs, types, path, method=method.upper())


def _full_given(records: Sequence[dict]) -> list[dict]:
    """The records whose given set is the largest of their target (every other modality given)."""
    n_src = {}
    for r in records:
        n_src[r["target"]] = max(n_src.get(r["target"], 0), len(r["given"]))
    return [r for r in records if len(r["given"]) == n_src[r["target"]]]


def reconstruction_figure(records: Sequence[dict], path) -> Path:
    """R2 (mean ± std over replicates) per target with every other modality given, per method."""
    plt = _plt()
    df = pd.DataFrame(_full_given(records))
    targets = list(dict.fromkeys(df["target"]))
    methods = [m for m in COLORS if m in set(df["method"])] + sorted(set(df["method"]) - set(COLORS))
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(targets), 4))
    w = 0.8 / len(methods)
    for j, m in enumerate(methods):
        sub = df[df.method == m].set_index("target").reindex(targets)
        ax.bar(np.arange(len(targets)) + (j - (len(methods) - 1) / 2) * w, sub["r2_mean"], w, yerr=sub["r2_std"],
               color=_color(m, j), label=_label(m), capsize=2)
    ax.set_xticks(np.arange(len(targets)), targets)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlabel("Target modality (generated from the other three)")
    ax.set_ylabel("Pooled R² (standardised scale)")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set_title("Reconstruction")
    fig.tight_layout()
    return _save(fig, path)


def calibration_figure(records: Sequence[dict], path) -> Path:
    """Rank histograms per target (every other modality given), one line per method that draws.

    Each record's ``rank_histogram`` (int[R + 1], :func:`cgjax.evaluate.reconstruction.score_samples`)
    is drawn as the share of entries whose true value has rank 0..R among the R replicates, over the
    flat line 1 / (R + 1) that a calibrated sampler's histogram scatters around.
    """
    plt = _plt()
    recs = [r for r in _full_given(records) if "rank_histogram" in r]
    if not recs:
        raise ValueError("no record has a rank_histogram (point predictions only, or one replicate)")
    targets = list(dict.fromkeys(r["target"] for r in recs))
    present = {r["method"] for r in recs}
    methods = [m for m in COLORS if m in present] + sorted(present - set(COLORS))
    by = {(r["target"], r["method"]): np.asarray(r["rank_histogram"], np.float64) for r in recs}
    fig, axes = plt.subplots(1, len(targets), figsize=(0.6 + 3.4 * len(targets), 3.6), sharey=True, squeeze=False)
    n_ranks = max(len(h) for h in by.values())  # R + 1 (one study: the same R for every method)
    for ax, t in zip(axes[0], targets):
        for j, m in enumerate(methods):
            if (t, m) in by:
                h = by[(t, m)]
                ax.plot(np.arange(len(h)), h / h.sum(), marker="o", ms=3.5, lw=1.4, color=_color(m, j),
                        label=_label(m), ls="--" if m.startswith("oracle") else "-")
        ax.axhline(1.0 / n_ranks, color="black", ls=":", lw=1.2, label="Calibrated (flat)")
        ax.set_xticks(np.arange(n_ranks))
        ax.set_title(t, fontsize=11)
        ax.set_xlabel("Rank of the truth among replicates")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylim(0, 1.08 * max(max(h / h.sum()) for h in by.values()))  # shared by every panel
    axes[0][0].set_ylabel("Share of entries")
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:  # every method of any panel, once
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.suptitle("Calibration: rank of the true value among the replicates (flat = calibrated)", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def report_figures(records: Sequence[dict], out, *, truth: Mapping[str, np.ndarray] | None = None,
                   samples: Mapping[str, Mapping[str, np.ndarray]] | None = None, cancer_types=None) -> dict[str, str]:
    """The quickstart's figures, written to ``out``/figures: ``reconstruction`` (:func:`reconstruction_figure`);
    ``calibration`` (:func:`calibration_figure`) when some method drew several replicates; ``manifold``
    (PCA, :func:`reconstruction_manifold`) when ``truth`` and ``samples`` (a reconstruction study's
    full-given generations) are given. Returns figure key -> path relative to ``out`` (as the report
    links them)."""
    out = Path(out)
    figs = {"reconstruction": reconstruction_figure(records, out / "figures" / "reconstruction.png")}
    if any("rank_histogram" in r for r in _full_given(records)):
        figs["calibration"] = calibration_figure(records, out / "figures" / "calibration.png")
    if truth is not None and samples:
        methods = dict.fromkeys(n for d in samples.values() for n in d)  # those with every target
        names = [n for n in methods if all(n in d for d in samples.values())]
        figs["manifold"] = reconstruction_manifold(truth, samples, names, cancer_types,
                                                   out / "figures" / "manifold.png", method="pca")
    return {k: str(v.relative_to(out)) for k, v in figs.items()}


def predictive_figure(summary: pd.DataFrame, path, *, metric: str = "macro_f1") -> Path:
    """Fig 2: per task, single-modality classifier score on real vs generated test data."""
    plt = _plt()
    tasks = list(dict.fromkeys(summary["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4), squeeze=False)
    names = {"macro_f1": "Macro F1", "balanced_accuracy": "Balanced accuracy"}
    for ax, task in zip(axes[0], tasks):
        sub = summary[summary.task == task]
        mods = list(dict.fromkeys(sub["modality"]))
        datas = list(dict.fromkeys(sub["data"]))
        w = 0.8 / len(datas)
        for j, d in enumerate(datas):
            s = sub[sub.data == d].set_index("modality").reindex(mods)
            ax.bar(np.arange(len(mods)) + (j - (len(datas) - 1) / 2) * w, s[f"{metric}_mean"], w,
                   yerr=s[f"{metric}_std"], color=_color(d, j), label=_label(d), capsize=2)
        ax.set_xticks(np.arange(len(mods)), mods)
        ax.set_xlabel("Modality the classifier reads")
        ax.set_ylabel(names.get(metric, metric))
        ax.set_ylim(0, 1)
        ax.set_title({"cancer_type": "Tumour type", "stage": "Stage"}.get(task, task))
    axes[0][-1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, title="Test data")
    fig.suptitle("Random forest trained on real data, tested on real or generated data", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def downstream_figure(frame: pd.DataFrame, path) -> Path:
    """Fig 3: per removal condition, stage macro F1 and survival C-index (mean ± std over runs)."""
    plt = _plt()
    tasks = [t for t in MAIN_METRIC if t in set(frame["task"])]
    fig, axes = plt.subplots(len(tasks), 1, figsize=(12, 3.6 * len(tasks)), squeeze=False)
    for ax, task in zip(axes[:, 0], tasks):
        metric = MAIN_METRIC[task]
        sub = frame[(frame.task == task) & (frame.metric == metric)]
        conds = [c for c in dict.fromkeys(sub["condition"]) if c != "full data"]
        present = list(dict.fromkeys(sub["test_type"]))
        kinds = [k for k in ("ablation", "multi", "coherent", "oracle_sample", "knn", "mean") if k in present]
        kinds += [k for k in present if k not in kinds and k != "full_data"]
        full = sub[sub.test_type == "full_data"]["value"]
        ax.axhspan(full.mean() - full.std(ddof=0), full.mean() + full.std(ddof=0), color="0.85")
        ax.axhline(full.mean(), color="0.3", ls="--", lw=1, label="Full data")
        w = 0.8 / len(kinds)
        for j, k in enumerate(kinds):
            g = sub[sub.test_type == k].groupby("condition")["value"]
            mean, std = g.mean().reindex(conds), g.std(ddof=0).reindex(conds)
            ax.errorbar(np.arange(len(conds)) + (j - (len(kinds) - 1) / 2) * w, mean, yerr=std, fmt="o", ms=4,
                        color=_color(k, j), label=_label(k), capsize=2)
        ax.set_xticks(np.arange(len(conds)), conds, rotation=35, ha="right", fontsize=8)
        ax.set_ylabel({"macro_f1": "Stage macro F1", "c_index": "Survival C-index"}[metric])
        ax.set_xlabel("Modalities removed from the test samples")
        ax.set_title({"stage": "Stage classification", "survival": "Survival"}[task])
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def acquisition_figure(curves: pd.DataFrame, path) -> Path:
    """Fig 4 / S5: metric vs fraction of patients with the modality observed (mean ± std over runs)."""
    plt = _plt()
    panels = list(dict.fromkeys(zip(curves["task"], curves["target"])))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.9), squeeze=False)
    for ax, (task, target) in zip(axes[0], panels):
        sub = curves[(curves.task == task) & (curves.target == target)]
        for j, m in enumerate(dict.fromkeys(sub["method"])):
            g = sub[sub.method == m].groupby("observed")["value"]
            mean, std = g.mean(), g.std(ddof=0).fillna(0)
            ax.plot(mean.index, mean.values, color=_color(m, j), label=_label(m) + (" (informed)" if m != "random" else ""),
                    lw=1.6, ls="--" if m == "random" else "-")
            ax.fill_between(mean.index, mean - std, mean + std, color=_color(m, j), alpha=0.1, linewidth=0)
        ax.set_xlabel(f"Fraction of patients with {target} observed")
        ax.set_ylabel({"stage": "Stage F1", "survival": "C-index"}.get(task, "score"))
        ax.set_title(f"{'Stage' if task == 'stage' else 'Survival'}: acquiring {target}")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return _save(fig, path)


def generated_vs_train_figure(train_emb: np.ndarray, gen_embs: Mapping[str, np.ndarray], path, *,
                              method: str = "PCA") -> Path:
    """Fig 5: unconditional samples over the train profiles in an embedding fitted on train."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(gen_embs), figsize=(4.4 * len(gen_embs), 4.2), sharex=True, sharey=True,
                             squeeze=False)
    for j, (ax, (name, e)) in enumerate(zip(axes[0], gen_embs.items())):
        ax.scatter(train_emb[:, 0], train_emb[:, 1], s=4, color="0.7", alpha=0.5, linewidths=0, label="Train (real)")
        ax.scatter(e[:, 0], e[:, 1], s=4, color=_color(name, j), alpha=0.6, linewidths=0, label="Generated")
        ax.set_title(_label(name), fontsize=11)
        ax.set_xlabel(f"{method} 1")
        ax.legend(fontsize=8, markerscale=3, loc="best")
    axes[0][0].set_ylabel(f"{method} 2")
    fig.suptitle(f"Unconditional generation vs train profiles ({method} fitted on complete train profiles)", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def dcr_figure(dcr: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]], path) -> Path:
    """Distance to the closest training record of generated rows vs held-out real rows.

    dcr: modality -> method -> {"generated": f[G], "holdout": f[H]}; one row of panels per modality.
    """
    plt = _plt()
    mods = list(dcr)
    methods = list(dict.fromkeys(m for d in dcr.values() for m in d))
    fig, axes = plt.subplots(len(mods), len(methods), figsize=(3.8 * len(methods), 2.6 * len(mods)), squeeze=False)
    for i, mod in enumerate(mods):
        for j, name in enumerate(methods):
            ax = axes[i][j]
            if name not in dcr[mod]:
                ax.axis("off")
                continue
            d = dcr[mod][name]
            both = np.concatenate([d["generated"], d["holdout"]])
            bins = np.linspace(both.min(), np.percentile(both, 99.5), 30)
            ax.hist(d["holdout"], bins=bins, density=True, alpha=0.5, color="0.4", label="Held-out real",
                    histtype="stepfilled")
            ax.hist(d["generated"], bins=bins, density=True, alpha=0.5, color=_color(name, j), label="Generated",
                    histtype="stepfilled")
            ax.axvline(np.percentile(d["holdout"], 5), color="black", ls=":", lw=1, label="Held-out 5th pct")
            if i == 0:
                ax.set_title(_label(name), fontsize=11)
            if i == len(mods) - 1:
                ax.set_xlabel("Distance to closest train record")
            if j == 0:
                ax.set_ylabel(f"{mod}\ndensity")
            if i == 0 and j == len(methods) - 1:
                ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.suptitle("Privacy: distance to the closest training record (unconditional samples)", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def pit_figure(check: Mapping, path) -> Path:
    """PIT / rank histograms of a calibration check (:func:`cgjax.calibration_check.check_model_set`):
    one panel per modality, the share of true values at each rank 0..R among their R replicates,
    for the checked sampler (and the compared one), with the flat line 1 / (R + 1) of a calibrated
    sampler."""
    plt = _plt()
    mods = list(check["modalities"])
    fig, axes = plt.subplots(1, len(mods), figsize=(2.6 * len(mods) + 0.6, 2.8), squeeze=False, sharey=True)
    for ax, m in zip(axes[0], mods):
        a = check["modalities"][m]
        runs = [(check["sampler"], a)] + ([(check["compare"], a["compare"])] if "compare" in a else [])
        for j, (name, r) in enumerate(runs):
            h = np.asarray(r["rank_histogram"], float)
            ax.step(np.arange(len(h)), h / h.sum(), where="mid", color=_color(name, j), label=name)
        ax.axhline(1 / len(h), color="black", lw=0.8, ls="--", label="calibrated (flat)")
        ax.set_title(f"{m}: " + " / ".join(r["verdict"] for _, r in runs), fontsize=9)
        ax.set_xlabel(f"rank of the truth (0..{a['replicates']})", fontsize=8)
    axes[0, 0].set_ylabel("share of true values")
    fig.suptitle("PIT / rank histograms on the validation split: flat (dashed) when calibrated", fontsize=9)
    axes[0, -1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return _save(fig, path)
