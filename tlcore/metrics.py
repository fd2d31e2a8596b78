"""Classification metrics from predictions, shared by framework and ONNX evaluation."""

from __future__ import annotations

from typing import Any

import numpy as np


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """Counts of (true class, predicted class) pairs, int64 ``(classes, classes)``, true
    classes as rows."""
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (np.asarray(labels, np.int64), np.asarray(predicted, np.int64)), 1)
    return confusion


def per_class_recall(confusion: np.ndarray) -> np.ndarray:
    """Each class's recall (its examples predicted as it), float64; 0 for a class without
    examples (scikit-learn's ``recall_score(average=None, zero_division=0)``)."""
    support = confusion.sum(axis=1)
    return np.divide(np.diag(confusion), support, out=np.zeros(len(support)), where=support > 0)


def per_class_f1(confusion: np.ndarray) -> np.ndarray:
    """Each class's F1, ``2 tp / (2 tp + fp + fn)``, float64; 0 for a class neither present
    nor predicted."""
    tp = np.diag(confusion).astype(np.float64)
    denominator = confusion.sum(axis=0) + confusion.sum(axis=1)  # 2 tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros(len(tp)), where=denominator > 0)


def balanced_accuracy(confusion: np.ndarray) -> float:
    """The mean recall over the classes that have examples (scikit-learn's
    ``balanced_accuracy_score``): a model that ignores a rare class loses its share of it,
    however few examples it has. 0 when there are no examples."""
    present = confusion.sum(axis=1) > 0
    return float(per_class_recall(confusion)[present].mean()) if present.any() else 0.0


def f1_macro(confusion: np.ndarray) -> float:
    """The mean F1 over the classes that are present or predicted (scikit-learn's
    ``f1_score(average="macro")``, whose classes are those of the labels and predictions).
    0 when there are no examples."""
    seen = (confusion.sum(axis=1) + confusion.sum(axis=0)) > 0
    return float(per_class_f1(confusion)[seen].mean()) if seen.any() else 0.0


def classification_report(
    labels: np.ndarray, predicted: np.ndarray, class_names: tuple[str, ...] | list[str]
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro F1, per-class precision / recall / F1 / support,
    and the confusion matrix.

    Args:
        labels: true class indices, shape (n,).
        predicted: predicted class indices, shape (n,).
        class_names: the name of each class index.

    Returns:
        ``{"accuracy", "balanced_accuracy", "f1_macro", "count", "per_class": {name:
        {precision, recall, f1, support}}, "confusion": [[...]]}``; the confusion matrix has
        true classes as rows.

    Example:
        >>> classification_report(np.array([0, 1]), np.array([0, 0]), ["a", "b"])["accuracy"]
        0.5
    """
    confusion = confusion_matrix(labels, predicted, len(class_names))
    f1 = per_class_f1(confusion)
    per_class = {}
    for i, name in enumerate(class_names):
        predicted_i = confusion[:, i].sum()
        support = confusion[i].sum()
        per_class[name] = {
            "precision": float(confusion[i, i] / predicted_i) if predicted_i else 0.0,
            "recall": float(confusion[i, i] / support) if support else 0.0,
            "f1": float(f1[i]),
            "support": int(support),
        }
    total = int(confusion.sum())
    return {
        "accuracy": float(np.trace(confusion) / total) if total else 0.0,
        "balanced_accuracy": balanced_accuracy(confusion),
        "f1_macro": f1_macro(confusion),
        "count": total,
        "per_class": per_class,
        "confusion": confusion.tolist(),
    }


def format_report(report: dict[str, Any], class_names: tuple[str, ...] | list[str]) -> str:
    """The report as a table a person reads: accuracy, per-class lines, the confusion matrix."""
    examples = report.get("examples", "images")  # what was evaluated: images, texts, vectors
    lines = [f"accuracy {report['accuracy']:.4f} on {report['count']} {examples}"]
    if "balanced_accuracy" in report:  # reports written before tlcore measured them lack them
        lines.append(
            f"balanced accuracy {report['balanced_accuracy']:.4f}, "
            f"macro F1 {report['f1_macro']:.4f}"
        )
    lines.append("")
    width = max(8, *(len(n) for n in class_names))
    lines.append(f"{'class':<{width}} precision  recall      f1  support")
    for name in class_names:
        row = report["per_class"][name]
        f1 = f"{row['f1']:>7.3f}" if "f1" in row else f"{'-':>7}"
        lines.append(
            f"{name:<{width}} {row['precision']:>9.3f} {row['recall']:>7.3f} {f1} "
            f"{row['support']:>8d}"
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
