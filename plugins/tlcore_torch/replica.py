"""``DistributedDataParallel`` for a stage: the wrapper a distributed train step runs through.

The optimiser is made anew after every freeze, so the wrapper is tied to it: the first step
with a new optimiser (or a new kind of batch) wraps again, over what trains now. A model has
at most one wrapper alive, because a wrapper's gradient hooks stay on the parameters as long
as it lives, and two would reduce every gradient twice. Cached-feature batches wrap the head
alone (the backbone never runs); image batches the whole model. Evaluation, feature
extraction and export use the bare model: they run no collective operation.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

if TYPE_CHECKING:
    from tlcore_torch.placement import TorchSetup

_SLOT = "_tl_replica"
_WRAPPED: weakref.WeakSet[nn.Module] = weakref.WeakSet()


class _Replica:
    """The wrapper of a model for one optimiser and one kind of batch. Never copied with
    the model (an exported copy is a plain module)."""

    def __init__(self, optimizer: torch.optim.Optimizer, features: bool, wrapper: nn.Module):
        self.optimizer = weakref.ref(optimizer)
        self.features = features
        self.wrapper = wrapper

    def __deepcopy__(self, memo: dict[int, Any]) -> None:
        return None


def replica(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    features: bool,
    setup: TorchSetup | None,
) -> tuple[nn.Module | None, int]:
    """The ``DistributedDataParallel`` wrapper a train step of ``model`` runs through, and
    the number of processes it averages gradients over; ``(None, 1)`` in one process (or for
    a model built outside a setup's scope).

    Wrapping is a collective operation (rank 0's weights are broadcast to the others), which
    every rank reaches at the same step.
    """
    world = setup.collective.world_size if setup is not None else 1
    if setup is None or world == 1:
        return None, 1
    current = model.__dict__.get(_SLOT)
    if current is not None and current.optimizer() is optimizer and current.features == features:
        return current.wrapper, world
    model.__dict__[_SLOT] = None  # the old wrapper, and its hooks, go before the new one comes
    del current
    device = setup.torch_device
    module = model.head if features else model
    wrapper = DistributedDataParallel(
        module,
        device_ids=[device.index] if device.type == "cuda" else None,
        # A backbone may hold parameters its output never uses (a transformer's pooler): a
        # static graph finds them on the first step instead of failing on the second.
        static_graph=not features,
    )
    model.__dict__[_SLOT] = _Replica(optimizer, features, wrapper)
    _WRAPPED.add(model)
    return wrapper, world


def release_all() -> None:
    """Drop every model's wrapper, before the process group goes: a wrapper that outlives
    the group aborts the process at exit ("terminate called without an active exception")."""
    for model in list(_WRAPPED):
        model.__dict__[_SLOT] = None
    _WRAPPED.clear()
