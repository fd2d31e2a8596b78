"""Optimisers and the steps the core's training loop calls: train, evaluate, extract features.

Every step is a ``tf.function`` with a fixed input signature (the batch dimension left open)
and without autograph, as in Keras' own trainer: Keras layers need no conversion, and
converting them took a fifth of a MobileNetV2 trace. Steps are traced once per model
(evaluation, features) or once per stage optimiser and input kind (training), never per
call. Changing what trains means a new optimiser, which the core makes after every
``tl_freeze``, and so a new train step: trainable flags are read when a step is traced, never
later.

A model built in a setup's scope trains under that scope's ``tf.distribute`` strategy with
tlcore's own step (Keras' ``fit`` is broken under ``MultiWorkerMirroredStrategy`` in Keras 3,
keras#20585): ``strategy.run`` inside the compiled step, the process's batch split between its
replicas as ``np.array_split`` splits it. Each replica differentiates its mean loss × its
share of the global batch, and Keras' TensorFlow optimiser sums the replicas' gradients
(``TFOptimizer._all_reduce_sum_gradients``), so every replica applies the gradient of the
global batch's mean loss, as one process does. Evaluation runs no collective and computes in
float32 whatever the training precision (:func:`~tlcore_keras.model.float32_compute`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tlcore.errors import TlcoreError
from tlcore.interfaces import Batch, StepState
from tlcore.parallel import launched_rank
from tlcore.recipe import StageSpec
from tlcore.recipe.choices import builtin
from tlcore_keras import ema, gradients
from tlcore_keras.collective import PEER_ERRORS, cluster_peers, peer_failure
from tlcore_keras.losses import loss_named as _loss_fn
from tlcore_keras.losses import soft_targets as _soft
from tlcore_keras.model import TransferModel, float32_compute
from tlcore_keras.rategroups import RateGroups, rate_groups
from tlcore_keras.replicas import replicated_step, skip_together

# torch's defaults, so that one recipe means the same optimiser on both backends.
ADAM_EPSILON = 1e-8
RMSPROP_RHO = 0.99


@dataclass(eq=False)
class StageOptimizer:
    """A Keras optimiser for one stage, bound to the variables it trains.

    Attributes:
        optimizer: the ``keras.optimizers.Optimizer``, built on ``variables``; with
            ``layer_decay`` a :class:`~tlcore_keras.rategroups.RateGroups`, one Keras
            optimiser per layer-wise rate, used as one.
        variables: what trains in this stage, in the optimiser's order.
        l2: an L2 penalty added to the gradients (``adam``, ``sgd`` and ``rmsprop`` weight
            decay, as ``torch.optim`` applies it; ``adamw`` decays in the optimiser instead).
        backbone_training: the ``training`` flag the backbone runs with in this stage.
        freeze_version: the model's freeze count when this optimiser was made.
        strategy: the model's ``tf.distribute`` strategy (the steps run under it), or
            ``None``.
        steps: the compiled train steps, by input kind (``True`` for cached features), loss
            name, target kind (``True`` for class probabilities), class weights, accumulation
            mode and clipping norm (:mod:`tlcore_keras.gradients`).
    """

    optimizer: Any
    variables: list[Any]
    l2: float
    backbone_training: bool
    freeze_version: int
    strategy: Any = None
    steps: dict[tuple[Any, ...], Callable[..., Any]] = field(default_factory=dict)


def make_optimizer(model: TransferModel, stage: StageSpec) -> StageOptimizer | None:
    """The stage's optimiser over the variables trainable now, built so its state exists.

    ``adamw`` (decoupled weight decay), ``adam`` and ``rmsprop`` (L2 weight decay; RMSprop with
    ``stage.momentum``), ``sgd`` (``stage.momentum``, no Nesterov). Epsilon and RMSprop's rho
    are torch's defaults. Made in the model's strategy scope; a ``mixed_float16`` model's
    is wrapped in ``keras.optimizers.LossScaleOptimizer``. ``None`` for an optimiser a plugin
    registered: that plugin's ``tl_make_optimizer`` makes it.
    """
    if stage.optimizer not in builtin("optimizer"):
        return None
    variables = list(model.train_variables)
    if not variables:
        raise TlcoreError("no parameter is trainable", "the freeze policy left nothing to train")
    with model.scope():
        optimizer, l2 = _keras_optimizer(stage)
        if stage.layer_decay != 1.0:
            optimizer = _layerwise(model, stage, variables)
        elif model.policy == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(variables)
    return StageOptimizer(
        optimizer, variables, l2, model.backbone_training, model.freeze_version, model.strategy
    )


def _layerwise(model: TransferModel, stage: StageSpec, variables: list[Any]) -> RateGroups:
    """One Keras optimiser per layer-wise rate (``stage.layer_decay``), used as one.

    Raises:
        TlcoreError: the model trains in ``mixed_float16``, whose loss scaling wraps one
            Keras optimiser.
    """
    if model.policy == "mixed_float16":
        raise TlcoreError(
            "layer_decay on the keras backend does not combine with precision 16-mixed (its "
            "loss scaling wraps a single Keras optimiser)",
            "train in precision bf16 or 32, or set layer_decay to 1",
        )
    multipliers, groups = rate_groups(model, variables, stage.layer_decay)
    return RateGroups(
        lambda rate: _keras_optimizer(stage, rate)[0], float(stage.lr), multipliers, groups
    )


def _keras_optimizer(stage: StageSpec, rate: Any = None) -> tuple[Any, float]:
    """The Keras optimiser of a built-in ``stage.optimizer`` and its L2 penalty; at
    ``rate`` (a float or a callable) instead of ``stage.lr`` when given."""
    lr, decay = stage.lr if rate is None else rate, stage.weight_decay
    optimizers = keras.optimizers
    l2 = decay
    if stage.optimizer == "adamw":
        optimizer = optimizers.AdamW(learning_rate=lr, weight_decay=decay, epsilon=ADAM_EPSILON)
        l2 = 0.0
    elif stage.optimizer == "adam":
        optimizer = optimizers.Adam(learning_rate=lr, epsilon=ADAM_EPSILON)
    elif stage.optimizer == "sgd":
        optimizer = optimizers.SGD(learning_rate=lr, momentum=stage.momentum, nesterov=False)
    else:  # rmsprop: the last built-in name (others were answered above)
        optimizer = optimizers.RMSprop(
            learning_rate=lr, rho=RMSPROP_RHO, momentum=stage.momentum, epsilon=ADAM_EPSILON
        )
    return optimizer, float(l2)


def _input_spec(model: TransferModel) -> tf.TensorSpec:
    """The model's input as a ``tf.TensorSpec``: uint8 images, int64 ids or float32 vectors."""
    spec = model.inputs
    return tf.TensorSpec((None, *spec.shape), tf.as_dtype(spec.dtype), name=spec.name)


