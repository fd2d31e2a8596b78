"""The moving average of a model's weights (``train.ema``), kept in TensorFlow variables
beside the optimiser it belongs to, as the torch backend keeps it (:mod:`tlcore_torch.ema`).

It covers what the optimiser trains and the BatchNorm moving statistics, by their stable
names (``tl_get_weights``); it starts from the weights before the stage's first update and
crosses the plugin boundary as optimiser-state entries ``ema.<name>``. An average restored
into a new optimiser (a resumed run) is bound to the model's variables at its next update.
One compiled function updates it after each update, in the strategy's cross-replica context
(every replica holds the same weights then).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from tlcore.stepstate import ema_entries
from tlcore_keras.freezing import is_batchnorm
from tlcore_keras.model import TransferModel
from tlcore_keras.names import walk_layers

if TYPE_CHECKING:
    from tlcore_keras.training import StageOptimizer


class _Average:
    """An optimiser's average: its ``names``, and once bound to a model the average
    variables, the live variables they follow and the compiled update; ``pending`` holds
    restored arrays until then."""

    def __init__(self, pending: dict[str, np.ndarray] | None = None) -> None:
        self.names: list[str] = []
        self.averages: list[Any] = []
        self.update: Any = None
        self.pending = pending


_AVERAGES: weakref.WeakKeyDictionary[StageOptimizer, _Average] = weakref.WeakKeyDictionary()


def _covered(model: TransferModel, opt: StageOptimizer) -> list[tuple[str, Any]]:
    """The weights the average follows, by stable name: the trained ones and the moving
    statistics of every BatchNorm layer."""
    ids = {id(v) for v in opt.variables}
    for layer, _ in walk_layers(model.backbone):
        if is_batchnorm(layer):
            ids.update((id(layer.moving_mean), id(layer.moving_variance)))
    return [(name, v) for name, v in model.entries() if id(v) in ids]


def _bound(model: TransferModel, opt: StageOptimizer) -> _Average:
    """The optimiser's average, bound to ``model``'s variables (started from their values,
    or from the restored arrays)."""
    average = _AVERAGES.get(opt)
    if average is not None and average.update is not None:
        return average
    pending = (average.pending if average is not None else None) or {}
    average = _Average()
    covered = _covered(model, opt)
    scope = opt.strategy.scope() if opt.strategy is not None else contextlib.nullcontext()
    with scope:
        for name, variable in covered:
            start = np.asarray(pending[name]) if name in pending else variable.numpy()
            average.names.append(name)
            average.averages.append(
                tf.Variable(np.asarray(start, dtype=variable.dtype), trainable=False)
            )
    sources = [variable for _, variable in covered]
    averages = average.averages

    @tf.function(input_signature=[tf.TensorSpec((), tf.float32)], autograph=False)
    def update(decay: Any) -> None:
        for mean, source in zip(averages, sources, strict=True):
            value = tf.cast(tf.convert_to_tensor(source), mean.dtype)
            # As torch's lerp: a weight that does not move keeps its average exactly.
            mean.assign_add((1.0 - decay) * (value - mean))

    average.update = update
    _AVERAGES[opt] = average
    return average


def begin(model: TransferModel, opt: StageOptimizer) -> None:
    """Make sure the optimiser has its average before its update (the first one starts it
    from the weights before that update)."""
    _bound(model, opt)


def update(model: TransferModel, opt: StageOptimizer, decay: float) -> None:
    """``average += (1 - decay) * (weights - average)`` (``decay * average + (1 - decay) *
    weights``) after an update."""
    with model.scope():
        _bound(model, opt).update(np.float32(decay))


def state(opt: StageOptimizer) -> dict[str, np.ndarray]:
    """The average as optimiser-state entries ``ema.<name>``; empty without one."""
    average = _AVERAGES.get(opt)
    if average is None:
        return {}
    if average.update is None:
        return ema_entries(average.pending or {})
    return ema_entries({
        name: np.array(mean.numpy(), copy=True)
        for name, mean in zip(average.names, average.averages, strict=True)
    })


def restore(opt: StageOptimizer, averages: Mapping[str, np.ndarray]) -> None:
    """Take back the average :func:`state` returned, by weight name
    (:func:`tlcore.stepstate.ema_averages`); it is bound to the model at the next update."""
    if averages:
        _AVERAGES[opt] = _Average(dict(averages))
