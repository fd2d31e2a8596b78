"""Vector networks: ``builtin:mlp`` and what a network taking numeric vectors declares.

A vector model takes float32 ``(N, features)`` as the user has them;
:class:`~tlcore_torch.model.TransferModel` standardises them with the statistics of the input
spec (:class:`~tlcore.interfaces.VectorPreprocessing`, held in non-trainable buffers that
checkpoints carry) before the network sees them.
"""

from __future__ import annotations

from torch import Tensor, nn

from tlcore.errors import TlcoreError
from tlcore.interfaces import InputSpec, VectorPreprocessing
from tlcore.recipe import BackboneSpec
from tlcore_torch.loading import IMAGENET, Loaded

DEFAULT_WIDTHS = (256, 128)
"""The hidden widths of ``builtin:mlp`` when ``backbone.widths`` is empty."""


class MLP(nn.Module):
    """``Linear → ReLU`` blocks: ``(N, features)`` → ``(N, widths[-1])``.

    The blocks are ``blocks.0`` ... ``blocks.<len(widths) - 1>``, which ``last_n`` freezing
    counts from the end.
    """

    def __init__(self, features: int, widths: tuple[int, ...] = DEFAULT_WIDTHS) -> None:
        super().__init__()
        layers = []
        previous = features
        for width in widths:
            layers.append(nn.Sequential(nn.Linear(previous, width), nn.ReLU()))
            previous = width
        self.blocks = nn.Sequential(*layers)
        # Declared: the generic rule would take each block's lone Linear for a stage.
        self.tlcore_blocks = tuple(f"blocks.{i}" for i in range(len(layers)))

    def forward(self, x: Tensor) -> Tensor:
        """The last block's activations of a standardised batch."""
        return self.blocks(x)


def vector_inputs(features: int) -> InputSpec:
    """The input spec of a network built for vectors of ``features`` values, without
    statistics yet (mean 0, std 1): the core replaces it with the training data's."""
    return InputSpec.vector(VectorPreprocessing.identity(features))


def load_mlp(spec: BackboneSpec, pretrained: bool) -> Loaded:
    """``builtin:mlp`` for ``spec.input_features`` values and hidden widths ``spec.widths``
    (:data:`DEFAULT_WIDTHS` when empty); random initialisation whatever ``pretrained`` says.

    Raises:
        TlcoreError: ``spec.input_features`` is unset (no vector data), or a width is not
            positive.
    """
    if spec.input_features is None:
        raise TlcoreError(
            "builtin:mlp needs vector data: backbone.input_features is not set",
            "train it on vectors (a .npz with x and y, or a CSV of numeric columns), or set "
            "backbone.input_features to the vector length",
        )
    widths = tuple(spec.widths) or DEFAULT_WIDTHS
    if any(width < 1 for width in widths):
        raise TlcoreError(
            f"backbone.widths {list(widths)} holds a width below 1",
            "give positive layer widths, e.g. [256, 128]",
        )
    network = MLP(spec.input_features, widths)
    extra = {"pretrained": False, "inputs": vector_inputs(spec.input_features)}
    return network, IMAGENET, extra
