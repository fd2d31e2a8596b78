"""The Keras backend's train step under a ``tf.distribute`` strategy (one process's replicas
among all the run's).

``compute(x, y, smoothing, share)`` (:mod:`tlcore_keras.training`) is one replica's update: the
gradient of its mean loss × ``share``, which Keras' TensorFlow optimiser sums over the
replicas. What the replicas must agree on beyond the gradients is here: their parts of the
batch, BatchNorm's moving statistics, and loss scaling's decision to skip a step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import tensorflow as tf

from tlcore_keras.freezing import is_batchnorm
from tlcore_keras.model import TransferModel
from tlcore_keras.names import walk_layers

if TYPE_CHECKING:
    from tlcore_keras.training import StageOptimizer


def replicated_step(
    model: TransferModel, opt: StageOptimizer, compute: Callable[..., Any], signature: list
) -> Any:
    """The step under ``opt.strategy``: each of this process's replicas takes its
    ``np.array_split`` part of the batch, with its share of the global batch; the loss is the
    process's batch mean, the logits its rows in order, the gradient norm the first
    replica's (a clipping step computes it from the gradient summed over the replicas, the
    same on every one)."""
    strategy = opt.strategy
    local = len(strategy.extended.worker_devices)
    statistics = _moving_statistics(model) if opt.backbone_training else []

    @tf.function(input_signature=signature, autograph=False)
    def step(x: Any, y: Any, lr: Any, smoothing: Any, share: Any) -> tuple[Any, Any, Any]:
        opt.optimizer.learning_rate.assign(lr)  # cross-replica: every copy of the variable
        n = tf.shape(x)[0]

        def replica(x: Any, y: Any) -> tuple[Any, Any, Any]:
            context = tf.distribute.get_replica_context()
            index = tf.cast(context.replica_id_in_sync_group, tf.int32) % local
            start = index * (n // local) + tf.minimum(index, n % local)
            size = n // local + tf.cast(index < n % local, tf.int32)
            part = tf.cast(size, tf.float32) / tf.cast(n, tf.float32)
            loss, logits, norm = compute(x[start : start + size], y[start : start + size],
                                         smoothing, share * part)
            if statistics:
                _average_statistics(context, statistics, share * part, size > 0)
            return loss * part, logits, norm

        losses, logits, norms = strategy.run(replica, args=(x, y))
        return (
            tf.add_n(list(strategy.experimental_local_results(losses))),
            tf.concat(strategy.experimental_local_results(logits), axis=0),
            strategy.experimental_local_results(norms)[0],
        )

    return step


def skip_together(grads: list[Any]) -> list[Any]:
    """The gradients, made non-finite on every replica when any replica's are: the
    loss-scale optimiser decides to skip a step from its own replica's gradients before
    they are summed, and replicas that decide differently would wait for each other's sum."""
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None])
    context = tf.distribute.get_replica_context()
    overflowed = context.all_reduce(tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(finite, tf.float32))
    poison = tf.where(overflowed > 0, float("nan"), 0.0)
    return [g if g is None else g + tf.cast(poison, g.dtype) for g in grads]


def _moving_statistics(model: TransferModel) -> list[Any]:
    """The moving means and variances of the backbone's BatchNorm layers that run in
    training mode (``trainable``): each replica updates its own copy from its own part."""
    return [
        variable
        for layer, _ in walk_layers(model.backbone)
        if is_batchnorm(layer) and layer.trainable
        for variable in (layer.moving_mean, layer.moving_variance)
    ]


def _average_statistics(context: Any, statistics: list[Any], weight: Any, nonempty: Any) -> None:
    """Set every replica's moving statistics to their average over the replicas, weighted by
    each replica's share of the global batch, so that the copies stay one model's (Keras
    makes them ``aggregation="none"``: without this each replica keeps its own)."""
    weighted = [tf.where(nonempty, tf.convert_to_tensor(v) * weight, 0.0) for v in statistics]
    for variable, value in zip(
        statistics, context.all_reduce(tf.distribute.ReduceOp.SUM, weighted), strict=True
    ):
        variable.assign(value)
