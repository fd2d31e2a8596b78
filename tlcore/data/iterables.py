"""Batches from the caller's own pipeline: a PyTorch ``DataLoader``, a ``tf.data.Dataset`` or
any iterable of ``(x, y)`` batches, read once into the arrays the data layer takes.

Transfer-learning data is small, and the core's pipeline (its seeded split, shuffling,
augmentation and feature cache) works on arrays: so the iterable is read ONCE, front to back,
and its batches concatenated. The loader's own shuffling and random transforms therefore act
once, not per epoch; the recipe's ``data.augment`` is what augments every epoch.

Tensors are converted without importing their framework (duck typing: ``.detach().cpu()``,
``.numpy()``, ``__array__``). Images are tlcore's uint8 NHWC (or floats in [0, 1]); a batch
that is unambiguously channels-first, ``(N, 1 or 3, H, W)`` with a last side that is no channel
count, as ``transforms.ToTensor()`` gives, is transposed to channels-last. Normalised images
(floats outside [0, 1]) are refused: the backbone's own normalisation is tlcore's business.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from tlcore.errors import DataError

EXPECTED = (
    "a folder, a (x, labels) pair of arrays, a tlcore.data.Dataset, or an iterable of (x, y) "
    "batches (a torch DataLoader, a tf.data.Dataset, a generator)"
)
"""What ``data`` may be in the Python API, for errors."""


def is_batch_iterable(data: Any) -> bool:
    """Whether ``data`` is taken as an iterable of ``(x, y)`` batches: iterable, and none of
    the forms the data layer reads itself (a path, a tuple of arrays, an array, a mapping)."""
    from tlcore.data.dataset import Dataset

    if isinstance(data, str | bytes | tuple | Mapping | np.ndarray | Dataset):
        return False
    if hasattr(data, "__array__") or hasattr(data, "__fspath__"):  # a tensor, a Path
        return False
    return isinstance(data, Iterable)


def check_data_type(data: Any) -> None:
    """Refuse, with what would be accepted, a ``data`` that is none of :data:`EXPECTED`.

    Raises:
        DataError: ``data`` is a mapping, a lone array (no labels) or not iterable.
    """
    from tlcore.data.dataset import Dataset

    if data is None or isinstance(data, str | tuple | Dataset) or hasattr(data, "__fspath__"):
        return
    if is_batch_iterable(data):
        return
    what = type(data).__name__
    if isinstance(data, np.ndarray) or hasattr(data, "__array__"):
        hint = "pass the labels with it: data=(x, labels)"
    elif isinstance(data, Mapping):
        hint = "pass data=(mapping['x'], mapping['y']) (a tuple, not a dict)"
    else:  # a map-style dataset (torch's Dataset) has items but no iteration order
        hint = "pass one of those; wrap a map-style dataset: DataLoader(dataset, batch_size=64)"
    raise DataError(f"cannot read data of type {what}; expected {EXPECTED}", hint)


def read_batches(batches: Iterable[Any]) -> tuple[Any, np.ndarray]:
    """All of ``batches`` as one ``(x, labels)`` pair, the form the data layer reads: ``x`` a
    list of strings (texts), a 2-D array (vectors) or an image array (uint8 or float in [0,
    1], NHWC); ``labels`` concatenated. Read once, in the iterable's order.

    Raises:
        DataError: a batch is not an ``(x, y)`` pair, batches disagree in shape or kind, no
            batch at all, or images are normalised; says what was expected and how to fix it.
    """
    xs: list[Any] = []
    ys: list[np.ndarray] = []
    try:
        iterator = iter(batches)
    except TypeError:
        raise DataError(f"cannot iterate over {type(batches).__name__}", EXPECTED) from None
    for number, batch in enumerate(iterator):
        x, y = _pair(batch, number)
        xs.append(_texts(x) if _is_text(x) else _array(x, f"batch {number}: x"))
        ys.append(_labels(y, number, len(xs[-1])))
    if not xs:
        raise DataError(
            f"the {type(batches).__name__} gave no batches",
            "pass a loader with data (one that is not exhausted: a generator is read once)",
        )
    if all(isinstance(x, list) for x in xs):
        texts: list[str] = [t for x in xs for t in x]
        return texts, _concatenate(ys, "y")
    if any(isinstance(x, list) for x in xs):
        raise DataError("some batches hold texts and others arrays", "give one kind of x")
    return _images_last(_concatenate(xs, "x")), _concatenate(ys, "y")


def _pair(batch: Any, number: int) -> tuple[Any, Any]:
    """``(x, y)`` of one batch, which must be a pair (a tuple or a list of two)."""
    if isinstance(batch, tuple | list) and len(batch) == 2:
        return batch[0], batch[1]
    got = type(batch).__name__ + (f" of {len(batch)}" if isinstance(batch, tuple | list) else "")
    raise DataError(
        f"batch {number} is a {got}; each batch must be a pair (x, y) of inputs and labels",
        "yield (inputs, labels) from the loader (a dict batch: map it to a pair first); "
        "arrays in memory are passed as a tuple, data=(x, labels)",
    )


def _is_text(x: Any) -> bool:
    """Strings: a list or tuple of ``str``, or a tensor/array of strings or bytes."""
    if isinstance(x, list | tuple):
        return bool(x) and all(isinstance(t, str | bytes) for t in x)
    array = _numpy(x)
    return array is not None and array.dtype.kind in "USO" and array.ndim == 1


def _texts(x: Any) -> list[str]:
    """The strings of one text batch (bytes, as a ``tf.string`` tensor gives, decoded UTF-8)."""
    items = list(x) if isinstance(x, list | tuple) else list(_numpy(x))  # type: ignore[arg-type]
    return [t.decode("utf-8") if isinstance(t, bytes) else t for t in items]


def _numpy(value: Any) -> np.ndarray | None:
    """``value`` as a numpy array, without importing its framework; ``None`` if it is none."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor (maybe on a GPU)
        value = value.detach().cpu()
    if hasattr(value, "numpy"):  # torch, TensorFlow eager, JAX
        value = value.numpy()
    try:
        return np.asarray(value)
    except (TypeError, ValueError):
        return None


