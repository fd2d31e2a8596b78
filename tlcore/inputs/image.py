"""The image modality: reading, checking and resizing image files, the same way for training
and prediction.

:func:`load_image` decodes one file to uint8 RGB at a requested size with Pillow's antialiased
**bilinear** filter (:data:`RESAMPLE`), the aspect ratio squashed to the size as Keras'
``image_dataset_from_directory`` and torchvision's ``Resize((h, w))`` do. Nothing here imports
the recipe or a framework: the runtime decodes with it.

Importing this module sets Pillow's decompression-bomb limit to tlcore's own,
:data:`MAX_IMAGE_PIXELS`, for the whole process; tlcore refuses a larger image itself, with a
:class:`~tlcore.errors.DataError` naming the file, so Pillow's ``DecompressionBombWarning``
(which it gives between the limit and twice it) is silenced rather than printed raw.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from tlcore.errors import DataError
from tlcore.inputs.listing import Listing, list_files

if TYPE_CHECKING:
    from tlcore.interfaces import InputSpec

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
"""File extensions read as images (compared lower-case); other files are ignored."""


IGNORED_NAMES = frozenset({"__MACOSX", "__pycache__"})
"""Folder names skipped besides hidden ones (names starting with ``.``)."""


RESAMPLE = Image.Resampling.BILINEAR
"""The resize filter: Pillow's bilinear, antialiased when shrinking."""


MAX_IMAGE_PIXELS = 16384 * 16384
"""The largest image tlcore decodes, in pixels (268,435,456: 16384 x 16384). Larger than any
camera's photos (200 megapixels) and most scans, while one decoded image (768 MiB as RGB)
cannot take a machine's memory; a "decompression bomb" (a small file declaring billions of
pixels) is refused from its header, before anything is decoded. Pillow's own default is
89,478,485, with only a warning up to twice that."""

Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)  # _open refuses

_MAX_LISTED = 5


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
        with _open(path) as image:
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


def image_files(folder: Path) -> list[Path]:
    """The image files under ``folder``, recursively, sorted; hidden files and folders skipped.

    Links are followed as :mod:`tlcore.inputs.listing` says: never to ``folder`` or above it,
    and each file once. :func:`image_listing` also says what was left out.
    """
    return image_listing(folder).files


def image_listing(folder: Path, tree: Path | None = None) -> Listing:
    """The images under ``folder`` (a class folder of the data folder ``tree``), with the
    links, hidden images and other files left out: :func:`tlcore.inputs.listing.list_files`
    with this module's image extensions and ignored names."""
    return list_files(folder, wanted=_is_image, ignored=_ignored, tree=tree)




def _check_image(path: Path) -> str | None:
    """None when the file looks like a valid image, else why not."""
    try:
        with _open(path) as image:
            fmt = image.format
            image.verify()
        if _maybe_truncated(path, fmt):
            with _open(path) as image:
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
        found = re.search(r"(\d+x\d+ = )?\d+ pixels", str(exc))
        size = f" ({found.group(0)})" if found else ""
        return (
            f"image is too large{size}: tlcore decodes at most {MAX_IMAGE_PIXELS:,} pixels "
            "(tlcore.inputs.image.MAX_IMAGE_PIXELS), a guard against decompression bombs"
        )
    text = str(exc).strip()
    return text or type(exc).__name__


def _open(path: str | os.PathLike[str]) -> Image.Image:
    """``Image.open``, refusing an image over :data:`MAX_IMAGE_PIXELS` from its header."""
    image = Image.open(path)
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        image.close()
        raise Image.DecompressionBombError(f"{width}x{height} = {width * height} pixels")
    return image


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


