"""The packaged miniACC cohort (cgjax.datasets.mini_acc): integrity, licence, reading, preparing."""

import hashlib
import lzma
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from cgjax.data.prepare import PrepareOptions, prepare
from cgjax.data.xena import read_miniacc
from cgjax.datasets import extract_mini_acc, mini_acc, mini_acc_preprocess_options
from cgjax.embedding import EmbeddingOptions
from cgjax.errors import CohortError

DATA = resources.files("cgjax.datasets").joinpath("data", "miniacc")
SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "miniacc"


@pytest.fixture(scope="module")
def raw():
    return mini_acc()


def test_packaged_files_are_the_distributed_bytes():
    readme = DATA.joinpath("README.md").read_text()
    sums = dict((name, digest) for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", readme, re.M))
    assert len(sums) == 7
    total = 0
    for name, digest in sums.items():
        blob = DATA.joinpath(name + ".xz").read_bytes()
        total += len(blob)
        assert hashlib.sha256(lzma.decompress(blob)).hexdigest() == digest, name
    assert total < 200_000  # compact: about 140 kB
    if SHARED.is_dir():  # the source the copy was made from
        for name, digest in sums.items():
            assert hashlib.sha256((SHARED / name).read_bytes()).hexdigest() == digest


def test_licence_and_citation_ship_with_the_data():
    text = DATA.joinpath("LICENSE-Artistic-2.0.txt").read_text()
    assert text.startswith("The Artistic License 2.0") and "Perl Foundation" in text and len(text) > 8000
    readme = DATA.joinpath("README.md").read_text()
    assert "Artistic License 2.0" in readme and "10.1158/0008-5472.CAN-17-0344" in readme and "27165744" in readme
    # pyproject's package data glob ships everything under datasets/data/
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '"datasets/data/**/*"' in pyproject


def test_mini_acc_reads_92_patients(raw):
    dims = {m: df.shape for m, df in raw.modalities.items()}
    assert dims == {"rnaseq": (79, 198), "cna": (90, 198), "rppa": (46, 33), "mirna": (80, 471)}
    samples = set().union(*(df.index for df in raw.modalities.values()))
    assert len(raw.clinical) == len(samples) == 92 and set(raw.clinical["cancer_type"]) == {"ACC"}
    assert all(re.fullmatch(r"TCGA-[A-Z0-9]{2}-[A-Z0-9]{4}-\d{2}", s) for s in samples)
    assert raw.clinical["stage"].value_counts().to_dict() == {2.0: 44, 3.0: 19, 4.0: 18, 1.0: 9}
    assert raw.clinical["os_event"].isin([0, 1]).all() and (raw.clinical["os_time"] >= 0).all()
    rna = raw.modalities["rnaseq"]
    assert rna.to_numpy().min() >= 0 and rna.to_numpy().max() > 1000  # RSEM counts, not logs
    assert set(np.unique(raw.modalities["cna"].to_numpy())) <= {-2, -1, 0, 1, 2}  # GISTIC calls
    assert raw.source.startswith("miniACC")


def test_mini_acc_options_and_errors(tmp_path, raw):
    mut = mini_acc(["mutations"]).modalities["mutations"]
    assert mut.shape == (90, 97) and set(np.unique(mut.to_numpy())) == {0.0, 1.0}
    with pytest.raises(CohortError, match="no modality \\['wsi'\\]"):
        mini_acc(["rnaseq", "wsi"])
    # the extracted CSVs are what read_miniacc reads
    d = extract_mini_acc(tmp_path / "acc")
    assert (d / "LICENSE-Artistic-2.0.txt").exists()
    again = read_miniacc(d)
    for m, df in raw.modalities.items():
        assert df.equals(again.modalities[m])
    opt = mini_acc_preprocess_options(rppa_centering="per_sample")
    assert opt.transform_of("rnaseq") == "rna_counts" and opt.transform_of("cna") == "none"
    assert opt.rppa_centering == "per_sample"


def test_prepare_mini_acc(raw):
    opt = PrepareOptions(preprocess=mini_acc_preprocess_options(),
                         embedding=EmbeddingOptions(latent_dim=8, default_method="pca"))
    p = prepare(raw, opt)
    c = p.cohort
    assert c.n_samples == 92 and c.dims() == {m: 8 for m in ("rnaseq", "cna", "rppa", "mirna")}
    counts = c.clinical["split"].value_counts().to_dict()
    assert counts == {"train": 75, "test": 13, "val": 4}  # floor(0.15 * 92), floor(0.05 * 92)
    assert c.complete()[c.clinical["split"].to_numpy() != "train"].all()
    assert p.features["rnaseq"].shape[1] < 198  # the CPM filter drops a few genes
    assert np.isfinite(p.features["rppa"].to_numpy()).all()
