"""Cohort files: round trips in every format, every malformed input, check_modalities, describe."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from cgjax.data import (check_modalities, describe_cohort, describe_modalities, from_arrays, read_cohort,
                        split_cohort, write_cohort)
from cgjax.errors import CohortError

FORMATS = ["csv", "tsv", "parquet", "h5mu"]


def hard_float32(rng, shape):
    """f32 values drawn uniformly over bit patterns (all exponents, subnormals, -0), finite only."""
    bits = rng.integers(0, 2**32, size=shape, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    x = np.where(np.isfinite(x), x, np.float32(1.5))
    special = np.array([0.0, -0.0, np.finfo(np.float32).max, -np.finfo(np.float32).max,
                        np.finfo(np.float32).tiny, np.float32(1e-45), 1 / 3, 0.1], dtype=np.float32)
    flat = x.reshape(-1)
    flat[: len(special)] = special
    return flat.reshape(shape)


def make_cohort(n=30, seed=0):
    """A cohort with unsorted ids, two modalities with gaps, awkward ids and full clinical labels."""
    rng = np.random.default_rng(seed)
    ids = [f"TCGA-{i:02d}" for i in rng.permutation(n)]
    ids[3] = "NA"  # must stay the string "NA", not become a missing value
    a = hard_float32(rng, (n, 4))
    b = rng.normal(size=(n, 3)).astype(np.float32)
    a_mask = rng.random(n) < 0.8
    b_mask = rng.random(n) < 0.7
    b_mask[~a_mask] = True  # every sample has at least one modality
    clinical = pd.DataFrame({
        "sample_id": ids,
        "cancer_type": rng.choice(["BRCA", "LUAD", "NA-like"], n).astype(object),
        "stage": rng.choice([1.0, 2.0, 3.0, 4.0, np.nan], n),
        "os_time": rng.exponential(500.0, n),
        "os_event": rng.integers(0, 2, n).astype(float),
    })
    clinical.loc[2, "cancer_type"] = None
    clinical.loc[5, "os_time"] = np.nan
    return from_arrays(ids, {"rna": a, "wsi": b}, masks={"rna": a_mask, "wsi": b_mask}, clinical=clinical,
                       feature_names={"rna": ["g1", "g 2", "g,3", "ü4"], "wsi": ["pc1", "pc2", "pc3"]})


def sorted_cohort(c):
    return c.subset(np.argsort(c.sample_ids.astype(str), kind="stable"))


def assert_same_cohort(r, c):
    assert list(r.sample_ids) == list(c.sample_ids)
    assert r.modalities == c.modalities or set(r.modalities) == set(c.modalities)
    for m in c.modalities:
        assert r.data[m].dtype == np.float32
        assert np.array_equal(r.masks[m], c.masks[m])
        assert np.array_equal(r.data[m].view(np.uint32), c.data[m].view(np.uint32)), m  # bit for bit
        assert list(r.feature_names[m]) == list(c.feature_names[m])
    pd.testing.assert_frame_equal(r.clinical, c.clinical)


def path_for(tmp_path, fmt):
    return tmp_path / ("cohort.h5mu" if fmt == "h5mu" else "cohort")


# ------------------------------------------------------------------------------------------------
# round trips
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_bit_for_bit(tmp_path, fmt):
    c = split_cohort(make_cohort())
    p = write_cohort(c, path_for(tmp_path, fmt), format=fmt)
    assert_same_cohort(read_cohort(p), sorted_cohort(c))


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_without_clinical(tmp_path, fmt):
    c = make_cohort()
    c = from_arrays(c.sample_ids, c.data, masks=c.masks)
    p = write_cohort(c, path_for(tmp_path, fmt), format=fmt)
    r = read_cohort(p)
    assert list(r.clinical.columns) == []
    assert_same_cohort(r, sorted_cohort(c))


def test_csv_float_format_round_trips_many_float32(tmp_path):
    # The core claim behind the CSV format: "%.9g" text gives every finite float32 back exactly.
    rng = np.random.default_rng(1)
    x = hard_float32(rng, (500, 40))
    c = from_arrays([f"s{i:04d}" for i in range(500)], {"m": x}, masks={"m": np.ones(500, bool)})
    r = read_cohort(write_cohort(c, tmp_path / "c"))
    assert np.array_equal(r.data["m"].view(np.uint32), x.view(np.uint32))


def test_absent_rows_not_written_and_read_back_absent(tmp_path):
    c = make_cohort()
    write_cohort(c, tmp_path / "c")
    lines = (tmp_path / "c" / "wsi.csv").read_text().strip().splitlines()
    assert len(lines) == 1 + int(c.masks["wsi"].sum())
    r = read_cohort(tmp_path / "c")
    assert np.isnan(r.data["wsi"][~r.masks["wsi"]]).all()


def test_samples_are_sorted_union_and_empty_rows_are_absent(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    (d / "a.csv").write_text("sample_id,f1,f2\nz,1,2\nb,,\nm,3,4\n")
    (d / "b.tsv").write_text("sample_id\tg\nb\t5\nq\tnan\n")
    r = read_cohort(d)
    # "q" only has an empty row: it has no modality, so it is not a sample
    assert list(r.sample_ids) == ["b", "m", "z"]
    assert list(r.masks["a"]) == [False, True, True]
    assert list(r.masks["b"]) == [True, False, False]
    assert r.data["a"][1].tolist() == [3.0, 4.0]
    assert r.feature_names == {"a": ["f1", "f2"], "b": ["g"]}


def test_other_files_ignored_and_clinical_optional(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    (d / "rna.csv").write_text("sample_id,f\ns1,1\ns2,2\n")
    (d / "README.txt").write_text("not a table")
    (d / "notes.json").write_text("{}")
    (d / "sub").mkdir()
    r = read_cohort(d)
    assert r.modalities == ("rna",)
    assert list(r.clinical.columns) == []


def test_clinical_rows_without_modality_warned_and_ignored(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    (d / "rna.csv").write_text("sample_id,f\ns1,1\ns2,2\n")
    (d / "clinical.csv").write_text("sample_id,cancer_type,stage,extra\ns1,BRCA,2,x\nghost1,LUAD,1,y\n"
                                   "ghost2,LUAD,,z\n")
    with pytest.warns(UserWarning, match=r"clinical.csv: 2 clinical row\(s\) for samples with no modality"):
        r = read_cohort(d)
    assert list(r.sample_ids) == ["s1", "s2"]
    assert r.clinical.loc["s1", "cancer_type"] == "BRCA"
    assert r.clinical.loc["s1", "stage"] == 2.0
    assert pd.isna(r.clinical.loc["s2", "cancer_type"]) and np.isnan(r.clinical.loc["s2", "stage"])
    assert "extra" not in r.clinical.columns


def test_clinical_split_column_read(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    (d / "rna.csv").write_text("sample_id,f\ns1,1\ns2,2\n")
    (d / "clinical.csv").write_text("sample_id,split\ns1,train\ns2,test\n")
    assert list(read_cohort(d).label("split")) == ["train", "test"]


def test_parquet_with_sample_id_index(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    pd.DataFrame({"f": [1.0, 2.0]}, index=pd.Index(["a", "b"], name="sample_id")).to_parquet(d / "m.parquet")
    r = read_cohort(d)
    assert list(r.sample_ids) == ["a", "b"]


def test_write_refuses_existing_cohort_unless_overwrite(tmp_path):
    c = make_cohort()
    write_cohort(c, tmp_path / "c")
    with pytest.raises(CohortError, match="already holds a cohort"):
        write_cohort(c, tmp_path / "c")
    # overwrite with parquet: the old csv tables must not survive (they would clash on read)
    small = c.subset(np.flatnonzero(c.masks["rna"])[:5])
    small = from_arrays(small.sample_ids, {"rna": small.data["rna"]}, masks={"rna": small.masks["rna"]})
    write_cohort(small, tmp_path / "c", format="parquet", overwrite=True)
    r = read_cohort(tmp_path / "c")
    assert r.modalities == ("rna",) and r.n_samples == 5
    write_cohort(c, tmp_path / "x.h5mu", format="h5mu")
    with pytest.raises(CohortError, match="already exists"):
        write_cohort(c, tmp_path / "x.h5mu", format="h5mu")


def test_write_refuses_sample_without_modality(tmp_path):
    c = from_arrays(["a", "b"], {"m": np.array([[1.0], [np.nan]], np.float32)})
    with pytest.raises(CohortError, match="sample 'b' has no modality"):
        write_cohort(c, tmp_path / "c")


def test_write_unknown_format(tmp_path):
    with pytest.raises(CohortError, match="unknown cohort format 'xlsx'"):
        write_cohort(make_cohort(), tmp_path / "c", format="xlsx")


# ------------------------------------------------------------------------------------------------
# malformed inputs: each names the file, the sample and the problem
# ------------------------------------------------------------------------------------------------
def cohort_dir(tmp_path, files: dict):
    """A directory ``bad`` holding ``files``: name -> text, or a DataFrame (written as parquet)."""
    d = tmp_path / "bad"
    d.mkdir()
    for name, content in files.items():
        if isinstance(content, pd.DataFrame):
            content.to_parquet(d / name)
        else:
            (d / name).write_text(content)
    return d


RNA = {"rna.csv": "sample_id,f\ns1,1\n"}  # a valid modality table, for the cases about another file
RNA2 = {"rna.csv": "sample_id,f\ns1,1\ns2,2\n"}

# (case, files of the cohort directory, the one-line error it must give)
MALFORMED = [
    ("no table", {}, "bad: empty cohort: no modality table"),
    ("only clinical and other files", {"clinical.csv": "sample_id,stage\ns1,1\n", "notes.txt": "x"},
     "bad: empty cohort: no modality table"),
    ("duplicated sample id", {"rna.csv": "sample_id,f\ns1,1\ns2,2\ns1,3\n"}, r"rna.csv: duplicated sample id 's1'"),
    ("duplicated sample id in clinical", {**RNA, "clinical.csv": "sample_id,stage\ns1,1\ns1,2\n"},
     r"clinical.csv: duplicated sample id 's1'"),
    ("non-numeric value", {"rna.csv": "sample_id,f1,f2\ns1,1,2\ns2,3,abc\n"},
     r"rna.csv: sample 's2', column 'f2': non-numeric value 'abc'"),
    ("non-numeric value in parquet", {"rna.parquet": pd.DataFrame({"sample_id": ["s1", "s2"], "f": ["1.0", "oops"]})},
     r"rna.parquet: sample 's2', column 'f': non-numeric value 'oops'"),
    *[(f"partially filled row ({cell!r})", {"rna.tsv": f"sample_id\tf1\tf2\ns1\t1\t2\ns2\t3\t{cell}\n"},
       rf"rna.tsv: sample 's2', column 'f2': {shown} in a row that is otherwise present")
      for cell, shown in [("", r"empty cell \(missing value\)"), ("nan", r"empty cell \(missing value\)"),
                          ("inf", "value inf"), ("-inf", "value -inf")]],
    ("float32 overflow", {"rna.csv": "sample_id,f\ns1,1e39\n"},
     r"rna.csv: sample 's1', column 'f': value 1e\+39 overflows float32"),
    *[(f"empty table ({text!r})", {"rppa.csv": text, **RNA}, r"rppa.csv: empty table") for text in ["sample_id,f1,f2\n", ""]],
    ("all rows empty", {"rppa.csv": "sample_id,f\ns1,\ns2,\n", **RNA}, r"rppa.csv: modality 'rppa': every row is empty"),
    ("no feature columns", {"rna.csv": "sample_id\ns1\n"}, r"rna.csv: no feature columns"),
    ("first column not sample_id", {"rna.csv": "id,f\ns1,1\n"},
     r"rna.csv: the first column must be 'sample_id', found 'id'"),
    ("clinical first column not sample_id", {**RNA, "clinical.csv": "stage,sample_id\n1,s1\n"},
     r"clinical.csv: the first column must be 'sample_id', found 'stage'"),
    ("empty sample id", {"rna.csv": "sample_id,f\ns1,1\n,2\n"}, r"rna.csv: row 2 has an empty sample_id"),
    ("duplicated feature column", {"rna.csv": "sample_id,f,f\ns1,1,2\n"}, r"rna.csv: column 'f' appears more than once"),
    ("two tables for one modality", {**RNA, "rna.tsv": "sample_id\tf\ns1\t1\n"},
     r"modality 'rna' has two tables, rna.csv and rna.tsv"),
    ("ragged csv", {"rna.csv": "sample_id,f\ns1,1,2,3\n"}, r"rna.csv: cannot read table"),
    *[(f"stage {stage}", {**RNA2, "clinical.csv": f"sample_id,stage\ns1,1\ns2,{stage}\n"},
       rf"clinical.csv: sample 's2': stage {stage} is outside 1-4") for stage in ["5", "0", "2.5"]],
    ("stage not numeric", {**RNA, "clinical.csv": "sample_id,stage\ns1,Stage IV\n"},
     r"clinical.csv: clinical column 'stage' has non-numeric value 'Stage IV' for sample 's1'"),
    ("negative survival time", {**RNA2, "clinical.csv": "sample_id,os_time,os_event\ns1,10,1\ns2,-3.5,0\n"},
     r"clinical.csv: sample 's2': negative survival time os_time=-3.5"),
    ("bad event", {**RNA, "clinical.csv": "sample_id,os_event\ns1,2\n"}, r"clinical.csv: sample 's1': os_event 2 must be 0 or 1"),
    ("bad split", {**RNA, "clinical.csv": "sample_id,split\ns1,training\n"},
     r"clinical.csv: sample 's1': split 'training' is not one of"),
]


@pytest.mark.parametrize("files,match", [pytest.param(f, m, id=case) for case, f, m in MALFORMED])
def test_error_malformed_cohort_directory(tmp_path, files, match):
    with pytest.raises(CohortError, match=match):
        read_cohort(cohort_dir(tmp_path, files))


def test_error_nonexistent_path(tmp_path):
    with pytest.raises(CohortError, match=r"nope: no such cohort directory or \.h5mu file"):
        read_cohort(tmp_path / "nope")


def test_error_not_a_cohort_file(tmp_path):
    f = tmp_path / "x.csv"
    f.write_text("sample_id,a\ns,1\n")
    with pytest.raises(CohortError, match="x.csv: not a cohort"):
        read_cohort(f)


def test_error_h5mu_partial_row(tmp_path):
    import anndata
    import mudata
    x = np.array([[1.0, 2.0], [3.0, np.nan]], np.float32)
    ad = anndata.AnnData(X=x, obs=pd.DataFrame(index=["s1", "s2"]), var=pd.DataFrame(index=["f1", "f2"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mudata.MuData({"rna": ad}).write(tmp_path / "bad.h5mu")
    with pytest.raises(CohortError, match=r"bad.h5mu\[mod/rna\]: sample 's2', column 'f2': empty cell"):
        read_cohort(tmp_path / "bad.h5mu")


def test_error_corrupt_h5mu(tmp_path):
    (tmp_path / "bad.h5mu").write_text("not hdf5")
    with pytest.raises(CohortError, match=r"bad.h5mu: cannot read MuData file"):
        read_cohort(tmp_path / "bad.h5mu")


# ------------------------------------------------------------------------------------------------
# check_modalities, describe
# ------------------------------------------------------------------------------------------------
def test_check_modalities():
    c = make_cohort()  # rna: 4 features, wsi: 3
    check_modalities(c, {"rna": 4, "wsi": 3}, where="ckpt")
    check_modalities(c, {"rna": 4, "wsi": 3, "cna": 10}, where="ckpt")  # a modality may be absent entirely
    with pytest.raises(CohortError, match=r"modality 'wsi' is unknown to ckpt/model"):
        check_modalities(c, {"rna": 4}, where="ckpt/model")
    with pytest.raises(CohortError, match=r"modality 'rna' has 4 features but ckpt expects 32"):
        check_modalities(c, {"rna": 32, "wsi": 3}, where="ckpt")


def test_describe_cohort_counts():
    x = np.ones((6, 2), np.float32)
    masks = {"cna": np.array([1, 1, 0, 1, 1, 0], bool), "rna": np.array([1, 0, 1, 1, 1, 1], bool)}
    clinical = pd.DataFrame({"sample_id": list("abcdef"),
                             "cancer_type": ["X", "X", "X", "Y", "Y", None],
                             "split": ["train", "val", "test", "train", "train", "train"]})
    c = from_arrays(list("abcdef"), {"cna": x, "rna": x}, masks=masks, clinical=clinical)
    t = describe_cohort(c)
    assert list(t.columns) == ["cancer_type", "total", "cna", "rna", "complete", "incomplete", "train", "val", "test"]
    assert t.to_dict("records") == [
        {"cancer_type": "X", "total": 3, "cna": 2, "rna": 2, "complete": 1, "incomplete": 2, "train": 1, "val": 1, "test": 1},
        {"cancer_type": "Y", "total": 2, "cna": 2, "rna": 2, "complete": 2, "incomplete": 0, "train": 2, "val": 0, "test": 0},
        {"cancer_type": "unknown", "total": 1, "cna": 0, "rna": 1, "complete": 0, "incomplete": 1, "train": 1, "val": 0, "test": 0},
        {"cancer_type": "ALL", "total": 6, "cna": 4, "rna": 5, "complete": 3, "incomplete": 3, "train": 4, "val": 1, "test": 1},
    ]
    m = describe_modalities(c)
    assert m.to_dict("records") == [{"modality": "cna", "samples": 4, "absent": 2, "features": 2},
                                    {"modality": "rna", "samples": 5, "absent": 1, "features": 2}]


def test_describe_cohort_without_labels():
    c = from_arrays(["a", "b"], {"m": np.array([[1.0], [np.nan]], np.float32), "n": np.ones((2, 1), np.float32)})
    t = describe_cohort(c)
    assert t.to_dict("records") == [{"cancer_type": "ALL", "total": 2, "m": 1, "n": 2, "complete": 1, "incomplete": 1}]
    json.dumps(t.to_dict("records"))  # plain ints, usable in reports
