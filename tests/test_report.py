"""`deepstdp report`: one self-contained page per run or comparison (issue 34)."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deepstdp.cli import main
from deepstdp.config import TrainConfig
from deepstdp.loop.training import train

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(widths="16,M", feat_dim=32, pca_dim=8, image_size=8, threads=1, precision="fp32",
             k_train=20, epochs=1)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "run"
    train(TrainConfig(clusterer="stdp", stdp={"time": 50, "epochs": 1, "n_init": 1}, **SMALL),
          out, quiet=True)
    return out


def pictures(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r"src='data:image/png;base64,([^']+)'", page)]


def test_a_runs_page_holds_every_picture_and_fetches_nothing(run, capsys):
    assert main(["report", str(run), "--quiet"]) == 0
    assert "open it in any browser" in capsys.readouterr().out
    page = (run / "report.html").read_text()
    assert not re.search(r"(src|href)\s*=\s*['\"](https?:|//)", page)
    images = pictures(page)
    # curves, ten clusters' strips, the confusion matrix, the spiking layer's two pictures
    assert len(images) == 1 + 10 + 1 + 2
    assert all(i.startswith(b"\x89PNG") for i in images)
    assert page.count("<tr>") == 2 + 11  # the scores' table, and the clusters' with its header
    assert "purity" in page and "most frequent classes" in page


def test_report_refuses_a_folder_of_neither_kind(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "neither a run nor a comparison" in capsys.readouterr().err
    assert not (tmp_path / "report.html").exists()


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_the_page_renders_in_headless_chromium_with_every_image_loaded(run, tmp_path):
    main(["report", str(run), "--quiet"])
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "check_report_html.py"),
                           str(run / "report.html"), "--screenshot-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "14/14 images loaded" in done.stdout


def test_a_comparisons_page_is_its_report_with_its_pictures_inside(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--clusterers", "kmeans", "--seeds", "0", "--out", str(out),
                 "--epochs", "1", "--widths", "16,M", "--feat-dim", "32", "--pca-dim", "8",
                 "--image-size", "8", "--threads", "1", "--precision", "fp32", "--k-train",
                 "20", "--quiet"]) == 0
    assert main(["report", str(out), "--quiet"]) == 0
    page = (out / "report.html").read_text()
    assert "<table" in page and "<h1>" in page
    assert len(pictures(page)) == 3  # curves, cluster grid, confusion matrix
    assert not re.search(r"(src|href)\s*=\s*['\"](https?:|//)", page)


def test_a_runs_page_shows_its_spiking_evaluation_where_it_was_made(run, capsys):
    assert main(["evaluate", str(run), "--spiking", "--limit", "20", "--timesteps", "2,4",
                 "--threads", "1", "--quiet"]) == 0
    assert main(["report", str(run), "--quiet"]) == 0
    page = (run / "report.html").read_text()
    assert "The converted spiking network" in page and len(pictures(page)) == 1 + 10 + 1 + 2 + 1
    assert page.count("<td>2</td>") >= 1 and page.count("<td>4</td>") >= 1  # one row per T
