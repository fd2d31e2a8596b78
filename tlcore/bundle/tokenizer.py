"""A text model's tokenizer travels with its bundle: copied beside ``model.onnx``, named by
the input spec, checked by its sha256, and found again by the runtime.

While training, a text model's :class:`~tlcore.interfaces.TextPreprocessing` names the
tokenizer file of the Hugging Face folder it came from; in a bundle it names
:data:`~tlcore.bundle.layout.TOKENIZER_FILE`, a file beside the model, so the bundle can move.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

from tlcore.bundle.layout import TOKENIZER_FILE, file_sha256
from tlcore.errors import TlcoreError
from tlcore.files import atomic_path
from tlcore.interfaces import InputSpec, TextPreprocessing


def ship_tokenizer(spec: InputSpec, folder: Path) -> InputSpec:
    """Copy a text model's tokenizer into ``folder`` (atomically) and return the spec the
    bundle describes, naming the copy; any other spec is returned as it is."""
    prep = spec.preprocessing
    if not isinstance(prep, TextPreprocessing) or prep.tokenizer == TOKENIZER_FILE:
        return spec
    source = Path(prep.tokenizer)
    target = Path(folder) / TOKENIZER_FILE
    if source.resolve() != target.resolve():
        with atomic_path(target) as temp:
            shutil.copyfile(source, temp)
    shipped = dataclasses.replace(prep, tokenizer=TOKENIZER_FILE)
    return dataclasses.replace(spec, preprocessing=shipped)


def resolve_tokenizer(spec: InputSpec, folder: Path) -> InputSpec:
    """The spec with a bundle's tokenizer file made a path (relative to ``folder``), so
    texts can be encoded; any other spec is returned as it is.

    Raises:
        TlcoreError: the tokenizer file is not in the bundle.
    """
    prep = spec.preprocessing
    if not isinstance(prep, TextPreprocessing):
        return spec
    path = Path(folder) / prep.tokenizer
    if not path.is_file():
        raise TlcoreError(
            f"the text model in {folder} needs its tokenizer {path.name}, which is missing",
            "copy the whole bundle folder: model.onnx, tlcore.json and tokenizer.json",
        )
    return dataclasses.replace(spec, preprocessing=dataclasses.replace(prep, tokenizer=str(path)))


def tokenizer_record(spec: InputSpec, folder: Path) -> dict[str, Any] | None:
    """The ``tokenizer`` section of ``tlcore.json``: the shipped file and its sha256; ``None``
    for a model that takes no texts."""
    prep = spec.preprocessing
    if not isinstance(prep, TextPreprocessing):
        return None
    path = Path(folder) / TOKENIZER_FILE
    return {"file": TOKENIZER_FILE, "sha256": file_sha256(path)}


def check_tokenizer(info: dict[str, Any], folder: Path) -> None:
    """Verify the bundle's tokenizer against the sha256 ``tlcore.json`` records (when it
    records one).

    Raises:
        TlcoreError: the file is missing or changed since export.
    """
    section = info.get("tokenizer")
    if not isinstance(section, dict) or not isinstance(section.get("sha256"), str):
        return
    path = Path(folder) / str(section.get("file", TOKENIZER_FILE))
    actual = file_sha256(path) if path.is_file() else "missing"
    if actual != section["sha256"]:
        raise TlcoreError(
            f"{path} does not match the sha256 recorded in tlcore.json "
            f"(recorded {section['sha256'][:12]}…, file {actual[:12]}…)",
            "restore the bundle's tokenizer.json from its original copy",
        )
