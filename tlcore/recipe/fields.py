"""What a recipe field accepts, as its dataclass ``metadata``: checked by
:mod:`tlcore.recipe.build` when a recipe is built."""

from __future__ import annotations

from typing import Any


def choice(*values: str) -> dict[str, Any]:
    """A field's metadata: it takes one of ``values``."""
    return {"choices": values}


def bounds(lo: float | None = None, hi: float | None = None) -> dict[str, Any]:
    """A field's metadata: a number from ``lo`` to ``hi`` (``None``: unbounded)."""
    return {"min": lo, "max": hi}


#: What a stage's ``monitor`` may watch: ``auto`` (the task's default) or a validation metric
#: of a built-in task (:attr:`tlcore.tasks.Task.metric_names`, prefixed ``val_``).
MONITORS = (
    "auto", "val_loss", "val_accuracy", "val_f1_micro", "val_f1_macro", "val_subset_accuracy",
    "val_mae", "val_rmse", "val_r2", "val_balanced_accuracy",
)

#: A stage's ``lr`` that asks for the learning-rate finder (:mod:`tlcore.train.lrfind`).
AUTO_LR = "auto"
