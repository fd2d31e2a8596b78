"""``tl eval``'s HTML report and calibration: the expected calibration error against a hand
computation and a plain loop, and the page of a real ``tl eval`` of a real tiny classifier
(trained here on real images), read back with ``html.parser``."""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import tlcore
from tlcore.cli import cli
from tlcore.errors import TlcoreError
from tlcore.report.calibration import reliability
from tlcore.report.evaluate import write_report
from tlcore.report.html import render
from tlcore.runtime import Predictor

SCRIPT_CLASS = "<script>alert(1)"
ODD_FILE = "<img src=x onerror=alert(2)>.png"
TINY = {
    "backbone": {"source": "builtin:simple_cnn", "weights": "none", "input_size": 16},
    "train": {"batch_size": 16, "seed": 0, "stages": [
        {"name": "all", "epochs": 3, "lr": 3e-3, "freeze": {"policy": "none"}},
    ]},
    "data": {"val_split": 0.25},
}


# --- calibration ------------------------------------------------------------------------


def test_ece_equals_a_hand_computation():
    probabilities = np.array([
        [0.92, 0.08],  # confidence .92, right       -> bin (0.9, 1.0]
        [0.96, 0.04],  # confidence .96, wrong       -> bin (0.9, 1.0]
        [0.35, 0.65],  # confidence .65, right       -> bin (0.6, 0.7]
        [0.62, 0.38],  # confidence .62, wrong       -> bin (0.6, 0.7]
        [0.55, 0.45],  # confidence .55, right       -> bin (0.5, 0.6]
    ])
    targets = np.array([0, 1, 1, 1, 0])
    table = reliability(probabilities, targets)
    # (2 * |.5 - .94| + 2 * |.5 - .635| + 1 * |1 - .55|) / 5 = (.88 + .27 + .45) / 5
    assert table["ece"] == pytest.approx(0.32, abs=1e-12)
    counts = [b["count"] for b in table["bins"]]
    assert counts == [0, 0, 0, 0, 0, 1, 2, 0, 0, 2]
    assert table["bins"][9]["confidence"] == pytest.approx(0.94)
    assert table["bins"][9]["accuracy"] == 0.5
    assert table["bins"][0] == {"lower": 0.0, "upper": 0.1, "count": 0, "confidence": None,
                                "accuracy": None}


def test_a_confidence_on_a_bin_edge_belongs_to_the_bin_it_closes():
    table = reliability(np.array([[0.7, 0.2, 0.1], [0.3, 0.3, 0.4]]), np.array([0, 2]))
    assert [b["count"] for b in table["bins"]] == [0, 0, 0, 1, 0, 0, 1, 0, 0, 0]


def test_ece_equals_a_plain_loop_on_many_samples():
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.full(5, 0.4), size=500)
    targets = rng.integers(0, 5, size=500)
    bins: dict[int, list[tuple[float, bool]]] = {}
    for row, target in zip(probabilities.tolist(), targets.tolist(), strict=True):
        confidence = max(row)
        slot = min(9, max(0, int(np.ceil(confidence * 10)) - 1))
        bins.setdefault(slot, []).append((confidence, row.index(confidence) == target))
    expected = sum(
        abs(sum(c for c, _ in items) / len(items) - sum(r for _, r in items) / len(items))
        * len(items) / 500
        for items in bins.values()
    )
    assert reliability(probabilities, targets)["ece"] == pytest.approx(expected, abs=1e-12)


def test_non_finite_probabilities_are_an_error():
    with pytest.raises(TlcoreError, match="non-finite probabilities for 1 of 2"):
        reliability(np.array([[0.5, 0.5], [np.nan, 0.5]]), np.array([0, 1]))


# --- the page of a real tl eval ---------------------------------------------------------


