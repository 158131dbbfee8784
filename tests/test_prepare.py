"""The whole real-data pipeline (cgjax.data.prepare, ``cgjax prepare``): raw files -> split ->
preprocessing -> autoencoders -> latents, then ``cgjax train`` and ``cgjax impute --decode``.

Real TCGA downloads are not available in tests: the Xena files are written here in the hub's
layout (features x samples, tab-separated), two small cohorts whose three modalities share a
3-d latent factor.
"""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cgjax.cli import main as cli
from cgjax.data import read_cohort, split_cohort
from cgjax.data.prepare import (PrepareOptions, assign_split, prepare, prepare_matrices, read_matrices,
                                write_prepared)
from cgjax.data.preprocess import PreprocessOptions
from cgjax.data.xena import read_xena
from cgjax.embedding import EmbeddingOptions, load_embedding
from cgjax.errors import CohortError

N = 30  # samples per cohort
LATENT = 3
# tiny autoencoders, few epochs; CNA by PCA (as WSI would be) to exercise both kinds of embedding.
# The same options in-process and on the command line, so that the compiled programs are shared.
# the autoencoders are kept even where PCA reconstructs better (test_embedding_choice.py tests the choice)
PREP_ARGS = ["--latent-dim", str(LATENT), "--max-epochs", "6", "--batch-size", "16", "--embed", "cna=pca", "--quiet",
             "--embedding-choice", "configured"]
OPTIONS = PrepareOptions(embedding=EmbeddingOptions(latent_dim=LATENT, max_epochs=6, batch_size=16,
                                                    methods={"cna": "pca"}), embedding_choice="configured")
DIFFUSION = {"arch": {"hidden": 16, "n_layers": 3, "time_dim": 8, "cond_embed_dim": 8},
             "schedule": {"timesteps": 30},
             "train": {"epochs": 2, "eval_every": 2, "batch_size": 32, "steps_per_call": 10, "val_replicates": 2}}


def write_tsv(path: Path, rows) -> Path:
    path.write_text("\n".join("\t".join(map(str, r)) for r in rows) + "\n")
    return path


def xena_fixture(root: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    w_rna, w_cna, w_rppa = rng.normal(size=(3, 40)), rng.normal(size=(3, 30)), rng.normal(size=(3, 12))
    for code, tss in (("AAA", "AB"), ("BBB", "CD")):
        ids = [f"TCGA-{tss}-{i:04d}-01A" for i in range(N)]
        u = rng.normal(size=(N, 3))
        lam = np.exp(4 + 0.7 * u @ w_rna)
        lam[:, -5:] = 0.01  # five nearly silent genes: the CPM filter drops them
        rna = np.log2(rng.poisson(lam) + 1.0)  # Xena star_counts: log2(count + 1)
        cn = np.round(2 * np.exp2(np.clip(0.4 * u @ w_cna + 0.1 * rng.normal(size=(N, 30)), -3, 1.5)), 3)
        cn[0, 0] = 0.0  # a homozygous deletion: missing, then imputed
        rppa = u @ w_rppa + 0.1 * rng.normal(size=(N, 12))
        everyone = np.ones(N, bool)
        has_cna, has_rppa = np.arange(N) % 7 != 3, np.arange(N) % 5 != 1

        def matrix(kind, id_col, x, keep, feats):
            cols = [s for s, k in zip(ids, keep) if k]
            rows = [[id_col, *cols]] + [[f, *[f"{v:.4f}" for v, k in zip(x[:, j], keep) if k]]
                                        for j, f in enumerate(feats)]
            write_tsv(root / f"TCGA-{code}.{kind}.tsv", rows)

        matrix("star_counts", "Ensembl_ID", rna, everyone, [f"ENSG{j:05d}" for j in range(40)])
        matrix("gene-level_absolute", "Ensembl_ID", cn, has_cna, [f"GENE{j}" for j in range(30)])
        matrix("protein", "peptide_target", rppa, has_rppa, [f"PROT{j}" for j in range(12)])
        stages = ["Stage I", "Stage IIA", "Stage III", "Stage IVB", "Not Reported"]
        write_tsv(root / f"TCGA-{code}.clinical.tsv", [["sample", "ajcc_pathologic_stage.diagnoses"]]
                  + [[s, stages[i % 5]] for i, s in enumerate(ids)])
        write_tsv(root / f"TCGA-{code}.survival.tsv", [["sample", "OS", "OS.time", "_PATIENT"]]
                  + [[s, i % 2, 100 + 10 * i, s[:12]] for i, s in enumerate(ids)])
    return root


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory):
    return xena_fixture(tmp_path_factory.mktemp("xena") / "raw")


