"""`cgjax impute --complete / --format h5mu`, `cgjax info`, `cgjax --version`, help texts, lazy imports."""

import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

from cgjax.cli import build_parser, main
from cgjax.data import read_cohort, read_mudata, write_cohort
from cgjax.datasets import synthetic_tcga

CKPT = "checkpoints/synthetic_default"
FAST = ["--sampler", "ddim", "--steps", "5", "--quiet"]


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cohort") / "c"
    c = synthetic_tcga(n_samples=30, seed=5)
    write_cohort(c.subset(np.argsort(c.sample_ids)), d, "csv")
    return d


def test_complete_writes_every_sample_flagged_in_the_cohorts_format(cohort_dir, tmp_path, capsys):
    cohort = read_cohort(cohort_dir)
    assert main(["impute", CKPT, str(cohort_dir), "--out", str(tmp_path / "rows"), "--seed", "3",
                 "--replicates", "2", *FAST]) == 0
    assert main(["impute", CKPT, str(cohort_dir), "--out", str(tmp_path / "all"), "--complete", "--seed", "3",
                 "--replicates", "2", *FAST]) == 0
    printed = capsys.readouterr().out
    assert sum((~cohort.masks[m]).any() for m in cohort.modalities) >= 2  # something to impute
    for m in cohort.modalities:
        assert not (tmp_path / "all" / f"{m}.parquet").exists()
        df = pd.read_csv(tmp_path / "all" / f"{m}.csv", dtype={"sample_id": str})
        feats = cohort.feature_names[m]
        assert list(df.columns) == ["sample_id", "replicate", "imputed", *feats]
        assert len(df) == 2 * cohort.n_samples
        for r in (0, 1):
            part = df[df.replicate == r].set_index("sample_id").loc[cohort.sample_ids]
            np.testing.assert_array_equal(part["imputed"].to_numpy(), ~cohort.masks[m])
            obs = cohort.masks[m]
            # observed rows exactly as they were (float32 written with 9 significant digits)
            np.testing.assert_array_equal(part[feats].to_numpy(np.float32)[obs], cohort.data[m][obs])
            # imputed rows exactly those of plain `cgjax impute`
            if obs.all():
                continue
            rows = pd.read_parquet(tmp_path / "rows" / f"{m}.parquet")
            rows = rows[rows.replicate == r].set_index("sample_id")
            np.testing.assert_allclose(part.loc[rows.index, feats].to_numpy(np.float32),
                                       rows[feats].to_numpy(np.float32), rtol=1e-6, atol=1e-6)
        n_imp = int((~cohort.masks[m]).sum())
        assert f"{m}: {cohort.n_samples} samples ({n_imp} imputed) x 2 replicate(s), coherent, ddim (eta 0, 5 steps)" \
            in printed
    assert "samples x 2 replicate(s), coherent, ddim (eta 0, 5 steps), average composition ->" in printed  # the plain impute line


def test_format_h5mu_round_trip(cohort_dir, tmp_path):
    import mudata

    cohort = read_cohort(cohort_dir)
    assert main(["impute", CKPT, str(cohort_dir), "--out", str(tmp_path), "--format", "h5mu", "--seed", "1",
                 *FAST]) == 0
    f = tmp_path / "completed.h5mu"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        md = mudata.read_h5mu(f)
    uns = md.uns["cgjax"]
    assert uns["method"] == "coherent" and uns["composition"] == "auto" and uns["sampler"] == "ddim" and uns["seed"] == 1
    assert (uns["steps"], uns["eta"], uns["replicates"]) == (5, 0.0, 1)  # FAST: ddim, eta 0, 5 steps; 1 replicate
    assert uns["checkpoint"].endswith("synthetic_default")
    back = read_mudata(f)
    pos = pd.Index(back.sample_ids).get_indexer(cohort.sample_ids)
    for m in cohort.modalities:
        flags = md.mod[m].obs["imputed"].to_numpy()
        np.testing.assert_array_equal(flags[pd.Index(md.mod[m].obs_names).get_indexer(cohort.sample_ids)],
                                      ~cohort.masks[m])
        assert back.masks[m].all()
        obs = cohort.masks[m]
        np.testing.assert_array_equal(back.data[m][pos][obs], cohort.data[m][obs])
        np.testing.assert_array_equal(md.mod[m].layers["replicate_0"], md.mod[m].X)  # one replicate: X is it


def test_complete_refuses_decode(cohort_dir, tmp_path, capsys):
    assert main(["impute", CKPT, str(cohort_dir), "--out", str(tmp_path), "--complete", "--decode"]) == 2
    assert "--complete" in capsys.readouterr().err


def test_info_describes_the_shared_checkpoint(capsys):
    import json

    assert main(["info", CKPT]) == 0
    out = capsys.readouterr().out
    meta = json.load(open(f"{CKPT}/cgjax_checkpoint.json"))
    for m in meta["modalities"]:
        assert f"{m}: {meta['dims'][m]} features ({m}_0, {m}_1" in out
    assert "hidden=256" in out and "timesteps=100" in out and "written by cgjax 0.1.0" in out
    assert f"{meta['val_metrics']['rnaseq_from_rppa']['mse']:.4g}" in out
    assert "models: 16 in" in out
    assert main(["info", CKPT, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["val_metrics"] == meta["val_metrics"]
    assert main(["info", "no/such/ckpt"]) == 2


def test_version(capsys):
    import cgjax

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"cgjax {cgjax.__version__}"


def test_lazy_top_level_access_without_importing_everything():
    code = ("import sys, cgjax; assert 'cgjax.evaluate' not in sys.modules and 'jax' not in sys.modules; "
            "cgjax.datasets; cgjax.evaluate; assert 'cgjax.evaluate' in sys.modules; "
            "from cgjax import Imputer, read_mudata; print(Imputer.__name__)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "Imputer"
    import cgjax

    with pytest.raises(AttributeError):
        cgjax.no_such_thing


def _parsers(parser, path=("cgjax",)):
    import argparse

    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, p in action.choices.items():
                yield from _parsers(p, path + (name,))


def test_every_option_has_help_and_shows_its_default():
    import argparse

    from cgjax.cli import HelpFormatter

    n = 0
    for path, p in _parsers(build_parser()):
        text = " ".join(p.format_help().split())
        for a in p._actions:
            if isinstance(a, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                continue
            assert a.help, f"{' '.join(path)} {a.option_strings or a.dest}: no help text"
            if a.option_strings and a.default not in (None, False):
                assert "default" in HelpFormatter("x")._get_help_string(a), (path, a.option_strings)
                n += 1
        assert p.formatter_class is HelpFormatter
    assert n > 20
    impute = dict(_parsers(build_parser()))[("cgjax", "impute")]
    assert "(default: coherent)" in " ".join(impute.format_help().split())
