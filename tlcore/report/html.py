"""``report.html``: an evaluation report a person looks at, written beside ``report.json``.

One self-contained file: CSS inline, pictures inline as base64 PNG, no script and no external
address (a Content-Security-Policy forbids loading anything), so it opens offline, can be
mailed, and shows the same thing everywhere. Every text from the data (class names, file
names, texts) is escaped: a class folder called ``<script>`` is shown, never run.

What it shows depends on what the report holds (the task decides):

- every task: the figures of the report (accuracy, MAE, F1, ...) and what was measured;
- per-class (per-label) precision, recall, F1 and support, when the report has them
  (classification, multi-label);
- a single-label classifier also: the confusion matrix as a shaded table, the most
  confidently wrong samples (image thumbnails, the start of texts; vectors by their index),
  and its calibration: the reliability diagram (a PNG with matplotlib) and the table of its
  bins, with the expected calibration error.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tlcore.errors import TlcoreError
from tlcore.files import atomic_path

HTML_FILE = "report.html"
THUMBNAIL = 128
"""Largest side of a thumbnail in pixels (a small image keeps its size)."""

_MAX_MATRIX = 60  # classes up to which the whole confusion matrix is drawn
_MAX_PAIRS = 30  # most confused pairs listed instead, for more classes
_INFO_KEYS = ("task", "model", "engine", "tta", "run", "data", "labels", "examples")

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 80em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f4f4f4; } td.name, th.name { text-align: left; }
table.confusion td { min-width: 2.5em; } table.confusion td.diagonal { font-weight: bold; }
.note { color: #666; font-size: 0.9em; }
.mistakes { display: flex; flex-wrap: wrap; gap: 0.8em; }
figure { margin: 0; width: 10em; border: 1px solid #ddd; padding: 0.4em; font-size: 0.85em; }
figure img { width: 128px; height: 128px; object-fit: contain; image-rendering: pixelated;
             background: #f4f4f4; display: block; margin: auto; }
figure blockquote { margin: 0; white-space: pre-wrap; overflow-wrap: anywhere; }
figcaption { overflow-wrap: anywhere; margin-top: 0.3em; }
"""


def write_html_report(report: dict[str, Any], folder: str | Path) -> list[Path]:
    """Write ``report.html`` into ``folder`` and, for a classifier with matplotlib, the
    reliability diagram ``reliability.png`` it shows; returns the files written."""
    from tlcore.report.plots import RELIABILITY_FILE, plot_reliability

    folder = Path(folder)
    picture = None
    if report.get("calibration") and "ece" in report:
        picture = plot_reliability(report["calibration"], folder / RELIABILITY_FILE,
                                   title=f"expected calibration error {report['ece']:.4f}")
    page = write_html(report, folder / HTML_FILE, picture.read_bytes() if picture else None)
    return [page, *([picture] if picture else [])]


def write_html(
    report: dict[str, Any], path: str | Path, reliability_png: bytes | None = None
) -> Path:
    """Write :func:`render`'s page to ``path``, atomically; returns ``path``.

    Raises:
        TlcoreError: the file cannot be written (names it; a full disk says so).
    """
    target = Path(path)
    page = render(report, reliability_png)
    try:
        with atomic_path(target) as tmp:
            tmp.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise TlcoreError(
            f"cannot write the evaluation report {target}: {exc.strerror or exc}",
            "choose another folder with --out",
        ) from None
    return target


def render(report: dict[str, Any], reliability_png: bytes | None = None) -> str:
    """The report (``tl eval``'s dict, as in ``report.json``) as one HTML page.

    Args:
        report: what :func:`tlcore.report.evaluate.evaluate_run` returns; missing parts
            are left out.
        reliability_png: the reliability diagram to show (a PNG file's bytes), if drawn.
    """
    title = "Evaluation" + (f" of {report['run']}" if report.get("run") else "")
    body = [
        f"<h1>{_esc(title)}</h1>",
        _info(report),
        _metrics(report),
        _per_class(report),
        _confusion(report),
        _mistakes(report),
        _calibration(report, reliability_png),
    ]
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        # Nothing may be fetched or run: pictures are inline, styles are this page's own.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        'img-src data:; style-src \'unsafe-inline\'">',
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
        *(part for part in body if part),
        "</body></html>",
        "",
    ])


