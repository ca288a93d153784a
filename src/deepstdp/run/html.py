"""`deepstdp report`: one self-contained page (report.html) for a run or a comparison, that
opens offline in any browser: every picture is inside it as a data URI, nothing is fetched.

A run's page: its settings and last epoch's scores, the curves, a strip of sample images for
every cluster with its size and (with labels) purity and most frequent classes, the confusion
matrix, the spiking layer's weights and activity where the run has them, and the spiking
evaluation where it was made. A comparison's page: its report.md with its pictures.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from deepstdp.data.datasets import load_dataset
from deepstdp.measures.metrics import contingency
from deepstdp.measures.report import plot_confusion
from deepstdp.run.rundir import (
    COMPARISON,
    CURVES,
    REPORT,
    REPORT_HTML,
    SPIKING_PLOT,
    SPIKING_ROWS,
    STDP_ACTIVITY,
    STDP_WEIGHTS,
    RunDir,
)
from deepstdp.runtime.util import DeepSTDPError, write_text_atomic

THUMB = 48
"""Side of a sample image on the page, in pixels (small images are enlarged, sharply)."""
MAX_SAMPLES = 64
"""The most sample images shown per cluster."""
STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
h1{font-size:1.5em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:.25em .5em}
th{background:#f4f4f4}img{max-width:100%}.strip{image-rendering:pixelated}
.cluster td{vertical-align:middle}.note{color:#666;font-size:.9em}"""


def write_report(path: str | Path, samples: int = 8, seed: int = 0,
                 progress: bool = False) -> Path:
    """report.html in the run or comparison folder `path`; returns its path."""
    folder = Path(path)
    if not 1 <= samples <= MAX_SAMPLES:
        raise DeepSTDPError(f"samples must be in [1, {MAX_SAMPLES}] images, got {samples}")
    if RunDir(folder).holds_run():
        body = _run_page(RunDir(folder), samples, seed, progress)
    elif (folder / COMPARISON).exists():
        if not (folder / REPORT).exists():
            raise DeepSTDPError(f"{folder} holds a comparison without its {REPORT}: finish it "
                                "(or write its report) first")
        body = _comparison_page(folder)
    else:
        raise DeepSTDPError(f"{folder} holds neither a run nor a comparison")
    page = (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>deepstdp: "
            f"{html.escape(folder.name)}</title><style>{STYLE}</style></head><body>\n{body}\n"
            "</body></html>\n")
    write_text_atomic(folder / REPORT_HTML, page)
    return folder / REPORT_HTML


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _img(png: bytes, alt: str, cls: str = "") -> str:
    return f"<img src='{data_uri(png)}' alt='{html.escape(alt)}' class='{cls}'>"


