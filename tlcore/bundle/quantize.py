"""Quantise a bundle's ``model.onnx`` to int8 with onnxruntime, and decide whether to ship it.

Two modes:

- ``static``: weights *and* activations 8-bit (QDQ format, per-channel signed int8 weights,
  unsigned uint8 activations: the U8S8 pairing that x86 int8 kernels take natively; signed
  activations ran a MobileNetV2 only 1.15× faster than float, uint8 ones 1.6–1.9×, on an
  AVX-512 VNNI CPU, see ``benchmarks/``). Activation ranges are calibrated on real training
  images after onnxruntime's pre-processing (shape inference and graph optimisation). The
  uint8 image input stays uint8; the normalisation in front of the first layer stays float.
  This is the mode that makes CNNs faster on CPU. On x86 CPUs without VNNI, U8S8 products
  can saturate; the accuracy check below runs on the machine that quantises.
- ``dynamic``: int8 weights, activations quantised on the fly at run time; smaller files,
  rarely faster for convolutional networks.

The int8 model is written beside ``model.onnx`` as ``model.int8.onnx`` and measured against
the float model through onnxruntime on the same labelled images. It becomes the bundle's
``default_model`` only if it loses at most ``max_drop`` of accuracy; the float model is always
kept. Backend-neutral: only numpy and onnxruntime (imported when called).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlcore.bundle.calibration import Calibration
from tlcore.bundle.layout import DATA_FILE, INPUT, MODEL_FILE, file_sha256
from tlcore.bundle.parity import parity_indices
from tlcore.errors import RecipeError, TlcoreError
from tlcore.runfolder import atomic_path
from tlcore.tasks import DEFAULT_TASK, Task, get_task

if TYPE_CHECKING:
    import onnxruntime

    from tlcore.data import Dataset
    from tlcore.interfaces import InputSpec

QUANTIZED_FILE = "model.int8.onnx"
MODES = ("static", "dynamic")
DEFAULT_MAX_DROP = 0.01
"""One point of accuracy."""
DEFAULT_CALIBRATION_IMAGES = 300

_CALIBRATION_BATCH = 16
_CALIBRATION_STRIDE = 1
"""Batches whose activations are held before their ranges are merged (min of minima, max of
maxima: exact). onnxruntime's ``CalibMaxIntermediateOutputs`` is not used: in onnxruntime
1.32 it discards each full chunk without computing its ranges, so only the last, partial chunk
counted, and an exact multiple failed with "No data is collected"."""
_EVAL_BATCH = 64


@dataclass(frozen=True)
class Quantized:
    """An int8 model and how it compares with the float model it was made from.

    Attributes:
        mode: ``static`` or ``dynamic``.
        path: the written file (``model.int8.onnx``).
        sha256: its sha256.
        float_accuracy: accuracy of ``model.onnx`` on the evaluation images (onnxruntime).
        accuracy: accuracy of the int8 model on the same images (onnxruntime).
        images: how many images were evaluated.
        evaluated_on: which images: ``validation``, ``training`` or a folder.
        max_drop: the largest accuracy loss accepted (a fraction).
        calibration_images: images the static ranges were calibrated on (0 for dynamic).
        calibrated_on: which images: ``training`` or a folder (``None`` for dynamic).
        metric: what ``float_accuracy`` and ``accuracy`` measure: the task's quality metric
            (``accuracy`` for classification, ``f1_micro`` for multi-label), a fraction.
    """

    mode: str
    path: Path
    sha256: str
    float_accuracy: float
    accuracy: float
    images: int
    evaluated_on: str
    max_drop: float
    calibration_images: int = 0
    calibrated_on: str | None = None
    metric: str = "accuracy"

    @property
    def drop(self) -> float:
        """Accuracy lost by quantising (negative when the int8 model did better)."""
        return self.float_accuracy - self.accuracy

    @property
    def accepted(self) -> bool:
        """Whether the loss is within :attr:`max_drop`, making this the default model."""
        return self.drop <= self.max_drop + 1e-12

    def to_dict(self) -> dict[str, Any]:
        """The ``quantized`` section of ``tlcore.json``."""
        calibration = (
            {"images": self.calibration_images, "data": self.calibrated_on}
            if self.mode == "static"
            else None
        )
        return {
            "mode": self.mode,
            "file": self.path.name,
            "sha256": self.sha256,
            "format": "QDQ" if self.mode == "static" else "integer-ops",
            "accuracy": {
                "float": self.float_accuracy,
                "quantized": self.accuracy,
                "drop": self.drop,
                "images": self.images,
                "data": self.evaluated_on,
                "metric": self.metric,
            },
            "max_accuracy_drop": self.max_drop,
            "accepted": self.accepted,
            "calibration": calibration,
        }

    def summary(self) -> str:
        """One line a person reads: both accuracies and the verdict."""
        line = (
            f"{self.mode} int8 {self.path.name}: {self.metric} {self.accuracy:.4f} vs float "
            f"{self.float_accuracy:.4f} on {self.images} {self.evaluated_on} images "
            f"(drop {self.drop * 100:+.2f} points, {self.max_drop * 100:g} allowed)"
        )
        if self.accepted:
            return f"{line}; it is the default model now"
        return f"{line}: too much lost, {MODEL_FILE} stays the default model"


def quantize_bundle(
    folder: str | Path,
    mode: str,
    *,
    calibration: Dataset,
    evaluation: Dataset,
    spec: InputSpec,
    labels: tuple[str, ...] | list[str],
    max_drop: float = DEFAULT_MAX_DROP,
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
    calibrated_on: str = "training",
    evaluated_on: str = "validation",
    task: Task | None = None,
    task_info: dict[str, Any] | None = None,
) -> Quantized:
    """Quantise ``folder/model.onnx`` into ``folder/model.int8.onnx`` and measure both.

    Args:
        folder: a bundle folder holding a verified ``model.onnx``.
        mode: ``static`` or ``dynamic``.
        calibration: images for the static ranges (the run's training set); up to
            ``calibration_images`` of them, spread evenly over the set, are used.
        evaluation: labelled images both models are measured on (the validation set).
        spec: what the model takes (a text model's with its tokenizer's path).
        labels: the bundle's class names, in output order; ``evaluation``'s classes are
            mapped onto them by name.
        max_drop: the largest accuracy loss (a fraction) for the int8 model to be accepted.
        calibration_images: how many calibration images to use.
        calibrated_on, evaluated_on: how ``tlcore.json`` names the two image sets.
        task, task_info: the bundle's task (default classification) and what it stored; both
            models are compared on its ``quality_metric`` (accuracy, micro F1).

    Returns:
        The written file, its checksum, both accuracies and the verdict (:attr:`accepted`).
        The caller records it with :func:`record`.

    Raises:
        TlcoreError: bad mode, no ``model.onnx``, a model with external data, no images to
            calibrate or evaluate on, or onnxruntime fails to quantise or to run the result.
        RecipeError: the task has no quality metric to check an int8 model by (regression).
    """
    task = task or get_task(DEFAULT_TASK)
    folder = Path(folder)
    source = _check_source(folder, mode, task)
    if not len(evaluation):
        raise TlcoreError(
            "no labelled images to measure the quantised model on", "give the run validation data"
        )
    samples = None
    if mode == "static":
        if not len(calibration):
            raise TlcoreError("no images to calibrate on", "give the run training data")
        rows = parity_indices(len(calibration), calibration_images)
        samples = calibration.inputs(rows, spec)
    target = folder / QUANTIZED_FILE
    with (
        tempfile.TemporaryDirectory(prefix=".quantize-", dir=folder) as work,
        atomic_path(target) as tmp,
    ):
        quantize_model(source, tmp, mode, samples, Path(work), spec.name)
        from tlcore.runtime import open_session

        float_acc, quant_acc = (
            quality(open_session(path), evaluation, spec, labels, task, task_info or {})
            for path in (source, tmp)
        )
        digest = file_sha256(tmp)
    return Quantized(
        mode=mode,
        path=target,
        sha256=digest,
        float_accuracy=float_acc,
        accuracy=quant_acc,
        images=len(evaluation),
        evaluated_on=evaluated_on,
        max_drop=float(max_drop),
        calibration_images=0 if samples is None else len(samples),
        calibrated_on=calibrated_on if samples is not None else None,
        metric=task.quality_metric,
    )


def _check_source(folder: Path, mode: str, task: Task) -> Path:
    """The float model to quantise, after checking that it can be."""
    if task.quality_metric is None:
        raise RecipeError(
            "export.quantize", mode, f"none: a {task.name} model cannot be quantised (no "
            "metric in [0, 1] to check the int8 model against the float one)",
        )
    if mode not in MODES:
        raise TlcoreError(f"unknown quantisation mode {mode!r}", f"use one of: {', '.join(MODES)}")
    source = folder / MODEL_FILE
    if not source.is_file():
        raise TlcoreError(f"no {MODEL_FILE} in {folder} to quantise", f"run 'tl export {folder}'")
    if (folder / DATA_FILE).is_file():
        raise TlcoreError(
            f"{source} keeps its tensors in {DATA_FILE} (over 2 GB); quantising such models "
            "is not supported yet",
            "ship the float model, or quantise it with onnxruntime.quantization yourself",
        )
    return source


def quantize_model(
    source: Path,
    target: Path,
    mode: str,
    samples: np.ndarray | None,
    work: Path,
    input_name: str = INPUT,
) -> None:
    """Write an int8 copy of the ONNX model ``source`` to ``target``.

    Args:
        source: a float model with one input named ``input_name`` (``images``, uint8 NHWC;
            ``input_ids``; ``vectors``).
        target: the file to write.
        mode: ``static`` (``samples`` required: calibration inputs) or ``dynamic``.
        work: a folder for intermediate files.
        input_name: the model's input.

    Raises:
        TlcoreError: onnxruntime's quantisation tools are missing or fail.
    """
    quantization = _require_quantization()
    prepared = work / "prepared.onnx"
    _pre_process(quantization, source, prepared)
    try:
        if mode == "static":
            assert samples is not None
            quantization.quantize_static(
                str(prepared),
                str(target),
                Calibration(samples, input_name, _CALIBRATION_BATCH),
                nodes_to_exclude=input_prefix(prepared, input_name),
                quant_format=quantization.QuantFormat.QDQ,
                per_channel=True,
                activation_type=quantization.QuantType.QUInt8,
                weight_type=quantization.QuantType.QInt8,
                calibrate_method=quantization.CalibrationMethod.MinMax,
                extra_options={"CalibStridedMinMax": _CALIBRATION_STRIDE},
            )
        else:
            quantization.quantize_dynamic(
                str(prepared), str(target), weight_type=quantization.QuantType.QInt8
            )
    except Exception as exc:  # onnxruntime's tools raise all kinds; all mean "cannot quantise"
        raise TlcoreError(
            f"onnxruntime cannot quantise {source} ({mode}): {type(exc).__name__}: {exc}",
            "ship the float model (export.quantize: none), or try the other mode",
        ) from None


_FIRST_LAYERS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


def input_prefix(model: Path, input_name: str = INPUT) -> list[str]:
    """Names of the nodes between the image input and the first layer with weights: the
    preprocessing (cast, channel order, normalisation). Static quantisation leaves them
    float: int8 ``QLinearMul``/``QLinearAdd`` with per-channel broadcasting took 40 % of a
    MobileNetV2's time, the float ones 1 %. Nodes without a name cannot be excluded."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    prefix: list[str] = []
    tensors = [input_name]
    while tensors:
        for node in consumers.get(tensors.pop(), []):
            if node.op_type in _FIRST_LAYERS or node.name in prefix or not node.name:
                continue
            prefix.append(node.name)
            tensors.extend(node.output)
    return prefix


def quality(
    session: onnxruntime.InferenceSession, dataset: Dataset, spec: InputSpec,
    labels: tuple[str, ...] | list[str], task: Task, task_info: dict[str, Any],
) -> float:
    """The task's quality metric (:meth:`~tlcore.tasks.Task.score`) of an onnxruntime
    session's output on a labelled dataset, whose labels are matched to ``labels`` by name."""
    truth = task.align(dataset.labels, dataset.class_names, labels)
    outputs = []
    for start in range(0, len(dataset), _EVAL_BATCH):
        rows = np.arange(start, min(start + _EVAL_BATCH, len(dataset)))
        outputs.append(session.run([task.output], {spec.name: dataset.inputs(rows, spec)})[0])
    return task.score(np.concatenate(outputs), truth, task_info)


def record(info: dict[str, Any], result: Quantized | None) -> None:
    """Write ``result`` into a ``tlcore.json`` dict: the ``quantized`` section and
    ``default_model`` (the int8 file when accepted, else ``model.onnx``). ``None`` removes
    both, for a bundle whose float model was written again without quantisation."""
    if result is None:
        info.pop("quantized", None)
        info.pop("default_model", None)
        return
    info["quantized"] = result.to_dict()
    info["default_model"] = result.path.name if result.accepted else MODEL_FILE


def discard(folder: str | Path, info: dict[str, Any]) -> None:
    """Forget a bundle's int8 model: delete the file and remove it from ``info``.

    Called whenever ``model.onnx`` is written again, so an int8 model made from an older
    float model is never shipped beside it.
    """
    section = info.get("quantized") or {}
    (Path(folder) / section.get("file", QUANTIZED_FILE)).unlink(missing_ok=True)
    record(info, None)


def _pre_process(quantization: Any, source: Path, target: Path) -> None:
    """onnxruntime's recommended pre-processing; without symbolic shape inference when that
    fails (it does not know every operator)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(source), str(target))
    except Exception:  # symbolic shape inference gives up on some graphs; ONNX's own suffices
        try:
            quant_pre_process(str(source), str(target), skip_symbolic_shape=True)
        except Exception as exc:
            raise TlcoreError(
                f"onnxruntime cannot prepare {source} for quantisation: {exc}",
                "ship the float model (export.quantize: none)",
            ) from None


def _require_quantization() -> Any:
    try:
        from onnxruntime import quantization
    except ImportError:
        raise TlcoreError(
            "onnxruntime (with onnxruntime.quantization) is not installed; it quantises "
            "the model",
            "pip install 'tlcore[onnx]'",
        ) from None
    return quantization
