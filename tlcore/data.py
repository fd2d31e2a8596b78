"""Datasets as the training driver sees them: labelled uint8 RGB images at a requested size.

Two sources, one interface (:class:`Dataset`):

- :class:`FolderDataset` — a folder with one sub-folder per class (``scan_folder``);
- :class:`ArrayDataset` — numpy arrays passed through the Python API.

``images(indices, size)`` returns uint8 RGB NHWC arrays resized with Pillow's antialiased
**bilinear** filter (:data:`RESAMPLE`), the aspect ratio squashed to ``size`` as Keras'
``image_dataset_from_directory`` and torchvision's ``Resize((h, w))`` do. Decoded, resized
images are kept in a bounded in-memory cache so later epochs do not decode again.
:func:`load_image` is the same path for one file, for prediction to preprocess identically.

Every problem with the data raises :class:`~tlcore.errors.DataError` with a hint.
"""

from __future__ import annotations

import copy
import os
import threading
import zlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self, TypeVar

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from tlcore.errors import DataError
from tlcore.recipe import DataSpec

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
"""File extensions read as images (compared lower-case); other files are ignored."""

IGNORED_NAMES = frozenset({"__MACOSX", "__pycache__"})
"""Folder names skipped besides hidden ones (names starting with ``.``)."""

RESAMPLE = Image.Resampling.BILINEAR
"""The resize filter: Pillow's bilinear, antialiased when shrinking."""

DEFAULT_CACHE_BYTES = 1 << 30
"""Decoded images kept in memory per scanned folder or array set (1 GiB); beyond it, decode."""

AUGMENTATIONS = ("hflip", "shift")
"""The names :func:`augment` understands."""

SHIFT_FRACTION = 0.1
"""``shift`` moves an image by up to this fraction of its height and width."""

_MAX_LISTED = 5
_SPLIT_NAMES = frozenset({"train", "training", "val", "valid", "validation", "test", "testing"})
_T = TypeVar("_T")
_D = TypeVar("_D", bound="Dataset")


# ---------------------------------------------------------------------------------------------
# The interface


