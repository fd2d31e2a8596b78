"""The moving average of a model's weights (``train.ema``), kept on the weights' own device
next to the optimiser it belongs to, as timm's ``ModelEmaV2`` keeps it.

It covers what the optimiser trains and every floating-point buffer (BatchNorm's running
statistics), by the names ``tl_get_weights`` uses. It starts from the weights before the
stage's first update and crosses the plugin boundary as optimiser-state entries
``ema.<name>`` (:mod:`tlcore.train.steps`); an average restored into a new optimiser (a
resumed run) is bound to the model's tensors at its next update.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from tlcore.stepstate import ema_entries


class _Average:
    """An optimiser's average: ``names`` and, once bound to a model, the average tensors and
    the live tensors they follow (in the same order); ``pending`` holds restored arrays
    until then."""

    def __init__(self, pending: dict[str, np.ndarray] | None = None) -> None:
        self.names: list[str] = []
        self.averages: list[torch.Tensor] = []
        self.sources: list[torch.Tensor] = []
        self.pending = pending


_AVERAGES: weakref.WeakKeyDictionary[torch.optim.Optimizer, _Average] = (
    weakref.WeakKeyDictionary()
)


def _covered(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The live tensors the average follows, by state-dict name: the optimiser's parameters
    and the model's floating-point persistent buffers."""
    state = model.state_dict(keep_vars=True)
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    out = {name: p for name, p in model.named_parameters() if id(p) in trained}
    out.update(
        (name, b) for name, b in model.named_buffers() if name in state and b.is_floating_point()
    )
    return {name: tensor.detach() for name, tensor in out.items()}


def _bound(model: nn.Module, optimizer: torch.optim.Optimizer) -> _Average:
    """The optimiser's average, bound to ``model``'s tensors (started from their values, or
    from the restored arrays)."""
    average = _AVERAGES.get(optimizer)
    if average is not None and average.averages:
        return average
    pending = average.pending if average is not None else None
    average = _Average()
    for name, tensor in _covered(model, optimizer).items():
        start = tensor.clone()
        if pending is not None and name in pending:
            restored = torch.from_numpy(np.require(pending[name], requirements=["C", "W"]))
            start.copy_(restored.reshape(start.shape))
        average.names.append(name)
        average.averages.append(start)
        average.sources.append(tensor)
    _AVERAGES[optimizer] = average
    return average


def begin(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Make sure the optimiser has its average before its update (the first one starts it
    from the weights before that update)."""
    _bound(model, optimizer)


def update(model: nn.Module, optimizer: torch.optim.Optimizer, decay: float) -> None:
    """``average = decay * average + (1 - decay) * weights`` after an update, in place."""
    average = _bound(model, optimizer)
    with torch.no_grad():
        torch._foreach_lerp_(average.averages, average.sources, 1.0 - decay)


def state(optimizer: torch.optim.Optimizer) -> dict[str, np.ndarray]:
    """The average as optimiser-state entries ``ema.<name>`` (host numpy); empty without
    one."""
    average = _AVERAGES.get(optimizer)
    if average is None:
        return {}
    if not average.averages:
        return ema_entries(average.pending or {})
    return ema_entries({
        name: tensor.detach().float().cpu().numpy().copy()
        if tensor.dtype == torch.bfloat16 else tensor.detach().cpu().numpy().copy()
        for name, tensor in zip(average.names, average.averages, strict=True)
    })


def restore(optimizer: torch.optim.Optimizer, averages: Mapping[str, np.ndarray]) -> None:
    """Take back the average :func:`state` returned, by weight name
    (:func:`tlcore.stepstate.ema_averages`); it is bound to the model at the next update."""
    if averages:
        _AVERAGES[optimizer] = _Average(dict(averages))
