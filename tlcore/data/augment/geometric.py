"""Geometric augmentations on uint8 NHWC batches: flips, shifts, crops, rotations, shears.

Every op draws its parameters for all images at once from the generator it is given
(vectorised); the resampling, one affine map or box per image (:func:`warp`,
:func:`resize_boxes`), runs in Pillow's C code image by image.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

SHIFT_FRACTION = 0.1
"""``shift`` moves an image by up to this fraction of its height and width."""

CROP_SCALE = 0.35
"""``random_resized_crop``'s default smallest crop, as a fraction of the image's area.

torchvision's and timm's 0.08 is made for training ImageNet from scratch; fine-tuning on a few
images per class loses the object in such small crops, so the default keeps at least 35 %
(``data.crop_scale`` changes it)."""

CROP_RATIO = (3 / 4, 4 / 3)
"""``random_resized_crop``'s range of crop aspect ratios (width / height), as torchvision's."""

ROTATE_DEGREES = 15.0
"""``rotate`` turns each image by an angle drawn uniformly from ± this many degrees."""

_BILINEAR = Image.Resampling.BILINEAR
_ATTEMPTS = 10  # torchvision's RandomResizedCrop tries ten boxes before its fallback


def hflip(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mirror a random half of the images left-right (each with probability 0.5)."""
    flip = rng.random(len(images)) < 0.5
    out = images.copy()
    out[flip] = images[flip, :, ::-1]
    return out