class Dataset:
    """Labelled images, read by index at any size.

    Attributes:
        class_names: one name per class; label ``i`` means ``class_names[i]``.
        labels: int64 array of shape ``(len(self),)``, read-only.

    A subclass calls ``super().__init__(class_names, labels)`` and implements
    ``_read(key, size)``, which returns one uint8 ``(height, width, 3)`` image for the
    source item ``key`` (an index into the labels given at construction). Subsets made by
    :meth:`subset` share the source and its cache.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        labels: np.ndarray,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        self.class_names: tuple[str, ...] = tuple(class_names)
        self.labels: np.ndarray = _readonly(np.array(labels, dtype=np.int64))
        self._keys: np.ndarray = _readonly(np.arange(len(self.labels), dtype=np.int64))
        self._cache = _ImageCache(cache_bytes)

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.describe()}>"

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
        """Images per class, an int64 array of ``len(class_names)``."""
        return np.bincount(self.labels, minlength=len(self.class_names)).astype(np.int64)

    def describe(self) -> str:
        """One line: image and class counts, e.g. ``120 images, 2 classes: cat 60, dog 60``."""
        counts = self.counts()
        parts = [f"{name} {int(n)}" for name, n in zip(self.class_names, counts, strict=True)]
        if len(parts) > 12:
            parts = [*parts[:10], f"... and {len(parts) - 10} more"]
        return f"{len(self)} images, {len(self.class_names)} classes: " + ", ".join(parts)

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


# ---------------------------------------------------------------------------------------------
# Image folders


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


def load_image(path: str | os.PathLike[str], size: tuple[int, int] | int) -> np.ndarray:
    """Decode one image file to uint8 RGB ``(height, width, 3)``, as datasets do.

    Large JPEGs are decoded at a reduced scale first (Pillow's ``draft``, never below
    ``size``), then every image is resized with :data:`RESAMPLE`.

    Args:
        path: the image file.
        size: ``(height, width)``, or one int for a square.

    Raises:
        DataError: the file is missing or cannot be decoded; names the file.
    """
    height, width = _check_size(size)
    try:
        with Image.open(path) as image:
            if image.format == "JPEG":
                # Reduce before decoding: rotation by EXIF may swap the sides, so ask for both.
                side = max(height, width)
                image.draft(None, (side, side))
            image.load()
            return image_array(image, (height, width))
    except FileNotFoundError:
        raise DataError(
            f"image file not found: {path}", "was it moved or deleted after the folder was scanned?"
        ) from None
    except Exception as exc:  # Pillow raises many types for bad files; all mean "unreadable"
        raise DataError(
            f"cannot decode image {path}: {_reason(exc)}",
            "delete the file or replace it with a valid image",
        ) from None


def image_array(image: Image.Image, size: tuple[int, int] | int) -> np.ndarray:
    """An in-memory Pillow image as uint8 RGB ``(height, width, 3)``, as :func:`load_image`
    makes one from a file: EXIF orientation applied, converted to RGB, resized with
    :data:`RESAMPLE`."""
    height, width = _check_size(size)
    rgb = _to_rgb(_upright(image))
    return np.asarray(rgb.resize((width, height), RESAMPLE), dtype=np.uint8)


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


def image_files(folder: Path) -> list[Path]:
    """The image files under ``folder``, recursively, sorted; hidden files and folders skipped."""
    found: list[Path] = []
    for here, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not _ignored(d))
        found.extend(Path(here, f) for f in files if not f.startswith(".") and _is_image(f))
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


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


def _check_image(path: Path) -> str | None:
    """None when the file looks like a valid image, else why not."""
    try:
        with Image.open(path) as image:
            fmt = image.format
            image.verify()
        if _maybe_truncated(path, fmt):
            with Image.open(path) as image:
                image.draft(None, (64, 64))
                image.load()
    except Exception as exc:  # see load_image
        return _reason(exc)
    return None


def _maybe_truncated(path: Path, fmt: str | None) -> bool:
    """Cheap signs of a cut-off file that ``verify()`` misses; confirmed by decoding."""
    if fmt not in ("JPEG", "BMP"):
        return False
    with open(path, "rb") as f:
        if fmt == "JPEG":
            f.seek(-2, os.SEEK_END)
            return f.read(2) != b"\xff\xd9"
        header = f.read(6)
        declared = int.from_bytes(header[2:6], "little")
        return declared > os.fstat(f.fileno()).st_size


def _reason(exc: Exception) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "not a recognised image file"
    if isinstance(exc, Image.DecompressionBombError):
        return "image is too large (decompression-bomb limit)"
    text = str(exc).strip()
    return text or type(exc).__name__


def _upright(image: Image.Image) -> Image.Image:
    if image.getexif().get(ExifTags.Base.Orientation, 1) in (0, 1):
        return image
    return ImageOps.exif_transpose(image)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to RGB; 16-bit grayscale scaled down, alpha dropped."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I"):  # 16-bit PNG grayscale: scale 0..65535 to 0..255
        gray = np.asarray(image, dtype=np.float64) / 257.0
        return Image.fromarray(np.clip(np.rint(gray), 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode == "F":
        gray = np.clip(np.rint(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if image.mode in ("P", "PA"):  # via RGBA so palette transparency converts cleanly
        image = image.convert("RGBA")
    return image.convert("RGB")


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _ignored(name: str) -> bool:
    return name.startswith(".") or name in IGNORED_NAMES


# ---------------------------------------------------------------------------------------------
# Arrays


class ArrayDataset(Dataset):
    """Images held in a numpy array, from the Python API.

    Args:
        images: uint8 ``(N, H, W, 3)`` RGB, or ``(N, H, W)`` / ``(N, H, W, 1)`` grayscale
            (repeated to RGB). Other integer dtypes must hold 0..255. Float arrays must hold
            values in [0, 1] and are converted to uint8 as ``round(x * 255)``. A uint8 RGB
            array is used as is, not copied: do not modify it afterwards.
        labels: ``N`` integer class indices (0 .. C-1) or ``N`` strings. Strings become the
            class names, sorted, unless ``class_names`` is given.
        class_names: names for the classes: with integer labels, one per index (default
            ``"0"``, ``"1"``, ...); with string labels, their order.
        cache_bytes: bytes of resized images kept in memory (when ``size`` differs from H, W).

    Raises:
        DataError: a shape, dtype, value range or label is wrong; says which and how to fix it.
    """

    def __init__(
        self,
        images: Any,
        labels: Any,
        class_names: Sequence[str] | None = None,
        *,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        array = _as_uint8_images(images)
        codes, names = _encode_labels(labels, len(array), class_names)
        super().__init__(names, codes, cache_bytes)
        self.array: np.ndarray = array
        """All source images, uint8 (N, H, W, 3); a subset shares it."""

    def images(self, indices: np.ndarray | Sequence[int], size: tuple[int, int]) -> np.ndarray:
        """Read images as one uint8 RGB array; see :meth:`Dataset.images`."""
        if _check_size(size) == self.array.shape[1:3]:
            return self.array[self._keys[self._positions(indices)]]
        return super().images(indices, size)

    def _read(self, key: int, size: tuple[int, int]) -> np.ndarray:
        height, width = size
        resized = Image.fromarray(self.array[key]).resize((width, height), RESAMPLE)
        return np.asarray(resized, dtype=np.uint8)


def _as_uint8_images(images: Any) -> np.ndarray:
    try:
        array = np.asarray(images)
    except ValueError as exc:
        raise DataError(
            f"images cannot form one array: {exc}",
            "all images must have the same height, width and channels; resize them first",
        ) from None
    _check_image_shape(array.shape)
    if array.ndim == 3:
        array = array[..., None]
    array = _to_uint8(array)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.ascontiguousarray(array)


def _check_image_shape(shape: tuple[int, ...]) -> None:
    want = "images must have shape (N, H, W, 3) for RGB or (N, H, W) for grayscale"
    if len(shape) not in (3, 4):
        raise DataError(f"{want}; got shape {shape}", "stack the images into one array")
    if shape[0] == 0:
        raise DataError("images is empty (0 images)", "pass at least one image per class")
    if len(shape) == 4 and shape[-1] not in (1, 3):
        if shape[1] in (1, 3):
            hint = "it looks channels-first (N, C, H, W): use np.transpose(images, (0, 2, 3, 1))"
        elif shape[-1] == 4:
            hint = "drop the alpha channel: images[..., :3]"
        else:
            hint = "give RGB (3 channels) or grayscale images"
        raise DataError(f"{want}; got shape {shape} with {shape[-1]} channels", hint)
    if 0 in shape[1:3]:
        raise DataError(f"{want}; got shape {shape} with an empty side", "images need pixels")


def _to_uint8(array: np.ndarray) -> np.ndarray:
    kind = array.dtype.kind
    if array.dtype == np.uint8:
        return array
    if kind in "iu":
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise DataError(
                f"integer images must hold values 0..255; got {low}..{high} ({array.dtype})",
                "rescale them to 0..255, or pass floats in [0, 1]",
            )
        return array.astype(np.uint8)
    if kind == "f":
        if not np.isfinite(array).all():
            raise DataError("images contain NaN or infinite values", "clean the array first")
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0:
            raise DataError(
                f"float images must hold values in [0, 1]; got {low:g}..{high:g}",
                "divide 0..255 images by 255, or pass them as uint8",
            )
        return np.rint(array * 255.0).astype(np.uint8)
    raise DataError(
        f"images have dtype {array.dtype}; need uint8, or floats in [0, 1]",
        "convert with images.astype(np.uint8)",
    )


def _encode_labels(
    labels: Any, count: int, class_names: Sequence[str] | None
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Labels as int64 codes plus the class names they index."""
    values = np.asarray(labels)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim == 2 and values.shape[0] == count:
        raise DataError(
            f"labels have shape {values.shape}; they look one-hot encoded",
            "pass class indices instead: labels.argmax(axis=1)",
        )
    if values.ndim != 1:
        raise DataError(
            f"labels must be 1-D, one per image; got shape {values.shape}",
            "pass a list or 1-D array of class indices or names",
        )
    if len(values) != count:
        raise DataError(
            f"got {count} images but {len(values)} labels", "give exactly one label per image"
        )
    names = _check_names(class_names)
    if values.dtype.kind in "USO" and all(isinstance(v, str) for v in values.tolist()):
        return _encode_strings(values, names)
    return _encode_ints(values, names)


