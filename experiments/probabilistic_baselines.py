"""Our samplers against the probabilistic baselines on the synthetic cohort (exact oracle).

Energy score, 90% coverage and R2 of the replicate mean for each target generated from the other
three modalities, on the quickstart's cohort (``synthetic_tcga(n_samples=10000, seed=0)``, split
seed 42) with the shipped checkpoint (``checkpoints/synthetic_default``), beside the probabilistic
baselines of :mod:`cgjax.evaluate.probabilistic` fitted on the train split, the point predictors
(R2 only) and the oracle. Prints one markdown table and the ratio of coherent's energy score to
each probabilistic baseline's (< 1: coherent better).

  python experiments/probabilistic_baselines.py [--replicates 10] [--rows 600] [--no-mice]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cgjax import checkpoint  # noqa: E402
from cgjax.data import Scalers  # noqa: E402
from cgjax.datasets import default_law, synthetic_tcga  # noqa: E402
from cgjax.evaluate.reconstruction import (BaselineSampler, ModelSampler, OracleSampler,  # noqa: E402
                                           reconstruction_study)
from cgjax.evaluate.run import prepare_data  # noqa: E402
from cgjax.sampling.options import SampleOptions  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--replicates", type=int, default=10)
    ap.add_argument("--rows", type=int, default=600, help="test rows used (the first N complete ones)")
    ap.add_argument("--no-mice", action="store_true", help="leave out mice_sample (the slowest baseline)")
    ap.add_argument("--checkpoint", default=str(Path(__file__).resolve().parents[1] / "checkpoints" / "synthetic_default"))
    args = ap.parse_args(argv)
    ms = checkpoint.load(args.checkpoint)
    cohort = synthetic_tcga(n_samples=10000, seed=0)
    data = prepare_data(cohort, Scalers.from_dict(ms.scalers), ms.modalities)
    test = {m: v[: args.rows] for m, v in data.test.items()}
    law = default_law(dim=ms.dims[ms.modalities[0]])
    prior = law.type_prior(complete_only=True)
    o_s = OracleSampler(law, data.scalers, type_prior=prior)
    samplers = {"coherent": ModelSampler(ms, SampleOptions(method="coherent")),
                "multi": ModelSampler(ms, SampleOptions(method="multi")),
                "gaussian_sample": BaselineSampler(data.train, "gaussian_sample"),
                "knn_sample": BaselineSampler(data.train, "knn_sample"),
                "knn": BaselineSampler(data.train, "knn"), "iterative": BaselineSampler(data.train, "iterative"),
                "oracle_sample": o_s, "oracle_mean": OracleSampler(law, data.scalers, mode="mean", type_prior=prior)}
    if not args.no_mice:
        samplers["mice_sample"] = BaselineSampler(data.train, "mice_sample")
    full = {t: [tuple(m for m in ms.modalities if m != t)] for t in ms.modalities}
    with threadpool_limits(1, user_api="blas"):
        res = reconstruction_study(samplers, test, given_sets=full, replicates=args.replicates, seed=0, oracle=o_s)
    print(f"{len(next(iter(test.values())))} complete test rows, {args.replicates} replicates, every other "
          "modality given. Energy score (lower is better) / coverage_range for methods that draw; R2 of the "
          "(replicate) mean for all.\n")
    print("| target | method | energy score | coverage_range | R2 of mean |\n|---|---|---|---|---|")
    by = {}
    for r in res.records:
        by[(r["target"], r["method"])] = r
        es = f"{r['energy_score']:.3f}" if "energy_score" in r else "—"
        cv = f"{r['coverage_range']:.2f}" if "coverage_range" in r else "—"
        print(f"| {r['target']} | {r['method']} | {es} | {cv} | {r['r2_of_mean']:.3f} |")
    probs = [m for m in ("gaussian_sample", "mice_sample", "knn_sample") if m in samplers]
    print("\nEnergy score of coherent / of each probabilistic baseline (< 1: coherent better):\n")
    print("| target | " + " | ".join(probs) + " |\n|---|" + "---|" * len(probs))
    for t in ms.modalities:
        print(f"| {t} | " + " | ".join(f"{by[(t, 'coherent')]['energy_score'] / by[(t, b)]['energy_score']:.3f}"
                                       for b in probs) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
