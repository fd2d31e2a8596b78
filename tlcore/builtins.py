"""Built-in backbones every backend defines the same way, for demos and tests.

``simple_cnn``: three blocks of (conv 3x3 without bias, BatchNorm, ReLU, 2x2 max-pool) with
the widths below. There are no published weights for it.
"""

from __future__ import annotations

from tlcore.interfaces import Preprocessing

SIMPLE_CNN_WIDTHS = (16, 32, 64)
SIMPLE_CNN_PREPROCESSING = Preprocessing(
    size=(32, 32), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), scale=1 / 255
)


def simple_cnn_params(widths: tuple[int, ...] = SIMPLE_CNN_WIDTHS, in_channels: int = 3) -> int:
    """Parameters of ``simple_cnn``: conv kernels plus BatchNorm scale and shift per block."""
    total, previous = 0, in_channels
    for width in widths:
        total += previous * width * 9 + 2 * width
        previous = width
    return total
