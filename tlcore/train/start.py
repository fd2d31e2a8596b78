"""Starting a run: the recipe made absolute and checked against its task, the run folder
locked and recorded, and what a resume must find."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlcore.build import with_default_backbone
from tlcore.data import Dataset, load_datasets
from tlcore.data.fingerprint import check_resume_data, data_fingerprint
from tlcore.errors import RecipeError
from tlcore.interfaces import InputSpec, VectorPreprocessing
from tlcore.recipe import Recipe
from tlcore.train.balance import check_balance
from tlcore.train.epoch import check_monitors

if TYPE_CHECKING:
    from tlcore.progress import Progress
    from tlcore.tasks import Task
    from tlcore.train.trainer import Trainer


def start_run(t: Trainer) -> None:
    """Say what reading the data found, lock ``t``'s run folder and record the run
    (``run.json``, ``data.json``); a resume checks first that the data is still the data
    the run started with.

    A resume of a run that stopped before its first checkpoint, and a new run in its folder,
    start it again from the beginning: ``t.resume`` is then false.

    Raises:
        TlcoreError: the folder is in use or holds something else
            (:meth:`tlcore.runfolder.RunFolder.start`).
        DataError: the data changed since the run started and ``t.data_changed_ok`` is not
            set, or its classes changed.
    """
    for text in (*t.train_set.warnings, *t.val_set.warnings):
        t.warn(text)
    current = data_fingerprint(t.train_set, t.val_set)
    how = t.folder.start(t.run_info(), resume=t.resume, data=current)
    t.resume = how == "resume"
    if t.resume:
        recorded = t.folder.recorded_data()
        run = t.folder.path
        for text in check_resume_data(recorded, current, changed_ok=t.data_changed_ok, run=run):
            t.warn(text)
    elif how == "again":
        t.progress.message(
            f"{t.folder.path} holds a run that stopped before its first checkpoint: "
            "starting it again from the beginning"
        )


def absolute_paths(recipe: Recipe) -> Recipe:
    """The recipe with its data folders made absolute, so a resume works from anywhere."""
    paths = {
        f"data.{name}": str(Path(value).resolve())
        for name in ("path", "labels", "val_path")
        if (value := getattr(recipe.data, name)) is not None
    }
    return recipe.replace(**paths) if paths else recipe


def check_task(task: Task, recipe: Recipe) -> None:
    """What the recipe asks must suit its task (the stages' ``monitor``, quantisation) and
    the installed onnx (the opset), before any data is read or framework imported."""
    check_monitors(recipe.train.stages, task)
    check_balance(recipe, task)
    if "onnx" in recipe.export.formats:
        from tlcore.bundle.graph import check_opset

        check_opset(recipe.export.opset)
    if recipe.export.quantize != "none" and task.quality_metric is None:
        raise RecipeError(
            "export.quantize",
            recipe.export.quantize,
            f"none: task {task.name} cannot be quantised (no metric in [0, 1] to check the "
            "int8 model against the float one)",
        )


def vector_input(train: Dataset) -> InputSpec:
    """What a vector network takes: the training vectors' length, and their statistics for
    the standardisation the model applies (:meth:`VectorPreprocessing.of`)."""
    vectors = train.vectors(np.arange(len(train)))  # type: ignore[attr-defined]
    return InputSpec.vector(VectorPreprocessing.of(vectors))


def with_input_features(recipe: Recipe, spec: InputSpec | None) -> Recipe:
    """The recipe with ``backbone.input_features`` set to the data's vector length (for
    vector data; other recipes are returned as they are).

    Raises:
        RecipeError: the recipe names another length than the data's.
    """
    if spec is None:
        return recipe
    length = spec.shape[0]
    given = recipe.backbone.input_features
    if given is not None and given != length:
        raise RecipeError(
            "backbone.input_features", given,
            f"{length}, the length of the data's vectors (or leave it unset)",
        )
    return recipe.replace(**{"backbone.input_features": length})


def read_data(recipe: Recipe, data: Any, task: Task) -> tuple[Dataset, Dataset]:
    """``(train, val)``: the caller's own pair of datasets, or what the recipe's data section
    (or ``data``, arrays) gives (:func:`tlcore.data.load_datasets`)."""
    if isinstance(data, tuple) and all(isinstance(d, Dataset) for d in data):
        task.check_targets(data[0].labels)
        return data
    return load_datasets(recipe.data, recipe.train.seed, data, task)


def resolve_recipe(
    recipe: Recipe, modality: str, vectors: InputSpec | None, progress: Progress,
    train: int, val: int,
) -> Recipe:
    """The recipe a run records: the default backbone for the data's modality, a vector
    network's input length, absolute data paths; says what it chose and when nothing is held
    out for validation."""
    resolved = absolute_paths(
        with_default_backbone(with_input_features(recipe, vectors), modality)
    )
    if recipe.backbone.source is None and recipe.backbone.model is None:
        progress.message(
            f"no backbone given: using {resolved.backbone.source} "
            f"(weights: {resolved.backbone.weights})"
        )
    if not val and resolved.data.val_split is None:
        progress.message(
            f"{train} {modality}s: too few to hold out a validation set that measures "
            "anything, so all of them train and the run reports training accuracy; measure "
            "the model on other data with 'tl eval' (or pass --val or --val-split)"
        )
    return resolved
