"""The recipe: one frozen dataclass tree that drives a run, from YAML, TOML, flags or kwargs.

Every field is validated when the recipe is built, before any framework is imported; a bad
value raises :class:`~tlcore.errors.RecipeError` naming the field's path, the value and what
is valid. Values come in as nested dicts (from a file), dotted overrides
(``train.stages.1.lr=1e-5``, from ``tl train --set``) or keyword shortcuts
(``tlcore.fit(data, epochs=3)``), merged in that order onto the defaults.

- :mod:`~tlcore.recipe.spec`: the sections and their defaults (the stages' in
  :mod:`~tlcore.recipe.stages`, what a field accepts in :mod:`~tlcore.recipe.fields`);
- :mod:`~tlcore.recipe.files`: reading a recipe file;
- :mod:`~tlcore.recipe.build`: merging and validating (the checks across fields in
  :mod:`~tlcore.recipe.consistency`).
"""

from __future__ import annotations

from tlcore.recipe.build import SHORTCUTS, build_recipe, parse_override
from tlcore.recipe.files import load_recipe_file
from tlcore.recipe.spec import (
    PRETRAINED_WEIGHTS,
    SCRATCH_WARMUP,
    BackboneSpec,
    DataSpec,
    ExportSpec,
    FreezeSpec,
    HeadSpec,
    Recipe,
    StageSpec,
    TrainSpec,
    default_stages,
    follows_default_stages,
    scratch_stage,
)

__all__ = [
    "PRETRAINED_WEIGHTS",
    "SCRATCH_WARMUP",
    "SHORTCUTS",
    "BackboneSpec",
    "DataSpec",
    "ExportSpec",
    "FreezeSpec",
    "HeadSpec",
    "Recipe",
    "StageSpec",
    "TrainSpec",
    "build_recipe",
    "default_stages",
    "follows_default_stages",
    "load_recipe_file",
    "parse_override",
    "scratch_stage",
]