@pytest.fixture(scope="module")
def prepared_dir(raw_dir):
    out = raw_dir.parent / "cohort"
    assert cli(["prepare", "xena", str(raw_dir), "--out", str(out), "--write-features", *PREP_ARGS]) == 0
    return out


@pytest.fixture(scope="module")
def trained(prepared_dir):
    cfg = prepared_dir.parent / "tiny.json"
    cfg.write_text(json.dumps(DIFFUSION))
    ck = prepared_dir.parent / "models"
    # without the post-training calibration check (tests/test_calibration_check.py tests it)
    assert cli(["train", str(prepared_dir), "--out", str(ck), "--config", str(cfg), "--quiet",
                "--no-calibration-check"]) == 0
    return ck


# ---- prepare ----------------------------------------------------------------------------------
def test_prepare_writes_a_cohort_of_latents_with_its_split_and_embedding(prepared_dir, raw_dir):
    cohort = read_cohort(prepared_dir)
    assert set(cohort.modalities) == {"cna", "rnaseq", "rppa"} and cohort.n_samples == 2 * N
    assert cohort.dims() == {"cna": LATENT, "rnaseq": LATENT, "rppa": LATENT}
    assert cohort.feature_names["rppa"] == ["z0", "z1", "z2"] and cohort.feature_names["cna"][0] == "pc1"
    # presence follows the raw files: rppa lacks every 5th sample from 1, cna every 7th from 3
    assert (~cohort.masks["rppa"]).sum() == 2 * 6 and (~cohort.masks["cna"]).sum() == 2 * 4
    clin = cohort.clinical
    assert set(clin["split"]) == {"train", "val", "test"} and set(clin["cancer_type"]) == {"AAA", "BBB"}
    assert clin["stage"].isna().sum() == 2 * 6 and clin["os_event"].notna().all()
    # val and test only from complete samples (docs/reference.md 1.4); 'cgjax train' keeps this split
    assert cohort.complete()[clin["split"].to_numpy() != "train"].all()
    assert split_cohort(cohort) is cohort
    raw = read_xena(raw_dir)
    pd.testing.assert_series_equal(assign_split(raw), clin["split"].rename("split"), check_dtype=False)
    emb = load_embedding(prepared_dir / "embedding")
    assert emb["rppa"].feature_names == [f"PROT{j}" for j in range(12)]
    assert len(emb["rnaseq"].feature_names) == 35  # 5 silent genes filtered out
    # docs/reference.md 8.2, 3 layers for RNA-seq: 35 (3/35)^(1/3) = 15.4, 35 (3/35)^(2/3) = 6.8
    assert emb["rnaseq"].model.config.hidden == (15, 6, 3)
    assert emb["rppa"].model.config.hidden == (6, 3)  # 12 (3/12)^(1/2) = 6
    assert emb["cna"].method == "pca" and emb["cna"].latent_names == ["pc1", "pc2", "pc3"]
    r2 = emb["rnaseq"].info["reconstruction_r2_val"]  # both measured, the configured one kept
    assert set(r2) == {"autoencoder", "pca"} and emb["rnaseq"].info["chosen_method"] == "autoencoder"
    assert emb.info["split"] == clin["split"].value_counts().to_dict()
    # features/ is a cohort of the preprocessed tables, consistent with the latents
    feats = read_cohort(prepared_dir / "features")
    assert feats.dims() == {"cna": 30, "rnaseq": 35, "rppa": 12}
    rows = feats.masks["rppa"]
    np.testing.assert_allclose(emb.encode("rppa", feats.data["rppa"][rows]), cohort.data["rppa"][rows],
                               rtol=1e-5, atol=1e-5)


