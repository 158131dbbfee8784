"""cgjax.Imputer: the scikit-learn estimator, its inputs (wide tables, dicts, MuData) and checkpoints."""

import warnings

import numpy as np
import pandas as pd
import pytest

import cgjax
from cgjax import checkpoint, pipeline
from cgjax.complete import complete
from cgjax.datasets import synthetic_tcga
from cgjax.errors import CohortError
from cgjax.imputer import Imputer
from cgjax.sampling.options import SampleOptions

MODS = ("cna", "rnaseq", "rppa")
D = 4


def wide_table(n=120, seed=0) -> pd.DataFrame:
    """Three 4-feature modalities of the synthetic cohort as one float64 table; absent blocks NaN."""
    c = synthetic_tcga(n_samples=n, seed=seed)
    blocks = [pd.DataFrame(c.data[m][:, :D].astype(np.float64) + 0.1, index=c.sample_ids,
                           columns=[f"{m}_{j}" for j in range(D)]) for m in MODS]
    df = pd.concat(blocks, axis=1)
    assert df.isna().any().any() and df.notna().all(axis=1).sum() > 20  # some missing, enough complete
    return df


@pytest.fixture(scope="module")
def df():
    return wide_table()


@pytest.fixture(scope="module")
def fitted(df):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Imputer(modalities=[f"{m}_" for m in MODS], preset="tiny", replicates=2, seed=0).fit(df)


def missing_blocks(df):
    """bool[N, M]: sample i lacks modality m."""
    return np.stack([df[[f"{m}_{j}" for j in range(D)]].isna().all(axis=1).to_numpy() for m in MODS], 1)


def test_transform_keeps_observed_and_fills_only_missing_blocks(fitted, df):
    out = fitted.transform(df)
    assert list(out.columns) == list(df.columns) and out.index.equals(df.index)
    obs = df.notna().to_numpy()
    np.testing.assert_array_equal(out.to_numpy()[obs], df.to_numpy()[obs])  # bit for bit, float64 kept
    assert out.dtypes.eq(np.float64).all()
    assert np.isfinite(out.to_numpy()).all()
    # the imputed cells are exactly the missing blocks, and they differ from any constant fill
    miss = missing_blocks(df)
    assert (np.repeat(miss, D, axis=1) == ~obs).all()
    assert np.std(out.to_numpy()[~obs]) > 0


def test_mean_fill_is_the_mean_of_the_replicates_and_seed_decides(fitted, df):
    draws = fitted.sample(df, n_replicates=2)
    assert len(draws) == 2 and not np.allclose(draws[0].to_numpy(), draws[1].to_numpy())
    mean = fitted.transform(df)
    obs = df.notna().to_numpy()
    np.testing.assert_allclose(mean.to_numpy()[~obs], ((draws[0] + draws[1]) / 2).to_numpy()[~obs], rtol=1e-5,
                               atol=1e-5)
    for d in draws:
        np.testing.assert_array_equal(d.to_numpy()[obs], df.to_numpy()[obs])
    # same seed, same draws; another seed, other draws
    np.testing.assert_array_equal(fitted.transform(df).to_numpy(), mean.to_numpy())
    other = fitted.set_params(seed=1).transform(df)
    fitted.set_params(seed=0)
    assert not np.allclose(other.to_numpy()[~obs], mean.to_numpy()[~obs])
    # fill=k returns replicate k
    one = fitted.set_params(fill=1).transform(df)
    fitted.set_params(fill="mean")
    np.testing.assert_array_equal(one.to_numpy(), draws[1].to_numpy())


def test_transform_equals_the_pipeline_imputation(fitted, df):
    """The estimator adds nothing to the samples: its imputed cells are pipeline.impute's rows."""
    cohort, _ = fitted._read(df, reset=False)
    tables = pipeline.impute(fitted.model_set_, cohort, SampleOptions(replicates=2, seed=0), progress=False)
    out = fitted.sample(df, 2)
    for m, t in tables.items():
        for r in (0, 1):
            rows = t[t.replicate == r]
            got = out[r].loc[rows.sample_id, [f"{m}_{j}" for j in range(D)]].to_numpy()
            np.testing.assert_allclose(got, rows[[f"{m}_{j}" for j in range(D)]].to_numpy(), rtol=0, atol=0)


