"""The text modality: reading text files and turning texts into the token ids a text model
takes, the same way for training, export and prediction.

:func:`tokenizer` opens a model's ``tokenizer.json`` with Hugging Face ``tokenizers`` (no
framework, no ``transformers``) and sets tlcore's own truncation and padding over whatever the
file preconfigures: every text becomes exactly ``max_length`` ids, special tokens added, cut at
the end when longer, padded at the end with ``pad_id`` when shorter. :func:`encode` does it to
many texts at once. :func:`read_text` reads one ``.txt`` file (UTF-8, a byte-order mark
allowed) with the errors a user can fix.

What :meth:`TextInputs.expand` takes as input to predict on:

- a ``str`` is **a text**, unless it names an existing ``.txt`` file (read as one text) or an
  existing folder (every ``.txt`` file under it, sorted) — so ``predict("great film")`` and
  ``predict("reviews/")`` both do what they say;
- a :class:`pathlib.Path` (any ``os.PathLike``) is **always a path**: a file (read as one text,
  whatever its extension) or a folder; a missing one is an error, never a text;
- a list (or any iterable) of those mixes them freely.

To predict on a string that happens to name a folder or ``.txt`` file, tokenize it yourself
(:func:`encode`) and call ``Predictor.outputs``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlcore.errors import DataError, TlcoreError
from tlcore.inputs.listing import Listing, list_files
from tlcore.interfaces import InputSpec, TextPreprocessing

if TYPE_CHECKING:
    from tokenizers import Tokenizer

TEXT_EXTENSIONS = frozenset({".txt"})
"""File extensions read as texts in folders (compared lower-case); other files are ignored."""

IGNORED_NAMES = frozenset({"__MACOSX", "__pycache__"})
"""Folder names skipped besides hidden ones, as for images (kept here so that reading texts
does not import Pillow)."""

TextInput = str | os.PathLike[str]
"""One input to ``Predictor.predict`` of a text model: a text, a ``.txt`` file or a folder
(see the module's rules)."""


def tokenizer(prep: TextPreprocessing) -> Tokenizer:
    """The ``tokenizers.Tokenizer`` of ``prep.tokenizer`` with tlcore's truncation and padding:
    at most and exactly ``prep.max_length`` ids, padded at the end with ``prep.pad_id``.

    Cached per (file, its size and modification time, length, pad id): epochs and predictions
    reuse one object. Do not change its settings; :func:`encode` relies on them.

    Raises:
        TlcoreError: ``tokenizers`` is not installed, or the file is missing or unreadable.
    """
    path = Path(prep.tokenizer)
    try:
        info = path.stat()
    except OSError:
        raise TlcoreError(
            f"tokenizer file not found: {path}",
            "a text model needs its tokenizer.json: give the model's folder (save_pretrained "
            "writes it) or the bundle it was exported into",
        ) from None
    return _tokenizer(str(path.resolve()), info.st_mtime_ns, info.st_size,
                      int(prep.max_length), int(prep.pad_id))


@functools.lru_cache(maxsize=16)
def _tokenizer(path: str, mtime: int, size: int, length: int, pad_id: int) -> Tokenizer:
    """The cached tokenizer; ``mtime`` and ``size`` only key the cache (a rewritten file)."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise TlcoreError(
            "reading texts needs the 'tokenizers' package, which is not installed",
            "pip install tokenizers",
        ) from None
    if length < 2:
        raise TlcoreError(
            f"a text model's max_length must be at least 2 tokens ([CLS] and [SEP]); got {length}",
            "set backbone.input_size to the tokens per text, e.g. 128",
        )
    try:
        tok = Tokenizer.from_file(path)
    except Exception as exc:  # tokenizers raises a bare Exception for a bad file
        raise TlcoreError.caused_by(
            f"cannot read the tokenizer {path}", exc,
            "restore the model's tokenizer.json (a fast tokenizer's save_pretrained writes it)",
        ) from None
    # The file may preconfigure other lengths (MiniLM's pads to 128): tlcore's settings win.
    tok.no_truncation()
    tok.no_padding()
    tok.enable_truncation(max_length=length, strategy="longest_first", direction="right")
    tok.enable_padding(direction="right", pad_id=pad_id,
                       pad_token=tok.id_to_token(pad_id) or "[PAD]", length=length)
    return tok


def encode(texts: Sequence[str], prep: TextPreprocessing) -> np.ndarray:
    """Token ids of ``texts`` as the model takes them: int64 ``(N, max_length)``.

    Example:
        >>> encode(["a short text"], prep).shape  # doctest: +SKIP
        (1, 128)

    Raises:
        DataError: an item is not a string.
        TlcoreError: see :func:`tokenizer`.
    """
    texts = list(texts)
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise DataError(
                f"text {index} is a {type(text).__name__}, not a string: {text!r:.60}",
                "give texts as Python strings",
            )
    length = int(prep.max_length)
    if not texts:
        return np.zeros((0, length), dtype=np.int64)
    encodings = tokenizer(prep).encode_batch(texts, add_special_tokens=True)
    return np.array([e.ids for e in encodings], dtype=np.int64).reshape(len(texts), length)


def read_text(path: str | os.PathLike[str]) -> str:
    """The text of one file: UTF-8 (a leading byte-order mark is dropped), as it is.

    Raises:
        DataError: the file is missing, holds NUL bytes (not a text file, or UTF-16), is not
            valid UTF-8, or holds only white space; names the file.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"text file not found: {path}", "check the path") from None
    except OSError as exc:
        raise DataError(
            f"cannot read text file {path}: {exc.strerror or exc}", "make it readable"
        ) from None
    return text_of(data, str(path))