def test_saved_preparation_reencodes_the_raw_samples_exactly(prepared_dir, raw_dir):
    """Every transform and imputer kind of the Xena layout (RNA gene filter + KNN, CNA deletion +
    median imputer, RPPA per-protein medians + KNN), saved and reloaded, then applied to the raw
    samples of one cancer type as if they were new patients: the prepared cohort's latents."""
    from cgjax.data.prepare import apply_prepared
    from cgjax.data.preprocess import load_preprocess
    from cgjax.data.xena import RawCohort

    fitted = load_preprocess(prepared_dir / "preprocess")
    assert {m: (f.transform, f.imputer.kind) for m, f in fitted.items()} == {
        "rnaseq": ("rna_log2_counts", "knn"), "cna": ("cna_absolute", "median"), "rppa": ("rppa", "knn")}
    assert len(fitted["rnaseq"].genes) == 35 and fitted["rppa"].rppa_medians.notna().all()
    raw = read_xena(raw_dir)
    some = [s for s in raw.clinical.index if raw.clinical.loc[s, "cancer_type"] == "BBB"]
    new = RawCohort({m: df.loc[df.index.intersection(some)] for m, df in raw.modalities.items()},
                    raw.clinical.loc[some], raw.original_ids, "new patients")
    got = apply_prepared(new, prepared_dir)
    ref = read_cohort(prepared_dir)
    at = pd.Index(ref.sample_ids).get_indexer(got.sample_ids)
    assert got.n_samples == N and (at >= 0).all()
    for m in ref.modalities:
        np.testing.assert_array_equal(got.masks[m], ref.masks[m][at])
        rows = got.masks[m]
        np.testing.assert_allclose(got.data[m][rows], ref.data[m][at][rows], rtol=1e-5, atol=1e-5, err_msg=m)


def test_nothing_is_fitted_on_test_rows(raw_dir):
    """Changing the test samples' raw values changes their latents and nothing else."""
    raw = read_xena(raw_dir)
    split = assign_split(raw)
    test_ids = split.index[split == "test"]
    mods = {m: df.copy() for m, df in raw.modalities.items()}
    for m, df in mods.items():
        rows = df.index.isin(test_ids)
        df.loc[rows] = df.loc[rows].to_numpy() * 1.5 + 0.5
    changed = dataclasses.replace(raw, modalities=mods)
    a, b = prepare(raw, OPTIONS), prepare(changed, OPTIONS)
    assert (a.split == b.split).all()
    for m in a.embedding.modalities:
        ea, eb = a.embedding[m].model, b.embedding[m].model
        if m == "cna":
            np.testing.assert_array_equal(ea.components, eb.components)
            np.testing.assert_array_equal(ea.mean, eb.mean)
        else:
            assert ea.history == eb.history
            for x, y in zip(_leaves(ea.params) + _leaves(ea.batch_stats), _leaves(eb.params) + _leaves(eb.batch_stats)):
                np.testing.assert_array_equal(x, y)
        is_test = a.cohort.clinical["split"].to_numpy() == "test"
        keep = a.cohort.masks[m] & ~is_test
        np.testing.assert_array_equal(a.cohort.data[m][keep], b.cohort.data[m][keep])
        assert not np.allclose(a.cohort.data[m][a.cohort.masks[m] & is_test],
                               b.cohort.data[m][b.cohort.masks[m] & is_test])


def _leaves(tree):
    import jax

    return jax.tree.leaves(tree)


