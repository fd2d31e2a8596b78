"""The folder a demo dataset is written to: whole or not at all, never over the user's files.

Both demos (:mod:`tlcore.demo`, the digits; :mod:`tlcore.demo_text`, the e-mails) write
through :func:`demo_folder`: the dataset is built in a staging folder beside the target and
renamed into place when complete, so an interrupted write leaves no half-written dataset. A
target may be missing, empty or an earlier demo (it holds :data:`MARKER`); any other folder
is refused, so a mistyped path never replaces someone's data. :func:`write_recipe` puts the
demo's recipe beside its data.

Example:
    >>> target = check_demo_target("demo-data")                  # doctest: +SKIP
    >>> with demo_folder(target) as staging:                     # doctest: +SKIP
    ...     (staging / MARKER).write_text("{}")
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tlcore.errors import DataError
from tlcore.files import atomic_path

MARKER = ".tlcore-demo"
"""Hidden file that marks a folder written by a demo (safe to rewrite)."""

RECIPE = "recipe.yaml"
"""The file name of a demo's recipe, beside its data."""


def check_demo_target(path: str | os.PathLike[str]) -> Path:
    """The absolute folder a demo may be written to: ``path`` if it is missing, empty or an
    earlier demo. Call it before the work, so that a refused folder costs nothing.

    Raises:
        DataError: ``path`` is a file, or a non-empty folder that is not a demo dataset.
    """
    target = Path(path).expanduser().absolute()
    if target.is_file():
        raise DataError(f"{target} is a file", "give a new folder for the demo dataset")
    if not target.is_dir() or (target / MARKER).is_file() or not any(target.iterdir()):
        return target
    raise DataError(
        f"{target} already exists, is not empty and is not a tlcore demo dataset",
        "give a new folder, or delete this one first; it is never overwritten",
    )


@contextmanager
def demo_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty staging folder beside ``path``; when the block ends without an error,
    the staging folder replaces ``path`` (an earlier demo there is removed). On an error the
    staging folder is removed and ``path`` is left as it was.

    Raises:
        DataError: as :func:`check_demo_target`.
    """
    target = check_demo_target(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    staging.mkdir()
    try:
        yield staging
        _swap_into_place(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def write_recipe(folder: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` as the demo's ``recipe.yaml`` in ``folder`` (atomically); returns its
    path."""
    target = Path(folder) / RECIPE
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target


def _swap_into_place(staging: Path, target: Path) -> None:
    """Rename the finished folder to ``target``, replacing an earlier demo or empty folder."""
    if not target.exists():
        staging.rename(target)
        return
    # A folder cannot be renamed onto a non-empty one: move the old one aside first, and back
    # if the new one cannot take its place, so that ``target`` is never lost.
    old = target.with_name(f".{target.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
    target.rename(old)
    try:
        staging.rename(target)
    except OSError:
        old.rename(target)
        raise
    shutil.rmtree(old, ignore_errors=True)
