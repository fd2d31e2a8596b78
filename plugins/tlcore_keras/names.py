"""Stable names for the weights of a Keras model, the same in every instance and process.

A weight is named by the path of layer names down to it and its own short name, joined with
``/`` as in Keras' ``variable.path``: ``block_1_expand/kernel``, ``block_0/conv/kernel`` for a
nested model. ``variable.path`` itself is not stable: Keras numbers auto-named layers
process-wide (``dense``, ``dense_7``), so two instances of one architecture disagree. Here a
layer whose name is its class's automatic name (``dense``, ``dense_7``) is renamed by its
position among such layers of its own parent (``dense``, ``dense_1``, ...), the rule Keras uses
inside its own weight files; explicitly named layers keep their names.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import keras


@dataclass(frozen=True)
class WeightEntry:
    """One weight: its stable name, the variable, and the layer that owns it directly."""

    name: str
    variable: Any
    layer: Any

    @property
    def top(self) -> str:
        """The first component of the name: the top-level layer the weight belongs to."""
        return self.name.split("/", 1)[0]


def to_snake_case(name: str) -> str:
    """Keras' automatic layer name for a class name: ``BatchNormalization`` →
    ``batch_normalization``, ``Conv2D`` → ``conv2d``."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def sublayers(layer: Any) -> list[Any]:
    """The direct sub-layers of ``layer``, in definition order (a model's ``layers``)."""
    if isinstance(layer, keras.Model):
        return list(layer.layers)
    return list(layer._flatten_layers(include_self=False, recursive=False))


def is_automatic(name: str, layer: Any) -> bool:
    """True when ``name`` is an automatic name Keras gives ``layer``'s class (``dense_3``)."""
    base = to_snake_case(type(layer).__name__)
    return re.fullmatch(re.escape(base) + r"(_\d+)?", name) is not None


def canonical_names(layers: list[Any]) -> list[str]:
    """Stable names of sibling layers: automatic names renumbered by position among siblings."""
    counts: dict[str, int] = {}
    names = []
    for layer in layers:
        base = to_snake_case(type(layer).__name__)
        if is_automatic(layer.name, layer):
            index = counts.get(base, 0)
            counts[base] = index + 1
            names.append(base if index == 0 else f"{base}_{index}")
        else:
            names.append(layer.name)
    return names


def weight_entries(root: Any) -> list[WeightEntry]:
    """Every weight of ``root`` (trainable or not; no random-seed state), in definition order.

    Names are relative to ``root``. A variable shared by two layers is listed once.

    Example:
        >>> inputs = keras.Input((4,))
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(inputs))
        >>> [e.name for e in weight_entries(model)]
        ['out/kernel', 'out/bias']
    """
    entries: list[WeightEntry] = []
    _walk(root, "", entries, set())
    return entries


def _walk(layer: Any, prefix: str, out: list[WeightEntry], seen: set[int]) -> None:
    children = sublayers(layer)
    inner = {id(v) for child in children for v in child.weights}
    used: set[str] = set()
    for variable in layer.weights:
        if id(variable) in seen or id(variable) in inner:
            continue
        seen.add(id(variable))
        short = _unique(str(variable.name), used)
        out.append(WeightEntry(prefix + short, variable, layer))
    for child, name in zip(children, canonical_names(children), strict=True):
        _walk(child, f"{prefix}{name}/", out, seen)


def _unique(name: str, used: set[str]) -> str:
    candidate, index = name, 1
    while candidate in used:
        candidate, index = f"{name}_{index}", index + 1
    used.add(candidate)
    return candidate


def walk_layers(root: Any) -> Iterator[tuple[Any, list[Any]]]:
    """``(layer, sub-layers)`` for ``root`` and every layer under it, parents first."""
    children = sublayers(root)
    yield root, children
    for child in children:
        yield from walk_layers(child)
