"""Predict with a bundle's ``model.onnx`` on onnxruntime: numpy, Pillow and onnxruntime only.

Nothing on this path imports a training framework; a machine that runs :class:`Predictor`
(and ``tl predict``) needs neither PyTorch nor TensorFlow. Images are decoded and resized by
:mod:`tlcore.data`, exactly as in training.

Example:
    >>> predictor = Predictor("runs/demo")                             # doctest: +SKIP
    >>> predictor.predict(["cat.jpg"], top_k=2)[0].label               # doctest: +SKIP
    'cat'
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlcore import __version__
from tlcore.bundle.layout import (
    INFO_FILE,
    META_INPUT,
    META_LABELS,
    META_SCHEMA,
    META_TASK,
    MODEL_FILE,
    PROBABILITIES,
    SCHEMA_VERSION,
    file_sha256,
)
from tlcore.errors import DataError, TlcoreError
from tlcore.inputs import modality
from tlcore.inputs.image import ImageInput
from tlcore.interfaces import InputSpec
from tlcore.tasks import Prediction, task_from_bundle

__all__ = ["PREDICT_BATCH", "OnError", "Prediction", "Predictor", "open_session"]

if TYPE_CHECKING:
    import onnxruntime

PREDICT_BATCH = 8
"""Images decoded and run together by default. onnxruntime's peak memory grows with the batch
(a float MobileNetV2 at 224 px takes about 10 MB per image, 32 images about 300 MB), while on
CPU larger batches gain little speed per image (``benchmarks/``, item 7)."""

OnError = Callable[[str, DataError], None]
"""What :meth:`Predictor.iter_predict` calls for an image it skips: its source and the error."""


class Predictor:
    """One onnxruntime session on a bundle, ready to predict: classes, labels or values, as
    the bundle's task (``tlcore.json``'s ``task``, or the model's ``tlcore.task`` metadata; a
    bundle without one is a classifier) decodes its output.

    Args:
        path: a bundle folder (``model.onnx`` with its ``tlcore.json``), or a bare ``.onnx``
            file written by tlcore (labels and input spec come from its metadata).
        threads: onnxruntime intra-op threads (default: onnxruntime's choice).
        model: which model file of a bundle folder to open, e.g. ``model.onnx`` for the
            float model; default: the bundle's ``default_model`` (the int8 model when its
            quantisation was accepted), else ``model.onnx``.

    Raises:
        TlcoreError: no model there; the model file does not match the sha256 recorded in
            ``tlcore.json``; the bundle needs a newer tlcore; the file is not a tlcore model;
            onnxruntime is missing or cannot load it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        threads: int | None = None,
        model: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.model_file, self.info = _locate(self.path, model)
        if self.info:
            _check_schema(self.info.get("schema_version"), self.path / INFO_FILE)
            _check_sha256(self.model_file, self.info)
        self.session = open_session(self.model_file, threads)
        meta = self.session.get_modelmeta().custom_metadata_map
        if not self.info:
            _check_schema(meta.get(META_SCHEMA), self.model_file)
        source: dict[str, Any] = self.info or _from_metadata(meta, self.model_file)
        self.labels: tuple[str, ...] = tuple(source["labels"])
        self.input_spec = InputSpec.from_dict(source["input"])
        self.inputs = modality(self.input_spec)
        self.preprocessing = self.input_spec.preprocessing
        self.task, self.task_info = task_from_bundle(source.get("task"))

    def __repr__(self) -> str:
        return f"<Predictor {self.model_file}: {self.task.name}, {len(self.labels)} outputs>"

    @property
    def size(self) -> tuple[int, int]:
        """The model's input size, ``(height, width)``."""
        return self.input_spec.size

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Class (or label) probabilities, ``(N, classes)`` float32, of uint8 RGB NHWC images
        already at :attr:`size` (as :meth:`tlcore.data.Dataset.images` returns them).

        Raises:
            TlcoreError: the model gives no probabilities (a regression: see :meth:`outputs`).
        """
        if self.task.output != PROBABILITIES:
            raise TlcoreError(
                f"a {self.task.name} model gives {self.task.output}, not probabilities",
                "use Predictor.outputs() or predict()",
            )
        return self.outputs(images)

    def outputs(self, images: np.ndarray) -> np.ndarray:
        """The task's output, float32 ``(N, outputs)`` (class or label probabilities, a
        regression's values), of inputs already at :attr:`size`."""
        batch = self.inputs.check(images, self.input_spec)
        return self.session.run([self.task.output], {self.input_spec.name: batch})[0]

    def predict(
        self,
        inputs: ImageInput | Iterable[ImageInput],
        top_k: int = 1,
        batch_size: int = PREDICT_BATCH,
        on_error: OnError | None = None,
    ) -> list[Prediction]:
        """Predict for images; see :meth:`iter_predict`, which this collects into a list."""
        return list(
            self.iter_predict(inputs, top_k=top_k, batch_size=batch_size, on_error=on_error)
        )

    def iter_predict(
        self,
        inputs: ImageInput | Iterable[ImageInput],
        top_k: int = 1,
        batch_size: int = PREDICT_BATCH,
        on_error: OnError | None = None,
    ) -> Iterator[Prediction]:
        """Predict for images, decoding and running ``batch_size`` of them at a time: the
        ``top_k`` classes of a classifier, every label over its threshold of a multi-label
        model, the value of a regression.

        Args:
            inputs: one input or many: image files, folders (every image under them, sorted),
                Pillow images, arrays ``(H, W)``, ``(H, W, C)`` or ``(N, H, W, C)`` (uint8, or
                uint16 scaled down like 16-bit PNGs). Grayscale, palette, alpha and 16-bit
                images become RGB, and each is resized to the model's input size, as in
                training.
            top_k: how many classes to give per image (at most the number of classes;
                classification only).
            batch_size: images decoded and run together; peak memory grows with it (see
                :data:`PREDICT_BATCH`).
            on_error: called with the source and the error of an image that cannot be
                decoded, which is then skipped; without it that error is raised.

        Yields:
            One :class:`Prediction` per image, in input order.

        Raises:
            DataError: a path is missing, a folder holds no images, a file cannot be decoded
                (names the file), or an array is not an image.
        """
        if top_k < 1 or batch_size < 1:
            raise TlcoreError(
                f"top_k and batch_size must be at least 1; got {top_k} and {batch_size}", ""
            )
        k = min(top_k, len(self.labels))
        items = self.inputs.expand(inputs)
        for start in range(0, len(items), batch_size):
            sources, decoded = [], []
            for source, item in items[start : start + batch_size]:
                try:
                    decoded.append(self.inputs.decode(item, self.input_spec))
                except DataError as exc:
                    if on_error is None:
                        raise
                    on_error(source, exc)
                    continue
                sources.append(source)
            if not decoded:
                continue
            for source, row in zip(sources, self.outputs(np.stack(decoded)), strict=True):
                yield self.task.decode(source, row, self.labels, self.task_info, k)