def _feature_spec(model: TransferModel) -> tf.TensorSpec:
    return tf.TensorSpec((None, model.num_features), tf.float32, name="features")


def _build_train_step(
    model: TransferModel, opt: StageOptimizer, features: bool, loss_name: str,
    soft: bool = False, class_weights: tuple[float, ...] | None = None,
    mode: str = gradients.APPLY, clip_norm: float = 0.0,
) -> Any:
    """The compiled step ``(x, y, lr, smoothing, share) -> (loss, float32 logits, gradient
    norm)``: under the optimiser's strategy when it has one; ``mode`` and ``clip_norm`` as
    :func:`~tlcore_keras.gradients.update_gradients` takes them (constants of the trace).
    ``y`` is int32 class indices for ``cross_entropy``, unless ``soft`` (float32 class
    probabilities, a trace of its own);
    ``class_weights`` are constants of the trace (they stay the same for a whole run)."""
    targets = (
        tf.TensorSpec((None,), tf.int32, name="labels")
        if loss_name == "cross_entropy" and not soft
        else tf.TensorSpec((None, model.num_classes), tf.float32, name="targets")
    )
    signature = [
        _feature_spec(model) if features else _input_spec(model),
        targets,
        tf.TensorSpec((), tf.float32, name="lr"),
        tf.TensorSpec((), tf.float32, name="smoothing"),
        tf.TensorSpec((), tf.float32, name="share"),
    ]
    compute = _update(model, opt, features, loss_name, replicated=opt.strategy is not None,
                      class_weights=class_weights, mode=mode, clip_norm=clip_norm)
    if opt.strategy is not None:
        return replicated_step(model, opt, compute, signature)

    @tf.function(input_signature=signature, autograph=False)
    def step(x: Any, y: Any, lr: Any, smoothing: Any, share: Any) -> tuple[Any, Any, Any]:
        with model.placement():
            opt.optimizer.learning_rate.assign(lr)
            return compute(x, y, smoothing, share)

    return step


