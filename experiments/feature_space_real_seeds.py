"""Combine several runs of experiments/feature_space_real.py (same dataset and split, other --seed).

Per target: the feature-space R2 of the replicate mean of ``multi`` and ``coherent`` (mean and
range over the runs), ridge, train mean and the embedding's ceiling; and the R2 of the seed
ensemble, the average of the runs' replicate means (the mean of all their draws), with a bootstrap
interval over test patients and the paired interval of its difference to the better baseline.

Also the means over runs of: the R2 the mean of unlimited replicates would reach, the latent-space
dispersion ratio (1 calibrated, < 1 draws too close to each other for their error), the latent R2
of the replicate mean, and a ridge in the same latent space (latent and decoded R2).

Usage:
  python experiments/feature_space_real_seeds.py runs/fs_paad_s0 runs/fs_paad_s1 runs/fs_paad_s2 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from cgjax.evaluate.feature_space import bootstrap_pooled_r2
from cgjax.scoring import metrics

SAMPLERS = ("multi", "coherent")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="output directories of feature_space_real.py")
    ap.add_argument("--json", help="write the table here")
    ap.add_argument("--n-boot", type=int, default=1000)
    args = ap.parse_args(argv)
    res = [json.loads((Path(r) / "results.json").read_text()) for r in args.runs]
    preds = [np.load(Path(r) / "predictions.npz") for r in args.runs]
    if len({r["dataset"] for r in res}) != 1:
        raise SystemExit("runs: not all of one dataset")
    rows = pd.DataFrame([dict(row, run=i) for i, r in enumerate(res) for row in r["rows"]])
    out = []
    for t in sorted(rows.target.unique()):
        z = preds[0][f"{t}|truth"]
        if any(not np.allclose(p[f"{t}|truth"], z) for p in preds):
            raise SystemExit(f"runs: the test truth of '{t}' differs between runs (another split or preprocessing)")
        r2 = lambda k, col="r2_of_mean": rows[(rows.target == t) & (rows.method == k)][col]
        base = {k: float(r2(k).mean()) for k in ("ridge", "train mean", "ceiling")}
        best = "ridge" if base["ridge"] >= base["train mean"] else "train mean"
        ens = {k: np.mean([p[f"{t}|{k}"] for p in preds], axis=0) for k in SAMPLERS}
        boot = bootstrap_pooled_r2(z, {**ens, best: preds[0][f"{t}|{best}"]}, pairs=[(k, best) for k in SAMPLERS],
                                   n_boot=args.n_boot)
        for k in SAMPLERS:
            v = r2(k)
            out.append({"target": t, "sampler": k, "r2_mean_over_runs": float(v.mean()), "r2_min": float(v.min()),
                        "r2_max": float(v.max()), "runs_at_or_above_best": int((v >= base[best]).sum()),
                        "r2_seed_ensemble": float(metrics.r2_pooled(z, ens[k])),
                        "ens5": boot[k][0], "ens95": boot[k][1], "best_baseline": best,
                        "best_baseline_r2": base[best], "diff5": boot[f"{k} - {best}"][0],
                        "diff95": boot[f"{k} - {best}"][1], **{f"{b}_r2": v_ for b, v_ in base.items()},
                        "r2_unlimited_replicates": float(r2(k, "r2_of_mean_unlimited").mean()),
                        "dispersion_ratio": float(r2(k, "dispersion_ratio").mean()),
                        "r2_latent_of_mean": float(r2(k, "r2_latent_of_mean").mean()),
                        "latent_ridge_r2_latent": float(r2("latent ridge", "r2_latent_of_mean").mean()),
                        "latent_ridge_r2": float(r2("latent ridge").mean()),
                        "n_test": int(z.shape[0]), "n_runs": len(res)})
    df = pd.DataFrame(out)
    pd.set_option("display.width", 250)
    print(f"{res[0]['dataset']}: {len(res)} runs (seeds), {df.n_test.iloc[0]} test patients")
    print(df.drop(columns=["n_test", "n_runs"]).round(3).to_string(index=False))
    if args.json:
        Path(args.json).write_text(json.dumps(df.to_dict("records"), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
