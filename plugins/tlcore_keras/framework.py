"""Import Keras for the ``keras`` backend, checking it runs on TensorFlow.

Keras 3 picks its backend from ``KERAS_BACKEND`` or ``~/.keras/keras.json`` and defaults to
TensorFlow. tlcore's Keras backend needs TensorFlow (its train steps are ``tf.function``\\ s and
its ONNX export converts a TensorFlow graph), and it changes no process-wide environment
variable to get it: when the user chose another Keras backend, it says so instead.
"""

from __future__ import annotations

import os
from types import ModuleType

from tlcore.errors import TlcoreError

_HINT = (
    "tlcore's keras backend runs Keras on TensorFlow: unset KERAS_BACKEND (or set it to "
    "'tensorflow', also in ~/.keras/keras.json) before Python starts, or use --backend torch"
)


def require_keras() -> ModuleType:
    """Import ``keras`` and check that it runs on TensorFlow.

    Returns:
        The ``keras`` module.

    Raises:
        TlcoreError: Keras is set to another backend (``jax``, ``torch``, ...).
    """
    chosen = os.environ.get("KERAS_BACKEND")
    if chosen and chosen.lower() != "tensorflow":
        raise TlcoreError(f"KERAS_BACKEND is {chosen!r}, not 'tensorflow'", _HINT)
    import keras

    running = keras.backend.backend()
    if running != "tensorflow":
        raise TlcoreError(f"Keras runs on {running!r}, not 'tensorflow'", _HINT)
    return keras
