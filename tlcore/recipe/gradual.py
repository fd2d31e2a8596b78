"""Gradual unfreezing (ULMFiT's) as a named schedule: a stage with ``unfreeze: gradual``
becomes the ordinary stages it stands for, when the recipe is built.

The recipe then holds the expanded stages, so ``tl train --dry-run`` shows them and
``run.json`` records them (a resume follows them, and reads them back unchanged).
"""

from __future__ import annotations

import dataclasses

from tlcore.errors import RecipeError
from tlcore.recipe.spec import Recipe, StageSpec

GRADUAL = "gradual"


def expand_gradual(recipe: Recipe) -> Recipe:
    """Each stage with ``unfreeze: gradual`` and ``freeze: {policy: last_n, n: N}`` as N
    stages ``NAME-1`` ... ``NAME-N``: the last block trains, then the last two, ... the last
    N, each with the stage's other settings (its ``epochs`` each).

    Raises:
        RecipeError: the stage's policy is not ``last_n`` with ``n`` >= 1; an expanded name
            is another stage's.

    Example:
        >>> from tlcore.recipe import build_recipe
        >>> recipe = build_recipe(overrides={"train.stages.1.unfreeze": "gradual"})
        >>> [stage.name for stage in recipe.train.stages]
        ['head', 'fine_tune-1', 'fine_tune-2']
    """
    if all(stage.unfreeze != GRADUAL for stage in recipe.train.stages):
        return recipe
    stages: list[StageSpec] = []
    for i, stage in enumerate(recipe.train.stages):
        if stage.unfreeze != GRADUAL:
            stages.append(stage)
            continue
        if stage.freeze.policy != "last_n" or stage.freeze.n < 1:
            raise RecipeError(
                f"train.stages.{i}.unfreeze", stage.unfreeze,
                "gradual with freeze.policy last_n and freeze.n >= 1 (the blocks it unfreezes "
                "one by one), or none",
            )
        stages += [
            dataclasses.replace(stage, name=f"{stage.name}-{k}", unfreeze="none",
                                freeze=dataclasses.replace(stage.freeze, n=k))
            for k in range(1, stage.freeze.n + 1)
        ]
    names = [stage.name for stage in stages]
    if len(set(names)) != len(names):
        raise RecipeError("train.stages", names, "stages with distinct names (gradual "
                          "unfreezing names its stages NAME-1, NAME-2, ...)")
    train = dataclasses.replace(recipe.train, stages=tuple(stages))
    return dataclasses.replace(recipe, train=train)
