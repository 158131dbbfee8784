"""Readers of the Xena GDC-hub files and of miniACC (cgjax.data.xena).

Real TCGA downloads are not available in tests: every Xena file is written here by hand in the
hub's layout (features x samples, tab-separated, first column = feature id).
"""

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cgjax.data import xena
from cgjax.data.xena import (dedup_trimmed, discover_xena, read_miniacc, read_wsi_embeddings, read_xena,
                             read_xena_clinical, read_xena_cohort, read_xena_matrix, read_xena_survival,
                             trim_barcode, vial_letter)
from cgjax.errors import CohortError

MINIACC = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "miniacc"

S1, S2, S3 = "TCGA-AA-0001-01A", "TCGA-AA-0002-01A", "TCGA-AA-0003-01A"


def write(path: Path, lines) -> Path:
    path.write_text("\n".join("\t".join(map(str, row)) for row in lines) + "\n")
    return path


def matrix(path, samples=(S1, S2), features=("g1", "g2", "g3"), start=0.0, id_name="Ensembl_ID"):
    rows = [[id_name, *samples]]
    for i, f in enumerate(features):
        rows.append([f, *[start + 10 * i + j for j in range(len(samples))]])
    return write(path, rows)


# ---- barcodes ---------------------------------------------------------------------------------
def test_trim_barcode_drops_vial_letter():
    assert trim_barcode("TCGA-OR-A5J1-01A") == "TCGA-OR-A5J1-01"
    assert trim_barcode("TCGA-OR-A5J1-01B") == "TCGA-OR-A5J1-01"
    assert trim_barcode("TCGA-OR-A5J1-11A") == "TCGA-OR-A5J1-11"  # normal tissue stays distinct
    # aliquot and slide barcodes are cut to the sample
    assert trim_barcode("TCGA-OR-A5J1-01A-11R-A29S-07") == "TCGA-OR-A5J1-01"
    assert trim_barcode("TCGA-OR-A5J1-01Z-00-DX1.6E4B2C7A") == "TCGA-OR-A5J1-01"
    # an already trimmed TCGA sample id is left alone
    assert trim_barcode("TCGA-OR-A5J1-01") == "TCGA-OR-A5J1-01"
    # other ids: the reference rule, drop the last character
    assert trim_barcode("P7x") == "P7"
    assert vial_letter("TCGA-OR-A5J1-01B") == "B"
    assert vial_letter("TCGA-OR-A5J1-01Z-00-DX1") == "Z"
    with pytest.raises(CohortError, match="too short"):
        trim_barcode("x")


def test_dedup_trimmed_keeps_first_vial():
    df = pd.DataFrame({"f": [1.0, 2.0, 3.0, 4.0]},
                      index=["TCGA-AA-0001-01B", "TCGA-AA-0002-01A", "TCGA-AA-0001-01A",
                             "TCGA-AA-0001-11A"])
    out, orig = dedup_trimmed(df, return_original=True)
    assert list(out.index) == ["TCGA-AA-0001-01", "TCGA-AA-0001-11", "TCGA-AA-0002-01"]
    assert out["f"].tolist() == [3.0, 4.0, 2.0]  # vial A (3.0) beats vial B (1.0)
    assert orig["TCGA-AA-0001-01"] == "TCGA-AA-0001-01A"
    # same vial, two slides: the full barcode breaks the tie, whatever the file order
    slides = pd.DataFrame({"f": [2.0, 1.0]}, index=["TCGA-AA-0001-01Z-00-DX2", "TCGA-AA-0001-01Z-00-DX1"])
    assert dedup_trimmed(slides)["f"].tolist() == [1.0]


def test_dedup_trimmed_identical_barcodes_is_error():
    df = pd.DataFrame({"f": [1.0, 2.0]}, index=[S1, S1])
    with pytest.raises(CohortError, match=r"mine.tsv: barcode 'TCGA-AA-0001-01A' appears more than once"):
        dedup_trimmed(df, source="mine.tsv")


