"""Cohorts from per-cancer files with different feature sets: structural gaps are found, dropped
by default (or imputed and reported on request), filled fractions are measured, and a cancer type
whose profile the imputer made constant is warned about, by name."""

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cgjax.data import quality
from cgjax.embedding import EmbeddingOptions
from cgjax.data.prepare import PrepareOptions, prepare, summary
from cgjax.data.xena import read_xena
from cgjax.errors import CohortError

OPTS = dict(embedding=EmbeddingOptions(latent_dim=2, methods={"cna": "pca", "rppa": "pca"}))


def _write(path: Path, header, rows):
    path.write_text("\n".join("\t".join(map(str, r)) for r in [header] + rows) + "\n")


def xena_dir(root: Path, cna_genes: dict, n: dict, seed=0, holes=((3, 1),)) -> Path:
    """Cohorts code -> n samples; CNA file with the genes cna_genes[code] (absolute copy numbers
    around 2), protein file P0..P4 for everyone; ``holes`` (row, column) NaN cells in AAA's CNA."""
    rng = np.random.default_rng(seed)
    root.mkdir()
    for code, k in n.items():
        ids = [f"TCGA-{code[:2]}-{i:04d}-01A" for i in range(k)]
        genes = cna_genes[code]
        cn = np.round(2 * np.exp2(0.3 * rng.normal(size=(len(genes), k))), 3).astype(object)
        if code == "AAA":
            for i, j in holes:
                cn[j, i] = "NA"
        _write(root / f"TCGA-{code}.gene-level_absolute.tsv", ["Ensembl_ID", *ids],
               [[g, *cn[j]] for j, g in enumerate(genes)])
        rppa = rng.normal(size=(5, k))
        _write(root / f"TCGA-{code}.protein.tsv", ["peptide_target", *ids],
               [[f"P{j}", *[f"{v:.4f}" for v in rppa[j]]] for j in range(5)])
    return root


def test_structural_gaps_found_and_dropped(tmp_path):
    genes = {"AAA": [f"G{j}" for j in range(10)], "BBB": [f"G{j}" for j in range(6)] + ["G10"]}
    raw = read_xena(xena_dir(tmp_path / "x", genes, {"AAA": 60, "BBB": 20}))
    gaps = quality.structural_gaps(raw.modalities, raw.clinical["cancer_type"])
    cna = gaps["cna"]
    assert sorted(cna.columns[cna.loc["BBB"]]) == ["G6", "G7", "G8", "G9"]
    assert list(cna.columns[cna.loc["AAA"]]) == ["G10"]  # the one sporadic hole is not structural
    assert not gaps["rppa"].to_numpy().any()
    prepared = prepare(raw, PrepareOptions(**OPTS))
    feats = prepared.features["cna"]
    assert sorted(feats.columns) == [f"G{j}" for j in range(6)]
    info = prepared.embedding["cna"].info
    assert info["structural_dropped"] == 5 and info["structural_filled_fraction"] == 0.0
    # the sporadic hole (row 3, gene G1 of AAA) is the only filled cell of 80 x 6
    assert info["filled_fraction"] == pytest.approx(1 / (80 * 6))
    assert prepared.embedding.info["structural"] == "drop" and info["warnings"] == []
    assert "features absent from some type's table dropped" in summary(prepared)


def test_no_common_feature_is_an_error_and_impute_warns_by_type(tmp_path):
    # the case: the small type's file shares no gene with the big one
    genes = {"AAA": [f"G{j}" for j in range(10)], "BBB": ["H0", "H1", "H2"]}
    raw = read_xena(xena_dir(tmp_path / "x", genes, {"AAA": 100, "BBB": 6}))
    with pytest.raises(CohortError, match="'cna'.*no feature is measured in every cancer type"):
        prepare(raw, PrepareOptions(**OPTS))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepared = prepare(raw, PrepareOptions(structural="impute", **OPTS))
    info = prepared.embedding["cna"].info
    feats = prepared.features["cna"]
    # H* are missing in 94% of the rows: the sparse filter drops them; G* survive (6% missing), and
    # every BBB value of them is filled: 6 of 106 rows are structural gaps, plus the sporadic hole
    assert sorted(feats.columns) == [f"G{j}" for j in range(10)]
    assert info["structural_filled_fraction"] == pytest.approx(6 / 106)
    assert info["filled_fraction"] == pytest.approx(6 / 106 + 1 / 1060)
    bbb = feats.loc[[i for i in feats.index if i.startswith("TCGA-BB")]]
    assert (bbb.nunique() == 1).all()  # one identical filled profile for the whole type
    assert any("cancer type 'BBB'" in w and "'cna'" in w for w in info["warnings"])
    assert any("cancer type 'BBB'" in str(c.message) for c in caught)
    assert "warning: modality 'cna': cancer type 'BBB'" in summary(prepared)
    assert not any("'rppa'" in w for w in prepared.embedding["rppa"].info["warnings"])


def test_degenerate_rows_and_filled_fraction_by_hand():
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(6, 4)), index=[f"s{i}" for i in range(6)], columns=list("abcd"))
    x.loc["s0"] = 1.5  # a constant row
    types = pd.Series(["A", "A", "A", "B", "B", "B"], index=x.index)
    w = quality.degenerate_warnings("m", x, types)
    assert len(w) == 1 and "1 sample(s) have a constant profile (e.g. 's0')" in w[0]
    x.loc[["s3", "s4", "s5"]] = x.loc["s3"].to_numpy()  # type B: one shared profile
    assert any("cancer type 'B'" in m for m in quality.degenerate_warnings("m", x, types))
    raw = x.copy()
    raw.iloc[0, 0] = raw.iloc[1, 2] = np.nan
    assert quality.filled_fraction(raw, x)["filled"] == pytest.approx(2 / 24)
