"""Peers: cgjax against the imputers a user would pick instead, every method on the same split.

Datasets (``--dataset``):
  ``zoo:<law>``  a law of :mod:`cgjax.datasets.zoo` (e.g. ``zoo:issue11``, ``zoo:tcga_default``), with
                 its exact posterior: the table adds R2 against the exact posterior mean and the
                 energy score's excess over exact posterior draws (``oracle_sample``, same R);
  ``miniacc``    the miniACC cohort shipped with cgjax (rnaseq, cna, mirna, rppa; RPPA exists for 46 of
                 92 patients, so test rows are drawn from those with the other three and condition
                 on RPPA where they have it);
  ``paad``       the TCGA-PAAD tables of Wissel et al. 2023 (gex, cnv, meth, rppa; the binary
                 mutation table is left out), read from ``--data-dir DIR`` holding
                 ``gex.csv[.xz]``, ``cnv...``, ``meth...``, ``rppa...`` (rows ``patient_id``).

One recipe for every dataset and method (:func:`prepare`): a seeded split that puts
``--test-fraction`` (0.3) of the patients that have every modality in the test set (at most
``--max-test`` rows) and every other patient, incomplete ones included, in the training set; per
modality a fixed transform (log2(1 + x) for miniACC's RNA and miRNA counts), the ``--features``
highest-variance features chosen on the training rows only, and a z-score with training means and
standard deviations. The target modality is hidden on the test rows and predicted from the others;
all scores are in that standardised space.

Methods (each in its own subprocess, so that wall time and peak memory are its own):
  cgjax: ``coherent`` and ``multi``, one model set trained through ``cgjax.pipeline.train`` on the
    training rows (quick preset's network, ``--epochs``; batch 256, or 32 on the small real
    cohorts), sampled with the quick preset's DDIM(eta = 1) over every timestep; the fit is shared,
    so both rows' wall time is fit + own sampling;
  cgjax's classical baselines (:mod:`cgjax.evaluate.probabilistic`, fitted on the complete training
    rows): ``gaussian_sample``, ``mice_sample``, ``knn_sample`` (draw), ``knn``, ``iterative`` (point);
  HyperImpute (``hyperimpute.plugins.imputers.Imputers().get``, defaults unless said):
    ``hi_mice`` (IterativeImputer with posterior draws, max_iter 10 instead of 100: one fit per
    replicate, seed + r), ``hi_gain``, ``hi_miwae``, ``hi_sinkhorn`` (stochastic fits: one refit per
    replicate, random_state seed + r), ``hi_missforest`` (max_iter 10 instead of 100) and
    ``hi_softimpute`` (one fit each: point predictions);
  ``mofa`` (mofapy2, MOFA+ with 10 factors; draws from its Gaussian predictive distribution
    N(Z W^T, predictive variance), independently per entry);
  ``miceforest`` (LightGBM chained equations with mean matching, R datasets, 2 iterations).
  HyperImpute, MOFA+ and miceforest are *transductive*: fitted on the training rows plus the test
  rows with the target hidden (the way they are used); cgjax and its baselines never see test rows
  during fitting.
  Methods that draw get R = ``--replicates`` replicates and an energy score; a point predictor's
  "energy score" would only be its mean distance to the truth, so it gets R2 only. A method that
  draws by refitting stops drawing when another refit would pass 50% of ``--time-limit``
  (column ``R`` says how many it made; with one it is scored as a point prediction); a method
  still running at ``--time-limit`` is killed and listed as timed out.

Wall time: the worker's own clock from data loaded to predictions made (imports excluded, JIT
compilation included). Memory: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of the worker, the peak
resident set of the whole process (Python, numpy, torch, LightGBM and XLA memory alike):
``peak_rss_MiB`` includes the imports (torch alone is several hundred MiB), ``rss_growth_MiB`` is
its rise after imports and data loading.

Environment: HyperImpute brings its own stack (torch with CUDA wheels, tensorflow via miracle,
catboost, xgboost, optuna, jupyter, loguru==0.6.0; about 10 GB), far too heavy for cgjax's CI, so
the peers run in a separate virtual environment with cgjax installed into it; the pins resolve
together with cgjax's (extra ``peers``, which adds ``lightgbm<4.6``: miceforest 6.0.5 fails with
LightGBM 4.7), see docs/evaluation.md, "Peers":

    python3.11 -m venv peers_venv && peers_venv/bin/pip install -e ".[peers]"
    peers_venv/bin/python experiments/peers.py --dataset zoo:issue11 --out experiments/figures/peers_issue11.csv
    peers_venv/bin/python experiments/peers.py --dataset paad --data-dir DIR
    python experiments/peers.py --combine experiments/figures/peers_*.csv   # one table + verdicts

A peer that is not installed is listed as skipped, so the script also runs in cgjax's own
environment (cgjax's methods and baselines only).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CGJAX_METHODS = ("coherent", "multi")
BASELINES = ("gaussian_sample", "mice_sample", "knn_sample", "knn", "iterative")
HYPERIMPUTE = {"hi_mice": "mice", "hi_missforest": "missforest", "hi_gain": "gain", "hi_miwae": "miwae",
               "hi_sinkhorn": "sinkhorn", "hi_softimpute": "softimpute"}
HI_POINT = ("hi_missforest", "hi_softimpute")  # deterministic given the data: one fit, no draws
OTHER_PEERS = ("mofa", "miceforest")
JOBS = ("cgjax",) + BASELINES + tuple(HYPERIMPUTE) + OTHER_PEERS  # one subprocess each
PAAD_MODALITIES = ("gex", "cnv", "meth", "rppa")
DEFAULT_TARGETS = {"miniacc": "rnaseq", "paad": "gex", "zoo:tcga_default": "rnaseq"}


# ---- data -----------------------------------------------------------------------------------------

@dataclass
class Task:
    """One dataset, standardised and split: modality -> f32[N, D] with NaN rows where absent."""

    name: str
    modalities: tuple[str, ...]
    train: dict[str, np.ndarray]
    test: dict[str, np.ndarray]          # complete rows
    real: bool = True                    # small real cohort (smaller training batch)
    oracle: dict = field(default_factory=dict)  # zoo: target -> (exact mean f[N, D], exact draws f[R, N, D])


def split_rows(present: np.ndarray, test_fraction: float, seed: int, max_test: int | None = None):
    """(train_idx, test_idx): ``test_fraction`` of the complete rows of ``present`` bool[N, M] (at
    least 1, at most ``max_test``), drawn with ``seed``, for the test set; every other row trains."""
    complete = np.flatnonzero(present.all(axis=1))
    if len(complete) < 2:
        raise ValueError(f"need at least 2 patients with every modality to split, got {len(complete)}")
    n_test = min(max(1, int(round(test_fraction * len(complete)))), len(complete) - 1)
    if max_test is not None:
        n_test = min(n_test, int(max_test))
    test = np.sort(np.random.default_rng(seed).permutation(complete)[:n_test])
    return np.setdiff1d(np.arange(len(present)), test), test


def top_variance(x_train: np.ndarray, k: int) -> np.ndarray:
    """int[min(k, D)]: the columns of ``x_train`` (NaN rows ignored) with the largest variance, in
    their original order; ties broken by position."""
    rows = x_train[~np.isnan(x_train).all(axis=1)]
    if len(rows) < 2:
        raise ValueError(f"need at least 2 training rows to rank features, got {len(rows)}")
    var = np.nanvar(rows, axis=0)
    order = np.lexsort((np.arange(len(var)), -var))
    return np.sort(order[:k])


def standardise(x: np.ndarray, train_idx: np.ndarray) -> np.ndarray:
    """``x`` z-scored with the means and standard deviations of its training rows (a constant
    feature gets std 1)."""
    mu = np.nanmean(x[train_idx], axis=0)
    sd = np.nanstd(x[train_idx], axis=0)
    return ((x - mu) / np.where(sd > 0, sd, 1.0)).astype(np.float32)


def prepare(frames: dict[str, pd.DataFrame], transforms: dict[str, str], *, features: int, test_fraction: float,
            seed: int, max_test: int | None, name: str, core: tuple[str, ...] | None = None) -> Task:
    """The recipe of the module docstring on samples x features tables indexed by patient id; the
    test rows are drawn from the patients that have every ``core`` modality (default: all)."""
    ids = sorted(set().union(*(df.index for df in frames.values())))
    raw = {m: df.reindex(ids).to_numpy(np.float64) for m, df in frames.items()}
    for m, x in raw.items():
        if transforms.get(m, "none") == "log2p1":
            raw[m] = np.log2(1.0 + np.clip(x, 0, None))
    present = np.stack([~np.isnan(x).all(axis=1) for m, x in raw.items() if core is None or m in core], axis=1)
    train_idx, test_idx = split_rows(present, test_fraction, seed, max_test)
    train, test = {}, {}
    for m, x in raw.items():
        x = x[:, top_variance(x[train_idx], features)]
        z = standardise(x, train_idx)
        train[m], test[m] = z[train_idx], z[test_idx]
    return Task(name, tuple(frames), train, test, real=True)


def read_table(data_dir: Path, stem: str) -> pd.DataFrame:
    for suffix in (".csv.xz", ".csv.gz", ".csv"):
        f = data_dir / (stem + suffix)
        if f.is_file():
            return pd.read_csv(f, index_col=0)
    raise FileNotFoundError(f"--data-dir {data_dir}: no {stem}.csv[.xz|.gz]")


def load_task(dataset: str, args) -> Task:
    kw = dict(features=args.features, test_fraction=args.test_fraction, seed=args.seed, max_test=args.max_test)
    if dataset == "miniacc":
        from cgjax.datasets import mini_acc

        raw = mini_acc(("rnaseq", "cna", "mirna", "rppa"))
        return prepare(dict(raw.modalities), {"rnaseq": "log2p1", "mirna": "log2p1"}, name="miniacc",
                       core=("rnaseq", "cna", "mirna"), **kw)
    if dataset == "paad":
        if not args.data_dir:
            raise SystemExit("--dataset paad needs --data-dir DIR (the Wissel 2023 PAAD tables)")
        frames = {m: read_table(Path(args.data_dir), m) for m in PAAD_MODALITIES}
        return prepare(frames, {}, name="paad", **kw)
    if dataset.startswith("zoo:"):
        return zoo_task(dataset[4:], args)
    raise SystemExit(f"--dataset must be zoo:<law>, miniacc or paad, got {dataset!r}")


def zoo_task(name: str, args) -> Task:
    """A zoo cohort split as above (no transform or feature selection) with the exact posterior of
    each target on the test rows, in the standardised space."""
    from cgjax.datasets import zoo

    member = zoo.law(name, n_samples=args.n_samples)
    cohort = member.cohort(seed=args.seed)
    mods = tuple(member.modalities)
    native = {m: np.asarray(cohort.data[m], np.float64) for m in mods}
    present = np.stack([np.asarray(cohort.masks[m], bool) for m in mods], axis=1)
    train_idx, test_idx = split_rows(present, args.test_fraction, args.seed, args.max_test)
    task = Task(f"zoo:{name}", mods, {}, {}, real=False)
    scale = {}
    for m in mods:
        x = np.where(present[:, [mods.index(m)]], native[m], np.nan)
        mu, sd = np.nanmean(x[train_idx], axis=0), np.nanstd(x[train_idx], axis=0)
        scale[m] = (mu, sd)
        z = ((x - mu) / sd).astype(np.float32)
        task.train[m], task.test[m] = z[train_idx], z[test_idx]
    for t in targets_of(task, args):
        given = {m: native[m][test_idx] for m in mods if m != t}
        post = member.conditional(t, given)  # test rows are complete: the all-present pattern's prior
        mu, sd = scale[t]
        mean = (post.mean() - mu) / sd
        draws = (post.sample(np.random.default_rng(args.seed + 1), args.replicates) - mu) / sd
        task.oracle[t] = (mean.astype(np.float32), draws.astype(np.float32))
    return task


def targets_of(task: Task, args) -> list[str]:
    names = args.targets.split(",") if args.targets else [DEFAULT_TARGETS.get(task.name, task.modalities[0])]
    bad = [t for t in names if t not in task.modalities]
    if bad:
        raise SystemExit(f"--targets: {bad[0]!r} is not a modality of {task.name} ({list(task.modalities)})")
    return names


# ---- workers (one subprocess per job) --------------------------------------------------------------

def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _fit_frame(job: dict) -> tuple[pd.DataFrame, list[str], int]:
    """(train rows + test rows with the target hidden as one DataFrame, target columns, n_train)."""
    mods, t = job["modalities"], job["target"]
    n_test = len(job["test"][mods[0]])
    blocks = [np.concatenate([job["train"][m], job["test"][m] if m != t else np.full_like(job["test"][m], np.nan)])
              for m in mods]
    cols = [f"{m}__{j}" for m in mods for j in range(job["train"][m].shape[1])]
    df = pd.DataFrame(np.concatenate(blocks, axis=1).astype(np.float64), columns=cols)
    return df, [c for c in cols if c.startswith(f"{t}__")], len(df) - n_test


def _draw_until(budget_s: float, replicates: int, draw) -> np.ndarray:
    """Stack ``draw(r)`` for r = 0.. while another draw fits in ``budget_s`` (at least one; with one,
    the method is scored as a point prediction)."""
    out, t0 = [], time.perf_counter()
    for r in range(replicates):
        t1 = time.perf_counter()
        out.append(draw(r))
        used, last = time.perf_counter() - t0, time.perf_counter() - t1
        if used + last > budget_s:
            break
    return np.stack(out)


def run_cgjax(job: dict) -> dict:
    import dataclasses

    from cgjax import pipeline
    from cgjax.complete import impute_complete
    from cgjax.data import from_arrays
    from cgjax.diffusion.configs import build_configs
    from cgjax.presets import QUICK_ARCH, QUICK_SCHEDULE, QUICK_SOLVER_ARGS, QUICK_TRAIN
    from cgjax.sampling.options import SampleOptions
    from cgjax.sampling.solvers import SolverConfig

    mods, t, seed = job["modalities"], job["target"], job["seed"]
    t0 = time.perf_counter()
    train = job["train"]
    n = len(train[mods[0]])
    cohort = from_arrays([f"tr{i}" for i in range(n)], train,
                         feature_names={m: [f"{m}__{j}" for j in range(train[m].shape[1])] for m in mods})
    complete = np.flatnonzero(cohort.complete())
    val = np.random.default_rng(seed).permutation(complete)[:max(2, int(round(0.1 * len(complete))))]
    split = np.full(n, "train", dtype=object)
    split[val] = "val"
    clinical = cohort.clinical.copy()
    clinical["split"] = split
    cohort = dataclasses.replace(cohort, clinical=clinical)
    epochs = job["epochs"]
    arch, sched, tcfg = build_configs({}, epochs, None, {"arch": QUICK_ARCH, "schedule": QUICK_SCHEDULE,
                                                          "train": QUICK_TRAIN})
    tcfg = dataclasses.replace(tcfg, seed=seed, batch_size=job["batch_size"], eval_every=max(1, epochs // 2))
    ms = pipeline.train(cohort, None, arch=arch, schedule_cfg=sched, train_cfg=tcfg, resume=False, progress=False)
    fit_s = time.perf_counter() - t0
    n_test = len(job["test"][mods[0]])
    test = from_arrays([f"te{i}" for i in range(n_test)], {m: job["test"][m] for m in mods if m != t},
                       feature_names={m: ms.feature_names[m] for m in mods if m != t})
    out = {}
    for method in CGJAX_METHODS:
        t1 = time.perf_counter()
        options = SampleOptions(method=method, solver=SolverConfig(*QUICK_SOLVER_ARGS), replicates=job["replicates"],
                                seed=seed)
        c = impute_complete(ms, test, options, progress=False)
        out[method] = {"draws": c.replicates[t], "wall_s": fit_s + time.perf_counter() - t1,
                       "note": f"fit {fit_s:.0f} s shared by coherent and multi; {epochs} epochs, "
                               f"batch {job['batch_size']}"}
    return out


def run_baseline(job: dict, kind: str) -> dict:
    from cgjax.evaluate.reconstruction import BaselineSampler

    t, mods = job["target"], job["modalities"]
    t0 = time.perf_counter()
    s = BaselineSampler(job["train"], kind)
    x = s(t, {m: job["test"][m] for m in mods if m != t}, replicates=job["replicates"], seed=job["seed"])
    return {kind: {"draws": np.asarray(x), "wall_s": time.perf_counter() - t0, "note": "complete training rows"}}


def run_hyperimpute(job: dict, method: str, loader) -> dict:
    df, tcols, n_train = _fit_frame(job)
    name, seed = HYPERIMPUTE[method], job["seed"]
    extra = {"max_iter": 10} if name in ("mice", "missforest") else {}
    t0 = time.perf_counter()

    def draw(r):
        plugin = loader.get(name, random_state=seed + r, **extra)
        return np.asarray(plugin.fit_transform(df.copy()), np.float64)[n_train:, [df.columns.get_loc(c) for c in tcols]]

    R = 1 if method in HI_POINT else job["replicates"]
    x = _draw_until(0.5 * job["time_limit"], R, draw)
    return {method: {"draws": x.astype(np.float32), "wall_s": time.perf_counter() - t0,
                     "note": "transductive" + (", max_iter 10" if extra else "")}}


def run_mofa(job: dict) -> dict:
    from mofapy2.run.entry_point import entry_point

    df, tcols, n_train = _fit_frame(job)
    mods, t, seed = job["modalities"], job["target"], job["seed"]
    t0 = time.perf_counter()
    ent = entry_point()
    ent.set_data_options(scale_views=False, center_groups=False)
    views = [[df[[c for c in df.columns if c.startswith(f"{m}__")]].to_numpy()] for m in mods]
    ent.set_data_matrix(views, views_names=list(mods), groups_names=["all"],
                        samples_names=[[f"s{i}" for i in range(len(df))]])
    ent.set_model_options(factors=10)
    ent.set_train_options(iter=1000, convergence_mode="fast", seed=seed, verbose=False, quiet=True)
    ent.build()
    ent.run()
    ent.impute(uncertainty=True, mask_outliers=False)
    v = mods.index(t)
    mean = np.asarray(ent.imputed_data["mean"][v])[n_train:]
    var = np.asarray(ent.imputed_data["variance"][v])[n_train:]
    rng = np.random.default_rng(seed)
    draws = mean[None] + np.sqrt(np.clip(var, 0, None))[None] * rng.standard_normal((job["replicates"], *mean.shape))
    return {"mofa": {"draws": draws.astype(np.float32), "wall_s": time.perf_counter() - t0,
                     "note": "transductive, 10 factors; draws N(mean, predictive var)"}}


def run_miceforest(job: dict) -> dict:
    import miceforest as mf

    df, tcols, n_train = _fit_frame(job)
    t0 = time.perf_counter()
    kernel = mf.ImputationKernel(df, num_datasets=job["replicates"], variable_schema=tcols,
                                 random_state=job["seed"])
    kernel.mice(2)
    x = np.stack([kernel.complete_data(dataset=r)[tcols].to_numpy(np.float32)[n_train:]
                  for r in range(job["replicates"])])
    return {"miceforest": {"draws": x, "wall_s": time.perf_counter() - t0, "note": "transductive, 2 iterations"}}


def worker(job_file: str, out_file: str) -> int:
    with np.load(job_file, allow_pickle=True) as z:
        job = z["job"].item()
    name = job["job"]
    try:
        if name == "cgjax":
            import jax  # noqa: F401  (imports before the clock and the memory baseline)
            import cgjax.pipeline  # noqa: F401
        elif name in HYPERIMPUTE:
            from hyperimpute.plugins.imputers import Imputers

            loader = Imputers()
            loader.get(HYPERIMPUTE[name])  # loads the plugin's module (and torch) before the clock
        elif name == "mofa":
            import mofapy2.run.entry_point  # noqa: F401
        elif name == "miceforest":
            import miceforest  # noqa: F401
        else:
            import cgjax.evaluate.reconstruction  # noqa: F401
    except ImportError as e:
        np.save(out_file, np.array({"_skipped": f"not installed ({e.name})"}, dtype=object))
        return 0
    base = _maxrss_mib()
    if name == "cgjax":
        res = run_cgjax(job)
    elif name in BASELINES:
        res = run_baseline(job, name)
    elif name in HYPERIMPUTE:
        res = run_hyperimpute(job, name, loader)
    elif name == "mofa":
        res = run_mofa(job)
    else:
        res = run_miceforest(job)
    peak = _maxrss_mib()
    for r in res.values():
        r.update(peak_rss_MiB=peak, rss_growth_MiB=peak - base)
    np.save(out_file, np.array(res, dtype=object))
    return 0


def run_job(name: str, job: dict, limit: int, tmp: Path) -> dict:
    """Run one job in a subprocess; returns method -> result, or {"_skipped"/"_failed": why}."""
    job_file, out_file = tmp / f"{name}.npz", tmp / f"{name}.out.npy"
    np.savez(job_file, job=np.array({**job, "job": name, "time_limit": limit}, dtype=object))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        p = subprocess.run([sys.executable, __file__, "--_worker", str(job_file), str(out_file)], env=env,
                           timeout=limit, capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        return {"_failed": f"timed out (> {limit} s), killed"}
    if p.returncode != 0 or not out_file.exists():
        last = (p.stderr.strip().splitlines() or ["(no message)"])[-1]
        return {"_failed": f"failed: {last[:160]}"}
    return np.load(out_file, allow_pickle=True).item()


# ---- scoring and the table --------------------------------------------------------------------------

def score(draws: np.ndarray, truth: np.ndarray, oracle=None) -> dict:
    from cgjax.scoring import calibration, metrics

    draws = np.asarray(draws, np.float64)
    mean = draws.mean(axis=0)
    samples = len(draws) >= 2 and not bool((draws == draws[:1]).all())
    rec = {"R": len(draws) if samples else 1, "r2": float(metrics.r2_pooled(truth, mean)),
           "energy_score": float(metrics.energy_score(draws, truth).mean()) if samples else np.nan}
    if oracle is not None:
        exact_mean, exact = oracle
        rec["r2_to_exact_mean"] = float(metrics.r2_pooled(exact_mean, mean))
        rec["energy_excess_pct"] = calibration.energy_excess(draws, exact, truth)["excess_pct"] if samples else np.nan
    return rec


def run_task(task: Task, args) -> pd.DataFrame:
    """Every job on every target; with ``args.out``, the CSV is rewritten after each job (a run
    stopped early keeps what it finished)."""
    rows = []
    jobs = [j for j in JOBS if args.methods is None or j in args.methods or
            (j == "cgjax" and set(CGJAX_METHODS) & set(args.methods))]
    for t in targets_of(task, args):
        truth = task.test[t]
        oracle = task.oracle.get(t)
        base = {"dataset": task.name, "target": t, "n_train": len(task.train[t]), "n_test": len(truth),
                "features": "/".join(str(task.train[m].shape[1]) for m in task.modalities)}
        if oracle is not None:
            for name, d in (("oracle_mean", oracle[0][None]), ("oracle_sample", oracle[1])):
                rows.append({**base, "method": name, **score(d, truth, oracle), "wall_s": np.nan, "note": "exact"})
        job = {"modalities": list(task.modalities), "target": t, "train": task.train, "test": task.test,
               "replicates": args.replicates, "seed": args.seed, "epochs": args.epochs or (600 if task.real else 200),
               "batch_size": args.batch_size or (32 if task.real else 256)}
        with tempfile.TemporaryDirectory(prefix="cgjax-peers-") as tmp:
            for name in jobs:
                print(f"[{time.strftime('%H:%M:%S')}] {task.name} {t}: {name}", file=sys.stderr, flush=True)
                res = run_job(name, job, args.time_limit, Path(tmp))
                methods = CGJAX_METHODS if name == "cgjax" else (name,)
                if "_skipped" in res or "_failed" in res:
                    for m in methods:
                        rows.append({**base, "method": m, "note": res.get("_skipped") or res["_failed"]})
                    print(f"    {rows[-1]['note']}", file=sys.stderr, flush=True)
                    if args.out:
                        pd.DataFrame(rows).to_csv(args.out, index=False)
                    continue
                for m, r in res.items():
                    rows.append({**base, "method": m, **score(r["draws"], truth, oracle), "wall_s": r["wall_s"],
                                 "peak_rss_MiB": r["peak_rss_MiB"], "rss_growth_MiB": r["rss_growth_MiB"],
                                 "note": r["note"]})
                for r in rows[-len(res):]:
                    print(f"    {r}", file=sys.stderr, flush=True)
                if args.out:
                    pd.DataFrame(rows).to_csv(args.out, index=False)
    return pd.DataFrame(rows)


def markdown(df: pd.DataFrame) -> str:
    cols = [c for c in ("dataset", "target", "method", "R", "r2", "r2_to_exact_mean", "energy_score",
                        "energy_excess_pct", "wall_s", "peak_rss_MiB", "rss_growth_MiB", "note") if c in df]

    if "R" in df:
        df = df.assign(R=df["R"].astype("Int64"))

    def fmt(v):
        if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
            return "—"
        if isinstance(v, (float, np.floating)):
            return f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in df[cols].itertuples(index=False)]
    return "\n".join(lines)


def verdicts(df: pd.DataFrame) -> list[str]:
    """Per dataset and target: cgjax's best method (by R2, then by energy score) and every other
    method that beats it on R2 or, among methods that draw, on the energy score."""
    out = []
    for (d, t), g in df.groupby(["dataset", "target"], sort=False):
        ours = g[g.method.isin(CGJAX_METHODS) & g.r2.notna()]
        if ours.empty:
            out.append(f"{d} {t}: no cgjax method finished")
            continue
        best = ours.loc[ours.r2.idxmax()]
        others = g[~g.method.isin(CGJAX_METHODS + ("oracle_mean", "oracle_sample")) & g.r2.notna()]
        r2_wins = others[others.r2 > best.r2].sort_values("r2", ascending=False)
        es_best = ours.energy_score.min()
        es_wins = others[others.energy_score < es_best].sort_values("energy_score")
        line = (f"{d} {t}: cgjax's best is {best.method} (R2 {best.r2:.3f}; best energy score "
                f"{es_best:.3f}, {ours.loc[ours.energy_score.idxmin()].method})" if ours.energy_score.notna().any()
                else f"{d} {t}: cgjax's best is {best.method} (R2 {best.r2:.3f})")
        line += "; higher R2: " + (", ".join(f"{r.method} {r.r2:.3f}" for r in r2_wins.itertuples()) or "none")
        line += "; lower energy score: " + (", ".join(f"{r.method} {r.energy_score:.3f}"
                                                      for r in es_wins.itertuples()) or "none")
        out.append(line)
    return out


def combine(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The rows of several runs; a method run twice on one dataset and target (e.g. rerun with a
    longer time limit) keeps its last finished row (its last row if none finished)."""
    df = pd.concat(frames, ignore_index=True)
    df["_done"] = df["r2"].notna()
    df["_order"] = np.arange(len(df))
    keep = df.sort_values(["_done", "_order"]).groupby(["dataset", "target", "method"], sort=False).tail(1)
    first = df.groupby(["dataset", "target", "method"], sort=False)["_order"].transform("min")  # table order
    return df.loc[keep.index].assign(_first=first).sort_values("_first").drop(columns=["_done", "_order", "_first"])


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_worker"]:
        return worker(argv[1], argv[2])
    if argv[:1] == ["--combine"]:  # the one table of several runs' CSVs, and the verdicts
        df = combine([pd.read_csv(f) for f in argv[1:]])
        print(markdown(df))
        print("\n" + "\n".join(f"- {v}" for v in verdicts(df)))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", required=True, help="zoo:<law>, miniacc or paad")
    ap.add_argument("--data-dir", help="paad: the directory of the PAAD tables")
    ap.add_argument("--targets", help="comma-separated target modalities (default: one per dataset)")
    ap.add_argument("--methods", help="comma-separated subset of the methods (default: all)")
    ap.add_argument("--features", type=int, default=50, help="real data: top-variance features per modality")
    ap.add_argument("--test-fraction", type=float, default=0.3)
    ap.add_argument("--max-test", type=int, default=300)
    ap.add_argument("--n-samples", type=int, default=3000, help="zoo: cohort size")
    ap.add_argument("--replicates", type=int, default=10)
    ap.add_argument("--epochs", type=int, help="cgjax: training epochs (default 200 zoo, 600 real)")
    ap.add_argument("--batch-size", type=int, help="cgjax: batch size (default 256 zoo, 32 real)")
    ap.add_argument("--time-limit", type=int, default=600, help="seconds per method before it is killed")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="CSV of the table")
    args = ap.parse_args(argv)
    args.methods = None if not args.methods else args.methods.split(",")
    task = load_task(args.dataset, args)
    df = run_task(task, args)
    print(f"{args.dataset}: {len(next(iter(task.train.values())))} training rows, "
          f"{len(next(iter(task.test.values())))} test rows, R = {args.replicates}")
    print(markdown(df))
    if args.out:
        df.to_csv(args.out, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
