"""The calibration check (cgjax.calibration_check) against exact samplers: the zoo laws' oracles read
'calibrated' on two different laws, a x1.5 / x0.6 spread around the posterior mean reads
over-dispersed / over-confident, and the spread-disagreement warning fires at the set factor."""

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from cgjax import calibration_check as cc
from cgjax.datasets import zoo
from cgjax.scoring.metrics import expected_range_coverage

R = 20
N = 250


@pytest.fixture(scope="module", autouse=True)
def _single_threaded_blas():
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _oracle(name: str, seed: int):
    """Complete rows of a zoo law and a draw function: exact posterior draws, spread by factor k
    around the exact posterior mean (k = 1: exact)."""
    member = zoo.law(name)
    d = member.oracle.sample_full(12 * N, seed=seed)
    keep = np.flatnonzero(d.present.all(1))[:N]
    rows = {m: d.x[m][keep] for m in member.modalities}

    def draw(k: float, s: int):
        def f(target, given):
            cond = member.conditional(target, given)
            x = cond.sample(s + 7 * list(member.modalities).index(target), R)
            mean = cond.mean()
            return mean + k * (x - mean)
        return f
    return rows, draw


@pytest.mark.parametrize("name", ["five_narrow", "tcga_default"])
def test_exact_sampler_reads_calibrated_and_scaled_ones_do_not(name):
    rows, draw = _oracle(name, seed=3)
    res = cc.check_draws(rows, draw(1.0, 11), names=("oracle", None))
    assert len(rows[next(iter(rows))]) == N
    for m, a in res["modalities"].items():
        assert a["verdict"] == "calibrated", res["lines"]
        assert a["expected_coverage"] == pytest.approx(expected_range_coverage(R))
        assert abs(a["range_coverage"] - a["expected_coverage"]) < 3 * a["coverage_se"]
        assert sum(a["rank_histogram"]) == N * a["features"]
    assert res["warnings"] == []
    wide = cc.check_draws(rows, draw(1.5, 11))
    narrow = cc.check_draws(rows, draw(0.6, 11))
    for m in rows:
        w, n = wide["modalities"][m], narrow["modalities"][m]
        assert w["verdict"] == "over-dispersed" and w["range_coverage"] > w["expected_coverage"]
        assert w["centre_excess"] > 0  # a hump
        assert n["verdict"] == "over-confident" and n["range_coverage"] < n["expected_coverage"]
        assert n["centre_excess"] < 0  # a U
    assert len(wide["warnings"]) == len(rows) and "over-dispersed" in wide["warnings"][0]
    assert "over-confident" in narrow["lines"][0]


def test_shifted_sampler_reads_miscalibrated():
    """Exact spread but every sample shifted by half a posterior sd: the ranks pile up on one side."""
    rows, draw = _oracle("five_narrow", seed=4)
    exact = draw(1.0, 5)
    shifted = lambda t, g: exact(t, g) - 0.5 * exact(t, g).std(0, ddof=1)
    res = cc.check_draws(rows, shifted)
    for a in res["modalities"].values():
        assert a["verdict"] != "calibrated"
        assert a["pit_mean_shift"] > 0  # the truth sits above the samples
        assert a["uniformity_p"] < 1e-3


def test_spread_disagreement_fires_at_the_factor():
    rows, draw = _oracle("tcga_default", seed=5)
    same = cc.check_draws(rows, draw(1.0, 1), draw(1.0, 2), names=("a", "b"), spread_factor=1.5)
    assert not any("disagree" in w for w in same["warnings"])
    for a in same["modalities"].values():
        assert 1 / 1.5 < a["spread_ratio"] < 1.5
    wide = cc.check_draws(rows, draw(1.0, 1), draw(1.7, 2), names=("a", "b"), spread_factor=1.5)
    narrow = cc.check_draws(rows, draw(1.0, 1), draw(0.55, 2), names=("a", "b"), spread_factor=1.5)
    for res, k in ((wide, 1.7), (narrow, 0.55)):
        flagged = [w for w in res["warnings"] if "disagree" in w]
        assert len(flagged) == len(rows)
        assert "the second one's spread is the less calibrated" in flagged[0]
        for a in res["modalities"].values():
            assert a["spread_ratio"] == pytest.approx(k, rel=0.05)
    # just inside the factor: no warning
    inside = cc.check_draws(rows, draw(1.0, 1), draw(1.3, 2), names=("a", "b"), spread_factor=1.5)
    assert not any("disagree" in w for w in inside["warnings"])


