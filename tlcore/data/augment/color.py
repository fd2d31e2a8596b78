"""Colour augmentations on uint8 NHWC batches: torchvision's ColorJitter and the pixel ops of
RandAugment (brightness, contrast, saturation, sharpness, posterize, solarize, autocontrast,
equalize), each with one strength per image.

The blends follow torchvision's functional ops (``adjust_brightness`` and friends): the image
blended with black, its mean grey, its greyscale or its smoothed self, clipped to ``[0, 255]``.
They compute in float32 and round once at the end rather than truncating to uint8 after every
step as torchvision's uint8 path does, so a value may differ from torchvision's by one.
"""

from __future__ import annotations

import numpy as np

JITTER = 0.4
"""``color_jitter``'s brightness, contrast and saturation strength: each factor is drawn from
``U(1 - 0.4, 1 + 0.4)``, as timm's and torchvision's recipes use."""

_GREY = np.array([0.2989, 0.587, 0.114], np.float32)  # torchvision's rgb_to_grayscale weights


def color_jitter(
    images: np.ndarray, rng: np.random.Generator, strength: float = JITTER
) -> np.ndarray:
    """torchvision's ``ColorJitter(strength, strength, strength)``: brightness, contrast and
    saturation factors from ``U(max(0, 1 - strength), 1 + strength)``, applied in a random
    order drawn for each image (:func:`jitter`)."""
    count = len(images)
    lo, hi = max(0.0, 1 - strength), 1 + strength
    factors = rng.uniform(lo, hi, size=(3, count))
    order = np.argsort(rng.random((count, 3)), axis=1)  # a random permutation per image
    return jitter(images, factors, order)


def jitter(images: np.ndarray, factors: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Brightness, contrast and saturation blends (factors ``factors[0]``, ``[1]``, ``[2]``,
    one per image) in each image's ``order`` (a permutation of 0, 1, 2), in one pass.

    Each blend is an affine map of a pixel's RGB values (contrast's grey mean is a linear
    function of the image too), so the three compose into one 3 x 3 matrix and offset per
    image, applied at once and clipped to ``[0, 255]`` once. torchvision clips after every
    blend; the two differ only where a blend pushes a value past 0 or 255 and a later one
    brings it back.
    """
    count = len(images)
    grey_weights = _GREY.astype(np.float64)
    matrix = np.tile(np.eye(3), (count, 1, 1))  # the image so far: matrix @ rgb + offset
    offset = np.zeros((count, 3))
    mean = images.reshape(count, -1, images.shape[-1]).mean(axis=1)  # mean RGB per image
    rows = np.arange(count)
    for step in range(3):
        op = order[:, step]
        f = np.asarray(factors, np.float64)[op, rows][:, None]
        # Brightness and contrast scale by f; saturation blends with the grey (every channel
        # becomes w . rgb); contrast then adds (1 - f) times the image's grey mean so far.
        step_matrix = f[:, :, None] * np.eye(3)
        saturate = op == 2
        step_matrix[saturate] += (1 - f[saturate])[:, :, None] * np.tile(grey_weights, (3, 1))
        grey_mean = (np.einsum("nij,nj->ni", matrix, mean) + offset) @ grey_weights
        extra = np.where(op == 1, (1 - f[:, 0]) * grey_mean, 0.0)[:, None]
        matrix = step_matrix @ matrix
        offset = np.einsum("nij,nj->ni", step_matrix, offset) + extra
    return _affine_colours(images, matrix, offset)


def _affine_colours(images: np.ndarray, matrix: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """``matrix[i] @ rgb + offset[i]`` for every pixel of image ``i``, clipped and rounded."""
    count, channels = len(images), images.shape[-1]
    # Channels first, (n, 3, pixels): one batched matrix product BLAS runs fast (a trailing
    # axis of 3 makes numpy's product ten times slower).
    planes = np.moveaxis(images.reshape(count, -1, channels), 2, 1).astype(np.float32)
    out = matrix.astype(np.float32) @ planes
    out += offset[:, :, None].astype(np.float32)
    return np.moveaxis(_to_uint8(out), 1, 2).reshape(images.shape)


def blend(images: np.ndarray, other: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """``factor * images + (1 - factor) * other``, one factor per image, clipped to
    ``[0, 255]`` (float32)."""
    f = np.asarray(factors, np.float32).reshape(-1, 1, 1, 1)
    return np.clip(f * images + (1 - f) * other, 0, 255)


def grey(images: np.ndarray) -> np.ndarray:
    """Greyscale ``(n, H, W, 1)`` float32 of RGB images, with torchvision's weights."""
    return (images.astype(np.float32) @ _GREY)[..., None]


