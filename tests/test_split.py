"""The paper's split rule as properties, and the per-modality standard scalers."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from cgjax.data import (Scalers, apply_scalers, fit_scalers, from_arrays, invert_scalers, split_cohort,
                        split_counts)
from cgjax.errors import CohortError

# (cancer type, total, complete) from the paper's Table 4.
TABLE4 = [("BRCA", 1224, 812), ("KIRC", 610, 442), ("UCEC", 584, 393), ("LUAD", 581, 310), ("HNSC", 574, 315),
          ("LUSC", 555, 301), ("PRAD", 551, 231), ("OV", 530, 50), ("LGG", 530, 400), ("GBM", 523, 42),
          ("COAD", 503, 331), ("STAD", 478, 255), ("SKCM", 475, 159), ("THCA", 460, 0), ("BLCA", 432, 244),
          ("LIHC", 429, 157), ("KIRP", 324, 190), ("CESC", 312, 121), ("SARC", 267, 181), ("TGCT", 156, 120)]


def make_cohort(strata, seed=0, n_mod=3, ids=None):
    """strata: list of (cancer type or None, n samples, n complete). Incomplete samples miss 1+ modality."""
    rng = np.random.default_rng(seed)
    types, masks = [], []
    for t, n, k in strata:
        m = np.ones((n, n_mod), bool)
        for i in range(k, n):  # incomplete: drop a random non-empty proper subset of modalities
            drop = rng.random(n_mod) < 0.5
            if not drop.any():
                drop[rng.integers(n_mod)] = True
            if drop.all():
                drop[rng.integers(n_mod)] = False
            m[i] = ~drop
        types += [t] * n
        masks.append(m)
    masks = np.concatenate(masks)
    n = len(types)
    if ids is None:
        ids = [f"S{i:05d}" for i in rng.permutation(n)]
    data = {f"m{j}": rng.normal(size=(n, 2 + j)).astype(np.float32) for j in range(n_mod)}
    clinical = pd.DataFrame({"sample_id": ids, "cancer_type": types})
    return from_arrays(ids, data, masks={f"m{j}": masks[:, j] for j in range(n_mod)}, clinical=clinical)


STRATA = [("A", 200, 150), ("B", 61, 40), ("C", 40, 3), ("D", 33, 0), ("E", 19, 19), (None, 27, 20)]


@pytest.fixture(scope="module")
def cohort():
    return make_cohort(STRATA)


@pytest.fixture(scope="module")
def split(cohort):
    return split_cohort(cohort, seed=7)


def test_every_sample_assigned_once(cohort, split):
    sp = split.label("split")
    assert len(sp) == cohort.n_samples
    assert set(sp) <= {"train", "val", "test"}
    assert list(split.sample_ids) == list(cohort.sample_ids)  # nothing lost, duplicated or reordered
    for m in cohort.modalities:
        assert np.array_equal(split.data[m], cohort.data[m], equal_nan=True)


def test_val_test_only_complete(split):
    sp = split.label("split")
    assert split.complete()[sp != "train"].all()


def test_counts_per_stratum_follow_paper_rule(split):
    sp = split.label("split")
    ct = np.array(["<none>" if pd.isna(t) else t for t in split.label("cancer_type")])
    complete = split.complete()
    for t, n, k in STRATA:
        sel = ct == ("<none>" if t is None else t)
        n_val, n_test = math.floor(0.05 * n), math.floor(0.15 * n)
        if k < n_val + n_test:
            n_val = k * n_val // (n_val + n_test)
            n_test = k - n_val
        assert sel.sum() == n and complete[sel].sum() == k
        assert (sp[sel] == "val").sum() == n_val, t
        assert (sp[sel] == "test").sum() == n_test, t
        assert (sp[sel] == "train").sum() == n - n_val - n_test, t  # every leftover goes to train


def test_small_complete_pool_rule():
    # C: n=40 -> n_val 2, n_test 6; only 3 complete: val = floor(3*2/8) = 0, test = 3
    assert split_counts(40, 3) == (37, 0, 3)
    assert split_counts(40, 4) == (36, 1, 3)
    assert split_counts(33, 0) == (33, 0, 0)  # THCA-like: nothing complete, all train
    assert split_counts(19, 19) == (17, 0, 2)
    assert split_counts(20, 20) == (16, 1, 3)  # exact arithmetic: 0.15 * 20 is 3
    assert split_counts(5, 5) == (5, 0, 0)


def test_paper_table4_totals():
    # The reference script gives val 443 / test 1350 (matching the paper) but train 8096 because it
    # drops leftovers; assigning every leftover to train gives the paper's 8305.
    totals = np.sum([split_counts(n, k) for _, n, k in TABLE4], axis=0)
    assert tuple(totals) == (8305, 443, 1350)


def test_deterministic_and_seed_dependent(cohort, split):
    again = split_cohort(cohort, seed=7)
    assert list(again.label("split")) == list(split.label("split"))
    other = split_cohort(cohort, seed=8)
    assert list(other.label("split")) != list(split.label("split"))


def test_independent_of_row_order(cohort, split):
    perm = np.random.default_rng(3).permutation(cohort.n_samples)
    shuffled = split_cohort(cohort.subset(perm), seed=7)
    expect = dict(zip(split.sample_ids, split.label("split")))
    assert dict(zip(shuffled.sample_ids, shuffled.label("split"))) == expect


def test_strata_are_independent(cohort, split):
    # Removing a cancer type does not reshuffle the others.
    keep = np.array([t != "A" for t in cohort.label("cancer_type")])
    sub = split_cohort(cohort.subset(keep), seed=7)
    expect = dict(zip(split.sample_ids, split.label("split")))
    assert all(expect[s] == v for s, v in zip(sub.sample_ids, sub.label("split")))


def test_no_cancer_type_is_one_stratum():
    c = make_cohort([("X", 100, 60)])
    c = from_arrays(c.sample_ids, c.data, masks=c.masks)
    sp = split_cohort(c).label("split")
    assert ((sp == "val").sum(), (sp == "test").sum(), (sp == "train").sum()) == (5, 15, 80)


def test_custom_fractions():
    c = make_cohort([("X", 100, 100)])
    sp = split_cohort(c, fractions=(0.7, 0.1, 0.2)).label("split")
    assert ((sp == "val").sum(), (sp == "test").sum()) == (10, 20)
    for bad in [(0.5, 0.5, 0.5), (1.1, -0.05, -0.05), (0.8, 0.2)]:
        with pytest.raises(CohortError, match="split fractions"):
            split_cohort(c, fractions=bad)


def test_existing_split_kept_unless_forced(split):
    fixed = split.clinical.copy()
    fixed["split"] = "test"
    c = from_arrays(split.sample_ids, split.data, masks=split.masks, clinical=fixed.reset_index())
    assert split_cohort(c) is c
    assert set(split_cohort(c).label("split")) == {"test"}
    forced = split_cohort(c, seed=7, force=True)
    assert list(forced.label("split")) == list(split.label("split"))


def test_partial_split_column_is_an_error(split):
    clin = split.clinical.copy()
    clin.iloc[4, clin.columns.get_loc("split")] = None
    c = from_arrays(split.sample_ids, split.data, masks=split.masks, clinical=clin.reset_index())
    with pytest.raises(CohortError, match=rf"split column is partially filled: sample '{split.sample_ids[4]}'"):
        split_cohort(c)
    assert split_cohort(c, force=True).clinical["split"].notna().all()


# ------------------------------------------------------------------------------------------------
# scalers
# ------------------------------------------------------------------------------------------------
def scaled_cohort(seed=0):
    rng = np.random.default_rng(seed)
    n = 50
    x = (rng.normal(size=(n, 4)) * [1, 10, 1e-3, 1] + [0, 5, -3, 2]).astype(np.float32)
    x[:, 3] = 2.5  # a constant feature
    y = rng.normal(size=(n, 2)).astype(np.float32)
    mx, my = rng.random(n) < 0.8, rng.random(n) < 0.6
    mx[~my] = True
    return from_arrays([f"s{i}" for i in range(n)], {"x": x, "y": y}, masks={"x": mx, "y": my})


def test_fit_matches_sklearn_on_present_rows():
    from sklearn.preprocessing import StandardScaler
    c = scaled_cohort()
    sc = fit_scalers(c)
    assert isinstance(sc, Scalers) and set(sc) == {"x", "y"} and sc.dims() == {"x": 4, "y": 2}
    for m in ("x", "y"):
        ref = StandardScaler().fit(c.data[m][c.masks[m]])
        mu, sd = sc[m]
        assert mu.dtype == np.float32 and sd.dtype == np.float32 and mu.shape == (c.dims()[m],)
        np.testing.assert_allclose(mu, ref.mean_, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(sd, ref.scale_, rtol=1e-6)
    assert sc["x"][1][3] == 1.0  # constant feature: std 1, not 0


def test_apply_and_invert():
    c = scaled_cohort()
    sc = fit_scalers(c)
    z = apply_scalers(c, sc)
    for m in ("x", "y"):
        assert z.data[m].dtype == np.float32
        assert np.isnan(z.data[m][~z.masks[m]]).all()  # absent rows stay NaN
        assert np.array_equal(z.masks[m], c.masks[m])
        present = z.data[m][z.masks[m]].astype(np.float64)
        np.testing.assert_allclose(present.mean(0), 0, atol=1e-4)  # f32 data quantisation
        back = invert_scalers(m, z.data[m][z.masks[m]], sc)
        np.testing.assert_allclose(back, c.data[m][c.masks[m]], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(z.data["x"][z.masks["x"]][:, :3].std(0), 1, rtol=1e-4)
    assert (z.data["x"][z.masks["x"]][:, 3] == 0).all()


def test_scalers_json_round_trip_exact():
    sc = fit_scalers(scaled_cohort())
    back = Scalers.from_dict(json.loads(json.dumps(sc.to_dict())))
    assert back == sc
    for m in sc:
        for a, b in zip(sc[m], back[m]):
            assert a.dtype == b.dtype == np.float32 and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def test_scalers_errors():
    c = scaled_cohort()
    sc = fit_scalers(c)
    with pytest.raises(CohortError, match=r"no scaler for modality 'y'"):
        apply_scalers(c, Scalers({"x": sc["x"]}))
    with pytest.raises(CohortError, match=r"modality 'x' has 3 features but its scaler was fitted on 4"):
        invert_scalers("x", np.zeros((2, 3)), sc)
    with pytest.raises(CohortError, match="malformed scalers"):
        Scalers.from_dict({"modalities": {"x": {"mean": [0.0, 1.0], "std": [1.0]}}})
    with pytest.raises(CohortError, match="malformed scalers"):
        Scalers.from_dict({"modalities": {"x": {"mean": [0.0], "std": [0.0]}}})
    with pytest.raises(CohortError, match="malformed scalers"):
        Scalers.from_dict({})


def test_fit_refuses_non_train_rows():
    c = split_cohort(make_cohort([("A", 100, 100)]))
    with pytest.raises(CohortError, match=r"fit_scalers got 20 non-train samples"):
        fit_scalers(c)
    sc = fit_scalers(c.split("train"))
    assert set(sc) == set(c.modalities)