def test_method_notes_point_at_the_calibrated_method():
    rows, draw = _oracle("tcga_default", seed=6)
    wide = cc.check_draws(rows, draw(1.6, 1), names=("coherent, ddpm", None))
    exact = cc.check_draws(rows, draw(1.0, 2), names=("multi, ddpm", None))
    notes = cc.method_notes(wide, exact, "multi")
    assert len(notes) == len(rows)  # every modality: over-dispersed against calibrated
    assert notes[0].startswith(f"{next(iter(rows))}: multi, ddpm is calibrated where coherent, ddpm is over-dispersed")
    assert notes[0].endswith("consider --method multi")
    assert cc.method_notes(exact, wide, "coherent") == []  # the checked one is calibrated: nothing to say
    assert cc.method_notes(wide, wide, "multi") == []  # neither is


def test_clustered_se_accounts_for_correlated_features():
    """Features copied D times: the entries are one per row, so the se is that of N entries, not N D."""
    rng = np.random.default_rng(0)
    ind = (rng.random((400, 1)) < 0.9).astype(float).repeat(16, axis=1)
    se = cc._clustered_se(ind, 0.09)
    assert se == pytest.approx(np.sqrt(0.09 / 400), rel=0.2)
    independent = (rng.random((400, 16)) < 0.9).astype(float)
    assert cc._clustered_se(independent, 0.09) == pytest.approx(np.sqrt(0.09 / 6400), rel=0.2)


def test_bad_input_is_one_line_error():
    from cgjax.errors import CgjaxError, ConfigError

    with pytest.raises(CgjaxError, match="samples must be"):
        cc.assess(np.zeros((1, 3, 2)), np.zeros((3, 2)))
    with pytest.raises(ConfigError, match="spread_factor"):
        cc.check_draws({"a": np.zeros((3, 2))}, lambda t, g: np.zeros((2, 3, 2)), spread_factor=1.0)


# ---- through the CLI, with tiny models ------------------------------------------------------------

@pytest.fixture(scope="module")
def trained_cli(tiny_trained, tiny_cohort, tmp_path_factory):
    """The session's tiny checkpoint (conftest, trained without the check) copied, its cohort
    written to disk, and a config file of the same settings, so that ``cgjax train`` on them
    resumes with nothing left to train and only runs the check."""
    import dataclasses
    import json
    import shutil

    from conftest import TINY_ARCH, TINY_SCHED, TINY_TRAIN

    from cgjax import checkpoint
    from cgjax.cli import main as cli
    from cgjax.data import write_cohort

    d = tmp_path_factory.mktemp("calcheck")
    shutil.copytree(tiny_trained[1], d / "ck")
    assert checkpoint.read_meta(d / "ck").get("calibration") is None  # optional: absent without the check
    write_cohort(tiny_cohort, d / "cohort")
    (d / "tiny.json").write_text(json.dumps({"arch": TINY_ARCH.to_dict(), "schedule": dataclasses.asdict(TINY_SCHED),
                                             "train": TINY_TRAIN.to_dict()}))
    return d, cli