def open_session(
    path: str | os.PathLike[str], threads: int | None = None
) -> onnxruntime.InferenceSession:
    """An onnxruntime CPU session on ``path`` with every graph optimisation on.

    Raises:
        TlcoreError: onnxruntime is not installed or cannot load the file.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise TlcoreError(
            "onnxruntime is not installed; it runs the bundle's model.onnx",
            "pip install onnxruntime (or 'tlcore[onnx]')",
        ) from None
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: optimisation notes are not the user's concern
    if threads:
        options.intra_op_num_threads = int(threads)
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own error types; all mean "cannot load"
        raise TlcoreError(
            f"onnxruntime cannot load {path}: {exc}", "is it a complete, valid ONNX file?"
        ) from None


def _locate(path: Path, name: str | None = None) -> tuple[Path, dict[str, Any]]:
    """The model file and the bundle's ``tlcore.json`` (empty for a bare ``.onnx`` file).

    In a folder the file is ``name``, else the bundle's ``default_model``, else ``model.onnx``.
    """
    if path.is_file():
        return path, {}
    if not path.is_dir():
        raise TlcoreError(f"no bundle at {path}", "pass a run folder or a model.onnx file")
    info_file = path / INFO_FILE
    info = json.loads(info_file.read_text(encoding="utf-8")) if info_file.is_file() else {}
    chosen = name or info.get("default_model") or MODEL_FILE
    if Path(chosen).name != chosen:
        raise TlcoreError(
            f"model {chosen!r} is not a file name inside the bundle",
            f"name a file in {path}, e.g. {MODEL_FILE}",
        )
    model = path / chosen
    if not model.is_file():
        raise TlcoreError(
            f"no {chosen} in {path}",
            f"export it with 'tl export {path}', or pass a folder that holds one",
        )
    return model, info


def _check_schema(value: Any, where: Path) -> None:
    version = int(value) if value is not None else None
    if version is not None and version > SCHEMA_VERSION:
        raise TlcoreError(
            f"{where} uses bundle schema version {version}; tlcore {__version__} reads up to "
            f"version {SCHEMA_VERSION}",
            f"upgrade tlcore to a release that reads bundle schema version {version}",
        )


def _check_sha256(model: Path, info: dict[str, Any]) -> None:
    """Verify ``model`` (and its external data) against the ``tlcore.json`` section that
    records it: ``onnx`` for the float model, ``quantized`` for the int8 one."""
    sections = [info.get(key) or {} for key in ("onnx", "quantized")]
    section = next((s for s in sections if s.get("file", MODEL_FILE) == model.name), {})
    if not section.get("sha256"):
        raise TlcoreError(
            f"{INFO_FILE} beside {model} records no {model.name}, so it cannot be verified",
            f"export it again with 'tl export {model.parent}'",
        )
    files = {model: section["sha256"]}
    if section.get("data_sha256"):
        files[model.parent / section["data_file"]] = section["data_sha256"]
    for path, recorded in files.items():
        actual = file_sha256(path) if path.is_file() else "missing"
        if actual != recorded:
            raise TlcoreError(
                f"{path} does not match the sha256 recorded in {INFO_FILE} "
                f"(recorded {recorded[:12]}…, file {actual[:12]}…)",
                f"the file was changed or damaged after export: restore it, or export it "
                f"again with 'tl export {model.parent}'",
            )


def _from_metadata(meta: dict[str, str], model: Path) -> dict[str, Any]:
    if META_LABELS not in meta or META_INPUT not in meta:
        raise TlcoreError(
            f"{model} is not a tlcore model (no {META_LABELS} / {META_INPUT} metadata)",
            "pass a model.onnx that tlcore exported, or its bundle folder",
        )
    task = json.loads(meta[META_TASK]) if META_TASK in meta else None
    return {
        "labels": json.loads(meta[META_LABELS]),
        "input": json.loads(meta[META_INPUT]),
        "task": task,
    }