# ---- matrices ---------------------------------------------------------------------------------
def test_read_xena_matrix_transposes_to_samples_by_features(tmp_path):
    p = write(tmp_path / "TCGA-XX.protein.tsv",
              [["peptide_target", S1, S2], ["p1", 1.5, "NA"], ["p2", "", -2], ["p3", "3e-1", 4]])
    df = read_xena_matrix(p)
    assert df.shape == (2, 3) and df.dtypes.unique().tolist() == [np.float32]
    assert df.index.tolist() == [S1, S2] and df.columns.tolist() == ["p1", "p2", "p3"]
    np.testing.assert_allclose(df.loc[S1].to_numpy(), [1.5, np.nan, 0.3], rtol=1e-6)
    np.testing.assert_allclose(df.loc[S2].to_numpy(), [np.nan, -2.0, 4.0])


def test_read_xena_matrix_gzip(tmp_path):
    p = tmp_path / "TCGA-XX.star_counts.tsv.gz"
    with gzip.open(p, "wt") as fh:
        fh.write(f"Ensembl_ID\t{S1}\nENSG1\t2.0\n")
    assert read_xena_matrix(p).loc[S1, "ENSG1"] == 2.0


@pytest.mark.parametrize("lines, message", [
    # R-style header without the feature id column: data rows have one field more
    ([[S1, S2], ["g1", 1, 2]], r"line 2 has 3 fields but the header has 2: the header lacks the first \(feature id\)"),
    # header starts with a barcode: the feature id column is missing
    ([[S1, S2], [1, 2]], r"first header cell 'TCGA-AA-0001-01A' is a sample barcode"),
    # samples x features
    ([["sample", "g1", "g2"], [S1, 1, 2], [S2, 3, 4]], r"first column holds sample barcodes .* transposed"),
    ([["id", S1, S2], ["g1", 1, 2], ["g2", 3]], r"line 3 has 2 fields but the header has 3"),
    ([["id", S1, ""], ["g1", 1, 2]], r"header column 3 is empty"),
    ([["id", S1, S1], ["g1", 1, 2]], r"barcode 'TCGA-AA-0001-01A' appears twice in the header \(columns 2 and 3\)"),
    ([["id", S1], ["g1", 1], ["g2", 2], ["g1", 3]], r"feature 'g1' appears twice \(lines 2 and 4\)"),
    ([["id", S1], ["", 1]], r"line 2 has an empty feature id"),
    ([["id", S1, S2], ["g1", 1, 2], ["g2", 3, "high"]],
     r"line 3 \(feature 'g2'\), column 'TCGA-AA-0002-01A': value 'high' is not a finite number"),
    ([["id", S1], ["g1", "inf"]], r"line 2 \(feature 'g1'\), column 'TCGA-AA-0001-01A': value 'inf'"),
    ([["id", S1]], r"no feature rows after the header"),
    ([["just_one_column"], ["g1"]], r"the header has a single field"),
])
def test_read_xena_matrix_errors(tmp_path, lines, message):
    p = write(tmp_path / "TCGA-XX.protein.tsv", lines)
    with pytest.raises(CohortError, match=message) as e:
        read_xena_matrix(p)
    assert str(p) in str(e.value)


def test_read_xena_matrix_missing_or_empty_file(tmp_path):
    with pytest.raises(CohortError, match=r"nope.tsv: matrix file does not exist"):
        read_xena_matrix(tmp_path / "nope.tsv")
    (tmp_path / "empty.tsv").write_text("")
    with pytest.raises(CohortError, match=r"empty.tsv: empty file"):
        read_xena_matrix(tmp_path / "empty.tsv")


# ---- clinical and survival --------------------------------------------------------------------
def test_read_xena_clinical_groups_stage(tmp_path):
    stages = ["Stage 0", "Stage IA", "Stage IS", "Stage IIC", "Stage IIIB", "Stage IVA", "Stage X",
              "Not Reported", ""]
    rows = [["sample", "ajcc_pathologic_stage.diagnoses", "gender.demographic"]]
    rows += [[f"TCGA-AA-{i:04d}-01A", s, "female"] for i, s in enumerate(stages)]
    rows += [["TCGA-AA-0001-01B", "Stage IV", "female"]]  # second vial of sample 1: dropped
    p = write(tmp_path / "TCGA-ACC.clinical.tsv", rows)
    df = read_xena_clinical(p)
    assert df.index[0] == "TCGA-AA-0000-01" and len(df) == len(stages)
    np.testing.assert_array_equal(df["stage"].to_numpy(), [1, 1, 1, 2, 3, 4, np.nan, np.nan, np.nan])
    assert (df["cancer_type"] == "ACC").all()
    assert df.loc["TCGA-AA-0001-01", "stage_raw"] == "Stage IA"