def test_no_check_and_bad_flags(trained_cli, capsys):
    import shutil

    from cgjax import checkpoint

    d, cli = trained_cli
    shutil.copytree(d / "ck", d / "ck2")
    capsys.readouterr()
    assert cli(["train", str(d / "cohort"), "--out", str(d / "ck2"), "--config", str(d / "tiny.json"), "--quiet",
                "--no-calibration-check"]) == 0
    assert "calibration" not in capsys.readouterr().out
    assert checkpoint.read_meta(d / "ck2").get("calibration") is None
    assert cli(["train", str(d / "cohort"), "--out", str(d / "ck3"), "--config", str(d / "tiny.json"), "--quiet",
                "--calibration-replicates", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--calibration-replicates" in err[0]
    assert not (d / "ck3").exists()


def test_train_runs_the_check_prints_it_and_stores_it(trained_cli, capsys):
    """``cgjax train`` on a finished checkpoint resumes with nothing left to train and runs the check."""
    from cgjax import checkpoint
    from cgjax.data import read_cohort

    d, cli = trained_cli
    capsys.readouterr()
    assert cli(["train", str(d / "cohort"), "--out", str(d / "ck"), "--config", str(d / "tiny.json"), "--quiet",
                "--calibration-rows", "12", "--calibration-replicates", "10"]) == 0
    out = capsys.readouterr().out
    res = checkpoint.read_meta(d / "ck")["calibration"]
    ms = checkpoint.load(d / "ck")  # the metadata still loads as a checkpoint
    n_val = len(cc.validation_rows(ms, read_cohort(d / "cohort"))[ms.modalities[0]])
    assert set(res["modalities"]) == set(ms.modalities)
    assert res["replicates"] == 10 and res["rows"] == min(12, n_val) == 12  # capped at --calibration-rows
    assert res["sampler"] == "coherent, ddpm" and res["compare"] == f"coherent, ddim (eta 0, {ms.schedule_cfg.timesteps} steps)"
    for m, a in res["modalities"].items():
        assert sum(a["rank_histogram"]) == res["rows"] * ms.dims[m]
        assert a["expected_coverage"] == pytest.approx(9 / 11)
        assert a["spread_ratio"] == pytest.approx(a["compare"]["spread"] / a["spread"])
        assert f"  {m}: " in out
    assert f"calibration check on {res['rows']} validation rows, 10 replicates" in out
    # a warning line for every miscalibrated modality and spread disagreement
    bad = [m for m, a in res["modalities"].items() if a["verdict"] != "calibrated"]
    assert sum(line.startswith("WARNING: ") for line in out.splitlines()) == len(res["warnings"]) >= len(bad)
    # coherent is checked: multi too, on the same rows and replicates, with a note where only it is calibrated
    other = res["methods"]["multi"]
    assert other["sampler"] == "multi, ddpm" and (other["rows"], other["replicates"]) == (res["rows"], 10)
    assert set(other["modalities"]) == set(ms.modalities)
    assert "the same check with --method multi (multi, ddpm):" in out
    assert res["notes"] == cc.method_notes(res, other, "multi")
    for note in res["notes"]:
        assert f"note: {note}" in out and note.endswith("consider --method multi")


def test_evaluate_reports_the_check_with_its_figure(trained_cli, capsys):
    import json

    from cgjax import checkpoint

    d, cli = trained_cli
    ms = checkpoint.load(d / "ck")
    base = ["evaluate", str(d / "ck"), str(d / "cohort"), "--quick", "--replicates", "2", "--steps", "reconstruction",
            "--oracle", "none", "--quiet"]
    assert cli(base + ["--out", str(d / "ev")]) == 0
    stdout = capsys.readouterr().out
    text = (d / "ev" / "report.md").read_text()
    check = json.loads((d / "ev" / "calibration_check.json").read_text())
    assert (d / "ev" / "figures" / "calibration_pit.png").stat().st_size > 0
    assert "## Calibration check (validation split)" in text and "![PIT histograms](figures/calibration_pit.png)" in text
    assert check["replicates"] == cc.DEFAULT_REPLICATES and check["compare"].startswith("coherent, ddim (eta 0")
    for m, a in check["modalities"].items():  # one table row per modality, with its verdict and coverage
        assert f"| {m} | {a['verdict']} | {a['range_coverage']:.3f} | {a['expected_coverage']:.3f} |" in text
    assert json.loads((d / "ev" / "metrics.json").read_text())  # the rest of the report is still written
    assert stdout.count("WARNING: ") == len(check["warnings"])
    assert set(check["modalities"]) == set(ms.modalities)
    # coherent is checked: multi too, on the same rows and replicates, in the report and with its notes
    other = check["methods"]["multi"]
    assert other["sampler"] == "multi, ddpm" and (other["rows"], other["replicates"]) == (check["rows"], check["replicates"])
    assert other["compare"] is None and set(other["modalities"]) == set(ms.modalities)
    assert "The same check with multi, ddpm, on the same rows:" in text
    for m, a in other["modalities"].items():
        assert f"| {m} | {a['verdict']} | {a['range_coverage']:.3f} | {a['coverage_z']:+.1f} |" in text
    assert check["notes"] == cc.method_notes(check, other, "multi")
    assert stdout.count("note: ") == len(check["notes"]) and text.count("- note: ") == len(check["notes"])
    assert cli(base + ["--out", str(d / "ev2"), "--no-calibration-check"]) == 0
    assert "Calibration check" not in (d / "ev2" / "report.md").read_text()
    assert not (d / "ev2" / "calibration_check.json").exists()