def _update(
    model: TransferModel, opt: StageOptimizer, features: bool, loss_name: str, replicated: bool,
    class_weights: tuple[float, ...] | None = None, mode: str = gradients.APPLY,
    clip_norm: float = 0.0,
) -> Callable[..., tuple[Any, Any, Any]]:
    """``(x, y, smoothing, share) -> (mean loss, float32 logits, gradient norm)``: forward,
    the gradient of the mean loss × ``share`` (scaled for a loss-scale optimiser), summed or
    clipped as ``mode`` and ``clip_norm`` say (:mod:`tlcore_keras.gradients`), the update
    (none while accumulating)."""
    optimizer, variables, l2 = opt.optimizer, opt.variables, opt.l2
    backbone_training = opt.backbone_training
    loss_fn = _loss_fn(loss_name, class_weights)
    scaling = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

    def compute(x: Any, y: Any, smoothing: Any, share: Any) -> tuple[Any, Any, Any]:
        with tf.GradientTape() as tape:
            pooled = x if features else model.features(x, training=backbone_training)
            logits = model.classifier(pooled, training=True)
            loss = loss_fn(logits, y, smoothing)
            if replicated:  # a replica's part of a batch smaller than the replicas is empty
                loss = tf.where(tf.shape(x)[0] > 0, loss, 0.0)
            objective = loss * share
            if scaling:
                objective = optimizer.scale_loss(objective)
        grads = tape.gradient(objective, variables)
        scale = optimizer.dynamic_scale if scaling else None
        grads, norm = gradients.update_gradients(opt, grads, mode, clip_norm, scale, replicated)
        if grads is None:  # accumulated: the update comes with the step's last batch
            return loss, tf.cast(logits, tf.float32), norm
        if l2:
            # Once per update, after clipping (torch's weight decay is in its step); each
            # replica adds its part of the penalty: their sum is the penalty once.
            part = 1.0 / tf.distribute.get_replica_context().num_replicas_in_sync \
                if replicated else 1.0
            decay = l2 * part * (scale if scaling else 1.0)
            pairs = zip(grads, variables, strict=True)
            grads = [g if g is None else g + decay * v for g, v in pairs]
        if scaling and replicated:
            grads = skip_together(grads)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return loss, tf.cast(logits, tf.float32), norm

    return compute


def _targets(model: TransferModel, y: np.ndarray, loss_name: str) -> np.ndarray:
    if loss_name == "cross_entropy" and not _soft(y, loss_name):
        return np.asarray(y).astype(np.int32, copy=False)
    return np.asarray(y, dtype=np.float32).reshape(-1, model.num_classes)


def _inputs(model: TransferModel, batch: Batch) -> np.ndarray:
    """The batch as the compiled steps take it; refuses what the model cannot take."""
    if batch.features:
        return np.asarray(batch.x, dtype=np.float32)
    x = np.asarray(batch.x)
    spec = model.inputs
    if spec.modality == "image":
        if x.dtype != np.uint8:
            raise TlcoreError(
                f"images must be uint8, got {x.dtype}", "pass raw 0..255 RGB pixels, NHWC"
            )
        height, width = spec.size
        if x.ndim != 4 or x.shape[1:] != (height, width, 3):
            raise TlcoreError(
                f"images have shape {x.shape}, the model takes (N, {height}, {width}, 3)",
                "resize the images to the backbone's input size",
            )
        return x
    if spec.modality == "text":
        what, fix, kinds = "token ids", "tokenize the texts with the model's tokenizer", "iu"
    else:
        what, fix, kinds = "vectors", "pass numbers, (N, features)", "fiub"
    if x.dtype.kind not in kinds or x.ndim != 2 or x.shape[1:] != tuple(spec.shape):
        raise TlcoreError(
            f"{what} have shape {x.shape} and dtype {x.dtype}, the model takes "
            f"{spec.dtype} (N, {spec.shape[0]})", fix,
        )
    return x.astype(spec.dtype, copy=False)


