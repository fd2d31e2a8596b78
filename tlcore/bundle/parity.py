"""The parity check of an export: onnxruntime against the framework on real samples.

At batch 1 and at batch ``len(samples)``; a difference above the tolerance, or a different
answer (top-1 class, labels over their thresholds) that is not a tie within it, is an error,
never a warning; so is a non-finite output (NaN or inf) on either side.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tlcore.errors import TlcoreError
from tlcore.interfaces import Batch
from tlcore.tasks import DEFAULT_TASK, Task, get_task

if TYPE_CHECKING:
    import onnxruntime
from tlcore.bundle.layout import EMBEDDINGS, INPUT, PROBABILITIES

PARITY_SAMPLES = 8

EMBEDDING_TOLERANCE = 1e-3
"""The largest difference allowed between the ONNX model's ``embeddings`` and the backend's
pooled features, relative to ``1 + |feature|``: features are unbounded (a probability's
``export.tolerance`` does not fit them), and float32 backbones agree to about 1e-6 of that."""

REDUCED_EMBEDDING_TOLERANCE = 0.05
"""The same for a model trained in bf16 or 16-mixed, whose ``tl_extract_features`` computes in
that precision (8 bits of mantissa in bfloat16) while the export is float32: measured 0.018."""


@dataclass(frozen=True)
class Parity:
    """How closely onnxruntime matched the framework on real samples.

    Attributes:
        samples: how many images were compared.
        batch_sizes: the batch sizes both sides ran at (1 and ``samples``).
        max_abs_diff: the largest absolute difference of any output (a class probability;
            a regression's value in standard deviations of its training targets).
        worst_sample: the index of the sample where it occurred.
        top1_agreement: share of (sample, batch size) pairs with the same top-1 class
            (classification; ``None`` for other tasks).
        tolerance: the largest difference allowed.
        output: the graph output compared (``probabilities``, ``values``).
        agreement: share of (sample, batch size) pairs with the same answer; ``None`` when
            the task's answer is its output (regression).
        agreement_on: what ``agreement`` compares: ``top-1`` (classification),
            ``labels over threshold`` (multi-label), or ``None``.
        embeddings_max_diff: for a model with an ``embeddings`` output, the largest
            difference from the backend's pooled features, relative to ``1 + |feature|``
            (at most :data:`EMBEDDING_TOLERANCE`); ``None`` without that output.
    """

    samples: int
    batch_sizes: tuple[int, ...]
    max_abs_diff: float
    worst_sample: int
    top1_agreement: float | None
    tolerance: float
    output: str = PROBABILITIES
    agreement: float | None = None
    agreement_on: str | None = "top-1"
    embeddings_max_diff: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, as written into ``tlcore.json``."""
        return {**asdict(self), "batch_sizes": list(self.batch_sizes)}


def verify_parity(
    session: onnxruntime.InferenceSession,
    backend: str,
    model: Any,
    samples: np.ndarray,
    tolerance: float,
    task: Task | None = None,
    task_info: dict[str, Any] | None = None,
    input_name: str = INPUT,
    embeddings_tolerance: float = EMBEDDING_TOLERANCE, tta: str = "none",
) -> Parity:
    """Compare onnxruntime with the framework on ``samples``, at batch 1 and all at once.

    Both sides run every sample alone and then all samples as one batch; the task's output
    is compared (:attr:`~tlcore.tasks.Task.output`: probabilities, values), the framework's
    logits going through the task's final node in float64 (:meth:`~tlcore.tasks.Task.activate`,
    a softmax for classification), differences measured as the task measures them
    (:meth:`~tlcore.tasks.Task.difference`). The answers must agree too
    (:meth:`~tlcore.tasks.Task.agreement`): the top-1 class, the labels over their
    thresholds; a regression's answer is its value. A graph with an ``embeddings`` output is
    compared with the backend's pooled features (``tl_extract_features``) too, all samples as
    one batch. With a ``tta`` other than ``none`` the graph averages its output over views of
    each image (:mod:`tlcore.bundle.tta`): the framework's side is then the mean of its
    outputs on the same views, one forward each.

    Raises:
        TlcoreError: either side gives a non-finite output (NaN or inf); the tolerance is
            not a finite number >= 0; onnxruntime fails on a batch, an output differs by
            more than ``tolerance``, or an answer differs (beyond a tie within
            ``tolerance``); names the worst sample and the difference.
    """
    task = task or get_task(DEFAULT_TASK)
    info = task_info or {}
    _check_tolerance(tolerance)
    batch_sizes = (1, len(samples)) if len(samples) > 1 else (1,)
    worst, worst_sample, worst_batch = -1.0, 0, 1
    agree: list[np.ndarray] = []
    for size in batch_sizes:
        ours, theirs = _both_sides(session, backend, model, samples, size, task, info,
                                   input_name, tta)
        diff = task.difference(ours, theirs, info)
        if diff.max() > worst:
            worst, worst_sample, worst_batch = float(diff.max()), int(diff.argmax()), size
        answers = task.agreement(ours, theirs, info, tolerance)
        if answers is None:
            continue
        same, tied = answers
        if not (same | tied).all():
            bad = int(np.flatnonzero(~(same | tied))[0])
            raise TlcoreError(
                f"ONNX export does not match the {backend} model: sample {bad} (batch of "
                f"{size}) gets another answer ({task.name}) from onnxruntime than from "
                f"{backend} (output difference {diff[bad]:.3g})",
                "the exporter changed the model's arithmetic; report it to the backend plugin",
            )
        agree.append(same)
    if worst > tolerance:
        raise TlcoreError(
            f"ONNX export does not match the {backend} model: sample {worst_sample} (batch of "
            f"{worst_batch}) differs by {worst:.3g} in its {task.output}, over the tolerance "
            f"{tolerance:g}",
            "if that is numerical noise, raise export.tolerance; otherwise report it to the "
            "backend plugin",
        )
    agreement = float(np.concatenate(agree).mean()) if agree else None
    # At the full batch only: the logits ran every sample alone (a text encoder's costliest).
    embedded = _embeddings_diff(session, backend, model, samples, batch_sizes[-1:], input_name,
                                embeddings_tolerance)
    return Parity(
        samples=len(samples),
        batch_sizes=batch_sizes,
        max_abs_diff=worst,
        worst_sample=worst_sample,
        top1_agreement=agreement if task.agreement_on == "top-1" else None,
        tolerance=float(tolerance),
        output=task.output,
        agreement=agreement,
        agreement_on=task.agreement_on,
        embeddings_max_diff=embedded,
    )


def _check_tolerance(tolerance: float) -> None:
    """NaN would switch the check off (every comparison with it is false): refused."""
    if not math.isfinite(tolerance) or tolerance < 0:
        raise TlcoreError(
            f"the parity tolerance must be a finite number >= 0, not {tolerance}",
            "set export.tolerance to a small number such as 1e-4",
        )


def _embeddings_diff(
    session: onnxruntime.InferenceSession,
    backend: str,
    model: Any,
    samples: np.ndarray,
    batch_sizes: tuple[int, ...],
    input_name: str,
    limit: float = EMBEDDING_TOLERANCE,
) -> float | None:
    """The largest relative difference of the graph's ``embeddings`` from the backend's
    features, at each batch size; ``None`` when the graph has no such output.

    Raises:
        TlcoreError: non-finite embeddings, or a difference over :data:`EMBEDDING_TOLERANCE`.
    """
    if EMBEDDINGS not in {output.name for output in session.get_outputs()}:
        return None
    from tlcore.plugins.calls import BackendCalls

    worst = 0.0
    for size in batch_sizes:
        chunks = [samples[i : i + size] for i in range(0, len(samples), size)]
        ours = np.concatenate(
            [_run_onnx(session, chunk, EMBEDDINGS, input_name) for chunk in chunks]
        ).astype(np.float64)
        theirs = np.concatenate(
            [BackendCalls(backend).extract_features(model, chunk) for chunk in chunks]
        ).astype(np.float64)
        _require_finite(theirs, f"the {backend} model", size, EMBEDDINGS)
        _require_finite(ours, "onnxruntime", size, EMBEDDINGS)
        if ours.shape != theirs.shape:
            raise TlcoreError(
                f"ONNX export's embeddings have shape {ours.shape[1:]}, the {backend} "
                f"model's features {theirs.shape[1:]}",
                "report it to the backend plugin",
            )
        worst = max(worst, float((np.abs(ours - theirs) / (1 + np.abs(theirs))).max()))
    if worst > limit:
        raise TlcoreError(
            f"ONNX export does not match the {backend} model: its embeddings differ by "
            f"{worst:.3g} (relative), over {limit:g}",
            "report it to the backend plugin",
        )
    return worst


def _both_sides(
    session: onnxruntime.InferenceSession,
    backend: str,
    model: Any,
    samples: np.ndarray,
    size: int,
    task: Task,
    info: dict[str, Any],
    input_name: str = INPUT,
    tta: str = "none",
) -> tuple[np.ndarray, np.ndarray]:
    """The task's output of onnxruntime and of the framework on ``samples``, in batches of
    ``size``; both finite. With a ``tta`` the framework's is the mean of its outputs on the
    views of the images that ``tta`` averages over."""
    chunks = [samples[i : i + size] for i in range(0, len(samples), size)]
    ours = np.concatenate(
        [_run_onnx(session, chunk, task.output, input_name) for chunk in chunks]
    )
    with np.errstate(invalid="ignore", over="ignore"):  # NaN is refused just below
        theirs = np.concatenate([
            _framework_output(backend, model, chunk, task, info, tta) for chunk in chunks
        ])
    # Before any difference is taken: a NaN difference is never "over the tolerance".
    _require_finite(theirs, f"the {backend} model", size, task.output)
    _require_finite(ours, "onnxruntime", size, task.output)
    return ours, theirs


def _require_finite(outputs: np.ndarray, side: str, size: int, output: str) -> None:
    """Refuse NaN or infinity in one side's ``outputs``: no bundle holds such a model."""
    finite = np.isfinite(np.asarray(outputs, dtype=np.float64))
    bad = np.flatnonzero(~finite.all(axis=tuple(range(1, finite.ndim))))
    if not len(bad):
        return
    if side == "onnxruntime":
        hint = (
            "the framework's outputs are finite, so the exported graph computes something "
            "else; report it to the backend plugin"
        )
    else:
        hint = (
            "the model's weights hold NaN or inf, or its arithmetic overflows: training "
            "diverged (too high a learning rate?); train again at a lower learning rate"
        )
    raise TlcoreError(
        f"ONNX export refused: {side} gives non-finite {output} (NaN or inf) for "
        f"{len(bad)} of {len(outputs)} samples (first: sample {int(bad[0])}, batch of {size})",
        hint,
    )


def _run_onnx(
    session: onnxruntime.InferenceSession,
    images: np.ndarray,
    output: str = PROBABILITIES,
    input_name: str = INPUT,
) -> np.ndarray:
    try:
        return session.run([output], {input_name: images})[0]
    except Exception as exc:  # onnxruntime raises its own types; all mean "the graph fails"
        raise TlcoreError(
            f"onnxruntime cannot run the exported graph on a batch of {len(images)}: {exc}",
            "the backend exported a graph that does not take any batch size; "
            "report it to the backend plugin",
        ) from None


def _framework_output(
    backend: str, model: Any, images: np.ndarray, task: Task, info: dict[str, Any], tta: str
) -> np.ndarray:
    """The task's output of the framework on ``images``; with a ``tta`` other than ``none``
    the mean of its outputs over the views of the images the TTA graph averages
    (:func:`tlcore.bundle.tta.view_average`)."""
    def output(batch: np.ndarray) -> np.ndarray:
        return task.activate(_run_framework(backend, model, batch), info)

    if tta == "none":
        return output(images)
    from tlcore.bundle.tta import view_average

    return view_average(output, images, tta).astype(np.float64)


def _run_framework(backend: str, model: Any, images: np.ndarray) -> np.ndarray:
    from tlcore.plugins.calls import BackendCalls

    labels = np.zeros(len(images), dtype=np.int64)
    return BackendCalls(backend).eval_step(model, Batch(images, labels))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def parity_indices(count: int, limit: int = PARITY_SAMPLES) -> np.ndarray:
    """Up to ``limit`` indices spread evenly over ``count`` samples (classes are contiguous in
    a dataset, so the first few would all be one class)."""
    return np.unique(np.linspace(0, count - 1, num=min(count, limit)).round().astype(np.int64))
