"""What every backend's ``builtin:simple_cnn`` is, so the suite can find its parts by shape.

The spec lives in :mod:`tlcore.builtins`: three blocks of (conv 3x3 without bias, BatchNorm,
ReLU, 2x2 max-pool) of widths 16, 32, 64 on 32x32 inputs. The widths differ, so a block's
arrays are recognised by their shapes whatever the backend calls them: the conv kernel is the
4-d array of shape ``{3, 3, in, width}`` (in any order), and the BatchNorm's scale, shift,
moving mean and moving variance are the four 1-d arrays of length ``width``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tlcore.builtins import SIMPLE_CNN_WIDTHS, simple_cnn_params
from tlcore.testing.backend import backbone_part

if TYPE_CHECKING:
    import numpy as np

SOURCE = "builtin:simple_cnn"
WIDTHS = SIMPLE_CNN_WIDTHS
FEATURES = WIDTHS[-1]
"""The width of the pooled features (avg and max pooling)."""
FEATURE_MAP = (4, 4, FEATURES)
"""The backbone's output on 32x32 inputs, as (height, width, channels)."""
INPUTS = (3, *WIDTHS[:-1])
BLOCK_PARAMS = tuple(
    simple_cnn_params((width,), channels) for channels, width in zip(INPUTS, WIDTHS, strict=True)
)
PARAMS = simple_cnn_params()
STATISTICS = 2 * sum(WIDTHS)
"""Moving means and variances: buffers, not parameters, but ``tl_get_weights`` returns them."""


def conv_kernel(weights: dict[str, np.ndarray], block: int) -> str:
    """The name of block ``block``'s conv kernel."""
    shape = sorted((3, 3, INPUTS[block], WIDTHS[block]))
    (name,) = [k for k, v in backbone_part(weights).items() if sorted(v.shape) == shape]
    return name


def batchnorm(weights: dict[str, np.ndarray], block: int) -> tuple[str, ...]:
    """The names of block ``block``'s four BatchNorm arrays (parameters and statistics)."""
    width = WIDTHS[block]
    names = tuple(k for k, v in backbone_part(weights).items() if v.shape == (width,))
    assert len(names) == 4, f"block {block}: expected 4 BatchNorm arrays of {width}, got {names}"
    return names
