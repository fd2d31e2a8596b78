"""Per-label decision thresholds of a multi-label model, chosen on validation images.

Per label, every cut between two consecutive distinct validation probabilities is tried, its
threshold the midpoint (below the lowest: half of it); the cut with the highest F1 wins, ties
going to the threshold nearest 0.5. A label without a positive validation image, or a run
without validation images, keeps 0.5. A label is predicted when its probability is at least
its threshold.
"""

from __future__ import annotations

from typing import Any

import numpy as np

DEFAULT_THRESHOLD = 0.5


def choose_thresholds(probabilities: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per label, the threshold with the best F1 on ``probabilities`` (see the module).

    Args:
        probabilities: ``(n, labels)`` sigmoid outputs.
        truth: ``(n, labels)`` booleans.

    Returns:
        One threshold per label, float64.

    Example:
        >>> choose_thresholds(np.array([[0.9], [0.8], [0.3], [0.2]]),
        ...                   np.array([[True], [False], [True], [False]])).tolist()
        [0.25]
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    truth = np.asarray(truth, dtype=bool)
    out = np.full(probabilities.shape[1], DEFAULT_THRESHOLD)
    for j in range(probabilities.shape[1]):
        positives = int(truth[:, j].sum())
        if positives:
            out[j] = _best_cut(probabilities[:, j], truth[:, j], positives)
    return out


def _best_cut(scores: np.ndarray, truth: np.ndarray, positives: int) -> float:
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], truth[order]
    # The last index of each group of equal scores: a cut between two distinct scores.
    ends = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True))
    found = np.cumsum(hits)[ends]
    f1 = 2 * found / (ends + 1 + positives)
    below = np.append(ranked[ends[:-1] + 1], 0.0)
    cuts = (ranked[ends] + below) / 2
    best = np.flatnonzero(f1 >= f1.max() - 1e-12)
    return float(cuts[best[np.argmin(np.abs(cuts[best] - DEFAULT_THRESHOLD))]])


def thresholds(info: dict[str, Any], width: int) -> np.ndarray:
    """The thresholds of ``info`` (0.5 each before they are chosen), one per label."""
    chosen = info.get("thresholds")
    if chosen is None:
        return np.full(width, DEFAULT_THRESHOLD)
    return np.asarray(chosen, dtype=np.float64)
