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

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tlcore.bundle.layout import EMBEDDINGS, PROBABILITIES
from tlcore.bundle.read import open_bundle, open_session
from tlcore.bundle.tokenizer import check_tokenizer, resolve_tokenizer
from tlcore.bundle.tta import META_TTA, tta_choice, view_average
from tlcore.errors import DataError, TlcoreError
from tlcore.inputs import modality
from tlcore.inputs.image import ImageInput
from tlcore.tasks import Prediction

__all__ = ["PREDICT_BATCH", "OnError", "Prediction", "Predictor", "open_session"]

PREDICT_BATCH = 8
"""Images decoded and run together by default. onnxruntime's peak memory grows with the batch
(a float MobileNetV2 at 224 px takes about 10 MB per image, 32 images about 300 MB), while on
CPU larger batches gain little speed per image (``benchmarks/``, item 7)."""

OnError = Callable[[str, DataError], None]
"""What :meth:`Predictor.iter_predict` calls for an image it skips: its source and the error."""


class Predictor:
    """One onnxruntime session on a bundle, ready to predict: classes, labels or values, as
    the model's task (its ``tlcore.task`` metadata; a model without one is a classifier)
    decodes its output.

    The model's metadata is the source of its labels, input spec and task; the bundle is
    opened by :func:`tlcore.bundle.read.open_bundle`, which refuses it unless
    ``tlcore.json`` (when there is one, and always in a run folder) records the model's
    sha256 and says the same as the model.

    Args:
        path: a bundle folder (``model.onnx`` with its ``tlcore.json``), or a ``.onnx`` file
            written by tlcore (checked against the ``tlcore.json`` beside it, if any).
        threads: onnxruntime intra-op threads (default: onnxruntime's choice).
        model: which model file of a bundle folder to open, e.g. ``model.onnx`` for the
            float model; default: the bundle's ``default_model`` (the int8 model when its
            quantisation was accepted), else ``model.onnx``.
        tta: test-time augmentation: average the output over views of each image, ``hflip``
            (the image and its mirror image; also ``True``), ``crops`` (and its four corner
            crops) or ``hflip_crops`` (those and their mirror images). A model exported with
            ``export.tta`` does its own itself (and always); for another, the predictor runs
            it once per view (:mod:`tlcore.bundle.tta`). :attr:`tta` and
            :attr:`tta_in_model` say what is done.

    Raises:
        TlcoreError: no model there; the model file does not match the sha256 recorded in
            ``tlcore.json``; ``tlcore.json`` is unreadable, missing from a run folder, or
            disagrees with the model (labels, input, task); the bundle needs a newer tlcore;
            the file is not a tlcore model or its metadata does not fit its graph;
            onnxruntime is missing or cannot load it; ``tta`` is unknown, asked of a model
            that is no image model, or other than what the model does itself.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        threads: int | None = None,
        model: str | None = None,
        tta: bool | str = False,
    ) -> None:
        self.path = Path(path)
        bundle = open_bundle(self.path, model, threads)
        self.model_file, self.info, self.session = bundle.model_file, bundle.info, bundle.session
        self.labels: tuple[str, ...] = bundle.description.labels
        # A text model's tokenizer is the file beside the model (checked by its sha256).
        check_tokenizer(self.info, self.model_file.parent)
        self.input_spec = resolve_tokenizer(bundle.description.input, self.model_file.parent)
        self.inputs = modality(self.input_spec)
        self.preprocessing = self.input_spec.preprocessing
        self.task, self.task_info = bundle.task, bundle.task_info
        meta = self.session.get_modelmeta().custom_metadata_map
        in_model, asked = meta.get(META_TTA, "none"), tta_choice(tta)
        self.tta_in_model = in_model != "none"
        if asked != "none" and self.input_spec.modality != "image":
            raise TlcoreError(
                f"test-time augmentation takes views of images; this is a "
                f"{self.input_spec.modality} model", "leave out --tta",
            )
        if self.tta_in_model and asked not in ("none", in_model):
            raise TlcoreError(
                f"{self.model_file.name} averages over its {in_model} views itself; "
                f"{asked} would average the averages",
                f"leave out --tta (or ask for {in_model}), or export the run again with "
                f"export.tta: {asked}",
            )
        self.tta = in_model if self.tta_in_model else asked

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
        regression's values), of inputs already at :attr:`size`; with :attr:`tta`, the mean
        over its views of each image."""
        batch = self.inputs.check(images, self.input_spec)
        if self.tta != "none" and not self.tta_in_model:
            return view_average(self._run, batch, self.tta)
        return self._run(batch)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.task.output], {self.input_spec.name: batch})[0]

    @property
    def has_embeddings(self) -> bool:
        """Whether the model also gives its pooled backbone features (``embeddings``)."""
        return EMBEDDINGS in {output.name for output in self.session.get_outputs()}

    def embeddings(self, inputs: np.ndarray) -> np.ndarray:
        """The backbone's pooled features, float32 ``(N, features)``, of inputs already as the
        model takes them (:meth:`outputs`).

        Raises:
            TlcoreError: the model has no ``embeddings`` output (exported by an older tlcore
                or a backend that does not give them).
        """
        if not self.has_embeddings:
            raise TlcoreError(
                f"{self.model_file} has no embeddings output",
                "export it again with this tlcore ('tl export RUN'), or embed with the "
                "native model ('tl embed --native')",
            )
        batch = self.inputs.check(inputs, self.input_spec)
        return self.session.run([EMBEDDINGS], {self.input_spec.name: batch})[0]

    def decoded(
        self, inputs: Any, batch_size: int = PREDICT_BATCH, on_error: OnError | None = None
    ) -> Iterator[tuple[list[str], np.ndarray]]:
        """``(sources, batch)``: what the user passed (files, folders, texts, arrays), decoded
        as the model takes it, ``batch_size`` at a time; see :meth:`iter_predict`."""
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
            if decoded:
                yield sources, np.stack(decoded)

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
        for sources, batch in self.decoded(inputs, batch_size, on_error):
            for source, row in zip(sources, self.outputs(batch), strict=True):
                yield self.task.decode(source, row, self.labels, self.task_info, k)