def test_read_xena_clinical_unstaged_cohort_and_errors(tmp_path):
    p = write(tmp_path / "TCGA-GBM.clinical.tsv", [["sample", "gender.demographic"], [S1, "male"]])
    assert np.isnan(read_xena_clinical(p).loc["TCGA-AA-0001-01", "stage"])
    with pytest.raises(CohortError, match=r"TCGA-GBM.clinical.tsv: no column 'stage'"):
        read_xena_clinical(p, stage_column="stage")
    p = write(tmp_path / "TCGA-X.clinical.tsv", [["sample", "ajcc_pathologic_stage"], [S1, "Stage V"]])
    with pytest.raises(CohortError, match=r"TCGA-X.clinical.tsv: column 'ajcc_pathologic_stage': sample "
                                          r"'TCGA-AA-0001-01A': unrecognised stage 'Stage V'"):
        read_xena_clinical(p)
    p = write(tmp_path / "TCGA-Y.clinical.tsv", [["sample", "x"], [S1, 1], [S1, 2]])
    with pytest.raises(CohortError, match=r"TCGA-Y.clinical.tsv: sample 'TCGA-AA-0001-01A' appears more "
                                          r"than once \(line 3\)"):
        read_xena_clinical(p)


def test_read_xena_survival(tmp_path):
    p = write(tmp_path / "TCGA-XX.survival.tsv", [
        ["sample", "OS", "OS.time", "_PATIENT"],
        [S1, 1, 100, "TCGA-AA-0001"],
        ["TCGA-AA-0001-01B", 0, 999, "TCGA-AA-0001"],  # same trimmed id: first row kept
        [S2, "NA", 50, "TCGA-AA-0002"],                 # NaN OS: dropped
        [S3, 0, 300, "TCGA-AA-0003"],
    ])
    df = read_xena_survival(p)
    assert df.index.tolist() == ["TCGA-AA-0001-01", "TCGA-AA-0003-01"]
    assert df["os_time"].tolist() == [100.0, 300.0] and df["os_event"].tolist() == [1.0, 0.0]


@pytest.mark.parametrize("rows, message", [
    ([["sample", "OS", "_PATIENT"], [S1, 1, "x"]], r"missing column\(s\) \['OS.time'\]"),
    ([["sample", "OS", "OS.time"], [S1, 1, "ten"]],
     r"line 2 \(sample 'TCGA-AA-0001-01A'\), column 'OS.time': value 'ten' is not a number"),
    ([["sample", "OS", "OS.time"], [S1, 2, 10]], r"column 'OS': value 2 must be 0 or 1"),
    ([["sample", "OS", "OS.time"], [S1, 1, -5]], r"column 'OS.time': negative survival time -5"),
    ([["sample", "OS", "OS.time"], [S1, 1, 5], [S1, 1, 5]], r"sample 'TCGA-AA-0001-01A' appears more than once"),
])
def test_read_xena_survival_errors(tmp_path, rows, message):
    p = write(tmp_path / "TCGA-XX.survival.tsv", rows)
    with pytest.raises(CohortError, match=message) as e:
        read_xena_survival(p)
    assert str(p) in str(e.value)


# ---- WSI --------------------------------------------------------------------------------------
def _h5(path, data, name="features"):
    import h5py
    with h5py.File(path, "w") as h:
        h.create_dataset(name, data=np.asarray(data, dtype=np.float32))


