"""The default sampler, ``auto``: resolved against the model set's networks (DPM-Solver++ on
min(50, T) steps for v-prediction, the ancestral sampler otherwise), and exactly the samples of the
solver it names, wherever a user samples (library, calibration check, Imputer provenance)."""

import dataclasses

import numpy as np
import pytest

from cgjax import calibration_check as cc
from cgjax.diffusion.schedule import ScheduleConfig, make_schedule
from cgjax.ensemble import resolved_options, sample_target
from cgjax.errors import ConfigError
from cgjax.pipeline import scaled_inputs
from cgjax.sampling.options import SampleOptions, describe_options
from cgjax.sampling.solvers import SolverConfig, make_solver, resolve


def test_resolve_names_the_measured_default():
    assert resolve(SolverConfig(), "v", 100) == SolverConfig("dpm", 50)
    assert resolve(SolverConfig(), "v", 30) == SolverConfig("dpm", 30)  # never more steps than T
    assert resolve(SolverConfig(), "eps", 1000) == SolverConfig("ddpm")
    assert resolve(SolverConfig(), "x0", 100) == SolverConfig("ddpm")  # not measured: the paper's
    explicit = SolverConfig("ddim", 20, 1.0)
    assert resolve(explicit, "v", 100) is explicit
    assert SampleOptions().solver.kind == "auto"
    with pytest.raises(ConfigError, match="resolve it first"):
        make_solver(make_schedule(ScheduleConfig(timesteps=100)), SolverConfig())


def _as_v(ms):
    """The same networks, labelled v-prediction: only the choice of solver reads ``ms.arch``
    (each group's denoiser config keeps converting the outputs as trained)."""
    return dataclasses.replace(ms, arch=dataclasses.replace(ms.arch, parametrisation="v"))


@pytest.mark.parametrize("as_v", [False, True])
def test_default_samples_are_the_named_solvers(tiny_trained, tiny_cohort, as_v):
    ms = _as_v(tiny_trained[0]) if as_v else tiny_trained[0]
    T = ms.schedule_cfg.timesteps
    named = SolverConfig("dpm", min(50, T)) if as_v else SolverConfig("ddpm")
    other = SolverConfig("ddpm") if as_v else SolverConfig("dpm", min(50, T))
    rows = scaled_inputs(ms, tiny_cohort.split("test"))
    target = ms.modalities[0]
    given = {m: rows[m][:8] for m in ms.modalities[1:]}
    draw = lambda solver: sample_target(ms, target, given, SampleOptions(method="coherent", solver=solver,
                                                                         replicates=2, seed=3)).x
    default = draw(SolverConfig())
    np.testing.assert_array_equal(default, draw(named))
    assert not np.allclose(default, draw(other))  # so the equality above says which solver ran
    assert resolved_options(ms, SampleOptions()).solver == named


def test_calibration_check_names_the_resolved_sampler_and_compares_with_the_other_kind(tiny_trained, tiny_cohort):
    for ms, first, second in [
            (tiny_trained[0], "coherent, ddpm", "coherent, ddim (eta 0, {T} steps)"),
            (_as_v(tiny_trained[0]), "coherent, dpm ({T} steps)", "coherent, ddpm")]:
        T = ms.schedule_cfg.timesteps
        options = SampleOptions(replicates=3)
        compare = cc.default_compare(ms, options)
        res = cc.check_cohort(ms, tiny_cohort, options, compare, max_rows=4)
        assert (res["sampler"], res["compare"]) == (first.format(T=T), second.format(T=T))
        assert describe_options(resolved_options(ms, compare)) == second.format(T=T)


def test_cli_impute_names_the_resolved_sampler(tiny_trained, tiny_cohort, tmp_path, capsys):
    from cgjax.cli import main
    from cgjax.data import write_cohort

    incomplete = ~np.all([tiny_cohort.masks[m] for m in tiny_cohort.modalities], axis=0)
    cohort = tiny_cohort.subset(np.flatnonzero(incomplete)[:6])  # rows with something to impute
    write_cohort(cohort, tmp_path / "cohort")
    assert main(["impute", str(tiny_trained[1]), str(tmp_path / "cohort"), "--out", str(tmp_path / "o"),
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "replicate(s), coherent, ddpm ->" in out and "auto" not in out  # eps networks: the paper's
