"""Choose, per model, how much of the network's residual an anchored model set keeps
(``cgjax.ensemble.choose.choose_residual_gain``: gains 0, 0.5, 1 by validation score), and write the
result where ``calibration.py --models OUT`` reuses it.

  python experiments/residual_gain.py --models A_DIR --out OUT [--cells issue11-n3000-seed0 ...]

A_DIR holds one checkpoint per cell, trained with ``--anchor gaussian``, as ``calibration.py
--models`` writes them (``<law>-n<size>-seed<seed>``); the cell's cohort is rebuilt from its name
(the zoo law, size and seed) and split as in training (checked against the checkpoint's split).
Prints each model's gain.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from cgjax import checkpoint, pipeline
from cgjax.datasets import zoo
from cgjax.ensemble.choose import RESIDUAL_GAINS, choose_residual_gain


def cell_cohort(cell: str, ms=None):
    """The cohort of a ``calibration.py --models`` cell (``<law>-n<size>-seed<seed>``), checked
    against the split recorded in ``ms`` when given."""
    law, size, seed = re.fullmatch(r"(.+)-n(\d+)-seed(\d+)", cell).groups()
    member = zoo.law(int(law[6:]) if re.fullmatch(r"random\d+", law) else law, n_samples=int(size))
    cohort = member.cohort(seed=int(seed))
    if ms is not None and ms.split is not None and pipeline.split_and_scale(cohort, record=True)[3] != ms.split:
        raise SystemExit(f"{cell}: the rebuilt split differs from the checkpoint's")
    return cohort


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--cells", nargs="*", default=None, help="cell folder names (default: every one in --models)")
    ap.add_argument("--gains", type=float, nargs="+", default=list(RESIDUAL_GAINS))
    args = ap.parse_args(argv)
    cells = args.cells or sorted(p.name for p in Path(args.models).iterdir() if (p / checkpoint.META_FILE).exists())
    for cell in cells:
        run = checkpoint.load_run(Path(args.models) / cell)  # its training state: calibration.py sees it finished
        ms = run.model_set
        _, val, _ = pipeline.split_and_scale(cell_cohort(cell, ms))
        chosen = choose_residual_gain(ms, val.data, val.masks, args.gains)
        checkpoint.save(Path(args.out) / cell, ms, run)
        print(f"{cell}: " + ", ".join(f"{n} {g:g}" for n, g in chosen.items()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