def _encode_strings(
    values: np.ndarray, names: tuple[str, ...] | None
) -> tuple[np.ndarray, tuple[str, ...]]:
    unique, inverse = np.unique(values.astype(str), return_inverse=True)
    if names is None:
        names = tuple(unique.tolist())
    index = {name: i for i, name in enumerate(names)}
    unknown = [str(u) for u in unique.tolist() if u not in index]
    if unknown:
        raise DataError(
            f"labels not in class_names: {_listing(unknown)}",
            f"class_names are {list(names)}; add the missing names or fix the labels",
        )
    codes = np.array([index[u] for u in unique.tolist()], dtype=np.int64)[inverse]
    _need_two(names)
    return codes, names


def _encode_ints(
    values: np.ndarray, names: tuple[str, ...] | None
) -> tuple[np.ndarray, tuple[str, ...]]:
    kind = values.dtype.kind
    if kind == "O":
        if not all(isinstance(v, int | np.integer) for v in values.tolist()):
            raise DataError(
                "labels mix types; need all integers or all strings",
                f"first labels: {values[:5].tolist()}",
            )
        values = values.astype(np.int64)
    elif kind == "f":
        if not (np.isfinite(values).all() and (values == np.round(values)).all()):
            raise DataError(
                "labels must be integer class indices or strings; got fractional values",
                "for one-hot or soft labels pass labels.argmax(axis=1)",
            )
    elif kind not in "iub":
        raise DataError(
            f"labels have dtype {values.dtype}; need integers or strings",
            "pass class indices 0 .. C-1 or class names",
        )
    codes = values.astype(np.int64)
    if codes.min() < 0:
        raise DataError(f"labels must be >= 0; got {int(codes.min())}", "use indices 0 .. C-1")
    top = int(codes.max())
    if names is None:
        names = tuple(str(i) for i in range(top + 1))
    elif top >= len(names):
        raise DataError(
            f"label {top} has no class name: class_names has {len(names)} entries",
            "give one name per class index 0 .. C-1",
        )
    _need_two(names)
    return codes, names