def test_read_wsi_embeddings_h5_and_csv(tmp_path):
    d = tmp_path / "slides"
    d.mkdir()
    _h5(d / "TCGA-AA-0001-01Z-00-DX1.h5", [1, 2, 3])
    _h5(d / "TCGA-AA-0001-01Z-00-DX2.h5", [7, 8, 9])
    _h5(d / "TCGA-AA-0002-01Z-00-DX1.h5", [4, 5, 6])
    df = read_wsi_embeddings(d)
    assert df.shape == (3, 3) and df.columns.tolist() == ["wsi_0", "wsi_1", "wsi_2"]
    one = dedup_trimmed(df)  # exactly one slide per sample
    assert one.loc["TCGA-AA-0001-01"].tolist() == [1, 2, 3]

    csv = tmp_path / "wsi.csv"
    csv.write_text(f"sample_id,pc1,pc2\n{S1},0.5,1\n{S2},2,3\n")
    df = read_wsi_embeddings(csv)
    assert df.loc[S1].tolist() == [0.5, 1.0] and df.dtypes.unique().tolist() == [np.float32]


def test_read_wsi_embeddings_errors(tmp_path):
    d = tmp_path / "slides"
    d.mkdir()
    with pytest.raises(CohortError, match=r"slides: no .h5 slide embedding files"):
        read_wsi_embeddings(d)
    _h5(d / "a.h5", [1, 2, 3])
    _h5(d / "b.h5", [1, 2])
    with pytest.raises(CohortError, match=r"b.h5: embedding has 2 dimensions but a.h5 has 3"):
        read_wsi_embeddings(d)
    (d / "b.h5").unlink()
    _h5(d / "c.h5", [[1, 2, 3]])
    with pytest.raises(CohortError, match=r"c.h5: dataset 'features' has shape \(1, 3\); expected a 1-D"):
        read_wsi_embeddings(d)
    (d / "c.h5").unlink()
    _h5(d / "d.h5", [1, 2, 3], name="coords")
    with pytest.raises(CohortError, match=r"d.h5: no dataset 'features' \(found \['coords'\]\)"):
        read_wsi_embeddings(d)
    (d / "d.h5").unlink()
    _h5(d / "e.h5", [1, np.nan, 3])
    with pytest.raises(CohortError, match=r"e.h5: embedding has a non-finite value at position 1"):
        read_wsi_embeddings(d)
    csv = tmp_path / "wsi.csv"
    csv.write_text(f"sample_id,pc1\n{S1},abc\n")
    with pytest.raises(CohortError, match=r"wsi.csv: line 2 \(sample 'TCGA-AA-0001-01A'\), column 'pc1': "
                                          r"value 'abc' is not a number"):
        read_wsi_embeddings(csv)
    with pytest.raises(CohortError, match=r"nothing: WSI embedding path does not exist"):
        read_wsi_embeddings(tmp_path / "nothing")


# ---- cohorts ----------------------------------------------------------------------------------
def _cohort_dir(root: Path, code: str, samples, with_survival=True):
    matrix(root / f"TCGA-{code}.star_counts.tsv", samples=samples, features=("ENSG1", "ENSG2"))
    matrix(root / f"TCGA-{code}.gene-level_absolute.tsv", samples=samples, features=("ENSG1", "ENSG3"))
    matrix(root / f"TCGA-{code}.protein.tsv", samples=samples[:1], features=("AKT", "EGFR"))
    write(root / f"TCGA-{code}.clinical.tsv",
          [["sample", "ajcc_pathologic_stage.diagnoses"], *[[s, "Stage II"] for s in samples]])
    if with_survival:
        write(root / f"TCGA-{code}.survival.tsv",
              [["sample", "OS", "OS.time", "_PATIENT"], *[[s, 1, 10, s[:12]] for s in samples]])


