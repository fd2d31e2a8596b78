"""Single-label classification: one class per image, softmax cross-entropy, top-1 accuracy,
and the metrics that see class imbalance (balanced accuracy, macro F1, per-class recall)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from tlcore.bundle.layout import PROBABILITIES
from tlcore.metrics import (
    balanced_accuracy,
    classification_report,
    confusion_matrix,
    cross_entropy,
    f1_macro,
    format_report,
    per_class_recall,
)
from tlcore.tasks.base import Prediction, Task, append_output, logits_type


class ClassificationTask(Task):
    """One class per image, from a folder per class, integer or string labels, or a CSV file
    of ``path,label``. Targets are int64 class indices; the ONNX model adds a Softmax
    (``probabilities``); ``tl predict`` prints the ``top_k`` classes."""

    name: ClassVar[str] = "classification"
    description: ClassVar[str] = "one class per image (softmax, cross-entropy, accuracy)"
    loss: ClassVar[str] = "cross_entropy"
    output: ClassVar[str] = PROBABILITIES
    metric_names: ClassVar[tuple[str, ...]] = ("loss", "accuracy", "balanced_accuracy", "f1_macro")
    default_monitor: ClassVar[str] = "val_accuracy"
    quality_metric: ClassVar[str | None] = "accuracy"
    reads_folders: ClassVar[bool] = True
    baseline: ClassVar[str] = "predicting the class frequencies"
    agreement_on: ClassVar[str | None] = "top-1"
    target_kinds: ClassVar[str] = "iu"
    target_text: ClassVar[str] = "one class index per image"
    target_hint: ClassVar[str] = (
        "give class indices or names, or set the task that fits the labels "
        "(multilabel, regression)"
    )

    def encode_labels(
        self, labels: Any, count: int, names: Sequence[str] | None = None
    ) -> tuple[np.ndarray, tuple[str, ...]]:
        """Integer class indices or class names as int64 codes (see
        :class:`~tlcore.data.ArrayDataset`); at least two classes."""
        from tlcore.data.labels import _encode_labels  # the data layer imports the tasks

        return _encode_labels(labels, count, names)

    def align(
        self, targets: np.ndarray, names: Sequence[str], labels: Sequence[str]
    ) -> np.ndarray:
        """Class indices of ``names`` as indices of ``labels``, by class name."""
        super().align(targets, names, labels)
        index = {name: i for i, name in enumerate(labels)}
        mapping = np.array([index[name] for name in names], dtype=np.int64)
        return mapping[np.asarray(targets, dtype=np.int64)]

    def counts(self, targets: np.ndarray, names: Sequence[str]) -> np.ndarray:
        """Images per class."""
        return np.bincount(targets, minlength=len(names)).astype(np.int64)

    def describe(
        self, targets: np.ndarray, names: Sequence[str], noun: str = "images"
    ) -> str:
        """``120 images, 2 classes: cat 60, dog 60``."""
        counts = self.counts(targets, names)
        parts = [f"{name} {int(n)}" for name, n in zip(names, counts, strict=True)]
        if len(parts) > 12:
            parts = [*parts[:10], f"... and {len(parts) - 10} more"]
        return f"{len(targets)} {noun}, {len(names)} classes: " + ", ".join(parts)

    def metrics(
        self, outputs: np.ndarray, targets: np.ndarray, info: dict[str, Any]
    ) -> dict[str, float]:
        """Softmax cross-entropy (no label smoothing, no class weights: the same number
        whatever the recipe weighs), top-1 accuracy, balanced accuracy (the mean recall of
        the classes present) and macro F1 (over the classes present or predicted), as
        scikit-learn computes them. Per-class recall is in :meth:`report` (``tl eval``)."""
        if not len(targets):
            return {}
        outputs = np.asarray(outputs)
        predicted = outputs.argmax(axis=1)
        confusion = confusion_matrix(targets, predicted, outputs.shape[1])
        return {
            "loss": cross_entropy(outputs, targets),
            "accuracy": float(np.mean(predicted == targets)),
            "balanced_accuracy": balanced_accuracy(confusion),
            "f1_macro": f1_macro(confusion),
        }

    def recall_by_class(
        self, outputs: np.ndarray, targets: np.ndarray, labels: Sequence[str]
    ) -> dict[str, float | None]:
        """Each class's recall on raw ``outputs`` against ``targets``, by class name;
        ``None`` for a class without examples (nothing to recall). A dict, so it is kept
        out of the per-epoch metrics; :meth:`report` holds it for ``tl eval``."""
        outputs = np.asarray(outputs)
        if not len(targets):
            return {name: None for name in labels}
        confusion = confusion_matrix(targets, outputs.argmax(axis=1), len(labels))
        support = confusion.sum(axis=1)
        recall = per_class_recall(confusion)
        return {
            name: float(recall[i]) if support[i] else None for i, name in enumerate(labels)
        }

    def baseline_loss(
        self,
        targets: np.ndarray,
        num_outputs: int,
        info: dict[str, Any],
        smoothing: float = 0.0,
    ) -> tuple[float, float]:
        """The cross-entropy of predicting the class frequencies, and of a perfect fit."""
        classes = num_outputs
        return label_entropy(targets, classes, smoothing), loss_floor(classes, smoothing)

    def chance_warning(
        self,
        metrics: dict[str, float],
        targets: np.ndarray,
        num_outputs: int,
        info: dict[str, Any],
        part: str,
    ) -> str | None:
        """:func:`tlcore.diagnose.chance_warning` on the accuracy."""
        from tlcore.diagnose import chance_warning  # the training side, never the runtime's

        return chance_warning(metrics.get("accuracy"), targets, num_outputs, part=part)

    def activate(self, outputs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """Row-wise softmax in float64."""
        z = np.asarray(outputs, dtype=np.float64)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def final_node(self, proto: Any, logits: str, info: dict[str, Any]) -> None:
        """A Softmax over the classes: ``probabilities``."""
        from onnx import helper

        elem_type, width = logits_type(proto, logits)
        node = helper.make_node("Softmax", [logits], [self.output], axis=1, name="tlcore_softmax")
        append_output(proto, self.output, elem_type, width, [node])

    def agreement(
        self, ours: np.ndarray, theirs: np.ndarray, info: dict[str, Any], tolerance: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """The same top-1 class; near-equal top classes (an untrained head) may swap by
        rounding, so only a swap the framework itself sees beyond the tolerance counts."""
        picked = np.asarray(ours).argmax(axis=1)
        same = picked == theirs.argmax(axis=1)
        tied = theirs.max(axis=1) - theirs[np.arange(len(picked)), picked] <= tolerance
        return same, tied

    def decode(
        self, source: str, row: np.ndarray, labels: Sequence[str], info: dict[str, Any],
        top_k: int,
    ) -> Prediction:
        """The ``top_k`` most probable classes."""
        best = np.argsort(-row, kind="stable")[: min(top_k, len(labels))]
        return Prediction(source, tuple((labels[i], float(row[i])) for i in best), task=self.name)

    def prediction_dict(self, prediction: Prediction) -> dict[str, Any]:
        """``{"source", "label", "probability", "top": [{"label", "probability"}, ...]}``."""
        return {
            "source": prediction.source,
            "label": prediction.label,
            "probability": prediction.probability,
            "top": [{"label": label, "probability": p} for label, p in prediction.top],
        }

    def score(self, outputs: np.ndarray, targets: np.ndarray, info: dict[str, Any]) -> float:
        """Top-1 accuracy."""
        if not len(targets):
            return 0.0
        return float(np.mean(np.asarray(outputs).argmax(axis=1) == targets))

    def report(
        self, outputs: np.ndarray, targets: np.ndarray, labels: Sequence[str],
        info: dict[str, Any],
    ) -> dict[str, Any]:
        """Accuracy, balanced accuracy, macro F1, per-class precision / recall / F1 /
        support and the confusion matrix (:func:`tlcore.metrics.classification_report`)."""
        predicted = np.asarray(outputs).argmax(axis=1) if len(outputs) else np.zeros(0, np.int64)
        return classification_report(targets, predicted, tuple(labels))

    def format_report(self, report: dict[str, Any]) -> str:
        """:func:`tlcore.metrics.format_report`."""
        return format_report(report, report["class_names"])


def label_entropy(
    labels: np.ndarray,
    num_classes: int,
    smoothing: float = 0.0,
    class_weights: Sequence[float] | None = None,
) -> float:
    """The training loss of the best constant prediction: the cross-entropy of the (smoothed)
    class frequencies of ``labels`` with themselves; ``ln K`` for K balanced classes. With
    ``class_weights`` (a weighted mean loss, or a sampler that draws class ``c`` that much
    more often), the frequencies are weighted first: the best constant then predicts those."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    if class_weights is not None:
        counts = counts * np.asarray(class_weights, dtype=np.float64)
    p = counts / (counts.sum() or 1)
    p = (1 - smoothing) * p + smoothing / num_classes
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def loss_floor(num_classes: int, smoothing: float) -> float:
    """The lowest cross-entropy possible: the entropy of one smoothed one-hot target."""
    if smoothing <= 0 or num_classes < 2:
        return 0.0
    low = smoothing / num_classes
    high = 1 - smoothing + low
    return float(-(high * math.log(high) + (num_classes - 1) * low * math.log(low)))
