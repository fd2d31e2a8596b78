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
    with; torch's symmetric padding shifts every stride-2 layer by one pixel).

    At stride 1 with an odd kernel "same" is symmetric, whatever the input size: the
    convolution pads itself, which saves the copy of an explicit pad (the same numbers)."""

    def __init__(self, in_width: int, out_width: int, kernel: int, stride: int = 1,
                 groups: int = 1) -> None:
        symmetric = stride == 1 and kernel % 2 == 1
        super().__init__(in_width, out_width, kernel, stride,
                         padding=kernel // 2 if symmetric else 0, groups=groups, bias=False)

    def same_pad(self, x: Tensor) -> Tensor:
        """``x`` padded as TensorFlow pads it for this convolution (when it does not pad
        itself)."""
        if self.padding != (0, 0):
            return x
        pads = []
        for size, k, s in zip(x.shape[-1:-3:-1], self.kernel_size[::-1], self.stride[::-1],
                              strict=True):
            total = max((-(-int(size) // s) - 1) * s + k - int(size), 0)
            pads += [total // 2, total - total // 2]
        return F.pad(x, pads) if any(pads) else x

    def forward(self, x: Tensor) -> Tensor:
        """Pad as TensorFlow does, then convolve."""
        return super().forward(self.same_pad(x))


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
        """conv → bn → act; with BatchNorm in inference mode (a frozen block, evaluation,
        feature extraction), one convolution with the BatchNorm folded into its weights."""
        if self.bn.training or _tracing():  # an exported graph keeps its BatchNorm nodes
            return self.act(self.bn(self.conv(x)))
        return self.act(self._folded(x))

    def _folded(self, x: Tensor) -> Tensor:
        """The convolution and the inference-mode BatchNorm as one convolution with a bias:
        ``w * g / sqrt(v + eps)`` and ``b - m * g / sqrt(v + eps)``. Why: on CPU torch runs
        BatchNorm as a pass of its own over the activations (a sixth of a frozen backbone's
        forward here), where TensorFlow fuses it into the convolution."""
        conv = self.conv
        weight, bias = self._fold()
        return F.conv2d(conv.same_pad(x), weight, bias, conv.stride, conv.padding,
                        conv.dilation, conv.groups)

    def _fold(self) -> tuple[Tensor, Tensor]:
        """The folded weight and bias. Differentiable when a weight they come from trains;
        otherwise kept while those tensors stay the same (their storage and in-place version:
        a step, a load or a move changes one), so a frozen block folds once, not per batch."""
        conv, bn = self.conv, self.bn
        sources = (conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var)
        if torch.is_grad_enabled() and any(t.requires_grad for t in sources):
            return _fold(*sources, bn.eps)
        key = tuple((t.data_ptr(), t._version) for t in sources)
        cached = getattr(self, "_folded_cache", None)
        if cached is None or cached[0] != key:
            # Normal tensors even inside inference_mode: a frozen stage's training steps
            # (grad mode on) reuse what an evaluation folded.
            with torch.inference_mode(False), torch.no_grad():
                cached = (key, _fold(*sources, bn.eps))
            self._folded_cache = cached
        return cached[1]


def _tracing() -> bool:
    """Whether an exporter or compiler is tracing the forward pass (they see the plain
    modules, and fold BatchNorm themselves where they can)."""
    return (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
            or torch.compiler.is_compiling())


def _fold(weight: Tensor, gamma: Tensor, beta: Tensor, mean: Tensor, var: Tensor,
          eps: float) -> tuple[Tensor, Tensor]:
    """A convolution's ``weight`` and a bias with the BatchNorm after it folded in."""
    scale = gamma * torch.rsqrt(var + eps)
    return weight * scale.reshape(-1, 1, 1, 1), beta - mean * scale


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
