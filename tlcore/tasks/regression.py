"""Regression: one number per image, mean squared error, mean absolute error.

The head learns standardised targets (``(y - mean) / std``, the training targets' mean and
standard deviation), so that one learning rate suits targets in any unit; the ONNX model's
final nodes undo it (``values = logits * std + mean``) and the bundle records both numbers.
The loss (``loss``, ``val_loss``) is the mean squared error of the standardised targets; the
metrics (MAE, RMSE, R²) are in the targets' own unit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from tlcore.bundle.layout import VALUES
from tlcore.errors import DataError
from tlcore.tasks.base import Prediction, Task, append_output, logits_type

DEFAULT_NAME = "value"


class RegressionTask(Task):
    """One number per image, from a CSV file of ``path,value`` or a float array. Targets are
    float64 ``(n,)``; the ONNX model's ``values`` output is ``(batch, 1)``; ``tl predict``
    prints the value."""

    name: ClassVar[str] = "regression"
    description: ClassVar[str] = "one number per image (mean squared error, MAE, RMSE, R²)"
    loss: ClassVar[str] = "mse"
    output: ClassVar[str] = VALUES
    metric_names: ClassVar[tuple[str, ...]] = ("loss", "mae", "rmse", "r2")
    lower_is_better: ClassVar[frozenset[str]] = frozenset({"loss", "mae", "rmse"})
    default_monitor: ClassVar[str] = "val_mae"
    quality_metric: ClassVar[str | None] = None
    baseline: ClassVar[str] = "predicting the mean"
    target_kinds: ClassVar[str] = "f"
    target_text: ClassVar[str] = "one number per image"
    target_hint: ClassVar[str] = "read them from a label file (data.labels) or pass a float array"
    label_example: ClassVar[str] = "img/1.png,0.73 (a finite number)"

    def parse_label(self, text: str) -> float:
        """A finite number."""
        try:
            value = float(text.strip())
        except ValueError:
            raise ValueError(f"{text.strip()!r} is not a number") from None
        if not math.isfinite(value):
            raise ValueError(f"{text.strip()!r} is not a finite number")
        return value

    def encode_labels(
        self, labels: Any, count: int, names: Sequence[str] | None = None
    ) -> tuple[np.ndarray, tuple[str, ...]]:
        """Numbers, ``(n,)`` or ``(n, 1)``, as float64 targets; the name defaults to
        ``value``."""
        try:
            values = np.asarray(labels, dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError(
                "regression labels must be numbers", "give one number per image"
            ) from None
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        if values.ndim != 1 or len(values) != count:
            raise DataError(
                f"regression labels must be one number per image ({count}); got shape "
                f"{values.shape}",
                "give a 1-D array of numbers",
            )
        if not np.isfinite(values).all():
            bad = int(np.flatnonzero(~np.isfinite(values))[0])
            raise DataError(
                f"regression label {bad} is {values[bad]}: NaN or infinite",
                "clean the labels: every target must be a finite number",
            )
        known = (DEFAULT_NAME,) if names is None else tuple(names)
        if len(known) != 1:
            raise DataError(f"one target name needed, got {list(known)}", "e.g. ['age']")
        return values, known

    def num_outputs(self, names: Sequence[str]) -> int:
        """One output."""
        return 1

    def align(
        self, targets: np.ndarray, names: Sequence[str], labels: Sequence[str]
    ) -> np.ndarray:
        """The values as they are: one target, whatever its name."""
        return np.asarray(targets, dtype=np.float64)

    def describe(
        self, targets: np.ndarray, names: Sequence[str], noun: str = "images"
    ) -> str:
        """``120 images, value 0.02 to 0.98, mean 0.51``."""
        if not len(targets):
            return f"0 {noun}"
        return (
            f"{len(targets)} {noun}, {names[0]} {np.min(targets):.4g} to "
            f"{np.max(targets):.4g}, mean {np.mean(targets):.4g}"
        )

    def prepare(self, targets: np.ndarray) -> dict[str, Any]:
        """The training targets' mean and standard deviation (1 when they are constant)."""
        values = np.asarray(targets, dtype=np.float64)
        mean = float(values.mean()) if len(values) else 0.0
        std = float(values.std()) if len(values) else 1.0
        return {"mean": mean, "std": std if std > 1e-12 else 1.0}

    def train_targets(self, targets: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """Standardised float32 targets, ``(n, 1)``."""
        z = (np.asarray(targets, np.float64) - info["mean"]) / info["std"]
        return z.astype(np.float32).reshape(-1, 1)

    def metrics(
        self, outputs: np.ndarray, targets: np.ndarray, info: dict[str, Any]
    ) -> dict[str, float]:
        """Squared error of the standardised targets, and MAE, RMSE and R² in their unit."""
        if not len(targets):
            return {}
        values = self.activate(outputs, info)[:, 0]
        truth = np.asarray(targets, dtype=np.float64)
        scaled = (values - truth) / info["std"]
        return {"loss": float(np.mean(scaled**2)), **value_metrics(values, truth)}

    def baseline_loss(
        self,
        targets: np.ndarray,
        num_outputs: int,
        info: dict[str, Any],
        smoothing: float = 0.0,
    ) -> tuple[float, float]:
        """The squared error of predicting the mean (the standardised variance), and 0."""
        values = np.asarray(targets, dtype=np.float64)
        return float(values.var() / info["std"] ** 2) if len(values) else 0.0, 0.0

    def chance_warning(
        self,
        metrics: dict[str, float],
        targets: np.ndarray,
        num_outputs: int,
        info: dict[str, Any],
        part: str,
    ) -> str | None:
        """A warning when the MAE is no better than predicting the targets' median."""
        mae = metrics.get("mae")
        if mae is None or len(targets) < 2:
            return None
        values = np.asarray(targets, dtype=np.float64)
        constant = float(np.mean(np.abs(values - np.median(values))))
        if mae < constant:
            return None
        return (
            f"{part} mean absolute error {mae:.4g} is no better than predicting one value "
            f"for every image ({constant:.4g}): the model learned little or nothing. Train "
            "longer or at a higher learning rate, or check that the values match the inputs"
        )

    def activate(self, outputs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """``outputs * std + mean``, float64."""
        return np.asarray(outputs, dtype=np.float64) * info["std"] + info["mean"]

    def final_node(self, proto: Any, logits: str, info: dict[str, Any]) -> None:
        """``values = logits * std + mean`` (a Mul and an Add)."""
        from onnx import helper, numpy_helper

        elem_type, width = logits_type(proto, logits)
        dtype = helper.tensor_dtype_to_np_dtype(elem_type)
        scale, shift = "tlcore_value_scale", "tlcore_value_shift"
        proto.graph.initializer.extend([
            numpy_helper.from_array(np.array([info["std"]], dtype=dtype), scale),
            numpy_helper.from_array(np.array([info["mean"]], dtype=dtype), shift),
        ])
        nodes = [
            helper.make_node("Mul", [logits, scale], ["tlcore_scaled"], name="tlcore_scale"),
            helper.make_node("Add", ["tlcore_scaled", shift], [self.output], name="tlcore_shift"),
        ]
        append_output(proto, self.output, elem_type, width, nodes)

    def difference(
        self, ours: np.ndarray, theirs: np.ndarray, info: dict[str, Any]
    ) -> np.ndarray:
        """In standard deviations of the training targets, so a tolerance means the same
        for targets in any unit."""
        return np.abs(np.asarray(ours, np.float64) - theirs).max(axis=1) / info["std"]

    def decode(
        self, source: str, row: np.ndarray, labels: Sequence[str], info: dict[str, Any],
        top_k: int,
    ) -> Prediction:
        """The value."""
        value = float(row[0])
        return Prediction(source, ((labels[0], value),), value=value, task=self.name)

    def prediction_dict(self, prediction: Prediction) -> dict[str, Any]:
        """``{"source", "label": the target's name, "value"}``."""
        return {"source": prediction.source, "label": prediction.label, "value": prediction.value}

    def prediction_text(self, prediction: Prediction) -> str:
        """``photo.jpg<TAB>value 0.4213``."""
        return f"{prediction.source}\t{prediction.label} {prediction.value:.6g}"

    def csv_header(self) -> list[str]:
        """``source,label,value``."""
        return ["source", "label", "value"]

    def csv_rows(self, prediction: Prediction) -> list[list[Any]]:
        """One row: the source, the target's name, the value."""
        return [[prediction.source, prediction.label, f"{prediction.value:.6g}"]]

    def report(
        self, outputs: np.ndarray, targets: np.ndarray, labels: Sequence[str],
        info: dict[str, Any],
    ) -> dict[str, Any]:
        """MAE, RMSE, R², the mean error (bias) and the largest error, in the targets' unit."""
        values = np.asarray(outputs, dtype=np.float64).reshape(len(targets), -1)[:, 0]
        truth = np.asarray(targets, dtype=np.float64)
        errors = values - truth
        return {
            **value_metrics(values, truth),
            "bias": float(errors.mean()) if len(truth) else 0.0,
            "max_error": float(np.abs(errors).max()) if len(truth) else 0.0,
            "count": len(truth),
            "target": labels[0],
        }

    def format_report(self, report: dict[str, Any]) -> str:
        """One line per figure."""
        return "\n".join([
            f"{report['target']} on {report['count']} {report.get('examples', 'images')}",
            f"mean absolute error   {report['mae']:.6g}",
            f"root mean sq. error   {report['rmse']:.6g}",
            f"R²                    {report['r2']:.4f}",
            f"mean error (bias)     {report['bias']:.6g}",
            f"largest error         {report['max_error']:.6g}",
        ])


def value_metrics(values: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Mean absolute error, root mean squared error and R² of predicted ``values``.

    R² is ``1 - SS_res / SS_tot``; for constant ``truth`` (SS_tot 0) it is 1 for a perfect
    prediction and 0 otherwise, as scikit-learn's ``r2_score`` does.

    Example:
        >>> value_metrics(np.array([1.0, 2.0, 4.0]), np.array([1.0, 3.0, 5.0]))["mae"]
        0.6666666666666666
    """
    if not len(truth):
        return {"mae": 0.0, "rmse": 0.0, "r2": 0.0}
    errors = np.asarray(values, np.float64) - np.asarray(truth, np.float64)
    residual = float(np.sum(errors**2))
    total = float(np.sum((truth - np.mean(truth)) ** 2))
    perfect = 1.0 if residual == 0 else 0.0
    r2 = 1.0 - residual / total if total > 0 else perfect
    return {
        "mae": float(np.mean(np.abs(errors))),
        "rmse": math.sqrt(residual / len(truth)),
        "r2": r2,
    }
