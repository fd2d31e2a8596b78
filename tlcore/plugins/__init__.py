"""Plugins: the manager that loads them, the backend base class, and the core's door to them.

- :mod:`tlcore.plugins.manager` loads every plugin of the ``tlcore`` entry-point group once and
  answers the discovery queries (``backends()``, ``backbones()``, ``plugin_table()``).
- :mod:`tlcore.plugins.calls` is the typed facade the core calls a backend through: one method
  per hook, a required answer that is ``None`` is an error naming the hook and the backend.
"""

from __future__ import annotations

from tlcore.plugins.manager import (
    ENTRY_POINT_GROUP,
    BrokenPlugin,
    backbones,
    backends,
    broken_plugins,
    choices,
    get_manager,
    hook,
    plugin_registered,
    plugin_table,
    register,
    require_backend,
    reset,
    unregister,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "BrokenPlugin",
    "backbones",
    "backends",
    "broken_plugins",
    "choices",
    "get_manager",
    "hook",
    "plugin_registered",
    "plugin_table",
    "register",
    "require_backend",
    "reset",
    "unregister",
]
