"""Training-time augmentation on uint8 NHWC batches, seeded per epoch.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from tlcore.errors import DataError
from tlcore.inputs.image import _listing

AUGMENTATIONS = ("hflip", "shift")
"""The names :func:`augment` understands."""


SHIFT_FRACTION = 0.1
"""``shift`` moves an image by up to this fraction of its height and width."""


def augment(images: np.ndarray, names: Iterable[str], rng: np.random.Generator) -> np.ndarray:
    """Randomly augment a batch of uint8 NHWC images, each image drawn independently.

    ``hflip`` mirrors half of the images left-right. ``shift`` moves each image by a random
    whole number of pixels, up to :data:`SHIFT_FRACTION` of its height and width in each
    direction, repeating the edge pixels into the uncovered border. Augmentations apply in
    the order given.

    Args:
        images: uint8 array ``(N, H, W, C)``; not modified.
        names: augmentation names from :data:`AUGMENTATIONS`; empty returns ``images`` itself.
        rng: the generator every random draw comes from.

    Returns:
        A new array of the same shape and dtype (or ``images`` when ``names`` is empty).
    """
    names = tuple(names)
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise DataError(
            f"unknown augmentation(s): {_listing(unknown)}", f"known: {', '.join(AUGMENTATIONS)}"
        )
    if images.ndim != 4 or images.dtype != np.uint8:
        raise DataError(
            f"augment needs uint8 images (N, H, W, C); got {images.dtype} {images.shape}",
            "pass a batch as returned by Dataset.images",
        )
    out = images
    for name in names:
        out = _hflip(out, rng) if name == "hflip" else _shift(out, rng)
    return out


def _hflip(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    flip = rng.random(len(images)) < 0.5
    out = images.copy()
    out[flip] = images[flip, :, ::-1]
    return out


def _shift(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    count, height, width = images.shape[:3]
    max_dy, max_dx = round(height * SHIFT_FRACTION), round(width * SHIFT_FRACTION)
    dy = rng.integers(-max_dy, max_dy + 1, size=count)
    dx = rng.integers(-max_dx, max_dx + 1, size=count)
    # Output pixel (y, x) reads input (y - dy, x - dx), clamped: edge padding in one gather.
    rows = np.clip(np.arange(height)[None, :] - dy[:, None], 0, height - 1)
    cols = np.clip(np.arange(width)[None, :] - dx[:, None], 0, width - 1)
    batch = np.arange(count)[:, None, None]
    return images[batch, rows[:, :, None], cols[:, None, :]]
