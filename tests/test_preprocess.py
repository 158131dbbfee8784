"""The paper's preprocessing steps (cgjax.data.preprocess), each on a hand-made example whose
expected result is worked out by hand in the test."""

import numpy as np
import pandas as pd
import pytest

from cgjax.data.preprocess import (PreprocessOptions, apply_imputer, apply_preprocess, cna_transform, cpm,
                                   drop_sparse_features, filter_genes_cpm, fit_imputer, fit_preprocess,
                                   group_stage, log2_cpm1, preprocess_modalities, rna_log2_to_counts,
                                   rppa_center)
from cgjax.errors import CohortError


def frame(rows, columns=None, index=None):
    rows = np.asarray(rows, dtype=np.float64)
    columns = columns or [f"f{j}" for j in range(rows.shape[1])]
    index = index or [f"s{i}" for i in range(rows.shape[0])]
    return pd.DataFrame(rows, index=index, columns=columns)


# ---- RNA --------------------------------------------------------------------------------------
def test_rna_log2_to_counts():
    # log2(count + 1) = 0, 1, 3  ->  count = 0, 1, 7
    out = rna_log2_to_counts(frame([[0.0, 1.0, 3.0]]))
    np.testing.assert_allclose(out.to_numpy(), [[0.0, 1.0, 7.0]])


def test_cpm_per_sample_library_size():
    # s0: library 1 + 3 = 4 -> 1/4 and 3/4 of a million; s1: library 2 + 2 (+ missing) = 4
    out = cpm(frame([[1, 3], [2, np.nan], [0, 5]]))
    np.testing.assert_allclose(out.to_numpy(), [[250_000, 750_000], [1e6, np.nan], [0, 1e6]])


def test_cpm_errors():
    with pytest.raises(CohortError, match=r"sample 's1': library size is zero"):
        cpm(frame([[1, 1], [0, 0]]))
    with pytest.raises(CohortError, match=r"sample 's0', feature 'f1': negative count -1"):
        cpm(frame([[1, -1]]))


def test_log2_cpm1():
    np.testing.assert_allclose(log2_cpm1(frame([[0.0, 1.0, 3.0, 1023.0]])).to_numpy(), [[0, 1, 2, 10]])


def test_filter_genes_cpm_strict_and_reference():
    # 5 samples, need >= 0.20 * 5 = 1 expressed sample.
    #   a: one sample at exactly 1.0  -> paper (> 1) drops it, reference (>= 1) keeps it
    #   b: one sample at 2.0          -> kept by both
    #   c: all at 0.5                 -> dropped by both
    #   d: one sample at 5, rest NaN  -> kept (NaN counts as not expressed, n = 5 rows)
    df = pd.DataFrame({"a": [1.0, 0, 0, 0, 0], "b": [2.0, 0, 0, 0, 0], "c": [0.5] * 5,
                       "d": [5.0, np.nan, np.nan, np.nan, np.nan]})
    assert filter_genes_cpm(df).tolist() == ["b", "d"]
    assert filter_genes_cpm(df, strict=False).tolist() == ["a", "b", "d"]
    # 40 % needed: 2 of 5 samples; none has two
    assert filter_genes_cpm(df, min_frac=0.4).tolist() == []


# ---- CNA, RPPA --------------------------------------------------------------------------------
def test_cna_transform():
    # CN: 0 -> NaN; 1 -> log2(1/2) = -1; 2 -> 0; 4 -> 1; 8 -> 2; 16 -> 3 clipped to 2;
    #     0.25 -> log2(1/8) = -3 clipped to -2
    out = cna_transform(frame([[0, 1, 2, 4, 8, 16, 0.25]]))
    np.testing.assert_allclose(out.to_numpy(), [[np.nan, -1, 0, 1, 2, 2, -2]])
    with pytest.raises(CohortError, match=r"sample 's0', feature 'f1': negative copy number -1"):
        cna_transform(frame([[1, -1]]))


