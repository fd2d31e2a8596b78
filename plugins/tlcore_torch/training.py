"""Optimisers and the steps the core's training loop calls: train, evaluate, extract features."""

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


def _inputs(batch_x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.require(batch_x, requirements=["C", "W"]))


def _logits(model: nn.Module, batch: Batch) -> torch.Tensor:
    x = _inputs(batch.x)
    if batch.features:
        return model.classify(x.float())
    if x.dtype != torch.uint8:
        raise TlcoreError(
            f"images must be uint8, got {batch.x.dtype}", "pass raw 0..255 RGB pixels, NHWC"
        )
    return model(x)


def train_step(model: nn.Module, batch: Batch, state: StepState) -> dict[str, Any]:
    """One step: set the learning rate, forward, the loss ``state.loss``, backward, update.

    Returns:
        ``{"loss": float, "outputs": float32 logits}`` of this batch, before the update.
    """
    optimizer = state.optimizer
    for group in optimizer.param_groups:
        group["lr"] = state.lr
    _set_mode(model, training=True)
    logits = _logits(model, batch)
    loss = compute_loss(logits, batch.y, state)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {"loss": float(loss.item()), "outputs": logits.detach().float().numpy()}


def compute_loss(logits: torch.Tensor, y: np.ndarray, state: StepState) -> torch.Tensor:
    """The loss ``state.loss`` of ``logits`` against the batch's targets ``y``.

    ``cross_entropy``: int class indices, with ``state.label_smoothing``;
    ``binary_cross_entropy``: multi-hot floats, on the logits; ``mse``: float values, shaped
    like the logits.
    """
    if state.loss == "cross_entropy":
        labels = torch.as_tensor(np.asarray(y), dtype=torch.long)
        return F.cross_entropy(logits, labels, label_smoothing=state.label_smoothing)
    target = torch.as_tensor(np.asarray(y, dtype=np.float32)).reshape(logits.shape)
    if state.loss == "binary_cross_entropy":
        return F.binary_cross_entropy_with_logits(logits.float(), target)
    if state.loss == "mse":
        return F.mse_loss(logits.float(), target)
    raise TlcoreError(
        f"the torch backend has no loss {state.loss!r}",
        "valid: cross_entropy, binary_cross_entropy, mse",
    )


def eval_step(model: nn.Module, batch: Batch) -> np.ndarray:
    """Raw outputs (logits) of one batch in inference mode, float32 ``(batch, outputs)``."""
    _set_mode(model, training=False)
    with torch.inference_mode():
        return _logits(model, batch).float().numpy()


def extract_features(model: nn.Module, images: np.ndarray) -> np.ndarray:
    """Pooled backbone features of uint8 NHWC images in inference mode, float32 (the base
    class hands over at most ``Backend.feature_batch`` images at a time)."""
    if not len(images):  # a network need not accept an empty batch
        return np.zeros((0, model.num_features), dtype=np.float32)
    _set_mode(model, training=False)
    with torch.inference_mode():
        return model.features(_inputs(images)).float().numpy()
