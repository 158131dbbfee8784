"""The whole evaluation protocol on one cohort: every experiment of the paper, their tables, figures
and raw numbers, driven by ``cgjax evaluate`` and ``experiments/reproduce_paper.py``.

:func:`evaluate` takes a trained model set and a cohort; :func:`run_evaluation` takes prepared data
(:func:`prepare_data`) and any samplers (so tests can pass fakes). Where the paper and the reference
code disagree the paper's choice is the default and the reference's an option
(:meth:`EvalConfig.preset`: ``paper``, ``reference``, ``quick``); docs/evaluation.md lists them.
"""

from __future__ import annotations

import dataclasses
import json
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from cgjax import calibration_check as cal_check
from cgjax._atomic import atomic_file, check_replaceable, claim_output_dir
from cgjax.data import Scalers, align_features, fit_scalers, read_cohort, split_cohort
from cgjax.data.prepare import FEATURES_DIR
from cgjax.data.split import apply_split_record
from cgjax.datasets import default_law
from cgjax.datasets.synthetic import CANCER_TYPES, MODALITIES
from cgjax.embedding import EMBEDDING_DIR, META_FILE, load_embedding
from cgjax.errors import CgjaxError, CohortError
from cgjax.evaluate import counterfactual as cf_mod
from cgjax.evaluate import downstream as ds_mod
from cgjax.evaluate import figures, predictive, privacy, report
from cgjax.evaluate.feature_space import feature_space_study
from cgjax.evaluate.reconstruction import (BaselineSampler, ModelSampler, OracleSampler, reconstruction_anova,
                                           reconstruction_study)
from cgjax.sampling.coherent import RejectionConfig
from cgjax.sampling.options import SampleOptions, describe_solver
from cgjax.sampling.solvers import SolverConfig
from cgjax.scoring.stats import anova_rm_by

STEPS = ("reconstruction", "manifold", "predictive", "downstream", "counterfactual", "privacy")
NEEDS_FULL_SAMPLES = ("manifold", "predictive", "counterfactual")


@dataclasses.dataclass
class EvalConfig:
    """Every knob of the protocol. Defaults: the paper's version at the paper's scale."""

    replicates: int = 10  # generations per test row (reconstruction, predictive, counterfactual, privacy)
    runs: int = 10  # downstream and counterfactual runs (forests re-seeded, generations redrawn)
    seed: int = 0
    methods: tuple = ("single", "multi", "coherent")  # our samplers
    # classical imputers beside them: point predictors (knn, iterative, mean: R2 tables only) and
    # probabilistic baselines drawing R replicates (gaussian_sample, gaussian_type_sample, joint_gaussian_sample,
    # mixture_sample, mice_sample, knn_sample)
    baselines: tuple = ("knn", "iterative", "gaussian_sample", "joint_gaussian_sample", "mixture_sample", "mice_sample",
                        "knn_sample")
    baseline_rows: str = "complete_case"  # train rows the imputers are fitted on ("complete_case" | "all")
    baseline_sets: str = "all"  # given sets the imputers run on ("all" | "full")
    given_sets: str = "all"  # reconstruction condition sets ("all": every non-empty subset | "full")
    rf_trees: int = 500  # every random forest classifier (paper 500, reference 100)
    rsf: dict = dataclasses.field(default_factory=lambda: dict(n_estimators=100, max_depth=None, max_features="sqrt",
                                                               min_samples_split=6, min_samples_leaf=3))
    rsf_time_bin: float | None = None  # days; round survival times for RSF training (quick mode only)
    downstream_imputers: tuple = ("knn",)  # matrix completions beside the samplers ("knn", "mean")
    counterfactual_targets: tuple = ("rnaseq", "wsi")
    counterfactual_score: str = "prob_variance"  # paper; reference "disagreement"
    counterfactual_ablation: str = "nan"  # "nan" (notebook, matches training) | "zero" (reference script)
    counterfactual_metric: str = "weighted_f1"  # reference; or "macro_f1"
    counterfactual_seed: int = 42  # forests of run r use seed + r (reference 42 + r)
    n_random: int = 30  # random acquisition draws per run
    privacy_k: int = 10
    embedding: str = "umap"  # "umap" (paper figures) | "pca" (fast)
    weighting: str = "inverse_mse"  # coherent ensemble weights (paper); reference "softmax_inverse_mse"
    reject_fraction: float = 0.05  # coherent rejection (paper 0.05, reference 0.10)
    solver: str = "ddpm"  # "ddpm" (paper) | "ddim" | "dpm"
    solver_steps: int | None = None
    steps: tuple = STEPS
    n_jobs: int = -1
    blas_threads: int | None = 1  # small matrices: one BLAS thread avoids oversubscription (None: leave)

    @classmethod
    def preset(cls, name: str = "paper", **overrides) -> "EvalConfig":
        """``paper`` (defaults), ``reference`` (the authors' code: 100 trees, disagreement score,
        zero ablation, softmax weights, 10% rejection) or ``quick`` (2 CPU cores in minutes: 3
        replicates and runs, 30 trees, small survival forests on 30-day time bins, PCA figures
        only where UMAP is not needed, no mice_sample baseline)."""
        if name == "paper":
            base = {}
        elif name == "reference":
            base = dict(rf_trees=100, counterfactual_score="disagreement", counterfactual_ablation="zero",
                        weighting="softmax_inverse_mse", reject_fraction=0.10)
        elif name == "quick":
            base = dict(replicates=3, runs=3, rf_trees=30, n_random=10, rsf_time_bin=30.0,
                        # mice_sample and mixture_sample: slow (seconds per given set)
                        baselines=("knn", "iterative", "gaussian_sample", "knn_sample"),
                        rsf=dict(n_estimators=10, max_depth=6, max_features="sqrt", min_samples_split=10,
                                 min_samples_leaf=10))
        else:
            raise CgjaxError(f"unknown preset {name!r}; choose paper, reference or quick")
        return cls(**{**base, **overrides})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class EvalData:
    """Standardised train and (complete) test modality dicts, labels, and what was done to get them."""

    modalities: tuple
    dims: dict
    train: dict
    test: dict
    labels_train: dict
    labels_test: dict
    scalers: dict  # modality -> (mean f[D], std f[D])
    test_ids: np.ndarray
    notes: list