def test_rppa_center_per_protein_and_per_sample():
    df = frame([[1, 10, 0], [3, 20, 0], [5, 60, 3]])
    # per protein (paper): column medians 3, 20, 0
    np.testing.assert_allclose(rppa_center(df, "per_protein").to_numpy(),
                               [[-2, -10, 0], [0, 0, 0], [2, 40, 3]])
    # medians taken from other (train) rows: rows s0, s1 -> medians 2, 15, 0
    np.testing.assert_allclose(rppa_center(df, "per_protein", reference=df.iloc[:2]).to_numpy(),
                               [[-1, -5, 0], [1, 5, 0], [3, 45, 3]])
    # per sample (reference code): row medians 1, 3, 5
    np.testing.assert_allclose(rppa_center(df, "per_sample").to_numpy(),
                               [[0, 9, -1], [0, 17, -3], [0, 55, -2]])
    # missing cells are skipped by the median: row [1, NaN, 5] has median 3
    np.testing.assert_allclose(rppa_center(frame([[1, np.nan, 5]]), "per_sample").to_numpy(), [[-2, np.nan, 2]])
    with pytest.raises(CohortError, match=r"unknown RPPA centring mode 'per_cohort'"):
        rppa_center(df, "per_cohort")


# ---- sparse features, imputation --------------------------------------------------------------
def test_drop_sparse_features():
    # 10 train rows: a is missing in 1 (10 %: dropped, kept iff < 10 %), b in 0, c in 5
    df = pd.DataFrame({"a": [np.nan] + [1.0] * 9, "b": [1.0] * 10, "c": [np.nan] * 5 + [1.0] * 5})
    assert drop_sparse_features(df).tolist() == ["b"]
    assert drop_sparse_features(df, max_missing=0.2).tolist() == ["a", "b"]
    with pytest.raises(CohortError, match="no training rows"):
        drop_sparse_features(df.iloc[:0])


def test_median_imputer_fitted_on_train():
    train = frame([[1, 5], [2, np.nan], [10, 7], [np.nan, 9]])  # medians 2 and 7
    imp = fit_imputer(train, kind="median")
    test = frame([[np.nan, np.nan], [4, 4]], index=["t0", "t1"])
    np.testing.assert_allclose(apply_imputer(imp, test).to_numpy(), [[2, 7], [4, 4]])


def test_knn_imputer_fitted_on_train():
    # test row [0.9, NaN]: distance on f0 only -> nearest two train rows are [1, 10] and [0, 0];
    # f1 = mean(10, 0) = 5 (uniform weights)
    train = frame([[0, 0], [1, 10], [10, 100]])
    imp = fit_imputer(train, kind="knn", n_neighbors=2)
    np.testing.assert_allclose(apply_imputer(imp, frame([[0.9, np.nan]])).to_numpy(), [[0.9, 5]])


def test_imputer_errors():
    with pytest.raises(CohortError, match=r"unknown imputer 'mean'"):
        fit_imputer(frame([[1.0]]), kind="mean")
    imp = fit_imputer(frame([[1.0, 2.0]]), kind="median")
    with pytest.raises(CohortError, match=r"imputer was fitted on other columns \(missing here: \['f1'\]"):
        apply_imputer(imp, frame([[1.0]]))


# ---- stage ------------------------------------------------------------------------------------
def test_group_stage():
    values = ["Stage 0", "Stage I", "Stage IA", "Stage IB", "Stage IS", "Stage II", "Stage IIA",
              "Stage IIB", "Stage IIC", "Stage III", "Stage IIIA", "Stage IIIB", "Stage IIIC",
              "Stage IV", "Stage IVA", "Stage IVB", "Stage IVC", "Stage X", "Not Reported", None,
              np.nan, "", "stage ii", " STAGE  iv "]
    expected = [1, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4] + [np.nan] * 5 + [2, 4]
    np.testing.assert_array_equal(group_stage(pd.Series(values)).to_numpy(), expected)
    with pytest.raises(CohortError, match=r"clin.tsv: sample 'p2': unrecognised stage 'Stage I/II NOS'"):
        group_stage(pd.Series(["Stage I", "Stage I/II NOS"], index=["p1", "p2"]), source="clin.tsv")


# ---- orchestration ----------------------------------------------------------------------------
def _raw():
    """3 train, 1 val, 1 test sample (+ one without split). Hand-checkable values."""
    ids = ["a", "b", "c", "v", "t", "u"]
    # rnaseq as log2(count + 1): counts a=[3, 1, 0], b=[1, 3, 0], c=[0, 0, 4], v=[1, 1, 2],
    # t=[0, 0, 1023] (the third gene is only high in train sample c and test/val samples)
    counts = np.array([[3, 1, 0], [1, 3, 0], [0, 0, 4], [1, 1, 2], [0, 0, 1023], [1, 1, 1]], float)
    rna = pd.DataFrame(np.log2(counts + 1), index=ids, columns=["g1", "g2", "g3"])
    cna = pd.DataFrame([[2, 4, 1], [2, 0, 1], [8, 2, 2], [0, 1, 2], [2, 2, 0], [2, 2, 2]],
                       index=ids, columns=["c1", "c2", "c3"], dtype=float)
    rppa = pd.DataFrame([[1, 0], [3, np.nan], [6, 2], [10, 10], [np.nan, np.nan], [0, 0]],
                        index=ids, columns=["p1", "p2"])
    split = pd.Series(["train", "train", "train", "val", "test"], index=ids[:5])
    return {"rnaseq": rna, "cna": cna, "rppa": rppa}, split


