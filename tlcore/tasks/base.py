"""The :class:`Task` interface: what depends on the kind of head, in one object.

A task says how labels are read and encoded, which loss a backend computes (by name), which
metrics the core computes from the raw outputs (the logits), the final node of the ONNX graph,
what the bundle stores for it (thresholds, target scaling), how the parity check compares
the exported model, and how predictions are decoded and printed.

Framework-free and recipe-free: numpy only (``onnx`` when a graph is finished), so the runtime
imports it. The per-task state a run learns from its data (a regression's target scaling, a
multi-label model's thresholds) travels as a plain JSON-able dict, ``info``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from tlcore.bundle.layout import BATCH_DIM, PROBABILITIES
from tlcore.errors import DataError

#: The losses a backend computes, by name (``StepState.loss``).
LOSSES = ("cross_entropy", "binary_cross_entropy", "mse")


@dataclass(frozen=True)
class Prediction:
    """What a model says about one input, most confident first.

    Attributes:
        source: the file, or ``<image i>`` / ``<array i>`` for in-memory input number ``i``.
        top: ``(label, score)`` pairs to show: the ``top_k`` most probable classes
            (classification), every label over its threshold (multi-label), or the target's
            name and its value (regression).
        value: a regression's predicted value; ``None`` for other tasks.
        scores: every label's probability (multi-label), in label order; else empty.
        task: the name of the task that decoded it, which formats it.
    """

    source: str
    top: tuple[tuple[str, float], ...]
    value: float | None = None
    scores: tuple[tuple[str, float], ...] = ()
    task: str = "classification"

    @property
    def label(self) -> str | None:
        """The most probable class (or label over its threshold); ``None`` when none is."""
        return self.top[0][0] if self.top else None

    @property
    def probability(self) -> float | None:
        """The score of :attr:`label`."""
        return self.top[0][1] if self.top else None

    @property
    def labels(self) -> tuple[str, ...]:
        """Every label shown (over its threshold, for a multi-label model)."""
        return tuple(label for label, _ in self.top)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, as ``tl predict --json`` prints it."""
        return _task(self.task).prediction_dict(self)

    def text(self) -> str:
        """One line, as ``tl predict`` prints it: the source, a tab, what the model says."""
        return _task(self.task).prediction_text(self)


