"""Markdown reports of evaluation records."""

from __future__ import annotations

import pandas as pd

METHOD_ORDER = ("single", "multi", "coherent", "knn", "iterative", "oracle_mean", "oracle_sample")


def _fmt(rec: dict | None, key="r2_mean", std="r2_std") -> str:
    if rec is None:
        return "—"
    s = f"{rec[key]:.3f}"
    if std in rec and rec.get(std):
        s += f" ± {rec[std]:.3f}"
    if "variance_pct" in rec and key == "r2_mean":
        s += f" ({rec['variance_pct']:.1f}%)"
    return s


def reconstruction_markdown(records: list[dict]) -> str:
    """One table per given-set size: rows target (given), columns methods; 'R2 ± std (variance %)'."""
    df = pd.DataFrame(records)
    methods = [m for m in METHOD_ORDER if m in set(df["method"])] + sorted(set(df["method"]) - set(METHOD_ORDER))
    lines = ["| target | given | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for (t, g), sub in df.groupby([df["target"], df["given"].map(lambda g: "+".join(g))], sort=False):
        by = {r["method"]: r for r in sub.to_dict("records")}
        lines.append(f"| {t} | {g} | " + " | ".join(_fmt(by.get(m)) for m in methods) + " |")
    return "\n".join(lines)


def energy_markdown(records: list[dict]) -> str:
    df = pd.DataFrame([r for r in records if "energy_score" in r])
    if df.empty:
        return ""
    methods = [m for m in METHOD_ORDER if m in set(df["method"])]
    lines = ["| target | given | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for (t, g), sub in df.groupby([df["target"], df["given"].map(lambda g: "+".join(g))], sort=False):
        by = {r["method"]: r for r in sub.to_dict("records")}
        lines.append(f"| {t} | {g} | " + " | ".join(
            f"{by[m]['energy_score']:.3f} / {by[m].get('coverage90', float('nan')):.2f}" if m in by else "—"
            for m in methods) + " |")
    return "\n".join(lines)


def quick_report(records: list[dict], ms, *, seconds: dict, n_test: int, replicates: int) -> str:
    n_models = sum(len(g.specs) for g in ms.groups.values())
    return "\n".join([
        "# cgjax quickstart",
        "",
        f"Synthetic TCGA-like cohort (exact oracle). {n_models} models "
        f"(hidden {ms.arch.hidden}, {ms.arch.n_layers} layers, T = {ms.schedule_cfg.timesteps}, "
        f"{ms.train_cfg.epochs} epochs) trained in {seconds['train']:.0f} s; total {seconds['total']:.0f} s.",
        f"Test set: {n_test} complete samples, each target generated from the other modalities, "
        f"{replicates} replicates.",
        "",
        "## Reconstruction R2 (pooled, standardised scale): mean ± std over replicates (output variance % of real)",
        "",
        "`oracle_sample` is what a perfectly calibrated sampler scores (exact posterior draws); "
        "`oracle_mean` is the best any point prediction can do. A good sampler matches `oracle_sample`, "
        "not `oracle_mean`.",
        "",
        reconstruction_markdown(records),
        "",
        "## Calibration: energy score (lower is better) / coverage of the 90% interval",
        "",
        energy_markdown(records),
        "",
    ])
