"""Bad inputs and faults through the real CLI, each asserting that nothing is lost and nothing is
silent: an --out that is not ours (a scratch directory, the cohort itself) is refused, an
unwritable one gives one line, a checkpoint cut short names what is missing, renamed columns are
refused and reordered ones matched by name, the split is reused; SIGKILL during ``train`` resumes to
the uninterrupted weights, SIGKILL during ``impute`` leaves no partial table, and a checkpoint
restores in a process with another device count.

Kept fast: a 300-sample cohort of 4-feature modalities, 16-unit models, T = 25, a few epochs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cgjax import checkpoint
from cgjax.cli import main as _main
from cgjax.data import read_cohort, split_cohort, write_cohort
from cgjax.datasets import synthetic_tcga


def cli(argv):
    """The CLI; ``train`` without its post-training calibration check (these tests are about files and
    faults; tests/test_calibration_check.py tests the check), which keeps the suite short."""
    if argv and argv[0] == "train":
        argv = [*argv, "--no-calibration-check"]
    return _main(argv)


ROOT = Path(__file__).resolve().parents[1]
TINY = {"arch": {"hidden": 16, "n_layers": 3, "time_dim": 8, "cond_embed_dim": 8},
        "schedule": {"timesteps": 25},
        "train": {"epochs": 6, "eval_every": 1, "batch_size": 32, "steps_per_call": 4, "val_replicates": 2}}


def env(devices: int = 1) -> dict:
    from conftest import compilation_cache_env

    return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **compilation_cache_env())


def one_line_error(capsys, *needles) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    for n in needles:
        assert n in err[0], (n, err[0])
    return err[0]


def files(d: Path) -> dict:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A cohort directory (some modalities missing for some samples), a config, and a trained
    checkpoint (uninterrupted, the reference for the kill-and-resume test)."""
    d = tmp_path_factory.mktemp("faults")
    write_cohort(synthetic_tcga(n_samples=300, seed=4, dim=4), d / "cohort")
    (d / "tiny.json").write_text(json.dumps(TINY))
    assert cli(["train", str(d / "cohort"), "--out", str(d / "ref"), "--config", str(d / "tiny.json"),
                "--split-seed", "7", "--quiet"]) == 0
    return d


# ---- outputs that are not ours --------------------------------------------------------------------

def test_train_refuses_an_out_that_is_not_a_checkpoint(work, tmp_path, capsys):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "notes.txt").write_text("mine")
    cohort_before = files(work / "cohort")
    for out in (scratch, work / "cohort", work):  # a user's directory, the cohort, a directory holding it
        assert cli(["train", str(work / "cohort"), "--out", str(out), "--config", str(work / "tiny.json"),
                    "--quiet"]) == 2
        one_line_error(capsys, str(out), "not a cgjax checkpoint")
    assert (scratch / "notes.txt").read_text() == "mine" and files(work / "cohort") == cohort_before
    # a checkpoint that cannot be resumed (damaged) is not silently replaced either
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / checkpoint.META_FILE).write_text("{not json")
    assert cli(["train", str(work / "cohort"), "--out", str(broken), "--config", str(work / "tiny.json"),
                "--quiet"]) == 2
    one_line_error(capsys, "corrupt metadata", "--no-resume")
    assert (broken / checkpoint.META_FILE).read_text() == "{not json"


def test_impute_refuses_to_write_into_the_cohort(work, capsys):
    before = files(work / "cohort")
    assert cli(["impute", str(work / "ref"), str(work / "cohort"), "--out", str(work / "cohort"), "--quiet"]) == 2
    one_line_error(capsys, str(work / "cohort"), "not a cgjax imputation directory")
    assert files(work / "cohort") == before


def test_the_atomic_writer_replaces_only_its_own_directories(tmp_path):
    from cgjax._atomic import atomic_directory
    from cgjax.errors import OutputError

    target = tmp_path / "t"
    for state in ("absent", "empty", "ours"):
        if state == "empty":
            shutil.rmtree(target)
            target.mkdir()
        with atomic_directory(target, marker="MARK", what="test output") as tmp:
            (tmp / "MARK").write_text(state)
        assert (target / "MARK").read_text() == state
    (tmp_path / "u").mkdir()
    (tmp_path / "u" / "data.csv").write_text("x")
    with pytest.raises(OutputError, match="not a test output"):
        with atomic_directory(tmp_path / "u", marker="MARK", what="test output") as tmp:
            (tmp / "MARK").write_text("")
    assert (tmp_path / "u" / "data.csv").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t", "u"]  # no temporary left behind


