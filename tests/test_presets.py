"""Model-size presets (cgjax.presets) and ``cgjax train --preset``: "paper" is exactly the config
classes' defaults (the sizes ``cgjax train`` always had), "quick" sets the configs to its values,
--config and explicit flags override the preset, a bad name is one argparse error line, and the
checkpoint records the preset for ``cgjax info``."""

import dataclasses
import json

import pytest

from cgjax.cli import build_parser
from cgjax.cli.models import train_configs
from cgjax.diffusion.configs import build_configs
from cgjax.diffusion.denoiser import ArchConfig
from cgjax.diffusion.schedule import ScheduleConfig
from cgjax.diffusion.train import TrainConfig
from cgjax.presets import PRESETS, QUICK_ARCH, QUICK_SCHEDULE, QUICK_TRAIN, describe


def _train_args(*flags):
    return build_parser().parse_args(["train", "cohort", "--out", "ck", *flags])


def test_paper_preset_is_the_config_defaults():
    assert build_configs({}, defaults=PRESETS["paper"]) == (ArchConfig(), ScheduleConfig(), TrainConfig())
    assert _train_args().preset == "paper"
    arch, sched, train, record = train_configs(_train_args())
    assert (arch, sched, train) == (ArchConfig(), ScheduleConfig(), TrainConfig())
    assert record == {"name": "paper", "overridden_by": []}


def test_quick_preset_sets_every_value_and_flags_override_it(tmp_path):
    arch, sched, train, record = train_configs(_train_args("--preset", "quick"))
    for cfg, values in ((arch, QUICK_ARCH), (sched, QUICK_SCHEDULE), (train, QUICK_TRAIN)):
        assert {k: getattr(cfg, k) for k in values} == values
    assert record == {"name": "quick", "overridden_by": []}
    assert arch != ArchConfig() and sched != ScheduleConfig() and train != TrainConfig()

    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"arch": {"hidden": 24}, "train": {"learning_rate": 5e-4}}))
    arch, sched, train, record = train_configs(_train_args(
        "--preset", "quick", "--config", str(cfg), "--epochs", "7", "--timesteps", "50", "--seed", "3",
        "--parametrisation", "eps", "--anchor", "none"))
    assert QUICK_ARCH["parametrisation"] != "eps"  # so that the flag is seen to override it
    assert QUICK_ARCH["anchor"] != "none"
    assert (arch.hidden, arch.n_layers, arch.parametrisation, arch.anchor) == (24, QUICK_ARCH["n_layers"], "eps",
                                                                               "none")
    assert sched.timesteps == 50
    assert (train.epochs, train.seed, train.learning_rate, train.batch_size) == (7, 3, 5e-4, QUICK_TRAIN["batch_size"])
    assert QUICK_TRAIN["min_steps"] > 0 and train.min_steps == 0  # --epochs: exactly those epochs
    assert record == {"name": "quick", "overridden_by": [f"--config {cfg}", "--epochs", "--timesteps", "--seed",
                                                         "--parametrisation", "--anchor"]}


def test_bad_preset_is_one_argparse_line(capsys):
    with pytest.raises(SystemExit) as e:
        _train_args("--preset", "huge")
    assert e.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "--preset" in err[0] and "huge" in err[0]


def test_help_shows_the_values():
    text = " ".join(build_parser()._subparsers._group_actions[0].choices["train"].format_help().split())
    for name in ("paper", "quick"):
        assert " ".join(describe(name).split()) in text


def test_checkpoint_records_the_preset_for_info(tiny_cohort, tiny_trained, tmp_path, capsys):
    """A finished checkpoint resumed with nothing left to train (the config file fixes every value)
    gets the preset record; ``cgjax info`` prints it and the checkpoint still loads."""
    import shutil

    from conftest import TINY_ARCH, TINY_SCHED, TINY_TRAIN

    from cgjax import checkpoint
    from cgjax.cli import main as cli
    from cgjax.data import write_cohort

    shutil.copytree(tiny_trained[1], tmp_path / "ck")
    write_cohort(tiny_cohort, tmp_path / "cohort")
    (tmp_path / "tiny.json").write_text(json.dumps({"arch": TINY_ARCH.to_dict(),
                                                    "schedule": dataclasses.asdict(TINY_SCHED),
                                                    "train": TINY_TRAIN.to_dict()}))
    assert cli(["train", str(tmp_path / "cohort"), "--out", str(tmp_path / "ck"), "--preset", "quick",
                "--config", str(tmp_path / "tiny.json"), "--quiet", "--no-calibration-check"]) == 0
    assert checkpoint.read_meta(tmp_path / "ck")["preset"] == {
        "name": "quick", "overridden_by": [f"--config {tmp_path / 'tiny.json'}"]}
    capsys.readouterr()
    assert cli(["info", str(tmp_path / "ck")]) == 0
    assert f"preset: quick (overridden by --config {tmp_path / 'tiny.json'})" in capsys.readouterr().out
    assert checkpoint.load(tmp_path / "ck").arch == TINY_ARCH


def test_an_interrupted_train_records_the_preset_from_its_first_save(tiny_cohort, tmp_path, capsys, monkeypatch):
    """``cgjax train`` interrupted right after its first validation leaves a checkpoint that already
    records the preset (``cgjax info`` shows it); a resumed run given no record keeps it."""
    from conftest import TINY_ARCH, TINY_SCHED, TINY_TRAIN

    from cgjax import checkpoint, pipeline
    from cgjax.cli import main as cli
    from cgjax.data import write_cohort

    write_cohort(tiny_cohort, tmp_path / "cohort")
    (tmp_path / "tiny.json").write_text(json.dumps({"arch": TINY_ARCH.to_dict(),
                                                    "schedule": dataclasses.asdict(TINY_SCHED),
                                                    "train": TINY_TRAIN.to_dict()}))
    save = checkpoint.save

    def save_then_interrupt(*args, **kwargs):
        save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", save_then_interrupt)
    assert cli(["train", str(tmp_path / "cohort"), "--out", str(tmp_path / "ck"), "--preset", "quick",
                "--config", str(tmp_path / "tiny.json"), "--quiet", "--no-calibration-check"]) == 130
    monkeypatch.setattr(checkpoint, "save", save)
    record = {"name": "quick", "overridden_by": [f"--config {tmp_path / 'tiny.json'}"]}
    meta = checkpoint.read_meta(tmp_path / "ck")
    assert meta["training"]["epoch"] == TINY_TRAIN.eval_every < TINY_TRAIN.epochs  # cut short
    assert meta["preset"] == record
    capsys.readouterr()
    assert cli(["info", str(tmp_path / "ck")]) == 0
    assert f"preset: quick (overridden by --config {tmp_path / 'tiny.json'})" in capsys.readouterr().out
    pipeline.train(tiny_cohort, tmp_path / "ck", arch=TINY_ARCH, schedule_cfg=TINY_SCHED, train_cfg=TINY_TRAIN,
                   progress=False)
    meta = checkpoint.read_meta(tmp_path / "ck")
    assert meta["training"]["epoch"] == TINY_TRAIN.epochs and meta["preset"] == record
