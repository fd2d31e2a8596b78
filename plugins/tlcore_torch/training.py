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
from tlcore_torch import amp
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
    ``stage.momentum``), ``sgd`` (``stage.momentum``, no Nesterov). ``None`` for an optimiser
    a plugin registered: that plugin's ``tl_make_optimizer`` makes it.
    """
    if stage.optimizer not in builtin("optimizer"):
        return None
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise TlcoreError("no parameter is trainable", "the freeze policy left nothing to train")
    optimizer = _optimizer(params, stage)
    amp.attach_scaler(optimizer, setup_of(model))  # 16-mixed: its loss scale from the start
    return optimizer


def _optimizer(params: list[nn.Parameter], stage: StageSpec) -> torch.optim.Optimizer:
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

    Returns:
        ``{"loss": float, "outputs": float32 logits}`` of this batch, before the update; the
        loss is the batch's own mean, unscaled.
    """
    optimizer = state.optimizer
    for group in optimizer.param_groups:
        group["lr"] = state.lr
    setup, device = setup_of(model), device_of(model)
    _set_mode(model, training=True)
    x = _inputs(model, batch, device)
    network, world = replica(model, optimizer, batch.features, setup)
    with autocast(device, precision_of(model)):
        logits = (network or _bare(model, batch.features))(x)
    loss = compute_loss(logits.float(), batch.y, state)
    factor = state.share * world
    objective = loss if factor == 1.0 else loss * factor
    scaler = amp.scaler_for(optimizer, setup)
    if scaler is None:
        objective.backward()
        optimizer.step()
    else:
        scaler.scale(objective).backward()
        scaler.step(optimizer)  # skipped when the scaled gradients overflowed
        scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return {"loss": float(loss.item()), "outputs": logits.detach().float().cpu().numpy()}


def compute_loss(logits: torch.Tensor, y: np.ndarray, state: StepState) -> torch.Tensor:
    """The loss ``state.loss`` of ``logits`` against the batch's targets ``y``, in float32.

    ``cross_entropy``: int class indices, with ``state.label_smoothing``;
    ``binary_cross_entropy``: multi-hot floats, on the logits; ``mse``: float values, shaped
    like the logits.
    """
    logits = logits.float()
    if state.loss == "cross_entropy":
        labels = to_device(np.asarray(y, dtype=np.int64), logits.device)
        return F.cross_entropy(logits, labels, label_smoothing=state.label_smoothing)
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
