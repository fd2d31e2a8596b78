"""EfficientNet-Lite in torch, built from :mod:`tlcore.efficientnet_lite`'s description.

Module names follow :func:`tlcore.efficientnet_lite.layers` (``stem.conv``,
``blocks.3.depthwise.bn``, ``top.conv``), so the core's ImageNet arrays load by name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tlcore import efficientnet_lite as spec


class SameConv(nn.Conv2d):
    """A bias-free convolution with TensorFlow's "same" padding: output size ``ceil(H / s)``,
    an odd amount of padding going to the bottom and right (what the weights were trained
    with; torch's symmetric padding shifts every stride-2 layer by one pixel)."""

    def __init__(self, in_width: int, out_width: int, kernel: int, stride: int = 1,
                 groups: int = 1) -> None:
        super().__init__(in_width, out_width, kernel, stride, padding=0, groups=groups,
                         bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """Pad as TensorFlow does, then convolve."""
        pads = []
        for size, k, s in zip(x.shape[-1:-3:-1], self.kernel_size[::-1], self.stride[::-1],
                              strict=True):
            total = max((-(-int(size) // s) - 1) * s + k - int(size), 0)
            pads += [total // 2, total - total // 2]
        if any(pads):
            x = F.pad(x, pads)
        return super().forward(x)


class ConvBN(nn.Module):
    """Convolution, BatchNorm (TensorFlow's epsilon; ``momentum`` in Keras' convention),
    optional ReLU6."""

    def __init__(self, in_width: int, out_width: int, kernel: int, stride: int = 1,
                 depthwise: bool = False, act: bool = True,
                 momentum: float = spec.BN_MOMENTUM) -> None:
        super().__init__()
        groups = in_width if depthwise else 1
        self.conv = SameConv(in_width, out_width, kernel, stride, groups)
        self.bn = nn.BatchNorm2d(out_width, eps=spec.BN_EPSILON, momentum=1 - momentum)
        self.act = nn.ReLU6() if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """conv → bn → act."""
        return self.act(self.bn(self.conv(x)))


class MBConv(nn.Module):
    """Expansion (when ``expand`` > 1), depthwise convolution, linear projection, residual."""

    def __init__(self, block: spec.Block, momentum: float = spec.BN_MOMENTUM) -> None:
        super().__init__()
        self.residual = block.residual
        if block.expand != 1:
            self.expand = ConvBN(block.in_width, block.hidden, 1, momentum=momentum)
        self.depthwise = ConvBN(block.hidden, block.hidden, block.kernel, block.stride,
                                depthwise=True, momentum=momentum)
        self.project = ConvBN(block.hidden, block.out_width, 1, act=False, momentum=momentum)

    def forward(self, x: Tensor) -> Tensor:
        """The block's output, plus its input when shapes allow."""
        y = self.expand(x) if hasattr(self, "expand") else x
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    """The backbone: normalised NCHW images to a ``(N, 1280, H / 32, W / 32)`` feature map.

    ``tlcore_blocks`` tells ``last_n`` freezing what to count: the stem, each MBConv block,
    and the top convolution (the last block, so fine-tuning the top always includes it).
    """

    def __init__(self, variant: spec.Variant, momentum: float = spec.BN_MOMENTUM) -> None:
        super().__init__()
        self.stem = ConvBN(3, spec.STEM_WIDTH, 3, 2, momentum=momentum)
        self.blocks = nn.Sequential(*(MBConv(b, momentum) for b in spec.blocks(variant)))
        self.top = ConvBN(spec.blocks(variant)[-1].out_width, spec.TOP_WIDTH, 1,
                          momentum=momentum)
        self.tlcore_blocks = list(spec.block_names(variant))

    def forward(self, x: Tensor) -> Tensor:
        """The feature map before pooling."""
        return self.top(self.blocks(self.stem(x)))


def build(name: str, pretrained: bool) -> EfficientNetLite:
    """``efficientnet_lite<k>``, with its ImageNet weights when ``pretrained``."""
    network = EfficientNetLite(spec.variant(name), spec.bn_momentum(pretrained))
    if pretrained:
        arrays = spec.imagenet_weights(name)
        state = {
            k: torch.from_numpy(v) for k, v in arrays.items() if not k.startswith("classifier")
        }
        network.load_state_dict(state, strict=True)
    return network