def test_dict_of_frames_and_mudata_inputs(fitted, df):
    import mudata

    frames = {m: df[[f"{m}_{j}" for j in range(D)]].dropna() for m in MODS}
    out = fitted.transform(frames)
    # draws depend on the order of the rows: compare with the wide table in the dict's order (the
    # union of the frames' ids, in order of appearance)
    order = out[MODS[0]].index
    wide = fitted.transform(df.loc[order])
    for m in MODS:
        assert out[m].index.equals(order)
        np.testing.assert_allclose(out[m].to_numpy(), wide[out[m].columns].to_numpy(), rtol=1e-6, atol=1e-6)
    wide = fitted.transform(df.loc[sorted(df.index)])  # MuData samples are read in sorted order
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import anndata

        mdata = mudata.MuData({m: anndata.AnnData(f.to_numpy(np.float32), obs=pd.DataFrame(index=f.index),
                                                  var=pd.DataFrame(index=f.columns)) for m, f in frames.items()})
    res = fitted.transform(mdata)
    miss = missing_blocks(df)
    for k, m in enumerate(MODS):
        ad = res.mod[m]
        flags = pd.Series(ad.obs["imputed"].to_numpy(), index=ad.obs_names).loc[df.index].to_numpy()
        np.testing.assert_array_equal(flags, miss[:, k])
        x = pd.DataFrame(ad.X, index=ad.obs_names).loc[df.index].to_numpy()
        np.testing.assert_allclose(x, wide[[f"{m}_{j}" for j in range(D)]].to_numpy(), rtol=1e-6, atol=1e-6)
        assert ad.layers["replicate_0"].shape == ad.X.shape and "replicate_2" not in ad.layers
    assert res.uns["cgjax"]["method"] == "coherent" and res.uns["cgjax"]["seed"] == 0


def test_mudata_written_and_read_back(fitted, df, tmp_path):
    from cgjax.complete import write_h5mu

    c = fitted.complete(df)
    f = write_h5mu(c, tmp_path / "done.h5mu", fitted.model_set_.feature_names)
    back = cgjax.read_mudata(f)
    for m in MODS:
        assert back.masks[m].all()  # completed: every sample has every modality
        pos = pd.Index(back.sample_ids).get_indexer(c.cohort.sample_ids)
        np.testing.assert_allclose(back.data[m][pos], c.values(m), rtol=0, atol=0)
    import mudata

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        md = mudata.read_h5mu(f)
    assert md.uns["cgjax"]["sampler"] == "ddpm" and md.mod["cna"].obs["imputed"].dtype == bool
    assert (md.uns["cgjax"]["steps"], md.uns["cgjax"]["eta"]) == (-1, -1.0)  # every timestep; ddpm has no eta


def test_save_load_round_trip_and_cli_reads_it(fitted, df, tmp_path):
    from cgjax.cli import main
    from cgjax.data import write_cohort

    fitted.save(tmp_path / "ckpt")
    back = Imputer.load(tmp_path / "ckpt", replicates=2, seed=0)
    np.testing.assert_array_equal(back.transform(df).to_numpy(), fitted.transform(df).to_numpy())
    assert back.get_params()["modalities"] == {m: [f"{m}_{j}" for j in range(D)] for m in MODS}
    # the CLI imputes from the Imputer's checkpoint: same rows as the estimator's replicate 0
    cohort, _ = fitted._read(df, reset=False)
    write_cohort(cohort, tmp_path / "cohort", "parquet")
    assert main(["impute", str(tmp_path / "ckpt"), str(tmp_path / "cohort"), "--out", str(tmp_path / "imp"),
                 "--quiet", "--replicates", "2"]) == 0
    draws = fitted.sample(df, 2)
    t = pd.read_parquet(tmp_path / "imp" / "rppa.parquet")
    cols = [f"rppa_{j}" for j in range(D)]
    for r in (0, 1):
        rows = t[t.replicate == r]
        np.testing.assert_array_equal(draws[r].loc[rows.sample_id, cols].to_numpy(), rows[cols].to_numpy())


