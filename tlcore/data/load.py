"""From the recipe's ``data`` section to the training and validation datasets: images, texts
or vectors, from folders, files or the caller's arrays.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tlcore.data.arrays import ArrayDataset, ArraysInput
from tlcore.data.dataset import Dataset
from tlcore.data.folder import scan_folder
from tlcore.data.labelfile import LabelFileDataset
from tlcore.data.split import (
    AUTO_VAL_SPLIT,
    MIN_CLASS_FOR_VAL,
    MIN_VAL_IMAGES,
    MIN_VAL_PER_CLASS,
    split,
    strata,
)
from tlcore.data.text import TextDataset, read_table, read_text_table
from tlcore.data.vectors import VectorDataset, read_npy, read_npz, read_vector_table
from tlcore.errors import DataError
from tlcore.inputs.image import _listing
from tlcore.recipe import DataSpec
from tlcore.tasks import DEFAULT_TASK, Task, get_task


def load_datasets(
    spec: DataSpec, seed: int, arrays: ArraysInput | None = None, task: Task | str | None = None
) -> tuple[Dataset, Dataset]:
    """The training and validation datasets a recipe's ``data`` section asks for.

    The training data comes from ``arrays`` when given (a :class:`Dataset`, e.g. an
    :class:`ArrayDataset`, or an ``(x, labels[, class_names])`` tuple: ``x`` a list of strings
    makes a :class:`~tlcore.data.text.TextDataset`, a 2-D array of numbers a
    :class:`~tlcore.data.vectors.VectorDataset`, images an :class:`ArrayDataset`), else from
    a file ``spec.path`` of texts or vectors (:data:`DATA_FILES`: a CSV holds texts when it
    has the column ``spec.text_column``, else numeric feature columns; JSONL texts; ``.npz``
    ``x`` and ``y``; ``.npy`` vectors with ``spec.labels`` a ``.npy`` of labels), else from
    the label file ``spec.labels`` (images under ``spec.path``: :class:`LabelFileDataset`),
    else from the folder ``spec.path`` (images, or ``.txt`` texts: :func:`scan_folder`).
    With ``spec.val_path``, that folder (a label file, with ``spec.labels``; a file of the
    same kind for texts and vectors) is the validation set (same class names required) and
    all training data trains; otherwise :func:`split` holds out ``spec.val_split`` of each
    class. With
    ``val_split == 0`` and no ``val_path`` the validation set is empty: the caller must skip
    evaluation and early stopping.

    ``val_split`` unset adapts to the data: :data:`AUTO_VAL_SPLIT` of each class, at least
    :data:`MIN_VAL_PER_CLASS` images; and no validation set when the smallest class has fewer
    than :data:`MIN_CLASS_FOR_VAL` images or the set would hold fewer than
    :data:`MIN_VAL_IMAGES`. With few images a fifth of them is worth more as training data
    than as a measurement: on Fashion-MNIST (``benchmarks/transfer.py``, three seeds) holding
    out a fifth at 10 and at 50 images per class left tlcore's defaults 1 point below a
    logistic regression trained on all the images, and training on all of them put the
    defaults level with it or above; at 100 per class they beat it with the fifth held out.
    Fifty images measure an accuracy to about ±14 points (two standard errors at 50 %), too
    coarse to choose an epoch by.

    Args:
        spec: the recipe's data section.
        seed: seeds the split (the recipe's ``train.seed``).
        arrays: the caller's own data instead of ``spec.path``.
        task: the recipe's task (or its name), which reads the labels; classification when
            not given.

    Returns:
        ``(train, val)``.

    Raises:
        DataError: no data given, both a path and arrays given, or the data is unusable
            (or not what ``task`` trains on).
    """
    task = get_task(task or DEFAULT_TASK) if not isinstance(task, Task) else task
    data = _training_source(spec, arrays, task)
    task.check_targets(data.labels)
    if spec.val_path:
        return data, _validation_source(spec, task, data)
    if spec.val_split is not None:
        return split(data, spec.val_split, seed)
    train, val = split(data, AUTO_VAL_SPLIT, seed, MIN_VAL_PER_CLASS)
    smallest = min(len(members) for _, members in strata(data))
    if smallest < MIN_CLASS_FOR_VAL or len(val) < MIN_VAL_IMAGES:
        return split(data, 0.0, seed)
    return train, val


DATA_FILES = (".csv", ".jsonl", ".npz", ".npy")
"""Suffixes of a ``data.path`` that is one file of labelled texts or vectors."""


def _training_source(spec: DataSpec, arrays: ArraysInput | None, task: Task) -> Dataset:
    if arrays is not None and (spec.path or spec.labels):
        raise DataError(
            f"got both data.{'labels' if spec.labels else 'path'} "
            f"({spec.labels or spec.path}) and arrays",
            "give one source: remove data.path and data.labels from the recipe or do not "
            "pass arrays",
        )
    if arrays is None:
        if spec.path and _is_data_file(spec.path):
            return _data_file(spec.path, spec, task)
        if spec.labels:
            return LabelFileDataset(spec.labels, task, images=spec.path)
        if not task.reads_folders:
            raise DataError(
                f"task {task.name} reads its labels from a label file, and data.labels is "
                "not set",
                f"set data.labels (tl train --labels) to a CSV file of lines like "
                f"{task.label_example}, or pass arrays",
            )
        if not spec.path:
            raise DataError(
                "no training data: data.path is not set",
                "set data.path to a folder with one sub-folder per class, or pass arrays",
            )
        return scan_folder(spec.path)
    if isinstance(arrays, Dataset):
        return arrays
    if isinstance(arrays, tuple) and len(arrays) in (2, 3):
        kind = _array_kind(arrays[0])
        if kind == "text":
            return TextDataset(*arrays, task=task)
        if kind == "vector":
            return VectorDataset(*arrays, task=task)
        return ArrayDataset(*arrays, task=task)
    raise DataError(
        f"cannot use arrays of type {type(arrays).__name__}",
        "pass an ArrayDataset, or a tuple (images, labels) or (images, labels, class_names)",
    )


def _array_kind(first: Any) -> str:
    """What the first element of an API tuple holds: ``text`` (strings), ``vector`` (a 2-D
    array of numbers) or ``image`` (anything else, which ArrayDataset checks)."""
    if isinstance(first, str):
        return "text"
    if isinstance(first, list | tuple):
        if first and all(isinstance(t, str) for t in first):
            return "text"
        return "vector" if first and np.ndim(first[0]) == 1 else "image"
    if not isinstance(first, np.ndarray) and not hasattr(first, "__array__"):
        return "image"
    array = np.asarray(first)
    if array.ndim == 1 and array.dtype.kind in "USO":
        return "text"
    return "vector" if array.ndim == 2 and array.dtype.kind in "biuf" else "image"


def _is_data_file(path: str) -> bool:
    return Path(path).suffix.lower() in DATA_FILES and not Path(path).expanduser().is_dir()


def _data_file(path: str, spec: DataSpec, task: Task, train: Dataset | None = None) -> Dataset:
    """Texts or vectors from one file: a CSV holds texts when it has ``data.text_column``
    (or the training data are texts), else vectors; JSONL texts; ``.npz`` / ``.npy``
    vectors."""
    suffix = Path(path).suffix.lower()
    names = train.class_names if train is not None else None
    if suffix == ".npy":
        labels = spec.labels if train is None else None
        return read_npy(path, labels, task, names)
    if spec.labels:
        raise DataError(
            f"data.path {path} holds its own labels, so data.labels ({spec.labels}) is not used",
            "remove data.labels; the labels are data.label_column of the file"
            if suffix != ".npz" else "remove data.labels; the labels are the array y",
        )
    if suffix == ".npz":
        return read_npz(path, task, names)
    table = read_table(path)
    texts = spec.text_column in table.columns if train is None else train.modality == "text"
    if suffix == ".jsonl" or texts:
        return read_text_table(table, spec.text_column, spec.label_column, task, names)
    return read_vector_table(table, spec.label_column, task, names, spec.text_column)


def _validation_source(spec: DataSpec, task: Task, data: Dataset) -> Dataset:
    """The separate validation set: a label file with the training outputs' names, a folder
    with the training classes, or a file of texts or vectors (encoded with the training
    outputs' names)."""
    assert spec.val_path is not None
    if _is_data_file(spec.val_path):
        val = _data_file(spec.val_path, spec, task, data)
    elif spec.labels and data.modality == "image":
        return LabelFileDataset(spec.val_path, task, images=spec.path, names=data.class_names)
    else:
        val = scan_folder(spec.val_path)
    if val.modality != data.modality:
        raise DataError(
            f"the validation data {spec.val_path} holds {val.modality}s but the training data "
            f"holds {data.modality}s",
            "give validation data of the same kind as the training data",
        )
    _same_classes(data.class_names, val.class_names, spec.val_path)
    return val
def _same_classes(train: tuple[str, ...], val: tuple[str, ...], val_path: str) -> None:
    if train == val:
        return
    only_train = sorted(set(train) - set(val))
    only_val = sorted(set(val) - set(train))
    if not only_train and not only_val:
        raise DataError(
            f"validation classes in {val_path} are ordered differently from the training ones",
            f"order the training class names as {list(val)} (sorted)",
        )
    parts = []
    if only_train:
        parts.append(f"only in training: {_listing(only_train)}")
    if only_val:
        parts.append(f"only in validation: {_listing(only_val)}")
    raise DataError(
        f"validation folder {val_path} has other classes than the training data ("
        + "; ".join(parts)
        + ")",
        "training and validation need the same class folders",
    )