def _array(value: Any, where: str) -> np.ndarray:
    array = _numpy(value)
    if array is None or array.dtype == object or array.ndim == 0:
        raise DataError(
            f"{where} is a {type(value).__name__}, not an array of numbers or a list of texts",
            "yield numpy arrays or framework tensors (images, vectors) or lists of strings",
        )
    return array


def _labels(y: Any, number: int, size: int) -> np.ndarray:
    array = _numpy(y)
    if array is not None and array.ndim == 0:  # an unbatched tf.data element
        raise DataError(
            f"batch {number} holds one label, not a batch of them: the data is not batched",
            "batch it: dataset.batch(32) for a tf.data.Dataset (a DataLoader batches itself)",
        )
    array = _array(y, f"batch {number}: y")
    if array.dtype.kind == "S":  # tf.string labels
        array = np.char.decode(array, "utf-8")
    if len(array) != size:
        raise DataError(
            f"batch {number} has {size} inputs and {len(array)} labels",
            "yield one label per input",
        )
    return array


def _concatenate(parts: list[np.ndarray], name: str) -> np.ndarray:
    shapes = {part.shape[1:] for part in parts}
    if len(shapes) > 1:
        raise DataError(
            f"the batches' {name} differ in shape after the batch axis: {sorted(shapes)}",
            "resize every input to one size in the loader (or pass a folder: tlcore resizes)",
        )
    return np.concatenate(parts)


def _images_last(x: np.ndarray) -> np.ndarray:
    """Channels-first images made channels-last when that reading is the only one; normalised
    float images refused (their mean and scale are unknown, so they cannot become pixels)."""
    if x.ndim == 4 and x.shape[1] in (1, 3) and x.shape[-1] not in (1, 3):
        x = np.transpose(x, (0, 2, 3, 1))
    if x.ndim in (3, 4) and x.dtype.kind == "f" and np.isfinite(x).all() and x.size:
        low, high = float(x.min()), float(x.max())
        if low < 0.0 or high > 1.0:
            raise DataError(
                f"the images look normalised (values {low:.3g}..{high:.3g}); tlcore takes "
                "pixels, uint8 0..255 or floats in [0, 1], and normalises them as the backbone "
                "expects",
                "drop transforms.Normalize (or your own scaling) from the loader's transform",
            )
    return x