def test_unwritable_out_is_one_line(work, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for argv in (["train", str(work / "cohort"), "--out", str(blocker / "ck"), "--config", str(work / "tiny.json")],
                 ["impute", str(work / "ref"), str(work / "cohort"), "--out", str(blocker / "imp")],
                 ["cohort", "synth", "--out", str(blocker / "c"), "--n-samples", "20"]):
        assert cli([*argv, "--quiet"] if argv[0] != "cohort" else argv) == 2
        one_line_error(capsys, str(blocker), "not a directory")
    if os.geteuid() != 0:  # root writes anywhere: a read-only directory only stops other users
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        assert cli(["train", str(work / "cohort"), "--out", str(ro / "ck"), "--config", str(work / "tiny.json"),
                    "--quiet"]) == 2
        one_line_error(capsys, "cannot write here")


# ---- bad inputs -------------------------------------------------------------------------------------

def test_truncated_checkpoint_names_what_is_missing(work, tmp_path, capsys):
    ck = tmp_path / "ck"
    shutil.copytree(work / "ref", ck)
    victim = sorted(p for p in (ck / "models").rglob("*") if p.is_file() and "/d/" in p.as_posix())[0]
    victim.unlink()
    assert cli(["impute", str(ck), str(work / "cohort"), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    line = one_line_error(capsys, str(ck), "damaged checkpoint", victim.relative_to(ck).as_posix())
    assert len(line) < 300
    shutil.copytree(work / "ref", tmp_path / "ck2")
    f = next(p for p in (tmp_path / "ck2" / "models").rglob("*") if p.is_file() and p.stat().st_size > 10)
    f.write_bytes(f.read_bytes()[:5])  # a copy cut short
    assert cli(["impute", str(tmp_path / "ck2"), str(work / "cohort"), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    one_line_error(capsys, "damaged checkpoint", "truncated")


def test_columns_are_matched_by_name(work, tmp_path, capsys):
    """Reordered columns give the imputation of the ordered ones; a renamed column is refused."""
    src = read_cohort(work / "cohort")
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    for f in (work / "cohort").iterdir():
        df = pd.read_csv(f, dtype={"sample_id": str})
        if f.stem == "rppa":  # rppa is given to impute the others: its column order matters
            df = df[["sample_id", *df.columns[1:][::-1]]]
        df.to_csv(shuffled / f.name, index=False, float_format="%.9g")
    args = ["--replicates", "2", "--seed", "3", "--quiet"]
    assert cli(["impute", str(work / "ref"), str(work / "cohort"), "--out", str(tmp_path / "a"), *args]) == 0
    assert cli(["impute", str(work / "ref"), str(shuffled), "--out", str(tmp_path / "b"), *args]) == 0
    for m in ("cna", "rnaseq", "wsi"):
        a, b = pd.read_parquet(tmp_path / "a" / f"{m}.parquet"), pd.read_parquet(tmp_path / "b" / f"{m}.parquet")
        pd.testing.assert_frame_equal(a, b)
    # and the order did matter: positionally, the reversed table would have given other samples
    assert src.feature_names["rppa"] != list(pd.read_csv(shuffled / "rppa.csv", nrows=0).columns[1:])
    df = pd.read_csv(shuffled / "rppa.csv", dtype={"sample_id": str})
    bad = df.columns[2]
    df.rename(columns={bad: bad + "_v2"}).to_csv(shuffled / "rppa.csv", index=False)
    assert cli(["impute", str(work / "ref"), str(shuffled), "--out", str(tmp_path / "c"), "--quiet"]) == 2
    one_line_error(capsys, "rppa.csv", "modality 'rppa'", f"'{bad}_v2'")


def test_the_split_trained_on_is_the_split_evaluated(work):
    from cgjax.data import Scalers
    from cgjax.data.split import apply_split_record
    from cgjax.evaluate.run import prepare_data

    ms = checkpoint.load(work / "ref")
    assert ms.split["seed"] == 7 and ms.split["source"] == "split_cohort"
    cohort = read_cohort(work / "cohort")
    data = prepare_data(cohort, Scalers.from_dict(ms.scalers), ms.modalities, split_record=ms.split)
    seven, default = (split_cohort(cohort, seed=s) for s in (7, 42))
    complete = cohort.complete()
    want = cohort.sample_ids[(seven.label("split") == "test") & complete]
    assert sorted(data.test_ids) == sorted(want)
    assert set(want) != set(cohort.sample_ids[(default.label("split") == "test") & complete])
    assert not any("WARNING" in n for n in data.notes)
    # a checkpoint without a split record (older cgjax) says what it assumes
    _, notes = apply_split_record(cohort, None)
    assert "records no split" in notes[0] and "seed=42" in notes[0]
    # a cohort that changed since training is noted
    _, notes = apply_split_record(cohort.subset(np.arange(1, cohort.n_samples)), ms.split)
    assert any("differ from those the models were trained with" in n for n in notes)


# ---- faults -----------------------------------------------------------------------------------------

def _wait_for(pred, proc, timeout=600.0, poll=0.02):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(poll)
    return False


def test_sigkill_during_train_then_resume_gives_the_uninterrupted_weights(work, tmp_path):
    out = tmp_path / "ck"
    argv = [sys.executable, "-m", "cgjax", "train", str(work / "cohort"), "--out", str(out), "--config",
            str(work / "tiny.json"), "--split-seed", "7", "--quiet", "--no-calibration-check"]
    proc = subprocess.Popen(argv, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def some_epochs_saved():
        try:
            return json.loads((out / checkpoint.META_FILE).read_text())["training"]["epoch"] >= 2
        except (OSError, ValueError, KeyError):
            return False

    try:
        assert _wait_for(some_epochs_saved, proc), "training ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    epoch = checkpoint.read_meta(out)["training"]["epoch"]
    assert proc.returncode == -signal.SIGKILL and epoch < TINY["train"]["epochs"]
    # the killed run's checkpoint already says how its configuration was chosen (`cgjax info`)
    assert checkpoint.read_meta(out)["preset"] == {"name": "paper", "overridden_by": [f"--config {work / 'tiny.json'}"]}
    assert cli(["train", str(work / "cohort"), "--out", str(out), "--config", str(work / "tiny.json"),
                "--split-seed", "7", "--quiet"]) == 0
    resumed, ref = checkpoint.load_run(out), checkpoint.load_run(work / "ref")
    assert resumed.epoch == ref.epoch == TINY["train"]["epochs"]
    import jax

    for name in ref.states:
        for a, b in zip(jax.tree.leaves(resumed.states[name]), jax.tree.leaves(ref.states[name])):
            np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=1e-5, atol=1e-6)
        for a, b in zip(jax.tree.leaves(resumed.model_set.groups[name].params),
                        jax.tree.leaves(ref.model_set.groups[name].params)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_sigkill_during_impute_leaves_no_partial_table(work, tmp_path):
    out = tmp_path / "imp"
    args = ["impute", str(work / "ref"), str(work / "cohort"), "--out", str(out), "--replicates", "60",
            "--max-batch", "64", "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "cgjax", *args], env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:  # kill as soon as the first table is in place, while the next ones are being sampled (a
        # fixed delay raced: on an idle machine impute could finish first)
        assert _wait_for(lambda: any(out.glob("*.parquet")), proc, poll=0.002), "impute ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL, "impute ended before it could be killed"
    cohort = read_cohort(work / "cohort")
    expected = {m: 60 * int((~cohort.masks[m]).sum()) for m in cohort.modalities if (~cohort.masks[m]).any()}
    for f in out.glob("*.parquet"):  # whatever is at an output path is a complete table
        assert len(pd.read_parquet(f)) == expected[f.stem], f
    assert len(list(out.glob("*.parquet"))) < len(expected)  # it really was cut short
    assert cli(args) == 0
    assert {f.stem: len(pd.read_parquet(f)) for f in out.glob("*.parquet")} == expected


def test_checkpoint_restores_under_another_device_count(work, tmp_path):
    """Written by a one-device process; read and sampled by a four-device one: same imputations."""
    args = ["impute", str(work / "ref"), str(work / "cohort"), "--replicates", "2", "--seed", "5", "--quiet"]
    assert cli([*args, "--out", str(tmp_path / "one")]) == 0
    script = ("import jax, sys; assert jax.device_count() == 4, jax.devices(); from cgjax.cli import main; "
              "sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", script, *args, "--out", str(tmp_path / "four")], env=env(4),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for f in (tmp_path / "one").glob("*.parquet"):
        a, b = pd.read_parquet(f), pd.read_parquet(tmp_path / "four" / f.name)
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-4, atol=1e-4)
