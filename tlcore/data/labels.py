"""Turning the labels a user gives (strings or integers) into class indices and names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tlcore.errors import DataError
from tlcore.inputs.image import _listing


def _encode_labels(
    labels: Any, count: int, class_names: Sequence[str] | None
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Labels as int64 codes plus the class names they index."""
    values = np.asarray(labels)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim == 2 and values.shape[0] == count:
        raise DataError(
            f"labels have shape {values.shape}; they look one-hot encoded",
            "pass class indices instead: labels.argmax(axis=1)",
        )
    if values.ndim != 1:
        raise DataError(
            f"labels must be 1-D, one per image; got shape {values.shape}",
            "pass a list or 1-D array of class indices or names",
        )
    if len(values) != count:
        raise DataError(
            f"got {count} images but {len(values)} labels", "give exactly one label per image"
        )
    names = _check_names(class_names)
    if values.dtype.kind in "USO" and all(isinstance(v, str) for v in values.tolist()):
        return _encode_strings(values, names)
    return _encode_ints(values, names)


def _encode_strings(
    values: np.ndarray, names: tuple[str, ...] | None
) -> tuple[np.ndarray, tuple[str, ...]]:
    unique, inverse = np.unique(values.astype(str), return_inverse=True)
    if names is None:
        names = tuple(unique.tolist())
    index = {name: i for i, name in enumerate(names)}
    unknown = [str(u) for u in unique.tolist() if u not in index]
    if unknown:
        raise DataError(
            f"labels not in class_names: {_listing(unknown)}",
            f"class_names are {list(names)}; add the missing names or fix the labels",
        )
    codes = np.array([index[u] for u in unique.tolist()], dtype=np.int64)[inverse]
    _need_two(names)
    return codes, names


def _encode_ints(
    values: np.ndarray, names: tuple[str, ...] | None
) -> tuple[np.ndarray, tuple[str, ...]]:
    kind = values.dtype.kind
    if kind == "O":
        if not all(isinstance(v, int | np.integer) for v in values.tolist()):
            raise DataError(
                "labels mix types; need all integers or all strings",
                f"first labels: {values[:5].tolist()}",
            )
        values = values.astype(np.int64)
    elif kind == "f":
        if not (np.isfinite(values).all() and (values == np.round(values)).all()):
            raise DataError(
                "labels must be integer class indices or strings; got fractional values",
                "for one-hot or soft labels pass labels.argmax(axis=1)",
            )
    elif kind not in "iub":
        raise DataError(
            f"labels have dtype {values.dtype}; need integers or strings",
            "pass class indices 0 .. C-1 or class names",
        )
    codes = values.astype(np.int64)
    if codes.min() < 0:
        raise DataError(f"labels must be >= 0; got {int(codes.min())}", "use indices 0 .. C-1")
    top = int(codes.max())
    if names is None:
        names = tuple(str(i) for i in range(top + 1))
    elif top >= len(names):
        raise DataError(
            f"label {top} has no class name: class_names has {len(names)} entries",
            "give one name per class index 0 .. C-1",
        )
    _need_two(names)
    return codes, names


def _check_names(class_names: Sequence[str] | None) -> tuple[str, ...] | None:
    if class_names is None:
        return None
    if isinstance(class_names, str):
        raise DataError(
            "class_names must be a list of names, not one string",
            'e.g. class_names=["cat", "dog"]',
        )
    names = tuple(str(n) for n in class_names)
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise DataError(
            f"class_names has duplicates: {_listing(duplicated)}", "give each class one unique name"
        )
    return names


def _need_two(names: tuple[str, ...]) -> None:
    if len(names) < 2:
        raise DataError(
            f"only one class ({names[0]!r}); need at least two classes",
            "a classifier needs examples of two or more classes",
        )
