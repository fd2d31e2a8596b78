"""The parity check of an export: onnxruntime against the framework on real samples.

At batch 1 and at batch ``len(samples)``; a difference above the tolerance, or a top-1
disagreement that is not a tie within it, is an error, never a warning.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tlcore.errors import TlcoreError
from tlcore.interfaces import Batch

if TYPE_CHECKING:
    import onnxruntime
from tlcore.bundle.layout import INPUT, PROBABILITIES

PARITY_SAMPLES = 8


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