def _picture(path: Path, alt: str) -> str:
    return _img(path.read_bytes(), alt) if path.exists() else ""


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _table(header: list[str], rows: list[list[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table class='{cls}'><tr>{head}</tr>{body}</table>"


def strip(images: np.ndarray) -> bytes:
    """uint8 (n, H, W, C) images side by side, each THUMB pixels high, as one PNG."""
    tiles = [Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im) for im in images]
    tiles = [t.resize((THUMB, THUMB), Image.Resampling.NEAREST if t.width < THUMB
                      else Image.Resampling.BICUBIC) for t in tiles]
    out = Image.new("RGB", (THUMB * len(tiles) + 2 * (len(tiles) - 1), THUMB), "white")
    for i, t in enumerate(tiles):
        out.paste(t.convert("RGB"), (i * (THUMB + 2), 0))
    return _png(out)


def _run_page(run: RunDir, samples: int, seed: int, progress: bool) -> str:
    ck = run.load_checkpoint()
    cfg = ck.config
    last = ck.metrics[-1] if ck.metrics else {}
    train = load_dataset(cfg.dataset, "train", **cfg.set_options(), progress=progress)
    clusters = np.asarray(ck.labels)
    if len(clusters) != len(train):
        raise DeepSTDPError(f"{run.path}'s clusters are of {len(clusters)} images, its data set "
                            f"now has {len(train)}: the data changed since the run")
    labelled = train.labelled
    parts = [f"<h1>deepstdp run {html.escape(run.path.name)}</h1>",
             f"<p>{html.escape(cfg.dataset)}, clusterer {html.escape(cfg.clusterer)}, "
             f"recipe {html.escape(cfg.recipe)}, seed {cfg.seed}, epoch {ck.epoch} of "
             f"{cfg.epochs}, {ck.k} clusters, {len(train)} training images.</p>"]
    keys = [k for k in ("acc", "nmi", "ari", "val_acc", "val_nmi", "val_ari", "mv_acc",
                        "val_mv_acc", "knn_acc", "probe_acc") if k in last]
    if labelled and keys:
        parts.append(_table(keys, [[_num(last[k]) for k in keys]]))
    elif not labelled:
        parts.append("<p class='note'>The images have no labels: the clusters are shown, "
                     "no score against classes is possible.</p>")
    curves = _picture(run / CURVES, "curves")
    if curves:
        parts += ["<h2>Curves</h2>", curves]
    parts += ["<h2>Clusters</h2>", _clusters(train, clusters, ck.k, samples, seed)]
    if labelled:
        with tempfile.TemporaryDirectory() as tmp:
            plot_confusion(contingency(train.labels, clusters), train.classes,
                           Path(tmp) / "confusion.png", f"{run.path.name}: epoch {ck.epoch}")
            parts += ["<h2>Confusion matrix (train)</h2>",
                      _picture(Path(tmp) / "confusion.png", "confusion matrix")]
    stdp = [_picture(run / name, name) for name in (STDP_WEIGHTS, STDP_ACTIVITY)]
    if any(stdp):
        parts += ["<h2>The spiking layer</h2>", *stdp]
    if (run / SPIKING_ROWS).exists():
        parts += ["<h2>The converted spiking network</h2>", _picture(run / SPIKING_PLOT,
                                                                     "spiking evaluation"),
                  _spiking_table(json.loads((run / SPIKING_ROWS).read_text()))]
    return "\n".join(parts)


def _num(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else html.escape(str(v))


def _clusters(train: Any, clusters: np.ndarray, k: int, samples: int, seed: int) -> str:
    """One row per cluster, largest first: size, purity and top classes (with labels), and a
    seeded sample of its images."""
    rng = np.random.default_rng(seed)
    sizes = np.bincount(clusters, minlength=k)
    header = ["cluster", "images"] + (["purity", "most frequent classes"] if train.labelled
                                      else []) + ["samples"]
    rows = []
    for c in np.argsort(-sizes, kind="stable"):
        members = np.flatnonzero(clusters == c)
        row: list[Any] = [int(c), int(sizes[c])]
        if train.labelled:
            y = train.labels[members]
            y = y[y >= 0]
            counts = np.bincount(y, minlength=train.n_classes)
            top = np.argsort(-counts, kind="stable")[:3]
            row += [_num(counts.max() / len(y)) if len(y) else "-",
                    ", ".join(f"{html.escape(train.classes[t])} ({counts[t]})" for t in top
                              if counts[t])]
        pick = np.sort(rng.choice(members, min(samples, len(members)), replace=False)) \
            if len(members) else []
        row.append(_img(strip(train.images[pick]), f"cluster {c}", "strip") if len(pick)
                   else "<span class='note'>empty</span>")
        rows.append(row)
    return _table(header, rows, "cluster")


def _spiking_table(rows: list[dict[str, Any]]) -> str:
    keys = [k for k in ("timesteps", "acc", "val_acc", "agreement", "val_agreement",
                        "sops_per_image", "energy_snn_uj", "energy_ann_uj") if k in rows[0]]
    return _table(keys, [[_num(r.get(k)) if k != "sops_per_image" else f"{r[k]:.3g}"
                          for k in keys] for r in rows])


def _comparison_page(folder: Path) -> str:
    """report.md as HTML: headings, paragraphs, tables, and its pictures inside the page."""
    out: list[str] = []
    table: list[list[str]] = []
    para: list[str] = []
    for line in [*(folder / REPORT).read_text().splitlines(), ""]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        picture = re.fullmatch(r"!\[([^]]*)\]\(([^)]+)\)", line.strip())
        if para and (not line.strip() or line.startswith(("|", "#")) or picture):
            out.append(f"<p>{_inline(' '.join(para))}</p>")
            para = []
        if table and not line.startswith("|"):
            out.append(_table(table[0], [[_inline(c) for c in r] for r in table[1:]]))
            table = []
        if line.startswith("|"):
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                table.append(cells)
        elif picture:
            out.append(_picture(folder / picture.group(2), picture.group(1)))
        elif line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")), 3)
            out.append(f"<h{level}>{_inline(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            para.append(line.strip())
    return "\n".join(out)


def _inline(text: str) -> str:
    """Markdown's inline code and bold, escaped."""
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)