def train_step(model: TransferModel, batch: Batch, state: StepState) -> dict[str, Any]:
    """One step: set the learning rate, forward, the loss ``state.loss``, backward (of the
    mean loss × ``state.share``: the replicas' gradients are summed), update. Without
    ``state.apply`` the gradient is only added to the step's sums; ``state.clip_norm``
    clips the update's gradient (:mod:`tlcore_keras.gradients`), ``state.ema`` updates the
    weights' moving average after it (:mod:`tlcore_keras.ema`).

    Returns:
        ``{"loss": float, "outputs": float32 logits}`` of this batch, before the update;
        ``applied`` (whether the weights changed) and, when clipping, ``grad_norm`` (the
        global norm before clipping).

    Raises:
        TlcoreError: the optimiser is not this backend's, or was made before the last freeze.
    """
    opt = state.optimizer
    if not isinstance(opt, StageOptimizer):
        raise TlcoreError(
            f"the optimiser is a {type(opt).__name__}, not the keras backend's",
            "make it with tl_make_optimizer(backend='keras', ...)",
        )
    if opt.freeze_version != model.freeze_version:
        raise TlcoreError(
            "the freeze policy changed after this optimiser was made",
            "call tl_make_optimizer after every tl_freeze",
        )
    soft = _soft(batch.y, state.loss)
    mode = gradients.step_mode(opt, state.apply)
    gradients.prepare(opt, mode)
    clip = float(state.clip_norm) if state.apply else 0.0
    key = (batch.features, state.loss, soft, state.class_weights, mode, clip)
    step = opt.steps.get(key)
    if step is None:
        step = opt.steps[key] = _build_train_step(
            model, opt, batch.features, state.loss, soft, state.class_weights, mode, clip
        )
    if state.ema:  # the first average: the weights (and statistics) before the first batch
        ema.begin(model, opt)
    args = (
        _inputs(model, batch),
        _targets(model, batch.y, state.loss),
        np.float32(state.lr),
        np.float32(state.label_smoothing),
        np.float32(state.share),
    )
    peers = cluster_peers() if opt.strategy is not None else ()
    try:
        loss, logits, norm = step(*args)
    except PEER_ERRORS as exc:
        if len(peers) < 2:
            raise
        raise peer_failure(exc, peers, launched_rank()) from None
    gradients.finished(opt, mode)
    result = {"loss": float(loss), "outputs": np.asarray(logits, dtype=np.float32),
              "applied": bool(state.apply)}
    if clip:
        result["grad_norm"] = float(norm)
    if state.apply and state.ema:
        ema.update(model, opt, state.ema)
    return result


def _compiled(model: TransferModel, kind: str) -> Any:
    """The model's compiled inference function ``kind``: ``logits`` (images → logits),
    ``head`` (features → logits) or ``features`` (images → pooled features)."""
    fn = model.compiled.get(kind)
    if fn is not None:
        return fn
    calls = {
        "head": (lambda x: model.classifier(x, training=False), _feature_spec(model)),
        "features": (lambda x: model.features(x, training=False), _input_spec(model)),
        "logits": (lambda x: model.full(x, training=False), _input_spec(model)),
    }
    call, spec = calls[kind]

    def placed(x: Any) -> Any:
        with model.placement():
            return call(x)

    fn = tf.function(placed, input_signature=[spec], autograph=False)
    model.compiled[kind] = fn
    return fn


def eval_step(model: TransferModel, batch: Batch) -> np.ndarray:
    """Raw outputs (logits) of one batch in inference mode, computed in float32 whatever the
    training precision, on this process alone: ``(batch, outputs)``."""
    with float32_compute(model):  # traced, and called, with every layer in float32
        fn = _compiled(model, "head" if batch.features else "logits")
        return np.asarray(fn(_inputs(model, batch)), dtype=np.float32)


def extract_features(model: TransferModel, images: np.ndarray) -> np.ndarray:
    """Pooled backbone features of a batch of the model's inputs (uint8 NHWC images, int64
    token ids or float32 vectors) in inference mode, on this process alone, computed in the
    training precision and returned as float32 (the base class hands over at most
    ``Backend.feature_batch`` samples at a time)."""
    if not len(images):  # a network need not accept an empty batch
        return np.zeros((0, model.num_features), dtype=np.float32)
    x = _inputs(model, Batch(images, np.zeros(0)))
    return np.asarray(_compiled(model, "features")(x), dtype=np.float32)
