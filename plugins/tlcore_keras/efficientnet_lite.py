"""EfficientNet-Lite in Keras, built from :mod:`tlcore.efficientnet_lite`'s description.

Layer names are the core's torch module paths with ``.`` replaced by ``_`` (``stem_conv``,
``blocks_3_depthwise_bn``, ``top_conv``), so the core's ImageNet arrays load by name. Keras'
``padding="same"`` is TensorFlow's (the odd row and column of a stride-2 layer padded at the
bottom and right), which is what the published weights were trained with.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from tlcore import efficientnet_lite as spec
from tlcore.errors import TlcoreError


def keras_name(torch_name: str) -> str:
    """The Keras layer name of a core (torch) layer name: ``blocks.3.expand.conv`` →
    ``blocks_3_expand_conv``."""
    return torch_name.replace(".", "_")


def _conv_bn(x: Any, prefix: str, width: int, kernel: int, stride: int = 1,
             depthwise: bool = False, act: bool = True,
             momentum: float = spec.BN_MOMENTUM) -> Any:
    """Convolution (bias-free, "same" padding), BatchNorm with TensorFlow's epsilon and the
    given momentum, optional ReLU6; layers named ``<prefix>_conv`` / ``_bn`` / ``_relu``."""
    if depthwise:
        conv = keras.layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False,
                                            name=f"{prefix}_conv")
    else:
        conv = keras.layers.Conv2D(width, kernel, stride, padding="same", use_bias=False,
                                   name=f"{prefix}_conv")
    x = conv(x)
    x = keras.layers.BatchNormalization(momentum=momentum, epsilon=spec.BN_EPSILON,
                                        name=f"{prefix}_bn")(x)
    return keras.layers.ReLU(6.0, name=f"{prefix}_relu")(x) if act else x


def network(variant: spec.Variant, size: int, momentum: float = spec.BN_MOMENTUM) -> keras.Model:
    """The backbone at random initialisation: normalised ``(N, size, size, 3)`` images to a
    ``(N, size / 32, size / 32, 1280)`` feature map.

    ``tlcore_blocks`` tells ``last_n`` freezing what to count: the stem, each MBConv block and
    the top convolution, as name prefixes (``blocks_1`` does not own ``blocks_10_*``, since a
    prefix must be followed by ``_``).
    """
    inputs = keras.Input((size, size, 3), name="pixels")
    x = _conv_bn(inputs, "stem", spec.STEM_WIDTH, 3, 2, momentum=momentum)
    for i, block in enumerate(spec.blocks(variant)):
        prefix = f"blocks_{i}"
        y = x
        if block.expand != 1:
            y = _conv_bn(y, f"{prefix}_expand", block.hidden, 1, momentum=momentum)
        y = _conv_bn(y, f"{prefix}_depthwise", block.hidden, block.kernel, block.stride,
                     depthwise=True, momentum=momentum)
        y = _conv_bn(y, f"{prefix}_project", block.out_width, 1, act=False, momentum=momentum)
        x = keras.layers.Add(name=f"{prefix}_add")([x, y]) if block.residual else y
    x = _conv_bn(x, "top", spec.TOP_WIDTH, 1, momentum=momentum)
    model = keras.Model(inputs, x, name=variant.name)
    model.tlcore_blocks = [keras_name(b) for b in spec.block_names(variant)]
    return model


def _keras_arrays(kind: str, arrays: dict[str, np.ndarray], name: str) -> list[np.ndarray]:
    """One layer's weights in Keras' order and layout, from the core's torch-layout arrays."""
    if kind == "bn":
        return [arrays[f"{name}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]
    kernel = arrays[f"{name}.weight"]
    # torch (out, in, kh, kw) → Keras (kh, kw, in, out); a depthwise kernel is torch's
    # (channels, 1, kh, kw) and Keras' (kh, kw, channels, multiplier 1).
    axes = (2, 3, 0, 1) if kind == "depthwise" else (2, 3, 1, 0)
    return [np.ascontiguousarray(kernel.transpose(axes))]


def load_imagenet(model: keras.Model, name: str, arrays: dict[str, np.ndarray]) -> None:
    """Set every weighted layer of ``model`` (built by :func:`network` for variant ``name``)
    from the core's ImageNet ``arrays``; the ImageNet classifier is not part of the backbone.

    Raises:
        TlcoreError: a layer of the model gets no weights, or their shapes do not fit.
    """
    loaded = set()
    for torch_name, kind in spec.layers(spec.variant(name)):
        layer_name = keras_name(torch_name)
        try:
            values = _keras_arrays(kind, arrays, torch_name)
            model.get_layer(layer_name).set_weights(values)
        except (KeyError, ValueError) as exc:
            raise TlcoreError(
                f"cannot load the ImageNet weights of {name} into layer {layer_name}: {exc}",
                "the weights file does not fit the architecture; reinstall the weights package",
            ) from None
        loaded.add(layer_name)
    # Any weighted layer left out would silently stay random: refuse instead.
    left = [layer.name for layer in model.layers if layer.weights and layer.name not in loaded]
    if left:
        raise TlcoreError(f"no ImageNet weights for {len(left)} layers of {name}: {left[:3]}",
                          "the Keras build and tlcore.efficientnet_lite.layers disagree")


def build(name: str, size: int, pretrained: bool) -> keras.Model:
    """``efficientnet_lite<k>`` at ``size`` x ``size``, with its ImageNet weights when
    ``pretrained``.

    Raises:
        TlcoreError: ``pretrained`` and the weights cannot be had (none published, or not
            installed and not downloadable), checked before anything is built.
    """
    variant = spec.variant(name)
    arrays = spec.imagenet_weights(name) if pretrained else None
    model = network(variant, size, spec.bn_momentum(pretrained))
    if arrays is not None:
        load_imagenet(model, name, arrays)
    return model
