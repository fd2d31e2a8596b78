"""Training-time augmentation on uint8 NHWC batches, seeded per epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from tlcore.errors import DataError, PluginError
from tlcore.inputs.image import _listing

AUGMENTATIONS = ("hflip", "shift")
"""The names :func:`augment` understands."""


SHIFT_FRACTION = 0.1
"""``shift`` moves an image by up to this fraction of its height and width."""


def augment(images: np.ndarray, names: Iterable[str], rng: np.random.Generator) -> np.ndarray:
    """Randomly augment a batch of uint8 NHWC images, each image drawn independently.

    ``hflip`` mirrors half of the images left-right. ``shift`` moves each image by a random
    whole number of pixels, up to :data:`SHIFT_FRACTION` of its height and width in each
    direction, repeating the edge pixels into the uncovered border. An augmentation a plugin
    registered (``tl_register_choices``) runs its function, ``value(images, rng)``.
    Augmentations apply in the order given.

    Args:
        images: uint8 array ``(N, H, W, C)``; not modified.
        names: augmentation names from :data:`AUGMENTATIONS` or registered by plugins; empty
            returns ``images`` itself.
        rng: the generator every random draw comes from.

    Returns:
        A new array of the same shape and dtype (or ``images`` when ``names`` is empty).
    """
    names = tuple(names)
    extra, registered = _registered(names)
    unknown = [n for n in names if n not in AUGMENTATIONS and n not in extra]
    if unknown:
        known = ", ".join([*AUGMENTATIONS, *registered])
        raise DataError(f"unknown augmentation(s): {_listing(unknown)}", f"known: {known}")
    if images.ndim != 4 or images.dtype != np.uint8:
        raise DataError(
            f"augment needs uint8 images (N, H, W, C); got {images.dtype} {images.shape}",
            "pass a batch as returned by Dataset.images",
        )
    out = images
    for name in names:
        if name in extra:
            out = _plugin_step(extra[name], out, rng, name)
        else:
            out = _hflip(out, rng) if name == "hflip" else _shift(out, rng)
    return out


def _registered(names: tuple[str, ...]) -> tuple[dict[str, Callable[..., Any]], list[str]]:
    """The functions of the names in ``names`` that plugins registered, and every name they
    registered; the plugins are asked only when ``names`` holds one that is not built in."""
    wanted = [name for name in names if name not in AUGMENTATIONS]
    if not wanted:
        return {}, []
    from tlcore.recipe.choices import implementation, registered

    known = list(registered("augmentation"))
    functions = {name: implementation("augmentation", name) for name in wanted if name in known}
    return functions, known


def _plugin_step(
    function: Callable[..., Any], images: np.ndarray, rng: np.random.Generator, name: str
) -> np.ndarray:
    out = np.asarray(function(images, rng))
    if out.shape != images.shape or out.dtype != np.uint8:
        raise PluginError(
            f"augmentation {name!r} returned {out.dtype} {out.shape} for uint8 {images.shape}",
            "a registered augmentation returns uint8 images of the shape it was given",
        )
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
