"""Reading a folder with one sub-folder per class into a :class:`FolderDataset` (images), or
recognising one of texts (:class:`~tlcore.data.text.TextFolderDataset` reads it).
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tlcore.data.dataset import DEFAULT_CACHE_BYTES, Dataset, _parallel_map
from tlcore.errors import DataError
from tlcore.inputs.image import (
    _MAX_LISTED,
    _check_image,
    _ignored,
    _is_image,
    _listing,
    image_listing,
    load_image,
)
from tlcore.inputs.listing import Listing, link_problem
from tlcore.inputs.text import is_text_name, text_listing

_SPLIT_NAMES = frozenset({"train", "training", "val", "valid", "validation", "test", "testing"})


def scan_folder(
    path: str | os.PathLike[str], *, verify: bool = True, cache_bytes: int = DEFAULT_CACHE_BYTES
) -> Dataset:
    """Scan a folder with one sub-folder per class: images (a :class:`FolderDataset`), or
    ``.txt`` texts (a :class:`~tlcore.data.text.TextFolderDataset`) when the class folders hold
    ``.txt`` files and no image at all.

    Args:
        path: the folder, e.g. ``flowers/`` holding ``daisy/*.jpg`` and ``rose/*.jpg``.
        verify: check every image now, so a corrupt file stops the run before training
            (texts are always read while scanning).
        cache_bytes: bytes of decoded images kept in memory (default 1 GiB).

    Returns:
        The dataset, classes in sorted order, files in sorted order within each class; its
        ``warnings`` name what was left out or looks wrong: links skipped, class names that
        differ only in case or Unicode form, hidden images, files that are not images.

    Links are followed as :mod:`tlcore.inputs.listing` says, so that each image counts once
    and in the class whose folder holds it: a link to the data folder, above it or into
    another class (``ln -s . data/all``) is skipped with a warning, never made a class;
    links to images kept outside the data folder are followed.

    Raises:
        DataError: the path is missing or not a folder; image files lie at the top level;
            there are no class folders, or only one; a class folder holds no images (or
            only texts, while others hold images); one file is in two classes (through
            links); images cannot be read (up to five are named).
    """
    root = Path(path).expanduser()
    if root.is_dir() and is_text_tree(root):
        from tlcore.data.text import TextFolderDataset  # it builds on this module

        return TextFolderDataset(root)
    return FolderDataset(path, verify=verify, cache_bytes=cache_bytes)


@dataclass(frozen=True)
class _Kind:
    """What a data folder holds, as its messages name it."""

    noun: str
    listing: Callable[[Path, Path], Listing]
    wanted: str


_IMAGES = _Kind("image", image_listing, ".jpg/.jpeg/.png/.bmp/.webp images")
TEXTS = _Kind("text", text_listing, ".txt files")


def is_text_tree(root: Path) -> bool:
    """Whether the data folder ``root`` holds texts: ``.txt`` files in its class folders and
    no image anywhere in them (an image folder may keep notes beside its images)."""
    texts = False
    for folder in _class_folders(root)[0]:
        for _, dirs, names in os.walk(folder):
            dirs[:] = [d for d in dirs if not _ignored(d)]
            wanted = [n for n in names if not _ignored(n)]
            if any(_is_image(n) for n in wanted):
                return False
            texts = texts or any(is_text_name(n) for n in wanted)
    return texts


def scan_layout(
    root: Path, kind: _Kind = _IMAGES
) -> tuple[list[str], list[list[Path]], list[str]]:
    """Class names, their files (images, or texts with :data:`TEXTS`) and what to warn
    about; raises DataError for each layout mistake."""
    class_dirs, links = _class_folders(root)
    names = [p.name for p in class_dirs]
    if all(name.lower() in _SPLIT_NAMES for name in names) and _has_subfolders(class_dirs):
        raise DataError(
            f"{root} holds split folders ({', '.join(names)}), not class folders",
            f"point data.path at {root / names[0]} and data.val_path at the validation folder",
        )
    listings = [kind.listing(p, root) for p in class_dirs]
    files = [listing.files for listing in listings]
    empty = [name for name, group in zip(names, files, strict=True) if not group]
    if empty:
        words = "images" if kind is _IMAGES else kind.wanted
        raise DataError(
            f"class folder(s) with no {words} in {root}: {_listing(empty)}"
            + (_mixed(names, listings, empty) if kind is _IMAGES else ""),
            f"add {kind.wanted} to them or remove the folders",
        )
    if len(names) < 2:
        raise DataError(
            f"only one class in {root}: {names[0]!r}; need at least two classes",
            "add a sub-folder for each further class",
        )
    _refuse_shared_files(root, listings, kind.noun)
    return names, files, _warnings(root, names, listings, links, kind)


def _mixed(names: list[str], listings: list[Listing], empty: list[str]) -> str:
    """The part of the empty-class message that says those classes hold texts instead."""
    texts = sum(is_text_name(path.name) for name, listing in zip(names, listings, strict=True)
                if name in empty for path in listing.other)
    if not texts:
        return ""
    return (f"; they hold {texts} .txt text file(s) while the other classes hold images: "
            "a data folder holds images or texts, not both")


def _class_folders(root: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The class folders of ``root``, and the links among them skipped (see
    :mod:`tlcore.inputs.listing`): a class folder that is a link must lead outside ``root``."""
    if not root.exists():
        raise DataError(
            f"data folder not found: {root}",
            "give a folder with one sub-folder per class, e.g. data/cat/*.jpg and data/dog/*.jpg",
        )
    if not root.is_dir():
        raise DataError(
            f"data path is not a folder: {root}",
            "give the folder that holds one sub-folder per class, not a file",
        )
    entries = sorted(root.iterdir(), key=lambda p: p.name)
    stray = [p.name for p in entries if p.is_file() and not _ignored(p.name) and _is_image(p.name)]
    if stray:
        raise DataError(
            f"{len(stray)} image file(s) lie directly in {root}: {_listing(stray)}",
            "each image must be inside its class folder: move them into sub-folders named "
            f"after their class, e.g. {root / 'cat' / stray[0]}",
        )
    real_root = Path(os.path.realpath(root))
    class_dirs: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for path in entries:
        if _ignored(path.name):
            continue
        if path.is_symlink() and (path.is_dir() or not path.exists()):
            why = link_problem(path, real_root, None)
            if why is not None:
                skipped.append((path, why))
                continue
        if path.is_dir():
            class_dirs.append(path)
    if not class_dirs:
        raise DataError(
            f"no class folders in {root}"
            + (f" (links skipped: {_listing(_shown_paths(root, skipped))})" if skipped else ""),
            "make one sub-folder per class and put each class's images in it",
        )
    return class_dirs, skipped


def _refuse_shared_files(root: Path, listings: list[Listing], noun: str = "image") -> None:
    """One file reached from two classes (through links) has no one class: refuse it."""
    owner: dict[tuple[int, int], Path] = {}
    shared: list[str] = []
    for listing in listings:
        for path, identity in listing.identities.items():
            if identity in owner:
                shared.append(f"{_shown(_below(root, owner[identity]))} and "
                              f"{_shown(_below(root, path))}")
            else:
                owner[identity] = path
    if shared:
        raise DataError(
            f"{len(shared)} {noun} file(s) in {root} are in two classes at once (links to one "
            f"file): {_listing(shared)}",
            f"{'an' if noun == 'image' else 'a'} {noun} has one class: remove the link from "
            "the class it does not belong to",
        )


def _warnings(
    root: Path,
    names: list[str],
    listings: list[Listing],
    links: list[tuple[Path, str]],
    kind: _Kind = _IMAGES,
) -> list[str]:
    """What the scan left out or found odd, by name: the caller warns about each."""
    skipped = links + [item for listing in listings for item in listing.skipped]
    hidden = [_below(root, path) for listing in listings for path in listing.hidden]
    other = [_below(root, path) for listing in listings for path in listing.other]
    texts = []
    if skipped:
        texts.append(
            f"{root}: {len(skipped)} link(s) or second path(s) to a file not read, so that no "
            f"{kind.noun} counts twice or under another class: "
            f"{_listing(_shown_paths(root, skipped))}"
        )
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(unicodedata.normalize("NFKC", name).casefold(), []).append(name)
    alike = [" and ".join(repr(name) for name in group) for group in groups.values()
             if len(group) > 1]
    if alike:
        texts.append(
            f"{root}: class names that differ only in case or Unicode form are separate "
            f"classes: {'; '.join(alike)}; merge their folders if they are one class (macOS "
            "and Windows cannot even hold both)"
        )
    if hidden:
        why = "; macOS '._' files are not images" if kind is _IMAGES else ""
        texts.append(
            f"{root}: {len(hidden)} hidden {kind.noun} file(s) not read (names starting with "
            f"'.'{why}): {_listing([_shown(p) for p in hidden])}"
        )
    if other:
        texts.append(
            f"{root}: {len(other)} file(s) in class folders not read, not being "
            f"{kind.wanted}: {_listing([_shown(p) for p in other])}"
        )
    return texts


def _below(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def _shown(text: str) -> str:
    """``text`` with control characters escaped: file and class names reach a terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _shown_paths(root: Path, items: list[tuple[Path, str]]) -> list[str]:
    return [f"{_shown(_below(root, path))} ({_shown(why)})" for path, why in items]


def _has_subfolders(folders: list[Path]) -> bool:
    return any(p.is_dir() and not _ignored(p.name) for f in folders for p in f.iterdir())


def _verify_images(root: Path, files: list[Path]) -> None:
    problems = [
        (path, reason)
        for path, reason in zip(files, _parallel_map(_check_image, files), strict=True)
        if reason is not None
    ]
    if not problems:
        return
    lines = [f"  {path}: {reason}" for path, reason in problems[:_MAX_LISTED]]
    if len(problems) > _MAX_LISTED:
        lines.append(f"  ... and {len(problems) - _MAX_LISTED} more")
    raise DataError(
        f"{len(problems)} of {len(files)} images in {root} cannot be read:\n" + "\n".join(lines),
        "delete these files or replace them with valid images, then run again",
    )


class FolderDataset(Dataset):
    """Images in a folder with one sub-folder per class; class names sorted.

    Images are files ending in .jpg, .jpeg, .png, .bmp or .webp (any case), found
    recursively in each class folder; hidden files and folders, ``__MACOSX`` and other
    extensions are ignored, and links followed only where they cannot count an image twice
    or in another class (see :func:`scan_folder`), with a warning in :attr:`warnings` for
    each. Every image is checked when the folder is scanned. Images are
    converted to RGB (grayscale, palette, CMYK; an alpha channel is dropped, as Keras and
    torchvision do) and turned upright by their EXIF orientation.

    Args:
        path: the folder.
        verify: check every image while scanning (cheap: headers, PNG checksums, JPEG ends).
        cache_bytes: how many bytes of decoded, resized images to keep in memory.

    Raises:
        DataError: the layout is wrong or images are unreadable; see :func:`scan_folder`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        verify: bool = True,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        root = Path(path).expanduser()
        class_names, files, warnings = scan_layout(root)
        if verify:
            _verify_images(root, [file for group in files for file in group])
        labels = np.concatenate(
            [np.full(len(group), i, dtype=np.int64) for i, group in enumerate(files)]
        )
        super().__init__(class_names, labels, cache_bytes)
        self.root = root
        self._files: tuple[Path, ...] = tuple(file for group in files for file in group)
        self.warnings = tuple(warnings)

    @property
    def paths(self) -> tuple[Path, ...]:
        """The image files of this dataset (or subset), in order."""
        return tuple(self._files[key] for key in self._keys.tolist())

    def _read(self, key: int, size: tuple[int, int]) -> np.ndarray:
        return load_image(self._files[key], size)
