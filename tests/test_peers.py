"""experiments/peers.py's data recipe (split, feature choice, scaling) and scoring, without the peers."""

import numpy as np
import pandas as pd
import pytest

from experiment_scripts import load


@pytest.fixture(scope="module")
def peers():
    return load("peers")


def test_split_takes_test_rows_from_complete_patients_only(peers):
    rng = np.random.default_rng(0)
    present = rng.random((200, 3)) < 0.8
    train, test = peers.split_rows(present, 0.3, seed=1)
    complete = np.flatnonzero(present.all(axis=1))
    assert set(test) <= set(complete)
    assert len(test) == round(0.3 * len(complete))
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(200))  # a partition
    assert np.array_equal(peers.split_rows(present, 0.3, seed=1)[1], test)          # seeded
    assert not np.array_equal(peers.split_rows(present, 0.3, seed=2)[1], test)
    assert len(peers.split_rows(present, 0.3, seed=1, max_test=5)[1]) == 5
    with pytest.raises(ValueError, match="at least 2 patients"):
        peers.split_rows(np.zeros((5, 2), bool), 0.3, seed=0)


def test_top_variance_uses_training_rows_only(peers):
    x = np.zeros((6, 4))
    x[:4] = [[0, 1, 0, 5], [0, -1, 0, -5], [0, 2, 1, 5], [0, -2, -1, -5]]  # train: col 3 > col 1 > col 2 > col 0
    x[4:, 0] = [100, -100]                                                 # huge variance, test rows only
    x[1] = np.nan                                                          # an absent training row
    idx = peers.top_variance(x[:4], 2)
    assert idx.tolist() == [1, 3]
    assert peers.top_variance(x[:4], 10).tolist() == [0, 1, 2, 3]


def test_standardise_and_prepare_use_train_statistics(peers):
    rng = np.random.default_rng(0)
    ids = [f"p{i}" for i in range(40)]
    a = pd.DataFrame(rng.normal(3.0, 2.0, (40, 5)), index=ids)
    b = pd.DataFrame(np.exp(rng.normal(0, 1, (30, 8))), index=ids[:30])  # counts-like, 10 patients lack it
    b.iloc[:, 0] = 7.0                                                   # a constant feature
    task = peers.prepare({"a": a, "b": b}, {"b": "log2p1"}, features=3, test_fraction=0.25, seed=0, max_test=None,
                         name="toy")
    assert task.train["a"].shape == (40 - len(task.test["a"]), 3) and task.test["b"].shape[1] == 3
    assert not np.isnan(task.test["b"]).any()                          # test rows are complete
    assert np.isnan(task.train["b"]).all(axis=1).sum() == 10           # incomplete patients train
    assert np.allclose(task.train["a"].mean(0), 0, atol=1e-5) and np.allclose(task.train["a"].std(0), 1, atol=1e-5)
    z = peers.standardise(np.array([[1.0, 7.0], [3.0, 7.0], [100.0, 7.0]]), np.array([0, 1]))
    assert np.allclose(z, [[-1, 0], [1, 0], [98, 0]])                  # train mean 2, std 1; constant -> 0


def test_score_gives_energy_only_to_samplers(peers):
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(50, 4))
    point = np.broadcast_to(truth + 0.1, (5, 50, 4))
    rec = peers.score(point, truth)
    assert rec["R"] == 1 and np.isnan(rec["energy_score"])
    assert rec["r2"] == pytest.approx(1 - 0.01 * 200 / ((truth - truth.mean()) ** 2).sum())
    draws = truth[None] + rng.normal(size=(10, 50, 4))
    exact = truth[None] + rng.normal(size=(10, 50, 4))
    rec = peers.score(draws, truth, (truth, exact))
    assert rec["R"] == 10 and rec["energy_score"] > 0 and abs(rec["energy_excess_pct"]) < 15


def test_verdicts_name_our_best_and_every_peer_that_beats_it(peers):
    df = pd.DataFrame([
        dict(dataset="d", target="t", method="coherent", r2=0.30, energy_score=1.0),
        dict(dataset="d", target="t", method="multi", r2=0.40, energy_score=1.2),
        dict(dataset="d", target="t", method="hi_mice", r2=0.35, energy_score=0.9),
        dict(dataset="d", target="t", method="mofa", r2=0.50, energy_score=1.5),
        dict(dataset="d", target="t", method="knn", r2=0.45, energy_score=np.nan),
        dict(dataset="d", target="t", method="oracle_mean", r2=0.9, energy_score=np.nan),
    ])
    (line,) = peers.verdicts(df)
    assert "cgjax's best is multi (R2 0.400" in line and "best energy score 1.000, coherent" in line
    assert "higher R2: mofa 0.500, knn 0.450;" in line and line.endswith("lower energy score: hi_mice 0.900")


def test_combine_keeps_a_rerun_that_finished(peers):
    a = pd.DataFrame([dict(dataset="d", target="t", method="coherent", r2=np.nan, note="timed out"),
                      dict(dataset="d", target="t", method="knn", r2=0.2, note="")])
    b = pd.DataFrame([dict(dataset="d", target="t", method="coherent", r2=0.3, note="rerun"),
                      dict(dataset="d", target="t", method="knn", r2=np.nan, note="timed out")])
    df = peers.combine([a, b])
    assert df.method.tolist() == ["coherent", "knn"] and df.r2.tolist() == [0.3, 0.2]
