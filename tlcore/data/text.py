"""Labelled texts as a :class:`~tlcore.data.Dataset`: in memory, a folder of ``.txt`` files per
class, or a CSV / JSONL table with a text column and a label column.

Every text is read when the dataset is made, so a file that is not UTF-8 text, an empty text
or a missing label stops the run before training, naming the file (and line). The model takes
token ids: :meth:`TextDataset.inputs` tokenizes with :func:`tlcore.inputs.text.encode` and
keeps the ids per tokenizer and length, so later epochs do not tokenize again.
"""

from __future__ import annotations

import csv
import io
import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlcore.data.dataset import Dataset, _parallel_map, modality_mismatch
from tlcore.data.folder import TEXTS, _below, _shown, scan_layout
from tlcore.errors import DataError
from tlcore.inputs.image import _MAX_LISTED, _listing
from tlcore.inputs.text import encode, is_text_name, read_text
from tlcore.interfaces import TextPreprocessing
from tlcore.tasks import DEFAULT_TASK, Task, get_task

if TYPE_CHECKING:
    from tlcore.interfaces import InputSpec


class TextDataset(Dataset):
    """Texts held in memory with their labels: from the Python API as ``(texts, labels[,
    class_names])``, and the base of the folder and table readers.

    Args:
        texts: one string per example; a text empty after removing white space is refused.
        labels: as :class:`~tlcore.data.ArrayDataset` takes them: class indices or names
            (classification), what ``task`` encodes otherwise.
        class_names: the output names (see :class:`~tlcore.data.ArrayDataset`).
        task: the :class:`~tlcore.tasks.Task` the labels are for (default classification).
        where: names the texts in errors (``"text"`` gives ``text 3``).

    Raises:
        DataError: a text is not a string or is empty, or the labels do not fit the task.
    """

    modality = "text"
    source: Path | None = None
    """The CSV or JSONL file the texts were read from, if any."""

    def __init__(
        self,
        texts: Sequence[str],
        labels: Any,
        class_names: Sequence[str] | None = None,
        *,
        task: Task | None = None,
        where: Sequence[str] | None = None,
    ) -> None:
        texts = _check_texts(texts, where)
        task = task or get_task(DEFAULT_TASK)
        codes, names = task.encode_labels(labels, len(texts), class_names)
        super().__init__(names, codes, task=task)
        self.texts: tuple[str, ...] = texts
        """All source texts; a subset shares them."""
        self._ids: dict[tuple[str, int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._ids_lock = threading.Lock()

    def inputs(self, indices: np.ndarray | Sequence[int], spec: InputSpec) -> np.ndarray:
        """Token ids of the texts at ``indices``, int64 ``(n, max_length)``, as the text model
        of ``spec`` takes them; tokenized once per tokenizer and length.

        Raises:
            DataError: the model does not take texts.
        """
        if spec.modality != "text" or not isinstance(spec.preprocessing, TextPreprocessing):
            raise modality_mismatch(spec, "texts")
        keys = self._keys[self._positions(indices)]
        prep = spec.preprocessing
        with self._ids_lock:
            cache = (prep.tokenizer, prep.max_length, prep.pad_id)
            if cache not in self._ids:
                # int32 halves the memory of all ids (vocabularies are far below 2**31).
                count = len(self._source_labels)
                self._ids[cache] = (np.zeros((count, prep.max_length), np.int32),
                                    np.zeros(count, bool))
            ids, done = self._ids[cache]
            todo = np.unique(keys[~done[keys]])
            if len(todo):
                ids[todo] = encode([self.texts[k] for k in todo.tolist()], prep)
                done[todo] = True
            return ids[keys].astype(np.int64)

    def text(self, index: int) -> str:
        """The text at ``index`` of this dataset (or subset)."""
        return self.texts[int(self._keys[self._positions([index])][0])]

    def _content(self) -> Sequence[np.ndarray]:
        """The texts, for :meth:`Dataset.fingerprint` (lengths first, so that texts that
        join to the same string still differ)."""
        data = [t.encode("utf-8", "surrogatepass") for t in self.texts]
        lengths = np.array([len(d) for d in data], dtype=np.int64)
        return (lengths, np.frombuffer(b"".join(data), dtype=np.uint8))


def _check_texts(texts: Sequence[str], where: Sequence[str] | None) -> tuple[str, ...]:
    if isinstance(texts, str):
        raise DataError("texts must be a list of strings, not one string",
                        "pass [text] for a single text")
    texts = tuple(texts)
    if not texts:
        raise DataError("no texts (0 texts)", "pass at least one text per class")
    problems = []
    for index, text in enumerate(texts):
        name = where[index] if where is not None else f"text {index}"
        if not isinstance(text, str):
            problems.append(f"  {name}: a {type(text).__name__}, not a string")
        elif not text.strip():
            problems.append(f"  {name}: empty (no text after removing white space)")
    if problems:
        raise DataError(
            f"{len(problems)} of {len(texts)} texts cannot be used:\n" + _lines(problems),
            "every example needs a non-empty text: remove these or write their text",
        )
    return texts


def _lines(problems: list[str]) -> str:
    shown = problems[:_MAX_LISTED]
    if len(problems) > _MAX_LISTED:
        shown.append(f"  ... and {len(problems) - _MAX_LISTED} more")
    return "\n".join(shown)


# --- A folder of class folders of .txt files ---------------------------------------------


class TextFolderDataset(TextDataset):
    """Texts in a folder with one sub-folder per class, each a ``.txt`` file (UTF-8, one
    text per file), found recursively; class names sorted, files sorted within a class.

    Hidden files, other extensions and links are handled as for images
    (:func:`~tlcore.data.scan_folder`), with a warning in :attr:`warnings` for what was left
    out. Every file is read while scanning.

    Raises:
        DataError: the layout is wrong (see :func:`~tlcore.data.scan_folder`), a class folder
            holds no ``.txt`` file, or files cannot be read as text (up to five are named).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        root = Path(path).expanduser()
        names, files, warnings = scan_layout(root, TEXTS)
        top = sorted(p.name for p in root.iterdir() if p.is_file() and is_text_name(p.name))
        if top:
            warnings.append(f"{root}: {len(top)} .txt file(s) beside the class folders not "
                            f"read (only files in a class folder are texts): {_listing(top)}")
        flat = [file for group in files for file in group]
        texts = _read_all(root, flat)
        labels = np.concatenate([np.full(len(g), i, dtype=np.int64) for i, g in enumerate(files)])
        super().__init__(texts, labels, names, where=[str(f) for f in flat])
        self.root = root
        self._files: tuple[Path, ...] = tuple(flat)
        self.warnings = tuple(warnings)

    @property
    def paths(self) -> tuple[Path, ...]:
        """The text files of this dataset (or subset), in order."""
        return tuple(self._files[key] for key in self._keys.tolist())

    def _content(self) -> Sequence[np.ndarray]:
        """Nothing besides the files' sizes and times (:meth:`Dataset.fingerprint`)."""
        return ()


def _read_all(root: Path, files: list[Path]) -> list[str]:
    """Every file's text; a DataError listing the files that cannot be read."""
    found: list[str | DataError] = _parallel_map(_read_or_error, files)
    problems = [f"  {_shown(_below(root, path))}: {item.message}"
                for path, item in zip(files, found, strict=True) if isinstance(item, DataError)]
    if problems:
        raise DataError(
            f"{len(problems)} of {len(files)} text files in {root} cannot be used:\n"
            + _lines(problems),
            "save each as UTF-8 text (iconv -f latin1 -t utf-8 IN > OUT re-encodes one), "
            "and remove empty or non-text files",
        )
    return [item for item in found if isinstance(item, str)]


def _read_or_error(path: Path) -> str | DataError:
    try:
        return read_text(path)
    except DataError as exc:
        exc.message = exc.message.replace(f"{path} ", "", 1)  # the list names the file
        return exc


# --- CSV and JSONL tables --------------------------------------------------------------


@dataclass
class Table:
    """The rows of a CSV file (a header line first) or a JSONL file (one object per line).

    Attributes:
        path: the file.
        columns: the column names (JSONL: every key, in order of first appearance).
        rows: ``(line number, cells by column)`` of every non-blank row; a cell is a string
            (CSV) or any JSON value (JSONL); a missing one is absent.
    """

    path: Path
    columns: list[str]
    rows: list[tuple[int, dict[str, Any]]]

    def require(self, *columns: str) -> None:
        """Raise a DataError naming the columns found when one of ``columns`` is missing."""
        missing = [c for c in columns if c not in self.columns]
        if missing:
            raise DataError(
                f"{self.path} has no column {', '.join(repr(c) for c in missing)}; its columns "
                f"are {_listing([repr(c) for c in self.columns])}",
                "set data.text_column and data.label_column to the columns holding the texts "
                "and the labels (tl train --set data.text_column=NAME)",
            )


def read_table(path: str | os.PathLike[str]) -> Table:
    """Read a ``.csv`` file (a header line required; the delimiter, ``,`` ``;`` tab or ``|``,
    sniffed from it by :class:`csv.Sniffer`; standard quoting) or a ``.jsonl`` file; UTF-8, a
    byte-order mark allowed.

    Raises:
        DataError: the file is missing, not UTF-8 text, empty, or has malformed lines (named).
    """
    source = Path(path).expanduser()
    if not source.is_file():
        raise DataError(f"data file not found: {source}",
                        "give a .csv or .jsonl file (data.path), or a folder")
    text = read_text(source)
    if source.suffix.lower() == ".jsonl":
        return _jsonl(source, text)
    return _csv(source, text)


def _csv(source: Path, text: str) -> Table:
    # The header tells the delimiter; quoting stays the standard one (a sniffed dialect
    # would stop un-doubling "" when the sample happens to hold no quotes).
    header = next((line for line in text.splitlines() if line.strip()), "")
    try:
        delimiter = csv.Sniffer().sniff(header, delimiters=",;\t|").delimiter
    except csv.Error:  # one column: nothing to tell the delimiter by
        delimiter = ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows, line, columns, problems = [], 1, None, []
    try:
        for cells in reader:
            start, line = line, reader.line_num + 1
            if not any(cell.strip() for cell in cells):
                continue
            if columns is None:
                columns = [cell.strip() for cell in cells]
            elif len(cells) != len(columns):
                problems.append(f"  line {start}: {len(cells)} cells, the header has "
                                f"{len(columns)}")
            else:
                rows.append((start, dict(zip(columns, cells, strict=True))))
    except csv.Error as exc:
        raise DataError(f"cannot read {source} as CSV (line {reader.line_num}): {exc}",
                        "check its quoting: a text with line breaks must be in quotes") from None
    return _table(source, columns or [], rows, problems)


def _jsonl(source: Path, text: str) -> Table:
    columns: dict[str, None] = {}
    rows, problems = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            problems.append(f"  line {number}: not JSON ({exc})")
            continue
        if not isinstance(item, dict):
            problems.append(f"  line {number}: a JSON {type(item).__name__}, not an object")
            continue
        columns.update(dict.fromkeys(item))
        rows.append((number, item))
    return _table(source, list(columns), rows, problems)


def _table(source: Path, columns: list[str], rows: list[tuple[int, dict[str, Any]]],
           problems: list[str]) -> Table:
    if problems:
        raise DataError(
            f"{len(problems)} lines of {source} cannot be read:\n" + _lines(problems),
            "a CSV file has a header line and the same number of cells on every line; a "
            "JSONL file one JSON object per line",
        )
    if not rows:
        raise DataError(f"{source} holds no rows", "write a header line, then one row per "
                        "example")
    return Table(source, columns, rows)


def _cell(value: Any) -> str:
    """A table cell as text: JSON lists (labels of a multi-label row) joined by ``;``."""
    if value is None:
        return ""
    if isinstance(value, list):
        return ";".join(_cell(v) for v in value)
    return value if isinstance(value, str) else json.dumps(value)


def read_text_table(
    table: Table | str | os.PathLike[str],
    text_column: str,
    label_column: str,
    task: Task,
    names: Sequence[str] | None = None,
) -> TextDataset:
    """Texts and labels from a CSV or JSONL file (:func:`read_table`), in file order.

    Args:
        table: the file, or its table already read.
        text_column: the column (key) holding the texts.
        label_column: the column holding the labels, as ``task`` parses a label cell (a class
            name, ``a;b`` or a JSON list for multilabel, a number for regression).
        task: the task the labels are for.
        names: the output names to encode against (a validation file uses the training
            set's).

    Raises:
        DataError: the file cannot be read, a column is missing (the columns found are
            listed), a text or label is empty or bad; names the file and lines.
    """
    table = table if isinstance(table, Table) else read_table(table)
    table.require(text_column, label_column)
    texts, labels, where, problems = [], [], [], []
    for line, row in table.rows:
        text, label = row.get(text_column), _cell(row.get(label_column))
        try:
            parsed = task.parse_label(label)
        except ValueError as exc:
            problems.append(f"  line {line}: bad label {label.strip()!r}: {exc}")
            continue
        if not isinstance(text, str) or not text.strip():
            problems.append(f"  line {line}: the text is empty" if isinstance(text, str | None)
                            else f"  line {line}: the text is a JSON {type(text).__name__}")
            continue
        texts.append(text)
        labels.append(parsed)
        where.append(f"{table.path} line {line}")
    if problems:
        raise DataError(
            f"{len(problems)} of {len(table.rows)} rows of {table.path} cannot be used:\n"
            + _lines(problems),
            f"each row needs a non-empty {text_column!r} and a {label_column!r} label",
        )
    try:
        data = TextDataset(texts, labels, names, task=task, where=where)
    except DataError as exc:
        raise DataError(f"{table.path}: {exc.message}", exc.hint) from None
    data.source = table.path
    return data