def _check_names(class_names: Sequence[str] | None) -> tuple[str, ...] | None:
    if class_names is None:
        return None
    if isinstance(class_names, str):
        raise DataError(
            "class_names must be a list of names, not one string",
            'e.g. class_names=["cat", "dog"]',
        )
    names = tuple(str(n) for n in class_names)
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise DataError(
            f"class_names has duplicates: {_listing(duplicated)}", "give each class one unique name"
        )
    return names


def _need_two(names: tuple[str, ...]) -> None:
    if len(names) < 2:
        raise DataError(
            f"only one class ({names[0]!r}); need at least two classes",
            "a classifier needs examples of two or more classes",
        )


# ---------------------------------------------------------------------------------------------
# Splitting and loading


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
    adding a class leaves the other classes' splits unchanged. A class of ``n`` images gives
    ``round(n * val_split)`` to validation, at least ``min_held`` when ``val_split > 0`` and
    ``n >= 2``, and always keeps at least one for training. Both parts keep the dataset's order.

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
    for code, name in enumerate(dataset.class_names):
        members = np.flatnonzero(dataset.labels == code)
        rng = np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])
        shuffled = rng.permutation(members)
        held = _held_out(len(members), val_split, min_held)
        val.append(shuffled[:held])
        train.append(shuffled[held:])
    return dataset.subset(np.sort(np.concatenate(train))), dataset.subset(
        np.sort(np.concatenate(val))
    )


def _held_out(count: int, val_split: float, min_held: int = 1) -> int:
    if count < 2 or val_split <= 0:
        return 0
    return min(max(int(np.floor(count * val_split + 0.5)), min_held), count - 1)


ArraysInput = Dataset | tuple[Any, Any] | tuple[Any, Any, Sequence[str]]