def shift(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Move each image by whole pixels, up to :data:`SHIFT_FRACTION` of its sides, repeating
    the edge pixels into the uncovered border."""
    count, height, width = images.shape[:3]
    max_dy, max_dx = round(height * SHIFT_FRACTION), round(width * SHIFT_FRACTION)
    dy = rng.integers(-max_dy, max_dy + 1, size=count)
    dx = rng.integers(-max_dx, max_dx + 1, size=count)
    # Output pixel (y, x) reads input (y - dy, x - dx), clamped: edge padding in one gather.
    rows = np.clip(np.arange(height)[None, :] - dy[:, None], 0, height - 1)
    cols = np.clip(np.arange(width)[None, :] - dx[:, None], 0, width - 1)
    batch = np.arange(count)[:, None, None]
    return images[batch, rows[:, :, None], cols[:, None, :]]


def crop_boxes(
    rng: np.random.Generator,
    count: int,
    height: int,
    width: int,
    scale: tuple[float, float] = (CROP_SCALE, 1.0),
    ratio: tuple[float, float] = CROP_RATIO,
) -> np.ndarray:
    """torchvision's ``RandomResizedCrop.get_params`` for ``count`` images at once.

    Each image tries ten boxes of area ``U(scale) * height * width`` and log-uniform aspect
    ratio in ``ratio``, keeping the first that fits; when none fits, the central crop of the
    whole image with its ratio clamped to ``ratio``.

    Returns:
        int64 ``(count, 4)``: ``top, left, box height, box width`` per image.
    """
    area = height * width
    shape = (count, _ATTEMPTS)
    target = area * rng.uniform(scale[0], scale[1], size=shape)
    aspect = np.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1]), size=shape))
    w = np.rint(np.sqrt(target * aspect)).astype(np.int64)
    h = np.rint(np.sqrt(target / aspect)).astype(np.int64)
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.argmax(axis=1)
    rows = np.arange(count)
    h, w = h[rows, first], w[rows, first]
    top = (rng.random(count) * (height - h + 1)).astype(np.int64)
    left = (rng.random(count) * (width - w + 1)).astype(np.int64)
    boxes = np.stack([top, left, h, w], axis=1)
    # The fallback: the whole image, narrowed to the nearest allowed ratio.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        fw, fh = round(height * ratio[1]), height
    else:
        fw, fh = width, height
    boxes[~fits.any(axis=1)] = ((height - fh) // 2, (width - fw) // 2, fh, fw)
    return boxes


def random_resized_crop(
    images: np.ndarray, rng: np.random.Generator, scale: float = CROP_SCALE
) -> np.ndarray:
    """Crop a random box of each image (:func:`crop_boxes`, smallest area ``scale``) and
    resize it back to the image's size, bilinear."""
    count, height, width = images.shape[:3]
    boxes = crop_boxes(rng, count, height, width, (scale, 1.0))
    return resize_boxes(images, boxes)


def resize_boxes(images: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Each image's box (``top, left, height, width``) resized to the image's size, bilinear
    (Pillow's, in C, one image at a time: several times faster than a vectorised gather)."""
    height, width = images.shape[1:3]
    out = np.empty_like(images)
    for i, (top, left, box_h, box_w) in enumerate(np.asarray(boxes).tolist()):
        picture = Image.fromarray(np.ascontiguousarray(images[i]))
        box = (left, top, left + box_w, top + box_h)
        out[i] = _array(picture.resize((width, height), _BILINEAR, box=box), images[i])
    return out


def rotate(
    images: np.ndarray, rng: np.random.Generator, degrees: float = ROTATE_DEGREES
) -> np.ndarray:
    """Turn each image about its centre by ``U(-degrees, degrees)`` (counter-clockwise when
    positive), bilinear, reflecting the image into the corners it uncovers (no black
    wedges for the network to learn)."""
    angles = rng.uniform(-degrees, degrees, size=len(images))
    return warp(images, rotation_matrices(angles, *images.shape[1:3]), "reflect")


def rotation_matrices(degrees: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(n, 2, 3)`` maps from output to input pixel coordinates that turn images by
    ``degrees`` counter-clockwise about their centres (90 gives ``np.rot90``)."""
    theta = np.deg2rad(np.asarray(degrees, np.float64))
    cos, sin = np.cos(theta), np.sin(theta)
    cx, cy = (width - 1) / 2, (height - 1) / 2
    matrices = np.zeros((len(theta), 2, 3))
    matrices[:, 0, 0], matrices[:, 0, 1] = cos, -sin
    matrices[:, 1, 0], matrices[:, 1, 1] = sin, cos
    matrices[:, 0, 2] = cx - cos * cx + sin * cy
    matrices[:, 1, 2] = cy - sin * cx - cos * cy
    return matrices


def warp(images: np.ndarray, matrices: np.ndarray, fill: str = "edge") -> np.ndarray:
    """Resample each image through its affine map, bilinear (Pillow's, in C, one image at a
    time: several times faster than a vectorised numpy gather).

    Args:
        images: uint8 ``(n, H, W, C)``.
        matrices: ``(n, 2, 3)``: output pixel ``(x, y)`` reads input pixel
            ``matrices[i] @ (x, y, 1)`` (column, row; pixel centres at whole numbers).
        fill: what lies outside the image: ``edge`` (the nearest edge pixel), ``reflect``
            (the image mirrored at its border) or ``constant`` (black, as torchvision's
            ``fill=0``).

    Returns:
        uint8 ``(n, H, W, C)``.
    """
    count, height, width = images.shape[:3]
    out = np.empty_like(images)
    for i in range(count):
        matrix = np.asarray(matrices[i], np.float64)
        image = images[i]
        if fill in ("edge", "reflect"):
            # Pillow fills with a colour only: pad the image as the fill asks, wide enough for
            # every pixel the map reads, and move the map onto the padded image.
            margin = _margin(matrix, height, width)
            if margin:
                image = np.pad(image, ((margin, margin), (margin, margin), (0, 0)), mode=fill)
                matrix = matrix.copy()
                matrix[:, 2] += margin
        # Pillow samples at pixel centres (x + 0.5, y + 0.5); ours are at whole numbers.
        shift = matrix[:, 2] + 0.5 - matrix[:, :2] @ (0.5, 0.5)
        data = (*matrix[0, :2], shift[0], *matrix[1, :2], shift[1])
        picture = Image.fromarray(np.ascontiguousarray(image)).transform(
            (width, height), Image.Transform.AFFINE, data, _BILINEAR
        )
        out[i] = _array(picture, images[i])
    return out


def _margin(matrix: np.ndarray, height: int, width: int) -> int:
    """How far outside a ``height`` x ``width`` image the map reads, in whole pixels (and two
    more for the bilinear neighbours)."""
    corners = np.array([[0, 0, 1], [width - 1, 0, 1], [0, height - 1, 1],
                        [width - 1, height - 1, 1]], np.float64)
    src = corners @ matrix.T
    over = max(0.0, -src.min(), src[:, 0].max() - (width - 1), src[:, 1].max() - (height - 1))
    return int(np.ceil(over)) + 2 if over > 0 else 0


def _array(picture: Image.Image, like: np.ndarray) -> np.ndarray:
    """A Pillow image back as an array shaped like ``like`` (a one-channel image too)."""
    return np.asarray(picture).reshape(like.shape)
