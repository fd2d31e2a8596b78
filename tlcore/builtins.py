"""Built-in backbones every backend defines the same way, for demos and tests.

``simple_cnn``: three blocks of (conv 3x3 without bias, BatchNorm, ReLU, 2x2 max-pool) with
the widths below. There are no published weights for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from tlcore.interfaces import BackboneInfo, Preprocessing

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


@dataclass(frozen=True)
class BuiltinBackbone:
    """What every backend's ``builtin:<name>`` is, before any framework builds it."""

    preprocessing: Preprocessing  # its input size included
    params: int
    description: str


BUILTIN_BACKBONES = {
    "simple_cnn": BuiltinBackbone(
        SIMPLE_CNN_PREPROCESSING,
        simple_cnn_params(),
        "3 conv blocks (16/32/64 wide, BatchNorm) for small images; "
        "random init (no published weights)",
    ),
}


def builtin_infos() -> Iterator[BackboneInfo]:
    """One ``tl backbones`` entry per built-in backbone, for a backend that builds them all."""
    for name, builtin in BUILTIN_BACKBONES.items():
        size = builtin.preprocessing.size[0]
        yield BackboneInfo(f"builtin:{name}", size, builtin.params, builtin.description)
