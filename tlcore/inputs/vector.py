"""The vector modality: numeric feature vectors, checked the same way for training and
prediction.

A vector model takes float32 ``(N, features)`` as the user has the numbers (it standardises
them itself). :func:`as_vectors` turns any real array into that, never rounding a float and
refusing NaN and infinite values with the row that holds them; :func:`read_vectors` reads a
``.npy`` file or a CSV file of numbers. Nothing here imports the recipe or a framework.
"""

from __future__ import annotations

import csv
import io
import numbers
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tlcore.errors import DataError
from tlcore.inputs.text import read_text
from tlcore.interfaces import InputSpec

_MAX_LISTED = 5

VectorInput = np.ndarray | str | os.PathLike[str] | Sequence[float]
"""One input to ``Predictor.predict`` of a vector model: an array ``(N, features)`` or
``(features,)``, a list of numbers (one vector), or a ``.npy`` / ``.csv`` file."""


def as_vectors(data: Any, what: str = "vectors", where: Sequence[str] | None = None) -> np.ndarray:
    """``data`` as a C-contiguous float32 ``(N, features)`` array: integers and booleans
    converted, floats kept (only narrowed to float32, never rounded).

    Args:
        data: a 2-D array (or nested lists) of real numbers.
        what: names the data in errors.
        where: names each row in errors (``line 7`` of a CSV file); default ``row i``.

    Raises:
        DataError: not 2-D, empty, not real numbers, or NaN / infinite values (the rows are
            named).
    """
    try:
        array = np.asarray(data)
    except ValueError as exc:
        raise DataError(f"{what} cannot form one array: {exc}",
                        "every vector must have the same number of features") from None
    if array.ndim != 2 or 0 in array.shape:
        raise DataError(
            f"{what} must be a 2-D array (samples, features) of numbers; got shape {array.shape}",
            "stack the vectors into one array, e.g. np.stack(rows)",
        )
    if array.dtype.kind not in "biuf":
        raise DataError(
            f"{what} must hold real numbers; got dtype {array.dtype}",
            "convert the columns to numbers (one-hot encode categories) first",
        )
    with np.errstate(over="ignore"):  # beyond float32's range becomes inf: refused below
        vectors = np.ascontiguousarray(array, dtype=np.float32)
    finite = np.isfinite(vectors)
    if not finite.all():
        rows = np.flatnonzero(~finite.all(axis=1)).tolist()
        named = [f"{where[r] if where is not None else f'row {r}'} (feature "
                 f"{int(np.flatnonzero(~finite[r])[0])})" for r in rows[:_MAX_LISTED]]
        more = f" and {len(rows) - _MAX_LISTED} more" if len(rows) > _MAX_LISTED else ""
        raise DataError(
            f"{what}: {len(rows)} row(s) hold NaN or infinite values (or numbers beyond "
            f"float32's range): {', '.join(named)}{more}",
            "fill or drop the missing values first (e.g. with the column's mean)",
        )
    return vectors


def read_vectors(path: str | os.PathLike[str]) -> tuple[np.ndarray, list[str]]:
    """The vectors of a ``.npy`` file (2-D, or 1-D for one vector) or a ``.csv`` file of
    numbers (a header line optional, every column a feature), and a name per row.

    Raises:
        DataError: the file is missing or unreadable, or holds anything but numbers.
    """
    source = Path(path).expanduser()
    if not source.is_file():
        raise DataError(f"vectors file not found: {source}", "check the path")
    if source.suffix.lower() == ".npy":
        array = load_npy(source)
        array = array[None] if array.ndim == 1 else array
        return as_vectors(array, str(source)), [f"{source}[{i}]" for i in range(len(array))]
    if source.suffix.lower() != ".csv":
        raise DataError(f"cannot read vectors from {source}",
                        "give a .npy or a .csv file of numbers, or an array")
    rows = [(n, cells) for n, cells in enumerate(csv.reader(io.StringIO(read_text(source))), 1)
            if any(c.strip() for c in cells)]
    if rows and not _numbers(rows[0][1]):
        rows = rows[1:]  # a header line
    where = [f"{source} line {n}" for n, _ in rows]
    for (n, cells) in rows:
        if not _numbers(cells):
            raise DataError(f"{source} line {n} holds something other than numbers",
                            "a CSV of vectors holds only feature columns, numbers, and an "
                            "optional header line")
    return as_vectors([[float(c) for c in cells] for _, cells in rows], str(source), where), where


