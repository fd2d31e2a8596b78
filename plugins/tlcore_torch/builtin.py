"""Built-in backbones: ``builtin:simple_cnn`` here, EfficientNet-Lite in
:mod:`tlcore_torch.efficientnet_lite`.

``simple_cnn`` has no published weights: ``weights=pretrained`` and ``weights=none`` both give
a random initialisation (seeded through ``tl_seed``). Make your own "pretrained" checkpoint by
training on one task and pass its ``native/model.pt`` as ``weights=<path>`` for the next one.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import Tensor, nn

from tlcore.builtins import SIMPLE_CNN_WIDTHS
from tlcore.efficientnet_lite import VARIANTS
from tlcore_torch import efficientnet_lite


class SimpleCNN(nn.Module):
    """Three conv blocks (conv 3x3, BatchNorm, ReLU, 2x2 max-pool) for small images.

    Maps ``(N, 3, H, W)`` to a ``(N, widths[-1], H / 8, W / 8)`` feature map. The blocks are
    ``blocks.0`` ... ``blocks.2``, which ``last_n`` freezing counts from the end.
    """

    def __init__(self, widths: tuple[int, ...] = SIMPLE_CNN_WIDTHS, in_channels: int = 3) -> None:
        super().__init__()
        layers = []
        previous = in_channels
        for width in widths:
            layers.append(
                nn.Sequential(
                    nn.Conv2d(previous, width, kernel_size=3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                    nn.MaxPool2d(2),
                )
            )
            previous = width
        self.blocks = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """The feature map of a normalised NCHW batch."""
        return self.blocks(x)


BUILDERS: dict[str, Callable[[bool], nn.Module]] = {
    "simple_cnn": lambda pretrained: SimpleCNN(),
    **{name: partial(efficientnet_lite.build, name) for name in VARIANTS},
}
"""``builtin:<name>`` → a builder taking ``pretrained`` (load the published weights)."""