def test_cli_checkpoint_loads_into_an_imputer():
    """checkpoints/synthetic_default (written by `cgjax train`) imputes a wide table."""
    c = synthetic_tcga(n_samples=40, seed=3)
    est = Imputer.load("checkpoints/synthetic_default", seed=0)
    df = pd.concat([pd.DataFrame(c.data[m], index=c.sample_ids, columns=est.model_set_.feature_names[m])
                    for m in est.model_set_.modalities], axis=1)
    est.set_params(sampler="ddim", steps=10)
    out = est.transform(df)
    obs = df.notna().to_numpy()
    np.testing.assert_array_equal(out.to_numpy()[obs], df.to_numpy()[obs])
    assert np.isfinite(out.to_numpy()).all() and (~obs).any()
    # its imputations are the pipeline's on the same cohort
    tables = pipeline.impute(est.model_set_, c, SampleOptions(seed=0, solver=est._solver()), progress=False)
    t = tables["wsi"]
    cols = est.model_set_.feature_names["wsi"]
    np.testing.assert_array_equal(out.loc[t.sample_id, cols].to_numpy(), t[cols].to_numpy())


def test_inside_a_sklearn_pipeline(df):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = make_pipeline(Imputer(modalities=[f"{m}_" for m in MODS], preset="tiny", epochs=2),
                             StandardScaler())
        z = pipe.fit_transform(df)
    assert z.shape == df.shape and np.isfinite(z).all()
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-6)
    assert pipe.get_params()["imputer__preset"] == "tiny"


def test_bad_inputs_are_one_line_errors(fitted, df):
    bad = df.copy()
    row = np.flatnonzero(bad["cna_0"].notna())[0]
    bad.iloc[row, 0] = np.nan  # the cna block of that sample partly missing
    with pytest.raises(CohortError, match="cna"):
        fitted.transform(bad)
    with pytest.raises(CohortError, match="belongs to no modality"):
        Imputer(modalities=["cna_", "rnaseq_"]).fit(df)
    with pytest.raises(CohortError, match="no column starts"):
        Imputer(modalities=["cna_", "rnaseq_", "rppa_", "wsi_"]).fit(df)
    with pytest.raises(CohortError, match="at least 2 modalities"):
        Imputer(modalities=None).fit(df[["cna_0"]])


def test_sklearn_checks_that_apply():
    """scikit-learn's API checks that need no training run here (the rest: experiments/sklearn_checks.py;
    check_dtype_object is among those: it fits on object arrays of numbers, a training run)."""
    cheap = {"check_no_attributes_set_in_init", "check_parameters_default_constructible", "check_get_params_invariance",
             "check_set_params", "check_estimator_repr", "check_estimators_unfitted", "check_fit2d_1sample",
             "check_fit2d_1feature", "check_estimators_empty_data", "check_dont_overwrite_parameters_unfitted",
             "check_estimator_cloneable", "check_estimator_tags_renamed", "check_valid_tag_types",
             "check_mixin_order", "check_do_not_raise_errors_in_init_or_set_params", "check_estimator_sparse_tag",
             "check_estimator_sparse_array", "check_estimator_sparse_matrix", "check_complex_data"}
    from sklearn.utils.estimator_checks import estimator_checks_generator

    ran = []
    for est, check in estimator_checks_generator(Imputer(preset="tiny", epochs=1)):
        name = getattr(check, "func", check).__name__
        if name in cheap:
            check(est)  # raises on failure
            ran.append(name)
    assert len(ran) >= 12, ran


def test_numbers_in_object_columns_impute_as_floats(fitted, df):
    """What scikit-learn's check_dtype_object asks (without its training run): a frame of numbers
    held as objects imputes exactly as the same frame of floats."""
    pd.testing.assert_frame_equal(fitted.transform(df.astype(object)), fitted.transform(df))


def test_a_modality_missing_for_every_sample_is_imputed_for_all(fitted, df):
    """Hiding a whole modality (e.g. held-out RNA) imputes it for every row; the rest stays as given."""
    miss = missing_blocks(df)
    hidden = df[~(miss[:, 0] & miss[:, 2])].copy()  # samples with cna or rppa (one with neither is an error)
    cols = [f"rnaseq_{j}" for j in range(D)]
    hidden[cols] = np.nan
    out = fitted.transform(hidden)
    assert np.isfinite(out[cols].to_numpy()).all()
    obs = hidden.notna().to_numpy()
    np.testing.assert_array_equal(out.to_numpy()[obs], hidden.to_numpy()[obs])
    # the same through the dict input
    frames = {m: hidden[[f"{m}_{j}" for j in range(D)]] for m in MODS}
    assert np.isfinite(fitted.transform(frames)["rnaseq"].to_numpy()).all()
