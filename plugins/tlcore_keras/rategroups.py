"""Layer-wise learning rates for Keras: one Keras optimiser per rate, acting as one.

A Keras optimiser has one learning rate. Layer-wise decay (``layer_decay``) needs a rate per
block, so the stage gets one optimiser per multiplier, each over its own variables: the first
(multiplier 1, the head's) holds the rate the train step assigns, and each other one reads it
times its multiplier (a callable learning rate, evaluated inside the compiled step). Scaling
the gradients instead would be wrong for Adam, whose update does not scale with its gradient.
The multipliers are the core's (:func:`tlcore.schedule.layer_multipliers`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from tlcore.schedule import layer_multipliers
from tlcore_keras.freezing import _grouped
from tlcore_keras.model import TransferModel


class RateGroups:
    """Several Keras optimisers used as one by the train step and the checkpoints.

    Args:
        make: builds one Keras optimiser from a learning rate (a float or a callable).
        rate: the stage's learning rate.
        multipliers: each group's multiplier, the first one 1.
        groups: each group's positions in the stage's variables.
    """

    def __init__(
        self,
        make: Callable[[Any], Any],
        rate: float,
        multipliers: Sequence[float],
        groups: Sequence[Sequence[int]],
    ) -> None:
        lead = make(rate)
        self.optimizers = [lead] + [
            make(lambda m=m: lead.learning_rate * m) for m in multipliers[1:]
        ]
        self.multipliers = tuple(multipliers)
        self.groups = [list(group) for group in groups]

    @property
    def learning_rate(self) -> Any:
        """The stage's rate (the head's group's variable): the step assigns it."""
        return self.optimizers[0].learning_rate

    @property
    def variables(self) -> list[Any]:
        """Every optimiser's variables, group after group (their order is the state's)."""
        return [v for optimizer in self.optimizers for v in optimizer.variables]

    def build(self, variables: Sequence[Any]) -> None:
        """Create each optimiser's state for its group of ``variables``."""
        for optimizer, group in zip(self.optimizers, self.groups, strict=True):
            optimizer.build([variables[i] for i in group])

    def apply_gradients(self, pairs: Iterable[tuple[Any, Any]]) -> None:
        """Apply ``(gradient, variable)`` pairs, given in the stage's variable order, each
        through its group's optimiser."""
        pairs = list(pairs)
        for optimizer, group in zip(self.optimizers, self.groups, strict=True):
            if group:
                optimizer.apply_gradients([pairs[i] for i in group])


def rate_groups(model: TransferModel, variables: Sequence[Any], decay: float) -> tuple[
    list[float], list[list[int]]
]:
    """The multipliers (largest first: the head's 1) and each one's positions in
    ``variables``, from the backbone's blocks as freezing sees them."""
    entries = model.backbone_entries()
    grouped = [_grouped(entry, model.blocks) for entry in entries]
    found = layer_multipliers(grouped, model.blocks.names, decay)
    of_variable = {id(e.variable): m for e, m in zip(entries, found, strict=True)}
    positions: dict[float, list[int]] = {}
    for i, variable in enumerate(variables):  # the head's variables are not the backbone's
        positions.setdefault(of_variable.get(id(variable), 1.0), []).append(i)
    multipliers = sorted(positions, reverse=True)
    if multipliers[0] != 1.0:  # no head variable: the lead still holds the stage's rate
        multipliers.insert(0, 1.0)
        positions[1.0] = []
    return multipliers, [positions[m] for m in multipliers]
