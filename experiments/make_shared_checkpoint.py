"""Write ``checkpoints/synthetic_default``: the models of a quickstart run, without the training
state, plus golden imputations that tests/test_shared_checkpoint.py compares today's code against.

    python experiments/make_shared_checkpoint.py --from checkpoints/quickstart

The golden file holds the imputations of the first rows of the quickstart's test split
(``synthetic_tcga(n_samples=10000, seed=0)``, split seed 42) for each method, seed 0, one replicate.
"""

import argparse
import shutil
from pathlib import Path

import numpy as np

from cgjax import checkpoint, pipeline
from cgjax.data import split_cohort
from cgjax.datasets import synthetic_tcga
from cgjax.ensemble import sample_target
from cgjax.sampling.options import SampleOptions

GOLDEN_ROWS = 64


def golden(ms) -> dict[str, np.ndarray]:
    test = split_cohort(synthetic_tcga(n_samples=10000, seed=0)).split("test").subset(np.arange(GOLDEN_ROWS))
    given = pipeline.scaled_inputs(ms, test)
    out = {}
    for method in ("coherent", "multi", "single"):
        res = sample_target(ms, "rnaseq", {m: given[m] for m in ("cna", "rppa", "wsi")}, SampleOptions(method=method))
        out[method] = res.x[0]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--from", dest="src", default="checkpoints/quickstart")
    ap.add_argument("--out", default="checkpoints/synthetic_default")
    args = ap.parse_args()
    ms = checkpoint.load(args.src)
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    checkpoint.save(out, ms)  # models only: no optimiser state
    np.savez(out / "golden_impute.npz", **golden(checkpoint.load(out)))
    print(f"wrote {out} ({sum(f.stat().st_size for f in out.rglob('*') if f.is_file()) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
