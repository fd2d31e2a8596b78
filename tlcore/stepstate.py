"""What a backend's train step receives besides the model: the batch and the step's state.

Framework-free, as everything that crosses the plugin boundary (:mod:`tlcore.interfaces`
re-exports both).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class Batch:
    """One batch. ``x`` is uint8 NHWC images, or pooled features when ``features`` is True.

    ``y`` holds the targets as the step's loss takes them (:attr:`StepState.loss`): int64
    class indices ``(n,)`` or float32 class probabilities ``(n, outputs)`` (rows summing to
    1, from mixup or cutmix) for ``cross_entropy``, float32 multi-hot ``(n, outputs)`` for
    ``binary_cross_entropy``, float32 values ``(n, outputs)`` for ``mse``.
    """

    x: np.ndarray
    y: np.ndarray
    features: bool = False


EMA_PREFIX = "ema."
"""Starts the optimiser-state entries of the weights' moving average (``ema.<weight name>``)."""


def ema_entries(averages: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The optimiser-state entries of a moving average kept by weight name."""
    return {EMA_PREFIX + name: value for name, value in averages.items()}


def ema_averages(state: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The moving average by weight name, from an optimiser state's ``ema.*`` entries (the
    inverse of :func:`ema_entries`; other entries are left out); empty without one."""
    import numpy as np

    return {name.removeprefix(EMA_PREFIX): np.asarray(value)
            for name, value in state.items() if name.startswith(EMA_PREFIX)}


@dataclass
class StepState:
    """What a train step needs besides the model and the batch.

    Attributes:
        optimizer: the object the backend's ``tl_make_optimizer`` returned.
        lr: the learning rate for this step, from the core's schedule.
        label_smoothing: passed to the cross-entropy loss (other losses ignore it).
        step: the step number within the stage, from 0.
        loss: the loss to compute, by name (the task's, :attr:`tlcore.tasks.Task.loss`):
            ``cross_entropy`` (softmax cross-entropy of class indices, with label
            smoothing), ``binary_cross_entropy`` (sigmoid cross-entropy on the logits of
            multi-hot targets, mean over images and outputs) or ``mse`` (mean squared error
            of the outputs against float targets, mean over images and outputs).
        share: this process's batch as a share of the global batch (its images over the
            global batch's; 1 in one process). In a distributed run the loss whose gradients
            the backend exchanges is the batch's mean loss × ``share``, so that their sum over
            the ranks is the gradient of the global batch's mean loss, as in one process
            (``tf.distribute`` sums; ``DistributedDataParallel`` averages, so it takes
            ``share × world_size``). The returned ``loss`` stays the batch's own mean.
        class_weights: one weight per class for ``cross_entropy`` (``train.class_weights``),
            or ``None`` (all 1). The loss is then exactly torch's
            ``F.cross_entropy(weight=..., label_smoothing=...)``: for class indices the
            weighted mean ``sum_i w[y_i] l_i / sum_i w[y_i]`` (the smoothing term weighted by
            ``w`` per class and divided by the same sum); for class probabilities
            ``sum_i sum_c w[c] q_ic (-log p_ic) / n``, the smoothed targets ``q``. Other
            losses ignore it (the core refuses class weights for their tasks).
        apply: whether the optimiser updates after this batch (``train.accumulate``: until
            then each batch's gradient of its loss × ``share``, ``share`` being its images
            over the whole update's, is added to the previous ones); the result says
            ``applied``.
        clip_norm: > 0: the update's gradient, unscaled and before weight decay, is scaled
            to at most this global L2 norm (``torch.nn.utils.clip_grad_norm_``); the result
            gives the norm before clipping as ``grad_norm``.
        ema: > 0: after the update, ``average = ema * average + (1 - ema) * weights`` over
            the trained weights and BatchNorm statistics, kept as optimiser-state entries
            ``ema.<weight name>`` (:mod:`tlcore.train.steps` has the rules; the core refuses
            a backend that leaves out ``applied``, ``grad_norm`` or the entries).
    """

    optimizer: Any
    lr: float
    label_smoothing: float = 0.0
    step: int = 0
    loss: str = "cross_entropy"
    share: float = 1.0
    class_weights: tuple[float, ...] | None = None
    apply: bool = True
    clip_norm: float = 0.0
    ema: float = 0.0
