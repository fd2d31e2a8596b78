"""The stages a run trains and the seeds of their epochs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from tlcore.diagnose import (
    random_backbone_warnings,
)
from tlcore.recipe import (
    Recipe,
    StageSpec,
    follows_default_stages,
    scratch_stage,
)
from tlcore.runfolder import RunFolder, write_json
from tlcore.schedule import describe_lr

if TYPE_CHECKING:
    from tlcore.train.trainer import Trainer


def derive_seed(*parts: int) -> int:
    """A 31-bit seed from the recipe seed, the stage and the epoch: resumable randomness."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0] & 0x7FFFFFFF)


def plan_stages(
    stages: tuple[StageSpec, ...], pretrained: bool
) -> tuple[tuple[StageSpec, ...], list[str]]:
    """The stages a run trains, and the warnings they deserve.

    A pretrained backbone keeps ``stages``. A randomly initialised one trains from scratch:
    the default two stages (up to ``epochs`` and ``lr``) become :func:`scratch_stage`; the
    user's own stages stay, with a warning where they freeze it.
    """
    if pretrained:
        return stages, []
    if follows_default_stages(stages):
        return (scratch_stage(stages),), []
    return stages, random_backbone_warnings(stages)


def record_resumed_recipe(folder: RunFolder, recipe: Recipe, say: Callable[[str], Any]) -> None:
    """Write into ``run.json`` the recipe a resumed run continues with, when it differs from
    the recorded one (``tl train --resume RUN --set train.stages.1.lr=1e-5``: the one change
    a resume takes), so that a later resume or export sees it too; ``say`` a line per stage
    whose learning rate changed."""
    info: dict[str, Any] = folder.info()
    new = recipe.to_dict()
    if info.get("recipe") == new:
        return
    old = info.get("recipe", {}).get("train", {}).get("stages", [])
    for i, (stage, before) in enumerate(zip(recipe.train.stages, old, strict=False)):
        if before.get("lr") != stage.lr:
            say(f"resuming with train.stages.{i}.lr {describe_lr(stage.lr)} (was "
                f"{describe_lr(before['lr'])}): stage {stage.name!r}")
    write_json(folder.run_file, {**info, "recipe": new})


def use_planned_stages(t: Trainer, name: str) -> None:
    """Fit the stages to a randomly initialised backbone (see :func:`plan_stages`); the
    recipe becomes the effective one, in ``run.json`` too, so a resume follows it."""
    planned, warnings = plan_stages(t.recipe.train.stages, t.pretrained)
    for text in warnings:
        t.warn(text)
    if planned == t.recipe.train.stages:
        return
    (stage,) = planned
    t.recipe = dataclasses.replace(
        t.recipe, train=dataclasses.replace(t.recipe.train, stages=planned)
    )
    if not t.resume and t.collective.rank == 0:
        write_json(t.folder.run_file, t.run_info())
    t.progress.message(
        f"{name} is randomly initialised: instead of the two-stage fine-tuning recipe, one "
        f"stage {stage.name!r} trains the whole network from scratch, BatchNorm in training "
        f"mode ({stage.epochs} epochs, {stage.optimizer} at lr {describe_lr(stage.lr)}, "
        f"{stage.schedule} "
        f"after {stage.warmup:.0%} warm-up)"
    )
