"""Numerical guards: a run whose numbers stop being finite ends with what, where and why.

A NaN or infinite training loss (checked at every step), validation output or metric, weight
or optimiser value (checked at the end of every epoch, before its checkpoint is written) stops
the run with a :class:`~tlcore.errors.TlcoreError` that names the stage, the epoch (and the
step) and the likely cause. Nothing non-finite is ever checkpointed or restored as the best
epoch, so the last checkpoint is the last good one, and the hint gives the command that
resumes from it at a lower learning rate (``tl train --resume`` accepts learning-rate
overrides for exactly this).
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from tlcore.errors import TlcoreError

if TYPE_CHECKING:
    from tlcore.train.trainer import Trainer, _StageRun


def check_step(
    t: Trainer, run: _StageRun, epoch: int, step: int, steps: int, result: Mapping[str, Any]
) -> None:
    """Stop the run when a training step's loss is not finite.

    Args:
        t: the trainer.
        run: the stage in flight.
        epoch: the epoch, from 0.
        step: the step within the epoch, from 0.
        steps: the epoch's steps.
        result: what ``tl_train_step`` returned (its ``loss``).

    Raises:
        TlcoreError: the loss is NaN or infinite (see :func:`diverged`).
    """
    loss = float(result["loss"])
    if not math.isfinite(loss):
        where = f"step {step + 1}/{steps} of epoch {epoch + 1}"
        raise diverged(t, run, where, f"the training loss is {loss}")


def check_epoch(
    t: Trainer,
    run: _StageRun,
    epoch: int,
    metrics: Mapping[str, float],
    arrays: Mapping[str, Mapping[str, np.ndarray]],
) -> dict[str, float]:
    """Stop the run when anything an epoch ends with is not finite, before it is saved;
    else its validation metrics.

    The model's outputs on the validation images are checked before the validation metrics
    are computed from them, so that NaN stops the run here with its cause instead of passing
    through the metrics' arithmetic.

    Args:
        t: the trainer.
        run: the stage in flight (its ``val_feed`` gives the outputs and their metrics).
        epoch: the epoch, from 0.
        metrics: the epoch's training metrics.
        arrays: what the checkpoint would hold, by what it is (``weight``, ``optimiser
            state``): each a ``{name: array}``.

    Returns:
        The validation metrics (``val_loss``, ...; empty without a validation set).

    Raises:
        TlcoreError: a metric, a validation output, a weight or an optimiser value is NaN or
            infinite (see :func:`diverged`).
    """
    where = f"the end of epoch {epoch + 1}"
    outputs = run.val_feed.logits()
    finite = np.isfinite(np.asarray(outputs, np.float64))
    rows = ~finite.all(axis=tuple(range(1, finite.ndim)))
    if rows.any():
        what = f"the model's outputs are NaN or inf for {int(rows.sum())} validation images"
        raise diverged(t, run, where, what)
    for kind, named in arrays.items():
        name = first_non_finite(named)
        if name is not None:
            raise diverged(t, run, where, f"the {kind} {name!r} holds NaN or inf")
    validation = run.val_feed.evaluate(outputs)
    for key, value in {**metrics, **validation}.items():
        if not math.isfinite(value):
            raise diverged(t, run, where, f"{key} is {value}")
    return validation


def first_non_finite(arrays: Mapping[str, np.ndarray]) -> str | None:
    """The name of the first floating-point array holding a NaN or an infinity, or ``None``.

    Example:
        >>> first_non_finite({"a": np.ones(2), "b": np.array([1.0, np.nan])})
        'b'
    """
    for name, value in arrays.items():
        array = np.asarray(value)
        if array.dtype.kind in "fc" and not np.isfinite(array).all():
            return name
    return None


def diverged(t: Trainer, run: _StageRun, where: str, what: str) -> TlcoreError:
    """The error of a run that diverged: the stage, ``where`` in it, ``what`` is not finite,
    the likely cause, and how to go on: resume the last checkpoint at a tenth of the rate
    (with none written yet, the same command starts the run again)."""
    stage, index = run.stage, run.index
    count = len(t.recipe.train.stages)
    lower = f"{stage.lr / 10:g}"
    field = f"train.stages.{index}.lr"
    message = (
        f"training diverged in stage {stage.name!r} ({index + 1} of {count}) at {where}: "
        f"{what}. Likely cause: the learning rate ({stage.lr:g}) is too high for this model "
        "and data; or the inputs or targets hold NaN or inf"
    )
    # The same command either way: a resume of a run without a checkpoint starts it again.
    command = (
        f"tl train --resume {shlex.quote(str(t.folder.path))} --set {field}={lower} "
        f"(Python: tlcore.fit(..., "
        f"resume=True, overrides={{{field!r}: {lower}}}))"
    )
    if t.folder.latest_checkpoint() is not None and t.history:
        last = t.history[-1]
        hint = (
            f"the last good checkpoint (stage {last['stage']!r}, epoch {last['epoch']}) is "
            f"kept; resume it at a lower rate: {command}"
        )
    else:
        hint = f"nothing was saved before it; start it again at a lower rate: {command}"
    return TlcoreError(message, hint)
