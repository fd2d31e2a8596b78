"""What ``tl eval`` adds to a classifier's report beyond the task's metrics: the samples it got
wrong with the most confidence, and its calibration (:mod:`~tlcore.report.calibration`).

Both are computed from the model's class probabilities; they go into ``report.json`` (so a
script reads them) and ``report.html`` shows them (:mod:`~tlcore.report.html`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlcore.report.calibration import reliability

if TYPE_CHECKING:
    from tlcore.data.dataset import Dataset

MISTAKES = 24
"""Confident mistakes kept in a report: a screenful of thumbnails."""

TEXT_EXCERPT = 200
"""Characters of a text kept to show a mistake."""


def classifier_details(
    probabilities: np.ndarray,
    targets: np.ndarray,
    classes: Sequence[str],
    dataset: Dataset,
    limit: int = MISTAKES,
) -> dict[str, Any]:
    """The report keys of a single-label classifier beyond its task's metrics.

    Returns:
        ``ece`` (expected calibration error over 10 confidence bins), ``calibration`` (the
        bins: ``lower``, ``upper``, ``count``, ``confidence``, ``accuracy``) and
        ``confident_mistakes`` (:func:`confident_mistakes`).

    Raises:
        TlcoreError: a probability is NaN or infinite.
    """
    table = reliability(probabilities, targets)
    return {
        "ece": table["ece"],
        "calibration": table["bins"],
        "confident_mistakes": confident_mistakes(probabilities, targets, classes, dataset, limit),
    }


def confident_mistakes(
    probabilities: np.ndarray,
    targets: np.ndarray,
    classes: Sequence[str],
    dataset: Dataset,
    limit: int = MISTAKES,
) -> list[dict[str, Any]]:
    """The ``limit`` wrongly classified samples the model was surest of, surest first.

    Each is ``{"index", "true", "predicted", "confidence"}`` (``index``: its position in the
    evaluated data; ``confidence``: the probability of the wrong class it chose), with
    ``source`` (the file) when the data was read from files, and ``text`` (its first
    :data:`TEXT_EXCERPT` characters) for a text. Ties keep the data's order.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if not len(probabilities):
        return []
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    wrong = np.flatnonzero(predicted != np.asarray(targets))
    order = wrong[np.argsort(-confidence[wrong], kind="stable")][:limit]
    paths: Sequence[Path] = getattr(dataset, "paths", ())
    found = []
    for i in order.tolist():
        item: dict[str, Any] = {
            "index": i,
            "true": classes[int(targets[i])],
            "predicted": classes[int(predicted[i])],
            "confidence": float(confidence[i]),
        }
        if paths:
            item["source"] = str(paths[i])
        if dataset.modality == "text":
            item["text"] = dataset.text(i)[:TEXT_EXCERPT]  # type: ignore[attr-defined]
        found.append(item)
    return found
