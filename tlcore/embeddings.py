"""A run's embeddings: the backbone's pooled features of images, texts or vectors, written to
a file for search, clustering or a classifier of the user's own (``tl embed``).

From the bundle (the ONNX model's ``embeddings`` output, checked against the framework's
features when it was exported: numpy and onnxruntime only) or, with ``native``, from the
framework model rebuilt from the run's weights.

Example:
    >>> result = embed("runs/demo", "photos/", out="photos.npz")        # doctest: +SKIP
    >>> result.vectors.shape                                             # doctest: +SKIP
    (120, 1280)
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tlcore.errors import TlcoreError
from tlcore.files import atomic_path
from tlcore.interfaces import InputSpec

FORMATS = (".npz", ".npy", ".parquet")
"""Files :func:`embed` writes, by extension."""

BATCH = 64


@dataclass(frozen=True)
class Embeddings:
    """Pooled features, one row per input.

    Attributes:
        vectors: float32 ``(N, features)``.
        sources: where each row came from: a file path, a text's ``<text N>``, a table's
            ``file:row``, an iterable of batches' ``<batches>:row``.
        labels: each row's label, for labelled data (a class folder's name, a table's label
            column); ``None`` for unlabelled inputs.
        engine: ``onnxruntime`` or the backend that computed them.
    """

    vectors: np.ndarray
    sources: tuple[str, ...]
    labels: tuple[str, ...] | None
    engine: str

    def save(self, path: str | Path) -> Path:
        """Write the embeddings (atomically) by the file's extension:

        - ``.npz``: arrays ``embeddings``, ``sources`` and (labelled data) ``labels``, strings
          as numpy unicode arrays (``np.load(path)`` reads them without pickle);
        - ``.npy``: the matrix alone, with ``<name>.rows.csv`` beside it (``source,label``
          per row);
        - ``.parquet``: columns ``source``, ``label`` and ``embedding`` (a list of floats),
          with ``pyarrow``.

        Raises:
            TlcoreError: another extension, or ``.parquet`` without pyarrow.
        """
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in FORMATS:
            raise TlcoreError(
                f"cannot write embeddings to {path.name}: unknown extension",
                f"name a file ending in {', '.join(FORMATS)}",
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".parquet":
            self._parquet(path)
        elif suffix == ".npy":
            with atomic_path(path) as temp, open(temp, "wb") as fh:
                np.save(fh, self.vectors, allow_pickle=False)
            with atomic_path(rows_file(path)) as temp:
                temp.write_text(self._rows_csv(), encoding="utf-8")
        else:
            arrays = {"embeddings": self.vectors, "sources": np.array(self.sources, dtype=str)}
            if self.labels is not None:
                arrays["labels"] = np.array(self.labels, dtype=str)
            with atomic_path(path) as temp, open(temp, "wb") as fh:
                np.savez(fh, **arrays)
        return path

    def _rows_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["source", "label"])
        labels = self.labels or ("",) * len(self.sources)
        writer.writerows(zip(self.sources, labels, strict=True))
        return out.getvalue()

    def _parquet(self, path: Path) -> None:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise TlcoreError(
                "writing .parquet needs pyarrow, which is not installed",
                "pip install pyarrow, or write .npz (numpy only)",
            ) from None
        columns = {
            "source": pa.array(self.sources, pa.string()),
            "label": pa.array(self.labels or [None] * len(self.sources), pa.string()),
            "embedding": pa.array(list(self.vectors), pa.list_(pa.float32())),
        }
        with atomic_path(path) as temp:
            pq.write_table(pa.table(columns), str(temp))


def rows_file(path: Path) -> Path:
    """The ``source,label`` file written beside a ``.npy`` of embeddings."""
    return path.with_name(path.stem + ".rows.csv")


def embed(
    run: str | Path,
    data: Any,
    out: str | Path | None = None,
    *,
    native: bool = False,
    batch_size: int = BATCH,
) -> Embeddings:
    """The pooled backbone features of ``data``, from a run's bundle or its native model.

    Args:
        run: a finished run folder (or, without ``native``, a bundle folder or ``.onnx``).
        data: labelled data as training reads it (a folder of class sub-folders, a CSV /
            JSONL / ``.npz`` table, or an iterable of ``(x, y)`` batches such as a PyTorch
            ``DataLoader`` or a ``tf.data.Dataset``, read once: rows keep their labels), or
            anything ``tl predict`` takes (files, a folder of files, texts, arrays:
            unlabelled).
        out: a file to write (``.npz``, ``.npy``, ``.parquet``; :meth:`Embeddings.save`).
        native: compute them with the framework model rebuilt from the run's weights
            instead of the bundle's ``embeddings`` output.
        batch_size: inputs run together.

    Raises:
        TlcoreError: no such run, the model has no embeddings output (a bundle exported
            before tlcore gave them: use ``native``), or the data cannot be read.
    """
    if batch_size < 1:
        raise TlcoreError(f"batch_size must be at least 1, not {batch_size}", "")
    if native:
        spec, features, engine = _native(run)
    else:
        from tlcore.runtime import Predictor

        predictor = Predictor(run)
        if not predictor.has_embeddings:
            predictor.embeddings(np.zeros((0, *predictor.input_spec.shape)))  # says why
        spec, features, engine = predictor.input_spec, predictor.embeddings, "onnxruntime"
    rows, sources, labels = [], [], []
    from tlcore.data.given import recorded_columns

    for names, tags, batch in _batches(data, spec, batch_size, recorded_columns(run)):
        rows.append(np.asarray(features(batch), dtype=np.float32))
        sources += names
        labels += tags
    if not rows:
        raise TlcoreError(f"nothing to embed in {data!r}", "pass files, a folder or texts")
    result = Embeddings(
        np.concatenate(rows), tuple(sources),
        tuple(labels) if all(tag is not None for tag in labels) else None, engine,
    )
    if out is not None:
        result.save(out)
    return result


def _native(run: str | Path) -> tuple[InputSpec, Callable[[np.ndarray], np.ndarray], str]:
    from tlcore.build import load_run
    from tlcore.plugins.calls import BackendCalls

    recipe, _, model, spec = load_run(run)
    calls = BackendCalls(recipe.backend)
    return spec, lambda batch: calls.extract_features(model, batch), recipe.backend


def _batches(
    data: Any, spec: InputSpec, size: int, columns: dict[str, str]
) -> Iterator[tuple[list[str], list[str | None], np.ndarray]]:
    """``(sources, labels, inputs)`` batches of ``data``: labelled when it is a dataset as
    training reads it (a table by the run's ``columns``), else decoded as ``tl predict``
    decodes."""
    if _is_batch_stream(data):
        yield from _stream_batches(data, spec, size, columns)
        return
    dataset = _labelled(data, spec, columns)
    if dataset is not None:
        names = _sources(dataset, data)
        for start in range(0, len(dataset), size):
            rows = np.arange(start, min(start + size, len(dataset)))
            labels: list[str | None] = [_label(dataset, int(r)) for r in rows]
            yield [names[r] for r in rows], labels, dataset.inputs(rows, spec)
        return
    from tlcore.inputs import modality

    inputs = modality(spec)
    items = inputs.expand(data)
    for start in range(0, len(items), size):
        chunk = items[start : start + size]
        batch = np.stack([inputs.decode(item, spec) for _, item in chunk])
        yield [source for source, _ in chunk], [None] * len(chunk), batch


def _is_batch_stream(data: Any) -> bool:
    """Whether ``data`` is the caller's own pipeline of ``(x, y)`` batches (a DataLoader, a
    ``tf.data.Dataset``, a generator; a list only when its first item is such a pair) rather
    than what ``tl predict`` takes (a list of files, texts or arrays)."""
    from tlcore.data.iterables import is_batch_iterable

    if isinstance(data, list):
        first = data[0] if data else None
        return (isinstance(first, tuple | list) and len(first) == 2
                and not isinstance(first[0], str | bytes | Path))
    return is_batch_iterable(data)


def _stream_batches(
    data: Any, spec: InputSpec, size: int, columns: dict[str, str]
) -> Iterator[tuple[list[str], list[str | None], np.ndarray]]:
    """The batches of an iterable of ``(x, y)`` batches, read once as training reads it
    (:func:`tlcore.data.iterables.read_batches`: channels-first tensors transposed, text
    tensors decoded), labelled with its ``y``; sources are ``<batches>:<row>``."""
    from tlcore.data.arrays import as_uint8_images
    from tlcore.data.iterables import read_batches

    x, y = read_batches(data)
    if spec.modality == "image":
        x = as_uint8_images(x)  # floats in [0, 1] (ToTensor) as pixels, grayscale as RGB
    labels = [str(label) for label in y]
    start = 0
    for _, _, batch in _batches(x, spec, size, columns):
        stop = start + len(batch)
        yield ([f"<batches>:{row + 1}" for row in range(start, stop)], list(labels[start:stop]),
               batch)
        start = stop


def _labelled(data: Any, spec: InputSpec, columns: dict[str, str]) -> Any:
    """``data`` as a labelled dataset when it is one: a folder of class sub-folders, or a
    table file (read with the run's ``columns``); ``None`` for anything else."""
    if not isinstance(data, str | Path):
        return None
    path = Path(data)
    table = path.is_file() and path.suffix.lower() in (".csv", ".jsonl", ".npz")
    classes = path.is_dir() and any(child.is_dir() and not child.name.startswith(".")
                                    for child in path.iterdir())
    if not (table and spec.modality != "image") and not classes:
        return None
    from tlcore.data.given import labelled_data
    from tlcore.tasks import get_task

    return labelled_data(path, get_task("classification"), spec.modality, **columns)


def _sources(dataset: Any, data: Any) -> list[str]:
    files = getattr(dataset, "_files", None)
    if files:
        keys = dataset.source_indices
        return [str(files[int(k)]) for k in keys]
    return [f"{data}:{int(k) + 1}" for k in dataset.source_indices]


def _label(dataset: Any, row: int) -> str:
    return str(dataset.class_names[int(dataset.labels[row])])
