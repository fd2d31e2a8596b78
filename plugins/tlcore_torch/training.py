"""Optimisers and the steps the core's training loop calls: train, evaluate, extract features.

A model built in a setup's scope (:mod:`tlcore_torch.placement`) trains on its device in its
precision: batches move from pinned host memory, the forward pass runs under autocast, the
loss in float32, and ``16-mixed`` scales it (:mod:`tlcore_torch.amp`). With several processes
the step runs through ``DistributedDataParallel`` (:mod:`tlcore_torch.replica`). Evaluation
is always plain float32 on the bare model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from tlcore.errors import TlcoreError
from tlcore.interfaces import Batch, StepState
from tlcore.recipe import StageSpec
from tlcore.recipe.choices import builtin
from tlcore.schedule import layer_multipliers
from tlcore_torch import amp, ema
from tlcore_torch.freezing import weight_entries
from tlcore_torch.placement import (
    autocast,
    device_of,
    exact_float32,
    precision_of,
    setup_of,
    to_device,
)
from tlcore_torch.replica import replica


def make_optimizer(model: nn.Module, stage: StageSpec) -> torch.optim.Optimizer | None:
    """The stage's optimiser over the parameters that are trainable now.

    ``adamw`` (decoupled weight decay), ``adam`` and ``rmsprop`` (L2 weight decay; RMSprop with
    ``stage.momentum``), ``sgd`` (``stage.momentum``, no Nesterov). With ``layer_decay``
    one parameter group per layer-wise rate (:func:`_rate_groups`). ``None`` for an optimiser
    a plugin registered: that plugin's ``tl_make_optimizer`` makes it.
    """
    if stage.optimizer not in builtin("optimizer"):
        return None
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise TlcoreError("no parameter is trainable", "the freeze policy left nothing to train")
    optimizer = _optimizer(_rate_groups(model, params, stage.layer_decay), stage)
    amp.attach_scaler(optimizer, setup_of(model))  # 16-mixed: its loss scale from the start
    return optimizer


def _rate_groups(
    model: nn.Module, params: list[nn.Parameter], decay: float
) -> list[dict[str, Any]]:
    """The trainable ``params`` as parameter groups of one learning-rate multiplier each
    (``lr_mult``, largest first: the head's 1), by the core's layer-wise decay over the
    backbone's blocks (:func:`tlcore.schedule.layer_multipliers`); one group without decay.
    A step sets each group's rate to the step's rate × its ``lr_mult``."""
    if decay == 1.0:
        return [{"params": params, "lr_mult": 1.0}]
    named = dict(model.backbone.named_parameters())
    entries = [name for name, _ in weight_entries(model.backbone) if name in named]
    multipliers = dict(zip(entries, layer_multipliers(entries, model.blocks, decay), strict=True))
    of_param = {id(named[name]): mult for name, mult in multipliers.items()}
    groups: dict[float, list[nn.Parameter]] = {}
    for param in params:  # the head's parameters are not the backbone's: 1
        groups.setdefault(of_param.get(id(param), 1.0), []).append(param)
    return [{"params": group, "lr_mult": mult} for mult, group in sorted(groups.items(),
                                                                          reverse=True)]


def _optimizer(params: list[dict[str, Any]], stage: StageSpec) -> torch.optim.Optimizer:
    """The built-in optimiser of ``stage`` over parameter groups, each group starting at
    ``stage.lr`` × its ``lr_mult``."""
    for group in params:
        group["lr"] = stage.lr * group["lr_mult"]
    lr, decay = stage.lr, stage.weight_decay
    if stage.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=decay)
    if stage.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=decay)
    if stage.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=stage.momentum, nesterov=False, weight_decay=decay
        )
    # rmsprop: the last built-in name (others were answered above)
    return torch.optim.RMSprop(params, lr=lr, momentum=stage.momentum, weight_decay=decay)


def _set_mode(model: nn.Module, training: bool) -> None:
    """Switch training/inference mode only when it changes: ``train()`` walks every submodule,
    milliseconds per call on a large backbone, which once dominated a head step on cached
    features. Modes stay consistent because only ``TransferModel.train`` sets them."""
    if model.training != training:
        model.train(training)


def _inputs(model: nn.Module, batch: Batch, device: torch.device) -> torch.Tensor:
    """The batch's model input (checked, :func:`model_input`) or cached features (float32)
    on ``device``."""
    if batch.features:
        return to_device(np.asarray(batch.x, dtype=np.float32), device)
    return model_input(model, batch.x, device)


def model_input(model: nn.Module, x: np.ndarray, device: torch.device) -> torch.Tensor:
    """What the model takes, on ``device``, as its input spec says: uint8 NHWC images
    (checked), int64 token ids ``(N, max_length)`` (any integer dtype accepted) or float32
    vectors ``(N, features)`` (any real dtype accepted).

    Raises:
        TlcoreError: the array's dtype or sample shape does not fit the model's input.
    """
    spec = getattr(model, "input_spec", None)
    modality = getattr(spec, "modality", "image")
    if modality == "image":
        if x.dtype != np.uint8:
            raise TlcoreError(
                f"images must be uint8, got {x.dtype}", "pass raw 0..255 RGB pixels, NHWC"
            )
        return to_device(x, device)
    array = np.asarray(x)
    text = modality == "text"
    kinds, what = ("iu", "int64 token ids") if text else ("iuf", "float32 vectors")
    if array.dtype.kind not in kinds or tuple(array.shape[1:]) != tuple(spec.shape):
        raise TlcoreError(
            f"this model takes {what} of shape (N, {spec.shape[0]}), got {array.dtype} "
            f"{tuple(array.shape)}",
            "tokenize texts with the model's tokenizer, padded to its max_length"
            if text else f"pass numeric vectors of {spec.shape[0]} features",
        )
    return to_device(array.astype(np.int64 if text else np.float32, copy=False), device)


def _bare(model: nn.Module, features: bool) -> Any:
    """What computes the logits of a batch: the head alone for cached features."""
    return model.classify if features else model


def train_step(model: nn.Module, batch: Batch, state: StepState) -> dict[str, Any]:
    """One step: set the learning rate, forward (under autocast in a reduced precision), the
    loss ``state.loss`` in float32, backward (scaled for ``16-mixed``), update.

    In a distributed run the gradient is that of the loss × ``state.share`` × the number of
    processes, which ``DistributedDataParallel`` averages: every rank applies the gradient of
    the global batch's mean loss, as one process would.

    Accumulation (``state.apply`` false): the gradient is added to ``.grad`` and the update
    waits for the step's last batch. ``DistributedDataParallel`` averages every batch's
    gradient as it comes (no ``no_sync``): the average of sums is the sum of averages, so
    the update is the same, for one all-reduce per batch instead of per step. Clipping
    (``state.clip_norm``) unscales a ``16-mixed`` gradient first; the moving average
    (``state.ema``) follows the update (:mod:`tlcore_torch.ema`).

    Returns:
        ``{"loss": float, "outputs": float32 logits}`` of this batch, before the update; the
        loss is the batch's own mean, unscaled; ``applied`` (whether the weights changed)
        and, when clipping, ``grad_norm`` (the global norm before clipping).
    """
    optimizer = state.optimizer
    for group in optimizer.param_groups:  # layer-wise rates: each group's own multiple
        group["lr"] = state.lr * group.get("lr_mult", 1.0)
    setup, device = setup_of(model), device_of(model)
    _set_mode(model, training=True)
    if state.ema:  # the first average: the weights (and statistics) before the first batch
        ema.begin(model, optimizer)
    x = _inputs(model, batch, device)
    network, world = replica(model, optimizer, batch.features, setup)
    with autocast(device, precision_of(model)):
        logits = (network or _bare(model, batch.features))(x)
    loss = compute_loss(logits.float(), batch.y, state)
    factor = state.share * world
    objective = loss if factor == 1.0 else loss * factor
    scaler = amp.scaler_for(optimizer, setup)
    (objective if scaler is None else scaler.scale(objective)).backward()
    result = {"loss": float(loss.item()), "outputs": logits.detach().float().cpu().numpy(),
              "applied": state.apply}
    if state.apply:
        result.update(_update(model, optimizer, scaler, state))
    return result


def _update(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    state: StepState,
) -> dict[str, Any]:
    """The optimiser step on the accumulated gradients: clipped to ``state.clip_norm`` (after
    unscaling), then the moving average's update; the gradients are cleared. Returns
    ``grad_norm`` when it clips."""
    out: dict[str, Any] = {}
    if state.clip_norm:
        if scaler is not None:
            scaler.unscale_(optimizer)  # the norm of the true gradient; step() skips a repeat
        params = [p for group in optimizer.param_groups for p in group["params"]]
        # An overflowed 16-mixed gradient has an infinite norm: clipped to NaN, and the
        # scaler skips the step as it would have.
        norm = torch.nn.utils.clip_grad_norm_(params, state.clip_norm)
        out["grad_norm"] = float(norm)
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)  # skipped when the scaled gradients overflowed
        scaler.update()
    optimizer.zero_grad(set_to_none=True)
    if state.ema:
        ema.update(model, optimizer, state.ema)
    return out


def compute_loss(logits: torch.Tensor, y: np.ndarray, state: StepState) -> torch.Tensor:
    """The loss ``state.loss`` of ``logits`` against the batch's targets ``y``, in float32.

    ``cross_entropy``: int class indices ``(n,)`` or float class probabilities ``(n,
    classes)`` (mixed targets), with ``state.label_smoothing`` and ``state.class_weights``
    (torch's own definitions of both, which the other backends follow);
    ``binary_cross_entropy``: multi-hot floats, on the logits; ``mse``: float values, shaped
    like the logits.
    """
    logits = logits.float()
    if state.loss == "cross_entropy":
        array = np.asarray(y)
        soft = array.ndim == 2 and array.dtype.kind == "f"
        labels = to_device(array.astype(np.float32 if soft else np.int64, copy=False),
                           logits.device)
        weight = None if state.class_weights is None else torch.tensor(
            state.class_weights, dtype=torch.float32, device=logits.device
        )
        return F.cross_entropy(
            logits, labels, weight=weight, label_smoothing=state.label_smoothing
        )
    target = to_device(np.asarray(y, dtype=np.float32), logits.device).reshape(logits.shape)
    if state.loss == "binary_cross_entropy":
        return F.binary_cross_entropy_with_logits(logits, target)
    if state.loss == "mse":
        return F.mse_loss(logits, target)
    raise TlcoreError(
        f"the torch backend has no loss {state.loss!r}",
        "valid: cross_entropy, binary_cross_entropy, mse",
    )


def eval_step(model: nn.Module, batch: Batch) -> np.ndarray:
    """Raw outputs (logits) of one batch in inference mode, float32 ``(batch, outputs)``:
    always plain float32 (no autocast, no TF32) on the bare model, whatever the training
    precision, so validation and the export's parity check agree with onnxruntime; no
    collective operation (rank 0 may run it alone)."""
    device = device_of(model)
    _set_mode(model, training=False)
    with torch.inference_mode(), exact_float32(device):
        return _bare(model, batch.features)(_inputs(model, batch, device)).float().cpu().numpy()


def extract_features(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """Pooled backbone features of a batch of the model's input (uint8 NHWC images, token
    ids, vectors) in inference mode, computed in the training precision and returned as
    float32 (the base class hands over at most ``Backend.feature_batch`` samples at a time).
    No collective operation."""
    if not len(x):  # a network need not accept an empty batch
        return np.zeros((0, model.num_features), dtype=np.float32)
    device = device_of(model)
    _set_mode(model, training=False)
    image = getattr(model, "modality", "image") == "image"
    tensor = to_device(x, device) if image else model_input(model, x, device)
    with torch.inference_mode(), autocast(device, precision_of(model)):
        features = model.features(tensor)
    return features.float().cpu().numpy()