def test_discover_and_read_xena(tmp_path):
    _cohort_dir(tmp_path, "AAA", ["TCGA-AA-0001-01A", "TCGA-AA-0002-01A"])
    sub = tmp_path / "more"
    sub.mkdir()
    _cohort_dir(sub, "BBB", ["TCGA-BB-0001-01A"], with_survival=False)
    (tmp_path / "README.txt").write_text("ignored")
    found = discover_xena(tmp_path)
    assert list(found) == ["AAA", "BBB"]
    assert found["BBB"].survival is None and found["AAA"].protein.name == "TCGA-AAA.protein.tsv"

    slides = tmp_path / "slides"
    slides.mkdir()
    _h5(slides / "TCGA-AA-0001-01Z-00-DX1.h5", [1, 2])
    _h5(slides / "TCGA-ZZ-9999-01Z-00-DX1.h5", [3, 4])  # not in any cohort: ignored
    raw = read_xena(tmp_path, wsi=slides)
    assert set(raw.modalities) == {"cna", "rnaseq", "rppa", "wsi"}
    assert raw.modalities["rnaseq"].index.tolist() == ["TCGA-AA-0001-01", "TCGA-AA-0002-01", "TCGA-BB-0001-01"]
    assert raw.modalities["rppa"].shape == (2, 2)
    assert raw.modalities["wsi"].index.tolist() == ["TCGA-AA-0001-01"]
    assert raw.original_ids["cna"]["TCGA-BB-0001-01"] == "TCGA-BB-0001-01A"
    clin = raw.clinical
    assert clin.loc["TCGA-BB-0001-01", "cancer_type"] == "BBB" and clin["stage"].eq(2).all()
    assert clin.loc["TCGA-AA-0002-01", "os_time"] == 10 and np.isnan(clin.loc["TCGA-BB-0001-01", "os_time"])

    one = read_xena(tmp_path, cohorts=["TCGA-BBB"])
    assert one.modalities["cna"].index.tolist() == ["TCGA-BB-0001-01"]
    with pytest.raises(CohortError, match=r"no files for cohort\(s\) \['CCC'\]"):
        read_xena(tmp_path, cohorts=["CCC"])


def test_discover_xena_errors(tmp_path):
    with pytest.raises(CohortError, match=r"no Xena files named TCGA-<C>.<kind>.tsv"):
        discover_xena(tmp_path)
    with pytest.raises(CohortError, match=r"missing: Xena data directory does not exist"):
        discover_xena(tmp_path / "missing")
    matrix(tmp_path / "TCGA-AAA.protein.tsv")
    (tmp_path / "sub").mkdir()
    matrix(tmp_path / "sub" / "TCGA-AAA.protein.tsv")
    with pytest.raises(CohortError, match=r"two protein files for cohort TCGA-AAA"):
        discover_xena(tmp_path)


def test_read_xena_cohort_no_sample_overlap(tmp_path):
    matrix(tmp_path / "TCGA-AAA.star_counts.tsv", samples=(S1, S2))
    # CNA barcodes from another project: no sample in common with RNA
    matrix(tmp_path / "TCGA-AAA.gene-level_absolute.tsv", samples=("TCGA-ZZ-0001-01A",))
    files = discover_xena(tmp_path)["AAA"]
    with pytest.raises(CohortError, match=r"TCGA-AAA.(star_counts|gene-level_absolute).tsv: cohort TCGA-AAA: "
                                          r"no sample in common with .*do the barcodes match"):
        read_xena_cohort(files)


def test_read_xena_cohort_clinical_without_overlap_and_no_modality(tmp_path):
    matrix(tmp_path / "TCGA-AAA.star_counts.tsv", samples=(S1, S2))
    write(tmp_path / "TCGA-AAA.survival.tsv", [["sample", "OS", "OS.time"], ["TCGA-ZZ-0001-01A", 1, 3]])
    with pytest.raises(CohortError, match=r"TCGA-AAA.survival.tsv: cohort TCGA-AAA: no sample in common"):
        read_xena_cohort(discover_xena(tmp_path)["AAA"])
    write(tmp_path / "TCGA-BBB.clinical.tsv", [["sample", "x"], [S1, 1]])
    with pytest.raises(CohortError, match=r"cohort TCGA-BBB: no modality file"):
        read_xena_cohort(discover_xena(tmp_path)["BBB"])


def test_read_xena_sample_in_two_cohorts(tmp_path):
    matrix(tmp_path / "TCGA-AAA.protein.tsv", samples=(S1,))
    matrix(tmp_path / "TCGA-BBB.protein.tsv", samples=(S1,))
    with pytest.raises(CohortError, match=r"sample 'TCGA-AA-0001-01' is in two cohorts"):
        read_xena(tmp_path)


