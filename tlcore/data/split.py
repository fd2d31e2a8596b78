"""The stratified train/validation split, and its adaptive default.
"""

from __future__ import annotations

import zlib

import numpy as np

from tlcore.data.dataset import _D, Dataset
from tlcore.errors import DataError

#: ``data.val_split`` unset: the share held out of each class...
AUTO_VAL_SPLIT = 0.2


#: ... but at least this many images of each class ...
MIN_VAL_PER_CLASS = 2


#: ... and nothing when the smallest class has fewer images than this ...
MIN_CLASS_FOR_VAL = 100


#: ... or when fewer validation images than this would be held out in all (see ``DataSpec``).
MIN_VAL_IMAGES = 50


def split(dataset: _D, val_split: float, seed: int, min_held: int = 1) -> tuple[_D, _D]:
    """Hold out a stratified, seeded share of each class for validation.

    Each class is shuffled by its own generator, seeded by ``seed`` and the class name, so
    adding a class leaves the other classes' splits unchanged. Labels that are not classes
    (multi-label, regression) are split as one group (:func:`strata`). A class of ``n``
    images gives ``round(n * val_split)`` to validation, at least ``min_held`` when
    ``val_split > 0`` and ``n >= 2``, and always keeps at least one for training. Both parts
    keep the dataset's order.

    Args:
        dataset: any dataset.
        val_split: share for validation, 0 <= val_split < 1; 0 gives an empty validation set.
        seed: a non-negative integer.
        min_held: the fewest validation images of a class (when it has more).

    Returns:
        ``(train, val)`` subsets of ``dataset``.
    """
    if not 0.0 <= float(val_split) < 1.0:
        raise DataError(f"val_split must be in [0, 1); got {val_split}", "e.g. 0.2 for 20%")
    if int(seed) < 0:
        raise DataError(f"seed must be >= 0; got {seed}", "use a non-negative integer seed")
    train: list[np.ndarray] = []
    val: list[np.ndarray] = []
    unvalidated: list[str] = []
    for name, members in strata(dataset):
        # surrogateescape: a folder name that is not UTF-8 (bytes on Linux) is a name too
        key = zlib.crc32(name.encode("utf-8", "surrogateescape"))
        rng = np.random.default_rng([int(seed), key])
        shuffled = rng.permutation(members)
        held = _held_out(len(members), val_split, min_held)
        val.append(shuffled[:held])
        train.append(shuffled[held:])
        if val_split > 0 and not held and name:
            noun = dataset.noun if len(members) != 1 else dataset.noun[:-1]  # "1 image"
            unvalidated.append(f"{name!r} ({len(members)} {noun})")
    parts = dataset.subset(np.sort(np.concatenate(train))), dataset.subset(
        np.sort(np.concatenate(val))
    )
    if unvalidated:
        # Its validation metrics then say nothing about it: say so by name.
        text = (
            f"class(es) with too few {dataset.noun} to hold one out for validation, so the "
            f"validation metrics measure nothing of them: {', '.join(unvalidated)}; add "
            f"{dataset.noun}"
        )
        for part in parts:
            part.warnings = (*part.warnings, text)
    return parts


def strata(dataset: Dataset) -> list[tuple[str, np.ndarray]]:
    """The groups a split holds out from alike: ``(class name, its positions)`` per class of
    a classification dataset, one group ``("", every position)`` for any other task."""
    if dataset.labels.ndim == 1 and dataset.labels.dtype.kind in "iu":
        return [
            (name, np.flatnonzero(dataset.labels == code))
            for code, name in enumerate(dataset.class_names)
        ]
    return [("", np.arange(len(dataset)))]


def _held_out(count: int, val_split: float, min_held: int = 1) -> int:
    if count < 2 or val_split <= 0:
        return 0
    return min(max(int(np.floor(count * val_split + 0.5)), min_held), count - 1)
