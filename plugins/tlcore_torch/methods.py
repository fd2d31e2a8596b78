"""The torch side of :class:`~tlcore_torch.TorchBackend`: one function per method of
:class:`tlcore.Backend` behind a hook, imported by the first call for the ``torch`` backend.

The base class has checked the backend's name and that the model or optimiser is torch's own.
"""

from __future__ import annotations

import torch

from tlcore_torch.export import export_onnx as export_onnx
from tlcore_torch.flags import network_flags as network_flags
from tlcore_torch.freezing import apply_freeze
from tlcore_torch.model import attach_head as attach_head
from tlcore_torch.placement import setup as setup
from tlcore_torch.sources import load_backbone as load_backbone
from tlcore_torch.state import export_native as export_native
from tlcore_torch.state import get_optimizer_state as get_optimizer_state
from tlcore_torch.state import get_weights as get_weights
from tlcore_torch.state import set_optimizer_state as set_optimizer_state
from tlcore_torch.state import set_weights as set_weights
from tlcore_torch.training import eval_step as eval_step
from tlcore_torch.training import extract_features as extract_features
from tlcore_torch.training import make_optimizer as make_optimizer
from tlcore_torch.training import train_step as train_step

# The imports above, under the names of Backend's methods (``x as x`` re-exports them).
freeze = apply_freeze


def seed(value: int) -> None:
    """Seed torch's generators (``torch.manual_seed``)."""
    torch.manual_seed(value)
