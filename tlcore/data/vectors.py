"""Labelled numeric vectors as a :class:`~tlcore.data.Dataset`: arrays from the Python API, a
``.npz`` file, a ``.npy`` file of vectors with one of labels, or a CSV table of numeric
feature columns and a label column.

The vectors are kept as float32 exactly as given (a vector model standardises them itself,
with statistics the core takes from the training split: :meth:`VectorDataset.vectors` and
:meth:`~tlcore.interfaces.VectorPreprocessing.of`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlcore.data.dataset import Dataset, modality_mismatch
from tlcore.data.text import Table, _lines, read_table
from tlcore.errors import DataError
from tlcore.inputs.image import _listing
from tlcore.inputs.vector import as_vectors, load_npy
from tlcore.tasks import DEFAULT_TASK, Task, get_task

if TYPE_CHECKING:
    from tlcore.interfaces import InputSpec


class VectorDataset(Dataset):
    """Numeric vectors with their labels.

    Args:
        vectors: a 2-D array ``(N, features)`` of real numbers: floats are kept (narrowed to
            float32, never rounded), integers and booleans converted; NaN and infinite
            values are refused, naming the rows.
        labels: as :class:`~tlcore.data.ArrayDataset` takes them (class indices or names;
            what ``task`` encodes otherwise).
        class_names: the output names (see :class:`~tlcore.data.ArrayDataset`).
        task: the :class:`~tlcore.tasks.Task` the labels are for (default classification).
        where: names each row in errors (``line 7`` of a CSV file).

    Raises:
        DataError: the vectors or labels are not usable; says which and how to fix them.
    """

    modality = "vector"
    source: Path | None = None
    """The file the vectors were read from, if any."""

    def __init__(
        self,
        vectors: Any,
        labels: Any,
        class_names: Sequence[str] | None = None,
        *,
        task: Task | None = None,
        where: Sequence[str] | None = None,
    ) -> None:
        array = as_vectors(vectors, where=where)
        task = task or get_task(DEFAULT_TASK)
        codes, names = task.encode_labels(labels, len(array), class_names)
        super().__init__(names, codes, task=task)
        # A read-only view: nothing here writes to it, and the caller's own array (kept
        # without a copy when it is float32 already) stays writeable.
        self.array: np.ndarray = array.view()
        """All source vectors, float32 ``(N, features)``; a subset shares it."""
        self.array.flags.writeable = False

    @property
    def features(self) -> int:
        """The vectors' length."""
        return int(self.array.shape[1])

    def vectors(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """The vectors at ``indices``, float32 ``(n, features)``, a new array."""
        return self.array[self._keys[self._positions(indices)]]

    def inputs(self, indices: np.ndarray | Sequence[int], spec: InputSpec) -> np.ndarray:
        """The vectors at ``indices`` as the vector model of ``spec`` takes them.

        Raises:
            DataError: the model does not take vectors, or takes another number of
                features.
        """
        if spec.modality != "vector":
            raise modality_mismatch(spec, "vectors")
        (features,) = spec.shape
        if features != self.features:
            raise DataError(
                f"the model takes vectors of {features} features but the data has "
                f"{self.features}",
                "give the data the model was made for, or train a model for these vectors",
            )
        return self.vectors(indices)

    def _content(self) -> Sequence[np.ndarray]:
        """The vectors, for :meth:`Dataset.fingerprint`."""
        return (self.array,)


def read_npz(
    path: str | os.PathLike[str], task: Task, names: Sequence[str] | None = None
) -> VectorDataset:
    """Vectors from a ``.npz`` file holding ``x`` (``(N, features)``), ``y`` (the labels)
    and optionally ``class_names`` (strings); read without unpickling.

    Raises:
        DataError: the file is missing or unreadable, lacks ``x`` or ``y`` (the arrays found
            are listed), or holds unusable values.
    """
    source = Path(path).expanduser()
    if not source.is_file():
        raise DataError(f"data file not found: {source}",
                        "give a .npz file with arrays x and y (np.savez(path, x=x, y=y))")
    try:
        with np.load(source, allow_pickle=False) as archive:
            found = {key: archive[key] for key in archive.files}
    except Exception as exc:  # numpy raises many types for a bad file
        raise DataError.caused_by(
            f"cannot read {source}", exc,
            "save it with np.savez(path, x=vectors, y=labels, class_names=np.array(names)) from "
            "numeric and str arrays; tlcore does not load pickled objects",
        ) from None
    missing = [key for key in ("x", "y") if key not in found]
    if missing:
        raise DataError(
            f"{source} has no array {' or '.join(missing)}; it holds "
            f"{_listing(sorted(found)) or 'nothing'}",
            "save it as np.savez(path, x=vectors, y=labels)",
        )
    given = found.get("class_names")
    class_names = [str(n) for n in given.tolist()] if given is not None else None
    return _dataset(source, found["x"], found["y"], names or class_names, task)


def read_npy(
    path: str | os.PathLike[str],
    labels: str | os.PathLike[str] | None,
    task: Task,
    names: Sequence[str] | None = None,
) -> VectorDataset:
    """Vectors from a ``.npy`` file ``(N, features)`` with labels from another ``.npy`` file
    (``data.labels``), one per vector.

    Raises:
        DataError: a file is missing or unreadable, or the labels file is not given.
    """
    source = Path(path).expanduser()
    if not labels or Path(labels).suffix.lower() != ".npy":
        raise DataError(
            f"{source} holds vectors without labels: data.labels must be a .npy file of "
            f"labels{f' (got {labels})' if labels else ''}",
            "save the labels with np.save(labels_path, y) and set data.labels (--labels), or "
            "put both in one .npz file: np.savez(path, x=x, y=y)",
        )
    arrays = []
    for file in (source, Path(labels).expanduser()):
        if not file.is_file():
            raise DataError(f"data file not found: {file}", "check the path")
        arrays.append(load_npy(file))
    return _dataset(source, arrays[0], arrays[1], names, task)


def _dataset(source: Path, x: np.ndarray, y: Any, names: Sequence[str] | None,
             task: Task, where: Sequence[str] | None = None) -> VectorDataset:
    if len(x) != len(y):
        raise DataError(f"{source}: {len(x)} vectors but {len(y)} labels",
                        "give exactly one label per vector")
    try:
        data = VectorDataset(x, y, names, task=task, where=where)
    except DataError as exc:
        raise DataError(f"{source}: {exc.message}", exc.hint) from None
    data.source = source
    return data


def read_vector_table(
    table: Table | str | os.PathLike[str],
    label_column: str,
    task: Task,
    names: Sequence[str] | None = None,
    text_column: str | None = None,
) -> VectorDataset:
    """Vectors from a CSV table: the label column, and every other column a numeric feature.

    Args:
        table: the file (:func:`~tlcore.data.text.read_table`), or its table already read.
        label_column: the column holding the labels, as ``task`` parses a label cell.
        task: the task the labels are for.
        names: the output names to encode against (a validation file uses the training
            set's).
        text_column: the text column the table was looked at for, named in the error when
            a cell is not a number (the table might have been meant as texts).

    Raises:
        DataError: the label column is missing (the columns are listed), no feature column,
            a cell that is not a number (row and column named), a bad label.
    """
    table = table if isinstance(table, Table) else read_table(table)
    table.require(label_column)
    features = [c for c in table.columns if c != label_column]
    if not features:
        raise DataError(f"{table.path} has only the label column {label_column!r}",
                        "add the feature columns (numbers)")
    values, labels, where, problems = [], [], [], []
    for line, row in table.rows:
        cells = [row.get(c) for c in features]
        bad = next((c for c, v in zip(features, cells, strict=True) if not _is_number(v)), None)
        if bad is not None:
            if text_column is not None and line == table.rows[0][0]:  # not numbers at all
                _not_numbers(table, line, bad, row.get(bad), label_column, text_column)
            problems.append(f"  line {line}, column {bad!r}: {row.get(bad)!r} is not a number")
            continue
        try:
            labels.append(task.parse_label(str(row.get(label_column) or "")))
        except ValueError as exc:
            problems.append(f"  line {line}: bad label {row.get(label_column)!r}: {exc}")
            continue
        values.append([float(v) for v in cells])
        where.append(f"{table.path} line {line}")
    if problems:
        raise DataError(
            f"{len(problems)} of {len(table.rows)} rows of {table.path} cannot be used:\n"
            + _lines(problems),
            f"every column but {label_column!r} must hold a number in every row",
        )
    return _dataset(table.path, np.array(values, dtype=np.float64).reshape(len(values), -1),
                    labels, names, task, where)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or value is None:
        return False
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _not_numbers(table: Table, line: int, column: str, cell: Any, label_column: str,
                 text_column: str) -> None:
    """The error for a table that is neither texts (no text column) nor vectors."""
    raise DataError(
        f"{table.path} is neither texts nor vectors: it has no text column {text_column!r}, "
        f"and not every column but the label {label_column!r} holds numbers (line {line}, "
        f"column {column!r}: {cell!r}); its columns are {_listing(table.columns)}",
        f"for texts set data.text_column (--text-column) to the column holding them; for "
        f"vectors keep only numeric feature columns besides {label_column!r}",
    )
