"""Automatic augmentation policies: RandAugment and TrivialAugment (torchvision's
``RandAugment(num_ops=2, magnitude=9)`` and ``TrivialAugmentWide()``), on uint8 NHWC batches.

Both draw, per image, which of the same fourteen ops it gets and how strongly (the ops and
magnitude tables are torchvision's, 31 bins); images that drew the same op are transformed
together, so a batch costs at most fourteen vectorised calls per round.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tlcore.data.augment import color
from tlcore.data.augment.geometric import rotation_matrices, warp

RANDAUGMENT_OPS = 2
"""RandAugment's ``N``: ops applied to each image, one after the other."""

RANDAUGMENT_MAGNITUDE = 9
"""RandAugment's ``M``: the magnitude bin (of 31) every op uses."""

_BINS = 31

OPS = (
    "identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness",
    "color", "contrast", "sharpness", "posterize", "solarize", "autocontrast", "equalize",
)
"""The ops both policies choose from, in torchvision's order."""

_SIGNED = {
    "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "color",
    "contrast", "sharpness",
}


def magnitudes(wide: bool, height: int, width: int) -> dict[str, np.ndarray]:
    """Each op's magnitude per bin: RandAugment's table, or TrivialAugmentWide's (``wide``)."""
    bins = np.arange(_BINS)
    ramp = np.linspace(0.0, 1.0, _BINS)
    blend = 0.99 if wide else 0.9
    return {
        "identity": np.zeros(_BINS),
        "shear_x": ramp * (0.99 if wide else 0.3),
        "shear_y": ramp * (0.99 if wide else 0.3),
        "translate_x": ramp * (32.0 if wide else 150 / 331 * width),
        "translate_y": ramp * (32.0 if wide else 150 / 331 * height),
        "rotate": ramp * (135.0 if wide else 30.0),
        "brightness": ramp * blend,
        "color": ramp * blend,
        "contrast": ramp * blend,
        "sharpness": ramp * blend,
        "posterize": 8 - np.round(bins / ((_BINS - 1) / (6 if wide else 4))),
        "solarize": np.linspace(255.0, 0.0, _BINS),
        "autocontrast": np.zeros(_BINS),
        "equalize": np.zeros(_BINS),
    }


def randaugment(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """RandAugment, N=2, M=9: two ops drawn uniformly per image, each at magnitude bin 9
    (of 31), its sign random for the signed ops."""
    table = magnitudes(False, *images.shape[1:3])
    out = images
    for _ in range(RANDAUGMENT_OPS):
        bins = np.full(len(images), RANDAUGMENT_MAGNITUDE)
        out = _round(out, rng, table, bins)
    return out


def trivialaugment(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """TrivialAugmentWide: one op drawn uniformly per image at a magnitude bin drawn
    uniformly per image (wide ranges: rotations to 135 degrees, shifts to 32 pixels)."""
    table = magnitudes(True, *images.shape[1:3])
    return _round(images, rng, table, None)


def _round(
    images: np.ndarray,
    rng: np.random.Generator,
    table: dict[str, np.ndarray],
    bins: np.ndarray | None,
) -> np.ndarray:
    """One op per image: drawn op, bin (``bins``, or drawn per image) and sign."""
    count = len(images)
    ops = rng.integers(0, len(OPS), size=count)
    if bins is None:
        bins = rng.integers(0, _BINS, size=count)
    signs = np.where(rng.random(count) < 0.5, -1.0, 1.0)
    out = images.copy()
    for index, name in enumerate(OPS):
        chosen = np.flatnonzero(ops == index)
        if not len(chosen) or name == "identity":
            continue
        values = table[name][bins[chosen]]
        if name in _SIGNED:
            values = values * signs[chosen]
        out[chosen] = _APPLY[name](images[chosen], values)
    return out


def _affine(images: np.ndarray, values: np.ndarray, row: int, col: int) -> np.ndarray:
    """An affine op whose inverse map subtracts ``values`` at entry ``(row, col)``: a shear
    (col 0 or 1, about the top-left corner, as torchvision's) or a translation (col 2);
    black fill, as torchvision's default."""
    matrices = np.tile(np.eye(2, 3), (len(images), 1, 1))
    matrices[:, row, col] = -values
    return warp(images, matrices, "constant")


def _rotate(images: np.ndarray, values: np.ndarray) -> np.ndarray:
    return warp(images, rotation_matrices(values, *images.shape[1:3]), "constant")


_APPLY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "shear_x": lambda x, v: _affine(x, v, 0, 1),
    "shear_y": lambda x, v: _affine(x, v, 1, 0),
    "translate_x": lambda x, v: _affine(x, v, 0, 2),
    "translate_y": lambda x, v: _affine(x, v, 1, 2),
    "rotate": _rotate,
    "brightness": lambda x, v: color.adjust(x, "brightness", 1 + v),
    "color": lambda x, v: color.adjust(x, "saturation", 1 + v),
    "contrast": lambda x, v: color.adjust(x, "contrast", 1 + v),
    "sharpness": lambda x, v: color.adjust(x, "sharpness", 1 + v),
    "posterize": lambda x, v: color.posterize(x, v.astype(np.int64)),
    "solarize": color.solarize,
    "autocontrast": lambda x, v: color.autocontrast(x),
    "equalize": lambda x, v: color.equalize(x),
}
