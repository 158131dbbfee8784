"""Bad sampling and training options: one table of (flags -> message), checked through the CLI (one
line on stderr, exit 2, before any file is read) and through the dataclasses a library user builds
(the same :class:`cgjax.errors.ConfigError` message)."""

import math

import pytest

from cgjax.cli import main as cli
from cgjax.diffusion.schedule import ScheduleConfig, make_schedule
from cgjax.diffusion.train import TrainConfig
from cgjax.errors import CgjaxError, ConfigError
from cgjax.sampling.coherent import RejectionConfig
from cgjax.sampling.options import SampleOptions
from cgjax.sampling.solvers import SolverConfig, make_solver

# (command, extra flags, the same value as a library call, message fragment)
BAD = [
    ("impute", ["--replicates", "0"], lambda: SampleOptions(replicates=0),
     "--replicates (SampleOptions.replicates) must be an integer >= 1, got 0"),
    ("impute", ["--replicates", "-1"], lambda: SampleOptions(replicates=-1), "--replicates"),
    ("impute", ["--sampler", "ddim", "--eta", "3"], lambda: SolverConfig("ddim", eta=3.0),
     "--eta (SolverConfig.eta) must be in [0, 1], got 3.0"),
    ("impute", ["--sampler", "ddim", "--eta", "-0.5"], lambda: SolverConfig("ddim", eta=-0.5), "--eta"),
    ("impute", ["--sampler", "ddim", "--eta", "nan"], lambda: SolverConfig("ddim", eta=math.nan), "--eta"),
    ("impute", ["--sampler", "dpm", "--eta", "0.5"], lambda: SolverConfig("dpm", eta=0.5),
     "--eta applies to --sampler ddim only"),
    ("impute", ["--steps", "10"], None, "--steps and --eta apply to --sampler ddim or dpm"),
    ("impute", ["--sampler", "ddim", "--steps", "-5"], lambda: SolverConfig("ddim", -5),
     "--steps (SolverConfig.steps) must be an integer >= 2"),
    ("impute", ["--sampler", "dpm", "--steps", "0"], lambda: SolverConfig("dpm", 0), "--steps"),
    ("impute", ["--sampler", "dpm", "--steps", "1"], lambda: SolverConfig("dpm", 1), "--steps"),
    ("impute", ["--max-attempts", "0"], lambda: RejectionConfig(max_attempts=0),
     "--max-attempts (RejectionConfig.max_attempts) must be an integer >= 1, got 0"),
    ("impute", ["--reject-fraction", "2"], lambda: RejectionConfig(max_fraction=2.0),
     "--reject-fraction (RejectionConfig.max_fraction) must be in [0, 1], got 2.0"),
    ("impute", ["--reject-fraction", "-0.1"], lambda: RejectionConfig(max_fraction=-0.1), "--reject-fraction"),
    ("impute", ["--reject-fraction", "nan"], lambda: RejectionConfig(max_fraction=math.nan), "--reject-fraction"),
    ("impute", ["--max-batch", "0"], lambda: SampleOptions(max_batch=0), "--max-batch"),
    ("impute", ["--seed", "-1"], lambda: SampleOptions(seed=-1), "--seed (SampleOptions.seed)"),
    ("impute", ["--corrector-steps", "-1"], lambda: SampleOptions(corrector_steps=-1),
     "--corrector-steps (SampleOptions.corrector_steps) must be an integer >= 0, got -1"),
    ("impute", ["--corrector-snr", "1.5"], lambda: SampleOptions(corrector_snr=1.5),
     "--corrector-snr (SampleOptions.corrector_snr) must be in (0, 1), got 1.5"),
    ("impute", ["--corrector-snr", "nan"], lambda: SampleOptions(corrector_snr=math.nan), "--corrector-snr"),
    ("impute", ["--composition", "product", "--method", "multi"],
     lambda: SampleOptions(composition="product", method="multi"), "--composition product combines"),
    ("train", ["--epochs", "0"], lambda: TrainConfig(epochs=0), "--epochs (TrainConfig.epochs) must be an integer >= 1"),
    ("train", ["--epochs", "-3"], lambda: TrainConfig(epochs=-3), "--epochs"),
    ("train", ["--timesteps", "0"], lambda: ScheduleConfig(timesteps=0), "--timesteps (ScheduleConfig.timesteps)"),
    ("train", ["--seed", "-1"], lambda: TrainConfig(seed=-1), "--seed (TrainConfig.seed)"),
    ("quickstart", ["--replicates", "0"], lambda: SampleOptions(replicates=0), "--replicates"),
    ("quickstart", ["--epochs", "0"], lambda: TrainConfig(epochs=0), "--epochs"),
]


