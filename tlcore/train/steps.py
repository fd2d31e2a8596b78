"""The rules of an optimiser step that both backends follow: which batches one step
accumulates, each batch's weight in it, the decay of the weights' moving average, and where
that average travels (the optimiser's state).

The core decides all of it and hands each step its part in :class:`~tlcore.interfaces.StepState`;
a backend only does the arithmetic on its own tensors:

- ``train.accumulate``: the batches of one update come one by one, each with ``share`` = its
  images (this process's) over the whole update's (every batch, every process), and
  ``apply`` true on the last. The backend adds each batch's gradient of its mean loss ×
  ``share`` to the earlier ones and updates from the sum (then clears it) only with
  ``apply``: exactly the update of one batch of all those images. It returns ``applied``.
- ``train.clip_norm``: with ``apply``, the sum (unscaled from a loss scale, before weight
  decay, summed over the processes) is multiplied by ``min(1, clip_norm / (norm + 1e-6))``,
  ``norm`` its global L2 norm, as ``torch.nn.utils.clip_grad_norm_`` does. It returns
  ``grad_norm``.
- ``train.ema``: after each update, ``average = ema * average + (1 - ema) * weights`` over
  the trained weights and the BatchNorm statistics, the average starting from the weights
  before the stage's first batch, ``ema`` warmed up by :func:`ema_decay`. It lives in the
  backend next to the weights (a numpy copy of a large backbone every step would cost more
  than the step) and crosses the boundary as optimiser-state entries ``ema.<weight name>``,
  so that checkpoints carry it and a resumed run continues it exactly.

A backend that does not return ``applied``, ``grad_norm`` or the entries is refused
(:func:`check_honoured`, :func:`averaged_weights`), never left to train something else.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from tlcore.errors import PluginError
from tlcore.stepstate import EMA_PREFIX, ema_averages

__all__ = ["EMA_PREFIX", "averaged_weights", "check_honoured", "ema_decay", "step_groups",
           "steps_per_epoch"]

WARMUP = 10
"""The decay warms up as ``min(decay, (1 + n) / (WARMUP + n))`` after ``n`` updates."""


def step_groups(batches: int, accumulate: int) -> list[range]:
    """The batches of an epoch grouped into optimiser steps: ``accumulate`` consecutive
    batches each, the last group shorter when ``batches`` is not a multiple (its update is
    applied at the epoch's end, never carried into the next epoch).

    Example:
        >>> step_groups(5, 2)
        [range(0, 2), range(2, 4), range(4, 5)]
    """
    return [range(i, min(i + accumulate, batches)) for i in range(0, batches, accumulate)]


def steps_per_epoch(examples: int, batch_size: int, accumulate: int = 1) -> int:
    """Optimiser steps in an epoch of ``examples``: ``ceil(ceil(examples / batch_size) /
    accumulate)``, which equals ``ceil(examples / (batch_size * accumulate))``, so the
    effective batch may stand for the batch wherever steps are counted.

    Example:
        >>> steps_per_epoch(100, 8, 3)
        5
    """
    return math.ceil(examples / max(batch_size * accumulate, 1))


def ema_decay(decay: float, updates: int) -> float:
    """The decay of the weights' moving average at its update after ``updates`` others in the
    stage: ``decay`` warmed up as TensorFlow's ``ExponentialMovingAverage(num_updates=...)``
    does, ``min(decay, (1 + n) / (10 + n))``; 0 when there is no average.

    Without the warm-up the average of a stage of a few dozen steps (a small data set) would
    stay at the stage's first weights, a freshly initialised head among them.

    Example:
        >>> ema_decay(0.999, 0), ema_decay(0.5, 100), ema_decay(0.0, 5)
        (0.1, 0.5, 0.0)
    """
    if decay <= 0:
        return 0.0
    return min(decay, (1 + updates) / (WARMUP + updates))


def averaged_weights(
    weights: Mapping[str, np.ndarray],
    optimizer_state: Mapping[str, np.ndarray],
    backend: str | None = None,
) -> dict[str, np.ndarray] | None:
    """The model's weights with the moving average in place of the weights it covers (those
    the optimiser's state holds as ``ema.<name>``); ``None`` when it holds no average.

    Raises:
        PluginError: ``backend`` is given (the recipe asks for an average) and the state
            holds none: the backend does not implement ``train.ema``.
    """
    average = ema_averages(optimizer_state)
    if not average and backend is not None:
        raise PluginError(
            f"backend {backend!r} does not implement train.ema: its optimiser state holds "
            f"no {EMA_PREFIX}* entries after an epoch",
            "remove train.ema from the recipe, or use a backend that implements it "
            "(torch, keras)",
        )
    if not average:
        return None
    return {name: average.get(name, value) for name, value in weights.items()}


def check_honoured(backend: str, asked: Mapping[str, Any], result: Mapping[str, Any]) -> None:
    """Refuse a train step that ignored what the recipe asks of it: a backend written before
    ``accumulate`` and ``clip_norm`` would otherwise update every batch, or never clip, and
    the run would train something else than the recipe says, silently.

    A step that honours them says so in its result: ``applied`` (whether it updated the
    weights) when steps accumulate, ``grad_norm`` (the global norm before clipping) when it
    clipped. ``asked`` maps the recipe's field to the key its result must hold.

    Raises:
        PluginError: names the field and the backend.
    """
    for name, key in asked.items():
        if key not in result:
            raise PluginError(
                f"backend {backend!r} does not implement train.{name}: its tl_train_step "
                f"returned no {key!r}",
                f"remove train.{name} from the recipe, or use a backend that implements it "
                "(torch, keras)",
            )
