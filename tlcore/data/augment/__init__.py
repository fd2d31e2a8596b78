"""Training-time augmentation on uint8 NHWC batches, seeded per epoch.

One module per family: :mod:`~tlcore.data.augment.geometric` (flips, shifts, crops,
rotations), :mod:`~tlcore.data.augment.color` (colour jitter and pixel ops),
:mod:`~tlcore.data.augment.policies` (RandAugment, TrivialAugment) and
:mod:`~tlcore.data.augment.mixing` (mixup and CutMix, which mix targets too). This module
runs a recipe's list of names, the built-in ones and those plugins registered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from tlcore.data.augment.color import color_jitter
from tlcore.data.augment.geometric import (
    CROP_SCALE,
    SHIFT_FRACTION,
    hflip,
    random_resized_crop,
    rotate,
    shift,
)
from tlcore.data.augment.mixing import MIXING, mix
from tlcore.data.augment.policies import randaugment, trivialaugment
from tlcore.errors import DataError, PluginError
from tlcore.inputs.image import _listing

_PER_IMAGE: dict[str, Callable[..., np.ndarray]] = {
    "hflip": hflip,
    "shift": shift,
    "random_resized_crop": random_resized_crop,
    "color_jitter": color_jitter,
    "rotate": rotate,
    "randaugment": randaugment,
    "trivialaugment": trivialaugment,
}

AUGMENTATIONS = (*_PER_IMAGE, *MIXING)
"""The names :func:`augment` understands (``mixup`` and ``cutmix`` through :func:`mix`)."""

__all__ = [
    "AUGMENTATIONS",
    "CROP_SCALE",
    "MIXING",
    "SHIFT_FRACTION",
    "augment",
    "mix",
]


def augment(
    images: np.ndarray,
    names: Iterable[str],
    rng: np.random.Generator,
    *,
    crop_scale: float = CROP_SCALE,
) -> np.ndarray:
    """Randomly augment a batch of uint8 NHWC images, each image drawn independently.

    ``hflip`` mirrors half of the images left-right. ``shift`` moves each image by a random
    whole number of pixels, up to :data:`SHIFT_FRACTION` of its height and width in each
    direction, repeating the edge pixels into the uncovered border. ``random_resized_crop``
    crops a box of ``U(crop_scale, 1)`` of the area and aspect ratio 3/4 to 4/3 and resizes
    it back (torchvision's ``RandomResizedCrop``). ``color_jitter`` changes brightness,
    contrast and saturation by up to 40 % (torchvision's ``ColorJitter(0.4, 0.4, 0.4)``).
    ``rotate`` turns each image by up to 15 degrees. ``randaugment`` (N=2, M=9) and
    ``trivialaugment`` (TrivialAugmentWide) apply ops drawn per image. ``mixup`` and
    ``cutmix`` are skipped here: they mix targets too, so the trainer applies them after
    the others (:func:`mix`). An augmentation a plugin registered (``tl_register_choices``)
    runs its function, ``value(images, rng)``. Augmentations apply in the order given.

    Args:
        images: uint8 array ``(N, H, W, C)``; not modified.
        names: augmentation names from :data:`AUGMENTATIONS` or registered by plugins; empty
            returns ``images`` itself.
        rng: the generator every random draw comes from.
        crop_scale: ``random_resized_crop``'s smallest crop, a fraction of the area.

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
        elif name == "random_resized_crop":
            out = random_resized_crop(out, rng, crop_scale)
        elif name in _PER_IMAGE:
            out = _PER_IMAGE[name](out, rng)
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
