"""Every output names the solver that ran (its kind, steps and eta), and the calibration check
compares a non-ancestral sampler with the ancestral one."""

import dataclasses

import numpy as np

from cgjax import calibration_check as cc
from cgjax.sampling.options import SampleOptions, describe_options
from cgjax.sampling.solvers import SolverConfig


def test_describe_names_kind_steps_and_eta():
    assert describe_options(SampleOptions()) == "coherent, ddpm"
    assert describe_options(SampleOptions(method="multi", solver=SolverConfig("dpm", 50))) == "multi, dpm (50 steps)"
    assert describe_options(SampleOptions(solver=SolverConfig("ddim", 20, 0.5))) == "coherent, ddim (eta 0.5, 20 steps)"


def test_calibration_check_compares_an_accelerated_sampler_with_the_ancestral_one(tiny_trained, tiny_cohort):
    ms = tiny_trained[0]
    T = ms.schedule_cfg.timesteps
    for solver, first, second in [
            (SolverConfig(), "coherent, ddpm", f"coherent, ddim (eta 0, {T} steps)"),
            (SolverConfig("dpm", T), f"coherent, dpm ({T} steps)", "coherent, ddpm")]:
        options = SampleOptions(replicates=3, solver=solver)
        compare = cc.default_compare(ms, options)
        assert dataclasses.replace(compare, solver=options.solver) == options  # only the solver differs
        res = cc.check_cohort(ms, tiny_cohort, options, compare, max_rows=4)
        assert (res["sampler"], res["compare"]) == (first, second)


def test_cli_impute_names_the_solver(tiny_trained, tiny_cohort, tmp_path, capsys):
    from cgjax.cli import main
    from cgjax.data import write_cohort

    incomplete = ~np.all([tiny_cohort.masks[m] for m in tiny_cohort.modalities], axis=0)
    write_cohort(tiny_cohort.subset(np.flatnonzero(incomplete)[:6]), tmp_path / "cohort")  # something to impute
    base = ["impute", str(tiny_trained[1]), str(tmp_path / "cohort"), "--quiet"]
    assert main(base + ["--out", str(tmp_path / "a")]) == 0
    assert "replicate(s), coherent, ddpm, average composition ->" in capsys.readouterr().out  # no anchor: average
    assert main(base + ["--out", str(tmp_path / "b"), "--method", "multi", "--sampler", "dpm", "--steps", "5"]) == 0
    assert "replicate(s), multi, dpm (5 steps) ->" in capsys.readouterr().out
