"""Combine two model sets of the same cohort, one trained with the Gaussian anchor and one without,
keeping per model the one with the lower validation score (``cgjax.ensemble.choose.choose_per_model``),
and write the result where ``calibration.py --anchor gaussian --models OUT`` reuses it.

  python experiments/anchor_choice.py --anchored A_DIR --plain J_DIR --out OUT [--laws two_wide issue11 ...]

A_DIR, J_DIR and OUT hold one checkpoint per cell as ``calibration.py --models`` writes them
(``<law>-n<size>-seed<seed>``). Prints which models kept their anchor.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cgjax import checkpoint
from cgjax.ensemble.choose import choose_per_model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--anchored", required=True)
    ap.add_argument("--plain", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--cells", nargs="*", default=None, help="cell folder names (default: every one in --anchored)")
    args = ap.parse_args(argv)
    cells = args.cells or sorted(p.name for p in Path(args.anchored).iterdir()
                                 if (p / checkpoint.META_FILE).exists())
    for cell in cells:
        run = checkpoint.load_run(Path(args.anchored) / cell)  # its training state: calibration.py sees it finished
        plain = checkpoint.load(Path(args.plain) / cell)
        run.model_set, chosen = choose_per_model(run.model_set, plain)
        checkpoint.save(Path(args.out) / cell, run.model_set, run)
        kept = sorted(n for n, a in chosen.items() if a == "gaussian")
        print(f"{cell}: anchor kept by {len(kept)} of {len(chosen)} models: {', '.join(kept) or '-'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
