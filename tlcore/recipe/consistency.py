"""The recipe's checks across fields, run on each section once its fields are valid alone
(:func:`tlcore.recipe.build.build_recipe` calls :func:`check_consistency` for each)."""

from __future__ import annotations

from typing import Any

from tlcore.classifier import check_head, check_kept_head
from tlcore.errors import RecipeError
from tlcore.recipe.choices import builtin, check
from tlcore.recipe.spec import (
    AUTO_LR,
    BackboneSpec,
    ExportSpec,
    FreezeSpec,
    HeadSpec,
    Recipe,
    TrainSpec,
)


def _is_device(word: str) -> bool:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""
    kind, _, index = word.partition(":")
    return word in ("auto", "cpu", "cuda", "mps") or (kind == "cuda" and index.isdigit())


def check_consistency(obj: Any, path: str) -> None:
    """Check what ties ``obj``'s fields together (a section at ``path``, each field already
    valid alone): a pattern that compiles, distinct stage names, a format plugins know...

    Raises:
        RecipeError: names the field's path.
    """
    prefix = f"{path}." if path else ""
    if isinstance(obj, FreezeSpec) and obj.policy == "pattern":
        import re

        if not obj.pattern:
            raise RecipeError(prefix + "pattern", obj.pattern, "a regular expression")
        try:
            re.compile(obj.pattern)
        except re.error as exc:
            raise RecipeError(prefix + "pattern", obj.pattern, f"a valid regex ({exc})") from None
    if isinstance(obj, BackboneSpec) and not obj.weights:
        raise RecipeError(prefix + "weights", obj.weights, "pretrained, imagenet, none or a path")
    if isinstance(obj, HeadSpec):
        for i, width in enumerate(obj.hidden):
            if width < 1:
                raise RecipeError(f"{prefix}hidden.{i}", width, "a positive layer width")
        check_head(obj.classifier, obj.hidden, prefix)
    if isinstance(obj, TrainSpec):
        if not _is_device(obj.device):
            raise RecipeError(prefix + "device", obj.device, "auto, cpu, cuda, cuda:N or mps")
        if obj.ema >= 1:  # a decay of 1 would never move the average off its start
            raise RecipeError(prefix + "ema", obj.ema, "a decay >= 0 and < 1 (0: no average)")
        if not obj.stages:
            raise RecipeError(prefix + "stages", [], "at least one stage")
        for i, stage in enumerate(obj.stages):
            if stage.lr == AUTO_LR and stage.optimizer == "logistic":
                # The logistic regression takes no steps: there is no rate to search.
                raise RecipeError(f"{prefix}stages.{i}.lr", stage.lr,
                                  "a number (a logistic stage fits its head without a rate)")
        names = [s.name for s in obj.stages]
        if len(set(names)) != len(names):
            raise RecipeError(prefix + "stages", names, "stages with distinct names")
        if not any(stage.epochs for stage in obj.stages):
            # Nothing would train, and the run would export its untouched initial model.
            raise RecipeError(
                prefix + "stages", [s.epochs for s in obj.stages],
                "at least one stage with epochs >= 1 (a stage with epochs 0 is skipped, but "
                "with every stage at 0 nothing trains)",
            )
    if isinstance(obj, Recipe):
        check_kept_head(obj.head.classifier, [s.optimizer for s in obj.train.stages])
        _check_mixing(obj)
    if isinstance(obj, ExportSpec):
        for i, fmt in enumerate(obj.formats):
            if not fmt or not fmt.replace("_", "").isalnum():
                raise RecipeError(f"{prefix}formats.{i}", fmt, "a format name such as onnx")
            if fmt not in builtin("format"):  # a plugin's, known before any training
                check("format", fmt, f"{prefix}formats.{i}")
        if obj.quantize != "none" and "onnx" not in obj.formats:
            raise RecipeError(
                prefix + "quantize", obj.quantize, "none, unless export.formats includes onnx"
            )


def _check_mixing(recipe: Recipe) -> None:
    """Mixup and CutMix mix targets into class probabilities: classification and multilabel
    only (a mixed regression target is a number no image shows)."""
    for i, name in enumerate(recipe.data.augment):
        if name in ("mixup", "cutmix") and recipe.task not in ("classification", "multilabel"):
            raise RecipeError(
                f"data.augment.{i}", name,
                f"an augmentation other than mixup and cutmix for task {recipe.task!r} "
                "(they mix class targets: classification and multilabel only)",
            )