LABELS = ("cancer_type", "stage", "os_time", "os_event")


def prepare_data(cohort, scalers: Mapping, modalities: Sequence[str] | None = None, *, split_seed: int = 42,
                 split_record: Mapping | None | bool = False) -> EvalData:
    """Split, standardise with the models' scalers, keep the complete test rows. ``scalers``:
    modality -> (mean, std) or a :class:`cgjax.data.Scalers`.

    The split: with ``split_record`` a dict (a checkpoint's ``ModelSet.split``) or None (a checkpoint
    that records none), :func:`cgjax.data.split.apply_split_record`, i.e. the split the models were
    trained with; with False, the cohort's own ``split`` column if complete, else
    ``split_cohort(seed=split_seed)``."""
    notes = []
    modalities = tuple(modalities or cohort.modalities)
    missing = [m for m in modalities if m not in cohort.data]
    if missing:
        raise CohortError(f"{cohort.source}: lacks modalities {missing} the models were trained on")
    split = cohort.label("split")
    if split_record is not False:
        cohort, notes = apply_split_record(cohort, split_record)
    elif split is not None and pd.Series(split).notna().all() and set(split) <= {"train", "val", "test"}:
        notes.append("Split: the cohort's own `split` column (the split the models were trained with).")
    else:
        cohort = split_cohort(cohort, seed=split_seed, force=True)
        notes.append(f"Split: the cohort has no complete `split` column; re-split with `split_cohort(seed={split_seed})`, "
                     "the default `pipeline.train` uses. If the models were trained with another split, test rows "
                     "may have been seen in training.")
    sc = {m: tuple(np.asarray(a, np.float64) for a in scalers[m]) for m in modalities}
    train_c, test_c = cohort.split("train"), cohort.split("test")
    if test_c.n_samples == 0:
        raise CohortError(f"{cohort.source}: the test split is empty")
    refit = fit_scalers(train_c)
    drift = max(float(np.max(np.abs(refit[m][0] - sc[m][0]) / sc[m][1])) for m in modalities)
    if drift > 1e-3:
        notes.append(f"WARNING: the train split's feature means differ from the models' scalers by up to {drift:.3g} "
                     "std: the models were probably trained on another split or cohort.")

    def std(c):
        return {m: np.where(c.masks[m][:, None], (c.data[m] - sc[m][0]) / sc[m][1], np.nan).astype(np.float32)
                for m in modalities}

    complete = np.all([test_c.masks[m] for m in modalities], axis=0)
    if not complete.all():
        notes.append(f"Test set: {int((~complete).sum())} incomplete test samples left out.")
    test_c = test_c.subset(complete)
    if test_c.n_samples < 2:
        raise CohortError(f"{cohort.source}: fewer than 2 complete test samples")

    def labels(c):
        return {k: c.label(k) for k in LABELS if c.label(k) is not None}

    return EvalData(modalities, {m: cohort.data[m].shape[1] for m in modalities}, std(train_c), std(test_c),
                    labels(train_c), labels(test_c), sc, test_c.sample_ids, notes)


