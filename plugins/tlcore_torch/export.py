"""The raw ONNX export of a :class:`TransferModel`; the core's bundle layer finishes it.

The graph has one input, named and typed as the model's input spec says (uint8 NHWC
``images``, int64 ``input_ids`` ``(batch, max_length)``, float32 ``vectors`` ``(batch,
features)``; the batch dimension dynamic), and two outputs: ``logits`` (what ``eval_step``
gives) and ``embeddings`` (the pooled features ``(batch, features)``, what
``extract_features`` gives), at the opset the core asks for. Two exporters, tried in order:

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
from torch import nn

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
OUTPUTS = ("logits", "embeddings")


class WithEmbeddings(nn.Module):
    """The graph's module: the model's logits and its pooled features, from one pass."""

    def __init__(self, model: TransferModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, embeddings)`` of a batch of the model's input."""
        features = self.model.features(x)
        return self.model.classify(features), features


def export_onnx(
    model: TransferModel,
    folder: Path,
    example: np.ndarray,
    opset: int,
    exporters: Sequence[str] = EXPORTERS,
) -> Path:
    """Write ``folder/model.onnx``, atomically: ``model`` in inference mode, its input in,
    ``logits`` and ``embeddings`` out.

    A model on a GPU, or trained in a reduced precision, is exported from a float32 CPU copy;
    the live model is left as it is.

    Args:
        model: the trained model; put back in its previous mode afterwards.
        folder: where to write (created by the core).
        example: real samples of the model's input for tracing (uint8 NHWC images, token
            ids, vectors).
        opset: the ONNX opset to write (the dynamo exporter writes at least 18).
        exporters: which exporters to try, in order (``torchscript``, ``dynamo``).

    Raises:
        TlcoreError: every exporter failed; names each one's error.
    """
    target = Path(folder) / ONNX_FILE
    spec = model.input_spec
    samples = _at_least_two(example)
    if spec.modality != "image":  # ids or vectors of any integer or real dtype: the spec's
        samples = np.asarray(samples, dtype=np.dtype(spec.dtype))
    inputs = torch.from_numpy(np.require(samples, requirements=["C", "W"]))
    errors = []
    model = float32_cpu(model)
    training = model.training
    graph = WithEmbeddings(model).eval()
    try:
        for name in exporters:
            if name == "torchscript" and opset > TORCHSCRIPT_MAX_OPSET and len(exporters) > 1:
                continue
            try:
                with torch.no_grad(), _quiet(), atomic_path(target) as temp:
                    _EXPORT[name](graph, inputs, spec.name, temp, opset)
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


def _torchscript(graph: nn.Module, x: torch.Tensor, name: str, target: Path, opset: int) -> None:
    torch.onnx.export(
        graph,
        (x,),
        str(target),
        dynamo=False,
        opset_version=opset,
        dynamic_axes={n: {0: "batch"} for n in (name, *OUTPUTS)},
        do_constant_folding=True,
        input_names=[name],
        output_names=list(OUTPUTS),
    )


def _dynamo(graph: nn.Module, x: torch.Tensor, name: str, target: Path, opset: int) -> None:
    batch = torch.export.Dim("batch")
    program = torch.onnx.export(
        graph,
        (x,),
        dynamo=True,
        opset_version=max(opset, DYNAMO_MIN_OPSET),
        dynamic_shapes=({0: batch},),
        verbose=False,
        input_names=[name],
        output_names=list(OUTPUTS),
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
            # transformers' attention masks index with (non-negative) index tensors
            warnings.filterwarnings("ignore", message="Exporting aten::index operator")
            yield
    finally:
        logger.setLevel(level)
