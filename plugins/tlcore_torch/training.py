"""Optimisers and the steps the core's training loop calls: train, evaluate, extract features."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from tlcore.errors import TlcoreError
from tlcore.interfaces import Batch, StepState
from tlcore.recipe import StageSpec

FEATURE_CHUNK = 256


def make_optimizer(model: nn.Module, stage: StageSpec) -> torch.optim.Optimizer:
    """The stage's optimiser over the parameters that are trainable now.

    ``adamw`` (decoupled weight decay), ``adam`` and ``rmsprop`` (L2 weight decay; RMSprop with
    ``stage.momentum``), ``sgd`` (``stage.momentum``, no Nesterov).
    """
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
    if stage.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=stage.momentum, weight_decay=decay)
    raise TlcoreError(f"unknown optimizer {stage.optimizer!r}", "valid: adamw, adam, sgd, rmsprop")


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


def train_step(model: nn.Module, batch: Batch, state: StepState) -> dict[str, float]:
    """One step: set the learning rate, forward, cross-entropy, backward, update.

    Returns:
        ``{"loss": float, "accuracy": float}`` of this batch, before the update.
    """
    optimizer = state.optimizer
    for group in optimizer.param_groups:
        group["lr"] = state.lr
    _set_mode(model, training=True)
    logits = _logits(model, batch)
    labels = torch.as_tensor(np.asarray(batch.y), dtype=torch.long)
    loss = F.cross_entropy(logits, labels, label_smoothing=state.label_smoothing)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        accuracy = (logits.argmax(dim=1) == labels).float().mean()
    return {"loss": float(loss.item()), "accuracy": float(accuracy.item())}


def eval_step(model: nn.Module, batch: Batch) -> np.ndarray:
    """Logits of one batch in inference mode, float32 ``(batch, num_classes)``."""
    _set_mode(model, training=False)
    with torch.inference_mode():
        return _logits(model, batch).float().numpy()


def extract_features(model: nn.Module, images: np.ndarray) -> np.ndarray:
    """Pooled backbone features of uint8 NHWC images in inference mode, float32."""
    _set_mode(model, training=False)
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(images), FEATURE_CHUNK):
            x = _inputs(images[start : start + FEATURE_CHUNK])
            chunks.append(model.features(x).float().numpy())
    if not chunks:
        return np.zeros((0, model.num_features), dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)