def detect_synthetic(cohort):
    """The :func:`cgjax.datasets.default_law` behind a synthetic cohort, or None: sample ids start
    with ``SYN-``, modalities are the law's, every modality has the same width (the law's ``dim``)
    and every cancer type is one of the law's."""
    ids = np.asarray(cohort.sample_ids).astype(str)
    dims = set(cohort.dims().values())
    if not len(ids) or not all(i.startswith("SYN-") for i in ids):
        return None
    if tuple(cohort.modalities) != MODALITIES or len(dims) != 1:
        return None
    types = cohort.label("cancer_type")
    if types is not None and not set(pd.Series(types).dropna().astype(str)) <= set(CANCER_TYPES):
        return None
    return default_law(dim=dims.pop())


def model_samplers(ms, cfg: EvalConfig) -> dict:
    return {m: ModelSampler(ms, SampleOptions(method=m, weighting=cfg.weighting,
                                              rejection=RejectionConfig(max_fraction=cfg.reject_fraction),
                                              solver=SolverConfig(kind=cfg.solver, steps=cfg.solver_steps)))
            for m in cfg.methods}


def evaluate(ms, cohort, out, cfg: EvalConfig | None = None, *, oracle: str = "auto", progress: bool = True,
             calibration: bool = False) -> dict:
    """Run the evaluation of model set ``ms`` on ``cohort``; write ``out``/report.md, metrics.json,
    CSVs and figures. oracle: "auto" (detect the synthetic cohort), "synthetic" (require it),
    "none". calibration: also run the calibration check on the validation split
    (:func:`run_calibration_check`), appended to report.md with its figure, written to
    calibration_check.json and returned under ``calibration_check``. Returns the metrics dict
    written to metrics.json (plus that key)."""
    cfg = cfg or EvalConfig()
    law = None
    if oracle in ("auto", "synthetic"):
        law = detect_synthetic(cohort)
        if law is None and oracle == "synthetic":
            dims = set(cohort.dims().values())
            if len(dims) != 1:
                raise CgjaxError("--oracle synthetic: the cohort's modalities have different widths; it is not "
                                 "drawn from the synthetic law")
            law = default_law(dim=dims.pop())
    elif oracle != "none":
        raise CgjaxError(f"oracle must be auto, synthetic or none, got {oracle!r}")
    cohort = align_features(cohort, ms.feature_names, where=f"models trained on {list(ms.modalities)}")
    data = prepare_data(cohort, Scalers.from_dict(ms.scalers), ms.modalities, split_record=ms.split)
    if law is not None:
        if tuple(law.modalities) != tuple(ms.modalities) or any(ms.dims[m] != law.dim for m in ms.modalities):
            raise CgjaxError("the synthetic law's modalities do not match the models'")
        data.notes.append("Oracle: the cohort is the synthetic cohort; its exact posterior (`default_law`) gives the "
                          "`oracle_mean` and `oracle_sample` rows.")
    fspace = _feature_space_inputs(cohort, data)
    n_models = sum(len(g.specs) for g in ms.groups.values())
    samplers = model_samplers(ms, cfg)
    solver = SolverConfig(cfg.solver, cfg.solver_steps)
    header = [f"Models: {n_models} (hidden {ms.arch.hidden}, {ms.arch.n_layers} layers, T = {ms.schedule_cfg.timesteps}, "
              f"{ms.train_cfg.epochs} epochs); sampler {describe_solver(solver)}."]
    identity = json.dumps([ms.val_metrics, ms.scalers], sort_keys=True, default=str)  # which trained models
    check = run_calibration_check(ms, cohort, cfg, samplers) if calibration else None  # before the long steps
    metrics = run_evaluation(data, samplers, out, cfg, law=law, progress=progress,
                             header=header, source=str(cohort.source), identity=identity,
                             feature_space=fspace)
    if check is not None:  # the directory is ours now (run_evaluation claimed it)
        out = Path(out)
        figures.pit_figure(check, out / CALIBRATION_FIGURE)
        with atomic_file(out / "calibration_check.json") as tmp:
            tmp.write_text(json.dumps(check, indent=1))
        text = (out / "report.md").read_text()  # appended, not in the header: no part of the resume key
        with atomic_file(out / "report.md") as tmp:
            tmp.write_text(text + "\n" + "\n".join(report.calibration_check_markdown(check, CALIBRATION_FIGURE)))
        metrics["calibration_check"] = check
    return metrics


