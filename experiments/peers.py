"""Peers: the imputers a user would pick instead of cgjax, on the synthetic cohort (exact oracle).

One table per run: for each target (generated from every other modality) and method, R2 of the
point / replicate-mean prediction, the energy score where the method draws (R replicates), wall
time and the peak of Python-level allocations (tracemalloc: numpy and pandas buffers, not
LightGBM's or JAX's native memory). Same cohort and split as the quickstart
(``synthetic_tcga(n_samples=10000, seed=0)``, split seed 42), our models from the shipped
checkpoint, every baseline fitted on the train split (complete-case rows).

Methods:
  ours: ``coherent``, ``multi`` (checkpoints/synthetic_default);
  in cgjax: ``gaussian_sample``, ``mice_sample`` (sklearn IterativeImputer posterior draws),
    ``knn_sample``, and the point predictors ``knn``, ``iterative``;
  optional peers (skipped with a message when not installed):
    ``miceforest`` (pip install miceforest: LightGBM chained equations with mean matching; R
    imputed datasets, 2 iterations; *transductive*: fitted on the train rows plus the test rows
    with the target missing, the way miceforest is used),
    HyperImpute and MOFA+ are not run here: hyperimpute pins torch and a stack of its own (too
    heavy for the project's CI and its Python; install it in a separate environment), and MOFA+
    (mofapy2) is a factor model whose imputation needs the target's views at training time.
  oracle: ``oracle_sample``, ``oracle_mean`` (the exact posterior).

  python experiments/peers.py [--targets rnaseq,wsi] [--rows 400] [--replicates 5]
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cgjax import checkpoint  # noqa: E402
from cgjax.data import Scalers  # noqa: E402
from cgjax.datasets import default_law, synthetic_tcga  # noqa: E402
from cgjax.evaluate.reconstruction import (BaselineSampler, ModelSampler, OracleSampler, as_samples,  # noqa: E402
                                           score_samples)
from cgjax.evaluate.run import prepare_data  # noqa: E402


class MiceForestSampler:
    """miceforest's ImputationKernel as a sampler (transductive: train rows + the test rows)."""

    def __init__(self, train, iterations: int = 2):
        import miceforest  # noqa: F401  (fails early when not installed)

        self.train, self.iterations = train, iterations

    def __call__(self, target, given, *, replicates=1, seed=0, unconditional=False):
        import miceforest as mf

        names = [m for m in self.train if m in given and m != target]
        keep = np.all([~np.isnan(self.train[m]).all(axis=1) for m in names + [target]], axis=0)
        cols = [f"{m}_{j}" for m in names + [target] for j in range(self.train[m].shape[1])]
        tr = np.concatenate([self.train[m][keep] for m in names + [target]], axis=1)
        n = len(given[names[0]])
        te = np.concatenate([given[m] for m in names] + [np.full((n, self.train[target].shape[1]), np.nan)], axis=1)
        df = pd.DataFrame(np.concatenate([tr, te]), columns=cols)
        tcols = [c for c in cols if c.startswith(f"{target}_")]
        kernel = mf.ImputationKernel(df, num_datasets=replicates, variable_schema=tcols, random_state=seed)
        kernel.mice(self.iterations)
        return np.stack([kernel.complete_data(dataset=r)[tcols].to_numpy(np.float32)[len(tr):]
                         for r in range(replicates)])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", default="rnaseq")
    ap.add_argument("--rows", type=int, default=400, help="test rows used (the first N complete ones)")
    ap.add_argument("--replicates", type=int, default=5)
    ap.add_argument("--checkpoint", default=str(Path(__file__).resolve().parents[1] / "checkpoints" / "synthetic_default"))
    args = ap.parse_args(argv)
    ms = checkpoint.load(args.checkpoint)
    data = prepare_data(synthetic_tcga(n_samples=10000, seed=0), Scalers.from_dict(ms.scalers), ms.modalities)
    test = {m: v[: args.rows] for m, v in data.test.items()}
    law = default_law(dim=ms.dims[ms.modalities[0]])
    prior = law.type_prior(complete_only=True)
    samplers = {"coherent": ModelSampler(ms, "coherent"), "multi": ModelSampler(ms, "multi"),
                **{k: BaselineSampler(data.train, k) for k in ("gaussian_sample", "mice_sample", "knn_sample",
                                                                "knn", "iterative")},
                "oracle_sample": OracleSampler(law, data.scalers, type_prior=prior),
                "oracle_mean": OracleSampler(law, data.scalers, mode="mean", type_prior=prior)}
    try:
        samplers["miceforest"] = MiceForestSampler(data.train)
    except ImportError:
        print("miceforest is not installed: skipped (pip install miceforest)", file=sys.stderr)
    rows = []
    with threadpool_limits(1, user_api="blas"):
        for t in args.targets.split(","):
            given = {m: test[m] for m in ms.modalities if m != t}
            for name, s in samplers.items():
                tracemalloc.start()
                t0 = time.perf_counter()
                x, _ = as_samples(s(t, given, replicates=args.replicates, seed=0))
                wall = time.perf_counter() - t0
                peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
                tracemalloc.stop()
                rec = score_samples(x, test[t])
                rows.append({"target": t, "method": name, "r2_of_mean": rec["r2_of_mean"],
                             "energy_score": rec.get("energy_score"), "coverage_range": rec.get("coverage_range"),
                             "wall_s": wall, "peak_python_MiB": peak})
    df = pd.DataFrame(rows)
    print(f"{args.rows} complete test rows, {args.replicates} replicates; energy score only for methods that draw")
    print("| " + " | ".join(df.columns) + " |\n|" + "---|" * len(df.columns))
    for r in df.itertuples(index=False):
        print("| " + " | ".join("—" if v is None or (isinstance(v, float) and np.isnan(v)) else
                                f"{v:.3f}" if isinstance(v, float) else str(v) for v in r) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