def _check_size(size: tuple[int, int] | int) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int | np.integer) else tuple(size)
    if len(pair) != 2 or not all(isinstance(s, int | np.integer) and s > 0 for s in pair):
        raise DataError(
            f"image size must be (height, width) in pixels; got {size!r}",
            "give two positive integers, e.g. (224, 224)",
        )
    return int(pair[0]), int(pair[1])


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(str(i) for i in items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


ImageInput = str | os.PathLike[str] | Image.Image | np.ndarray
"""One input to :meth:`Predictor.predict`: an image file or folder, a Pillow image, or a uint8
(or uint16) array ``(H, W)``, ``(H, W, C)`` or a batch ``(N, H, W, C)``."""


def expand(inputs: ImageInput | Iterable[ImageInput]) -> list[tuple[str, Any]]:
    """``(source name, item)`` per image to predict on: folders listed (every image under
    them, sorted), batches of arrays split."""
    if isinstance(inputs, str | os.PathLike | Image.Image | np.ndarray):
        inputs = [inputs]
    items: list[tuple[str, Any]] = []
    for index, item in enumerate(inputs):
        if isinstance(item, Image.Image):
            items.append((getattr(item, "filename", "") or f"<image {index}>", item))
        elif isinstance(item, np.ndarray):
            batch = item if item.ndim == 4 else [item]
            items.extend((f"<array {index}>" if item.ndim < 4 else f"<array {index}.{i}>", a)
                         for i, a in enumerate(batch))
        else:
            items.extend((str(path), path) for path in _files(Path(item)))
    return items


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        found = image_files(path)
        if not found:
            raise DataError(
                f"no images in folder {path}", "it needs .jpg/.jpeg/.png/.bmp/.webp files"
            )
        return found
    if not path.exists():
        raise DataError(f"image file not found: {path}", "check the path")
    return [path]


def decode(item: Any, size: tuple[int, int]) -> np.ndarray:
    """One image to predict on (a path, a Pillow image or an array) as uint8 RGB at ``size``,
    decoded and resized exactly as in training."""
    if isinstance(item, Path):
        return load_image(item, size)
    if isinstance(item, Image.Image):
        return image_array(item, size)
    if item.dtype not in (np.uint8, np.uint16) or item.ndim not in (2, 3) or (
        item.ndim == 3 and item.shape[-1] not in (1, 2, 3, 4)
    ):
        raise DataError(
            f"an image array must be uint8 (H, W), (H, W, C) or (N, H, W, C) with 1 to 4 "
            f"channels; got {item.dtype} {item.shape}",
            "convert it: np.clip(x * 255, 0, 255).astype(np.uint8) for floats in [0, 1]",
        )
    if item.dtype == np.uint16:  # like a 16-bit PNG: 0..65535 to 0..255
        item = np.clip(np.rint(item / 257.0), 0, 255).astype(np.uint8)
    if item.ndim == 3 and item.shape[-1] <= 2:  # gray, or gray and alpha
        item = item[..., 0]
    return image_array(Image.fromarray(item), size)


def check_batch(batch: np.ndarray, spec: InputSpec) -> np.ndarray:
    """``batch`` as the contiguous uint8 NHWC array the model takes, or a DataError."""
    batch = np.ascontiguousarray(batch)
    height, width = spec.size
    if batch.dtype != np.uint8 or batch.shape[1:] != (height, width, 3):
        raise DataError(
            f"the model takes uint8 images of shape (N, {height}, {width}, 3); "
            f"got {batch.dtype} {batch.shape}",
            "use predict(), which decodes and resizes any image",
        )
    return batch


class ImageInputs:
    """The image modality as the runtime sees it: what to predict on, decoded per spec."""

    name = "image"

    def expand(self, inputs: Any) -> list[tuple[str, Any]]:
        """``(source, item)`` pairs: see :func:`expand`."""
        return expand(inputs)

    def decode(self, item: Any, spec: InputSpec) -> np.ndarray:
        """One item as the model's input: see :func:`decode`."""
        return decode(item, spec.size)

    def check(self, batch: np.ndarray, spec: InputSpec) -> np.ndarray:
        """A ready batch, checked: see :func:`check_batch`."""
        return check_batch(batch, spec)
