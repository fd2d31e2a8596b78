"""Vector networks on the Keras backend: ``builtin:mlp`` and a user's own network on vectors.

``builtin:mlp`` maps float32 ``(N, backbone.input_features)`` to ``(N, widths[-1])`` through
``Dense → ReLU`` blocks of ``backbone.widths`` (default ``(256, 128)``), initialised as
torch's ``nn.Linear``; each block (``mlp_<i>``) is a block for ``last_n``. It has no
published weights (``Backbone.pretrained`` False): a network trained on another task comes
in as ``backbone.weights: <its native/weights.npz or model.keras>``, loaded where shapes fit.

A user's ``keras.Model`` (``backbone.model``, or ``file:<model.keras>``) is a vector network
when ``backbone.input_features`` is set (the data holds vectors) and it takes one float input
``(N, features)``. The standardisation lives in front of any of them, in the
:class:`~tlcore_keras.model.TransferModel`; loaders give the identity statistics
(``extra["inputs"]``), which the core replaces with the training split's.
"""

from __future__ import annotations

from typing import Any

import keras

from tlcore.errors import TlcoreError
from tlcore.interfaces import InputSpec, VectorPreprocessing
from tlcore.recipe import BackboneSpec
from tlcore_keras.model import linear

DEFAULT_WIDTHS = (256, 128)
MLP = "mlp"


def vector_inputs(features: int) -> InputSpec:
    """The input spec a vector loader returns: ``features`` floats, no standardisation yet."""
    return InputSpec.vector(VectorPreprocessing.identity(features))


def mlp(features: int, widths: tuple[int, ...] = DEFAULT_WIDTHS) -> keras.Model:
    """``(N, features)`` → ``(N, widths[-1])``: a ``Dense`` (named ``mlp_<i>``) and a ReLU
    per width."""
    inputs = keras.Input((features,), dtype="float32", name="vectors")
    x = inputs
    for i, width in enumerate(widths):
        x = linear(width, int(x.shape[-1]), f"mlp_{i}")(x)
        x = keras.layers.ReLU(name=f"mlp_{i}_relu")(x)
    return keras.Model(inputs, x, name="mlp")


def load_mlp(spec: BackboneSpec) -> tuple[Any, dict[str, Any]]:
    """``builtin:mlp`` for ``spec``: ``(network, extra)``.

    Raises:
        TlcoreError: ``backbone.input_features`` is unset, or a width is not positive.
    """
    if spec.input_features is None:
        raise TlcoreError(
            "builtin:mlp needs vector data: backbone.input_features (the vector length) is "
            "unset",
            "train it on vectors (a .npz with x and y, or a CSV of numeric columns), or set "
            "backbone.input_features",
        )
    widths = tuple(spec.widths) or DEFAULT_WIDTHS
    if any(int(w) < 1 for w in widths):
        raise TlcoreError(f"backbone.widths {list(widths)} holds a width below 1",
                          "give positive layer widths, e.g. [256, 128]")
    network = mlp(int(spec.input_features), widths)
    return network, {"inputs": vector_inputs(int(spec.input_features)), "pretrained": False}


def vector_features(network: Any, spec: BackboneSpec, label: str) -> int | None:
    """The vector length ``network`` takes when it is a vector network for ``spec`` (see
    the module docstring), else ``None``.

    Raises:
        TlcoreError: the data holds vectors but the network cannot take them (integer input,
            several inputs, another length).
    """
    if spec.input_features is None:
        return None
    shapes = [tuple(getattr(t, "shape", ())) for t in (getattr(network, "inputs", None) or ())]
    dtypes = [str(getattr(t, "dtype", "float32")) for t in (getattr(network, "inputs", None) or ())]
    wanted = int(spec.input_features)
    if not shapes:  # a Sequential without keras.Input, never called: no input yet
        raise TlcoreError(
            f"{label} has no input yet (a Sequential model without keras.Input is built only "
            "when first called)",
            f"start it with keras.Input(({wanted},)), or call it once on a batch first",
        )
    if len(shapes) != 1 or len(shapes[0]) != 2 or "int" in dtypes[0] or "bool" in dtypes[0]:
        if len(shapes) == 1 and len(shapes[0]) == 4:
            return None  # an image network: the core refuses it for vector data
        raise TlcoreError(
            f"{label} takes {', '.join(f'{d} {s}' for d, s in zip(dtypes, shapes, strict=True))}"
            f" input, but the data holds float vectors of {wanted} features",
            "give a network with one float keras.Input((features,))",
        )
    if shapes[0][1] not in (None, wanted):
        raise TlcoreError(
            f"{label} takes vectors of {shapes[0][1]} features, the data's have {wanted}",
            "build the network for the data's vector length",
        )
    return wanted
