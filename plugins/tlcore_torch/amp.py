"""Loss scaling for ``16-mixed``: one ``torch.amp.GradScaler`` per optimiser, whose state
travels with the optimiser's (``scaler.scale``, ``scaler.growth_tracker``) so that a resumed
run scales exactly as the interrupted one would have."""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from tlcore_torch.placement import TorchSetup

PREFIX = "scaler."
"""Optimiser-state entries of the loss scaler start with this (parameter entries with a
parameter index)."""

_SCALERS: weakref.WeakKeyDictionary[torch.optim.Optimizer, torch.amp.GradScaler] = (
    weakref.WeakKeyDictionary()
)
_PENDING: weakref.WeakKeyDictionary[torch.optim.Optimizer, dict[str, np.ndarray]] = (
    weakref.WeakKeyDictionary()
)
"""Scaler state restored into an optimiser whose scaler is not made yet (one another plugin's
``tl_make_optimizer`` made): taken when its first ``16-mixed`` step makes it."""


def attach_scaler(
    optimizer: torch.optim.Optimizer, setup: TorchSetup | None
) -> torch.amp.GradScaler | None:
    """Give ``optimizer`` a loss scaler when ``setup`` trains in ``16-mixed``."""
    if setup is None or setup.precision != "16-mixed":
        return None
    scaler = torch.amp.GradScaler(setup.torch_device.type)
    _SCALERS[optimizer] = scaler
    pending = _PENDING.pop(optimizer, None)
    if pending:
        _load(scaler, pending)
    return scaler


def scaler_for(
    optimizer: torch.optim.Optimizer, setup: TorchSetup | None
) -> torch.amp.GradScaler | None:
    """``optimizer``'s loss scaler (made now for a ``16-mixed`` optimiser that has none);
    ``None`` in other precisions."""
    scaler = _SCALERS.get(optimizer)
    return scaler if scaler is not None else attach_scaler(optimizer, setup)


def scaler_state(optimizer: torch.optim.Optimizer) -> dict[str, np.ndarray]:
    """The loss scale and growth tracker of ``optimizer``'s scaler; empty without one."""
    scaler = _SCALERS.get(optimizer)
    if scaler is None or not scaler.is_enabled():
        return {}
    state = scaler.state_dict()
    return {
        PREFIX + "scale": np.array(state["scale"], dtype=np.float64),
        PREFIX + "growth_tracker": np.array(state["_growth_tracker"], dtype=np.int64),
    }


def restore_scaler(optimizer: torch.optim.Optimizer, entries: Mapping[str, np.ndarray]) -> None:
    """Load what :func:`scaler_state` returned. An optimiser that trains in another
    precision ignores it (a ``16-mixed`` checkpoint resumed in bf16 or 32 needs no scale)."""
    if not entries:
        return
    scaler = _SCALERS.get(optimizer)
    if scaler is None:
        _PENDING[optimizer] = dict(entries)
    else:
        _load(scaler, entries)


def _load(scaler: torch.amp.GradScaler, entries: Mapping[str, np.ndarray]) -> None:
    if not scaler.is_enabled():
        return
    state = scaler.state_dict()
    if PREFIX + "scale" in entries:
        state["scale"] = float(np.asarray(entries[PREFIX + "scale"]))
    if PREFIX + "growth_tracker" in entries:
        state["_growth_tracker"] = int(np.asarray(entries[PREFIX + "growth_tracker"]))
    scaler.load_state_dict(state)