class Task:
    """What depends on the kind of head. Subclass it for a new kind of task.

    Class attributes:
        name: the recipe's ``task`` value.
        description: one line, for errors and ``tl plugins``.
        loss: the loss a backend computes by name: ``cross_entropy`` (int64 class indices),
            ``binary_cross_entropy`` (float32 multi-hot targets, on logits) or ``mse``
            (float32 targets).
        output: the name of the ONNX output the final node writes (besides ``logits``).
        metric_names: the keys :meth:`metrics` returns (validation adds ``val_``).
        lower_is_better: the metrics that improve downwards.
        default_monitor: what a stage's ``monitor: auto`` watches.
        quality_metric: the metric the int8 model is compared on (a fraction, higher is
            better); ``None`` when the task cannot be quantised.
        label_example: one line of a CSV label file, for error messages.
        reads_folders: whether labels may come from a folder with one sub-folder per class
            (else only from a label file or arrays).
        baseline: the constant prediction :meth:`baseline_loss` measures, for messages.
        agreement_on: what :meth:`agreement` compares (``top-1``), for the bundle; ``None``
            when it compares nothing.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    loss: ClassVar[str] = "cross_entropy"
    output: ClassVar[str] = PROBABILITIES
    metric_names: ClassVar[tuple[str, ...]] = ("loss",)
    lower_is_better: ClassVar[frozenset[str]] = frozenset({"loss"})
    default_monitor: ClassVar[str] = "val_loss"
    quality_metric: ClassVar[str | None] = None
    label_example: ClassVar[str] = "img/1.png,cat"
    reads_folders: ClassVar[bool] = False
    baseline: ClassVar[str] = "a constant prediction"
    agreement_on: ClassVar[str | None] = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    # --- labels ---------------------------------------------------------------------------

    def parse_label(self, text: str) -> Any:
        """One label cell of a CSV label file, parsed; raises ``ValueError`` saying why not."""
        text = text.strip()
        if not text:
            raise ValueError("the label is empty")
        return text

    def encode_labels(
        self, labels: Any, count: int, names: Sequence[str] | None = None
    ) -> tuple[np.ndarray, tuple[str, ...]]:
        """User labels (an array, or a list of :meth:`parse_label` results) as the targets
        array a :class:`~tlcore.data.Dataset` holds, and the names of the model's outputs.

        Args:
            labels: one label per example.
            count: the number of examples.
            names: the output names to encode against (a validation set's must be the
                training set's); ``None`` derives them from the labels.

        Raises:
            DataError: the labels do not fit the task; says which and how to fix them.
        """
        raise NotImplementedError

    #: The targets this task trains on: numpy dtype kinds, dimensions, and how to say it.
    target_kinds: ClassVar[str] = "iuf"
    target_ndim: ClassVar[int] = 1
    target_text: ClassVar[str] = "one label per image"
    target_hint: ClassVar[str] = "give labels of the kind the task takes"

    def check_targets(self, targets: np.ndarray) -> None:
        """Raise :class:`~tlcore.errors.DataError` when a dataset's targets (its ``labels``)
        are not what this task trains on (e.g. class indices for a regression), as
        :attr:`target_kinds` and :attr:`target_ndim` say."""
        array = np.asarray(targets)
        if array.dtype.kind not in self.target_kinds or array.ndim != self.target_ndim:
            raise DataError(
                f"task {self.name} needs {self.target_text}; got labels of {array.dtype} "
                f"{array.shape}",
                self.target_hint,
            )

    def num_outputs(self, names: Sequence[str]) -> int:
        """How many outputs the head has for these output names."""
        return len(names)

    def align(
        self, targets: np.ndarray, names: Sequence[str], labels: Sequence[str]
    ) -> np.ndarray:
        """``targets`` encoded for ``names`` (a dataset's), re-encoded for ``labels`` (the
        model's), matched by name.

        Raises:
            DataError: a name the model does not know.
        """
        unknown = sorted(set(names) - set(labels))
        if unknown:
            raise DataError(
                f"the labelled images have labels the model was not trained on: "
                f"{', '.join(unknown)}",
                f"the model knows: {', '.join(labels)}",
            )
        return targets

    def describe(
        self, targets: np.ndarray, names: Sequence[str], noun: str = "images"
    ) -> str:
        """One line about a dataset's targets, e.g. ``120 images, 2 classes: cat 60, dog 60``;
        ``noun`` names what the examples are (``images``, ``texts``, ``vectors``)."""
        return f"{len(targets)} {noun}"

    def counts(self, targets: np.ndarray, names: Sequence[str]) -> np.ndarray:
        """Examples per output (images per class, positives per label), int64."""
        return np.array([len(targets)], dtype=np.int64)

    # --- training -------------------------------------------------------------------------

    def prepare(self, targets: np.ndarray) -> dict[str, Any]:
        """What the task learns from the training targets before training (JSON-able)."""
        return {}

    def train_targets(self, targets: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """The targets as a backend's loss takes them (``Batch.y``)."""
        return targets

    def metrics(
        self, outputs: np.ndarray, targets: np.ndarray, info: dict[str, Any]
    ) -> dict[str, float]:
        """The loss and the metrics of raw ``outputs`` (logits) against ``targets``.

        Returns:
            One float per name of :attr:`metric_names`, ``loss`` first.
        """
        raise NotImplementedError

    def higher_is_better(self, metric: str) -> bool:
        """Whether ``metric`` (``val_`` prefix allowed) improves upwards."""
        return metric.removeprefix("val_") not in self.lower_is_better

    def monitors(self) -> tuple[str, ...]:
        """The values a stage's ``monitor`` may take for this task (besides ``auto``)."""
        return tuple(f"val_{name}" for name in self.metric_names)

    def baseline_loss(
        self,
        targets: np.ndarray,
        num_outputs: int,
        info: dict[str, Any],
        smoothing: float = 0.0,
    ) -> tuple[float, float]:
        """``(the loss of the best constant prediction, the lowest loss possible)`` on
        ``targets``: a training loss that stays near the first learned nothing."""
        raise NotImplementedError

    def chance_warning(
        self,
        metrics: dict[str, float],
        targets: np.ndarray,
        num_outputs: int,
        info: dict[str, Any],
        part: str,
    ) -> str | None:
        """A warning when ``metrics`` (unprefixed, on ``targets``) are no better than a
        constant prediction; ``part`` names the images (``validation``, ``training``)."""
        return None

    def calibrate(
        self, info: dict[str, Any], outputs: np.ndarray, targets: np.ndarray
    ) -> dict[str, Any]:
        """``info`` completed from held-out raw outputs at the end of training (thresholds);
        ``outputs`` may be empty (no validation images)."""
        return dict(info)

    # --- the exported model ----------------------------------------------------------------

    def activate(self, outputs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """The final ONNX node in numpy, float64: raw outputs to what :attr:`output` holds."""
        raise NotImplementedError

    def final_node(self, proto: Any, logits: str, info: dict[str, Any]) -> None:
        """Append the nodes that compute :attr:`output` from ``logits`` to ``proto``'s graph
        and add the output (listed first); see :func:`append_output`."""
        raise NotImplementedError

    def difference(
        self, ours: np.ndarray, theirs: np.ndarray, info: dict[str, Any]
    ) -> np.ndarray:
        """Per sample, the largest difference between two final outputs, in the units the
        export tolerance is given in."""
        return np.abs(np.asarray(ours, np.float64) - theirs).max(axis=1)

    def agreement(
        self, ours: np.ndarray, theirs: np.ndarray, info: dict[str, Any], tolerance: float
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Per sample, whether the exported model (``ours``) gives the framework's
        (``theirs``) answer, and whether a difference is only a tie within ``tolerance``;
        ``None`` when answers are the outputs themselves (no agreement to check)."""
        return None

    def to_dict(self, info: dict[str, Any]) -> dict[str, Any]:
        """The ``task`` section of ``tlcore.json`` and of the ONNX metadata."""
        return {"name": self.name, **info}

    # --- predictions and reports ----------------------------------------------------------

    def decode(
        self, source: str, row: np.ndarray, labels: Sequence[str], info: dict[str, Any],
        top_k: int,
    ) -> Prediction:
        """One :class:`Prediction` from one row of the final output."""
        raise NotImplementedError

    def prediction_dict(self, prediction: Prediction) -> dict[str, Any]:
        """JSON-able form of a prediction."""
        return {"source": prediction.source, "top": [list(pair) for pair in prediction.top]}

    def prediction_text(self, prediction: Prediction) -> str:
        """One printed line: the source, a tab, the labels and scores shown."""
        shown = ", ".join(f"{label} {score:.4f}" for label, score in prediction.top)
        return f"{prediction.source}\t{shown or '(none)'}"

    def csv_header(self) -> list[str]:
        """The header of ``tl predict --csv``."""
        return ["source", "rank", "label", "probability"]

    def csv_rows(self, prediction: Prediction) -> list[list[Any]]:
        """The rows of ``tl predict --csv`` for one prediction."""
        return [
            [prediction.source, rank, label, f"{score:.6g}"]
            for rank, (label, score) in enumerate(prediction.top, 1)
        ]

    def score(self, outputs: np.ndarray, targets: np.ndarray, info: dict[str, Any]) -> float:
        """:attr:`quality_metric` of final outputs (what the ONNX model gives) on targets."""
        raise NotImplementedError

    def report(
        self, outputs: np.ndarray, targets: np.ndarray, labels: Sequence[str],
        info: dict[str, Any],
    ) -> dict[str, Any]:
        """What ``tl eval`` reports, from final outputs (``report.json``)."""
        raise NotImplementedError

    def format_report(self, report: dict[str, Any]) -> str:
        """:meth:`report` as a table a person reads."""
        raise NotImplementedError


def append_output(proto: Any, name: str, elem_type: int, width: int, nodes: list[Any]) -> None:
    """Append ``nodes`` to ``proto``'s graph and list their result ``name`` (``(batch,
    width)``, of ONNX type ``elem_type``) as the graph's first output."""
    from onnx import helper

    proto.graph.node.extend(nodes)
    proto.graph.output.insert(0, helper.make_tensor_value_info(name, elem_type, [BATCH_DIM, width]))


def logits_type(proto: Any, logits: str) -> tuple[int, int]:
    """The ONNX element type and width of the graph output ``logits``."""
    (value,) = [v for v in proto.graph.output if v.name == logits]
    tensor = value.type.tensor_type
    return tensor.elem_type, tensor.shape.dim[1].dim_value


def _task(name: str) -> Task:
    from tlcore.tasks import get_task  # the registry imports every built-in task module

    return get_task(name)