def test_preprocess_modalities_hand_example():
    raw, split = _raw()
    opt = PreprocessOptions(n_neighbors=1, rna_min_frac=0.5, max_missing=0.5)
    out = preprocess_modalities(raw, split, opt)
    # u has no split: left out; t has no RPPA (all-NaN row): absent there
    assert out["rnaseq"].index.tolist() == ["a", "b", "c", "v", "t"]
    assert out["rppa"].index.tolist() == ["a", "b", "c", "v"]
    assert all(df.dtypes.unique().tolist() == [np.float32] for df in out.values())

    # RNA. CPM of train rows: a = [750k, 250k, 0], b = [250k, 750k, 0], c = [0, 0, 1e6].
    # Need CPM > 1 in >= 0.5 * 3 = 1.5 train samples: g1 (2), g2 (2) kept; g3 (1) dropped,
    # although val and test express it.
    assert out["rnaseq"].columns.tolist() == ["g1", "g2"]
    np.testing.assert_allclose(out["rnaseq"].loc["a"], np.log2([750_001, 250_001]), rtol=1e-6)
    # val v: library 1 + 1 + 2 = 4 (all genes) -> CPM g1 = g2 = 250k
    np.testing.assert_allclose(out["rnaseq"].loc["v"], np.log2([250_001, 250_001]), rtol=1e-6)
    np.testing.assert_allclose(out["rnaseq"].loc["t"], [0, 0])

    # CNA: log2(CN/2), CN 0 -> NaN, then median imputation fitted on train.
    # train c1 = [0, 0, 2]; c2 = [1, NaN, 0] (train median 0.5); c3 = [-1, -1, 0] (median -1)
    np.testing.assert_allclose(out["cna"].to_numpy(), [
        [0, 1, -1], [0, 0.5, -1], [2, 0, 0], [0, -1, 0],  # v: c1 CN 0 -> NaN -> train median of c1 = 0
        [0, 0, -1],                                         # t: c3 CN 0 -> train median of c3 = -1
    ])

    # RPPA per protein: train medians p1 = median(1, 3, 6) = 3, p2 = median(0, 2) = 1;
    # centred train: a [-2, -1], b [0, NaN], c [3, 1]; b's p2 by 1-NN on p1 among train rows
    # with p2: a (|0 - -2| = 2) is nearer than c (|0 - 3| = 3) -> -1. Val v: [10 - 3, 10 - 1].
    np.testing.assert_allclose(out["rppa"].to_numpy(), [[-2, -1], [0, -1], [3, 1], [7, 9]])


def test_preprocess_fits_nothing_on_val_or_test():
    raw, split = _raw()
    opt = PreprocessOptions(n_neighbors=1, rna_min_frac=0.5, max_missing=0.5)
    ref = preprocess_modalities(raw, split, opt)
    # change every val/test value wildly: train rows must not move, and val/test rows must be what
    # the train-only fit gives them
    shaken = {m: df.copy() for m, df in raw.items()}
    for m, df in shaken.items():
        df.loc[["v", "t"]] = df.loc[["v", "t"]] * 3 + 1
    out = preprocess_modalities(shaken, split, opt)
    for m in ref:
        pd.testing.assert_frame_equal(out[m].loc[["a", "b", "c"]], ref[m].loc[["a", "b", "c"]])
        assert out[m].columns.equals(ref[m].columns)
    fitted = fit_preprocess({m: df.loc[["a", "b", "c"]] for m, df in shaken.items()}, opt)
    direct = apply_preprocess(fitted, {m: df.loc[["v"]] for m, df in shaken.items()})
    for m in ref:
        pd.testing.assert_frame_equal(direct[m], out[m].loc[["v"]])


