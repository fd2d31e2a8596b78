"""Reading a folder with one sub-folder per class into a :class:`FolderDataset`.
"""

from __future__ import annotations

import os
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
    image_files,
    load_image,
)

_SPLIT_NAMES = frozenset({"train", "training", "val", "valid", "validation", "test", "testing"})


def scan_folder(
    path: str | os.PathLike[str], *, verify: bool = True, cache_bytes: int = DEFAULT_CACHE_BYTES
) -> FolderDataset:
    """Scan an image folder with one sub-folder per class.

    Args:
        path: the folder, e.g. ``flowers/`` holding ``daisy/*.jpg`` and ``rose/*.jpg``.
        verify: check every image now, so a corrupt file stops the run before training.
        cache_bytes: bytes of decoded images kept in memory (default 1 GiB).

    Returns:
        The dataset, classes in sorted order, files in sorted order within each class.

    Raises:
        DataError: the path is missing or not a folder; image files lie at the top level;
            there are no class folders, or only one; a class folder holds no images; images
            cannot be read (up to five are named).
    """
    return FolderDataset(path, verify=verify, cache_bytes=cache_bytes)


def _scan_layout(root: Path) -> tuple[list[str], list[list[Path]]]:
    """Class names and their image files; raises DataError for each layout mistake."""
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
    class_dirs = [p for p in entries if p.is_dir() and not _ignored(p.name)]
    if not class_dirs:
        raise DataError(
            f"no class folders in {root}",
            "make one sub-folder per class and put each class's images in it",
        )
    names = [p.name for p in class_dirs]
    if all(name.lower() in _SPLIT_NAMES for name in names) and _has_subfolders(class_dirs):
        raise DataError(
            f"{root} holds split folders ({', '.join(names)}), not class folders",
            f"point data.path at {root / names[0]} and data.val_path at the validation folder",
        )
    files = [image_files(p) for p in class_dirs]
    empty = [name for name, group in zip(names, files, strict=True) if not group]
    if empty:
        raise DataError(
            f"class folder(s) with no images in {root}: {_listing(empty)}",
            "add .jpg/.jpeg/.png/.bmp/.webp images to them or remove the folders",
        )
    if len(names) < 2:
        raise DataError(
            f"only one class in {root}: {names[0]!r}; need at least two classes",
            "add a sub-folder for each further class",
        )
    return names, files


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
    extensions are ignored. Every image is checked when the folder is scanned. Images are
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
        class_names, files = _scan_layout(root)
        if verify:
            _verify_images(root, [file for group in files for file in group])
        labels = np.concatenate(
            [np.full(len(group), i, dtype=np.int64) for i, group in enumerate(files)]
        )
        super().__init__(class_names, labels, cache_bytes)
        self.root = root
        self._files: tuple[Path, ...] = tuple(file for group in files for file in group)

    @property
    def paths(self) -> tuple[Path, ...]:
        """The image files of this dataset (or subset), in order."""
        return tuple(self._files[key] for key in self._keys.tolist())

    def _read(self, key: int, size: tuple[int, int]) -> np.ndarray:
        return load_image(self._files[key], size)
