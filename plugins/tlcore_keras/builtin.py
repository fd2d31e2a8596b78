"""Built-in backbones: ``builtin:simple_cnn`` here, EfficientNet-Lite in
:mod:`tlcore_keras.efficientnet_lite`.

The same architectures as the torch backend's (:mod:`tlcore.builtins`), so the parameter counts
agree. ``simple_cnn`` has no published weights: ``weights=pretrained`` and ``weights=none`` both
give a random initialisation (seeded through ``tl_seed``). Make your own "pretrained"
checkpoint by training on one task and pass its ``native/model.keras`` (or
``native/weights.npz``) as ``weights=<path>`` for the next one.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import keras

from tlcore.builtins import SIMPLE_CNN_WIDTHS
from tlcore.efficientnet_lite import VARIANTS
from tlcore_keras import efficientnet_lite

# torch's BatchNorm defaults (momentum 0.1 there is 0.9 here), so both backends train alike.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def simple_cnn(size: int, widths: tuple[int, ...] = SIMPLE_CNN_WIDTHS) -> keras.Model:
    """Three conv blocks (conv 3x3 without bias, BatchNorm, ReLU, 2x2 max-pool).

    Maps ``(N, size, size, 3)`` to a ``(N, size / 8, size / 8, widths[-1])`` feature map. Its
    layers are named ``block_<i>_conv`` / ``_bn`` / ``_relu`` / ``_pool``, so its blocks are
    ``block_0`` ... ``block_2``.
    """
    inputs = keras.Input((size, size, 3), name="pixels")
    x = inputs
    for i, width in enumerate(widths):
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"block_{i}_conv")(x)
        x = keras.layers.BatchNormalization(
            momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"block_{i}_bn"
        )(x)
        x = keras.layers.ReLU(name=f"block_{i}_relu")(x)
        x = keras.layers.MaxPooling2D(2, name=f"block_{i}_pool")(x)
    return keras.Model(inputs, x, name="simple_cnn")


BUILDERS: dict[str, Callable[[int, bool], keras.Model]] = {
    "simple_cnn": lambda size, pretrained: simple_cnn(size),
    **{name: partial(efficientnet_lite.build, name) for name in VARIANTS},
}
"""``builtin:<name>`` → a builder taking the input size and ``pretrained`` (load the published
weights)."""
