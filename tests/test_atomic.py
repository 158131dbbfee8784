"""One write-then-rename mechanism (cgjax._atomic.atomic_file) for every file cgjax writes, MuData
files included: the temporary keeps the extension a writer picks its format from, a failure leaves
neither the temporary nor a file at the path, and a previous file stays intact."""

from unittest import mock

import numpy as np
import pytest

from cgjax._atomic import atomic_file
from cgjax.data import read_cohort, write_cohort
from cgjax.datasets import synthetic_tcga


def test_atomic_file_suffix_and_failure(tmp_path):
    target = tmp_path / "sub" / "x.h5mu"
    with atomic_file(target, suffix=".h5mu") as tmp:
        assert tmp.parent == target.parent and tmp.name == ".x.h5mu.writing.h5mu" and not target.exists()
        tmp.write_text("one")
    assert target.read_text() == "one"
    with pytest.raises(ValueError, match="boom"):
        with atomic_file(target, suffix=".h5mu") as tmp:
            tmp.write_text("half")
            raise ValueError("boom")
    assert target.read_text() == "one" and sorted(p.name for p in target.parent.iterdir()) == ["x.h5mu"]
    with atomic_file(tmp_path / "y.csv") as tmp:  # default: no suffix
        assert tmp.name == ".y.csv.writing"
        tmp.write_text("y")
    assert (tmp_path / "y.csv").read_text() == "y"


@pytest.mark.parametrize("fmt", ["h5mu", "parquet"])
def test_cohort_writers_go_through_atomic_file(tmp_path, fmt):
    """write_cohort's tables and MuData file: written through atomic_file, and a writer that fails
    midway leaves the previous cohort as it was and no temporary behind."""
    import cgjax._atomic

    c = synthetic_tcga(n_samples=30, seed=0, dim=3)
    path = tmp_path / ("c.h5mu" if fmt == "h5mu" else "c")
    seen = []
    real = cgjax._atomic.atomic_file

    def spy(p, suffix=""):
        seen.append((p.name, suffix))
        return real(p, suffix)

    with mock.patch("cgjax.data.io.atomic_file", spy):
        write_cohort(c, path, format=fmt)
    assert seen and all(s == (".h5mu" if fmt == "h5mu" else "") for _, s in seen)
    back = read_cohort(path)
    for m in c.modalities:
        np.testing.assert_allclose(back.data[m][back.masks[m]], c.data[m][c.masks[m]], rtol=1e-6)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    target = "mudata.MuData.write" if fmt == "h5mu" else "pandas.DataFrame.to_parquet"
    with mock.patch(target, side_effect=OSError("disk full")), pytest.raises(OSError, match="disk full"):
        write_cohort(synthetic_tcga(n_samples=30, seed=1, dim=3), path, format=fmt, overwrite=True)
    if fmt == "h5mu":  # the previous file is intact (a directory's tables are replaced one by one)
        assert sorted(p.name for p in tmp_path.rglob("*")) == before
        np.testing.assert_array_equal(read_cohort(path).data["rnaseq"], back.data["rnaseq"])
    assert not [p for p in tmp_path.rglob("*") if ".writing" in p.name]


def test_write_h5mu_uses_atomic_file_and_leaves_no_temporary(tmp_path):
    """cgjax.complete.write_h5mu: a failing MuData write leaves no file and no temporary."""
    from cgjax import complete

    seen = []
    real = complete.atomic_file

    def spy(p, suffix=""):
        seen.append(suffix)
        return real(p, suffix)

    def write_half(f):
        open(f, "w").write("partial")
        raise OSError("disk full")

    fake = mock.Mock()
    fake.write.side_effect = write_half
    with mock.patch.object(complete, "atomic_file", spy), mock.patch.object(complete, "to_mudata", return_value=fake), \
            pytest.raises(OSError, match="disk full"):
        complete.write_h5mu(None, tmp_path / "done.h5mu", {})
    assert seen == [".h5mu"] and list(tmp_path.iterdir()) == []
    fake.write.side_effect = lambda f: open(f, "w").write("whole")
    with mock.patch.object(complete, "to_mudata", return_value=fake):
        assert complete.write_h5mu(None, tmp_path / "done.h5mu", {}) == tmp_path / "done.h5mu"
    assert fake.write.call_args[0][0].name.endswith(".h5mu")
    assert [p.name for p in tmp_path.iterdir()] == ["done.h5mu"] and (tmp_path / "done.h5mu").read_text() == "whole"
