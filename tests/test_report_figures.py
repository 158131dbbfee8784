"""The reports' figures: every PNG a report links exists, opens, is not blank and has a caption.

:func:`assert_report_figures` reads a report.md, opens each linked PNG with matplotlib and checks it
(size, pixel spread, several colours inside the plotting area) and that the line after each link is a
caption saying what a good result looks like. It is run on the quickstart's report writer
(:func:`cgjax.cli.models.write_quick_report`) with the shared tiny model set, and by
tests/test_evaluate_run.py on the ``cgjax evaluate`` report; a blank image must fail it.
"""

import json
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from cgjax.cli.models import write_quick_report  # noqa: E402
from cgjax.datasets import default_law  # noqa: E402
from cgjax.evaluate.reconstruction import score_samples  # noqa: E402
from cgjax.evaluate.report import FIGURE_CAPTIONS  # noqa: E402
from cgjax.sampling.options import SampleOptions  # noqa: E402

IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)]+)\)")


def assert_report_figures(report) -> list[str]:
    """Check every image link of the markdown file ``report``; returns the linked paths.

    Per image: the PNG exists, opens, is at least 300 x 200 pixels, its grey levels spread
    (std > 0.05 on [0, 1]) and the central half of it (the plotting area, away from the white
    margins) holds more than two distinct colours; the next non-blank line is a caption
    ("*Figure: ...*" followed by what a good result looks like).
    """
    lines = report.read_text().splitlines()
    links = []
    for i, line in enumerate(lines):
        for alt, path in IMAGE.findall(line):
            png = report.parent / path
            assert png.is_file(), f"{path}: linked from {report.name} but missing"
            img = mpimg.imread(png)[..., :3]  # float RGB(A) in [0, 1]
            h, w = img.shape[:2]
            assert h >= 200 and w >= 300, f"{path}: {w} x {h} pixels"
            assert img.mean(axis=2).std() > 0.05, f"{path}: blank (grey levels do not vary)"
            centre = img[h // 4: 3 * h // 4, w // 4: 3 * w // 4].reshape(-1, 3)
            assert len(np.unique(np.round(centre, 3), axis=0)) > 2, f"{path}: plotting area of one or two colours"
            caption = next((c for c in lines[i + 1:] if c.strip()), "")
            assert caption.startswith(f"*Figure: {alt}.*") and "Good" in caption, f"{path}: no caption"
            links.append(path)
    return links


def test_a_blank_figure_fails_the_check(tmp_path):
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.axis("off")
    fig.savefig(tmp_path / "blank.png", dpi=100)
    plt.close(fig)
    report = tmp_path / "report.md"
    report.write_text(f"![empty](blank.png)\n\n*Figure: empty.* Good: {FIGURE_CAPTIONS['calibration']}\n")
    with pytest.raises(AssertionError, match="blank"):
        assert_report_figures(report)
    report.write_text("![empty](missing.png)\n")
    with pytest.raises(AssertionError, match="missing"):
        assert_report_figures(report)


def test_rank_histogram_of_score_samples():
    """The truth's rank among R replicates: uniform on 0..R for exchangeable draws, 0 or R when
    every replicate lies above or below it; point predictions have none."""
    rng = np.random.default_rng(0)
    R, N, D = 4, 3000, 3
    truth = rng.normal(size=(N, D))
    hist = np.asarray(score_samples(rng.normal(size=(R, N, D)), truth)["rank_histogram"])
    assert hist.shape == (R + 1,) and hist.sum() == N * D
    np.testing.assert_allclose(hist / (N * D), 1 / (R + 1), atol=0.015)  # binomial sd 0.004
    above = score_samples(truth + 10 + rng.normal(size=(R, N, D)), truth)["rank_histogram"]
    assert above == [N * D] + [0] * R
    assert score_samples(truth - 10 + rng.normal(size=(R, N, D)), truth)["rank_histogram"] == [0] * R + [N * D]
    assert "rank_histogram" not in score_samples(np.broadcast_to(truth, (R, N, D)), truth)


def test_quickstart_report_embeds_checked_figures(tiny_cohort, tiny_trained, tmp_path):
    ms, _ = tiny_trained
    R = 3
    test = tiny_cohort.split("test")
    options = SampleOptions(replicates=R, seed=0)
    report = write_quick_report(ms, test, default_law(dim=6), tmp_path, options, seconds={"start": 0.0, "train": 1.0})
    assert (tmp_path / "report.md").read_text() == report
    assert "`coherent` combines the single models with the average composition" in report  # no anchor
    links = assert_report_figures(tmp_path / "report.md")
    assert links == ["figures/reconstruction.png", "figures/calibration.png", "figures/manifold.png"]
    records = json.loads((tmp_path / "metrics.json").read_text())["reconstruction"]
    drawn = {r["method"]: r["rank_histogram"] for r in records if "rank_histogram" in r}
    assert set(drawn) == {"multi", "coherent", "oracle_sample"}  # the oracle's posterior mean is a point
    n_entries = test.n_samples * ms.dims[ms.modalities[0]]
    assert all(len(h) == R + 1 and sum(h) == n_entries for h in drawn.values())
