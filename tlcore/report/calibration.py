"""Calibration of a classifier: does a confidence of 0.8 mean right four times in five?

The reliability table bins the top-1 confidence of every sample into equal-width bins over
[0, 1] and compares, in each bin, the mean confidence with the accuracy; the expected
calibration error (ECE, Guo et al. 2017) is their gap averaged over the samples:
``sum over bins of |accuracy - confidence| * n_bin / N``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tlcore.errors import TlcoreError

BINS = 10
"""Equal-width confidence bins of the reliability table (the usual 10)."""


def reliability(
    probabilities: np.ndarray, targets: np.ndarray, bins: int = BINS
) -> dict[str, Any]:
    """The reliability table and expected calibration error of class probabilities.

    Args:
        probabilities: ``(N, classes)``, each row a distribution (softmax outputs).
        targets: the true class index of each row, ``(N,)``.
        bins: equal-width confidence bins over [0, 1]; bin ``i`` holds the confidences in
            ``(i / bins, (i + 1) / bins]`` (the first bin includes 0).

    Returns:
        ``{"ece": float, "bins": [{"lower", "upper", "count", "confidence", "accuracy"}]}``:
        one entry per bin, ``confidence`` and ``accuracy`` ``None`` in an empty bin; an ECE
        of 0.0 for no samples.

    Raises:
        TlcoreError: a probability is NaN or infinite (a broken model must not look
            calibrated), or the shapes do not match.

    Example:
        >>> p = np.array([[0.9, 0.1], [0.6, 0.4]])
        >>> round(reliability(p, np.array([0, 1]))["ece"], 6)  # |1 - .9| / 2 + |0 - .6| / 2
        0.35
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    if probabilities.ndim != 2 or len(probabilities) != len(targets):
        raise TlcoreError(
            f"calibration needs one probability row per target, got {probabilities.shape} "
            f"for {targets.shape}",
            "report it as a bug, with the command that made it",
        )
    if not np.isfinite(probabilities).all():
        bad = int((~np.isfinite(probabilities)).any(axis=1).sum())
        raise TlcoreError(
            f"the model gave non-finite probabilities for {bad} of {len(probabilities)} samples",
            "the model is broken: check its training history (tl diagnose) and train it again",
        )
    confidence = probabilities.max(axis=1) if len(probabilities) else np.zeros(0)
    correct = probabilities.argmax(axis=1) == targets if len(probabilities) else np.zeros(0, bool)
    return calibration_bins(confidence, correct, bins)


def calibration_bins(
    confidence: np.ndarray, correct: np.ndarray, bins: int = BINS
) -> dict[str, Any]:
    """:func:`reliability` from each sample's confidence in its prediction and whether the
    prediction was right (also for a task whose confidence is not a softmax maximum)."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # right=True: a confidence exactly on an edge belongs to the bin it closes, (lower, upper].
    index = np.clip(np.digitize(confidence, edges, right=True) - 1, 0, bins - 1)
    rows, ece = [], 0.0
    for i in range(bins):
        inside = index == i
        n = int(inside.sum())
        conf = float(confidence[inside].mean()) if n else None
        acc = float(correct[inside].mean()) if n else None
        if n:
            ece += abs(acc - conf) * n / len(confidence)
        rows.append({"lower": float(edges[i]), "upper": float(edges[i + 1]), "count": n,
                     "confidence": conf, "accuracy": acc})
    return {"ece": float(ece), "bins": rows}
