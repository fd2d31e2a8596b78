"""Listing the files of a folder tree, and which symbolic links may count.

A data folder must be what it looks like: each image counted once, in the class whose folder
holds it. Links are what can break that (``ln -s . data/all`` makes a class of every image),
so :func:`list_files` follows a link only where it cannot:

- a link (to a file or a folder) that leads to the data folder, to a folder above it, or into
  the data folder but outside the folder being listed (into another class) is **skipped**,
  and reported with where it leads;
- a link that leads outside the data folder (an image store several datasets share) or
  within the folder being listed is followed; a folder reached twice is read once;
- a file reached twice (a link to an image of the same class, a hard link) counts once,
  under the path that goes through no link;
- a broken link is skipped and reported.

Nothing here imports more than the standard library: the runtime lists prediction folders
with it too.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tlcore.errors import DataError


@dataclass
class Listing:
    """What :func:`list_files` found under one folder (paths as reached from it)."""

    files: list[Path] = field(default_factory=list)
    """The wanted files, each once, sorted by their path below the folder."""
    identities: dict[Path, tuple[int, int]] = field(default_factory=dict)
    """``(device, inode)`` of each of :attr:`files`: the same file under two folders."""
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    """Links, and second paths to a file or folder, left out: ``(path, why)``."""
    hidden: list[Path] = field(default_factory=list)
    """Wanted files with an ignored name (``.`` first): not read."""
    other: list[Path] = field(default_factory=list)
    """Files that are not wanted (another extension): not read."""


def list_files(
    folder: Path,
    *,
    wanted: Callable[[str], bool],
    ignored: Callable[[str], bool],
    tree: Path | None = None,
) -> Listing:
    """The files under ``folder`` whose names are ``wanted``, following the link rules of
    this module.

    Args:
        folder: the folder to list (a class folder).
        wanted: whether a file name is one to list (an image extension).
        ignored: whether a file or folder name is skipped (hidden names).
        tree: the whole data folder ``folder`` is part of; default ``folder`` itself.

    Raises:
        DataError: a folder in the tree cannot be read (names it).
    """
    tree_real = Path(os.path.realpath(tree if tree is not None else folder))
    inside = Path(os.path.realpath(folder))
    listing = Listing()
    found: list[tuple[bool, str, Path, tuple[int, int]]] = []
    visited: dict[Path, Path] = {}
    # Real folders first, linked ones after: a folder reached both ways is read as itself.
    pending: list[tuple[Path, bool]] = [(folder, False)]
    linked: list[Path] = []
    while pending or linked:
        here, through = pending.pop() if pending else (linked.pop(0), True)
        real = Path(os.path.realpath(here))
        if real in visited:
            shown = _relative(visited[real], folder) or "."
            listing.skipped.append((here, f"leads to {shown}, which is read already"))
            continue
        visited[real] = here
        for entry in _entries(here):
            path = Path(entry.path)
            if ignored(entry.name):
                if wanted(entry.name) and entry.is_file():
                    listing.hidden.append(path)
                continue
            if entry.is_symlink():
                if not entry.is_dir() and not wanted(entry.name):
                    listing.other.append(path)
                    continue
                why = link_problem(path, tree_real, inside)
                if why is not None:
                    listing.skipped.append((path, why))
                elif entry.is_dir():
                    linked.append(path)
                elif wanted(entry.name):
                    found.append((True, _relative(path, folder), path, _identity(path)))
            elif entry.is_dir(follow_symlinks=False):
                pending.append((path, through))
            elif wanted(entry.name):
                found.append((through, _relative(path, folder), path, _identity(path)))
            else:
                listing.other.append(path)
    _keep_once(found, listing, folder)
    return listing


def link_problem(link: Path, tree: Path, inside: Path | None) -> str | None:
    """Why the link ``link`` must not be followed, or ``None`` when it may.

    Args:
        link: the link.
        tree: the real path of the data folder.
        inside: the real path of the folder being listed, within which links may lead;
            ``None`` when no place in ``tree`` may be a link's target (a class folder that is
            a link).
    """
    target = Path(os.path.realpath(link))
    if not target.exists():
        return f"a broken link (to {target})"
    if target == tree:
        return "leads back to the data folder itself"
    if tree.is_relative_to(target):
        return f"leads to {target}, a folder above the data folder"
    if inside is not None and (target == inside or inside.is_relative_to(target)):
        return "leads back to the folder it is in"
    if target.is_relative_to(tree) and (inside is None or not target.is_relative_to(inside)):
        return f"leads to {target.relative_to(tree).as_posix()}, elsewhere in the data folder"
    return None


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda entry: entry.name)
    except OSError as exc:
        raise DataError(
            f"cannot read folder {folder}: {exc.strerror or exc}",
            "make it readable (permissions), or move it out of the data folder",
        ) from None


def _identity(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_dev, info.st_ino


def _relative(path: Path, folder: Path) -> str:
    return path.relative_to(folder).as_posix() if path.is_relative_to(folder) else str(path)


def _keep_once(
    found: list[tuple[bool, str, Path, tuple[int, int]]], listing: Listing, folder: Path
) -> None:
    """Each file once, preferring the path through no link, then the first in sorted order."""
    first: dict[tuple[int, int], str] = {}
    for _, relative, path, identity in sorted(found, key=lambda item: (item[0], item[1])):
        if identity in first:
            listing.skipped.append((path, f"the same file as {first[identity]}"))
            continue
        first[identity] = relative
        listing.files.append(path)
        listing.identities[path] = identity
    listing.files.sort(key=lambda path: _relative(path, folder))
