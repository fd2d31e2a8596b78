"""The losses of the Keras backend's train step, as torch defines them (so that one recipe
trains the same on both backends): softmax cross-entropy with label smoothing and class
weights, on class indices or class probabilities; sigmoid cross-entropy; squared error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from tlcore.errors import TlcoreError


def smoothed_cross_entropy(
    logits: Any, labels: Any, smoothing: Any, weights: tuple[float, ...] | None = None
) -> Any:
    """Softmax cross-entropy exactly as torch's ``F.cross_entropy(weight=weights,
    label_smoothing=smoothing)`` defines it, for integer class indices ``(n,)`` or float
    class probabilities ``(n, K)`` (told apart by dtype, when the step is traced).

    Smoothing mixes ``smoothing / K`` into every class. With ``weights`` (one per class):
    for indices, the weighted mean ``sum_i w[y_i] l_i / sum_i w[y_i]``, the smoothing term
    ``sum_i sum_c w[c] (-log p_ic)`` divided by the same sum; for probabilities, the plain
    mean over the batch of ``sum_c w[c] q_ic (-log p_ic)``.
    """
    classes = tf.shape(logits)[1]
    k = tf.cast(classes, tf.float32)
    log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=1)
    w = None if weights is None else tf.constant(weights, dtype=tf.float32)
    if labels.dtype.is_floating:
        target = tf.cast(labels, tf.float32) * (1.0 - smoothing) + smoothing / k
        terms = -target * log_probs if w is None else -target * log_probs * w[None, :]
        return tf.reduce_mean(tf.reduce_sum(terms, axis=1))
    one_hot = tf.one_hot(labels, classes, dtype=tf.float32)
    if w is None:
        target = one_hot * (1.0 - smoothing) + smoothing / k
        return tf.reduce_mean(-tf.reduce_sum(target * log_probs, axis=1))
    picked = tf.gather(w, labels)  # each example's class weight
    nll = -tf.reduce_sum(one_hot * log_probs, axis=1)
    smooth = -tf.reduce_sum(log_probs * w[None, :], axis=1)
    total = tf.reduce_sum(picked)  # 0 only for an empty replica share, whose loss is unused
    return (
        (1.0 - smoothing) * tf.math.divide_no_nan(tf.reduce_sum(picked * nll), total)
        + smoothing / k * tf.math.divide_no_nan(tf.reduce_sum(smooth), total)
    )


def loss_named(
    name: str, class_weights: tuple[float, ...] | None = None
) -> Callable[[Any, Any, Any], Any]:
    """The loss ``name`` as ``fn(logits, targets, smoothing)``: ``cross_entropy`` (int class
    indices or class probabilities, label smoothing, ``class_weights``: see
    :func:`smoothed_cross_entropy`), ``binary_cross_entropy`` (multi-hot floats, on the
    logits) or ``mse`` (float values shaped like the logits); means over the batch and the
    outputs."""

    def weighted(logits: Any, y: Any, smoothing: Any) -> Any:
        return smoothed_cross_entropy(logits, y, smoothing, class_weights)

    def binary(logits: Any, y: Any, smoothing: Any) -> Any:
        z = tf.cast(logits, tf.float32)
        return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=z))

    def squared(logits: Any, y: Any, smoothing: Any) -> Any:
        return tf.reduce_mean(tf.square(tf.cast(logits, tf.float32) - y))

    losses = {
        "cross_entropy": weighted,
        "binary_cross_entropy": binary,
        "mse": squared,
    }
    if name not in losses:
        raise TlcoreError(
            f"the keras backend has no loss {name!r}", "valid: " + ", ".join(losses)
        )
    return losses[name]


def soft_targets(y: np.ndarray, loss_name: str) -> bool:
    """Whether ``cross_entropy`` targets are class probabilities ``(n, K)`` (mixed targets)
    rather than class indices: the train step keeps a trace for each kind."""
    array = np.asarray(y)
    return loss_name == "cross_entropy" and array.ndim == 2 and array.dtype.kind == "f"
