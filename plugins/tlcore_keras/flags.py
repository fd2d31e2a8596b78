"""The ``trainable`` flags of a user's own ``keras.Model``, recorded before a run and put back
after it: freezing sets them layer by layer (and the model's own), which the user did not ask
to change. Keras layers hold no train/eval mode of their own (``training`` is a call
argument), so ``trainable`` is all there is to restore."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def network_flags(network: Any) -> Callable[[], None]:
    """Record ``trainable`` of the model and of every layer inside it, nested models'
    layers included; the function returned sets them back, outermost first (setting a
    container's flag sets its children's, so the children's own values come after)."""
    layers = [network, *_layers(network)]
    flags = [(layer, layer.trainable) for layer in layers]

    def restore() -> None:
        for layer, trainable in flags:
            layer.trainable = trainable

    return restore


def _layers(model: Any) -> list[Any]:
    """Every layer under ``model``, depth first, each once."""
    flatten = getattr(model, "_flatten_layers", None)  # Keras's own walk: every sublayer
    if callable(flatten):
        return list(flatten(include_self=False, recursive=True))
    found: list[Any] = []
    seen: set[int] = set()
    stack = list(reversed(getattr(model, "layers", [])))
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        found.append(layer)
        stack.extend(reversed(getattr(layer, "layers", [])))
    return found
