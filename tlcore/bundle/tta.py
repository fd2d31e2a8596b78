"""Test-time augmentation: the model's output averaged over each image and its mirror image.

Two forms, one arithmetic. :func:`add_hflip_average` builds it into ``model.onnx`` (the
recipe's ``export.tta: hflip``): the graph mirrors its input (a Gather along the width), runs
a copy of the nodes that compute the task's output on it, sharing the weights, and averages
the two outputs with a Mean node; the bundle's metadata says so (:data:`META_TTA`), and the
parity check compares it with the mean of two forwards of the framework's model.
:func:`flip_average` is the same average computed around any ``images -> outputs``
function, which ``tl eval --tta`` and ``tl predict --tta`` use on a bundle without it (two
onnxruntime runs).

Only the task's output (``probabilities``, ``values``) is averaged: ``logits`` and
``embeddings`` stay those of the image as given. Images only: the input is NHWC.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlcore.errors import TlcoreError

if TYPE_CHECKING:
    import onnx

    from tlcore.bundle.graph import OnnxExport
    from tlcore.interfaces import InputSpec
    from tlcore.tasks import Task

TTA_CHOICES = ("none", "hflip")
"""What ``export.tta``, ``tl eval --tta`` and ``tl predict --tta`` accept."""

META_TTA = "tlcore.tta"
"""The ONNX metadata key that says which test-time augmentation the graph does itself."""

_PREFIX = "tta_hflip/"
_WIDTH_AXIS = 2  # NHWC


def graph_tta(proto: onnx.ModelProto) -> str:
    """The test-time augmentation a graph does itself: ``hflip`` or ``none``."""
    return next((p.value for p in proto.metadata_props if p.key == META_TTA), "none")


def flip_average(
    predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray
) -> np.ndarray:
    """The mean of ``predict(images)`` and ``predict`` of the images mirrored left-right.

    Args:
        predict: uint8 NHWC images to a float array with one row per image.
        images: uint8 ``(n, H, W, C)``.
    """
    plain = np.asarray(predict(images), np.float64)
    mirrored = np.asarray(predict(np.ascontiguousarray(images[:, :, ::-1])), np.float64)
    return ((plain + mirrored) / 2).astype(np.float32)


def add_hflip_average(proto: onnx.ModelProto, input_name: str, output: str) -> onnx.ModelProto:
    """Make the bundle's graph average ``output`` over each image and its mirror image
    (modified in place and returned).

    The nodes ``output`` depends on are copied (names prefixed ``tta_hflip/``, initializers
    shared, so the file grows by the graph's nodes, not its weights) and fed the input
    mirrored by a Gather along the width; a Mean node gives ``output`` from the two. Every
    op used exists from opset 9 on.

    Raises:
        TlcoreError: the graph already averages, its input is not an NHWC image of known
            width, or a node on the way holds a subgraph (If, Loop), which is not copied.
    """
    from onnx import helper, numpy_helper

    if graph_tta(proto) != "none":
        raise TlcoreError(
            f"the model already averages over mirror images ({META_TTA}: {graph_tta(proto)})",
            "export it from the run's native weights (tl export) to change export.tta",
        )
    graph = proto.graph
    width = _input_width(graph, input_name)
    keep = {tensor.name for tensor in graph.initializer} | {""}
    needed = _ancestors(graph, output)
    plain = f"{output}/plain"
    for node in graph.node:  # the plain path's output gets a name of its own
        node.output[:] = [plain if name == output else name for name in node.output]
        node.input[:] = [plain if name == output else name for name in node.input]
    flipped = _PREFIX + input_name
    indices = numpy_helper.from_array(
        np.arange(width - 1, -1, -1, dtype=np.int64), _PREFIX + "reversed_columns"
    )
    graph.initializer.append(indices)
    added = [helper.make_node(
        "Gather", [input_name, indices.name], [flipped], axis=_WIDTH_AXIS,
        name=_PREFIX + "mirror",
    )]

    def renamed(name: str) -> str:
        if name in keep:
            return name
        if name == input_name:
            return flipped
        return _PREFIX + (output if name == plain else name)

    for index in needed:
        node = graph.node[index]
        if any(attr.type in (attr.GRAPH, attr.GRAPHS) for attr in node.attribute):
            raise TlcoreError(
                f"test-time augmentation cannot copy node {node.name or node.op_type!r}: it "
                "holds a subgraph",
                "export without it (export.tta: none) and use tl eval --tta, which runs "
                "the model twice",
            )
        copy = type(node)()
        copy.CopyFrom(node)
        copy.input[:] = [renamed(name) for name in node.input]
        copy.output[:] = [renamed(name) for name in node.output]
        copy.name = _PREFIX + (node.name or f"{node.op_type}_{index}")
        added.append(copy)
    added.append(helper.make_node(
        "Mean", [plain, _PREFIX + output], [output], name=_PREFIX + "average"
    ))
    graph.node.extend(added)
    meta = {prop.key: prop.value for prop in proto.metadata_props}
    meta[META_TTA] = "hflip"
    helper.set_model_props(proto, meta)
    return proto


def _input_width(graph: onnx.GraphProto, input_name: str) -> int:
    """The width of the graph's NHWC image input ``input_name``."""
    value = next((v for v in graph.input if v.name == input_name), None)
    dims = [] if value is None else value.type.tensor_type.shape.dim
    if len(dims) != 4 or not dims[2].HasField("dim_value") or dims[3].dim_value not in (1, 3):
        raise TlcoreError(
            f"test-time augmentation mirrors images; this model's input {input_name!r} is not "
            "an (batch, height, width, channels) image",
            "use export.tta: none for text and vector models",
        )
    return int(dims[2].dim_value)


def _ancestors(graph: onnx.GraphProto, output: str) -> list[int]:
    """The indices, in graph order, of the nodes ``output`` depends on."""
    producer = {name: i for i, node in enumerate(graph.node) for name in node.output}
    if output not in producer:
        raise TlcoreError(f"the model has no {output!r} output to average", "export it again")
    wanted, stack = set(), [producer[output]]
    while stack:
        index = stack.pop()
        if index in wanted:
            continue
        wanted.add(index)
        stack.extend(producer[name] for name in graph.node[index].input if name in producer)
    return sorted(wanted)


def export_tta(
    export: OnnxExport,
    backend: str,
    model: Any,
    samples: np.ndarray,
    spec: InputSpec,
    task: Task,
    task_info: dict[str, Any],
    tolerance: float,
    tta: str,
    embeddings_tolerance: float | None = None,
) -> OnnxExport:
    """Build ``tta`` into a verified ``model.onnx`` (:func:`add_hflip_average`), check the
    result against the framework's own average of two forwards and write it atomically.

    ``tta="none"`` returns ``export`` as it is. The returned export carries the new file's
    sha256 and the parity figures of the averaged graph (``embeddings_tolerance`` as
    :func:`~tlcore.bundle.graph.export_onnx` takes it; default the float32 one).

    Raises:
        TlcoreError: the model is not an image model, is stored with external data (over
            2 GB), or the averaged graph fails the checker or the parity check.
    """
    if tta == "none":
        return export
    if tta not in TTA_CHOICES:
        raise TlcoreError(f"unknown test-time augmentation {tta!r}", "use none or hflip")
    if spec.modality != "image" or export.data_sha256 is not None:
        raise TlcoreError(
            f"export.tta: {tta} needs an image model stored in one file; this one is a "
            f"{spec.modality} model" + (" over 2 GB" if export.data_sha256 else ""),
            "set export.tta: none (tl eval --tta runs an image model twice instead)",
        )
    import onnx

    from tlcore.bundle.layout import file_sha256
    from tlcore.bundle.parity import EMBEDDING_TOLERANCE, verify_parity
    from tlcore.bundle.read import open_session
    from tlcore.runfolder import atomic_path

    proto = add_hflip_average(onnx.load(str(export.path)), spec.name, task.output)
    target = Path(export.path)
    with atomic_path(target) as tmp:
        onnx.save(proto, str(tmp))
        try:
            onnx.checker.check_model(str(tmp))
        except onnx.checker.ValidationError as exc:
            raise TlcoreError(
                f"the test-time augmentation graph is invalid: {exc}",
                "set export.tta: none and report it",
            ) from None
        parity = verify_parity(
            open_session(tmp), backend, model, samples, tolerance, task, task_info, spec.name,
            embeddings_tolerance or EMBEDDING_TOLERANCE, tta=tta,
        )
        digest = file_sha256(tmp)
    return dataclasses.replace(export, sha256=digest, parity=parity)
