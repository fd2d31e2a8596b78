"""Classification metrics from predictions, shared by framework and ONNX evaluation."""

from __future__ import annotations

from typing import Any

import numpy as np


def classification_report(
    labels: np.ndarray, predicted: np.ndarray, class_names: tuple[str, ...] | list[str]
) -> dict[str, Any]:
    """Accuracy, per-class precision / recall / support, and the confusion matrix.

    Args:
        labels: true class indices, shape (n,).
        predicted: predicted class indices, shape (n,).
        class_names: the name of each class index.

    Returns:
        ``{"accuracy", "count", "per_class": {name: {precision, recall, support}},
        "confusion": [[...]]}``; the confusion matrix has true classes as rows.

    Example:
        >>> classification_report(np.array([0, 1]), np.array([0, 0]), ["a", "b"])["accuracy"]
        0.5
    """
    k = len(class_names)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = {}
    for i, name in enumerate(class_names):
        predicted_i = confusion[:, i].sum()
        support = confusion[i].sum()
        per_class[name] = {
            "precision": float(confusion[i, i] / predicted_i) if predicted_i else 0.0,
            "recall": float(confusion[i, i] / support) if support else 0.0,
            "support": int(support),
        }
    total = int(confusion.sum())
    return {
        "accuracy": float(np.trace(confusion) / total) if total else 0.0,
        "count": total,
        "per_class": per_class,
        "confusion": confusion.tolist(),
    }


def format_report(report: dict[str, Any], class_names: tuple[str, ...] | list[str]) -> str:
    """The report as a table a person reads: accuracy, per-class lines, the confusion matrix."""
    examples = report.get("examples", "images")  # what was evaluated: images, texts, vectors
    lines = [f"accuracy {report['accuracy']:.4f} on {report['count']} {examples}", ""]
    width = max(8, *(len(n) for n in class_names))
    lines.append(f"{'class':<{width}} precision  recall  support")
    for name in class_names:
        row = report["per_class"][name]
        lines.append(
            f"{name:<{width}} {row['precision']:>9.3f} {row['recall']:>7.3f} {row['support']:>8d}"
        )
    lines += ["", "confusion (rows: true, columns: predicted)"]
    cell = max(4, *(len(str(v)) + 1 for r in report["confusion"] for v in r))
    lines.append(" " * width + "".join(f"{n[:cell - 1]:>{cell}}" for n in class_names))
    for name, row in zip(class_names, report["confusion"], strict=True):
        lines.append(f"{name:<{width}}" + "".join(f"{v:>{cell}}" for v in row))
    return "\n".join(lines)


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean softmax cross-entropy of integer ``labels`` under ``logits``, in float64."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())
