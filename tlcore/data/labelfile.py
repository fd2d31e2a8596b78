"""Reading a CSV label file (``path,label``) into a :class:`LabelFileDataset`.

One image per line: its path, a comma, its label as the task reads it
(:meth:`~tlcore.tasks.Task.parse_label`): a class name, ``cat;dog`` for a multi-label task, a
number for a regression. Paths are relative to the image folder given (``data.path``) or to
the CSV file's own folder, whichever holds the file; absolute paths are taken as they are. A
first line whose path column is ``path``, ``file``, ``filename`` or ``image`` is a header.
Blank lines are skipped. Every bad line is an error naming the file and the line.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from tlcore.data.dataset import DEFAULT_CACHE_BYTES, Dataset
from tlcore.data.folder import _verify_images
from tlcore.errors import DataError
from tlcore.inputs.image import _MAX_LISTED, load_image
from tlcore.tasks import Task

HEADER_NAMES = frozenset({"path", "file", "filename", "image"})


class LabelFileDataset(Dataset):
    """Images listed in a CSV label file, with the labels it gives them, in file order.

    Args:
        path: the CSV file.
        task: the task that reads and encodes the labels.
        images: the folder relative paths start from (besides the CSV file's folder).
        names: the output names to encode against (a validation file uses the training
            file's); ``None`` takes them from the labels.
        verify: check every image now, so a corrupt file stops the run before training.
        cache_bytes: bytes of decoded images kept in memory.

    Raises:
        DataError: the file is missing or empty, a line has no label, a bad label, an image
            that is not there or listed twice, or images that cannot be read; names the file
            and the lines (up to five).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        task: Task,
        *,
        images: str | os.PathLike[str] | None = None,
        names: tuple[str, ...] | None = None,
        verify: bool = True,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        source = Path(path).expanduser()
        rows = _read_rows(source)
        roots = _roots(source, images)
        files, parsed, problems = [], [], []
        seen: dict[Path, int] = {}
        for line, cells in rows:
            problem = _row_problem(cells)
            if problem is None:
                file = _resolve(cells[0].strip(), roots)
                problem = _file_problem(cells[0].strip(), file, roots, seen.get(file))
            if problem is None:
                try:
                    parsed.append(task.parse_label(cells[1]))
                except ValueError as exc:
                    problem = f"bad label {cells[1].strip()!r}: {exc}"
            if problem is not None:
                problems.append(f"  line {line}: {problem}")
                continue
            seen[file] = line
            files.append(file)
        _raise(source, problems, len(rows), task)
        try:
            targets, found = task.encode_labels(parsed, len(parsed), names)
        except DataError as exc:
            raise DataError(f"{source}: {exc.message}", exc.hint) from None
        if verify:
            _verify_images(source, files)
        super().__init__(found, targets, cache_bytes, task=task)
        self.root = source.parent
        self.label_file = source
        self._files: tuple[Path, ...] = tuple(files)

    @property
    def paths(self) -> tuple[Path, ...]:
        """The image files of this dataset (or subset), in order."""
        return tuple(self._files[key] for key in self._keys.tolist())

    def _read(self, key: int, size: tuple[int, int]) -> np.ndarray:
        return load_image(self._files[key], size)


def _read_rows(source: Path) -> list[tuple[int, list[str]]]:
    """``(line number, cells)`` of every non-blank line, the header left out."""
    if not source.is_file():
        raise DataError(
            f"label file not found: {source}",
            "give a CSV file of path,label lines (data.labels, --labels)",
        )
    try:
        with open(source, newline="", encoding="utf-8-sig") as fh:
            rows = [(n, cells) for n, cells in enumerate(csv.reader(fh), 1) if any(cells)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read label file {source}: {exc}", "save it as UTF-8 CSV") from None
    if rows and rows[0][1][0].strip().lower() in HEADER_NAMES:
        rows = rows[1:]
    if not rows:
        raise DataError(
            f"label file {source} lists no images", "write one path,label line per image"
        )
    return rows


def _roots(source: Path, images: str | os.PathLike[str] | None) -> list[Path]:
    roots = [Path(images).expanduser()] if images else []
    if images and not roots[0].is_dir():
        raise DataError(
            f"image folder not found: {roots[0]}",
            "data.path must be the folder the label file's paths start from",
        )
    return [*roots, source.parent] if source.parent not in roots else roots


def _row_problem(cells: list[str]) -> str | None:
    if len(cells) != 2:
        return f"expected 2 columns (path,label), got {len(cells)}"
    if not cells[0].strip():
        return "the path is empty"
    return None


def _resolve(text: str, roots: list[Path]) -> Path:
    relative = Path(text).expanduser()
    if relative.is_absolute():
        return relative
    found = [root / relative for root in roots if (root / relative).is_file()]
    return found[0] if found else roots[0] / relative


def _file_problem(text: str, file: Path, roots: list[Path], earlier: int | None) -> str | None:
    if not file.is_file():
        where = " or ".join(str(root) for root in roots)
        return f"image not found: {text} (looked in {where})"
    if earlier is not None:
        return f"{text} is listed twice (first on line {earlier})"
    return None


def _raise(source: Path, problems: list[str], lines: int, task: Task) -> None:
    if not problems:
        return
    shown = problems[:_MAX_LISTED]
    if len(problems) > _MAX_LISTED:
        shown.append(f"  ... and {len(problems) - _MAX_LISTED} more")
    raise DataError(
        f"{len(problems)} of {lines} lines of label file {source} cannot be used:\n"
        + "\n".join(shown),
        f"each line is path,label; for task {task.name}: {task.label_example}",
    )