# ---- miniACC (real files) ---------------------------------------------------------------------
@pytest.mark.skipif(not MINIACC.is_dir(), reason="no miniACC CSV export beside the checkout (the packaged copy: test_miniacc.py)")
def test_read_miniacc_real_files():
    raw = read_miniacc(MINIACC)
    shapes = {m: df.shape for m, df in raw.modalities.items()}
    # PROVENANCE.md: 198 genes x 79 / 90 samples, 33 proteins x 46, 471 miRNAs x 80
    assert shapes == {"rnaseq": (79, 198), "cna": (90, 198), "rppa": (46, 33), "mirna": (80, 471)}
    assert all(df.dtypes.unique().tolist() == [np.float32] for df in raw.modalities.values())
    assert raw.modalities["rnaseq"].index[0] == "TCGA-OR-A5J1-01"
    assert raw.original_ids["rnaseq"]["TCGA-OR-A5J1-01"] == "TCGA-OR-A5J1-01A-11R-A29S-07"
    clin = raw.clinical
    assert len(clin) == 92 and clin.index.is_unique and (clin["cancer_type"] == "ACC").all()
    # clinical.csv: TCGA-OR-A5J1 is "stage ii", dead (vital_status 1) at 1355 days
    assert clin.loc["TCGA-OR-A5J1-01", ["stage", "os_time", "os_event"]].tolist() == [2.0, 1355.0, 1.0]
    assert clin["stage"].value_counts().to_dict() == {2.0: 44, 3.0: 19, 4.0: 18, 1.0: 9}
    assert clin["os_event"].sum() == 34 and clin["os_time"].notna().all()
    # the raw tables can feed the Cohort model
    from cgjax.data import from_arrays
    rppa = raw.modalities["rppa"].reindex(clin.index)
    c = from_arrays(clin.index, {"rppa": rppa.to_numpy()}, clinical=clin, source="miniacc")
    assert c.masks["rppa"].sum() == 46


def test_read_miniacc_errors(tmp_path):
    with pytest.raises(CohortError, match=r"miniACC directory does not exist"):
        read_miniacc(tmp_path / "nope")
    (tmp_path / "sampleMap.csv").write_text('"assay","primary","colname"\n"X","TCGA-OR-A5J1","TCGA-OR-A5J1-01A-1"\n')
    (tmp_path / "RPPAArray.csv").write_text('"","TCGA-OR-A5J2-01A-1"\n"G6PD",0.5\n')
    with pytest.raises(CohortError, match=r"RPPAArray.csv: column 'TCGA-OR-A5J2-01A-1' is not in sampleMap.csv"):
        read_miniacc(tmp_path, modalities={"rppa": "RPPAArray.csv"})


def test_xena_modality_names():
    assert xena.XENA_MODALITIES == {"star_counts": "rnaseq", "gene-level_absolute": "cna", "protein": "rppa"}


# ---- remaining bad-input paths ----------------------------------------------------------------
def test_unreadable_files(tmp_path):
    (tmp_path / "bin.tsv").write_bytes(b"id\tTCGA-AA-0001-01A\n\xff\xfe\x00\x81\t1\n")
    with pytest.raises(CohortError, match=r"bin.tsv: not a UTF-8 text table"):
        read_xena_matrix(tmp_path / "bin.tsv")
    (tmp_path / "fake.tsv.gz").write_text("not gzip at all")
    with pytest.raises(CohortError, match=r"fake.tsv.gz: cannot read the file"):
        read_xena_matrix(tmp_path / "fake.tsv.gz")
    (tmp_path / "dir.tsv").mkdir()
    with pytest.raises(CohortError, match=r"dir.tsv: expected a matrix file, found a directory"):
        read_xena_matrix(tmp_path / "dir.tsv")


def test_short_ids_name_the_file(tmp_path):
    with pytest.raises(CohortError, match=r"m.tsv: barcode 'x' is too short"):
        dedup_trimmed(pd.DataFrame({"f": [1.0]}, index=["x"]), source="m.tsv")
    p = write(tmp_path / "TCGA-XX.survival.tsv", [["sample", "OS", "OS.time"], ["x", 1, 5]])
    with pytest.raises(CohortError, match=r"TCGA-XX.survival.tsv: barcode 'x' is too short"):
        read_xena_survival(p)


