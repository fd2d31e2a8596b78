"""The Keras side of :class:`~tlcore_keras.KerasBackend`: one function per method of
:class:`tlcore.Backend` behind a hook, imported by the first call that needs one.

The base class has checked the backend's name and that the model or optimiser is the Keras
backend's own; loading and seeding, which check the Keras backend first, stay on the class.
"""

from __future__ import annotations

from tlcore_keras.export import export_onnx as export_onnx
from tlcore_keras.flags import network_flags as network_flags
from tlcore_keras.freezing import apply_freeze
from tlcore_keras.model import attach_head as attach_head
from tlcore_keras.state import export_native as export_native
from tlcore_keras.state import get_optimizer_state as get_optimizer_state
from tlcore_keras.state import get_weights as get_weights
from tlcore_keras.state import set_optimizer_state as set_optimizer_state
from tlcore_keras.state import set_weights as set_weights
from tlcore_keras.training import eval_step as eval_step
from tlcore_keras.training import extract_features as extract_features
from tlcore_keras.training import make_optimizer as make_optimizer
from tlcore_keras.training import train_step as train_step

# The imports above, under the names of Backend's methods (``x as x`` re-exports them).
freeze = apply_freeze
