"""The ``tl`` command line. Importing it loads no framework; commands import lazily.

- :mod:`~tlcore.cli.app`: the command group, error handling and :func:`main`;
- :mod:`~tlcore.cli.training`: ``tl train`` (over :func:`tlcore.fit`), ``tl demo`` and
  ``tl recipe``;
- :mod:`~tlcore.cli.runs`: ``tl eval``, ``tl predict``, ``tl export``, ``tl embed``;
- :mod:`~tlcore.cli.listing`: ``tl plugins``, ``tl backbones``;
- :mod:`~tlcore.cli.lrfind`: ``tl lr-find`` (over :func:`tlcore.lr_find`).
"""

from __future__ import annotations

from tlcore.cli.app import cli, main
from tlcore.cli.listing import backbones, plugins
from tlcore.cli.lrfind import lr_find
from tlcore.cli.runs import embed, eval_, export, predict
from tlcore.cli.training import demo, recipe, train

__all__ = [
    "backbones", "cli", "demo", "embed", "eval_", "export", "lr_find", "main", "plugins",
    "predict", "recipe", "train",
]
