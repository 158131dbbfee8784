"""``cgjax info CKPT``: what a shared checkpoint holds, read from its metadata alone (no weights loaded)."""

from __future__ import annotations

import argparse
import json

import pandas as pd


def describe_checkpoint(meta: dict, *, max_features: int = 4) -> str:
    """A plain-text summary of checkpoint metadata (:func:`cgjax.checkpoint.read_meta`): version,
    modalities and features, configuration, training progress, validation metrics per model and
    the coherent ensemble's weights."""
    lines = [f"cgjax checkpoint (format {meta['format_version']}, written by cgjax {meta.get('cgjax_version', '?')})",
             "", "modalities:"]
    for m in meta["modalities"]:
        names = meta["feature_names"][m]
        shown = ", ".join(map(str, names[:max_features])) + (", ..." if len(names) > max_features else "")
        lines.append(f"  {m}: {meta['dims'][m]} features ({shown})")
    lines += ["", "configuration:"]
    for section in ("arch", "schedule", "train"):
        lines.append(f"  {section}: " + ", ".join(f"{k}={v}" for k, v in meta[section].items()))
    preset = meta.get("preset")
    if preset:
        over = preset.get("overridden_by") or []
        lines.append(f"  preset: {preset['name']}" + (f" (overridden by {', '.join(over)})" if over else ""))
    split = meta.get("split")
    lines.append("  split: " + (", ".join(f"{k}={v}" for k, v in split.items()) if split
                                else "not recorded (the cohort's own split column, or cgjax's default split "
                                     "of the cohort with seed 42)"))
    n_models = sum(len(g["models"]) for g in meta["groups"].values())
    training = meta.get("training")
    lines.append(f"  models: {n_models} in {len(meta['groups'])} stacked group(s); "
                 + (f"trained to epoch {training['epoch']} (resumable)" if training else "selected weights only"))
    lines += ["", "validation metrics (the samples of each model on the validation split):"]
    table = pd.DataFrame(meta["val_metrics"]).T
    lines += ["  " + row for row in table.to_string(float_format=lambda v: f"{v:.4g}").splitlines()]
    lines += ["", "coherent ensemble weights (target: weight of each single model):"]
    for t, w in meta["coherent_weights"].items():
        lines.append(f"  {t}: " + ", ".join(f"{s}={v:.3f}" for s, v in w.items()))
    return "\n".join(lines)


def cmd_info(args) -> int:
    from cgjax.checkpoint import read_meta

    meta = read_meta(args.checkpoint)
    if args.json:
        keep = {k: v for k, v in meta.items() if k not in ("scalers",)}
        print(json.dumps(keep, indent=1))
    else:
        print(describe_checkpoint(meta))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="what a checkpoint holds: modalities, features, configuration, metrics",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint directory (written by 'cgjax train' or Imputer.save)")
    p.add_argument("--json", action="store_true", help="print the metadata as JSON (without the scalers)")
    p.set_defaults(func=cmd_info)