def load_datasets(
    spec: DataSpec, seed: int, arrays: ArraysInput | None = None
) -> tuple[Dataset, Dataset]:
    """The training and validation datasets a recipe's ``data`` section asks for.

    The training data comes from ``arrays`` when given (a :class:`Dataset`, e.g. an
    :class:`ArrayDataset`, or an ``(images, labels[, class_names])`` tuple), else from the
    folder ``spec.path``. With ``spec.val_path``, that folder is the validation set (same class
    names required) and all training data trains; otherwise :func:`split` holds out
    ``spec.val_split`` of each class. With ``val_split == 0`` and no ``val_path`` the
    validation set is empty: the caller must skip evaluation and early stopping.

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

    Returns:
        ``(train, val)``.

    Raises:
        DataError: no data given, both a path and arrays given, or the data is unusable.
    """
    data = _training_source(spec, arrays)
    if spec.val_path:
        val = scan_folder(spec.val_path)
        _same_classes(data.class_names, val.class_names, spec.val_path)
        return data, val
    if spec.val_split is not None:
        return split(data, spec.val_split, seed)
    train, val = split(data, AUTO_VAL_SPLIT, seed, MIN_VAL_PER_CLASS)
    if int(data.counts().min()) < MIN_CLASS_FOR_VAL or len(val) < MIN_VAL_IMAGES:
        return split(data, 0.0, seed)
    return train, val


def _training_source(spec: DataSpec, arrays: ArraysInput | None) -> Dataset:
    if arrays is not None and spec.path:
        raise DataError(
            f"got both data.path ({spec.path}) and arrays",
            "give one source: remove data.path from the recipe or do not pass arrays",
        )
    if arrays is None:
        if not spec.path:
            raise DataError(
                "no training data: data.path is not set",
                "set data.path to a folder with one sub-folder per class, or pass arrays",
            )
        return scan_folder(spec.path)
    if isinstance(arrays, Dataset):
        return arrays
    if isinstance(arrays, tuple) and len(arrays) in (2, 3):
        return ArrayDataset(*arrays)
    raise DataError(
        f"cannot use arrays of type {type(arrays).__name__}",
        "pass an ArrayDataset, or a tuple (images, labels) or (images, labels, class_names)",
    )


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


# ---------------------------------------------------------------------------------------------
# Augmentation


def augment(images: np.ndarray, names: Iterable[str], rng: np.random.Generator) -> np.ndarray:
    """Randomly augment a batch of uint8 NHWC images, each image drawn independently.

    ``hflip`` mirrors half of the images left-right. ``shift`` moves each image by a random
    whole number of pixels, up to :data:`SHIFT_FRACTION` of its height and width in each
    direction, repeating the edge pixels into the uncovered border. Augmentations apply in
    the order given.

    Args:
        images: uint8 array ``(N, H, W, C)``; not modified.
        names: augmentation names from :data:`AUGMENTATIONS`; empty returns ``images`` itself.
        rng: the generator every random draw comes from.

    Returns:
        A new array of the same shape and dtype (or ``images`` when ``names`` is empty).
    """
    names = tuple(names)
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise DataError(
            f"unknown augmentation(s): {_listing(unknown)}", f"known: {', '.join(AUGMENTATIONS)}"
        )
    if images.ndim != 4 or images.dtype != np.uint8:
        raise DataError(
            f"augment needs uint8 images (N, H, W, C); got {images.dtype} {images.shape}",
            "pass a batch as returned by Dataset.images",
        )
    out = images
    for name in names:
        out = _hflip(out, rng) if name == "hflip" else _shift(out, rng)
    return out


def _hflip(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    flip = rng.random(len(images)) < 0.5
    out = images.copy()
    out[flip] = images[flip, :, ::-1]
    return out


def _shift(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    count, height, width = images.shape[:3]
    max_dy, max_dx = round(height * SHIFT_FRACTION), round(width * SHIFT_FRACTION)
    dy = rng.integers(-max_dy, max_dy + 1, size=count)
    dx = rng.integers(-max_dx, max_dx + 1, size=count)
    # Output pixel (y, x) reads input (y - dy, x - dx), clamped: edge padding in one gather.
    rows = np.clip(np.arange(height)[None, :] - dy[:, None], 0, height - 1)
    cols = np.clip(np.arange(width)[None, :] - dx[:, None], 0, width - 1)
    batch = np.arange(count)[:, None, None]
    return images[batch, rows[:, :, None], cols[:, None, :]]


# ---------------------------------------------------------------------------------------------
# Helpers


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


def _check_size(size: tuple[int, int] | int) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int | np.integer) else tuple(size)
    if len(pair) != 2 or not all(isinstance(s, int | np.integer) and s > 0 for s in pair):
        raise DataError(
            f"image size must be (height, width) in pixels; got {size!r}",
            "give two positive integers, e.g. (224, 224)",
        )
    return int(pair[0]), int(pair[1])


def _readonly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(str(i) for i in items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")