def load_npy(path: Path) -> np.ndarray:
    """A ``.npy`` file's array, never unpickling (``allow_pickle=False``).

    Raises:
        DataError: the file cannot be read, or holds Python objects.
    """
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError, OSError, EOFError... for bad files
        raise DataError.caused_by(
            f"cannot read {path}", exc,
            "save it with np.save from a numeric (or, for labels, str) array; tlcore does not "
            "load pickled objects",
        ) from None


def _numbers(cells: list[str]) -> bool:
    try:
        [float(c) for c in cells]
    except ValueError:
        return False
    return True


def expand(inputs: VectorInput | Iterable[VectorInput]) -> list[tuple[str, Any]]:
    """``(source name, vector)`` per vector to predict on: arrays split into rows, files
    read, a list of numbers taken as one vector.

    Raises:
        DataError: a file cannot be read, or an input is not numbers.
    """
    if isinstance(inputs, np.ndarray | str | os.PathLike) or _is_vector(inputs):
        inputs = [inputs]
    items: list[tuple[str, Any]] = []
    for index, item in enumerate(inputs):
        if isinstance(item, str | os.PathLike):
            vectors, names = read_vectors(item)
            items.extend(zip(names, vectors, strict=True))
            continue
        array = np.asarray(item)
        if array.ndim == 1:
            items.append((f"<vector {index}>", array))
        elif array.ndim == 2:
            items.extend((f"<array {index}.{i}>", row) for i, row in enumerate(array))
        else:
            raise DataError(f"input {index} has shape {array.shape}; a vector model takes "
                            "(features,) or (N, features)", "give one vector or a 2-D array")
    return items


def _is_vector(inputs: Any) -> bool:
    return isinstance(inputs, list | tuple) and bool(inputs) and all(
        isinstance(v, numbers.Real) for v in inputs)


def decode(item: Any, spec: InputSpec) -> np.ndarray:
    """One vector as the model's float32 ``(features,)`` row.

    Raises:
        DataError: another number of features, not numbers, or NaN / infinite values.
    """
    row = as_vectors(np.asarray(item).reshape(1, -1), "the vector")[0]
    _check_features(row.shape[0], spec)
    return row


def check_batch(batch: np.ndarray, spec: InputSpec) -> np.ndarray:
    """``batch`` as the float32 ``(N, features)`` array the model takes, or a DataError."""
    vectors = as_vectors(batch, "the batch")
    _check_features(vectors.shape[1], spec)
    return vectors


def _check_features(found: int, spec: InputSpec) -> None:
    (features,) = spec.shape
    if found != features:
        raise DataError(
            f"the model takes vectors of {features} features; got {found}",
            "give the features in the order and number the model was trained on",
        )


class VectorInputs:
    """The vector modality as the runtime sees it: arrays and files of numbers."""

    name = "vector"

    def expand(self, inputs: Any) -> list[tuple[str, Any]]:
        """``(source, vector)`` pairs: see :func:`expand`."""
        return expand(inputs)

    def decode(self, item: Any, spec: InputSpec) -> np.ndarray:
        """One vector as the model's input: see :func:`decode`."""
        return decode(item, spec)

    def check(self, batch: np.ndarray, spec: InputSpec) -> np.ndarray:
        """A ready batch, checked: see :func:`check_batch`."""
        return check_batch(batch, spec)
