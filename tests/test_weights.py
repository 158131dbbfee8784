"""The weighting rule (cgjax/sampling/weights.py): closed forms, per-row renormalisation, and the
non-finite scores that must never be turned silently into another rule."""

import numpy as np
import pytest

from cgjax.errors import CgjaxError
from cgjax.sampling.weights import best_available, ensemble_weights

MSE = np.array([0.5, 1.0, 2.0])


def test_closed_forms_and_per_row_renormalisation():
    np.testing.assert_allclose(ensemble_weights(MSE, "inverse_mse"), [4 / 7, 2 / 7, 1 / 7])
    z = np.array([2.0, 1.0, 0.5])
    np.testing.assert_allclose(ensemble_weights(MSE, "softmax_inverse_mse"), np.exp(z) / np.exp(z).sum())
    np.testing.assert_allclose(ensemble_weights(MSE, "uniform"), [1 / 3] * 3)
    np.testing.assert_allclose(ensemble_weights(MSE, [1, 1, 2]), [0.25, 0.25, 0.5])
    avail = np.array([[1, 1, 1], [1, 0, 1], [0, 1, 0], [0, 0, 0]], bool)
    w = ensemble_weights(MSE, "inverse_mse", avail)
    np.testing.assert_allclose(w, [[4 / 7, 2 / 7, 1 / 7], [0.8, 0, 0.2], [0, 1, 0], [0, 0, 0]])
    # softmax per row: renormalising the base softmax equals a softmax over the available members
    w = ensemble_weights(MSE, "softmax_inverse_mse", avail)
    np.testing.assert_allclose(w[1], [np.exp(2) / (np.exp(2) + np.exp(0.5)), 0, np.exp(0.5) / (np.exp(2) + np.exp(0.5))])
    with pytest.raises(CgjaxError):
        ensemble_weights(MSE, [1, -1, 2])
    with pytest.raises(CgjaxError):
        ensemble_weights(MSE, [1, 2])


@pytest.mark.parametrize("bad", [np.nan, np.inf, 0.0, -1.0])
@pytest.mark.parametrize("weighting", ["inverse_mse", "softmax_inverse_mse"])
def test_a_used_member_without_a_finite_positive_score_is_refused_by_name(bad, weighting):
    scores = np.array([0.5, bad, 2.0])
    names = ["t_from_a", "t_from_b", "t_from_c"]
    with pytest.raises(CgjaxError, match="'t_from_b'.*--weighting uniform"):
        ensemble_weights(scores, weighting, names=names)
    with pytest.raises(CgjaxError, match="t_from_b"):
        ensemble_weights(scores, weighting, np.array([[1, 1, 0], [1, 0, 1]], bool), names=names)
    # no row uses it: its score does not matter, and nothing became uniform
    w = ensemble_weights(scores, weighting, np.array([[1, 0, 1], [0, 0, 1]], bool), names=names)
    ref = ensemble_weights(scores[[0, 2]], weighting)
    np.testing.assert_allclose(w[0, [0, 2]], ref)
    np.testing.assert_allclose(w[1], [0, 0, 1])
    np.testing.assert_allclose(ensemble_weights(scores, "uniform", np.ones((1, 3), bool)), [[1 / 3] * 3])


def test_single_picks_the_best_available_and_never_an_absent_model():
    avail = np.array([[1, 1, 1], [0, 1, 1], [0, 0, 1], [0, 0, 0]], bool)
    np.testing.assert_array_equal(best_available(MSE, avail), [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]])
    # member 0 unscored: never preferred to a scored one, used when it is the row's only model
    scores = np.array([np.nan, 1.0, 2.0])
    avail = np.array([[1, 0, 0], [1, 0, 1], [1, 1, 1]], bool)
    pick = best_available(scores, avail)
    np.testing.assert_array_equal(pick, [[1, 0, 0], [0, 0, 1], [0, 1, 0]])
    assert np.all(pick <= avail)
    # several available, none scored: the choice would be arbitrary
    with pytest.raises(CgjaxError, match=r"row 0 could use \['a', 'b'\]"):
        best_available(np.array([np.nan, np.nan, 1.0]), np.array([[1, 1, 0]], bool), names=["a", "b", "c"])
