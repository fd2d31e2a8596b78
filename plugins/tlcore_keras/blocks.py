"""Find a Keras network's blocks, the units that ``last_n`` freezing counts from the end.

Keras applications are flat graphs of layers whose names carry their block:
``block_3_expand`` (MobileNetV2), ``block2a_dwconv`` (EfficientNet), ``conv4_block2_1_conv``
(ResNet, DenseNet), ``block4_conv1`` (VGG), ``convnext_tiny_stage_2_block_5_layernorm``
(ConvNeXt), ``expanded_conv_6_project`` (MobileNetV3). The rule, for top-level layers that hold
weights (by their stable names, :mod:`tlcore_keras.names`):

1. A network with a ``tlcore_blocks`` attribute (top-level layer names or name prefixes before
   an ``_``) decides itself.
2. A layer's *key* is its name up to its second token (split at ``_``) that contains a digit,
   when another token follows it and that prefix is not itself a layer's name, else up to its
   first one: ``conv4_block2_1_conv`` → ``conv4_block2``, ``block4_conv1`` → ``block4``,
   ``block4_sepconv1_bn`` → ``block4`` (``block4_sepconv1`` is a layer), ``block_3_expand_BN``
   → ``block_3``, ``Conv_1`` → ``Conv_1``. Automatic names (``conv2d_7``) have no key: their
   number counts instances, not blocks. A key shared by two or more layers is a block; when
   there are at least two such blocks, they are the blocks (layers with a lone key or none,
   such as the stem and ``top_conv``, belong to no block).
3. Otherwise every top-level layer with weights is a block: the layers of a user's network, or
   the sub-models of a nested one.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from tlcore_keras.names import canonical_names, is_automatic, sublayers


@dataclass(frozen=True)
class Blocks:
    """A network's blocks, first to last, and the block of each top-level layer in one."""

    names: tuple[str, ...]
    owner: dict[str, str]

    def block_of(self, top: str) -> str | None:
        """The block of the top-level layer called ``top`` (a stable name), or ``None``."""
        return self.owner.get(top)


def block_key(name: str, layer_names: Collection[str] = ()) -> str | None:
    """The block key of a layer name (rule 2 of the module docstring), or ``None``.

    Args:
        name: the layer's name.
        layer_names: the names of its sibling layers; a prefix that names one of them is
            that layer, not a block.

    Example:
        >>> block_key("conv4_block2_1_conv"), block_key("block4_conv1"), block_key("stem_bn")
        ('conv4_block2', 'block4', None)
    """
    tokens = name.split("_")
    marked = [i for i, token in enumerate(tokens) if any(c.isdigit() for c in token)]
    if not marked:
        return None
    if len(marked) > 1 and marked[1] < len(tokens) - 1:
        deeper = "_".join(tokens[: marked[1] + 1])
        if deeper not in layer_names:
            return deeper
    return "_".join(tokens[: marked[0] + 1])


def top_layers(network: Any) -> list[tuple[str, Any]]:
    """``(stable name, layer)`` of the top-level layers of ``network``, in order."""
    children = sublayers(network)
    return list(zip(canonical_names(children), children, strict=True))


def find_blocks(network: Any) -> Blocks:
    """The blocks of ``network`` by the rule of this module."""
    named = top_layers(network)
    layers = [name for name, layer in named if layer.weights]
    declared = getattr(network, "tlcore_blocks", None)
    if declared is not None:
        return _declared(layers, [str(b) for b in declared])
    all_names = {name for name, _ in named}
    keys = {
        name: None if is_automatic(name, layer) else block_key(name, all_names)
        for name, layer in named
        if layer.weights
    }
    members: dict[str, int] = {}
    for key in keys.values():
        if key is not None:
            members[key] = members.get(key, 0) + 1
    grouped = [key for key, count in members.items() if count > 1]
    if len(grouped) > 1:
        owner = {layer: key for layer, key in keys.items() if key in grouped}
        return Blocks(tuple(grouped), owner)
    return Blocks(tuple(layers), {layer: layer for layer in layers})


def _declared(layers: Sequence[str], blocks: Sequence[str]) -> Blocks:
    owner = {}
    for layer in layers:
        inside = [b for b in blocks if layer == b or layer.startswith(b + "_")]
        if inside:
            owner[layer] = max(inside, key=len)
    return Blocks(tuple(blocks), owner)