class _Page(HTMLParser):
    """What a test needs of the page: every tag with its attributes, the cells of the table
    with an id, the text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.text: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        found = dict(attrs)
        self.tags.append((tag, found))
        if tag == "table" and found.get("id"):
            self._table = found["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._cell is not None and self._table:
            self.tables[self._table][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> tuple[Path, Path, Path]:
    """Digits (12 of 16 pixels a class, one class named like a script, a "1" named like a
    tag put among the fives), a classifier trained three epochs on them (about 75% right:
    30 mistakes, more than the report shows), and ``tl eval`` of it: the data, the run and
    the report folder."""
    from tlcore.demo import write_demo

    root = tmp_path_factory.mktemp("report-html")
    data = write_demo(root / "digits", size=16, per_class=12)
    (data / "3").rename(data / SCRIPT_CLASS)
    sorted((data / "1").iterdir())[0].rename(data / "5" / ODD_FILE)
    run = tlcore.fit(data, recipe=TINY, out=root / "run", quiet=True).path
    out = root / "report"
    printed = CliRunner().invoke(cli, ["eval", str(run), str(data), "--out", str(out)])
    assert printed.exit_code == 0, printed.output
    return data, run, out


def test_the_page_holds_the_reports_numbers_and_no_outside_address(evaluated):
    out = evaluated[2]
    report = json.loads((out / "report.json").read_text())
    source = (out / "report.html").read_text(encoding="utf-8")
    page = _Page()
    page.feed(source)
    # The confusion table: a header row of class names, then one row per true class.
    table = page.tables["confusion"]
    assert table[0][1:] == report["class_names"]
    assert [row[0] for row in table[1:]] == report["class_names"]
    assert [[int(c) for c in row[1:]] for row in table[1:]] == report["confusion"]
    # Accuracy, ECE and per-class figures as report.json has them.
    text = " ".join(page.text)
    assert f"{report['accuracy']:.4f}" in text and f"{report['ece']:.4f}" in text
    bins = page.tables["calibration"]
    assert [int(row[1]) for row in bins[1:]] == [b["count"] for b in report["calibration"]]
    # Self-contained: every picture inline, nothing fetched from anywhere.
    for tag, attrs in page.tags:
        for name in ("src", "href"):
            value = attrs.get(name)
            if value is not None:
                assert value.startswith("data:image/png;base64,"), (tag, value[:80])
    assert "http:" not in source.replace("http-equiv", "") and "https:" not in source


def test_the_most_confidently_wrong_images_are_shown_as_thumbnails(evaluated):
    data, run, out = evaluated
    report = json.loads((out / "report.json").read_text())
    page = _Page()
    page.feed((out / "report.html").read_text(encoding="utf-8"))
    # Independently: onnxruntime's top class of every image against its folder.
    files = sorted(p for p in data.rglob("*.png"))
    predictions = Predictor(run).predict(files, top_k=1)
    wrong = [(p.probability, str(f)) for f, p in zip(files, predictions, strict=True)
             if p.label != f.parent.name]
    assert len(wrong) == report["count"] - int(np.trace(report["confusion"])) > 0
    expected = sorted(wrong, key=lambda item: -item[0])[:24]
    listed = report["confident_mistakes"]
    assert len(listed) == len(expected)
    assert {Path(m["source"]).resolve() for m in listed} == {
        Path(f).resolve() for _, f in expected}
    assert [m["confidence"] for m in listed] == pytest.approx([c for c, _ in expected],
                                                              abs=1e-6)
    thumbs = [attrs for tag, attrs in page.tags if tag == "img" and attrs.get("class") == "thumb"]
    assert len(thumbs) == len(listed)
    for attrs in thumbs:  # real PNGs, no larger than the 16-pixel images they show
        png = base64.b64decode(attrs["src"].split(",", 1)[1])
        with Image.open(io.BytesIO(png)) as image:
            assert image.format == "PNG" and image.size == (16, 16)


def test_the_ece_in_report_json_matches_onnxruntime_outputs(evaluated):
    data, run, out = evaluated
    report = json.loads((out / "report.json").read_text())
    files = sorted(p for p in data.rglob("*.png"))
    predictions = Predictor(run).predict(files, top_k=1)
    buckets: dict[int, list[tuple[float, bool]]] = {}
    for file, p in zip(files, predictions, strict=True):
        slot = min(9, max(0, int(np.ceil(p.probability * 10 - 1e-9)) - 1))
        buckets.setdefault(slot, []).append((p.probability, p.label == file.parent.name))
    ece = sum(abs(np.mean([c for c, _ in b]) - np.mean([r for _, r in b])) * len(b) / len(files)
              for b in buckets.values())
    assert report["ece"] == pytest.approx(ece, abs=1e-5)


def test_names_from_the_data_are_escaped(evaluated):
    out = evaluated[2]
    source = (out / "report.html").read_text(encoding="utf-8")
    assert "<script" not in source.lower()
    assert "&lt;script&gt;alert(1)" in source
    page = _Page()
    page.feed(source)
    assert SCRIPT_CLASS in page.tables["confusion"][0]  # shown as text, as it is named
    assert not any(tag == "script" for tag, _ in page.tags)
    # A file name is data too: the mislabelled "1" named like a tag, among the mistakes.
    report = json.loads((out / "report.json").read_text())
    odd = [m for m in report["confident_mistakes"] if m["source"].endswith(ODD_FILE)]
    shown = source if odd else render({**report, "confident_mistakes": [
        {"index": 0, "true": "5", "predicted": "1", "confidence": 0.5,
         "source": str(evaluated[0] / "5" / ODD_FILE)}]})
    assert "<img src=x" not in shown and "&lt;img src=x onerror=alert(2)&gt;.png" in shown


def test_a_task_without_classes_gets_its_figures_only(tmp_path):
    report = {"mae": 0.5, "rmse": 0.75, "r2": 0.25, "count": 12, "task": "regression",
              "target": "<b>age</b>", "model": "model.onnx"}
    written = write_report(report, tmp_path)
    assert written == [tmp_path / "report.json", tmp_path / "report.html"]
    page = _Page()
    page.feed((tmp_path / "report.html").read_text(encoding="utf-8"))
    text = " ".join(page.text)
    assert "0.7500" in text and "12" in text and "Confusion" not in text
    assert not any(tag == "img" for tag, _ in page.tags)


def test_many_classes_show_their_largest_confusions_not_a_huge_table():
    names = [f"c{i}" for i in range(80)]
    matrix = np.eye(80, dtype=int) * 5
    matrix[3, 7], matrix[10, 2] = 4, 9
    page = _Page()
    page.feed(render({"confusion": matrix.tolist(), "class_names": names}))
    assert "confusion" not in page.tables
    assert page.tables["confused"][1:] == [["c10", "c2", "9"], ["c3", "c7", "4"]]


def test_an_image_moved_since_leaves_a_note_not_an_error(evaluated, tmp_path):
    out = evaluated[2]
    report = json.loads((out / "report.json").read_text())
    mistakes = [{**m, "source": str(tmp_path / "gone.png")} for m in report["confident_mistakes"]]
    page = render({**report, "confident_mistakes": mistakes})
    assert page.count("cannot be read now") == len(mistakes) > 0


def test_texts_show_their_start_and_vectors_their_index():
    texts = render({"examples": "texts", "confident_mistakes": [
        {"index": 3, "true": "ham", "predicted": "spam", "confidence": 0.9,
         "source": "mail/ham/<b>.txt", "text": "win </blockquote><script>x</script>"}]})
    page = _Page()
    page.feed(texts)
    assert "win </blockquote><script>x</script>" in page.text and "<script" not in texts
    assert "<b>.txt" in page.text  # the file's name, as text
    vectors = render({"examples": "vectors", "confident_mistakes": [
        {"index": 7, "true": "a", "predicted": "b", "confidence": 0.75}]})
    assert "#7" in vectors and "<img" not in vectors and "<blockquote" not in vectors
