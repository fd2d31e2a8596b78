"""Multi-label classification: any number of labels per image, a sigmoid per label, binary
cross-entropy, and per-label thresholds chosen on the validation images.

Thresholds: per label, the one with the best F1 on the validation images
(:func:`~tlcore.tasks.thresholds.choose_thresholds`), 0.5 without them; a label is predicted
when its probability is at least its threshold.

F1 of a label with no positive image and no positive prediction is 1 (nothing to find, nothing
found wrongly); micro F1 pools every (image, label) decision, macro F1 averages the labels'.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from tlcore.bundle.layout import PROBABILITIES
from tlcore.errors import DataError
from tlcore.tasks.base import Prediction, Task, append_output, logits_type
from tlcore.tasks.thresholds import choose_thresholds, thresholds


class MultiLabelTask(Task):
    """Any number of labels per image, from a CSV file of ``path,label1;label2`` or a
    multi-hot array. Targets are float32 multi-hot ``(n, labels)``; the ONNX model adds a
    Sigmoid (``probabilities``); ``tl predict`` prints every label over its threshold."""

    name: ClassVar[str] = "multilabel"
    description: ClassVar[str] = (
        "any number of labels per image (sigmoid, binary cross-entropy, F1, thresholds)"
    )
    loss: ClassVar[str] = "binary_cross_entropy"
    output: ClassVar[str] = PROBABILITIES
    metric_names: ClassVar[tuple[str, ...]] = ("loss", "f1_micro", "f1_macro", "subset_accuracy")
    default_monitor: ClassVar[str] = "val_f1_micro"
    quality_metric: ClassVar[str | None] = "f1_micro"
    baseline: ClassVar[str] = "predicting each label's frequency"
    agreement_on: ClassVar[str | None] = "labels over threshold"
    target_kinds: ClassVar[str] = "f"
    target_ndim: ClassVar[int] = 2
    target_text: ClassVar[str] = "multi-hot labels (n, labels)"
    target_hint: ClassVar[str] = (
        "read them from a label file (data.labels) or pass a multi-hot array"
    )
    label_example: ClassVar[str] = "img/1.png,cat;dog (labels separated by ';')"

    def parse_label(self, text: str) -> tuple[str, ...]:
        """``cat;dog`` as ``("cat", "dog")``; an empty set or an empty name is an error."""
        parts = [part.strip() for part in text.split(";")]
        if not any(parts):
            raise ValueError("the label set is empty")
        if not all(parts):
            raise ValueError(f"an empty label name in {text.strip()!r}")
        return tuple(sorted(set(parts)))

    def encode_labels(
        self, labels: Any, count: int, names: Sequence[str] | None = None
    ) -> tuple[np.ndarray, tuple[str, ...]]:
        """A multi-hot array ``(n, labels)`` of 0/1 (names default to ``"0"``, ``"1"``, ...),
        or one collection of label names per image (names default to all of them, sorted),
        as float32 multi-hot targets."""
        array = _numeric(labels)
        if array is not None:
            return _encode_multi_hot(array, count, names)
        rows = [self.parse_label(row) if isinstance(row, str) else row for row in labels]
        if len(rows) != count:
            raise DataError(
                f"got {count} images but {len(rows)} label sets", "give one set per image"
            )
        if any(isinstance(row, str) or not hasattr(row, "__iter__") for row in rows):
            raise DataError(
                "multi-label labels must be a multi-hot array or one list of names per image",
                'e.g. [["cat"], ["cat", "dog"]], or "cat;dog" per image',
            )
        found = sorted({str(name) for row in rows for name in row})
        known = tuple(found) if names is None else tuple(names)
        unknown = sorted(set(found) - set(known))
        if unknown:
            raise DataError(
                f"labels the model does not know: {', '.join(unknown[:5])}",
                f"the known labels are {list(known)}",
            )
        if not known:
            raise DataError("no labels at all", "give each image at least one label")
        index = {name: i for i, name in enumerate(known)}
        targets = np.zeros((count, len(known)), dtype=np.float32)
        for i, row in enumerate(rows):
            targets[i, [index[str(name)] for name in row]] = 1.0
        return targets, known

    def align(
        self, targets: np.ndarray, names: Sequence[str], labels: Sequence[str]
    ) -> np.ndarray:
        """Columns of ``names`` moved to the columns of the same names in ``labels``."""
        super().align(targets, names, labels)
        index = {name: i for i, name in enumerate(labels)}
        out = np.zeros((len(targets), len(labels)), dtype=np.float32)
        out[:, [index[name] for name in names]] = targets
        return out

    def counts(self, targets: np.ndarray, names: Sequence[str]) -> np.ndarray:
        """Images with each label."""
        return (np.asarray(targets) > 0.5).sum(axis=0).astype(np.int64)

    def describe(
        self, targets: np.ndarray, names: Sequence[str], noun: str = "images"
    ) -> str:
        """``120 images, 3 labels: red 40, green 52, blue 38``."""
        parts = [f"{n} {int(c)}" for n, c in zip(names, self.counts(targets, names), strict=True)]
        if len(parts) > 12:
            parts = [*parts[:10], f"... and {len(parts) - 10} more"]
        return f"{len(targets)} {noun}, {len(names)} labels: " + ", ".join(parts)

    def train_targets(self, targets: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """float32 multi-hot."""
        return np.asarray(targets, dtype=np.float32)

    def metrics(
        self, outputs: np.ndarray, targets: np.ndarray, info: dict[str, Any]
    ) -> dict[str, float]:
        """Binary cross-entropy (mean over images and labels), micro and macro F1 and the
        share of images with every label right, at the thresholds of ``info`` (0.5 before
        they are chosen)."""
        if not len(targets):
            return {}
        truth = np.asarray(targets) > 0.5
        predicted = sigmoid(outputs) >= thresholds(info, truth.shape[1])
        return {
            "loss": binary_cross_entropy(outputs, targets),
            **f1_scores(predicted, truth),
            "subset_accuracy": float(np.mean((predicted == truth).all(axis=1))),
        }

    def baseline_loss(
        self,
        targets: np.ndarray,
        num_outputs: int,
        info: dict[str, Any],
        smoothing: float = 0.0,
    ) -> tuple[float, float]:
        """The binary cross-entropy of predicting each label's frequency, and 0."""
        p = np.clip(np.asarray(targets, np.float64).mean(axis=0), 1e-12, 1 - 1e-12)
        return float(np.mean(-(p * np.log(p) + (1 - p) * np.log1p(-p)))), 0.0

    def chance_warning(
        self,
        metrics: dict[str, float],
        targets: np.ndarray,
        num_outputs: int,
        info: dict[str, Any],
        part: str,
    ) -> str | None:
        """A warning when micro F1 is no better than predicting every label for every image."""
        f1 = metrics.get("f1_micro")
        if f1 is None or not len(targets):
            return None
        positives = float((np.asarray(targets) > 0.5).sum())
        every = 2 * positives / (positives + np.asarray(targets).size)
        if f1 > every:
            return None
        return (
            f"{part} micro F1 {f1:.3f} is no better than predicting every label for every "
            f"image ({every:.3f}): the model learned little or nothing. Train longer or at a "
            "higher learning rate, or check that the labels match the inputs"
        )

    def calibrate(
        self, info: dict[str, Any], outputs: np.ndarray, targets: np.ndarray
    ) -> dict[str, Any]:
        """Per-label thresholds chosen on held-out images (:func:`choose_thresholds`)."""
        chosen = choose_thresholds(sigmoid(outputs), np.asarray(targets) > 0.5)
        return {**info, "thresholds": [float(t) for t in chosen]}

    def activate(self, outputs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """Element-wise sigmoid in float64."""
        return sigmoid(outputs)

    def final_node(self, proto: Any, logits: str, info: dict[str, Any]) -> None:
        """A Sigmoid per label: ``probabilities``."""
        from onnx import helper

        elem_type, width = logits_type(proto, logits)
        node = helper.make_node("Sigmoid", [logits], [self.output], name="tlcore_sigmoid")
        append_output(proto, self.output, elem_type, width, [node])

    def agreement(
        self, ours: np.ndarray, theirs: np.ndarray, info: dict[str, Any], tolerance: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """The same labels over their thresholds; a label whose framework probability is
        within the tolerance of its threshold may fall on either side."""
        cut = thresholds(info, theirs.shape[1])
        differ = (np.asarray(ours) >= cut) != (theirs >= cut)
        near = np.abs(theirs - cut) <= tolerance
        return ~differ.any(axis=1), ~(differ & ~near).any(axis=1)

    def decode(
        self, source: str, row: np.ndarray, labels: Sequence[str], info: dict[str, Any],
        top_k: int,
    ) -> Prediction:
        """Every label at or over its threshold, most probable first (``top_k`` unused)."""
        over = np.flatnonzero(row >= thresholds(info, len(labels)))
        order = over[np.argsort(-row[over], kind="stable")]
        return Prediction(
            source,
            tuple((labels[i], float(row[i])) for i in order),
            scores=tuple((label, float(p)) for label, p in zip(labels, row, strict=True)),
            task=self.name,
        )

    def prediction_dict(self, prediction: Prediction) -> dict[str, Any]:
        """``{"source", "labels": [...], "top": [{"label", "probability"}], "probabilities":
        {label: probability}}``."""
        return {
            "source": prediction.source,
            "labels": list(prediction.labels),
            "top": [{"label": label, "probability": p} for label, p in prediction.top],
            "probabilities": dict(prediction.scores),
        }

    def score(self, outputs: np.ndarray, targets: np.ndarray, info: dict[str, Any]) -> float:
        """Micro F1 of probabilities at the thresholds."""
        truth = np.asarray(targets) > 0.5
        return f1_scores(np.asarray(outputs) >= thresholds(info, truth.shape[1]), truth)[
            "f1_micro"
        ]

    def report(
        self, outputs: np.ndarray, targets: np.ndarray, labels: Sequence[str],
        info: dict[str, Any],
    ) -> dict[str, Any]:
        """Per-label precision / recall / F1 / support / threshold, micro and macro F1,
        micro precision and recall, subset accuracy."""
        truth = np.asarray(targets) > 0.5
        cut = thresholds(info, len(labels))
        predicted = np.asarray(outputs).reshape(len(truth), len(labels)) >= cut
        tp, fp, fn = _confusion(predicted, truth)
        per_label = {
            name: {
                "precision": _ratio(tp[i], tp[i] + fp[i]),
                "recall": _ratio(tp[i], tp[i] + fn[i]),
                "f1": _f1(tp[i], fp[i], fn[i]),
                "support": int(tp[i] + fn[i]),
                "threshold": float(cut[i]),
            }
            for i, name in enumerate(labels)
        }
        return {
            **f1_scores(predicted, truth),
            "precision_micro": _ratio(tp.sum(), tp.sum() + fp.sum()),
            "recall_micro": _ratio(tp.sum(), tp.sum() + fn.sum()),
            "subset_accuracy": float(np.mean((predicted == truth).all(axis=1))) if len(truth)
            else 0.0,
            "count": len(truth),
            "per_label": per_label,
        }

    def format_report(self, report: dict[str, Any]) -> str:
        """Micro / macro F1 and subset accuracy, then one line per label."""
        lines = [
            f"micro F1 {report['f1_micro']:.4f}, macro F1 {report['f1_macro']:.4f}, subset "
            f"accuracy {report['subset_accuracy']:.4f} on {report['count']} "
            f"{report.get('examples', 'images')}",
            "",
        ]
        width = max(8, *(len(name) for name in report["per_label"]))
        lines.append(f"{'label':<{width}} precision  recall      f1  support  threshold")
        for name, row in report["per_label"].items():
            lines.append(
                f"{name:<{width}} {row['precision']:>9.3f} {row['recall']:>7.3f} "
                f"{row['f1']:>7.3f} {row['support']:>8d} {row['threshold']:>10.3f}"
            )
        return "\n".join(lines)


def sigmoid(outputs: np.ndarray) -> np.ndarray:
    """Element-wise logistic function in float64, stable for large logits."""
    z = np.asarray(outputs, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -z))


def binary_cross_entropy(logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean binary cross-entropy of targets in [0, 1] under ``logits``, in float64 (as
    ``binary_cross_entropy_with_logits``)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64).reshape(z.shape)
    return float(np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))))


