"""Combine two model sets of the same cohort, one trained with the Gaussian anchor and one without,
keeping per model the one with the lower validation score (``cgjax.ensemble.choose.choose_per_model``),
and write the result where ``calibration.py --anchor gaussian --models OUT`` reuses it.

  python experiments/anchor_choice.py --anchored A_DIR --plain J_DIR --out OUT [--cells ...] [--paired]

``--paired`` re-scores both sets on the validation rows with one noise key before choosing, as
``cgjax train --anchor auto`` does (the cell's cohort is rebuilt from its name); without it the
scores stored at training are compared (how K2 in experiments/RESULTS.md was made).

A_DIR, J_DIR and OUT hold one checkpoint per cell as ``calibration.py --models`` writes them
(``<law>-n<size>-seed<seed>``). Prints which models kept their anchor.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cgjax import checkpoint, pipeline
from cgjax.ensemble.choose import choose_per_model
from residual_gain import cell_cohort  # a sibling script: the cohort of a --models cell


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--anchored", required=True)
    ap.add_argument("--plain", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--cells", nargs="*", default=None, help="cell folder names (default: every one in --anchored)")
    ap.add_argument("--paired", action="store_true", help="re-score both sets on the validation rows first")
    args = ap.parse_args(argv)
    cells = args.cells or sorted(p.name for p in Path(args.anchored).iterdir()
                                 if (p / checkpoint.META_FILE).exists())
    for cell in cells:
        run = checkpoint.load_run(Path(args.anchored) / cell)  # its training state: calibration.py sees it finished
        plain = checkpoint.load(Path(args.plain) / cell)
        val = pipeline.split_and_scale(cell_cohort(cell, run.model_set))[1] if args.paired else None
        run.model_set, chosen = choose_per_model(run.model_set, plain, *((val.data, val.masks) if val else ()))
        checkpoint.save(Path(args.out) / cell, run.model_set, run)
        kept = sorted(n for n, a in chosen.items() if a == "gaussian")
        print(f"{cell}: anchor kept by {len(kept)} of {len(chosen)} models: {', '.join(kept) or '-'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
