"""Numpy arrays passed through the Python API, as a :class:`Dataset`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from tlcore.data.dataset import DEFAULT_CACHE_BYTES, Dataset
from tlcore.errors import DataError
from tlcore.inputs.image import RESAMPLE, _check_size
from tlcore.tasks import DEFAULT_TASK, Task, get_task


class ArrayDataset(Dataset):
    """Images held in a numpy array, from the Python API.

    Args:
        images: uint8 ``(N, H, W, 3)`` RGB, or ``(N, H, W)`` / ``(N, H, W, 1)`` grayscale
            (repeated to RGB). Other integer dtypes must hold 0..255. Float arrays must hold
            values in [0, 1] and are converted to uint8 as ``round(x * 255)``. A uint8 RGB
            array is used as is, not copied: do not modify it afterwards.
        labels: ``N`` integer class indices (0 .. C-1) or ``N`` strings. Strings become the
            class names, sorted, unless ``class_names`` is given. For another ``task``, what
            it encodes (:meth:`~tlcore.tasks.Task.encode_labels`): a multi-hot ``(N, labels)``
            array or one list of names per image (multilabel), ``N`` numbers (regression).
        class_names: names for the classes: with integer labels, one per index (default
            ``"0"``, ``"1"``, ...); with string labels, their order. For a multi-label task,
            the labels' names; for a regression, the target's (default ``value``).
        task: the :class:`~tlcore.tasks.Task` the labels are for (default classification).
        cache_bytes: bytes of resized images kept in memory (when ``size`` differs from H, W).

    Raises:
        DataError: a shape, dtype, value range or label is wrong; says which and how to fix it.
    """

    def __init__(
        self,
        images: Any,
        labels: Any,
        class_names: Sequence[str] | None = None,
        *,
        task: Task | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        array = as_uint8_images(images)
        task = task or get_task(DEFAULT_TASK)
        codes, names = task.encode_labels(labels, len(array), class_names)
        super().__init__(names, codes, cache_bytes, task=task)
        self.array: np.ndarray = array
        """All source images, uint8 (N, H, W, 3); a subset shares it."""

    def images(self, indices: np.ndarray | Sequence[int], size: tuple[int, int]) -> np.ndarray:
        """Read images as one uint8 RGB array; see :meth:`Dataset.images`."""
        if _check_size(size) == self.array.shape[1:3]:
            return self.array[self._keys[self._positions(indices)]]
        return super().images(indices, size)

    def _content(self) -> Sequence[np.ndarray]:
        """The images, for :meth:`Dataset.fingerprint`: a resume notices other arrays."""
        return (self.array,)

    def _read(self, key: int, size: tuple[int, int]) -> np.ndarray:
        height, width = size
        resized = Image.fromarray(self.array[key]).resize((width, height), RESAMPLE)
        return np.asarray(resized, dtype=np.uint8)


def as_uint8_images(images: Any) -> np.ndarray:
    """``images`` as one contiguous uint8 RGB ``(N, H, W, 3)`` array: grayscale repeated to
    RGB, integers checked to hold 0..255, floats in [0, 1] scaled as ``round(x * 255)``.

    Raises:
        DataError: the shape, dtype or value range is wrong; says which and how to fix it.
    """
    try:
        array = np.asarray(images)
    except ValueError as exc:
        raise DataError(
            f"images cannot form one array: {exc}",
            "all images must have the same height, width and channels; resize them first",
        ) from None
    _check_image_shape(array.shape)
    if array.ndim == 3:
        array = array[..., None]
    array = _to_uint8(array)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.ascontiguousarray(array)


def _check_image_shape(shape: tuple[int, ...]) -> None:
    want = "images must have shape (N, H, W, 3) for RGB or (N, H, W) for grayscale"
    if len(shape) not in (3, 4):
        raise DataError(f"{want}; got shape {shape}", "stack the images into one array")
    if shape[0] == 0:
        raise DataError("images is empty (0 images)", "pass at least one image per class")
    if len(shape) == 4 and shape[-1] not in (1, 3):
        if shape[1] in (1, 3):
            hint = "it looks channels-first (N, C, H, W): use np.transpose(images, (0, 2, 3, 1))"
        elif shape[-1] == 4:
            hint = "drop the alpha channel: images[..., :3]"
        else:
            hint = "give RGB (3 channels) or grayscale images"
        raise DataError(f"{want}; got shape {shape} with {shape[-1]} channels", hint)
    if 0 in shape[1:3]:
        raise DataError(f"{want}; got shape {shape} with an empty side", "images need pixels")


def _to_uint8(array: np.ndarray) -> np.ndarray:
    kind = array.dtype.kind
    if array.dtype == np.uint8:
        return array
    if kind in "iu":
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise DataError(
                f"integer images must hold values 0..255; got {low}..{high} ({array.dtype})",
                "rescale them to 0..255, or pass floats in [0, 1]",
            )
        return array.astype(np.uint8)
    if kind == "f":
        if not np.isfinite(array).all():
            raise DataError("images contain NaN or infinite values", "clean the array first")
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0:
            raise DataError(
                f"float images must hold values in [0, 1]; got {low:g}..{high:g}",
                "divide 0..255 images by 255, or pass them as uint8",
            )
        return np.rint(array * 255.0).astype(np.uint8)
    raise DataError(
        f"images have dtype {array.dtype}; need uint8, or floats in [0, 1]",
        "convert with images.astype(np.uint8)",
    )


ArraysInput = Dataset | tuple[Any, Any] | tuple[Any, Any, Sequence[str]]
