"""tlcore: transfer learning on Keras and PyTorch with one recipe, shipped as verified ONNX.

``import tlcore`` loads no framework (and not even numpy or pluggy): the API is imported on
first use, and each backend plugin imports its framework only when one of its
hooks is called for its backend.

Example:
    >>> import tlcore
    >>> tlcore.build_recipe(backend="torch", epochs=3).train.stages[0].epochs
    3
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tlcore.errors import DataError, PluginError, RecipeError, TlcoreError

if TYPE_CHECKING:
    from tlcore.api import fit, lr_find, make_recipe, plan, random_baseline
    from tlcore.embeddings import embed
    from tlcore.hookspecs import hookimpl
    from tlcore.plugins.backend import Backend
    from tlcore.recipe import Recipe, build_recipe

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "DataError",
    "PluginError",
    "Recipe",
    "RecipeError",
    "TlcoreError",
    "__version__",
    "build_recipe",
    "embed",
    "fit",
    "hookimpl",
    "lr_find",
    "make_recipe",
    "plan",
    "random_baseline",
]

# Imported on first use, so that ``import tlcore`` (and ``tl --help``) stays cheap: pluggy and
# the recipe's dataclasses cost more than the rest of the package's start-up.
_LAZY = {
    "fit": "tlcore.api",
    "embed": "tlcore.embeddings",
    "lr_find": "tlcore.api",
    "make_recipe": "tlcore.api",
    "plan": "tlcore.api",
    "random_baseline": "tlcore.api",
    "hookimpl": "tlcore.hookspecs",
    "Backend": "tlcore.plugins.backend",
    "Recipe": "tlcore.recipe",
    "build_recipe": "tlcore.recipe",
}


def __getattr__(name: str) -> Any:
    """Import the heavier parts of the API on first use."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tlcore' has no attribute {name!r}")
