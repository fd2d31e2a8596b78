"""The bundle's file layout: file names, the ONNX graph's names and metadata keys, the schema
version and checksums.

The runtime reads a bundle with this module and :mod:`tlcore.bundle.read`: neither imports a
recipe, trainer or framework.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass


SCHEMA_VERSION = 1
"""Version of the bundle layout (``tlcore.json`` and the ONNX metadata); readers refuse newer."""


MODEL_FILE = "model.onnx"


INFO_FILE = "tlcore.json"


RUN_FILE = "run.json"
"""A run's own record (``tlcore.runfolder``): a model in a folder holding one is part of a
run, and is used only with the ``tlcore.json`` that records its checksum."""


DATA_FILE = "model.onnx.data"
"""External tensor data, written beside ``model.onnx`` only for models over 2 GB."""


INPUT = "images"
"""An image model's input (a text model's is ``input_ids``, a vector model's ``vectors``:
:class:`~tlcore.interfaces.InputSpec`)."""


EMBEDDINGS = "embeddings"
"""The pooled backbone features ``(batch, features)``, beside the task's output, in models
whose backend exports them."""


TOKENIZER_FILE = "tokenizer.json"
"""A text model's tokenizer (``tokenizers``' JSON), beside ``model.onnx``."""


PROBABILITIES = "probabilities"
"""The output of a classifier (Softmax) or a multi-label model (Sigmoid)."""


VALUES = "values"
"""The output of a regression: the predicted values, ``(batch, 1)``."""


LOGITS = "logits"


BATCH_DIM = "batch"


TTA_CHOICES = ("none", "hflip", "crops", "hflip_crops")
"""What ``export.tta``, ``tl eval --tta`` and ``tl predict --tta`` accept: the views of each
image a model's output is averaged over (:mod:`tlcore.bundle.tta`)."""


META_LABELS = "tlcore.labels"


META_INPUT = "tlcore.input"


META_VERSION = "tlcore.version"


META_SCHEMA = "tlcore.schema_version"


META_TASK = "tlcore.task"
"""The task and what it stored (JSON: ``{"name": "multilabel", "thresholds": [...]}``); a
model without it is a classifier (tlcore 0.1)."""


def file_sha256(path: str | Path) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def exported_files(written: str | Path, folder: str | Path) -> dict[str, str]:
    """Every file an export wrote (``written``: a file, or a folder such as ``native/``) by
    its path relative to the bundle ``folder``, with its sha256: ``tlcore.json`` records them
    under ``exports``, so that a copied bundle can be checked file by file."""
    written, folder = Path(written), Path(folder)
    files = sorted(p for p in written.rglob("*") if p.is_file()) if written.is_dir() else [written]
    return {path.relative_to(folder).as_posix(): file_sha256(path) for path in files}
