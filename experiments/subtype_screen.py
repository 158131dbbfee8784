"""Where do subtypes pay? The mixture anchor's screen on every pattern of a zoo law (issue 11).

The mixture anchor (``arch.anchor = "mixture"``, the ``quick`` preset's since session 13) keeps a
pattern's Gaussian law unless a mixture of ``anchor.SCREEN_COMPONENTS`` regressions gated by the
conditions lowers the pattern's cross-validated energy score by ``anchor.SUBTYPE_MIN_GAIN`` or more
(``cgjax.diffusion.anchor._subtype_law``). For each law and every pattern a multi-condition model of
each target has (a target, a non-empty set of the other modalities given), this prints the
cross-validated energy score of every number of components in ``anchor.COMPONENTS`` relative to one
component (``anchor.mixture_cv``, the rows that have the target and the given set, the gate on every
row that has the set), what the one-standard-error rule alone would keep (the mixture anchor before
session 13) and whether the screen passes. Then one summary line per law.

It fits on the law's whole cohort (seed 0), not on the training split that ``cgjax train`` fits on,
and with one seed for every pattern, so a pattern near the threshold may fall the other way in a
real fit; ``cgjax train`` prints the components each model kept.

Usage:
  python experiments/subtype_screen.py --laws issue11 7 tcga_default --sizes 3000
  python experiments/subtype_screen.py --laws tcga_default --sizes 10000   # the quickstart's cohort
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np

from cgjax.datasets import zoo
from cgjax.diffusion import anchor


def screen_law(name, n: int, seed: int = 1) -> list[dict]:
    """One record per pattern: target, given, rows, the relative score of each candidate (%), the
    one-SE rule's choice, the screen's gain (%) and whether it passes."""
    member = zoo.law(int(name) if str(name).isdigit() else name, n)
    c = member.cohort(0)
    out = []
    for t in c.modalities:
        others = [m for m in c.modalities if m != t]
        for r in range(1, len(others) + 1):
            for given in itertools.combinations(others, r):
                has = np.all([c.masks[m] for m in given], axis=0)
                rows = has & c.masks[t]
                x = np.concatenate([c.data[m] for m in given], axis=1)
                t0 = time.perf_counter()
                scored = anchor.mixture_cv(x[rows], c.data[t][rows], x_gate=x[has], seed=seed)
                if scored is None:  # too few rows to choose: one component
                    continue
                cand, scores, _ = scored
                mean = scores.mean(axis=1)
                gain = 100 * (1 - mean[cand.index(anchor.SCREEN_COMPONENTS)] / mean[0])
                out.append({"law": member.name, "n": n, "target": t, "given": "+".join(given), "rows": int(rows.sum()),
                            "relative_pct": np.round(100 * (mean / mean[0] - 1), 2).tolist(),
                            "one_se_choice": cand[anchor.choose_components(scores)], "gain_pct": round(gain, 2),
                            "passes": gain >= 100 * anchor.SUBTYPE_MIN_GAIN,
                            "seconds": round(time.perf_counter() - t0, 1)})
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--laws", nargs="+", default=["issue11", "tcga_default"], help="zoo names or int seeds")
    p.add_argument("--sizes", nargs="+", type=int, default=[3000], help="cohort sizes")
    p.add_argument("--verbose", action="store_true", help="print every pattern, not only the summary")
    args = p.parse_args(argv)
    print(f"candidates {anchor.COMPONENTS}; screen: {anchor.SCREEN_COMPONENTS} components, "
          f"passes at a gain >= {100 * anchor.SUBTYPE_MIN_GAIN:g}%")
    print("| law | n | patterns | passing the screen | largest gain (%) | one-SE rule keeps > 1 | seconds |")
    print("|---|---|---|---|---|---|---|")
    for name, n in itertools.product(args.laws, args.sizes):
        recs = screen_law(name, n)
        if args.verbose:
            for r in recs:
                print(r)
        if not recs:
            print(f"| {name} | {n} | 0 | - | - | - | - |")
            continue
        print(f"| {recs[0]['law']} | {n} | {len(recs)} | {sum(r['passes'] for r in recs)} | "
              f"{max(r['gain_pct'] for r in recs):+.1f} | {sum(r['one_se_choice'] > 1 for r in recs)} | "
              f"{sum(r['seconds'] for r in recs):.0f} |", flush=True)


if __name__ == "__main__":
    main()
