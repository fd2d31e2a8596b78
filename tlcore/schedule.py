"""Learning-rate schedules, computed by the core and handed to each train step, and the
per-weight multipliers of layer-wise (discriminative) learning rates."""

from __future__ import annotations

import math
from collections.abc import Sequence

from tlcore.freezing import block_of
from tlcore.recipe import StageSpec
from tlcore.recipe.choices import builtin, implementation
from tlcore.recipe.spec import AUTO_LR

__all__ = ["AUTO_LR", "describe_lr", "first_cycle", "layer_multipliers", "learning_rate",
           "stage_epochs"]


def learning_rate(stage: StageSpec, step: int, total_steps: int) -> float:
    """The learning rate of ``step`` (from 0) in a stage of ``total_steps`` steps.

    - ``constant``: ``stage.lr`` (after the optional linear warm-up).
    - ``cosine``: linear warm-up over ``stage.warmup`` of the steps, then cosine decay to 0.
    - ``onecycle``: as PyTorch's ``OneCycleLR`` with cosine annealing: from ``lr / 25`` up to
      ``lr`` over ``max(warmup, 0.3)`` of the steps, then down to ``lr / 1e4``.
    - ``cosine_restarts``: SGDR, as PyTorch's ``CosineAnnealingWarmRestarts`` (``eta_min``
      0) after the linear warm-up: ``stage.cycles`` cosine cycles, each ``stage.cycle_mult``
      times as long as the one before (``T_mult``), the first ``T_0`` steps long, the
      smallest whole number of steps for which the cycles cover the stage.
    - a schedule a plugin registered: its function, ``value(stage, step, total_steps)``.

    Example:
        >>> learning_rate(StageSpec(lr=0.1, schedule="cosine"), 0, 10)
        0.1
    """
    if not isinstance(stage.lr, int | float):
        raise ValueError(f"lr {stage.lr!r} must be resolved to a number before training")
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
    if stage.schedule == "cosine_restarts":
        return stage.lr * _restarts(step - warm, total - warm, stage.cycles, stage.cycle_mult)
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


def first_cycle(steps: int, cycles: int, mult: int) -> int:
    """``T_0`` of ``cosine_restarts``: the fewest steps for which ``cycles`` cycles, each
    ``mult`` times the one before, cover ``steps``.

    Example:
        >>> first_cycle(70, cycles=3, mult=2)  # 10 + 20 + 40
        10
    """
    return max(1, math.ceil(steps / sum(mult**i for i in range(max(cycles, 1)))))


def _restarts(step: int, steps: int, cycles: int, mult: int) -> float:
    """The factor of ``lr`` at ``step`` (from 0) of ``steps``: ``CosineAnnealingWarmRestarts``'
    own arithmetic (its closed form for an integer step)."""
    t0 = first_cycle(steps, cycles, mult)
    if mult == 1:
        t_cur, t_i = step % t0, t0
    else:
        n = int(math.log(step / t0 * (mult - 1) + 1, mult))
        t_cur, t_i = step - t0 * (mult**n - 1) // (mult - 1), t0 * mult**n
        if t_cur >= t_i:  # the float logarithm fell short at an exact cycle boundary
            t_cur, t_i = t_cur - t_i, t_i * mult
    return 0.5 * (1 + math.cos(math.pi * t_cur / t_i))


def describe_lr(lr: float | str) -> str:
    """A stage's ``lr`` for a message: the number (``1e-03``-style ``:g``) or ``auto``."""
    return lr if isinstance(lr, str) else f"{lr:g}"


def layer_multipliers(names: Sequence[str], blocks: Sequence[str], decay: float) -> list[float]:
    """The learning-rate multiplier of each backbone weight under layer-wise decay (timm's
    ``layer_decay``): the head trains at 1 (it is not among ``names``), the last block at
    ``decay``, the one before at ``decay**2``, ... the first of ``n`` blocks at ``decay**n``.

    A weight outside every block takes the multiplier of the last block before it in
    definition order (a final norm layer goes with the last block, as ``last_n`` freezing
    trains it with that block); one before every block (the stem) takes ``decay**(n + 1)``.
    A backbone without blocks is one block: every weight at ``decay``.

    Args:
        names: the backbone's weight names, in definition order.
        blocks: its block names, first to last (as freezing counts them).
        decay: the decay per block, in (0, 1]; 1 gives every weight 1.

    Example:
        >>> layer_multipliers(["stem.w", "b0.w", "b1.w", "norm.w"], ["b0", "b1"], 0.5)
        [0.125, 0.25, 0.5, 0.5]
    """
    position = {block: i for i, block in enumerate(blocks)}
    count = len(blocks)
    depth = count + 1 if count else 1  # before the first block: the stem
    out = []
    for name in names:
        block = block_of(name, blocks)
        if block is not None:
            depth = count - position[block]
        out.append(float(decay**depth))
    return out


def _cosine_between(start: float, end: float, fraction: float) -> float:
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * fraction))
