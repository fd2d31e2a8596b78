"""Whole runs through the core driver (``tlcore.fit``), shared by the suite's driver tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlcore.recipe import build_recipe


def _two_stages() -> list[dict[str, Any]]:
    stages = build_recipe().to_dict()["train"]["stages"]
    for stage in stages:
        stage["freeze"]["batchnorm"] = "frozen"
        stage["min_steps"] = 0  # one epoch per stage on the suite's 48 images, not 100
    return stages


SMALL_RECIPE: dict[str, Any] = {
    "backbone": {"source": "builtin:simple_cnn", "weights": "none"},
    "train": {"batch_size": 16, "seed": 3, "stages": _two_stages()},
    "data": {"val_split": 0.2},  # the suite's 48 images: the adaptive default holds none out
}
"""The default recipe on ``builtin:simple_cnn``: the default stages, formats and freezing.

``simple_cnn`` has no published weights, and on a randomly initialised backbone the default
stages give way to one stage that trains everything from scratch. The suite tests the
two-stage transfer path, so its stages are the defaults as a pretrained backbone runs them
(``batchnorm: frozen``, which ``auto`` means there); the run warns that they freeze a random
backbone."""


@dataclass
class Run:
    """A finished run: what ``tlcore.fit`` returned, its folder, and its ``tlcore.json``."""

    result: Any
    path: Path
    info: dict[str, Any]


class DefaultRuns:
    """``runs("torch")``: :data:`SMALL_RECIPE` (one epoch per stage) trained on ``data`` once
    per backend, in a folder under ``root``."""

    def __init__(self, data: Path, root: Path) -> None:
        self.data = data
        self.root = root
        self._runs: dict[str, Run] = {}

    def recipe(self, backend: str) -> dict[str, Any]:
        """The recipe the runs use, for ``backend``."""
        return {**SMALL_RECIPE, "backend": backend}

    def __call__(self, backend: str) -> Run:
        if backend not in self._runs:
            import tlcore

            out = self.root / backend
            result = tlcore.fit(self.data, recipe=self.recipe(backend), out=out, epochs=1)
            info = json.loads((out / "tlcore.json").read_text())
            self._runs[backend] = Run(result, out, info)
        return self._runs[backend]
