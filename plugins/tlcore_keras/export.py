"""The raw ONNX export of a :class:`TransferModel`; the core's bundle layer finishes it.

The graph maps uint8 NHWC ``images`` (batch dimension dynamic) to the logits, preprocessing
included, at the opset the core asks for. It is converted from the TensorFlow graph of
``model.full`` in inference mode with ``tf2onnx.convert.from_function``; the output keeps
tf2onnx's name (``Identity:0``) and the core renames it to ``logits``. The core then checks the
result against the model on real samples at batch 1 and 8.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import tensorflow as tf

from tlcore.errors import TlcoreError
from tlcore.files import atomic_path
from tlcore_keras.model import TransferModel, float32_compute

ONNX_FILE = "model.onnx"
_LOGGERS = ("tf2onnx", "tensorflow")


def export_onnx(model: TransferModel, folder: Path, example: np.ndarray, opset: int) -> Path:
    """Write ``folder/model.onnx``, atomically: ``model.full`` in inference mode and float32,
    uint8 NHWC in, logits out; no collective operation (rank 0 exports alone).

    Args:
        model: the trained model.
        folder: where to write (created by the core).
        example: real uint8 NHWC images; only their size is used (the graph is converted from
            the input signature, not traced on values).
        opset: the ONNX opset to write.

    Raises:
        TlcoreError: ``tf2onnx`` is not installed, or cannot convert the model.
    """
    try:
        import tf2onnx
    except ImportError as exc:
        raise TlcoreError(
            f"the keras backend exports ONNX with tf2onnx, which cannot be imported ({exc})",
            "pip install 'tlcore[onnx]' -c constraints.txt, or set export.formats to [native]",
        ) from None
    height, width = model.preprocessing.size
    if example.ndim != 4 or tuple(example.shape[1:]) != (height, width, 3):
        raise TlcoreError(
            f"example images have shape {example.shape}, the model takes (N, {height}, {width}, 3)",
            "pass images at the backbone's input size",
        )
    signature = (tf.TensorSpec((None, height, width, 3), tf.uint8, name="images"),)
    inference = tf.function(lambda images: model.full(images, training=False))
    target = Path(folder) / ONNX_FILE
    try:
        # Float32 whatever the training precision: the layers' policies are switched while
        # tf2onnx traces the model, so the graph holds no bfloat16 or float16 tensor.
        with _quiet(), float32_compute(model), atomic_path(target) as temp:
            tf2onnx.convert.from_function(
                inference, input_signature=signature, opset=opset, output_path=str(temp)
            )
    except Exception as exc:  # tf2onnx raises many types for an unsupported op or opset
        raise TlcoreError.caused_by(
            f"tf2onnx cannot export the model to ONNX (opset {opset})", exc,
            "set export.formats to [native] to skip ONNX, or try another export.opset",
        ) from None
    return target


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence tf2onnx's progress logging (the core reports the export and its parity)."""
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
