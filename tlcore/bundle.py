"""The ONNX bundle: a backend's raw graph made self-contained, checked, verified and written.

A backend's ``tl_export(fmt="onnx")`` writes a *raw* graph: one uint8 NHWC input, one output
of logits. :func:`export_onnx` turns it into the bundle's ``model.onnx``:

1. input named ``images`` with a dynamic ``batch`` dimension; outputs ``probabilities`` (a
   Softmax appended here) and ``logits``;
2. labels, input spec, tlcore version and bundle schema version in the metadata, so the file
   alone is enough to use it;
3. ``onnx.checker.check_model``;
4. parity: onnxruntime against the framework (``tl_eval_step``) on real samples, at batch 1
   and at batch ``len(samples)``; a difference above the tolerance, or a top-1
   disagreement that is not a tie within it, is an error, never a warning;
5. written atomically; the figures and the file's sha256 go into ``tlcore.json``.

Backend-neutral: it imports ``onnx`` and ``onnxruntime`` when called, never a framework.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlcore import __version__
from tlcore.errors import PluginError, TlcoreError
from tlcore.interfaces import Batch, Preprocessing
from tlcore.runfolder import atomic_path

if TYPE_CHECKING:
    import onnx
    import onnxruntime

SCHEMA_VERSION = 1
"""Version of the bundle layout (``tlcore.json`` and the ONNX metadata); readers refuse newer."""

MODEL_FILE = "model.onnx"
INFO_FILE = "tlcore.json"
DATA_FILE = "model.onnx.data"
"""External tensor data, written beside ``model.onnx`` only for models over 2 GB."""

INPUT = "images"
PROBABILITIES = "probabilities"
LOGITS = "logits"
BATCH_DIM = "batch"

META_LABELS = "tlcore.labels"
META_INPUT = "tlcore.input"
META_VERSION = "tlcore.version"
META_SCHEMA = "tlcore.schema_version"

DEFAULT_OPSET = 17
PARITY_SAMPLES = 8
_PROTOBUF_LIMIT = 2**31 - 1  # one protobuf message holds at most 2 GB


@dataclass(frozen=True)
class Parity:
    """How closely onnxruntime matched the framework on real samples.

    Attributes:
        samples: how many images were compared.
        batch_sizes: the batch sizes both sides ran at (1 and ``samples``).
        max_abs_diff: the largest absolute difference of any class probability.
        worst_sample: the index of the sample where it occurred.
        top1_agreement: share of (sample, batch size) pairs with the same top-1 class.
        tolerance: the largest difference allowed.
    """

    samples: int
    batch_sizes: tuple[int, ...]
    max_abs_diff: float
    worst_sample: int
    top1_agreement: float
    tolerance: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, as written into ``tlcore.json``."""
        return {**asdict(self), "batch_sizes": list(self.batch_sizes)}


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
    preprocessing: Preprocessing,
    *,
    opset: int = DEFAULT_OPSET,
    tolerance: float = 1e-4,
) -> OnnxExport:
    """Export ``model`` through its backend's ``tl_export`` and write a verified ``model.onnx``.

    Args:
        backend: the backend that owns ``model``.
        model: the backend's trained model (uint8 NHWC images in, logits out).
        folder: where ``model.onnx`` is written (the run folder).
        samples: real uint8 NHWC images at the model's input size, for tracing and parity.
        labels: the class names, in logit order.
        preprocessing: the model's input spec, written into the metadata.
        opset: the ONNX opset asked of the backend's ``tl_export``.
        tolerance: the largest probability difference the parity check accepts.

    Returns:
        The written file, its sha256, its opset and the parity figures.

    Raises:
        TlcoreError: no plugin exports ONNX for ``backend``, the graph is not what the bundle
            needs, the checker rejects it, or the parity check fails.
    """
    onnx = _require_onnx()
    samples = np.ascontiguousarray(samples)
    if samples.ndim != 4 or samples.dtype != np.uint8 or not len(samples):
        raise TlcoreError(
            f"ONNX export needs real uint8 NHWC sample images, got {samples.dtype} "
            f"{samples.shape}",
            "pass a few images of the training data at the model's input size",
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    from tlcore.plugins import hook  # here: the runtime imports this module without pluggy

    with tempfile.TemporaryDirectory(prefix=".onnx-export-", dir=folder) as raw_dir:
        written = hook().tl_export(
            backend=backend,
            model=model,
            fmt="onnx",
            path=Path(raw_dir),
            example=samples,
            opset=opset,
        )
        if written is None:
            raise TlcoreError(
                f"no plugin can export format 'onnx' for backend {backend!r}",
                "set export.formats to [native], or see 'tl plugins' for what is installed",
            )
        proto = onnx.load(str(written))
    proto = finish_graph(proto, labels, preprocessing)
    target = folder / MODEL_FILE
    with atomic_path(target) as tmp:
        external = _save(proto, tmp)
        try:
            onnx.checker.check_model(str(tmp))
        except onnx.checker.ValidationError as exc:
            raise PluginError(
                f"the exported ONNX graph is invalid: {exc}", "report it to the backend plugin"
            ) from None
        from tlcore.runtime import open_session

        parity = verify_parity(open_session(tmp), backend, model, samples, tolerance)
        digest = file_sha256(tmp)
    data_digest = file_sha256(folder / DATA_FILE) if external else None
    return OnnxExport(target, digest, graph_opset(proto), parity, data_digest)


def finish_graph(
    proto: onnx.ModelProto, labels: Sequence[str], preprocessing: Preprocessing
) -> onnx.ModelProto:
    """Make a raw ``uint8 NHWC → logits`` graph the bundle's graph (modified in place).

    The input becomes ``images`` and the output ``logits`` (through Identity nodes when the
    backend named them otherwise), the batch dimension of both is made dynamic, a Softmax adds
    the ``probabilities`` output (listed first), and the metadata gets the labels, the input
    spec and the versions.

    Raises:
        PluginError: the graph has not one image input and one output, the input is not
            uint8 NHWC at the spec's size, or the logits do not have one entry per label.
    """
    from onnx import TensorProto, helper

    graph = proto.graph
    initializers = {tensor.name for tensor in graph.initializer}
    inputs = [value for value in graph.input if value.name not in initializers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise PluginError(
            f"the backend's ONNX graph has {len(inputs)} inputs and {len(graph.output)} "
            "outputs; the bundle needs one image input and one logits output",
            "report it to the backend plugin",
        )
    image, logits = inputs[0], graph.output[0]
    height, width = preprocessing.size
    _check_value(image, TensorProto.UINT8, (None, height, width, 3), "input", "uint8 NHWC")
    _check_value(logits, None, (None, len(labels)), "output", f"(batch, {len(labels)}) logits")
    if image.name != INPUT:
        graph.node.insert(0, helper.make_node("Identity", [INPUT], [image.name]))
        image.name = INPUT
    if logits.name != LOGITS:
        graph.node.append(helper.make_node("Identity", [logits.name], [LOGITS]))
        logits.name = LOGITS
    for value in (image, logits):
        value.type.tensor_type.shape.dim[0].dim_param = BATCH_DIM
    graph.node.append(
        helper.make_node("Softmax", [LOGITS], [PROBABILITIES], axis=1, name="tlcore_softmax")
    )
    probabilities = helper.make_tensor_value_info(
        PROBABILITIES, logits.type.tensor_type.elem_type, [BATCH_DIM, len(labels)]
    )
    graph.output.insert(0, probabilities)
    meta = {prop.key: prop.value for prop in proto.metadata_props}
    meta.update(metadata(labels, preprocessing))
    helper.set_model_props(proto, meta)
    return proto


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


def metadata(labels: Sequence[str], preprocessing: Preprocessing) -> dict[str, str]:
    """The metadata every bundle's ``model.onnx`` carries, as ONNX string properties."""
    return {
        META_LABELS: json.dumps(list(labels)),
        META_INPUT: json.dumps(preprocessing.to_dict()),
        META_VERSION: __version__,
        META_SCHEMA: str(SCHEMA_VERSION),
    }


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


def verify_parity(
    session: onnxruntime.InferenceSession,
    backend: str,
    model: Any,
    samples: np.ndarray,
    tolerance: float,
) -> Parity:
    """Compare onnxruntime with the framework on ``samples``, at batch 1 and all at once.

    Both sides run every sample alone and then all samples as one batch; probabilities are
    compared (the framework's logits through a float64 softmax).

    Raises:
        TlcoreError: onnxruntime fails on a batch, a probability differs by more than
            ``tolerance``, or a top-1 class differs (beyond a tie within ``tolerance``); names
            the worst sample and the difference.
    """
    batch_sizes = (1, len(samples)) if len(samples) > 1 else (1,)
    worst, worst_sample, worst_batch = -1.0, 0, 1
    agree: list[np.ndarray] = []
    for size in batch_sizes:
        ours = np.concatenate(
            [_run_onnx(session, samples[i : i + size]) for i in range(0, len(samples), size)]
        )
        theirs = np.concatenate(
            [
                softmax(_run_framework(backend, model, samples[i : i + size]))
                for i in range(0, len(samples), size)
            ]
        )
        diff = np.abs(ours.astype(np.float64) - theirs).max(axis=1)
        if diff.max() > worst:
            worst, worst_sample, worst_batch = float(diff.max()), int(diff.argmax()), size
        picked = ours.argmax(axis=1)
        same = picked == theirs.argmax(axis=1)
        # Near-equal top classes (an untrained head) may swap by rounding: only a swap the
        # framework itself sees beyond the tolerance is a different answer.
        tied = theirs.max(axis=1) - theirs[np.arange(len(picked)), picked] <= tolerance
        if not (same | tied).all():
            bad = int(np.flatnonzero(~(same | tied))[0])
            raise TlcoreError(
                f"ONNX export does not match the {backend} model: sample {bad} (batch of "
                f"{size}) gets class {int(ours[bad].argmax())} from onnxruntime but "
                f"{int(theirs[bad].argmax())} from {backend} (probability difference "
                f"{diff[bad]:.3g})",
                "the exporter changed the model's arithmetic; report it to the backend plugin",
            )
        agree.append(same)
    if worst > tolerance:
        raise TlcoreError(
            f"ONNX export does not match the {backend} model: sample {worst_sample} (batch of "
            f"{worst_batch}) differs by {worst:.3g} in probability, over the tolerance "
            f"{tolerance:g}",
            "if that is numerical noise, raise export.tolerance; otherwise report it to the "
            "backend plugin",
        )
    return Parity(
        samples=len(samples),
        batch_sizes=batch_sizes,
        max_abs_diff=worst,
        worst_sample=worst_sample,
        top1_agreement=float(np.concatenate(agree).mean()),
        tolerance=float(tolerance),
    )


def _run_onnx(session: onnxruntime.InferenceSession, images: np.ndarray) -> np.ndarray:
    try:
        return session.run([PROBABILITIES], {INPUT: images})[0]
    except Exception as exc:  # onnxruntime raises its own types; all mean "the graph fails"
        raise TlcoreError(
            f"onnxruntime cannot run the exported graph on a batch of {len(images)}: {exc}",
            "the backend exported a graph that does not take any batch size; "
            "report it to the backend plugin",
        ) from None


def _run_framework(backend: str, model: Any, images: np.ndarray) -> np.ndarray:
    from tlcore.plugins import hook

    labels = np.zeros(len(images), dtype=np.int64)
    logits = hook().tl_eval_step(backend=backend, model=model, batch=Batch(images, labels))
    if logits is None:
        raise PluginError(
            f"no plugin answered tl_eval_step for backend {backend!r}",
            "the backend plugin is incomplete; see 'tl plugins'",
        )
    return np.asarray(logits)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def parity_indices(count: int, limit: int = PARITY_SAMPLES) -> np.ndarray:
    """Up to ``limit`` indices spread evenly over ``count`` samples (classes are contiguous in
    a dataset, so the first few would all be one class)."""
    return np.unique(np.linspace(0, count - 1, num=min(count, limit)).round().astype(np.int64))


def file_sha256(path: str | Path) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _require_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise TlcoreError(
            "onnx is not installed; it is needed to write the ONNX bundle",
            "pip install 'tlcore[onnx]', or set export.formats to [native]",
        ) from None
    return onnx
