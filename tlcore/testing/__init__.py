"""Testing tlcore plugins: the backend conformance suite, fixtures, and helpers.

**Run the conformance suite against a backend** (yours, once its plugin is installed)::

    python -m tlcore.testing mybackend
    # the same as: pytest --pyargs tlcore.testing --tlcore-backend mybackend

It checks, through the hooks only, what every backend must do: load ``builtin:simple_cnn``
(the shared spec in :mod:`tlcore.builtins`) and a user's own network, freeze (BatchNorm
statistics untouched while frozen), attach heads, train, match cached features with the full
model, save and resume state, export ONNX that matches the model, and run the core driver end
to end. The two tests that need a user's own network run when you give a
:class:`BackendAdapter` (``--adapter module:object``); the rest need nothing but the hooks.

**Or run it inside your own test suite**, as tlcore does for its built-in backends
(``tests/test_conformance.py``)::

    from tlcore.testing.suite import *  # noqa: F403  (the suite's tests, collected here)

    TLCORE_BACKENDS = ("mybackend",)

**Fixtures for any plugin's tests** come with the pytest plugin that installing tlcore
registers: ``tl_image_folder`` (a tiny image-folder dataset), ``tl_plugin`` (register a
plugin object for one test), ``tl_backend``, ``tl_adapter`` and ``tl_default_run``
(see :mod:`tlcore.testing.pytest_plugin`). Outside pytest,
:func:`plugin_registered` and :func:`write_image_folder` do the same.

Importing this package imports no framework.
"""

from __future__ import annotations

import importlib
from typing import Any

from tlcore.plugins import plugin_registered
from tlcore.testing.adapter import BackendAdapter
from tlcore.testing.backend import BackendUnderTest

__all__ = [
    "BackendAdapter",
    "BackendUnderTest",
    "images",
    "plugin_registered",
    "separable",
    "write_image_folder",
]

_LAZY = {name: "tlcore.testing.data" for name in ("images", "separable", "write_image_folder")}


def __getattr__(name: str) -> Any:
    """The data helpers, imported (with numpy) on first use."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tlcore.testing' has no attribute {name!r}")
