"""What a run would do, without training or writing anything (``tl train --dry-run``): the
resolved recipe, the data, the backbone, each stage's trainable and frozen parameters, epochs
and steps.

It reads the data and builds the model as the run would (so a bad recipe, data or backbone
fails here as it would there), applies each stage's freeze policy in turn to count, and stops.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tlcore.build import build_model
from tlcore.freezing import resolve_batchnorm
from tlcore.schedule import AUTO_LR, describe_lr, stage_epochs
from tlcore.train.processes import join
from tlcore.train.stages import plan_stages
from tlcore.train.steps import steps_per_epoch

if TYPE_CHECKING:
    from tlcore.train.trainer import Trainer


@dataclass(frozen=True)
class RunPlan:
    """A run's plan. ``stages``: per stage its name, ``trainable`` and ``frozen`` parameter
    counts, ``epochs``, ``steps`` and ``lr``; ``warnings``: what the run would warn of at
    its start."""

    recipe: dict[str, Any]
    backend: str
    backbone: str
    train: str
    val: str
    steps_per_epoch: int
    stages: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_text(self) -> str:
        """The lines ``tl train --dry-run`` prints: the resolved recipe as YAML, then the
        plan."""
        import yaml

        lines = [
            "# the resolved recipe",
            yaml.safe_dump(self.recipe, sort_keys=False).rstrip("\n"),
            "# the plan",
            f"backend {self.backend}, backbone {self.backbone}",
            f"training data: {self.train}",
            f"validation data: {self.val or 'none held out'}",
            f"{self.steps_per_epoch} steps per epoch ({_batch_text(self.recipe['train'])})",
        ]
        for stage in self.stages:
            lines.append(
                f"stage {stage['name']}: {stage['trainable']:,} trainable / "
                f"{stage['frozen']:,} frozen parameters, {stage['epochs']} epochs, "
                f"{stage['steps']} steps, lr {describe_lr(stage['lr'])}"
                + (" (the learning-rate finder's, at the stage's start)"
                   if stage["lr"] == AUTO_LR else "")
            )
        lines += [f"warning: {text}" for text in self.warnings]
        return "\n".join(lines)


def _batch_text(train: dict[str, Any]) -> str:
    """``batch size 32``, or with accumulation ``batch size 32 × 4 accumulated = effective
    batch 128``."""
    batch, accumulate = train["batch_size"], train.get("accumulate", 1)
    if accumulate == 1:
        return f"batch size {batch}"
    return f"batch size {batch} × {accumulate} accumulated = effective batch {batch * accumulate}"


def plan_run(t: Trainer) -> RunPlan:
    """The plan of the run ``t`` would train (nothing is written, nothing trains)."""
    join(t)
    with t.collective.scope():
        model, backbone = build_model(
            t.recipe, t.num_outputs, t.progress, t.modality, t.vector_input
        )
    stages, warnings = plan_stages(t.recipe.train.stages, backbone.pretrained)
    # Steps are optimiser steps, of the effective batch (batch_size × accumulate).
    batch = t.recipe.train.batch_size * t.recipe.train.accumulate
    per_epoch = steps_per_epoch(len(t.train_set), batch)
    rows = []
    for stage in stages:
        report = t.calls.freeze(model, resolve_batchnorm(stage.freeze, backbone.pretrained))
        epochs = stage_epochs(stage, len(t.train_set), batch)
        rows.append({"name": stage.name, "trainable": report.trainable,
                     "frozen": report.frozen, "epochs": epochs, "steps": epochs * per_epoch,
                     "lr": stage.lr})
    return RunPlan(
        recipe=t.recipe.to_dict(), backend=t.backend, backbone=backbone.name,
        train=t.train_set.describe(), val=t.val_set.describe() if len(t.val_set) else "",
        steps_per_epoch=per_epoch, stages=rows, warnings=warnings,
    )
