"""Train a tiny model set end to end, checkpoint it, restore it, impute with every method."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cgjax import checkpoint, pipeline
from cgjax.cli import main as cli
from cgjax.data import from_arrays, write_cohort
from cgjax.datasets import synthetic_tcga
from cgjax.diffusion.denoiser import ArchConfig
from cgjax.diffusion.schedule import ScheduleConfig
from cgjax.diffusion.train import TrainConfig
from cgjax.ensemble import model_specs, sample_target
from cgjax.sampling.options import SampleOptions
from cgjax.errors import CgjaxError, CheckpointError, CohortError
from conftest import TINY_ARCH, TINY_SCHED, TINY_TRAIN

ARCH, SCHED, TRAIN = TINY_ARCH, TINY_SCHED, TINY_TRAIN


@pytest.fixture(scope="module")
def cohort(tiny_cohort):
    return tiny_cohort


@pytest.fixture(scope="module")
def trained(tiny_trained):
    return tiny_trained


def test_model_specs_cover_every_ordered_pair_and_one_multi_per_target():
    specs = model_specs(["a", "b", "c", "d"])
    singles = {(s.target, s.conds[0]) for s in specs if s.kind == "single"}
    assert len(singles) == 12 and all(t != c for t, c in singles)
    multis = [s for s in specs if s.kind == "multi"]
    assert [m.target for m in multis] == ["a", "b", "c", "d"] and all(len(m.conds) == 3 for m in multis)


def test_training_lowers_the_loss_and_records_validation(trained):
    ms, out = trained
    meta = checkpoint.read_meta(out)
    hist = pd.DataFrame(meta["training"]["history"])
    assert set(hist["model"]) == {s.name for g in ms.groups.values() for s in g.specs}
    first, last = hist[hist.epoch == hist.epoch.min()], hist[hist.epoch == hist.epoch.max()]
    assert last["loss"].mean() < first["loss"].mean()
    assert np.isfinite(hist[["mse", "energy", "r2"]].to_numpy()).all()
    # the kept score of each model is its best validation score
    for name, rec in ms.val_metrics.items():
        assert rec["mse"] == pytest.approx(hist[hist.model == name]["mse"].min())
    w = meta["coherent_weights"]["rnaseq"]
    assert sum(w.values()) == pytest.approx(1.0)


def test_checkpoint_round_trip_gives_identical_imputations(trained, cohort):
    ms, out = trained
    restored = checkpoint.load(out)
    test = pipeline.scaled_inputs(ms, cohort.split("test"))
    given = {m: test[m] for m in ("cna", "rppa")}
    for method in ("coherent", "multi", "single"):
        a = sample_target(ms, "rnaseq", given, SampleOptions(method, replicates=2, seed=3))
        b = sample_target(restored, "rnaseq", given, SampleOptions(method, replicates=2, seed=3))
        np.testing.assert_array_equal(a.x, b.x)
        assert a.x.shape == (2, len(test["rnaseq"]), 6) and np.isfinite(a.x).all()
    # same seed, same output; another seed, another output
    c = sample_target(ms, "rnaseq", given, SampleOptions("multi", seed=4))
    assert not np.array_equal(c.x, sample_target(ms, "rnaseq", given, SampleOptions("multi", seed=3)).x[:1])


def test_replicates_are_independent_and_chunks_match_the_whole_batch(trained, cohort):
    ms, _ = trained
    test = pipeline.scaled_inputs(ms, cohort.split("test"))
    given = {"cna": test["cna"], "wsi": test["wsi"]}
    whole = sample_target(ms, "rppa", given, SampleOptions(replicates=2))
    assert not np.allclose(whole.x[0], whole.x[1])
    n = len(test["cna"])
    half = n // 2
    parts = [sample_target(ms, "rppa", {k: v[sl] for k, v in given.items()}, SampleOptions(replicates=2),
                           row_offset=sl.start, n_total=n)
             for sl in (slice(0, half), slice(half, n))]
    # equal up to float32 rounding (matrix products may block differently for other batch sizes)
    np.testing.assert_allclose(np.concatenate([p.x for p in parts], axis=1), whole.x, rtol=1e-4, atol=1e-4)


def test_per_row_subsets_in_one_call(trained, cohort, monkeypatch):
    """Rows with different modalities in one batch equal each subset run on its own. Members no row
    uses are not evaluated at all (the single-condition group has 3 per target)."""
    from cgjax import distributed

    evaluated = []
    real = distributed.sample_sharded
    monkeypatch.setattr(distributed, "sample_sharded",
                        lambda sampler, mesh, params, *a, **k: evaluated.append(len(a[2][0])) or real(sampler, mesh, params, *a, **k))
    ms, _ = trained
    test = pipeline.scaled_inputs(ms, cohort.split("test"))
    n = len(test["cna"])
    cna, wsi = test["cna"].copy(), test["wsi"].copy()
    cna[: n // 2] = np.nan  # first half: wsi only; second half: both
    # single: one model per row, the best available: cna's or wsi's for the mixed rows
    best_of_both = 1 + (ms.val_score("rnaseq_from_cna") < ms.val_score("rnaseq_from_wsi"))
    for method, members in (("coherent", (2, 1)), ("multi", (1, 1)), ("single", (best_of_both, 1))):
        evaluated.clear()
        mixed = sample_target(ms, "rnaseq", {"cna": cna, "wsi": wsi}, SampleOptions(method, seed=2))
        only = sample_target(ms, "rnaseq", {"wsi": wsi[: n // 2]}, SampleOptions(method, seed=2), n_total=n)
        np.testing.assert_allclose(mixed.x[:, : n // 2], only.x, rtol=1e-4, atol=1e-4)
        assert tuple(evaluated) == members, (method, evaluated)  # rppa's model never runs


def test_rows_without_conditions_are_refused_unless_unconditional(trained):
    ms, _ = trained
    given = {"cna": np.full((3, 6), np.nan, np.float32)}
    with pytest.raises(CgjaxError, match="none of"):
        sample_target(ms, "rnaseq", given)
    for method in ("coherent", "multi"):
        res = sample_target(ms, "rnaseq", given, SampleOptions(method, unconditional=True))
        assert np.isfinite(res.x).all()
    with pytest.raises(CgjaxError, match="expect 6"):
        sample_target(ms, "rnaseq", {"cna": np.zeros((3, 5), np.float32)})


def test_nan_validation_scores_are_refused_by_name_or_never_picked_for_an_absent_model(cohort, trained):
    """rnaseq_from_wsi loses its validation score (NaN, or missing): coherent inverse-MSE weighting of a
    row that uses it is refused naming it (no silent uniform fallback), rows without wsi sample as
    before, uniform weighting needs no score; single never picks a model the row lacks (the old
    argmin picked member 0, rnaseq_from_cna, for a wsi-only row)."""
    import dataclasses

    ms, _ = trained
    test = pipeline.scaled_inputs(ms, cohort.split("test"))
    n = len(test["cna"])
    cna, wsi = test["cna"].copy(), test["wsi"].copy()
    cna[: n // 2] = np.nan  # first half: wsi only
    for broken in ({**ms.val_metrics, "rnaseq_from_wsi": {"mse": float("nan")}},
                   {k: v for k, v in ms.val_metrics.items() if k != "rnaseq_from_wsi"}):
        bad = dataclasses.replace(ms, val_metrics=broken)
        with pytest.raises(CgjaxError, match="rnaseq_from_wsi"):
            sample_target(bad, "rnaseq", {"cna": cna, "wsi": wsi}, SampleOptions(seed=2))
        # rows that do not use the unscored model: unaffected
        ok = sample_target(bad, "rnaseq", {"cna": test["cna"], "rppa": test["rppa"]}, SampleOptions(seed=2))
        ref = sample_target(ms, "rnaseq", {"cna": test["cna"], "rppa": test["rppa"]}, SampleOptions(seed=2))
        np.testing.assert_array_equal(ok.x, ref.x)
        assert np.isfinite(sample_target(bad, "rnaseq", {"cna": cna, "wsi": wsi},
                                         SampleOptions(weighting="uniform", seed=2)).x).all()
        # single: the wsi-only rows use rnaseq_from_wsi (their only model), equal to wsi given alone
        single = sample_target(bad, "rnaseq", {"cna": cna, "wsi": wsi}, SampleOptions("single", seed=2))
        alone = sample_target(bad, "rnaseq", {"wsi": wsi[: n // 2]}, SampleOptions("single", seed=2), n_total=n)
        np.testing.assert_allclose(single.x[:, : n // 2], alone.x, rtol=1e-4, atol=1e-4)
        # ... and differ from what rnaseq_from_cna (which those rows lack) would give them
        wrong = sample_target(bad, "rnaseq", {"cna": test["cna"][: n // 2]}, SampleOptions("single", seed=2),
                              n_total=n)
        assert np.abs(single.x[:, : n // 2] - wrong.x).max() > 1e-2


def test_resume_continues_from_the_checkpoint(cohort, tmp_path):
    out = tmp_path / "m"
    pipeline.train(cohort, out, arch=ARCH, schedule_cfg=SCHED, train_cfg=TRAIN.__class__(**{**TRAIN.to_dict(), "epochs": 2}),
                   progress=False)
    assert checkpoint.read_meta(out)["training"]["epoch"] == 2
    ms = pipeline.train(cohort, out, arch=ARCH, schedule_cfg=SCHED, train_cfg=TRAIN, progress=False)
    meta = checkpoint.read_meta(out)
    assert meta["training"]["epoch"] == 4
    assert sorted({h["epoch"] for h in meta["training"]["history"]}) == [2, 4]
    with pytest.raises(CgjaxError, match="another configuration"):
        pipeline.train(cohort, out, arch=ArchConfig(hidden=8, n_layers=3, time_dim=8, cond_embed_dim=8),
                       schedule_cfg=SCHED, train_cfg=TRAIN, progress=False)


def test_relative_checkpoint_paths(trained, tmp_path, monkeypatch):
    ms, _ = trained
    monkeypatch.chdir(tmp_path)
    checkpoint.save("rel/ck", ms)
    assert checkpoint.load("rel/ck").modalities == ms.modalities


def test_half_written_checkpoint_is_never_loaded(trained, tmp_path):
    _, out = trained
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / checkpoint.META_FILE).unlink()  # as if killed before the metadata was written
    with pytest.raises(CheckpointError, match="not a complete cgjax checkpoint"):
        checkpoint.load(broken)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        checkpoint.load(tmp_path / "nothing")
    meta = json.loads((out / checkpoint.META_FILE).read_text())
    meta["format_version"] = 999
    shutil.copytree(out, tmp_path / "future")
    (tmp_path / "future" / checkpoint.META_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format version 999"):
        checkpoint.load(tmp_path / "future")


def test_save_is_atomic_when_interrupted(trained, tmp_path, monkeypatch):
    ms, out = trained
    dst = tmp_path / "ck"
    shutil.copytree(out, dst)
    before = (dst / checkpoint.META_FILE).read_text()

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "_meta", boom)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(dst, ms)
    assert (dst / checkpoint.META_FILE).read_text() == before  # the old checkpoint is untouched
    assert not list(tmp_path.glob("ck.tmp-*"))
    checkpoint.load(dst)


def test_cli_train_and_impute(cohort, trained, tmp_path):
    _, ck = trained
    # new patients: the test rows with rnaseq removed from half of them, wsi table missing entirely
    test = cohort.split("test")
    data = {m: test.data[m].copy() for m in ("cna", "rnaseq", "rppa")}
    data["rnaseq"][::2] = np.nan
    new = from_arrays(test.sample_ids, data, feature_names={m: test.feature_names[m] for m in data})
    cdir = tmp_path / "new"
    write_cohort(new, cdir)
    out = tmp_path / "imputed"
    assert cli([ "impute", str(ck), str(cdir), "--method", "coherent", "--replicates", "2", "--seed", "1",
                "--out", str(out), "--quiet"]) == 0
    wsi = pd.read_parquet(out / "wsi.parquet")
    assert list(wsi.columns[:2]) == ["sample_id", "replicate"]
    assert len(wsi) == 2 * test.n_samples and set(wsi["replicate"]) == {0, 1}
    rna = pd.read_parquet(out / "rnaseq.parquet")
    assert set(rna["sample_id"]) == set(test.sample_ids[::2])
    assert list(rna.columns[2:8]) == test.feature_names["rnaseq"]
    # original feature scale: the scaled-back imputations have roughly the data's location and spread
    feats = rna[test.feature_names["rnaseq"]].to_numpy()
    assert np.isfinite(feats).all()
    assert not (out / "cna.parquet").exists()  # nothing missing there


def test_cli_errors_are_one_line(tmp_path, capsys, trained):
    _, ck = trained
    assert cli(["impute", str(tmp_path / "nope"), str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such checkpoint" in err[0]
    bad = tmp_path / "bad"
    bad.mkdir()
    pd.DataFrame({"sample_id": ["a", "b"], "f0": [1.0, 2.0]}).to_csv(bad / "rnaseq.csv", index=False)
    assert cli(["impute", str(ck), str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rnaseq" in err[0] and "1 features" in err[0]
    good = tmp_path / "cohort"
    write_cohort(synthetic_tcga(n_samples=60, seed=1, dim=6), good)
    cfg = tmp_path / "c.json"
    for text, needle in [('{"arch": {"hidden": 8}, "oops": {}}', "unknown config section"),
                         ('{"schedule": {"timesteps": 20}}', "too few timesteps (20)"),
                         ('{"train": {"val_replicates": 0}}', "TrainConfig.val_replicates must be an integer >= 1"),
                         ('{"train": {"select_by": "energy", "val_replicates": 1}}',
                          "val_replicates must be >= 2 with select_by='energy'"),
                         ('{"arch": {"hidden": 8', "cannot parse config")]:
        cfg.write_text(text)
        assert cli(["train", str(good), "--out", str(tmp_path / "x"), "--config", str(cfg), "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], (text, err)
    # too few complete samples for the paper's split: the cause, not a downstream symptom
    assert cli(["train", str(good), "--out", str(tmp_path / "x"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "validation split is empty" in err[0], err
    assert not (tmp_path / "x").exists()  # nothing trained, nothing written


def test_one_validation_replicate_trains_without_the_energy_score(cohort, tmp_path):
    import dataclasses

    tcfg = dataclasses.replace(TRAIN, epochs=2, val_replicates=1)
    ms = pipeline.train(cohort, tmp_path / "m", arch=ARCH, schedule_cfg=SCHED, train_cfg=tcfg, progress=False)
    rec = next(iter(ms.val_metrics.values()))
    assert np.isfinite(rec["mse"]) and "energy" not in rec
