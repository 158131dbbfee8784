"""The checkpoint shipped in checkpoints/ must keep loading, and keep giving the same imputations,
with today's code (a change that breaks old checkpoints must bump the format and migrate)."""

import sys
from pathlib import Path

import numpy as np
import pytest

from cgjax import checkpoint

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / "checkpoints" / "synthetic_default"

pytestmark = pytest.mark.skipif(not (SHARED / checkpoint.META_FILE).exists(), reason="no shared checkpoint")


def test_shared_checkpoint_restores_and_reproduces_its_golden_imputations():
    sys.path.insert(0, str(ROOT / "experiments"))
    from make_shared_checkpoint import golden

    ms = checkpoint.load(SHARED)
    assert ms.modalities == ("cna", "rnaseq", "rppa", "wsi") and set(ms.dims.values()) == {32}
    expected = np.load(SHARED / "golden_impute.npz")
    got = golden(ms)
    for method in ("coherent", "multi", "single"):
        # float32 results may differ in the last bits across machines and XLA versions
        np.testing.assert_allclose(got[method], expected[method], rtol=2e-3, atol=2e-3, err_msg=method)