CALIBRATION_FIGURE = "figures/calibration_pit.png"


def run_calibration_check(ms, cohort, cfg: EvalConfig, samplers: Mapping) -> dict:
    """:func:`cgjax.calibration_check.check_cohort` on the validation split, for the evaluation's
    sampler (of ``samplers``, :func:`model_samplers`: method ``coherent`` if evaluated, else its
    first; its solver, weighting and rejection; ``DEFAULT_REPLICATES`` replicates) against a second
    sampler (:func:`cgjax.calibration_check.default_compare`) and, for ``coherent``, of ``--method
    multi`` (``also_multi``)."""
    sampler = samplers.get("coherent") or next(iter(samplers.values()))
    options = dataclasses.replace(sampler.options, replicates=cal_check.DEFAULT_REPLICATES, seed=cfg.seed)
    return cal_check.check_cohort(ms, cohort, options, cal_check.default_compare(ms, options), also_multi=True)


def _feature_space_inputs(cohort, data: EvalData) -> dict | None:
    """For a cohort written by ``cgjax prepare`` with ``--write-features`` (an ``embedding/`` and a
    ``features/`` directory beside the latents): the embedding, the feature cohort and the train
    ids, for :func:`cgjax.evaluate.feature_space.feature_space_study`. None otherwise (with a note
    when the embedding is there but the features are not)."""

    root = Path(str(cohort.source))
    if not root.is_dir() or not (root / EMBEDDING_DIR / META_FILE).exists():
        return None
    if not (root / FEATURES_DIR).is_dir():
        data.notes.append("Feature space: the cohort was prepared without --write-features, so the decoded draws "
                          "cannot be scored against the real features.")
        return None
    split = pd.Series(cohort.label("split")).astype(str).to_numpy()
    return {"embedding": load_embedding(root / EMBEDDING_DIR), "features": read_cohort(root / FEATURES_DIR),
            "train_ids": np.asarray(cohort.sample_ids)[split == "train"]}