def test_sample_table_errors(tmp_path):
    p = write(tmp_path / "TCGA-XX.clinical.tsv", [["sample", "ajcc_pathologic_stage"]])
    with pytest.raises(CohortError, match=r"TCGA-XX.clinical.tsv: no sample rows after the header"):
        read_xena_clinical(p)
    p = write(tmp_path / "TCGA-XX.clinical.tsv", [["sample", "ajcc_pathologic_stage"], ["", "Stage I"]])
    with pytest.raises(CohortError, match=r"TCGA-XX.clinical.tsv: line 2 has an empty sample id"):
        read_xena_clinical(p)


def test_wsi_more_errors(tmp_path):
    csv = tmp_path / "wsi.csv"
    csv.write_text(f"sample_id\n{S1}\n")
    with pytest.raises(CohortError, match=r"wsi.csv: no embedding columns"):
        read_wsi_embeddings(csv)
    csv.write_text(f"sample_id,pc1,pc2\n{S1},1,\n")
    with pytest.raises(CohortError, match=r"wsi.csv: line 2 \(sample 'TCGA-AA-0001-01A'\), column 'pc2': "
                                          r"missing or infinite value"):
        read_wsi_embeddings(csv)
    d = tmp_path / "slides"
    d.mkdir()
    (d / "broken.h5").write_text("not hdf5")
    with pytest.raises(CohortError, match=r"broken.h5: cannot read as HDF5"):
        read_wsi_embeddings(d)


def test_wsi_without_matching_slides(tmp_path):
    matrix(tmp_path / "TCGA-AAA.protein.tsv", samples=(S1,))
    slides = pd.DataFrame([[1.0]], index=["TCGA-ZZ-0001-01Z-00-DX1"])
    with pytest.raises(CohortError, match=r"my slides: no slide of cohort TCGA-AAA"):
        read_xena_cohort(discover_xena(tmp_path)["AAA"], wsi=slides, wsi_source="my slides")
    d = tmp_path / "h5"
    d.mkdir()
    _h5(d / "TCGA-ZZ-0001-01Z-00-DX1.h5", [1.0])
    with pytest.raises(CohortError, match=r"h5: no slide belongs to a sample of cohort\(s\) \['AAA'\]"):
        read_xena(tmp_path, wsi=d)


def _miniacc_dir(tmp_path, clinical_header, clinical_row):
    (tmp_path / "sampleMap.csv").write_text(
        '"assay","primary","colname"\n"RPPAArray","TCGA-OR-A5J2","TCGA-OR-A5J2-01A-1"\n')
    (tmp_path / "RPPAArray.csv").write_text('"","TCGA-OR-A5J2-01A-1"\n"G6PD",0.5\n')
    (tmp_path / "clinical.csv").write_text(clinical_header + "\n" + clinical_row + "\n")
    return tmp_path


def test_read_miniacc_clinical_errors(tmp_path):
    header = '"patientID","vital_status","days_to_death","days_to_last_followup","pathologic_stage"'
    d = _miniacc_dir(tmp_path, header, '"TCGA-OR-A5J2",1,100,NA,"stage iii"')
    raw = read_miniacc(d, modalities={"rppa": "RPPAArray.csv"})
    assert raw.clinical.loc["TCGA-OR-A5J2-01"].tolist() == ["ACC", 3.0, 100.0, 1.0]
    d = _miniacc_dir(tmp_path, header, '"TCGA-OR-A5J2",3,100,NA,"stage iii"')
    with pytest.raises(CohortError, match=r"clinical.csv: line 2 \(patient 'TCGA-OR-A5J2'\), column "
                                          r"'vital_status': value 3 must be 0 or 1"):
        read_miniacc(d, modalities={"rppa": "RPPAArray.csv"})
    d = _miniacc_dir(tmp_path, '"patientID","vital_status"', '"TCGA-OR-A5J2",1')
    with pytest.raises(CohortError, match=r"clinical.csv: missing column\(s\) \['pathologic_stage'"):
        read_miniacc(d, modalities={"rppa": "RPPAArray.csv"})
    (tmp_path / "sampleMap.csv").write_text('"assay","colname"\n"X","Y"\n')
    with pytest.raises(CohortError, match=r"sampleMap.csv: missing column\(s\) \['primary'\]"):
        read_miniacc(d, modalities={"rppa": "RPPAArray.csv"})
