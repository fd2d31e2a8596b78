"""Numpy references the suite compares backends against: the loss and the head."""

from __future__ import annotations

import math

import numpy as np


def cross_entropy(logits: np.ndarray, y: np.ndarray, smoothing: float = 0.0) -> float:
    """Mean cross-entropy of integer labels ``y`` under ``logits``, with label smoothing.

    Example:
        >>> round(cross_entropy(np.zeros((2, 4)), np.array([0, 3])), 4)
        1.3863
    """
    z = logits.astype(np.float64)
    z = z - z.max(1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(1, keepdims=True))
    nll = -log_p[np.arange(len(y)), y].mean()
    return float((1 - smoothing) * nll + smoothing * -log_p.mean())


def binary_cross_entropy(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean sigmoid cross-entropy of multi-hot ``y`` under ``logits``, over images and outputs.

    Example:
        >>> round(binary_cross_entropy(np.zeros((2, 3)), np.ones((2, 3))), 4)
        0.6931
    """
    z = logits.astype(np.float64)
    p = 1 / (1 + np.exp(-z))
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def mean_squared_error(outputs: np.ndarray, y: np.ndarray) -> float:
    """Mean squared error of ``outputs`` against ``y`` (same shape), over images and outputs.

    Example:
        >>> mean_squared_error(np.zeros((2, 1)), np.array([[1.0], [3.0]]))
        5.0
    """
    return float(((outputs.astype(np.float64) - y) ** 2).mean())


def reference_head(features: np.ndarray, head: dict[str, np.ndarray], activation: str):
    """The head in numpy: its dense layers chained by their shapes, in inference mode.

    Kernels are the 2-d arrays (either orientation), biases the 1-d ones; use widths that make
    the chain unambiguous (each layer's width different).
    """
    kernels = [v for v in head.values() if v.ndim == 2]
    biases = [v for v in head.values() if v.ndim == 1]
    z = features.astype(np.float64)
    while kernels:
        (kernel,) = [k for k in kernels if z.shape[1] in k.shape]
        kernels = [k for k in kernels if k is not kernel]
        kernel = kernel if kernel.shape[0] == z.shape[1] else kernel.T
        (bias,) = [b for b in biases if len(b) == kernel.shape[1]]
        z = z @ kernel + bias
        if kernels and activation == "relu":
            z = np.maximum(z, 0)
        elif kernels:
            z = 0.5 * z * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))
    return z