def thumbnail(path: str | Path, side: int = THUMBNAIL) -> bytes | None:
    """A PNG of the image file ``path``, upright, at most ``side`` pixels on its longer side
    (aspect kept; a smaller image keeps its size); ``None`` when it cannot be read (it was
    moved since, or is too large to open: a report shows what it can)."""
    from PIL import Image

    from tlcore.inputs.image import MAX_IMAGE_PIXELS, image_array

    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                return None
            if image.getexif().get(274, 1) in (5, 6, 7, 8):  # EXIF orientation: a quarter turn
                width, height = height, width
            scale = min(1.0, side / max(width, height, 1))
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            if image.format == "JPEG":
                image.draft(None, (side, side))  # decode at a reduced scale: fast on photos
            pixels = image_array(image, size)
    except Exception:  # Pillow raises many types for a bad file; each means "no thumbnail"
        return None
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _png(data: bytes, alt: str, css: str = "") -> str:
    """An ``<img>`` holding ``data`` (a PNG) inline."""
    encoded = base64.b64encode(data).decode("ascii")
    klass = f' class="{css}"' if css else ""
    return f'<img{klass} alt="{_esc(alt)}" src="data:image/png;base64,{encoded}">'


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _esc(value)
    return f"{value:d}" if isinstance(value, int) else f"{value:.4f}"


def _info(report: dict[str, Any]) -> str:
    rows = [f'<tr><th class="name">{key}</th><td class="name">{_esc(report[key])}</td></tr>'
            for key in _INFO_KEYS if report.get(key) is not None]
    return f'<table class="info">{"".join(rows)}</table>' if rows else ""


def _metrics(report: dict[str, Any]) -> str:
    """Every figure at the top level of the report (accuracy, count, ece, mae, ...)."""
    rows = [
        f'<tr><th class="name">{_esc(key)}</th><td>{_number(value)}</td></tr>'
        for key, value in report.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    ]
    if not rows:
        return ""
    return f'<h2>Metrics</h2><table class="metrics">{"".join(rows)}</table>'


def _per_class(report: dict[str, Any]) -> str:
    """Precision, recall, F1 and support per class (per label), then any other figure."""
    table = report.get("per_class") or report.get("per_label")
    if not isinstance(table, dict) or not table:
        return ""
    rows = {name: dict(values) for name, values in table.items() if isinstance(values, dict)}
    for values in rows.values():
        if "f1" not in values and {"precision", "recall"} <= values.keys():
            p, r = values["precision"], values["recall"]
            values["f1"] = 2 * p * r / (p + r) if p + r else 0.0
    first = ("precision", "recall", "f1", "support")
    seen = {key for values in rows.values() for key in values}
    columns = [k for k in first if k in seen] + sorted(seen - set(first))
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    body = "".join(
        f'<tr><td class="name">{_esc(name)}</td>'
        + "".join(f"<td>{_number(values.get(c, ''))}</td>" for c in columns) + "</tr>"
        for name, values in rows.items()
    )
    what = "class" if "per_class" in report else "label"
    return (f"<h2>Per {what}</h2><table class=\"per-class\"><tr><th class=\"name\">{what}</th>"
            f"{head}</tr>{body}</table>")


def _confusion(report: dict[str, Any]) -> str:
    """The confusion matrix, shaded by each cell's share of its true class; with many
    classes, its largest cells off the diagonal instead (a page of a million cells helps
    no one)."""
    matrix, names = report.get("confusion"), report.get("class_names")
    if not matrix or not names or len(matrix) != len(names):
        return ""
    title = "<h2>Confusion matrix</h2>"
    if len(names) > _MAX_MATRIX:
        return title + _confused_pairs(matrix, names)
    head = "".join(f'<th class="name">{_esc(n)}</th>' for n in names)
    lines = []
    for i, (name, row) in enumerate(zip(names, matrix, strict=True)):
        total = sum(row)
        cells = []
        for j, count in enumerate(row):
            share = count / total if total else 0.0
            diagonal = ' class="diagonal"' if i == j else ""
            if not count:  # empty cells fade out: the eye finds the counts
                cells.append(f'<td{diagonal} style="color: #bbb">0</td>')
                continue
            colour = "#fff" if share > 0.5 else "#222"
            cells.append(f'<td{diagonal} style="background: rgba(31, 119, 180, {share:.3f}); '
                         f'color: {colour}">{int(count)}</td>')
        lines.append(f'<tr><th class="name">{_esc(name)}</th>{"".join(cells)}</tr>')
    return (title + '<p class="note">rows: true class, columns: predicted; shade: share of '
            f'the row</p><table class="confusion" id="confusion"><tr><th></th>{head}</tr>'
            + "".join(lines) + "</table>")


