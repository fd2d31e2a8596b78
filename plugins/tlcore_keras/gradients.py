"""What the Keras train step does to the gradients between the tape and the optimiser: sum
them over an optimiser step's batches (``train.accumulate``) and clip their global norm
(``train.clip_norm``), as the torch backend does with ``.grad`` and ``clip_grad_norm_``.

A step is traced in one of three modes: ``apply`` (update from this batch's gradient alone,
the plain step), ``accumulate`` (add it to the sums, no update) and ``flush`` (update from
the sums plus this batch's gradient, then clear them). Under a ``tf.distribute`` strategy
the sums hold the gradient summed over the replicas (one all-reduce per batch, as
``DistributedDataParallel`` without ``no_sync``), in mirrored variables every replica
updates alike; a flushing or clipping step sums its own gradient over the replicas too, so
that the norm is the global gradient's, and hands each replica ``1 / replicas`` of the
result, which the optimiser's own sum over the replicas makes whole again.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import tensorflow as tf

if TYPE_CHECKING:
    from tlcore_keras.training import StageOptimizer

APPLY, ACCUMULATE, FLUSH = "apply", "accumulate", "flush"
EPSILON = 1e-6
"""Added to the norm before dividing, as ``torch.nn.utils.clip_grad_norm_`` does."""


@dataclass(eq=False)
class _Sums:
    """An optimiser's gradient sums (one variable per trained variable) and whether they
    hold anything yet."""

    variables: list[Any] = field(default_factory=list)
    pending: bool = False


_SUMS: weakref.WeakKeyDictionary[StageOptimizer, _Sums] = weakref.WeakKeyDictionary()


def step_mode(opt: StageOptimizer, apply: bool) -> str:
    """The mode of the next step of ``opt``: ``accumulate`` unless it ``apply``-s, then
    ``flush`` when earlier batches left sums, else ``apply``."""
    if not apply:
        return ACCUMULATE
    sums = _SUMS.get(opt)
    return FLUSH if sums is not None and sums.pending else APPLY


def prepare(opt: StageOptimizer, mode: str) -> None:
    """Make ``opt``'s sums (zeros, in its strategy's scope) before a step of ``mode`` that
    uses them is traced."""
    if mode == APPLY or opt in _SUMS:
        return
    scope = opt.strategy.scope() if opt.strategy is not None else contextlib.nullcontext()
    with scope:
        _SUMS[opt] = _Sums([
            tf.Variable(
                tf.zeros(v.shape, v.dtype), trainable=False,
                # Every replica adds the same all-reduced sum: the first one's value is kept.
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )
            for v in opt.variables
        ])


def finished(opt: StageOptimizer, mode: str) -> None:
    """Record, after a step of ``mode`` ran, whether the sums now hold a gradient."""
    if opt in _SUMS:
        _SUMS[opt].pending = mode == ACCUMULATE


def update_gradients(
    opt: StageOptimizer,
    grads: list[Any],
    mode: str,
    clip_norm: float,
    scale: Any,
    replicated: bool,
) -> tuple[list[Any] | None, Any]:
    """In a traced step: the gradients to apply (``None`` for an ``accumulate`` step, which
    only adds them to the sums) and the global norm before clipping (0 without clipping).

    Args:
        opt: the stage's optimiser (its sums, for ``accumulate`` and ``flush``).
        grads: this batch's gradients, one per ``opt.variables`` (``None`` where a
            variable has none).
        mode: ``apply``, ``accumulate`` or ``flush``.
        clip_norm: the largest global norm (0: no clipping), of the unscaled gradient.
        scale: the loss scale the gradients carry (``None`` without loss scaling).
        replicated: the step runs in a replica context of a strategy.
    """
    zero = tf.constant(0.0, tf.float32)
    if mode == ACCUMULATE:
        total = _summed(grads) if replicated else grads
        for sum_, g in zip(_SUMS[opt].variables, total, strict=True):
            if g is not None:
                sum_.assign_add(g)
        return None, zero
    gathered = replicated and (mode == FLUSH or clip_norm > 0)
    if gathered:
        grads = _summed(grads)
    if mode == FLUSH:
        sums = _SUMS[opt].variables
        grads = [g if g is None else g + s for g, s in zip(grads, sums, strict=True)]
        for s in sums:
            s.assign(tf.zeros_like(s))  # after the reads above (ordered on the variable)
    norm = zero
    if clip_norm > 0:
        norm = tf.linalg.global_norm([tf.cast(g, tf.float32) for g in grads if g is not None])
        if scale is not None:
            norm = norm / tf.cast(scale, tf.float32)
        # An overflowed scaled gradient: infinite norm, factor 0, NaN; the step is skipped.
        factor = tf.minimum(1.0, clip_norm / (norm + EPSILON))
        grads = [g if g is None else g * tf.cast(factor, g.dtype) for g in grads]
    if gathered:
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        grads = [g if g is None else g / replicas for g in grads]
    return grads, norm


def _summed(grads: list[Any]) -> list[Any]:
    """The gradients summed over every replica (``None`` stays ``None``)."""
    present = [g for g in grads if g is not None]
    context = tf.distribute.get_replica_context()
    total = iter(context.all_reduce(tf.distribute.ReduceOp.SUM, present)) if present else iter(())
    return [None if g is None else next(total) for g in grads]
