"""tlcore: transfer learning on Keras and PyTorch with one recipe, shipped as verified ONNX.

``import tlcore`` loads no framework: each backend plugin imports its framework only when one
of its hooks is called for its backend.
"""

from __future__ import annotations

from tlcore.errors import DataError, PluginError, RecipeError, TlcoreError
from tlcore.hookspecs import hookimpl
from tlcore.recipe import Recipe, build_recipe

__version__ = "0.1.0"

__all__ = [
    "DataError",
    "PluginError",
    "Recipe",
    "RecipeError",
    "TlcoreError",
    "__version__",
    "build_recipe",
    "hookimpl",
]
