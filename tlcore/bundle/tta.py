"""Test-time augmentation: the model's output averaged over views of each image.

The views of each choice (:func:`views`): ``hflip``, the image and its mirror image;
``crops``, the image and its four corner crops (each :data:`CROP_SCALE` of the sides, enlarged
back to the input size by nearest neighbour); ``hflip_crops``, those five and their mirror
images (the ten crops of the classic ten-crop evaluation, with the whole image for the
centre crop). Every view is an index map, ``images[:, rows][:, :, columns]``, so the numpy
and the ONNX forms pick exactly the same pixels.

Two forms, one arithmetic. :func:`add_view_average` builds it into ``model.onnx`` (the
recipe's ``export.tta``): for each view but the image itself the graph gathers the view's
rows and columns from its input, runs a copy of the nodes that compute the task's output on
it, sharing the weights, and averages the outputs with a Mean node; the bundle's metadata
says which (:data:`META_TTA`), and the parity check compares it with the mean of the
framework's forwards on the same views. :func:`view_average` is the same average computed
around any ``images -> outputs`` function, which ``tl eval --tta`` and ``tl predict --tta``
use on a bundle without it (one onnxruntime run per view).

Only the task's output (``probabilities``, ``values``) is averaged: ``logits`` and
``embeddings`` stay those of the image as given. Images only: the input is NHWC.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlcore.bundle.layout import TTA_CHOICES
from tlcore.errors import TlcoreError

if TYPE_CHECKING:
    import onnx

    from tlcore.bundle.graph import OnnxExport
    from tlcore.interfaces import InputSpec
    from tlcore.tasks import Task

CROP_SCALE = 0.875
"""The side of a corner crop, as a fraction of the image's (the 224-of-256 of ImageNet's
evaluation)."""

META_TTA = "tlcore.tta"
"""The ONNX metadata key that says which test-time augmentation the graph does itself."""

_HEIGHT_AXIS, _WIDTH_AXIS = 1, 2  # NHWC

View = tuple[np.ndarray, np.ndarray]
"""A view's ``(rows, columns)``: int64 indices into the image's height and width."""


def tta_choice(tta: bool | str | None) -> str:
    """A ``tta`` argument as a name of :data:`TTA_CHOICES`: ``True`` is ``hflip`` (the flag
    alone), ``False`` / ``None`` is ``none``.

    Raises:
        TlcoreError: an unknown name.
    """
    if tta is True:
        return "hflip"
    if tta is False or tta is None:
        return "none"
    if tta not in TTA_CHOICES:
        raise TlcoreError(f"unknown test-time augmentation {tta!r}",
                          f"use one of {', '.join(TTA_CHOICES)}")
    return tta


def views(tta: str, height: int, width: int) -> list[View]:
    """The views ``tta`` averages over, the image itself first.

    A corner crop's side is ``round(CROP_SCALE * side)``; output pixel ``i`` takes the crop's
    pixel ``floor((i + 0.5) * crop / side)`` (nearest neighbour, centres aligned).
    """
    rows, columns = np.arange(height, dtype=np.int64), np.arange(width, dtype=np.int64)
    found: list[View] = [(rows, columns)]
    if tta in ("crops", "hflip_crops"):
        tall, wide = _crop_maps(height), _crop_maps(width)
        found += [(r, c) for r in tall for c in wide]
    if tta in ("hflip", "hflip_crops"):
        found += [(r, c[::-1].copy()) for r, c in found]
    return found


def _crop_maps(side: int) -> tuple[np.ndarray, np.ndarray]:
    """The index maps of the first and the last crop along one side, enlarged to ``side``."""
    crop = max(1, round(CROP_SCALE * side))
    picks = np.floor((np.arange(side) + 0.5) * crop / side).astype(np.int64)
    return picks, picks + (side - crop)


def view_average(
    predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray, tta: str
) -> np.ndarray:
    """The mean of ``predict`` over the views of ``tta`` of ``images``.

    Args:
        predict: uint8 NHWC images to a float array with one row per image.
        images: uint8 ``(n, H, W, C)``.
        tta: a name of :data:`TTA_CHOICES`.
    """
    found = views(tta, images.shape[1], images.shape[2])
    outputs = [np.asarray(predict(np.ascontiguousarray(images[:, rows][:, :, columns])),
                          np.float64) for rows, columns in found]
    return (sum(outputs) / len(found)).astype(np.float32)


def graph_tta(proto: onnx.ModelProto) -> str:
    """The test-time augmentation a graph does itself: a name of :data:`TTA_CHOICES`."""
    return next((p.value for p in proto.metadata_props if p.key == META_TTA), "none")


def add_view_average(
    proto: onnx.ModelProto, input_name: str, output: str, tta: str
) -> onnx.ModelProto:
    """Make the bundle's graph average ``output`` over the views of ``tta`` (modified in
    place and returned).

    For each view but the image itself, Gather nodes pick its rows and columns from the
    input, and the nodes ``output`` depends on are copied (names prefixed ``tta<k>/``,
    initializers shared, so the file grows by the graph's nodes, not its weights) to run on
    it; a Mean node gives ``output`` from all of them. Every op used exists from opset 9 on.

    Raises:
        TlcoreError: the graph already averages, its input is not an NHWC image of known
            size, or a node on the way holds a subgraph (If, Loop), which is not copied.
    """
    from onnx import helper

    if graph_tta(proto) != "none":
        raise TlcoreError(
            f"the model already averages over views ({META_TTA}: {graph_tta(proto)})",
            "export it from the run's native weights (tl export) to change export.tta",
        )
    graph = proto.graph
    height, width = _input_size(graph, input_name)
    keep = {tensor.name for tensor in graph.initializer} | {""}
    needed = _ancestors(graph, output)
    for index in needed:
        node = graph.node[index]
        if any(attr.type in (attr.GRAPH, attr.GRAPHS) for attr in node.attribute):
            raise TlcoreError(
                f"test-time augmentation cannot copy node {node.name or node.op_type!r}: it "
                "holds a subgraph",
                "export without it (export.tta: none) and use tl eval --tta, which runs "
                "the model once per view",
            )
    plain = f"{output}/plain"
    for node in graph.node:  # the plain path's output gets a name of its own
        node.output[:] = [plain if name == output else name for name in node.output]
        node.input[:] = [plain if name == output else name for name in node.input]
    averaged, added = [plain], []
    identity = views("none", height, width)[0]
    for number, view in enumerate(views(tta, height, width)[1:], start=1):
        prefix = f"tta{number}/"
        seen, gathers = _view_input(graph, input_name, view, identity, prefix)
        added += gathers
        renames = {input_name: seen, plain: prefix + output}
        added += _copied(graph, needed, keep, renames, prefix)
        averaged.append(prefix + output)
    added.append(helper.make_node("Mean", averaged, [output], name="tta/average"))
    graph.node.extend(added)
    meta = {prop.key: prop.value for prop in proto.metadata_props}
    meta[META_TTA] = tta
    helper.set_model_props(proto, meta)
    return proto


def _view_input(
    graph: onnx.GraphProto, input_name: str, view: View, identity: View, prefix: str
) -> tuple[str, list[onnx.NodeProto]]:
    """The name of ``view`` of the input and the Gather nodes that pick it (none along an
    axis the view keeps whole); their indices are added to the graph's initializers."""
    from onnx import helper, numpy_helper

    seen, nodes = input_name, []
    for axis, picks, whole in zip((_HEIGHT_AXIS, _WIDTH_AXIS), view, identity, strict=True):
        if np.array_equal(picks, whole):
            continue
        indices = numpy_helper.from_array(picks, f"{prefix}indices{axis}")
        graph.initializer.append(indices)
        nodes.append(helper.make_node("Gather", [seen, indices.name],
                                      [f"{prefix}{input_name}{axis}"], axis=axis,
                                      name=f"{prefix}gather{axis}"))
        seen = nodes[-1].output[0]
    return seen, nodes


def _copied(
    graph: onnx.GraphProto, needed: list[int], keep: set[str], renames: dict[str, str],
    prefix: str,
) -> list[onnx.NodeProto]:
    """Copies of the ``needed`` nodes: tensors in ``keep`` (the weights) shared, those in
    ``renames`` renamed, every other one and every node name prefixed with ``prefix``."""

    def renamed(name: str) -> str:
        return name if name in keep else renames.get(name, prefix + name)

    copies = []
    for index in needed:
        node = graph.node[index]
        copy = type(node)()
        copy.CopyFrom(node)
        copy.input[:] = [renamed(name) for name in node.input]
        copy.output[:] = [renamed(name) for name in node.output]
        copy.name = prefix + (node.name or f"{node.op_type}_{index}")
        copies.append(copy)
    return copies


def _input_size(graph: onnx.GraphProto, input_name: str) -> tuple[int, int]:
    """The ``(height, width)`` of the graph's NHWC image input ``input_name``."""
    value = next((v for v in graph.input if v.name == input_name), None)
    dims = [] if value is None else value.type.tensor_type.shape.dim
    if (len(dims) != 4 or not all(dims[i].HasField("dim_value") for i in (1, 2))
            or dims[3].dim_value not in (1, 3)):
        raise TlcoreError(
            f"test-time augmentation takes views of images; this model's input "
            f"{input_name!r} is not an (batch, height, width, channels) image of known size",
            "use export.tta: none for text and vector models",
        )
    return int(dims[1].dim_value), int(dims[2].dim_value)


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
    """Build ``tta`` into a verified ``model.onnx`` (:func:`add_view_average`), check the
    result against the framework's own average over the same views and write it atomically.

    ``tta="none"`` returns ``export`` as it is. The returned export carries the new file's
    sha256 and the parity figures of the averaged graph (``embeddings_tolerance`` as
    :func:`~tlcore.bundle.graph.export_onnx` takes it; default the float32 one).

    Raises:
        TlcoreError: the model is not an image model, is stored with external data (over
            2 GB), or the averaged graph fails the checker or the parity check.
    """
    if tta == "none":
        return export
    tta_choice(tta)  # a known name
    if spec.modality != "image" or export.data_sha256 is not None:
        raise TlcoreError(
            f"export.tta: {tta} needs an image model stored in one file; this one is a "
            f"{spec.modality} model" + (" over 2 GB" if export.data_sha256 else ""),
            "set export.tta: none (tl eval --tta runs an image model once per view instead)",
        )
    import onnx

    from tlcore.bundle.layout import file_sha256
    from tlcore.bundle.parity import EMBEDDING_TOLERANCE, verify_parity
    from tlcore.bundle.read import open_session
    from tlcore.runfolder import atomic_path

    proto = add_view_average(onnx.load(str(export.path)), spec.name, task.output, tta)
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
