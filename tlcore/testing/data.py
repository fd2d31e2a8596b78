"""Small, real test data: random and separable image arrays, and a tiny image folder on disk.

Everything is generated (no downloads, no scikit-learn): a backend author's tests run offline.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

IMAGE_SIZE = 32
"""The side of the images made here, and the input size of ``builtin:simple_cnn``."""

FOLDER_CLASSES = ("red", "green", "blue")
"""The classes :func:`write_image_folder` writes: which colour channel is brightest."""


def images(n: int = 8, size: int = IMAGE_SIZE, seed: int = 0) -> np.ndarray:
    """``n`` random uint8 RGB images, NHWC.

    Example:
        >>> images(2).shape
        (2, 32, 32, 3)
    """
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def separable(n: int = 32, size: int = IMAGE_SIZE, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)`` in two classes, bright (1) and dark (0), alternating.

    Any working trainer separates them within a few steps.

    Example:
        >>> x, y = separable(4)
        >>> y.tolist(), bool(x[1].mean() > x[0].mean())
        ([0, 1, 0, 1], True)
    """
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    low = rng.integers(0, 110, (n, size, size, 3))
    x = np.where(y[:, None, None, None] == 1, 255 - low, low).astype(np.uint8)
    return x, y


def write_image_folder(
    path: str | Path, per_class: int = 16, size: int = IMAGE_SIZE, seed: int = 0
) -> Path:
    """Write a tiny image-folder dataset: ``<path>/<class>/<index>.png``.

    One class per name in :data:`FOLDER_CLASSES`; in each image that colour channel is the
    brightest, under noise and a random stripe, so a small network learns it in an epoch or two.

    Args:
        path: the folder to create (it must not exist yet, or be empty).
        per_class: images per class.
        size: image side in pixels.
        seed: the random seed; the same arguments write the same files.

    Returns:
        ``path``, as a :class:`~pathlib.Path`.

    Example:
        >>> import tempfile
        >>> folder = write_image_folder(Path(tempfile.mkdtemp()) / "data", per_class=2)
        >>> sorted(p.name for p in folder.iterdir())
        ['blue', 'green', 'red']
    """
    from PIL import Image

    root = Path(path)
    rng = np.random.default_rng(seed)
    for label, name in enumerate(FOLDER_CLASSES):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            pixels = rng.integers(0, 90, (size, size, 3))
            pixels[..., label] += 120
            row = rng.integers(0, size - 4)
            pixels[row : row + 4] += 30
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{index}.png")
    return root