def text_of(data: bytes, where: str) -> str:
    """``data`` (the bytes of a file, or of one of its parts) as a string; ``where`` names it
    in errors. See :func:`read_text`."""
    if b"\x00" in data:
        raise DataError(
            f"{where} is not a text file (it holds NUL bytes)",
            "remove it; a UTF-16 text must be re-saved as UTF-8 "
            "(iconv -f utf-16 -t utf-8 IN > OUT)",
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{where} is not valid UTF-8 (line {line}, byte {exc.start}: "
            f"{data[exc.start:exc.start + 1]!r})",
            "re-encode it as UTF-8, e.g. iconv -f latin1 -t utf-8 IN > OUT, or save it as "
            "UTF-8 from your editor",
        ) from None
    if not text.strip():
        raise DataError(f"{where} is empty (no text after removing white space)",
                        "remove it or write its text")
    return text


def text_files(folder: Path) -> list[Path]:
    """The ``.txt`` files under ``folder``, recursively, sorted; hidden ones skipped (links
    followed as :mod:`tlcore.inputs.listing` says)."""
    return text_listing(folder).files


def text_listing(folder: Path, tree: Path | None = None) -> Listing:
    """The texts under ``folder`` (a class folder of the data folder ``tree``), with what was
    left out: :func:`tlcore.inputs.listing.list_files` for ``.txt`` files."""
    return list_files(folder, wanted=is_text_name, ignored=_ignored, tree=tree)


def is_text_name(name: str) -> bool:
    """Whether a file name has a text extension (:data:`TEXT_EXTENSIONS`)."""
    return os.path.splitext(name)[1].lower() in TEXT_EXTENSIONS


def _ignored(name: str) -> bool:
    return name.startswith(".") or name in IGNORED_NAMES


def expand(inputs: TextInput | Iterable[TextInput]) -> list[tuple[str, Any]]:
    """``(source name, item)`` per text to predict on, following the module's rules: an item
    is a ``str`` (a text, named ``<text i>``) or a :class:`~pathlib.Path` (a file, named by
    its path); folders are listed.

    Raises:
        DataError: a path is missing, a folder holds no ``.txt`` file, or an item is neither
            a string nor a path.
    """
    if isinstance(inputs, str | os.PathLike):
        inputs = [inputs]
    items: list[tuple[str, Any]] = []
    for index, item in enumerate(inputs):
        if isinstance(item, str) and not _names_path(item):
            items.append((f"<text {index}>", item))
        elif isinstance(item, str | os.PathLike):
            items.extend((str(path), path) for path in _files(Path(item)))
        else:
            raise DataError(
                f"input {index} is a {type(item).__name__}; a text model takes texts",
                "give strings (texts), .txt files or folders of them",
            )
    return items


def _names_path(text: str) -> bool:
    """Whether a string given to predict names an existing ``.txt`` file or folder."""
    if "\n" in text or len(text) > 4096:  # a text, not a path: skip the file system
        return False
    try:
        path = Path(text)  # no ~ expansion: a shell does it for paths typed
        return path.is_dir() or (path.is_file() and is_text_name(path.name))
    except (OSError, ValueError):  # a name too long, or with a NUL, for the file system
        return False


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        found = text_files(path)
        if not found:
            raise DataError(f"no .txt files in folder {path}",
                            "a text model reads folders of UTF-8 .txt files")
        return found
    if not path.exists():
        raise DataError(f"text file not found: {path}", "check the path")
    return [path]


def decode(item: Any, prep: TextPreprocessing) -> np.ndarray:
    """One text (a string, or a file read by :func:`read_text`) as its int64 ids row
    ``(max_length,)``.

    Raises:
        DataError: the file cannot be read as text, or the string is empty.
    """
    if isinstance(item, os.PathLike):
        text = read_text(item)
    elif isinstance(item, str):
        if not item.strip():
            raise DataError("an empty text (only white space) cannot be predicted on",
                            "leave it out")
        text = item
    else:
        raise DataError(f"a text model takes strings; got a {type(item).__name__}",
                        "give texts as strings")
    return encode([text], prep)[0]


def check_batch(batch: np.ndarray, spec: InputSpec) -> np.ndarray:
    """``batch`` as the contiguous int64 ``(N, max_length)`` token ids the model takes (any
    integer dtype is widened), or a DataError."""
    batch = np.asarray(batch)
    (length,) = spec.shape
    if batch.ndim != 2 or batch.shape[1] != length or not np.issubdtype(batch.dtype, np.integer):
        raise DataError(
            f"the model takes int64 token ids of shape (N, {length}); "
            f"got {batch.dtype} {batch.shape}",
            "use predict() on the texts, or tlcore.inputs.text.encode(texts, spec.preprocessing)",
        )
    return np.ascontiguousarray(batch, dtype=np.int64)


class TextInputs:
    """The text modality as the runtime sees it: texts, files and folders, tokenized per
    spec."""

    name = "text"

    def expand(self, inputs: Any) -> list[tuple[str, Any]]:
        """``(source, item)`` pairs: see :func:`expand`."""
        return expand(inputs)

    def decode(self, item: Any, spec: InputSpec) -> np.ndarray:
        """One item as the model's input: see :func:`decode`."""
        return decode(item, _prep(spec))

    def check(self, batch: np.ndarray, spec: InputSpec) -> np.ndarray:
        """A ready batch, checked: see :func:`check_batch`."""
        return check_batch(batch, spec)


def _prep(spec: InputSpec) -> TextPreprocessing:
    if not isinstance(spec.preprocessing, TextPreprocessing):
        raise TlcoreError(
            "this text model's input spec names no tokenizer",
            "re-export the model with this tlcore: the bundle must carry its tokenizer.json",
        )
    return spec.preprocessing
