"""The bundle's strings-in model: ``model.strings.onnx`` beside a text model's ``model.onnx``,
written only when its tokenizer graph gives the same token ids as ``tokenizers`` on every
validation text and its outputs equal ``model.onnx``'s (:mod:`tlcore.bundle.strings`).

Running it needs onnxruntime-extensions (``tlcore[text]``); ``model.onnx`` with
``tokenizer.json`` stays the model ``tl predict`` uses, and needs only ``tokenizers``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tlcore.bundle.layout import MODEL_FILE, file_sha256
from tlcore.errors import TlcoreError
from tlcore.files import atomic_path
from tlcore.interfaces import TextPreprocessing

STRINGS_FILE = "model.strings.onnx"

PARITY_TEXTS = 500
"""Validation texts the tokenizer graph is checked on (all of them when fewer)."""


def export_strings(folder: Path, prep: TextPreprocessing, texts: Sequence[str]) -> dict[str, Any]:
    """Write ``folder/model.strings.onnx`` from ``folder/model.onnx`` when it passes; the
    ``strings`` section of ``tlcore.json``: the file, its sha256 and the tokenizer parity, or
    ``written: false`` with the reason (an inexpressible tokenizer, a missing
    onnxruntime-extensions, a text the graph tokenizes otherwise)."""
    import onnx

    from tlcore.bundle.strings import check_strings_model, expressible, strings_model

    reason = expressible(prep)
    if reason is not None:
        return {"written": False, "reason": reason}
    ids_model = onnx.load(str(folder / MODEL_FILE))
    try:
        model = strings_model(ids_model, prep)
    except TlcoreError as exc:
        return {"written": False, "reason": exc.message}
    checked = list(texts)[:PARITY_TEXTS]
    parity, reason = check_strings_model(model, prep, checked, ids_model=ids_model)
    section: dict[str, Any] = {"tokenizer_parity": parity.to_dict()}
    if reason is not None:
        return {"written": False, "reason": reason, **section}
    target = folder / STRINGS_FILE
    with atomic_path(target) as temp:
        onnx.save_model(model, str(temp))
    return {"written": True, "file": STRINGS_FILE, "sha256": file_sha256(target), **section}
