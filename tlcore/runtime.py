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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from tlcore import __version__
from tlcore.bundle import (
    INFO_FILE,
    INPUT,
    META_INPUT,
    META_LABELS,
    META_SCHEMA,
    MODEL_FILE,
    PROBABILITIES,
    SCHEMA_VERSION,
    file_sha256,
)
from tlcore.data import image_array, image_files, load_image
from tlcore.errors import DataError, TlcoreError
from tlcore.interfaces import Preprocessing

if TYPE_CHECKING:
    import onnxruntime

ImageInput = str | os.PathLike[str] | Image.Image | np.ndarray
"""One input to :meth:`Predictor.predict`: an image file or folder, a Pillow image, or a uint8
(or uint16) array ``(H, W)``, ``(H, W, C)`` or a batch ``(N, H, W, C)``."""

PREDICT_BATCH = 8
"""Images decoded and run together by default. onnxruntime's peak memory grows with the batch
(a float MobileNetV2 at 224 px takes about 10 MB per image, 32 images about 300 MB), while on
CPU larger batches gain little speed per image (``benchmarks/``, item 7)."""

OnError = Callable[[str, DataError], None]
"""What :meth:`Predictor.iter_predict` calls for an image it skips: its source and the error."""


@dataclass(frozen=True)
class Prediction:
    """The best classes for one image, most probable first.

    Attributes:
        source: the file, or ``<image i>`` / ``<array i>`` for in-memory input number ``i``.
        top: ``(label, probability)`` pairs, ``top_k`` of them.
    """

    source: str
    top: tuple[tuple[str, float], ...]

    @property
    def label(self) -> str:
        """The most probable class."""
        return self.top[0][0]

    @property
    def probability(self) -> float:
        """The probability of :attr:`label`."""
        return self.top[0][1]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, as ``tl predict --json`` prints it."""
        return {
            "source": self.source,
            "label": self.label,
            "probability": self.probability,
            "top": [{"label": label, "probability": p} for label, p in self.top],
        }


class Predictor:
    """One onnxruntime session on a bundle, ready to classify images.

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
        self.preprocessing = Preprocessing.from_dict(source["input"])

    def __repr__(self) -> str:
        return f"<Predictor {self.model_file}: {len(self.labels)} classes>"

    @property
    def size(self) -> tuple[int, int]:
        """The model's input size, ``(height, width)``."""
        return tuple(self.preprocessing.size)  # type: ignore[return-value]

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities, ``(N, classes)`` float32, of uint8 RGB NHWC images already at
        :attr:`size` (as :meth:`tlcore.data.Dataset.images` returns them)."""
        images = np.ascontiguousarray(images)
        if images.dtype != np.uint8 or images.shape[1:] != (*self.size, 3):
            raise DataError(
                f"the model takes uint8 images of shape (N, {self.size[0]}, {self.size[1]}, 3); "
                f"got {images.dtype} {images.shape}",
                "use predict(), which decodes and resizes any image",
            )
        return self.session.run([PROBABILITIES], {INPUT: images})[0]

    def predict(
        self,
        inputs: ImageInput | Iterable[ImageInput],
        top_k: int = 1,
        batch_size: int = PREDICT_BATCH,
        on_error: OnError | None = None,
    ) -> list[Prediction]:
        """Classify images; see :meth:`iter_predict`, which this collects into a list."""
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
        """Classify images, decoding and running ``batch_size`` of them at a time.

        Args:
            inputs: one input or many: image files, folders (every image under them, sorted),
                Pillow images, arrays ``(H, W)``, ``(H, W, C)`` or ``(N, H, W, C)`` (uint8, or
                uint16 scaled down like 16-bit PNGs). Grayscale, palette, alpha and 16-bit
                images become RGB, and each is resized to the model's input size, as in
                training.
            top_k: how many classes to give per image (at most the number of classes).
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
        items = _expand(inputs)
        for start in range(0, len(items), batch_size):
            sources, decoded = [], []
            for source, item in items[start : start + batch_size]:
                try:
                    decoded.append(_decode(item, self.size))
                except DataError as exc:
                    if on_error is None:
                        raise
                    on_error(source, exc)
                    continue
                sources.append(source)
            if not decoded:
                continue
            for source, row in zip(sources, self.probabilities(np.stack(decoded)), strict=True):
                best = np.argsort(-row, kind="stable")[:k]
                yield Prediction(source, tuple((self.labels[i], float(row[i])) for i in best))


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
    return {"labels": json.loads(meta[META_LABELS]), "input": json.loads(meta[META_INPUT])}


def _expand(inputs: ImageInput | Iterable[ImageInput]) -> list[tuple[str, Any]]:
    """``(source name, item)`` per image: folders listed, batches of arrays split."""
    if isinstance(inputs, str | os.PathLike | Image.Image | np.ndarray):
        inputs = [inputs]
    items: list[tuple[str, Any]] = []
    for index, item in enumerate(inputs):
        if isinstance(item, Image.Image):
            items.append((getattr(item, "filename", "") or f"<image {index}>", item))
        elif isinstance(item, np.ndarray):
            batch = item if item.ndim == 4 else [item]
            items.extend((f"<array {index}>" if item.ndim < 4 else f"<array {index}.{i}>", a)
                         for i, a in enumerate(batch))
        else:
            items.extend((str(path), path) for path in _files(Path(item)))
    return items


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        found = image_files(path)
        if not found:
            raise DataError(
                f"no images in folder {path}", "it needs .jpg/.jpeg/.png/.bmp/.webp files"
            )
        return found
    if not path.exists():
        raise DataError(f"image file not found: {path}", "check the path")
    return [path]


def _decode(item: Any, size: tuple[int, int]) -> np.ndarray:
    if isinstance(item, Path):
        return load_image(item, size)
    if isinstance(item, Image.Image):
        return image_array(item, size)
    if item.dtype not in (np.uint8, np.uint16) or item.ndim not in (2, 3) or (
        item.ndim == 3 and item.shape[-1] not in (1, 2, 3, 4)
    ):
        raise DataError(
            f"an image array must be uint8 (H, W), (H, W, C) or (N, H, W, C) with 1 to 4 "
            f"channels; got {item.dtype} {item.shape}",
            "convert it: np.clip(x * 255, 0, 255).astype(np.uint8) for floats in [0, 1]",
        )
    if item.dtype == np.uint16:  # like a 16-bit PNG: 0..65535 to 0..255
        item = np.clip(np.rint(item / 257.0), 0, 255).astype(np.uint8)
    if item.ndim == 3 and item.shape[-1] <= 2:  # gray, or gray and alpha
        item = item[..., 0]
    return image_array(Image.fromarray(item), size)
