"""The :class:`Dataset` interface the training driver sees, and :class:`FolderDataset`.

``images(indices, size)`` returns uint8 RGB NHWC arrays at ``size``; decoded, resized images
are kept in a bounded in-memory cache so later epochs do not decode again.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeVar

import numpy as np

from tlcore.errors import DataError
from tlcore.inputs.image import _check_size
from tlcore.tasks import DEFAULT_TASK, Task, get_task

if TYPE_CHECKING:
    from tlcore.interfaces import InputSpec

DEFAULT_CACHE_BYTES = 1 << 30
"""Decoded images kept in memory per scanned folder or array set (1 GiB); beyond it, decode."""


_T = TypeVar("_T")


_D = TypeVar("_D", bound="Dataset")


class Dataset:
    """Labelled images, read by index at any size.

    Attributes:
        class_names: one name per output of the model: per class (label ``i`` means
            ``class_names[i]``), per label of a multi-label task, the target of a regression.
        labels: the targets, read-only, as the :attr:`task` encodes them: int64 class
            indices ``(len(self),)``, float32 multi-hot ``(len(self), labels)`` or float64
            values ``(len(self),)``.
        task: the :class:`~tlcore.tasks.Task` the labels are for (classification unless
            given).
        warnings: what reading the data found wrong or left out, by name (links skipped,
            look-alike class names, a class too small to validate): the trainer says each
            and keeps it in ``tlcore.json``. Subsets carry their source's.

    A subclass calls ``super().__init__(class_names, labels)`` and implements
    ``_read(key, size)``, which returns one uint8 ``(height, width, 3)`` image for the
    source item ``key`` (an index into the labels given at construction). Subsets made by
    :meth:`subset` share the source and its cache.

    A dataset that reads files keeps them as ``_files`` (source order) below ``root``:
    :meth:`fingerprint` then lists them.
    """

    warnings: tuple[str, ...] = ()

    def __init__(
        self,
        class_names: Sequence[str],
        labels: np.ndarray,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        task: Task | None = None,
    ) -> None:
        self.class_names: tuple[str, ...] = tuple(class_names)
        self.task: Task = task or get_task(DEFAULT_TASK)
        floats = np.asarray(labels).dtype.kind == "f"
        self.labels: np.ndarray = _readonly(
            np.array(labels, dtype=None if floats else np.int64, copy=True)
        )
        self._keys: np.ndarray = _readonly(np.arange(len(self.labels), dtype=np.int64))
        self._source_labels = self.labels  # what a subset keeps of its source, to fingerprint
        self._cache = _ImageCache(cache_bytes)

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.describe()}>"

    modality: str = "image"
    """What the data holds, as an :class:`~tlcore.interfaces.InputSpec` names it: ``image``,
    ``text`` (:class:`~tlcore.data.text.TextDataset`) or ``vector``
    (:class:`~tlcore.data.vectors.VectorDataset`)."""

    def inputs(self, indices: np.ndarray | Sequence[int], spec: InputSpec) -> np.ndarray:
        """The samples at ``indices`` as the model's input batch, as ``spec`` describes it
        (the data layer's seam for modalities: uint8 images here; token ids and vectors in
        the text and vector datasets).

        Raises:
            DataError: this dataset holds another modality than the model takes.
        """
        if spec.modality != "image":
            raise modality_mismatch(spec, "images")
        return self.images(indices, spec.size)

    def images(self, indices: np.ndarray | Sequence[int], size: tuple[int, int]) -> np.ndarray:
        """Read images as one uint8 RGB array.

        Args:
            indices: positions in this dataset (an int array or list; a bool mask works too).
            size: ``(height, width)`` of the result; a single int means a square.

        Returns:
            Array of shape ``(len(indices), height, width, 3)``, dtype uint8, a new array.

        Raises:
            DataError: an image cannot be decoded (names the file).
        """
        if self.modality != "image":  # texts and vectors are read through inputs()
            raise DataError(
                f"the model takes images but the data holds {_KINDS[self.modality]}",
                "pick a backbone for the data's kind (texts: hf: a text model's folder; "
                "vectors: builtin:mlp), or image data",
            )
        keys = self._keys[self._positions(indices)]
        height, width = _check_size(size)
        out = np.empty((len(keys), height, width, 3), dtype=np.uint8)
        missing: list[int] = []
        for row, key in enumerate(keys.tolist()):
            hit = self._cache.get((key, height, width))
            if hit is None:
                missing.append(row)
            else:
                out[row] = hit
        if missing:
            wanted = [int(keys[row]) for row in missing]
            decoded = _parallel_map(lambda key: self._read(key, (height, width)), wanted)
            for row, key, image in zip(missing, wanted, decoded, strict=True):
                out[row] = image
                self._cache.put((key, height, width), image)
        return out

    def subset(self, indices: np.ndarray | Sequence[int]) -> Self:
        """A view on some of the images, in the given order; same type, same class names.

        The subset shares the source (files or array) and the decoded-image cache.
        """
        positions = self._positions(indices)
        view = copy.copy(self)
        view.labels = _readonly(self.labels[positions])
        view._keys = _readonly(self._keys[positions])
        return view

    @property
    def source_indices(self) -> np.ndarray:
        """Where this view's images sit in the dataset it was made from (read-only int64)."""
        return self._keys

    def counts(self) -> np.ndarray:
        """Images per class (per label of a multi-label task), an int64 array of
        ``len(class_names)``."""
        return self.task.counts(self.labels, self.class_names)

    def describe(self) -> str:
        """One line: example and class counts, e.g. ``120 images, 2 classes: cat 60, dog 60``."""
        return self.task.describe(self.labels, self.class_names, self.noun)

    @property
    def noun(self) -> str:
        """What the examples are, plural, for messages: ``images``, ``texts``, ``vectors``."""
        return _KINDS[self.modality]

    def fingerprint(self) -> dict[str, Any]:
        """What identifies the data this dataset, and every subset of it, was made from: so
        that resuming a run notices when the data changed.

        Returns:
            ``kind`` (the class name), ``classes``, ``count`` (images in the source) and
            ``digest``, a sha256 of all of it, of the labels and of the content (the array
            of an :class:`~tlcore.data.ArrayDataset`); a dataset of files adds ``files``:
            ``{path below root: "size mtime_ns"}``, cheap to take and to compare (a file
            rewritten with the same size and time is not noticed).
        """
        files = self._file_stats()
        labels = np.ascontiguousarray(self._source_labels)
        digest = hashlib.sha256()
        head = [type(self).__name__, list(self.class_names), str(labels.dtype), labels.shape]
        digest.update(json.dumps([head, files], sort_keys=True).encode("utf-8"))
        digest.update(labels.tobytes())
        for chunk in self._content():
            digest.update(np.ascontiguousarray(chunk).data)
        found: dict[str, Any] = {
            "kind": type(self).__name__,
            "classes": list(self.class_names),
            "count": len(labels),
            "digest": digest.hexdigest(),
        }
        return {**found, "files": files} if files else found

    def _content(self) -> Sequence[np.ndarray]:
        """The in-memory data :meth:`fingerprint` hashes besides the labels (none here)."""
        return ()

    def _file_stats(self) -> dict[str, str]:
        files: tuple[Path, ...] = getattr(self, "_files", ())
        root = getattr(self, "root", None)
        stats = {}
        for path in files:
            try:
                info = path.stat()
                stat = f"{info.st_size} {info.st_mtime_ns}"
            except OSError:
                stat = "missing"
            below = os.path.relpath(path, root) if root is not None else str(path)
            stats[below.replace(os.sep, "/")] = stat
        return stats

    def _read(self, key: int, size: tuple[int, int]) -> np.ndarray:
        raise NotImplementedError

    def _positions(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        positions = np.asarray(indices)
        if positions.dtype == bool:
            if positions.shape != (len(self),):
                raise IndexError(f"a mask needs {len(self)} entries, got shape {positions.shape}")
            return np.flatnonzero(positions)
        if positions.size == 0:
            return np.zeros(0, dtype=np.int64)
        if positions.ndim != 1 or positions.dtype.kind not in "iu":
            raise IndexError(f"indices must be a 1-D list of integers, got {positions!r:.80}")
        if positions.max() >= len(self) or positions.min() < -len(self):
            raise IndexError(f"index out of range for a dataset of {len(self)} images")
        return positions.astype(np.int64)


_KINDS = {"image": "images", "text": "texts", "vector": "vectors"}


def modality_mismatch(spec: InputSpec, held: str) -> DataError:
    """The error for data of one kind (``held``: ``images``, ``texts``, ``vectors``) given to
    a model that takes another."""
    takes = _KINDS.get(spec.modality, f"{spec.modality} inputs")
    return DataError(
        f"the model takes {takes} but the data holds {held}",
        f"pick a backbone for {held} (images: an image network; texts: hf: a text model's "
        "folder; vectors: builtin:mlp), or give data of the model's kind",
    )


class _ImageCache:
    """Decoded images up to a byte budget; once full, new images are simply not kept.

    Filling first and never evicting suits epochs, which read every image in turn: an LRU
    cache smaller than the dataset would miss on every read.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(int(max_bytes), 0)
        self.used = 0
        self._items: dict[tuple[int, int, int], np.ndarray] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[int, int, int]) -> np.ndarray | None:
        return self._items.get(key)

    def put(self, key: tuple[int, int, int], image: np.ndarray) -> None:
        with self._lock:
            if key in self._items or self.used + image.nbytes > self.max_bytes:
                return
            self._items[key] = _readonly(image)
            self.used += image.nbytes


def _parallel_map(fn: Callable[[Any], _T], items: Sequence[Any]) -> list[_T]:
    """``[fn(x) for x in items]``, on threads when there are several (Pillow frees the GIL)."""
    workers = min(8, os.cpu_count() or 1, len(items))
    if workers < 2 or len(items) < 4:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


def _readonly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array
