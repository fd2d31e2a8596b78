"""Pictures of a run: training curves (``history.png``), a confusion matrix (``confusion.png``)
and a reliability diagram (``reliability.png``).

matplotlib is optional (the ``plots`` extra) and imported only when a picture is drawn; its
object API with the Agg canvas is used, so drawing never switches the process's pyplot backend
(a notebook that embeds tlcore keeps its own). Without matplotlib a picture is skipped with one
warning line per process, never an error.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlcore.progress import printable
from tlcore.runfolder import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

HISTORY_FILE = "history.png"
CONFUSION_FILE = "confusion.png"
RELIABILITY_FILE = "reliability.png"

Warn = Callable[[str], None]

_warned = False
_MAX_ANNOTATED = 30  # classes up to which confusion cells carry their counts
_MAX_TICKS = 60  # classes up to which the axes carry the class names


def plot_history(
    history: Sequence[dict[str, Any]],
    path: str | Path,
    warn: Warn | None = None,
    metric: str = "accuracy",
) -> Path | None:
    """Draw the loss and one metric per epoch, training and validation, over all stages.

    Args:
        history: the rows of ``history.json`` (``stage``, ``epoch``, ``loss``, ``accuracy``,
            and ``val_loss`` / ``val_accuracy`` when there is validation data).
        path: the PNG to write (atomically).
        warn: called with one line when matplotlib is missing (default: print to stderr).
        metric: the metric of the second panel (the task's: ``accuracy``, ``f1_micro``,
            ``mae``, ...).

    Returns:
        ``path``, or ``None`` when nothing was drawn (no epochs, or no matplotlib).
    """
    if not history:
        return None
    figure = _figure(warn, f"skipping {Path(path).name}", figsize=(10, 4), layout=None)
    if figure is None:
        return None
    # Fixed margins: a constrained layout measures every label and doubled the drawing time,
    # which every training run pays.
    figure.subplots_adjust(left=0.06, right=0.99, bottom=0.12, top=0.92, wspace=0.18)
    from matplotlib.ticker import MaxNLocator

    epochs = list(range(1, len(history) + 1))
    for axes, key, title in zip(
        figure.subplots(1, 2), ("loss", metric), ("loss", metric), strict=True
    ):
        for prefix, style, name in (("", "-o", "train"), ("val_", "--s", "validation")):
            values = [row.get(prefix + key) for row in history]
            if any(v is not None for v in values):
                axes.plot(epochs, [float("nan") if v is None else v for v in values], style,
                          markersize=3, label=name)
        _mark_stages(axes, history)
        axes.set_title(title)
        axes.set_xlabel("epoch (all stages)")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        axes.legend(loc="best", fontsize="small")
    return _save(figure, path)


def plot_confusion(
    confusion: Sequence[Sequence[int]],
    class_names: Sequence[str],
    path: str | Path,
    title: str = "",
    warn: Warn | None = None,
) -> Path | None:
    """Draw a confusion matrix: true classes as rows, colour by share of the row.

    Args:
        confusion: counts, ``confusion[true][predicted]``.
        class_names: one name per row and column.
        path: the PNG to write (atomically).
        title: a line above the matrix (e.g. the accuracy).
        warn: called with one line when matplotlib is missing (default: print to stderr).

    Returns:
        ``path``, or ``None`` when matplotlib is missing.
    """
    import numpy as np

    counts = np.asarray(confusion, dtype=np.int64)
    k = len(class_names)
    side = min(4 + 0.45 * k, 40)
    figure = _figure(warn, f"skipping {Path(path).name}", figsize=(side + 1.5, side))
    if figure is None:
        return None
    axes = figure.subplots()
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    image = axes.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of true class")
    if k <= _MAX_TICKS:
        names = [printable(str(n)) for n in class_names]  # no font has control characters
        axes.set_xticks(range(k), names, rotation=90)
        axes.set_yticks(range(k), names)
    if k <= _MAX_ANNOTATED:
        for (i, j), value in np.ndenumerate(counts):
            if value:
                color = "white" if share[i, j] > 0.5 else "black"
                axes.text(j, i, str(value), ha="center", va="center", color=color,
                          fontsize="small")
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if title:
        axes.set_title(title)
    return _save(figure, path)


def plot_reliability(
    bins: Sequence[dict[str, Any]],
    path: str | Path,
    title: str = "",
    warn: Warn | None = None,
) -> Path | None:
    """Draw a reliability diagram: per confidence bin, the accuracy as a bar against the
    diagonal of perfect calibration, and below it how many samples each bin holds.

    Args:
        bins: :func:`tlcore.report.calibration.reliability`'s ``bins`` (``lower``,
            ``upper``, ``count``, ``confidence``, ``accuracy``).
        path: the PNG to write (atomically).
        title: a line above the diagram (e.g. the expected calibration error).
        warn: called with one line when matplotlib is missing (default: print to stderr).

    Returns:
        ``path``, or ``None`` when matplotlib is missing.
    """
    figure = _figure(warn, f"skipping {Path(path).name}", figsize=(5, 6))
    if figure is None:
        return None
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    lower = [b["lower"] for b in bins]
    width = [b["upper"] - b["lower"] for b in bins]
    accuracy = [b["accuracy"] or 0.0 for b in bins]
    top.bar(lower, accuracy, width=width, align="edge", edgecolor="black", label="accuracy")
    # Each bin's mean confidence as a line across it: above the bar, the model is
    # over-confident there; below, under-confident.
    filled = [b for b in bins if b["count"]]
    top.hlines([b["confidence"] for b in filled], [b["lower"] for b in filled],
               [b["upper"] for b in filled], colors="tab:red", linewidth=2.5,
               label="mean confidence")
    top.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(loc="best", fontsize="small")
    if title:
        top.set_title(title)
    bottom.bar(lower, [b["count"] for b in bins], width=width, align="edge", color="grey")
    bottom.set_xlabel("confidence")
    bottom.set_ylabel("samples")
    return _save(figure, path)


def _mark_stages(axes: Any, history: Sequence[dict[str, Any]]) -> None:
    """A vertical line between stages and each stage's name at its start."""
    start = 0
    for i, row in enumerate([*history, {"stage": None}]):
        if i and row.get("stage") != history[i - 1].get("stage"):
            if start:
                axes.axvline(start + 0.5, color="grey", linestyle=":", linewidth=1)
            axes.annotate(
                str(history[start].get("stage", "")), xy=(start + 1, 1.0),
                xycoords=("data", "axes fraction"), xytext=(2, -12),
                textcoords="offset points", fontsize="small", color="grey",
            )
            start = i


def _figure(
    warn: Warn | None, what: str, figsize: tuple[float, float], layout: str | None = "constrained"
) -> Figure | None:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        global _warned
        if not _warned:
            _warned = True
            message = f"matplotlib is not installed, {what} (pip install 'tlcore[plots]')"
            (warn or _stderr)(message)
        return None
    return Figure(figsize=figsize, layout=layout)


def _save(figure: Figure, path: str | Path) -> Path:
    """Write through the Agg canvas (no pyplot, no global backend), atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    target = Path(path)
    with atomic_path(target) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    return target


def _stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)
