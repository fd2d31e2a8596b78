"""A backend's raw ONNX graph made self-contained, checked, verified and written.

A backend's ``tl_export(fmt="onnx")`` writes a *raw* graph: one input (uint8 NHWC images,
int64 token ids or float32 vectors), an output of logits and, optionally, one of embeddings
(the pooled backbone features). :func:`export_onnx` turns it into the bundle's ``model.onnx``:

1. input named as the input spec says (``images``, ``input_ids``, ``vectors``) with a dynamic
   ``batch`` dimension; outputs the task's (appended here: ``probabilities`` through a
   Softmax for classification or a Sigmoid for multi-label, ``values`` for regression),
   ``logits`` and ``embeddings``;
2. labels, input spec, task, tlcore version and bundle schema version in the metadata, so the
   file alone is enough to use it;
3. ``onnx.checker.check_model``;
4. parity (:mod:`tlcore.bundle.parity`): onnxruntime against the framework on real samples;
5. written atomically; the figures and the file's sha256 go into ``tlcore.json``.

Backend-neutral: it imports ``onnx`` and ``onnxruntime`` when called, never a framework.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlcore import __version__
from tlcore.errors import PluginError, TlcoreError
from tlcore.interfaces import InputSpec, Preprocessing
from tlcore.runfolder import atomic_path
from tlcore.tasks import DEFAULT_TASK, Task, get_task

if TYPE_CHECKING:
    import onnx
from tlcore.bundle.layout import (
    BATCH_DIM,
    DATA_FILE,
    EMBEDDINGS,
    LOGITS,
    META_INPUT,
    META_LABELS,
    META_SCHEMA,
    META_TASK,
    META_VERSION,
    MODEL_FILE,
    SCHEMA_VERSION,
    file_sha256,
)
from tlcore.bundle.parity import EMBEDDING_TOLERANCE, Parity, verify_parity

DEFAULT_OPSET = 17


MIN_OPSET = 9
"""The lowest opset tlcore exports: its final nodes and the backends' graphs need no less."""


_PROTOBUF_LIMIT = 2**31 - 1  # one protobuf message holds at most 2 GB


@dataclass(frozen=True)
class OnnxExport:
    """A verified ``model.onnx``: where it is, its sha256, its opset and its parity figures;
    for a model over 2 GB also the sha256 of its external data file."""

    path: Path
    sha256: str
    opset: int
    parity: Parity
    data_sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``onnx`` section of ``tlcore.json``."""
        data = {"data_file": DATA_FILE, "data_sha256": self.data_sha256}
        return {
            "file": self.path.name,
            "sha256": self.sha256,
            **(data if self.data_sha256 else {}),
            "opset": self.opset,
            "parity": self.parity.to_dict(),
        }


def export_onnx(
    backend: str,
    model: Any,
    folder: str | Path,
    samples: np.ndarray,
    labels: Sequence[str],
    preprocessing: InputSpec | Preprocessing,
    *,
    opset: int = DEFAULT_OPSET,
    tolerance: float = 1e-4,
    task: Task | None = None,
    task_info: dict[str, Any] | None = None,
    embeddings_tolerance: float = EMBEDDING_TOLERANCE,
) -> OnnxExport:
    """Export ``model`` through its backend's ``tl_export`` and write a verified ``model.onnx``.

    Args:
        backend: the backend that owns ``model``.
        model: the backend's trained model.
        folder: where ``model.onnx`` is written (the run folder).
        samples: real samples of the model's input (uint8 NHWC images at its size, token
            ids, vectors), for tracing and parity.
        labels: the class names (the output names), in logit order.
        preprocessing: the model's input spec, written into the metadata.
        opset: the ONNX opset asked of the backend's ``tl_export``.
        tolerance: the largest output difference the parity check accepts (a probability;
            for a regression, in standard deviations of the training targets).
        task: the run's task (default classification): its final node ends the graph.
        task_info: what the task stored for the bundle (thresholds, target scaling).
        embeddings_tolerance: the largest relative difference of the ``embeddings`` output
            from the backend's features (which a reduced-precision model computes in its
            training precision: :data:`~tlcore.bundle.parity.REDUCED_EMBEDDING_TOLERANCE`).

    Returns:
        The written file, its sha256, its opset and the parity figures.

    Raises:
        TlcoreError: no plugin exports ONNX for ``backend``, the graph is not what the bundle
            needs, the checker rejects it, or the parity check fails.
    """
    onnx = _require_onnx()
    check_opset(opset)
    spec = preprocessing if isinstance(preprocessing, InputSpec) else InputSpec.image(
        preprocessing
    )
    samples = _check_samples(np.ascontiguousarray(samples), spec)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    from tlcore.plugins.calls import BackendCalls  # here: keep pluggy off the import path

    with tempfile.TemporaryDirectory(prefix=".onnx-export-", dir=folder) as raw_dir:
        written = BackendCalls(backend).export(model, "onnx", Path(raw_dir), samples, opset)
        proto = onnx.load(str(written))
    if graph_opset(proto) != opset:
        raise PluginError(
            f"the {backend} backend wrote ONNX opset {graph_opset(proto)} when asked for "
            f"opset {opset}",
            f"ask for opset {graph_opset(proto)} (--opset, or the recipe's export.opset) if "
            "the runtimes you deploy to take it; otherwise report it to the backend plugin",
        )
    proto = finish_graph(proto, labels, spec, task, task_info)
    target = folder / MODEL_FILE
    with atomic_path(target) as tmp:
        external = _save(proto, tmp)
        try:
            onnx.checker.check_model(str(tmp))
        except onnx.checker.ValidationError as exc:
            raise PluginError(
                f"the exported ONNX graph is invalid: {exc}", "report it to the backend plugin"
            ) from None
        from tlcore.bundle.read import open_session

        parity = verify_parity(
            open_session(tmp), backend, model, samples, tolerance, task, task_info, spec.name,
            embeddings_tolerance,
        )
        digest = file_sha256(tmp)
    data_digest = file_sha256(folder / DATA_FILE) if external else None
    return OnnxExport(target, digest, graph_opset(proto), parity, data_digest)


def _check_samples(samples: np.ndarray, spec: InputSpec) -> np.ndarray:
    """``samples`` when they are real samples of the model's input, else a TlcoreError."""
    if samples.shape[1:] != spec.shape or samples.dtype != np.dtype(spec.dtype) or not len(
        samples
    ):
        raise TlcoreError(
            f"ONNX export needs real samples of the model's input ({spec.dtype} "
            f"{spec.shape}), got {samples.dtype} {samples.shape}",
            "pass a few samples of the training data as the model takes them",
        )
    return samples