def _brightness(images: np.ndarray, factors: np.ndarray) -> np.ndarray:
    return blend(images, np.zeros((), np.float32), factors)


def _contrast(images: np.ndarray, factors: np.ndarray) -> np.ndarray:
    mean = grey(images).mean(axis=(1, 2, 3), keepdims=True)
    return blend(images, mean, factors)


def _saturation(images: np.ndarray, factors: np.ndarray) -> np.ndarray:
    return blend(images, grey(images), factors)


def _sharpness(images: np.ndarray, factors: np.ndarray) -> np.ndarray:
    # PIL's SMOOTH kernel (1 1 1 / 1 5 1 / 1 1 1) / 13 inside; the border pixels stay.
    smooth = images.copy()
    inner_h, inner_w = images.shape[1] - 2, images.shape[2] - 2
    total = 5 * images[:, 1:-1, 1:-1]
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if (dy, dx) != (1, 1):
                total = total + images[:, dy : dy + inner_h, dx : dx + inner_w]
    smooth[:, 1:-1, 1:-1] = total / 13
    return blend(images, smooth, factors)


def adjust(images: np.ndarray, name: str, factors: np.ndarray) -> np.ndarray:
    """One of torchvision's blends on uint8 images, one factor per image: ``brightness``,
    ``contrast``, ``saturation`` (RandAugment's ``Color``) or ``sharpness``."""
    op = {
        "brightness": _brightness,
        "contrast": _contrast,
        "saturation": _saturation,
        "sharpness": _sharpness,
    }[name]
    return _to_uint8(op(images.astype(np.float32), factors))


def posterize(images: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Keep the top ``bits`` bits (1 to 8, per image) of every channel value."""
    keep = np.asarray(bits, np.int64).clip(0, 8)
    masks = (0xFF << (8 - keep)) & 0xFF
    return images & masks.astype(np.uint8).reshape(-1, 1, 1, 1)


def solarize(images: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Invert every value at or above the image's threshold."""
    t = np.asarray(thresholds, np.float32).reshape(-1, 1, 1, 1)
    return np.where(images >= t, 255 - images, images).astype(np.uint8)


def autocontrast(images: np.ndarray) -> np.ndarray:
    """Stretch each channel of each image to the full ``[0, 255]`` range (a flat channel
    stays as it is)."""
    lo = images.min(axis=(1, 2), keepdims=True).astype(np.float32)
    hi = images.max(axis=(1, 2), keepdims=True).astype(np.float32)
    span = hi - lo
    scale = np.where(span > 0, 255 / np.where(span > 0, span, 1), 1)
    shift = np.where(span > 0, lo, 0)
    return _to_uint8((images - shift) * scale)


def equalize(images: np.ndarray) -> np.ndarray:
    """PIL's ``ImageOps.equalize`` on each channel of each image: the histogram spread
    evenly, through one look-up table per channel, all built at once."""
    count, height, width, channels = images.shape
    planes = count * channels
    # One 256-bin histogram per (image, channel), from one bincount.
    plane = (np.arange(count)[:, None] * channels + np.arange(channels)[None, :])
    codes = images.astype(np.int64) + 256 * plane[:, None, None, :]
    hist = np.bincount(codes.ravel(), minlength=planes * 256).reshape(planes, 256)
    last = 255 - np.argmax(hist[:, ::-1] > 0, axis=1)  # the highest value present
    step = (height * width - hist[np.arange(planes), last]) // 255
    below = np.cumsum(hist, axis=1) - hist  # pixels under each value
    safe = np.maximum(step, 1)[:, None]
    lut = np.minimum((below + safe // 2) // safe, 255)
    lut[step == 0] = np.arange(256)  # PIL leaves such a channel unchanged
    out = np.take(lut.ravel(), codes)
    return out.astype(np.uint8)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Clipped to ``[0, 255]`` and rounded (half up: add 0.5, truncate; one pass fewer than
    ``np.rint``)."""
    out = np.clip(values, 0, 255)
    out += 0.5
    return out.astype(np.uint8)
