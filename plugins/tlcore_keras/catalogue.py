"""What the Keras backend can load, described without importing Keras.

:data:`APPLICATIONS` is the table of ``keras:<name>`` backbones: the ``keras.applications``
constructor, the input size its ImageNet weights were trained at, and its preprocessing style.
:data:`STYLES` turns a style into a :class:`~tlcore.interfaces.Preprocessing`, the same
arithmetic as ``keras.applications.<family>.preprocess_input``:

- ``caffe``: RGB → BGR, then the ImageNet mean (in BGR order, 0..255) subtracted;
- ``tf``: scaled to -1..1 (``x / 127.5 - 1``);
- ``torch``: scaled to 0..1, then ImageNet mean and std (RGB);
- ``builtin``: nothing, because the network's first layers do it (EfficientNet, EfficientNetV2,
  MobileNetV3 and ConvNeXt include a ``Rescaling`` / ``Normalization`` layer and take 0..255).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from tlcore.builtins import DEFAULT_BACKBONE, builtin_infos
from tlcore.interfaces import BackboneInfo, Preprocessing

KERAS_KIND = "keras"
BUILTIN_KIND = "builtin"
FILE_KIND = "file"
HF_KIND = "hf"
KINDS = (KERAS_KIND, BUILTIN_KIND, FILE_KIND, HF_KIND)
MLP_DESCRIPTION = (
    "multilayer perceptron for vectors: Dense+ReLU blocks of backbone.widths (default "
    "256, 128) on backbone.input_features inputs; random init (no published weights)"
)
DEFAULT_SOURCE = DEFAULT_BACKBONE

STYLES: dict[str, Preprocessing] = {
    "caffe": Preprocessing(
        mean=(103.939, 116.779, 123.68), std=(1.0, 1.0, 1.0), scale=1.0, channel_order="BGR"
    ),
    "tf": Preprocessing(mean=(1.0, 1.0, 1.0), std=(1.0, 1.0, 1.0), scale=1 / 127.5),
    "torch": Preprocessing(),
    "builtin": Preprocessing(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), scale=1.0),
}


@dataclass(frozen=True)
class Application:
    """One ``keras.applications`` network.

    Attributes:
        constructor: the ``keras.applications`` function.
        size: the input size of its ImageNet weights (the default ``input_size``).
        style: its preprocessing style, a key of :data:`STYLES`.
        params: its parameters without the top (trainable weights), as Keras 3.15 builds it;
            ``tests/test_keras_backend.py`` checks them against real builds.
    """

    constructor: str
    size: int
    style: str
    params: int

    @property
    def preprocessing(self) -> Preprocessing:
        """The normalisation of :attr:`style` at :attr:`size`."""
        return STYLES[self.style].with_size(self.size)


APPLICATIONS: dict[str, Application] = {
    "mobilenet": Application("MobileNet", 224, "tf", 3_206_976),
    "mobilenet_v2": Application("MobileNetV2", 224, "tf", 2_223_872),
    "mobilenet_v3_small": Application("MobileNetV3Small", 224, "builtin", 927_008),
    "mobilenet_v3_large": Application("MobileNetV3Large", 224, "builtin", 2_971_952),
    "efficientnet_b0": Application("EfficientNetB0", 224, "builtin", 4_007_548),
    "efficientnet_b1": Application("EfficientNetB1", 240, "builtin", 6_513_184),
    "efficientnet_b2": Application("EfficientNetB2", 260, "builtin", 7_700_994),
    "efficientnet_b3": Application("EfficientNetB3", 300, "builtin", 10_696_232),
    "efficientnet_b4": Application("EfficientNetB4", 380, "builtin", 17_548_616),
    "efficientnet_b5": Application("EfficientNetB5", 456, "builtin", 28_340_784),
    "efficientnet_b6": Application("EfficientNetB6", 528, "builtin", 40_735_704),
    "efficientnet_b7": Application("EfficientNetB7", 600, "builtin", 63_786_960),
    "efficientnet_v2_b0": Application("EfficientNetV2B0", 224, "builtin", 5_858_704),
    "efficientnet_v2_b1": Application("EfficientNetV2B1", 240, "builtin", 6_860_052),
    "efficientnet_v2_b2": Application("EfficientNetV2B2", 260, "builtin", 8_687_086),
    "efficientnet_v2_b3": Application("EfficientNetV2B3", 300, "builtin", 12_821_406),
    "efficientnet_v2_s": Application("EfficientNetV2S", 384, "builtin", 20_177_488),
    "efficientnet_v2_m": Application("EfficientNetV2M", 480, "builtin", 52_858_356),
    "efficientnet_v2_l": Application("EfficientNetV2L", 480, "builtin", 117_234_272),
    "resnet50": Application("ResNet50", 224, "caffe", 23_534_592),
    "resnet101": Application("ResNet101", 224, "caffe", 42_552_832),
    "resnet152": Application("ResNet152", 224, "caffe", 58_219_520),
    "resnet50_v2": Application("ResNet50V2", 224, "tf", 23_519_360),
    "resnet101_v2": Application("ResNet101V2", 224, "tf", 42_528_896),
    "resnet152_v2": Application("ResNet152V2", 224, "tf", 58_187_904),
    "vgg16": Application("VGG16", 224, "caffe", 14_714_688),
    "vgg19": Application("VGG19", 224, "caffe", 20_024_384),
    "densenet121": Application("DenseNet121", 224, "torch", 6_953_856),
    "densenet169": Application("DenseNet169", 224, "torch", 12_484_480),
    "densenet201": Application("DenseNet201", 224, "torch", 18_092_928),
    "inception_v3": Application("InceptionV3", 299, "tf", 21_768_352),
    "inception_resnet_v2": Application("InceptionResNetV2", 299, "tf", 54_276_192),
    "xception": Application("Xception", 299, "tf", 20_806_952),
    "convnext_tiny": Application("ConvNeXtTiny", 224, "builtin", 27_820_128),
    "convnext_small": Application("ConvNeXtSmall", 224, "builtin", 49_454_688),
    "convnext_base": Application("ConvNeXtBase", 224, "builtin", 87_566_464),
    "convnext_large": Application("ConvNeXtLarge", 224, "builtin", 196_230_336),
    "convnext_xlarge": Application("ConvNeXtXLarge", 224, "builtin", 348_147_968),
}


def backbone_infos() -> Iterator[BackboneInfo]:
    """One entry per built-in backbone and Keras application, and one for ``file:``.

    Nothing is imported or built: listing all ~40 networks by building them (even abstractly,
    without allocating weights) takes over half a minute, so the counts are recorded in
    :data:`APPLICATIONS` and checked by the tests.
    """
    yield from builtin_infos()
    yield BackboneInfo(f"{BUILTIN_KIND}:mlp", None, None, MLP_DESCRIPTION)
    for name, app in APPLICATIONS.items():
        description = (
            f"keras.applications.{app.constructor}(include_top=False), {app.style} preprocessing"
        )
        yield BackboneInfo(f"{KERAS_KIND}:{name}", app.size, app.params, description)
    yield BackboneInfo(
        f"{FILE_KIND}:<model.keras>",
        None,
        None,
        "a Keras model saved with model.save(), loaded with safe_mode=True; ImageNet "
        "(torch-style) normalisation; a tlcore run's native/model.keras gives its trained "
        "backbone and normalisation",
    )
    yield BackboneInfo(
        "hf:<text model folder>",
        None,
        None,
        "a BERT-family text encoder (model_type bert: BERT, MiniLM, all-MiniLM-L6-v2) from a "
        "local Hugging Face folder (config.json, model.safetensors, tokenizer.json), built "
        "from Keras layers",
    )