def test_prepare_refuses_to_clobber(prepared_dir, raw_dir, tmp_path, capsys):
    assert cli(["prepare", "xena", str(raw_dir), "--out", str(prepared_dir), *PREP_ARGS]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("precious")
    assert cli(["prepare", "xena", str(raw_dir), "--out", str(other), "--overwrite", *PREP_ARGS]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a cohort written by 'cgjax prepare'" in err[0]
    assert (other / "notes.txt").read_text() == "precious"
    assert cli(["prepare", "xena", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"), *PREP_ARGS]) == 2
    assert "Xena data directory does not exist" in capsys.readouterr().err
    assert cli(["prepare", "xena", str(raw_dir), "--out", str(tmp_path / "o"), "--transform", "rppa", *PREP_ARGS]) == 2
    assert "expected MODALITY=VALUE" in capsys.readouterr().err
    assert cli(["prepare", "xena", str(raw_dir), "--out", str(tmp_path / "o"), "--embed", "rppa=umap",
                *PREP_ARGS]) == 2
    assert "'umap' is not one of" in capsys.readouterr().err


def test_write_prepared_overwrites_atomically(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "m"
    d.mkdir()
    ids = [f"s{i:02d}" for i in range(40)]
    pd.DataFrame(rng.normal(size=(40, 4)), index=pd.Index(ids, name="sample_id")).to_csv(d / "a.csv")
    pd.DataFrame(rng.normal(size=(40, 3)), index=pd.Index(ids, name="sample_id")).to_csv(d / "b.csv")
    opt = PrepareOptions(preprocess=PreprocessOptions(transforms={}),
                         embedding=EmbeddingOptions(methods={"a": "pca", "b": "none"}, latent_dim=2))
    out = tmp_path / "c"
    prep = prepare_matrices(d, out, options=opt)
    assert read_cohort(out).dims() == {"a": 2, "b": 3}
    write_prepared(prep, out, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "m"]  # no temporary or old directory left


# ---- train, impute, decode ----------------------------------------------------------------------
def test_train_and_impute_with_decode(prepared_dir, trained, tmp_path, capsys):
    out = tmp_path / "imputed"
    assert cli(["impute", str(trained), str(prepared_dir), "--out", str(out), "--decode", "--replicates", "2",
                "--quiet"]) == 0
    cohort = read_cohort(prepared_dir)
    emb = load_embedding(prepared_dir / "embedding")
    for m in ("rppa", "cna"):
        df = pd.read_parquet(out / f"{m}.parquet")
        feats = emb[m].feature_names
        assert list(df.columns) == ["sample_id", "replicate", *feats, "attempts", "passed"]
        missing = set(cohort.sample_ids[~cohort.masks[m]])
        assert set(df["sample_id"]) == missing and len(df) == 2 * len(missing)
        x = df[feats].to_numpy()
        assert np.isfinite(x).all()
    assert not (out / "rnaseq.parquet").exists()  # every sample has RNA-seq
    # the decoded tables are the decoder applied to the imputed latents (same seed, same draws)
    latent = tmp_path / "latent"
    assert cli(["impute", str(trained), str(prepared_dir), "--out", str(latent), "--replicates", "2",
                "--quiet"]) == 0
    for m in ("rppa", "cna"):
        z = pd.read_parquet(latent / f"{m}.parquet")
        assert list(z.columns[2:-2]) == emb[m].latent_names
        x = pd.read_parquet(out / f"{m}.parquet")
        np.testing.assert_allclose(x[emb[m].feature_names].to_numpy(), emb.decode(m, z[emb[m].latent_names]),
                                   rtol=1e-5, atol=1e-5)
        pd.testing.assert_frame_equal(x[["sample_id", "replicate", "attempts", "passed"]],
                                      z[["sample_id", "replicate", "attempts", "passed"]])
    # a cohort without its embedding: a one-line error unless --embedding says where it is
    bare = tmp_path / "bare"
    shutil.copytree(prepared_dir, bare, ignore=shutil.ignore_patterns("embedding", "features"))
    assert cli(["impute", str(trained), str(bare), "--out", str(tmp_path / "o"), "--decode", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no embedding/embedding.json" in err[0] and "--embedding DIR" in err[0]
    assert not (tmp_path / "o").exists()
    assert cli(["impute", str(trained), str(bare), "--out", str(tmp_path / "o"), "--replicates", "2",
                "--embedding", str(prepared_dir / "embedding"), "--quiet"]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "o" / "rppa.parquet"),
                                  pd.read_parquet(out / "rppa.parquet"))


# ---- plain matrices ---------------------------------------------------------------------------
def test_prepare_matrices_from_the_command_line(tmp_path, capsys):
    rng = np.random.default_rng(1)
    d = tmp_path / "mats"
    d.mkdir()
    ids = [f"p{i:03d}" for i in range(60)]
    u = rng.normal(size=(60, 2))
    expr = pd.DataFrame(np.round(np.exp(3 + u @ rng.normal(size=(2, 8)))), index=ids,
                        columns=[f"g{j}" for j in range(8)])
    expr.iloc[5, 2] = np.nan  # a missing cell: imputed
    expr.index.name = "id"
    expr.to_csv(d / "rna.tsv", sep="\t")
    prot = pd.DataFrame(u[:50] @ rng.normal(size=(2, 5)), index=ids[:50], columns=[f"p{j}" for j in range(5)])
    prot.to_csv(d / "prot.csv")
    pd.DataFrame({"sample_id": ids, "cancer_type": ["X"] * 30 + ["Y"] * 30,
                  "stage": ["Stage II", "3", "", "Stage IVA"] * 15, "extra": 1}).to_csv(d / "clinical.csv",
                                                                                       index=False)
    (d / "notes.txt").write_text("ignored")
    out = tmp_path / "cohort"
    assert cli(["prepare", "matrices", str(d), "--out", str(out), "--transform", "rna=rna_counts",
                "--embed", "rna=pca", "--embed", "prot=none", "--latent-dim", "2", "--quiet"]) == 0
    c = read_cohort(out)
    assert c.dims() == {"prot": 5, "rna": 2} and c.feature_names["rna"] == ["pc1", "pc2"]
    np.testing.assert_array_equal(c.clinical["stage"].to_numpy()[:4], [2.0, 3.0, np.nan, 4.0])  # text grouped
    assert c.masks["prot"].sum() == 50 and set(c.clinical["split"]) == {"train", "val", "test"}
    emb = load_embedding(out / "embedding")
    assert emb["rna"].info["transform"] == "rna_counts" and emb["prot"].info["transform"] == "none"

    # new patients through the saved preparation: patients the cohort already had get its latents
    # back exactly (nothing refitted); a feature missing from the new tables is imputed
    new = tmp_path / "new"
    new.mkdir()
    pick = ids[3:9] + ids[40:44]
    expr.loc[pick].to_csv(new / "rna.tsv", sep="\t")
    prot.loc[[i for i in pick if i in prot.index]].to_csv(new / "prot.csv")
    assert cli(["prepare", "apply", str(out), str(new), "--out", str(tmp_path / "new_cohort")]) == 0
    n = read_cohort(tmp_path / "new_cohort")
    assert list(n.sample_ids) == sorted(pick) and "split" not in n.clinical
    at = pd.Index(c.sample_ids).get_indexer(n.sample_ids)
    for m in ("rna", "prot"):
        np.testing.assert_array_equal(n.masks[m], c.masks[m][at])
        np.testing.assert_allclose(n.data[m][n.masks[m]], c.data[m][at][n.masks[m]], rtol=1e-5, atol=1e-5)
    expr.loc[pick].drop(columns=["g4"]).to_csv(new / "rna.tsv", sep="\t")
    assert cli(["prepare", "apply", str(out), str(new), "--out", str(tmp_path / "new2")]) == 0
    assert np.isfinite(read_cohort(tmp_path / "new2").data["rna"]).all()
    # one-line errors: a modality the preparation never saw; a directory that is no preparation
    capsys.readouterr()
    (new / "cnv.csv").write_text("id,f1\np003,1\n")
    for prepared, needle in ((out, "modality 'cnv' is not one the preparation"), (d, "not a cohort written by")):
        assert cli(["prepare", "apply", str(prepared), str(new), "--out", str(tmp_path / "new3")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "new3").exists()


@pytest.mark.parametrize("files, message", [
    ({}, r"no modality table"),
    ({"a.csv": "id,f1,f2\ns1,1,2\ns1,3,4\n"}, r"a.csv: sample 's1' appears more than once"),
    ({"a.csv": "id,f1,f1\ns1,1,2\n"}, r"a.csv: column 'f1' appears more than once in the header"),
    ({"a.csv": "id,f1,f2\ns1,1,high\n"}, r"a.csv: sample 's1', column 'f2': value 'high' is not a number"),
    ({"a.csv": "id,f1\ns1,inf\n"}, r"a.csv: sample 's1', column 'f1': value inf is not finite"),
    ({"a.csv": "id,f1,f2\n,1,2\n"}, r"a.csv: data row 1 has an empty sample id"),
    ({"a.csv": "id\ns1\n"}, r"a.csv: no feature columns after the sample id column"),
    ({"a.csv": "id,f1\n"}, r"a.csv: no sample rows after the header"),
    ({"a.csv": ""}, r"a.csv: empty file"),
    ({"a.csv": "id,f1\ns1,NA\n"}, r"a.csv: every cell is missing"),
    ({"a.csv": "id,f1,f2\ns1,1,2,3\n"}, r"a.csv: malformed table"),
    ({"a.csv": "id,f1\ns1,1\n", "a.tsv": "id\tf1\ns1\t1\n"}, r"modality 'a' has two tables, a.csv and a.tsv"),
    ({"a.csv": "id,f1\ns1,1\n", "clinical.csv": "id,stage\ns1,Stage I/II NOS\n"},
     r"clinical.csv: column 'stage': sample 's1': unrecognised stage 'Stage I/II NOS'"),
    ({"a.csv": "id,f1\ns1,1\n", "clinical.csv": "id,split\ns1,holdout\n"},
     r"clinical.csv: sample 's1': split 'holdout' is not one of"),
    ({"a.csv": "id,f1\ns1,1\n", "clinical.csv": "id,os_time\ns1,long\n"},
     r"clinical.csv: clinical column 'os_time' has non-numeric value 'long'"),
    ({"a.csv": "id,f1\ns1,1\n", "clinical.csv": "id,stage\nq9,2\n"},
     r"clinical.csv: no sample in common with the modality tables"),
    ({"a.csv.gz": b"not gzip"}, r"a.csv.gz: cannot read the file as text"),
])
def test_read_matrices_errors_name_the_file_and_problem(tmp_path, files, message):
    d = tmp_path / "m"
    d.mkdir()
    for name, text in files.items():
        (d / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(CohortError, match=message) as e:
        read_matrices(d)
    assert str(d) in str(e.value)


def test_read_matrices_reads_missing_cells_and_compressed_tables(tmp_path):
    import gzip

    d = tmp_path / "m"
    d.mkdir()
    with gzip.open(d / "rna.csv.gz", "wt") as fh:
        fh.write("sample,g1,g2\ns1,1,NA\ns2,,4\ns3,NA,NA\n")
    pd.DataFrame({"x": [1.0, 2.0]}, index=pd.Index(["s1", "s4"], name="sid")).to_parquet(d / "prot.parquet")
    raw = read_matrices(d)
    assert raw.modalities["rna"].shape == (3, 2) and np.isnan(raw.modalities["rna"].loc["s3"]).all()
    assert raw.modalities["prot"].index.tolist() == ["s1", "s4"]
    assert len(raw.clinical.columns) == 0


def test_evaluate_a_prepared_cohort_in_feature_space(prepared_dir, trained, tmp_path):
    """`cgjax evaluate` on a prepared cohort with features/ decodes the draws and scores them against
    the real features beside ridge, train mean and the embedding's ceiling."""
    out = tmp_path / "eval"
    assert cli(["evaluate", str(trained), str(prepared_dir), "--out", str(out), "--quick", "--replicates", "2",
                "--steps", "reconstruction", "--oracle", "none", "--quiet"]) == 0
    fs = pd.read_csv(out / "feature_space.csv")
    assert set(fs["target"]) == {"cna", "rnaseq", "rppa"}
    assert {"multi", "coherent", "ridge", "train mean", "ceiling", "gaussian_sample"} <= set(fs["method"])
    by = fs.set_index(["target", "method"])
    for t in ("cna", "rnaseq", "rppa"):
        # nothing decoded from the latents beats the embedding's own reconstruction of the truth by more than noise
        assert by.loc[(t, "coherent"), "r2_of_mean"] <= by.loc[(t, "ceiling"), "r2_of_mean"] + 0.05
        # the train mean predicts the scalar mean 0 of the standardised features: pooled R2 <= 0 exactly
        assert by.loc[(t, "train mean"), "r2_of_mean"] <= 1e-9
    per = pd.read_csv(out / "feature_space_per_feature.csv")
    assert len(per[(per.target == "rppa") & (per.method == "ridge")]) == 12  # one row per protein
    assert "Feature space" in (out / "report.md").read_text()
