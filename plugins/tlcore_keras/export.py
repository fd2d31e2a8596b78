"""The raw ONNX export of a :class:`TransferModel`; the core's bundle layer finishes it.

The graph has one input, named and typed as the model's input spec (uint8 NHWC ``images``,
int64 ``input_ids`` ``(batch, max_length)`` or float32 ``vectors`` ``(batch, features)``;
the batch dimension dynamic), and two outputs: ``logits`` (what ``tl_eval_step`` gives) and
``embeddings`` (the pooled features, what ``tl_extract_features`` gives), preprocessing
included, at the opset the core asks for. It is converted from the TensorFlow graph of
``model.features`` and ``model.classifier`` in inference mode with
``tf2onnx.convert.from_function``, and tf2onnx's output names (``Identity:0``, ...) are renamed.
The core then checks the result against the model on real samples at batch 1 and 8.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from tlcore.errors import TlcoreError
from tlcore.files import atomic_path
from tlcore_keras.model import TransferModel, float32_compute

ONNX_FILE = "model.onnx"
OUTPUTS = ("logits", "embeddings")
_LOGGERS = ("tf2onnx", "tensorflow")


def export_onnx(model: TransferModel, folder: Path, example: np.ndarray, opset: int) -> Path:
    """Write ``folder/model.onnx``, atomically: the model in inference mode and float32, its
    input in, ``logits`` and ``embeddings`` out; no collective operation (rank 0 exports
    alone).

    Args:
        model: the trained model.
        folder: where to write (created by the core).
        example: real samples of the model's input; only their shape is used (the graph is
            converted from the input signature, not traced on values).
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
    spec = model.inputs
    if example.ndim != 1 + len(spec.shape) or tuple(example.shape[1:]) != tuple(spec.shape):
        raise TlcoreError(
            f"example inputs have shape {example.shape}, the model takes (N, "
            + ", ".join(map(str, spec.shape)) + ")",
            "pass real samples of the model's input",
        )
    signature = (tf.TensorSpec((None, *spec.shape), tf.as_dtype(spec.dtype), name=spec.name),)

    def inference(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        pooled = model.features(x, training=False)
        return model.classifier(pooled, training=False), tf.cast(pooled, tf.float32)

    target = Path(folder) / ONNX_FILE
    try:
        # Float32 whatever the training precision: the layers' policies are switched while
        # tf2onnx traces the model, so the graph holds no bfloat16 or float16 tensor.
        with _quiet(), float32_compute(model), atomic_path(target) as temp:
            proto, _ = tf2onnx.convert.from_function(
                tf.function(inference), input_signature=signature, opset=opset
            )
            _name_outputs(proto, OUTPUTS)
            temp.write_bytes(proto.SerializeToString())
    except Exception as exc:  # tf2onnx raises many types for an unsupported op or opset
        raise TlcoreError.caused_by(
            f"tf2onnx cannot export the model to ONNX (opset {opset})", exc,
            "set export.formats to [native] to skip ONNX, or try another export.opset",
        ) from None
    return target


def _name_outputs(proto: Any, names: tuple[str, ...]) -> None:
    """Rename the graph's outputs, in order, to ``names`` (wherever a node uses them)."""
    graph = proto.graph
    renames = {value.name: name for value, name in zip(graph.output, names, strict=True)}
    for node in graph.node:
        node.output[:] = [renames.get(n, n) for n in node.output]
        node.input[:] = [renames.get(n, n) for n in node.input]
    for value in graph.output:
        value.name = renames[value.name]


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
