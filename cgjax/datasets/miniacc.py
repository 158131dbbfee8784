"""miniACC, a small real cohort shipped with cgjax: TCGA adrenocortical carcinoma, 92 patients.

The packaged copy (``cgjax/datasets/data/miniacc/``, xz-compressed CSVs, about 140 kB) is the
``miniACC`` example of Bioconductor's MultiAssayExperiment, Artistic-2.0; see the ``README.md``
and ``LICENSE-Artistic-2.0.txt`` there for the provenance, the licence and the citation.

============  =====================  ==========================================  =====================
modality      file                   values                                      suggested transform
============  =====================  ==========================================  =====================
``rnaseq``    RNASeq2GeneNorm        198 genes x 79 samples, RSEM normalised      ``rna_counts``
``cna``       gistict                198 genes x 90 samples, GISTIC -2..2         ``none``
``rppa``      RPPAArray              33 proteins x 46 samples                     ``rppa``
``mirna``     miRNASeqGene           471 miRNAs x 80 samples, counts              ``rna_counts``
``mutations`` Mutations              97 genes x 90 samples, 0/1                   ``none``
============  =====================  ==========================================  =====================

Clinical: ``stage`` (pathologic stage grouped 1-4), ``os_time``/``os_event`` (days to death or last
follow-up, vital status); every sample has ``cancer_type`` ACC.
"""

from __future__ import annotations

import dataclasses
import lzma
import tempfile
from importlib import resources
from pathlib import Path
from typing import Sequence

from cgjax.data.preprocess import PreprocessOptions
from cgjax.data.xena import read_miniacc
from cgjax.errors import CohortError

MINIACC_ASSAYS = {"rnaseq": "RNASeq2GeneNorm.csv", "cna": "gistict.csv", "rppa": "RPPAArray.csv",
                  "mirna": "miRNASeqGene.csv", "mutations": "Mutations.csv"}
MINIACC_OTHER = ("clinical.csv", "sampleMap.csv")
DEFAULT_MODALITIES = ("rnaseq", "cna", "rppa", "mirna")
# How the paper's preprocessing applies to miniACC's values (cgjax.data.preprocess.PreprocessOptions).
MINIACC_TRANSFORMS = {"rnaseq": "rna_counts", "mirna": "rna_counts", "cna": "none", "rppa": "rppa",
                      "mutations": "none"}
MINIACC_IMPUTERS = {"rnaseq": "knn", "mirna": "knn", "rppa": "knn", "cna": "median", "mutations": "median"}

__all__ = ["mini_acc", "extract_mini_acc", "mini_acc_preprocess_options", "MINIACC_ASSAYS",
           "MINIACC_TRANSFORMS"]


def _data():
    return resources.files("cgjax.datasets").joinpath("data", "miniacc")


def extract_mini_acc(dest) -> Path:
    """Write the packaged miniACC CSVs, decompressed (values unchanged), into the directory ``dest``.

    Gives the layout that :func:`cgjax.data.xena.read_miniacc` reads (and that R users know).
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    src = _data()
    for name in (*MINIACC_ASSAYS.values(), *MINIACC_OTHER):
        f = src.joinpath(name + ".xz")
        try:
            data = lzma.decompress(f.read_bytes())
        except (FileNotFoundError, lzma.LZMAError) as e:
            raise CohortError(f"packaged miniACC file {name}.xz is missing or damaged ({e}); reinstall cgjax") from None
        (dest / name).write_bytes(data)
    for name in ("README.md", "LICENSE-Artistic-2.0.txt"):
        f = src.joinpath(name)
        if f.is_file():
            (dest / name).write_bytes(f.read_bytes())
    return dest


def mini_acc(modalities: Sequence[str] = DEFAULT_MODALITIES):
    """The packaged miniACC as raw tables (a :class:`cgjax.data.xena.RawCohort`).

    Args:
      modalities: any of ``rnaseq``, ``cna``, ``rppa``, ``mirna``, ``mutations`` (default: the first
        four; mutations are binary and not a modality of the paper).

    Returns:
      ``RawCohort`` with ``modalities`` (samples x features float32 DataFrames indexed by trimmed
      sample id, e.g. ``TCGA-OR-A5J1-01``, values as distributed), ``clinical`` (``cancer_type``
      ACC, ``stage``, ``os_time``, ``os_event``), ``original_ids`` and ``source``. Preprocess with
      :func:`mini_acc_preprocess_options` (``cgjax.data.preprocess``) or run the whole pipeline
      with ``cgjax.data.prepare.prepare(raw, PrepareOptions(preprocess=mini_acc_preprocess_options()))``.
    """
    unknown = [m for m in modalities if m not in MINIACC_ASSAYS]
    if unknown or not modalities:
        raise CohortError(f"miniACC has no modality {unknown or '(none asked)'}; choose from {list(MINIACC_ASSAYS)}")
    with tempfile.TemporaryDirectory(prefix="cgjax-miniacc-") as tmp:
        extract_mini_acc(tmp)
        raw = read_miniacc(tmp, modalities={m: MINIACC_ASSAYS[m] for m in modalities})
    return dataclasses.replace(raw, source="miniACC (cgjax.datasets.mini_acc)")


def mini_acc_preprocess_options(**overrides):
    """:class:`cgjax.data.preprocess.PreprocessOptions` for miniACC's values: RNA and miRNA from
    (normalised) counts, GISTIC calls and mutations as they are, RPPA median-centred per protein."""
    kw = dict(transforms=dict(MINIACC_TRANSFORMS), imputers=dict(MINIACC_IMPUTERS))
    kw.update(overrides)
    return PreprocessOptions(**kw)
