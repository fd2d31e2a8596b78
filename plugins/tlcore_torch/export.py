"""The raw ONNX export of a :class:`TransferModel`; the core's bundle layer finishes it.

The graph maps uint8 NHWC ``images`` (batch dimension dynamic) to ``logits``, at the opset the
core asks for. Two exporters, tried in order:

- ``torchscript`` (``torch.onnx.export(dynamo=False)``, tracing) first: it writes exactly the
  requested opset (the dynamo exporter has no implementations below opset 18 and fails to
  convert down to the default 17), and it takes a fraction of a second where the dynamo
  exporter takes seconds — paid on every training run. torch marks it deprecated.
- ``dynamo`` (``torch.export``) when tracing fails or is gone from torch; it writes opset 18 or
  above, and the bundle records the opset actually written.

Either way the core checks the result against the model on real samples at batch 1 and 8, so a
trace that baked in a shape or a branch cannot pass unnoticed.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from tlcore.errors import TlcoreError
from tlcore.files import atomic_path
from tlcore_torch.model import TransferModel
from tlcore_torch.placement import float32_cpu

ONNX_FILE = "model.onnx"
EXPORTERS = ("torchscript", "dynamo")
DYNAMO_MIN_OPSET = 18
TORCHSCRIPT_MAX_OPSET = 20
"""The newest opset the tracing exporter writes (torch 2.x); above it, it fails after printing
its whole IR graph to stderr, so it is not tried when another exporter is left."""
_NAMES = {"input_names": ["images"], "output_names": ["logits"]}


def export_onnx(
    model: TransferModel,
    folder: Path,
    example: np.ndarray,
    opset: int,
    exporters: Sequence[str] = EXPORTERS,
) -> Path:
    """Write ``folder/model.onnx``, atomically: ``model`` in inference mode, uint8 NHWC in,
    logits out.

    A model on a GPU, or trained in a reduced precision, is exported from a float32 CPU copy;
    the live model is left as it is.

    Args:
        model: the trained model; put back in its previous mode afterwards.
        folder: where to write (created by the core).
        example: real uint8 NHWC images for tracing.
        opset: the ONNX opset to write (the dynamo exporter writes at least 18).
        exporters: which exporters to try, in order (``torchscript``, ``dynamo``).

    Raises:
        TlcoreError: every exporter failed; names each one's error.
    """
    target = Path(folder) / ONNX_FILE
    images = torch.from_numpy(np.require(_at_least_two(example), requirements=["C", "W"]))
    errors = []
    model = float32_cpu(model)
    training = model.training
    model.eval()
    try:
        for name in exporters:
            if name == "torchscript" and opset > TORCHSCRIPT_MAX_OPSET and len(exporters) > 1:
                continue
            try:
                with torch.no_grad(), _quiet(), atomic_path(target) as temp:
                    _EXPORT[name](model, images, temp, opset)
                return target
            except Exception as exc:  # any exporter error: try the next one, report all
                errors.append(f"{name}: {type(exc).__name__}: {str(exc).strip()[:300]}")
    finally:
        model.train(training)
    raise TlcoreError(
        "torch cannot export the model to ONNX: " + "; ".join(errors),
        "set export.formats to [native] to skip ONNX, or try another export.opset",
    )


def _at_least_two(example: np.ndarray) -> np.ndarray:
    """Trace with two or more images, so no exporter specialises the batch dimension to 1."""
    return example if len(example) >= 2 else np.concatenate([example, example])


def _torchscript(model: TransferModel, images: torch.Tensor, target: Path, opset: int) -> None:
    torch.onnx.export(
        model,
        (images,),
        str(target),
        dynamo=False,
        opset_version=opset,
        dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
        do_constant_folding=True,
        **_NAMES,
    )


def _dynamo(model: TransferModel, images: torch.Tensor, target: Path, opset: int) -> None:
    batch = torch.export.Dim("batch")
    program = torch.onnx.export(
        model,
        (images,),
        dynamo=True,
        opset_version=max(opset, DYNAMO_MIN_OPSET),
        dynamic_shapes=({0: batch},),
        verbose=False,
        **_NAMES,
    )
    program.save(str(target))


_EXPORT = {"torchscript": _torchscript, "dynamo": _dynamo}


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' deprecation notes and trace warnings (parity is checked anyway)
    and their progress logging."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", message=".*will be removed.*")
            yield
    finally:
        logger.setLevel(level)
