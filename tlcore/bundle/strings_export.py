"""The bundle's strings-in model: ``model.strings.onnx`` beside a text model's ``model.onnx``,
written only when its tokenizer graph gives the same token ids as ``tokenizers`` on every
validation text and its outputs equal ``model.onnx``'s (:mod:`tlcore.bundle.strings`).

Running it needs onnxruntime-extensions (``tlcore[text]``); ``model.onnx`` with
``tokenizer.json`` stays the model ``tl predict`` uses, and needs only ``tokenizers``.

onnxruntime-extensions' regular expressions go wrong in a process that has loaded TensorFlow
(both ship their own RE2: measured, ordinary words such as "the" became ``[UNK]``), so after a
Keras run the check runs in a fresh Python process, as a deployment would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tlcore.bundle.layout import MODEL_FILE, file_sha256
from tlcore.errors import TlcoreError
from tlcore.files import fsync
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

    from tlcore.bundle.strings import expressible, strings_model

    reason = expressible(prep)
    if reason is not None:
        return {"written": False, "reason": reason}
    ids_model = onnx.load(str(folder / MODEL_FILE))
    try:
        model = strings_model(ids_model, prep)
    except TlcoreError as exc:
        return {"written": False, "reason": exc.message}
    checked = list(texts)[:PARITY_TEXTS]
    target = folder / STRINGS_FILE
    # Checked as a file in a scratch folder (the check may run in another process) and moved
    # into place only when it passes: a graph that disagrees never appears in the bundle.
    with tempfile.TemporaryDirectory(prefix=".strings-", dir=folder) as scratch:
        candidate = Path(scratch) / STRINGS_FILE
        onnx.save_model(model, str(candidate))
        parity, reason = _check(candidate, folder / MODEL_FILE, prep, checked)
        section: dict[str, Any] = {"tokenizer_parity": parity}
        if reason is not None:
            return {"written": False, "reason": reason, **section}
        fsync(candidate)  # on disk before its name does (as atomic_path writes)
        os.replace(candidate, target)  # the scratch folder is beside it: one file system
        fsync(folder)
    return {"written": True, "file": STRINGS_FILE, "sha256": file_sha256(target), **section}


def _check(
    model: Path, ids_model: Path, prep: TextPreprocessing, texts: list[str]
) -> tuple[dict[str, Any], str | None]:
    """``check_strings_model`` on the files: here, or in a fresh process after TensorFlow was
    loaded into this one."""
    if "tensorflow" not in sys.modules:
        return _check_here(str(model), str(ids_model), prep.to_dict(), texts)
    request = json.dumps([str(model), str(ids_model), prep.to_dict(), texts])
    done = subprocess.run(
        [sys.executable, "-m", "tlcore.bundle.strings_export"], input=request,
        capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        return {}, f"the tokenizer check failed to run: {tail[0]}"
    parity, reason = json.loads(done.stdout.strip().splitlines()[-1])
    return parity, reason


def _check_here(
    model: str, ids_model: str, prep: dict[str, Any], texts: list[str]
) -> tuple[dict[str, Any], str | None]:
    import onnx

    from tlcore.bundle.strings import check_strings_model

    parity, reason = check_strings_model(
        onnx.load(model), TextPreprocessing.from_dict(prep), texts, ids_model=onnx.load(ids_model)
    )
    return parity.to_dict(), reason


if __name__ == "__main__":  # the check in a process without TensorFlow (_check)
    print(json.dumps(_check_here(*json.loads(sys.stdin.read()))))
