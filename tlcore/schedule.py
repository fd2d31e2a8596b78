"""Learning-rate schedules, computed by the core and handed to each train step."""

from __future__ import annotations

import math

from tlcore.recipe import StageSpec
from tlcore.recipe.choices import builtin, implementation


def learning_rate(stage: StageSpec, step: int, total_steps: int) -> float:
    """The learning rate of ``step`` (from 0) in a stage of ``total_steps`` steps.

    - ``constant``: ``stage.lr`` (after the optional linear warm-up).
    - ``cosine``: linear warm-up over ``stage.warmup`` of the steps, then cosine decay to 0.
    - ``onecycle``: as PyTorch's ``OneCycleLR`` with cosine annealing: from ``lr / 25`` up to
      ``lr`` over ``max(warmup, 0.3)`` of the steps, then down to ``lr / 1e4``.
    - a schedule a plugin registered: its function, ``value(stage, step, total_steps)``.

    Example:
        >>> learning_rate(StageSpec(lr=0.1, schedule="cosine"), 0, 10)
        0.1
    """
    total = max(total_steps, 1)
    step = min(max(step, 0), total - 1)
    if stage.schedule not in builtin("schedule"):
        return float(implementation("schedule", stage.schedule)(stage, step, total))
    if stage.schedule == "onecycle":
        # OneCycleLR's own arithmetic: the peak at step ``total * pct - 1`` (a float), the
        # floor reached at the last step.
        peak, last = total * max(stage.warmup, 0.3) - 1, total - 1
        start, end = stage.lr / 25, stage.lr / 25 / 1e4
        if step <= peak:
            return _cosine_between(start, stage.lr, step / peak if peak > 0 else 1.0)
        return _cosine_between(stage.lr, end, (step - peak) / (last - peak))
    warm = int(total * stage.warmup)
    if step < warm:
        return stage.lr * (step + 1) / (warm + 1)
    if stage.schedule == "constant":
        return stage.lr
    progress = (step - warm) / max(total - warm, 1)
    return stage.lr * 0.5 * (1 + math.cos(math.pi * progress))


def stage_epochs(stage: StageSpec, examples: int, batch_size: int) -> int:
    """The epochs ``stage`` runs on ``examples`` training examples: ``stage.epochs``, or more
    when that many would give fewer than ``stage.min_steps`` optimiser steps; one for a
    ``logistic`` stage.

    Example:
        >>> stage_epochs(StageSpec(epochs=5, min_steps=300), examples=40, batch_size=32)
        150
    """
    steps_per_epoch = math.ceil(examples / max(batch_size, 1))
    if stage.epochs == 0 or steps_per_epoch == 0:
        return stage.epochs
    if stage.optimizer == "logistic":
        return 1  # one deterministic fit (tlcore.train.logistic): a second would repeat it
    return max(stage.epochs, math.ceil(stage.min_steps / steps_per_epoch))


def _cosine_between(start: float, end: float, fraction: float) -> float:
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * fraction))