def _clean(obj):
    """JSON-safe: numpy scalars/arrays to Python, NaN to None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return None if not np.isfinite(v) else v
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _records(df: pd.DataFrame | None) -> list:
    return [] if df is None or df.empty else _clean(df.to_dict("records"))


def run_evaluation(data: EvalData, samplers: Mapping, out, cfg: EvalConfig | None = None, *, law=None,
                   progress: bool = True, header: Sequence[str] = (), source: str = "", identity: str = "",
                   feature_space: Mapping | None = None) -> dict:
    """Every step of ``cfg.steps`` on prepared data with the given samplers (name -> sampler; the
    names single/multi/coherent are ours). With ``law`` (the synthetic law) the oracle samplers are
    added. With ``feature_space`` ({"embedding", "features" (the feature cohort), "train_ids"}:
    a prepared cohort) the reconstruction is also decoded and scored in feature space
    (:mod:`cgjax.evaluate.feature_space`). Writes out/report.md, out/metrics.json, out/*.csv,
    out/figures/*.png.

    ``out`` must be absent, empty, or an earlier evaluation's directory (it holds
    ``cgjax_evaluation.json``). Each step's results are written as soon as it completes (the files
    above, and ``out/steps/<step>.pkl``), so a failure or a kill loses only the step in progress;
    run again with the same data, samplers, settings and ``identity`` (e.g. which trained models),
    completed steps are read back instead of recomputed."""
    cfg = cfg or EvalConfig()
    unknown = set(cfg.steps) - set(STEPS)
    if unknown:
        raise CgjaxError(f"unknown steps {sorted(unknown)}; choose from {STEPS}")
    notes = list(data.notes)
    cfg = check_optional_dependencies(cfg, notes, progress)  # before hours of work, not after
    key = _resume_key(data, samplers, cfg, law, [*header, identity], source)
    out, done = _open_output(Path(out), key)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    mods = list(data.modalities)
    seconds, figs, res = {}, {}, {}
    oracle_s = oracle_m = None
    if law is not None:
        oracle_s = OracleSampler(law, data.scalers, mode="sample", type_prior=law.type_prior(complete_only=True))
        oracle_m = OracleSampler(law, data.scalers, mode="mean", type_prior=law.type_prior(complete_only=True))
    gen = {k: v for k, v in samplers.items() if k in ("multi", "coherent")} or {
        k: v for k, v in samplers.items() if k != "single"}
    gen_plus = {**gen, **({"oracle_sample": oracle_s} if oracle_s else {})}
    cancer = data.labels_test.get("cancer_type")
    steps = [s for s in STEPS if s in cfg.steps]
    blas = threadpool_limits(cfg.blas_threads, user_api="blas") if cfg.blas_threads else nullcontext()
    t_all = time.time()
    with blas:
        bar = tqdm(total=len(steps), desc="evaluate", disable=not progress)
        full_samples = None
        for step in steps:
            bar.set_postfix_str(step)
            t0 = time.time()
            cached = _load_step(out, step) if step in done else None
            if cached is not None:  # completed by an earlier run of the same evaluation: skip it
                res.update(cached["res"])
                figs.update(cached["figs"])
                seconds[step] = cached["seconds"]
                full_samples = full_samples if cached["samples"] is None else cached["samples"]
                bar.update(1)
                continue
            figs_before, had_samples = set(figs), full_samples is not None
            if step == "reconstruction" or (full_samples is None and step in NEEDS_FULL_SAMPLES):
                only_full = step != "reconstruction" or cfg.given_sets == "full"
                recon_samplers = dict(samplers)
                if step == "reconstruction":
                    types = {"train_types": data.labels_train.get("cancer_type"),
                             "test_types": cancer} if "gaussian_type_sample" in cfg.baselines else {}
                    if types and (types["train_types"] is None or cancer is None):
                        raise CgjaxError("baseline gaussian_type_sample needs the cohort's cancer_type labels")
                    recon_samplers.update({b: BaselineSampler(data.train, b, rows=cfg.baseline_rows,
                                                              **(types if b == "gaussian_type_sample" else {}))
                                           for b in cfg.baselines})
                    if law is not None:
                        recon_samplers.update({"oracle_mean": oracle_m, "oracle_sample": oracle_s})
                else:
                    recon_samplers = gen_plus
                given_sets = {t: [tuple(m for m in mods if m != t)] for t in mods} if only_full else None
                rr = reconstruction_study(recon_samplers, data.test, modalities=mods, given_sets=given_sets,
                                          replicates=cfg.replicates, seed=cfg.seed, oracle=oracle_s,
                                          cancer_types=cancer, point_sets=cfg.baseline_sets, progress=progress)
                full_samples = rr.samples
                if step == "reconstruction":
                    res["reconstruction"] = rr
                    if feature_space is not None:

                        res["feature_space"] = feature_space_study(
                            rr.samples, data.scalers, feature_space["embedding"], feature_space["features"],
                            feature_space["train_ids"], data.test_ids, mods)
                    figs["reconstruction"] = figures.reconstruction_figure(rr.records, out / "figures" / "reconstruction.png")
                    figs["calibration"] = figures.calibration_figure(rr.records, out / "figures" / "calibration.png")
            if step == "manifold":
                names = [m for m in gen_plus if all(m in full_samples.get(t, {}) for t in mods)]
                figs["manifold"] = figures.reconstruction_manifold(
                    data.test, {t: full_samples[t] for t in mods}, names, cancer, out / "figures" / "manifold.png",
                    method=cfg.embedding)
            elif step == "predictive":
                generated = {t: {n: full_samples[t][n] for n in gen_plus if n in full_samples.get(t, {})} for t in mods}
                df = predictive.predictive_signal(generated, data.train, data.test, data.labels_train, data.labels_test,
                                                  n_estimators=cfg.rf_trees, seed=cfg.seed, n_jobs=cfg.n_jobs,
                                                  progress=progress)
                res["predictive"] = {"frame": df, "summary": predictive.predictive_summary(df),
                                     "tests": predictive.predictive_tests(df)}
                if not df.empty:
                    figs["predictive"] = figures.predictive_figure(res["predictive"]["summary"],
                                                                   out / "figures" / "predictive.png")
            elif step == "downstream":
                ds = ds_mod.downstream_study(gen_plus, data.train, data.test, data.labels_train, data.labels_test,
                                             modalities=mods, runs=cfg.runs, seed=cfg.seed,
                                             stage_rf=dict(n_estimators=cfg.rf_trees), rsf=cfg.rsf,
                                             time_bin=cfg.rsf_time_bin, matrix_imputers=cfg.downstream_imputers,
                                             n_jobs=cfg.n_jobs, progress=progress)
                res["downstream"] = ds
                if not ds.frame.empty:
                    figs["downstream"] = figures.downstream_figure(ds.frame, out / "figures" / "downstream.png")
            elif step == "counterfactual":
                targets = [t for t in cfg.counterfactual_targets if t in mods]
                cands = {t: {n: full_samples[t][n] for n in gen_plus if n in full_samples.get(t, {})} for t in targets}
                cf = cf_mod.counterfactual_study(cands, data.train, data.test, data.labels_train, data.labels_test,
                                                 modalities=mods, runs=cfg.runs, seed=cfg.counterfactual_seed,
                                                 score=cfg.counterfactual_score, ablation=cfg.counterfactual_ablation,
                                                 stage_metric=cfg.counterfactual_metric, n_random=cfg.n_random,
                                                 stage_rf=dict(n_estimators=cfg.rf_trees), rsf=cfg.rsf,
                                                 time_bin=cfg.rsf_time_bin, n_jobs=cfg.n_jobs, progress=progress)
                res["counterfactual"] = cf
                if not cf.curves.empty:
                    figs["counterfactual"] = figures.acquisition_figure(cf.curves, out / "figures" / "counterfactual.png")
            elif step == "privacy":
                pv = privacy.privacy_study(gen_plus, data.train, data.test, modalities=mods, replicates=cfg.replicates,
                                           k=cfg.privacy_k, seed=cfg.seed, progress=progress)
                res["privacy"] = pv
                complete_tr = np.all([~np.isnan(data.train[m]).all(axis=1) for m in mods], axis=0)
                train_full = np.concatenate([data.train[m][complete_tr] for m in mods], axis=1)
                gen_joint = {n: np.concatenate([pv.samples[n][m] for m in mods], axis=1) for n in pv.samples}
                for emb in ("pca", "umap") if cfg.embedding == "umap" else ("pca",):
                    base, embs = figures.embed(train_full, gen_joint, emb)
                    figs[f"privacy_{emb}"] = figures.generated_vs_train_figure(
                        base, embs, out / "figures" / f"privacy_{emb}.png", method=emb.upper())
                dcr_raw = {m: {n: privacy.dcr_per_sample(pv.samples[n][m], data.train[m], data.test[m])
                               for n in pv.samples} for m in mods}
                figs["dcr"] = figures.dcr_figure(dcr_raw, out / "figures" / "dcr.png")
            seconds[step] = round(time.time() - t0, 2)
            figs = {k: str(Path(v).relative_to(out)) if Path(v).is_absolute() else str(v) for k, v in figs.items()}
            # this step's results to disk now: a later failure or a kill loses nothing, a rerun skips it
            _save_step(out, step, {"res": {k: v for k, v in res.items() if k == step},
                                   "figs": {k: v for k, v in figs.items() if k not in figs_before},
                                   "seconds": seconds[step],
                                   "samples": full_samples if (full_samples is not None and not had_samples) else None})
            _write_all(out, res, cfg, data, notes, seconds, figs, source, samplers, header, report)
            done = _mark_done(out, key, done, step)  # last: a step marked done has all its files
            bar.update(1)
        bar.close()
    seconds["total"] = round(time.time() - t_all, 2)
    return _write_all(out, res, cfg, data, notes, seconds, figs, source, samplers, header, report)


def _write_all(out: Path, res, cfg, data, notes, seconds, figs, source, samplers, header, report) -> dict:
    """metrics.json, the CSVs and report.md of the steps done so far."""

    metrics = _write_outputs(out, res, cfg, data, notes, seconds, figs, source)
    mods = list(data.modalities)
    head = [f"Cohort: {f'`{source}`' if source else '(in memory)'}; {len(data.test_ids)} complete test samples, "
            f"{len(next(iter(data.train.values())))} train samples; modalities {mods}."] + list(header) + [
        f"Settings: {cfg.replicates} replicates, {cfg.runs} runs, {cfg.rf_trees} trees per forest, samplers "
        f"{list(samplers)}, weighting {cfg.weighting}, rejection {cfg.reject_fraction}, counterfactual score "
        f"{cfg.counterfactual_score}; ablation {cfg.counterfactual_ablation}; embedding {cfg.embedding}.",
        "Time per step (s): " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()) + ".", ""] + [
        f"- {n}" for n in notes]
    missing = [s for s in cfg.steps if s not in seconds]
    if missing:
        head.append(f"- Not done yet: {', '.join(missing)} (rerun the same command to complete them).")
    with atomic_file(out / "report.md") as tmp:
        tmp.write_text(report.full_report(res, figures=figs, header=head, embedding=cfg.embedding))
    return metrics


# ---- optional dependencies, and results written step by step ------------------------------------

MARKER = "cgjax_evaluation.json"
STEP_DIR = "steps"


def check_optional_dependencies(cfg: EvalConfig, notes: list, progress: bool = True) -> EvalConfig:
    """The UMAP figures need umap-learn (the ``eval`` extra). Without it, fall back to PCA, saying so
    (on stderr and in the report), rather than fail after every other experiment has run."""
    import sys

    if cfg.embedding != "umap" or not ({"manifold", "privacy"} & set(cfg.steps)):
        return cfg
    try:
        import umap  # noqa: F401
    except ImportError:
        msg = ("umap-learn is not installed (pip install 'cgjax[eval]'): the manifold and privacy figures use "
               "PCA instead of UMAP")
        notes.append(msg + ".")
        print(f"note: {msg}", file=sys.stderr)
        return dataclasses.replace(cfg, embedding="pca")
    return cfg


def _resume_key(data: EvalData, samplers: Mapping, cfg: EvalConfig, law, header, source) -> str:
    """Identifies an evaluation (data, samplers, settings): only results of the same key are reused."""
    import hashlib

    settings = {k: v for k, v in cfg.to_dict().items() if k not in ("steps", "n_jobs", "blas_threads")}
    ident = json.dumps([settings, sorted(samplers), law is not None, list(header), source,
                        [str(i) for i in data.test_ids]], default=str, sort_keys=True)
    return hashlib.sha256(ident.encode("utf-8")).hexdigest()


def _open_output(out: Path, key: str) -> tuple[Path, list]:
    """Claim ``out`` (absent, empty, or an earlier evaluation's) and return the steps an earlier run
    of the same evaluation completed there (their results are reused)."""

    out = check_replaceable(out, MARKER, "cgjax evaluation directory")
    done = []
    if (out / MARKER).exists():
        try:
            state = json.loads((out / MARKER).read_text())
        except json.JSONDecodeError:
            state = {}
        if state.get("key") == key:
            done = [s for s in state.get("completed", []) if (out / STEP_DIR / f"{s}.pkl").exists()]
    claim_output_dir(out, MARKER, "cgjax evaluation directory", {"key": key, "completed": done})
    return out, done


def _mark_done(out: Path, key: str, done: list, step: str) -> list:

    done = [*done, step]
    claim_output_dir(out, MARKER, "cgjax evaluation directory", {"key": key, "completed": done})
    return done


def _save_step(out: Path, step: str, payload: dict) -> None:
    import pickle


    with atomic_file(out / STEP_DIR / f"{step}.pkl") as tmp:
        tmp.write_bytes(pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))


def _load_step(out: Path, step: str) -> dict | None:
    """A completed step's results, written by this cgjax into a directory it claimed (never a
    user's file: :func:`_open_output` refuses directories it did not write)."""
    import pickle

    try:
        return pickle.loads((out / STEP_DIR / f"{step}.pkl").read_bytes())
    except Exception:  # unreadable (another cgjax version): recompute the step
        return None


def _write_outputs(out: Path, res: dict, cfg: EvalConfig, data: EvalData, notes, seconds, figs, source) -> dict:
    metrics: dict = {"config": cfg.to_dict(), "notes": notes, "seconds": seconds, "figures": figs, "cohort": source,
                     "n_test": int(len(data.test_ids))}
    rec = res.get("reconstruction")
    if rec is not None:
        pd.DataFrame([{k: ("+".join(v) if k == "given" else v) for k, v in r.items() if k != "r2_replicates"}
                      for r in rec.records]).to_csv(out / "reconstruction.csv", index=False)
        rec.replicates_frame().to_csv(out / "reconstruction_replicates.csv", index=False)
        rec.per_cancer.to_csv(out / "reconstruction_per_cancer.csv", index=False)
        rec.tests.to_csv(out / "reconstruction_tests.csv", index=False)
        metrics["reconstruction_anova"] = _write_anova(out / "reconstruction_anova.csv",
                                                       reconstruction_anova(rec.records))
        metrics["reconstruction"] = _clean(rec.records)
        metrics["reconstruction_per_cancer"] = _records(rec.per_cancer)
        metrics["reconstruction_tests"] = _records(rec.tests)
    fs = res.get("feature_space")
    if fs is not None:
        fs["summary"].to_csv(out / "feature_space.csv", index=False)
        fs["per_feature"].to_csv(out / "feature_space_per_feature.csv", index=False)
        metrics["feature_space"] = _records(fs["summary"])
    pred = res.get("predictive")
    if pred is not None:
        pred["frame"].to_csv(out / "predictive.csv", index=False)
        pred["tests"].to_csv(out / "predictive_tests.csv", index=False)
        metrics["predictive"] = _records(pred["summary"])
        metrics["predictive_tests"] = _records(pred["tests"])
        metrics["predictive_anova"] = _write_anova(out / "predictive_anova.csv", _predictive_anova(pred["frame"]))
    ds = res.get("downstream")
    if ds is not None:
        ds.frame.to_csv(out / "downstream.csv", index=False)
        ds.summary.to_csv(out / "downstream_summary.csv", index=False)
        ds.tests.to_csv(out / "downstream_tests.csv", index=False)
        metrics["downstream"] = _records(ds.summary)
        metrics["downstream_tests"] = _records(ds.tests)
        metrics["downstream_anova"] = _write_anova(out / "downstream_anova.csv", _downstream_anova(ds.frame))
    cf = res.get("counterfactual")
    if cf is not None:
        cf.curves.to_csv(out / "counterfactual_curves.csv", index=False)
        cf.auc.to_csv(out / "counterfactual_auc.csv", index=False)
        cf.tests.to_csv(out / "counterfactual_tests.csv", index=False)
        if not cf.auc.empty:
            g = cf.auc.groupby(["task", "target", "method"], sort=False)["auc"]
            metrics["counterfactual"] = _records(g.mean().to_frame("auc_mean").join(
                g.std(ddof=0).to_frame("auc_std")).reset_index())
        else:
            metrics["counterfactual"] = []
        metrics["counterfactual_tests"] = _records(cf.tests)
    pv = res.get("privacy")
    if pv is not None:
        pv.frame.to_csv(out / "privacy.csv", index=False)
        pv.dcr.to_csv(out / "privacy_dcr.csv", index=False)
        metrics["privacy"] = _records(pv.table)
        metrics["privacy_dcr"] = _records(pv.dcr)

    with atomic_file(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=1))
    return metrics


# ---- the reference's repeated-measures ANOVAs (docs/reference.md 5.9) -----------------------------------

def _write_anova(path: Path, table: pd.DataFrame) -> list:
    table.to_csv(path, index=False)
    return _records(table)


def _predictive_anova(frame: pd.DataFrame) -> pd.DataFrame:
    """Per task and metric: subject = replicate, within = modality x data (real and each method)."""
    if frame.empty:
        return pd.DataFrame()
    long = frame.melt(id_vars=["task", "modality", "data", "replicate"], value_vars=["macro_f1", "balanced_accuracy"],
                      var_name="metric")
    return anova_rm_by(long, "value", "replicate", ["modality", "data"], ["task", "metric"])


def _downstream_anova(frame: pd.DataFrame) -> pd.DataFrame:
    """Per task and metric: subject = run, within = condition x test type, without the full-data
    and cancer-label-only rows (as the reference)."""
    if frame.empty:
        return pd.DataFrame()
    sub = frame[~frame["condition"].isin(["full data", "Cancer label only"])]
    return anova_rm_by(sub, "value", "run", ["condition", "test_type"], ["task", "metric"])