def test_preprocess_options_reference_variants():
    raw, split = _raw()
    # reference: CPM >= 1 and per-sample RPPA centring
    opt = PreprocessOptions(n_neighbors=1, rna_min_frac=0.5, max_missing=0.5, rna_cpm_strict=False,
                            rppa_centering="per_sample")
    out = preprocess_modalities(raw, split, opt)
    # per-sample medians: a median(1, 0) = 0.5, c median(6, 2) = 4, v 10; b's only value is its median
    np.testing.assert_allclose(out["rppa"].loc[["a", "c", "v"]].to_numpy(), [[0.5, -0.5], [2, -2], [0, 0]])
    # the default 10 % sparse filter drops p2 (missing in 1 of 3 train rows) and c2
    out = preprocess_modalities(raw, split, PreprocessOptions(n_neighbors=1))
    assert out["rppa"].columns.tolist() == ["p1"] and out["cna"].columns.tolist() == ["c1", "c3"]


def test_preprocess_other_transforms():
    # a modality with no known transform passes through; rna_counts starts from counts
    ids = ["a", "b", "t"]
    raw = {"wsi": pd.DataFrame([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], index=ids),
           "mirna": pd.DataFrame([[1.0, 3.0], [2.0, 2.0], [0.0, 1.0]], index=ids, columns=["m1", "m2"])}
    split = pd.Series(["train", "train", "test"], index=ids)
    out = preprocess_modalities(raw, split, PreprocessOptions(transforms={"mirna": "rna_counts"}, n_neighbors=1))
    np.testing.assert_allclose(out["wsi"].to_numpy(), [[1, 2], [3, 4], [5, 6]])
    np.testing.assert_allclose(out["mirna"].to_numpy(),
                               np.log2(np.array([[250_000, 750_000], [500_000, 500_000], [0, 1e6]]) + 1), rtol=1e-6)


@pytest.mark.parametrize("change, message", [
    (lambda raw, split: split.replace({"val": "validation"}), r"split: sample 'v' has split 'validation'"),
    (lambda raw, split: split.replace({"train": "test"}), r"modality 'rnaseq': no training sample has it"),
    (lambda raw, split: split.to_frame(), r"split must be a pandas Series"),
])
def test_preprocess_split_errors(change, message):
    raw, split = _raw()
    with pytest.raises(CohortError, match=message):
        preprocess_modalities(raw, change(raw, split))


def test_preprocess_modality_errors():
    raw, split = _raw()
    bad = dict(raw, cna=raw["cna"] - 5)
    with pytest.raises(CohortError, match=r"modality 'cna': sample 'a', feature 'c1': negative copy number -3"):
        preprocess_modalities(bad, split)
    with pytest.raises(CohortError, match=r"modality 'rnaseq': no gene passes the CPM filter"):
        preprocess_modalities(raw, split, PreprocessOptions(rna_min_cpm=1e7))
    with pytest.raises(CohortError, match=r"modality 'rppa': unknown transform 'rppa2'"):
        preprocess_modalities(raw, split, PreprocessOptions(transforms={"rppa": "rppa2"}))
    with pytest.raises(CohortError, match=r"modality 'rppa': unknown RPPA centring mode 'x'"):
        preprocess_modalities(raw, split, PreprocessOptions(rppa_centering="x"))
    with pytest.raises(CohortError, match=r"modality 'cna': unknown imputer 'mean'"):
        preprocess_modalities(raw, split, PreprocessOptions(imputers={"cna": "mean"}))
    with pytest.raises(CohortError, match=r"modality 'cna': duplicated sample id 'a'"):
        preprocess_modalities(dict(raw, cna=pd.concat([raw["cna"], raw["cna"].iloc[:1]])), split)
    with pytest.raises(CohortError, match=r"modality 'rppa': every feature is missing in >= 10%"):
        all_nan = raw["rppa"].copy()
        all_nan.loc["a", "p1"] = np.nan
        all_nan.loc["c", "p2"] = np.nan
        preprocess_modalities(dict(raw, rppa=all_nan), split)
    fitted = fit_preprocess({"cna": raw["cna"].loc[["a", "b", "c"]]})
    with pytest.raises(CohortError, match=r"no fitted preprocessing for modality 'rppa'"):
        apply_preprocess(fitted, {"rppa": raw["rppa"]})


def test_fit_errors_without_training_rows():
    raw, split = _raw()
    with pytest.raises(CohortError, match="no training rows to fit the imputer on"):
        fit_imputer(raw["cna"].iloc[:0])
    with pytest.raises(CohortError, match=r"modality 'cna': no training sample has it"):
        fit_preprocess({"cna": raw["cna"].iloc[:0]})
    dup = pd.concat([split, split.iloc[:1]])
    with pytest.raises(CohortError, match=r"split: duplicated sample id 'a'"):
        preprocess_modalities(raw, dup)
