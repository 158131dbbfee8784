"""Embeddings that earn their place: on linear data PCA reconstructs the validation rows better than
a briefly trained autoencoder of the same size, so ``prepare`` picks it (and records both R2s); with
``embedding_choice="configured"`` the autoencoder stays. And the z-score transform's clipping."""

import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from cgjax.embedding import EmbeddingOptions, load_embedding, save_embedding
from cgjax.embedding.choice import compare_with_pca, reconstruction_r2
from cgjax.data.prepare import PrepareOptions, prepare, read_matrices, summary
from cgjax.data.preprocess import PreprocessOptions, load_preprocess, save_preprocess, apply_preprocess
from cgjax.errors import CgjaxError


def linear_dir(root, n=300, d=20, rank=2, seed=0):
    """Two modalities a, b: rank-2 linear functions of shared factors plus 5% noise (PCA's home)."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(n, rank))
    root.mkdir()
    ids = [f"s{i:03d}" for i in range(n)]
    for m in ("a", "b"):
        x = u @ rng.normal(size=(rank, d)) + 0.05 * rng.normal(size=(n, d))
        pd.DataFrame(x, index=pd.Index(ids, name="sample_id"), columns=[f"{m}{j}" for j in range(d)]).to_csv(root / f"{m}.csv")
    return root


def _opts(choice):
    emb = EmbeddingOptions(latent_dim=2, max_epochs=3, patience=1, epochs_per_call=3, batch_size=32)
    return PrepareOptions(preprocess=PreprocessOptions(transforms={}), embedding=emb, embedding_choice=choice)


def test_pca_wins_on_linear_data_and_the_choice_is_recorded(tmp_path):
    raw = read_matrices(linear_dir(tmp_path / "m"))
    best = prepare(raw, _opts("best"))
    split = best.split
    for m in ("a", "b"):
        e = best.embedding[m]
        r2 = e.info["reconstruction_r2_val"]
        assert e.method == "pca" and e.info["chosen_method"] == "pca" and e.info["configured_method"] == "autoencoder"
        assert r2["pca"] > 0.95 and r2["pca"] > r2["autoencoder"]
        # the recorded PCA R2, re-derived with sklearn on the same train / val rows
        feats = best.features[m]
        tr = feats[split.reindex(feats.index).to_numpy() == "train"].to_numpy(np.float64)
        va = feats[split.reindex(feats.index).to_numpy() == "val"].to_numpy(np.float64)
        sc = StandardScaler().fit(tr)
        p = PCA(2, random_state=42).fit(sc.transform(tr))
        rec = sc.inverse_transform(p.inverse_transform(p.transform(sc.transform(va))))
        ref = 1 - ((va - rec) ** 2).sum() / ((va - tr.mean(0)) ** 2).sum()
        assert r2["pca"] == pytest.approx(ref, abs=1e-5)
        # the cohort's latents are the PCA's
        np.testing.assert_allclose(best.cohort.data[m][best.cohort.masks[m]][:3],
                                   e.encode(feats.to_numpy(np.float32))[:3], rtol=1e-5, atol=1e-5)
    assert "PCA" in summary(best) and "-> pca" in summary(best)
    saved = load_embedding(save_embedding(best.embedding, tmp_path / "emb"))  # recorded in embedding.json
    assert saved["a"].method == "pca" and saved["a"].info["reconstruction_r2_val"] == best.embedding["a"].info[
        "reconstruction_r2_val"]
    kept = prepare(raw, _opts("configured"))
    for m in ("a", "b"):
        e = kept.embedding[m]
        assert e.method == "autoencoder" and e.info["chosen_method"] == "autoencoder"
        assert e.info["reconstruction_r2_val"]["pca"] == pytest.approx(best.embedding[m].info["reconstruction_r2_val"]["pca"])
    with pytest.raises(CgjaxError, match="embedding choice"):
        compare_with_pca(kept.embedding, {}, {}, EmbeddingOptions(), choose="magic")


def test_reconstruction_r2_definition():
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert reconstruction_r2(x, x, x.mean(0)) == 1.0
    assert reconstruction_r2(x, np.broadcast_to(x.mean(0), x.shape), x.mean(0)) == 0.0
    assert reconstruction_r2(x, x + 1, x.mean(0)) == pytest.approx(1 - 4 / 4)


def test_zscore_transform_clips_and_round_trips(tmp_path):
    from cgjax.data.preprocess import preprocess_modalities

    rng = np.random.default_rng(1)
    ids = [f"s{i}" for i in range(40)]
    df = pd.DataFrame(rng.normal(size=(40, 3)) * 3, index=ids, columns=["g1", "g2", "g3"])
    split = pd.Series(["train"] * 30 + ["val"] * 5 + ["test"] * 5, index=ids)
    opts = PreprocessOptions(transforms={"rna": "zscore"}, zscore_clip=2.5)
    feats, fitted = preprocess_modalities({"rna": df}, split, opts, return_fitted=True)
    np.testing.assert_allclose(feats["rna"].to_numpy(), np.clip(df.to_numpy(), -2.5, 2.5), rtol=1e-6)
    assert (df.abs() > 2.5).to_numpy().any()  # something was clipped
    save_preprocess(fitted, tmp_path / "pp")
    again = apply_preprocess(load_preprocess(tmp_path / "pp"), {"rna": df})
    np.testing.assert_allclose(again["rna"].to_numpy(), feats["rna"].to_numpy())
    plain = preprocess_modalities({"rna": df}, split, PreprocessOptions(transforms={"rna": "zscore"}))
    np.testing.assert_allclose(plain["rna"].to_numpy(), df.to_numpy(), rtol=1e-6)
    with pytest.raises(Exception, match="zscore_clip"):
        preprocess_modalities({"rna": df}, split, PreprocessOptions(transforms={"rna": "zscore"}, zscore_clip=0))
