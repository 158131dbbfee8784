"""Feature-space R2 of cgjax's replicate mean on real cohorts (miniACC, TCGA-PAAD), beside ridge and train mean.

Issue 14: on real data, is the feature-space R2 of the replicate mean at least the better of ridge
and the train mean, and if not, why. The path is the one a user takes:

1. ``cgjax.data.prepare`` (as ``cgjax prepare``): split (val/test from complete samples),
   preprocessing fitted on train, per-modality embedding with the default
   ``--embedding-choice best`` (an autoencoder, replaced by PCA of the same size when PCA
   reconstructs the validation rows better); the cohort is written with its features;
2. ``cgjax.pipeline.train`` (as ``cgjax train``): every single- and multi-condition model;
3. the reconstruction of each modality of the complete test patients from all the others,
   ``multi`` and ``coherent`` sampling, decoded and scored by
   :func:`cgjax.evaluate.feature_space.feature_space_study` (what ``cgjax evaluate`` reports in
   feature_space.csv): pooled R2 of the replicate mean, features standardised by their train mean
   and std, beside ridge (features -> features), the train mean and the embedding's ceiling
   decode(encode(x)); plus bootstrap intervals over test patients (paired differences to the
   better baseline) and the R2 the mean of infinitely many replicates would reach.

Datasets:
  miniacc  shipped with cgjax (RNA-seq, GISTIC CNA, RPPA, miRNA; 92 patients)
  paad     Wissel et al. 2023 TCGA-PAAD tables (81 patients): --data-dir holding gex/cnv/meth/rppa
           .csv[.xz] tables, samples x features (first column patient_id), read by
           ``cgjax.data.prepare.read_matrices`` as they are (the same as ``cgjax prepare matrices``)

Usage:
  python experiments/feature_space_real.py --dataset miniacc --out runs/fs_miniacc
  python experiments/feature_space_real.py --dataset paad --data-dir PAAD_DIR --out runs/fs_paad
  ... --quick   (a smoke run)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from cgjax import pipeline
from cgjax.data import Scalers, read_cohort
from cgjax.data.prepare import PrepareOptions, prepare, read_matrices, summary, write_prepared
from cgjax.data.preprocess import PreprocessOptions
from cgjax.datasets import mini_acc, mini_acc_preprocess_options
from cgjax.diffusion.denoiser import ArchConfig
from cgjax.diffusion.schedule import ScheduleConfig
from cgjax.diffusion.train import TrainConfig
from cgjax.embedding import EmbeddingOptions, load_embedding
from cgjax.ensemble import sample_target
from cgjax.evaluate.feature_space import bootstrap_pooled_r2, feature_space_study, r2_of_mean_unlimited
from cgjax.evaluate.run import prepare_data
from cgjax.sampling.options import SampleOptions
from cgjax.scoring import metrics

ARCH = dict(hidden=128, n_layers=3, time_dim=32, cond_embed_dim=16)
FULL = dict(epochs=1000, eval_every=250, timesteps=200, replicates=10, ae_max_epochs=2000)
QUICK = dict(epochs=40, eval_every=20, timesteps=50, replicates=3, ae_max_epochs=40)
MODALITIES = {"miniacc": ("rnaseq", "cna", "rppa", "mirna"), "paad": ("gex", "cnv", "meth", "rppa")}
SAMPLERS = ("multi", "coherent")


def load(dataset: str, data_dir: str | None, modalities):
    """(RawCohort with the chosen modalities, PreprocessOptions)."""
    if dataset == "miniacc":
        raw = mini_acc(modalities=tuple(modalities))
        return raw, mini_acc_preprocess_options()
    if data_dir is None:
        raise SystemExit("--data-dir: required for --dataset paad (the directory of gex/cnv/meth/rppa tables)")
    raw = read_matrices(data_dir)
    missing = [m for m in modalities if m not in raw.modalities]
    if missing:
        raise SystemExit(f"--data-dir {data_dir}: no table for {missing} (found {sorted(raw.modalities)})")
    raw = dataclasses.replace(raw, modalities={m: raw.modalities[m] for m in modalities},
                              original_ids={m: raw.original_ids[m] for m in modalities})
    return raw, PreprocessOptions(transforms={})  # values as they are (log expression, -2..2 calls, betas, RPPA)


def latent_ridge(train: dict, test: dict, target: str, given: list) -> np.ndarray:
    """RidgeCV from the given modalities' standardised latents to the target's, complete train rows."""
    from sklearn.linear_model import RidgeCV

    ok = np.all([np.isfinite(train[m]).all(axis=1) for m in [target] + given], axis=0)
    g_tr = np.concatenate([train[m][ok] for m in given], axis=1)
    model = RidgeCV(alphas=np.logspace(-2, 5, 8)).fit(g_tr, train[target][ok])
    return model.predict(np.concatenate([test[m] for m in given], axis=1)).astype(np.float32)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=sorted(MODALITIES), required=True)
    ap.add_argument("--data-dir", help="directory of the dataset's tables (paad)")
    ap.add_argument("--modalities", help="comma-separated (default: miniacc rnaseq,cna,rppa,mirna; "
                                         "paad gex,cnv,meth,rppa)")
    ap.add_argument("--out", required=True, help="working directory (cohort, models, results.json)")
    ap.add_argument("--latent-dim", type=int, default=8)
    ap.add_argument("--replicates", type=int)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=0, help="embedding, training and sampling seed")
    ap.add_argument("--split-seed", type=int, default=42, help="train/val/test split (default 42, the paper's)")
    args = ap.parse_args(argv)
    cfg = dict(QUICK if args.quick else FULL)
    if args.replicates:
        cfg["replicates"] = args.replicates
    if args.epochs:
        cfg["epochs"] = args.epochs
    mods = args.modalities.split(",") if args.modalities else MODALITIES[args.dataset]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    # 1. prepare, as `cgjax prepare ... --standardize-inputs --write-features` (embedding choice: best)
    raw, pre = load(args.dataset, args.data_dir, mods)
    emb_opt = EmbeddingOptions(latent_dim=args.latent_dim, standardize=True, batch_size=16, patience=20,
                               max_epochs=cfg["ae_max_epochs"], epochs_per_call=50, seed=args.seed)
    prepared = prepare(raw, PrepareOptions(preprocess=pre, embedding=emb_opt, embedding_choice="best",
                                           split_seed=args.split_seed))
    write_prepared(prepared, out / "cohort", overwrite=True, write_features=True)
    print(summary(prepared), flush=True)
    t_prep = time.time() - t0
    emb = load_embedding(out / "cohort" / "embedding")
    fc = read_cohort(out / "cohort" / "features")
    choice = {m: {k: emb[m].info.get(k) for k in ("configured_method", "chosen_method", "reconstruction_r2_val")}
              for m in mods}

    # 2. train, as `cgjax train`
    cohort = read_cohort(out / "cohort")
    train_cfg = TrainConfig(epochs=cfg["epochs"], eval_every=cfg["eval_every"], batch_size=32, steps_per_call=20,
                            learning_rate=1e-3, lr_schedule="cosine", cond_dropout=0.2, val_replicates=5,
                            seed=args.seed)
    ms = pipeline.train(cohort, out / "models", arch=ArchConfig(**ARCH),
                        schedule_cfg=ScheduleConfig(timesteps=cfg["timesteps"]), train_cfg=train_cfg,
                        resume=False, progress=False)
    t_train = time.time() - t0 - t_prep
    print(f"trained {sum(len(g.specs) for g in ms.groups.values())} diffusion models in {t_train:.0f} s", flush=True)

    # 3. reconstruction of each modality from the others, scored in feature space (as `cgjax evaluate`)
    data = prepare_data(cohort, Scalers.from_dict(ms.scalers), ms.modalities, split_record=ms.split)
    split = np.asarray(pd.Series(cohort.label("split")).astype(str))
    train_ids = np.asarray(cohort.sample_ids)[split == "train"]
    samples, latent, latent_cal = {}, {}, {}
    for i, t in enumerate(ms.modalities):
        given = {m: data.test[m] for m in ms.modalities if m != t}
        samples[t] = {}
        for method in SAMPLERS:
            res = sample_target(ms, t, given, SampleOptions(method=method, replicates=cfg["replicates"],
                                                           seed=args.seed + 100 * i))
            samples[t][method] = res.x
            latent[(t, method)] = float(metrics.r2_pooled(data.test[t], res.x.mean(axis=0)))
            # calibration in the latent space: a calibrated sampler has 1 - R2(draw) = 2 (1 - R2(mean of all))
            lat_inf = r2_of_mean_unlimited(data.test[t], res.x)
            lat_draw = float(np.mean(metrics.r2_pooled(data.test[t], res.x)))
            latent_cal[(t, method)] = {"r2_latent_draw": lat_draw, "r2_latent_of_mean_unlimited": lat_inf,
                                       "dispersion_ratio": (1 - lat_draw) / (1 - lat_inf) / 2}
        # diagnostic: a linear map in the same latent space, decoded the same way (sampler vs embedding)
        samples[t]["latent ridge"] = latent_ridge(data.train, data.test, t, list(given))[None]
        latent[(t, "latent ridge")] = float(metrics.r2_pooled(data.test[t], samples[t]["latent ridge"][0]))
    fs = feature_space_study(samples, data.scalers, emb, fc, train_ids, data.test_ids, ms.modalities,
                             keep_predictions=True)
    summ = fs["summary"]
    rows, saved = [], {}
    for t, p in fs["predictions"].items():
        z = p["truth"]
        point = {k: v.mean(axis=0) for k, v in p.items() if k != "truth"}
        saved.update({f"{t}|{k}": v for k, v in point.items()}, **{f"{t}|truth": z})
        r2 = {k: float(metrics.r2_pooled(z, v)) for k, v in point.items()}
        best = "ridge" if r2["ridge"] >= r2["train mean"] else "train mean"
        boot = bootstrap_pooled_r2(z, point, pairs=[(s, best) for s in SAMPLERS], n_boot=args.n_boot, seed=args.seed)
        for k in point:
            row = {"target": t, "method": k, "r2_of_mean": r2[k], "boot5": boot[k][0], "boot95": boot[k][1],
                   "n_test": int(z.shape[0]), "n_features": int(z.shape[1])}
            if (t, k) in latent:
                row["r2_latent_of_mean"] = latent[(t, k)]
            if k in SAMPLERS:
                row.update(r2_draw=float(summ[(summ.target == t) & (summ.method == k)].r2_draw.iloc[0]),
                           r2_of_mean_unlimited=r2_of_mean_unlimited(z, p[k]),
                           vs=best, diff5=boot[f"{k} - {best}"][0], diff95=boot[f"{k} - {best}"][1],
                           **latent_cal[(t, k)])
            rows.append(row)
    df = pd.DataFrame(rows)
    res = {"dataset": args.dataset, "modalities": list(mods), "seed": args.seed, "split_seed": args.split_seed,
           "config": cfg, "latent_dim": args.latent_dim,
           "embedding_choice": choice, "n_train": {m: int(emb[m].info.get("n_train", -1)) for m in mods},
           "n_val": int(cohort.split("val").n_samples), "n_test": int(len(data.test_ids)),
           "seconds": {"prepare": t_prep, "train": t_train, "total": time.time() - t0},
           "rows": df.replace({np.nan: None}).to_dict("records"), "notes": data.notes}
    np.savez_compressed(out / "predictions.npz", **saved)  # standardised feature space, for seed ensembles
    (out / "results.json").write_text(json.dumps(res, indent=1, default=float))
    pd.set_option("display.width", 200)
    print(f"\n{args.dataset}: {res['n_test']} complete test patients, {res['n_val']} val; "
          f"{cfg['replicates']} replicates; embedding choice {json.dumps(choice)}")
    print(df.round(3).to_string(index=False))
    print(f"\ntotal {time.time() - t0:.0f} s; results in {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