def _argv(command, flags, tmp_path):
    paths = {"impute": [str(tmp_path / "no_checkpoint"), str(tmp_path / "no_cohort"), "--out", str(tmp_path / "o")],
             "train": [str(tmp_path / "no_cohort"), "--out", str(tmp_path / "o")],
             "quickstart": ["--out", str(tmp_path / "o"), "--checkpoint", str(tmp_path / "ck")]}
    return [command, *paths[command], *flags, "--quiet"]


@pytest.mark.parametrize("command, flags, build, message", BAD, ids=[" ".join([c, *f]) for c, f, _, _ in BAD])
def test_bad_option_is_one_line_naming_the_flag(command, flags, build, message, tmp_path, capsys):
    assert cli(_argv(command, flags, tmp_path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "o").exists() and not (tmp_path / "ck").exists()  # refused before any work
    if build is not None:  # a library user gets the same message, as a ConfigError (a ValueError too)
        with pytest.raises(ConfigError, match=message.split(" (")[0].replace("[", r"\[")) as e:
            build()
        assert isinstance(e.value, ValueError) and isinstance(e.value, CgjaxError)


@pytest.mark.parametrize("build, message", [
    (lambda: SampleOptions(method="magic"), "--method (SampleOptions.method) must be one of"),
    (lambda: SampleOptions(weighting="magic"), "--weighting (SampleOptions.weighting) must be one of"),
    (lambda: SampleOptions(weighting=(1.0, -1.0)), "non-negative"),
    (lambda: SampleOptions(weighting=(0.0, 0.0)), "positive sum"),
    (lambda: SampleOptions(weighting=(1.0, math.inf)), "finite"),
    (lambda: SampleOptions(replicates=1.5), "--replicates"),
    (lambda: SampleOptions(replicates=True), "--replicates"),
    (lambda: SampleOptions(rejection=None), "must be a RejectionConfig"),
    (lambda: SolverConfig("euler"), "--sampler (SolverConfig.kind) must be one of"),
    (lambda: RejectionConfig(cos_threshold=3.0), "cos_threshold must be in [0, 2]"),
    (lambda: RejectionConfig(enabled="yes"), "enabled must be True or False"),
    (lambda: TrainConfig(learning_rate=0.0), "learning_rate"),
    (lambda: TrainConfig(cond_dropout=1.5), "cond_dropout"),
    (lambda: TrainConfig(ema_decay=1.0), "ema_decay"),
    (lambda: TrainConfig(weight_decay=-0.1), "TrainConfig.weight_decay must be a finite number >= 0"),
    (lambda: TrainConfig(single_cond_dropout=-0.1), "single_cond_dropout"),
    (lambda: SampleOptions(composition="sum"), "--composition (SampleOptions.composition) must be one of"),
    (lambda: TrainConfig(batch_size=1), "batch_size"),
    (lambda: make_solver(make_schedule(ScheduleConfig(timesteps=50)), SolverConfig("ddim", 51)),
     "--steps (SolverConfig.steps) must be in [2, 50]"),
    (lambda: make_solver(make_schedule(ScheduleConfig(timesteps=50)), SolverConfig("ddpm", 20)),
     "--sampler ddpm runs every timestep"),
])
def test_bad_library_options_raise_config_error(build, message):
    with pytest.raises(ConfigError) as e:
        build()
    assert message in str(e.value) and "\n" not in str(e.value)


def test_good_options_are_hashable_and_normalised():
    opts = SampleOptions(weighting=[1, 2], replicates=3)
    assert opts.weighting == (1.0, 2.0) and hash(opts) == hash(SampleOptions(weighting=(1.0, 2.0), replicates=3))