def finish_graph(
    proto: onnx.ModelProto,
    labels: Sequence[str],
    preprocessing: InputSpec | Preprocessing,
    task: Task | None = None,
    task_info: dict[str, Any] | None = None,
) -> onnx.ModelProto:
    """Make a backend's raw graph (one input, ``logits`` and optionally ``embeddings`` out)
    the bundle's graph (modified in place).

    The input gets the spec's name (``images``, ``input_ids``, ``vectors``) and the outputs
    ``logits`` and ``embeddings`` (through Identity nodes when the backend named them
    otherwise), the batch dimension of all is made dynamic, the task's final node adds its
    output, listed first (:meth:`~tlcore.tasks.Task.final_node`: a Softmax giving
    ``probabilities`` for classification, the default; a Sigmoid giving ``probabilities``
    for multi-label; ``values`` for regression), and the metadata gets the labels, the input
    spec, the task and the versions.

    Raises:
        PluginError: the graph has not one input and one or two outputs, the input is not
            what the spec says (dtype and shape), the logits do not have one entry per label,
            or the embeddings are not ``(batch, features)``.
    """
    from onnx import helper

    spec = preprocessing if isinstance(preprocessing, InputSpec) else InputSpec.image(
        preprocessing
    )
    graph = proto.graph
    initializers = {tensor.name for tensor in graph.initializer}
    inputs = [value for value in graph.input if value.name not in initializers]
    if len(inputs) != 1 or len(graph.output) not in (1, 2):
        raise PluginError(
            f"the backend's ONNX graph has {len(inputs)} inputs and {len(graph.output)} "
            "outputs; the bundle needs one input and a logits output (and optionally "
            "embeddings)",
            "report it to the backend plugin",
        )
    source, logits, embeddings = inputs[0], *_outputs(graph)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(spec.dtype))
    _check_value(source, elem, (None, *spec.shape), "input", f"{spec.dtype} {spec.shape}")
    _check_value(logits, None, (None, len(labels)), "output", f"(batch, {len(labels)}) logits")
    if source.name != spec.name:
        graph.node.insert(0, helper.make_node("Identity", [spec.name], [source.name]))
        source.name = spec.name
    named = [(logits, LOGITS)]
    if embeddings is not None:
        _check_value(embeddings, None, (None, None), "output", "(batch, features) embeddings")
        named.append((embeddings, EMBEDDINGS))
    for value, name in named:
        if value.name != name:
            graph.node.append(helper.make_node("Identity", [value.name], [name]))
            value.name = name
    for value in (source, logits, *([embeddings] if embeddings is not None else [])):
        value.type.tensor_type.shape.dim[0].dim_param = BATCH_DIM
    logits.type.tensor_type.shape.dim[1].dim_value = len(labels)
    task = task or get_task(DEFAULT_TASK)
    task.final_node(proto, LOGITS, task_info or {})
    meta = {prop.key: prop.value for prop in proto.metadata_props}
    meta.update(metadata(labels, spec, task, task_info))
    helper.set_model_props(proto, meta)
    return proto