def f1_scores(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Micro and macro F1 of boolean ``(n, labels)`` predictions.

    Example:
        >>> f1_scores(np.array([[1, 0], [1, 1]], bool), np.array([[1, 0], [0, 1]], bool))
        {'f1_micro': 0.8, 'f1_macro': 0.8333333333333333}
    """
    tp, fp, fn = _confusion(predicted, truth)
    per_label = [_f1(a, b, c) for a, b, c in zip(tp, fp, fn, strict=True)]
    return {
        "f1_micro": _f1(tp.sum(), fp.sum(), fn.sum()),
        "f1_macro": float(np.mean(per_label)) if per_label else 0.0,
    }


def _confusion(predicted: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, ...]:
    predicted, truth = np.asarray(predicted, bool), np.asarray(truth, bool)
    return (
        (predicted & truth).sum(axis=0),
        (predicted & ~truth).sum(axis=0),
        (~predicted & truth).sum(axis=0),
    )


def _f1(tp: Any, fp: Any, fn: Any) -> float:
    denominator = 2 * int(tp) + int(fp) + int(fn)
    return 2 * int(tp) / denominator if denominator else 1.0


def _ratio(num: Any, den: Any) -> float:
    return float(num) / float(den) if den else 0.0


def _numeric(labels: Any) -> np.ndarray | None:
    """``labels`` as a numeric array when they are one (a multi-hot matrix), else ``None``."""
    if isinstance(labels, np.ndarray):
        return labels if labels.dtype.kind in "biuf" else None
    try:
        array = np.asarray(labels)
    except ValueError:  # ragged: one list of names per image
        return None
    return array if array.dtype.kind in "biuf" and array.ndim == 2 else None


def _encode_multi_hot(
    labels: np.ndarray, count: int, names: Sequence[str] | None
) -> tuple[np.ndarray, tuple[str, ...]]:
    if labels.ndim != 2 or len(labels) != count:
        raise DataError(
            f"multi-hot labels must have shape ({count}, labels); got {labels.shape}",
            "one row per image, one column per label, 1 where the label applies",
        )
    if not np.isin(labels, (0, 1)).all():
        raise DataError(
            "multi-hot labels must hold only 0 and 1", "mark each label present with 1"
        )
    known = tuple(str(i) for i in range(labels.shape[1])) if names is None else tuple(names)
    if len(known) != labels.shape[1]:
        raise DataError(
            f"{len(known)} label names for {labels.shape[1]} columns", "give one name per column"
        )
    return labels.astype(np.float32), known