def _confused_pairs(matrix: Sequence[Sequence[int]], names: Sequence[str]) -> str:
    pairs = sorted(
        ((count, i, j) for i, row in enumerate(matrix) for j, count in enumerate(row)
         if i != j and count),
        key=lambda item: (-item[0], item[1], item[2]),
    )[:_MAX_PAIRS]
    rows = "".join(
        f'<tr><td class="name">{_esc(names[i])}</td><td class="name">{_esc(names[j])}</td>'
        f"<td>{count}</td></tr>" for count, i, j in pairs
    )
    return (f'<p class="note">{len(names)} classes: the {len(pairs)} largest confusions '
            '(the whole matrix is in report.json)</p><table class="pairs" id="confused"><tr>'
            '<th class="name">true</th><th class="name">predicted</th><th>count</th></tr>'
            f"{rows}</table>")


def _mistakes(report: dict[str, Any]) -> str:
    """The most confidently wrong samples: thumbnails of images, the start of texts."""
    items = report.get("confident_mistakes")
    if items is None:
        return ""
    title = "<h2>Most confidently wrong</h2>"
    if not items:
        return title + '<p class="note">no sample was classified wrongly</p>'
    images = report.get("examples", "images") == "images"
    figures = []
    for item in items:
        shown = ""
        if images and item.get("source"):
            picture = thumbnail(item["source"])
            shown = (_png(picture, Path(item["source"]).name, "thumb") if picture else
                     '<p class="note">(the file cannot be read now)</p>')
        elif item.get("text") is not None:
            shown = f"<blockquote>{_esc(item['text'])}</blockquote>"
        where = Path(item["source"]).name if item.get("source") else f"#{item.get('index')}"
        figures.append(
            f"<figure>{shown}<figcaption>true: <b>{_esc(item.get('true'))}</b><br>"
            f"predicted: <b>{_esc(item.get('predicted'))}</b> "
            f"({_number(item.get('confidence'))})<br>"
            f'<span class="note" title="{_esc(item.get("source", ""))}">{_esc(where)}</span>'
            "</figcaption></figure>"
        )
    return (title + f'<p class="note">the {len(items)} wrong predictions made with the highest '
            'confidence, highest first</p><div class="mistakes">' + "".join(figures) + "</div>")


def _calibration(report: dict[str, Any], picture: bytes | None) -> str:
    """The expected calibration error, the reliability diagram and the table of its bins."""
    bins = report.get("calibration")
    if not bins or "ece" not in report:
        return ""
    rows = "".join(
        f"<tr><td>{b['lower']:.1f}–{b['upper']:.1f}</td><td>{b['count']}</td>"
        f"<td>{_number(b['confidence']) if b['confidence'] is not None else '–'}</td>"
        f"<td>{_number(b['accuracy']) if b['accuracy'] is not None else '–'}</td></tr>"
        for b in bins
    )
    diagram = _png(picture, "reliability diagram") if picture else ""
    return (
        "<h2>Calibration</h2>"
        f"<p>expected calibration error (ECE): <b>{report['ece']:.4f}</b> "
        '<span class="note">(the gap between confidence and accuracy, averaged over the '
        f"samples in {len(bins)} equal confidence bins; 0 is perfectly calibrated)</span></p>"
        f"{diagram}"
        '<table class="calibration" id="calibration"><tr><th>confidence</th><th>samples</th>'
        f"<th>mean confidence</th><th>accuracy</th></tr>{rows}</table>"
    )