def _outputs(graph: onnx.GraphProto) -> tuple[Any, Any]:
    """``(logits, embeddings or None)`` of a raw graph: by name when the backend used the
    bundle's names, else in order."""
    outputs = list(graph.output)
    if len(outputs) == 1:
        return outputs[0], None
    by_name = {value.name: value for value in outputs}
    if LOGITS in by_name and EMBEDDINGS in by_name:
        return by_name[LOGITS], by_name[EMBEDDINGS]
    return outputs[0], outputs[1]


def _check_value(
    value: onnx.ValueInfoProto,
    elem_type: int | None,
    shape: tuple[int | None, ...],
    role: str,
    want: str,
) -> None:
    tensor = value.type.tensor_type
    dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
    fits = len(dims) == len(shape) and all(
        d is None or s is None or d == s for d, s in zip(dims, shape, strict=False)
    )
    if not fits or (elem_type is not None and tensor.elem_type != elem_type):
        from onnx import helper

        got = f"{helper.tensor_dtype_to_np_dtype(tensor.elem_type)} {dims}"
        raise PluginError(
            f"the backend's ONNX graph {role} {value.name!r} is {got}; the bundle needs {want}",
            "report it to the backend plugin",
        )


def metadata(
    labels: Sequence[str],
    preprocessing: InputSpec | Preprocessing,
    task: Task | None = None,
    task_info: dict[str, Any] | None = None,
) -> dict[str, str]:
    """The metadata every bundle's ``model.onnx`` carries, as ONNX string properties; the
    task (default classification) with what it stored as JSON under :data:`META_TASK`."""
    task = task or get_task(DEFAULT_TASK)
    # Strict JSON, as every file tlcore writes: the runtime of another language reads it too.
    return {
        META_LABELS: json.dumps(list(labels)),
        META_INPUT: json.dumps(preprocessing.to_dict(), allow_nan=False),
        META_TASK: json.dumps(task.to_dict(task_info or {}), allow_nan=False),
        META_VERSION: __version__,
        META_SCHEMA: str(SCHEMA_VERSION),
    }


def check_opset(opset: int) -> None:
    """Refuse, before anything is exported, an opset the installed ``onnx`` cannot write.

    Raises:
        TlcoreError: ``opset`` is outside :data:`MIN_OPSET` to the newest opset of ``onnx``;
            names the valid range.
    """
    newest = _require_onnx().defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise TlcoreError(
            f"ONNX opset {opset!r} cannot be exported: the installed onnx writes opsets "
            f"{MIN_OPSET} to {newest}",
            f"choose an opset from {MIN_OPSET} to {newest} (--opset, or the recipe's "
            f"export.opset; default {DEFAULT_OPSET})",
        )


def graph_opset(proto: onnx.ModelProto) -> int:
    """The version of the default ONNX operator set a model imports."""
    return next(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx"))


def _save(proto: onnx.ModelProto, path: Path) -> bool:
    """Save ``proto``; over 2 GB the tensors go to :data:`DATA_FILE` beside it (returns True)."""
    import onnx

    if proto.ByteSize() <= _PROTOBUF_LIMIT:
        onnx.save_model(proto, str(path))
        return False
    # The data file gets its final name at once, because the model refers to it by name;
    # model.onnx itself is still renamed into place only once verified.
    onnx.save_model(
        proto,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=DATA_FILE,
        size_threshold=1024,
    )
    return True


def _require_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise TlcoreError(
            "onnx is not installed; it is needed to write the ONNX bundle",
            "pip install 'tlcore[onnx]', or set export.formats to [native]",
        ) from None
    return onnx
