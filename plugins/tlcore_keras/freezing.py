"""Apply a freeze policy to a :class:`~tlcore_keras.model.TransferModel`.

What trains is decided by the framework-free :mod:`tlcore.freezing`; this module lists the
backbone's weights by their stable names and sets Keras' flags accordingly:

- each weight's ``variable.trainable`` says whether it trains (the train step and the
  optimiser take exactly the variables flagged trainable);
- each layer's ``trainable`` is ``True`` when any weight under it trains, so that Keras' own
  ``model.trainable_weights`` (and a later ``model.fit``) agree;
- a BatchNorm layer's ``trainable`` instead says whether it runs in training mode: Keras 3
  BatchNorm uses batch statistics and updates its moving ones only when called with
  ``training=True`` *and* ``trainable`` is set. ``batchnorm: frozen`` turns it off everywhere
  (the Keras transfer-learning guide's rule, kept after unfreezing), ``follow`` where the
  layer's weights are frozen, ``train`` nowhere. A BatchNorm kept in inference mode still
  trains its scale and offset when the plan says so (its variables stay flagged trainable), as
  in the torch backend.

When no backbone weight trains (and BatchNorm is not set to ``train``), the whole backbone runs
in inference mode, dropout included, so training on cached features and on images agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from tlcore.freezing import batchnorm_in_inference, block_of, plan_freeze
from tlcore.interfaces import FreezeReport
from tlcore.recipe import FreezeSpec
from tlcore.recipe.choices import builtin
from tlcore_keras.blocks import Blocks
from tlcore_keras.model import TransferModel
from tlcore_keras.names import WeightEntry, walk_layers


def is_batchnorm(layer: Any) -> bool:
    """True for Keras BatchNormalization layers (and subclasses)."""
    return isinstance(layer, keras.layers.BatchNormalization)


def set_trainable(layer: Any, value: bool) -> None:
    """Set ``layer.trainable`` and, recursively, its sub-layers' and variables' flags.

    Calls the property's setter directly: on TensorFlow, Keras layers skip an attribute
    assignment whose value is already set (``trainable = True`` on a trainable layer), so a
    plain assignment would not reset what lies beneath.
    """
    keras.layers.Layer.trainable.fset(layer, value)


def size(variable: Any) -> int:
    """The number of values in a variable."""
    total = 1
    for dim in variable.shape:
        total *= int(dim)
    return total


def parameter_entries(model: TransferModel) -> tuple[list[WeightEntry], set[str]]:
    """The backbone's parameters (weights created trainable), in definition order.

    A BatchNorm layer without scale and offset is listed by its ``moving_mean``, so that the
    policy decides its mode too; those stand-ins are returned by name as well. Resets every
    layer of the backbone to trainable first.
    """
    set_trainable(model.backbone, True)
    all_entries = model.backbone_entries()
    with_params = {id(e.layer) for e in all_entries if e.variable.trainable}
    entries, stand_ins = [], set()
    for entry in all_entries:
        if entry.variable.trainable:
            entries.append(entry)
        elif (
            is_batchnorm(entry.layer)
            and id(entry.layer) not in with_params
            and entry.name.endswith("/moving_mean")
        ):
            entries.append(entry)
            stand_ins.add(entry.name)
    return entries, stand_ins


def plan_names(
    entries: Sequence[WeightEntry], blocks: Blocks, policy: FreezeSpec
) -> tuple[set[str], tuple[str, ...]]:
    """The names that train under ``policy``, and the blocks holding them.

    Blocks found from layer names (``block_3`` for ``block_3_expand/kernel``) are not path
    prefixes of the weight names, so the plan sees each name behind its block
    (``block_3/block_3_expand/kernel``); a ``pattern`` is matched against the names as
    ``tl_get_weights`` shows them (relative to the backbone).
    """
    grouped = [_grouped(e, blocks) for e in entries]
    names = [e.name for e in entries]
    if policy.policy != "pattern":
        plan = plan_freeze(grouped, blocks.names, policy)
        chosen = set(plan.trainable)
        trainable = {n for n, g in zip(names, grouped, strict=True) if g in chosen}
        return trainable, plan.trainable_blocks
    plan = plan_freeze(names, (), policy)
    trainable = set(plan.trainable)
    owners = {
        block_of(g, blocks.names) for n, g in zip(names, grouped, strict=True) if n in trainable
    }
    return trainable, tuple(b for b in blocks.names if b in owners)


def _grouped(entry: WeightEntry, blocks: Blocks) -> str:
    block = blocks.block_of(entry.top)
    if block is None or entry.name == block or entry.name.startswith(block + "/"):
        return entry.name
    return f"{block}/{entry.name}"


def apply_freeze(model: TransferModel, policy: FreezeSpec) -> FreezeReport | None:
    """Set the trainable flags of ``model`` for ``policy``; count the result (``None`` for a
    policy a plugin registered: that plugin's ``tl_freeze`` applies it).

    The head always trains. Records on the model the variables the next optimiser trains and
    the ``training`` flag for the backbone.
    """
    if policy.policy not in builtin("freeze"):
        return None
    entries, stand_ins = parameter_entries(model)
    trainable, trainable_blocks = plan_names(entries, model.blocks, policy)
    wants: dict[int, bool] = {}
    for entry in entries:
        wants[id(entry.layer)] = wants.get(id(entry.layer), False) or entry.name in trainable
    for layer, _ in walk_layers(model.backbone):
        if is_batchnorm(layer):
            in_inference = batchnorm_in_inference(wants.get(id(layer), False), policy.batchnorm)
            wants[id(layer)] = not in_inference
    _set_layer_flags(model.backbone, wants)
    parameters = [e for e in entries if e.name not in stand_ins]
    for entry in parameters:
        entry.variable.trainable = entry.name in trainable
    set_trainable(model.classifier, True)

    train_backbone = [e.variable for e in parameters if e.name in trainable]
    backbone_trainable = sum(size(v) for v in train_backbone)
    backbone_frozen = sum(size(e.variable) for e in parameters if e.name not in trainable)
    head = list(model.classifier.trainable_weights)
    model.train_variables = [*train_backbone, *head]
    model.backbone_training = backbone_trainable > 0 or policy.batchnorm == "train"
    model.freeze_version += 1
    return FreezeReport(
        trainable=backbone_trainable + sum(size(v) for v in head),
        frozen=backbone_frozen,
        backbone_trainable=backbone_trainable,
        trainable_blocks=trainable_blocks,
    )


def _set_layer_flags(root: Any, wants: dict[int, bool]) -> None:
    """Set ``trainable`` on ``root`` and every layer under it, parents before children (the
    setter recurses); a container is trainable when anything under it is."""
    pairs = list(walk_layers(root))
    decided: dict[int, bool] = {}
    for layer, children in reversed(pairs):
        own = wants.get(id(layer), False)
        decided[id(layer)] = own or any(decided.get(id(c), False) for c in children)
    for layer, _ in pairs:
        set_trainable(layer, decided[id(layer)])
