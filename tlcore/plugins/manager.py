"""The plugin manager: loads every plugin from the ``tlcore`` entry-point group, once.

Built-in backends come through the same door as third-party plugins. A plugin that fails to
import, or implements a hook that does not exist, is recorded as broken and skipped; the rest
keeps working. Two environment variables help plugin authors:

- ``TLCORE_PLUGINS=name,other`` loads only those entry points (empty: none).
- ``TLCORE_TRACE_PLUGINS=1`` prints every hook call, its arguments and result to stderr.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pluggy

from tlcore import hookspecs
from tlcore.errors import PluginError, TlcoreError
from tlcore.interfaces import BackboneInfo, BackendInfo, Choice

ENTRY_POINT_GROUP = "tlcore"


@dataclass(frozen=True)
class BrokenPlugin:
    """A plugin that could not be loaded, and why."""

    name: str
    reason: str


_manager: pluggy.PluginManager | None = None
_broken: list[BrokenPlugin] = []


def get_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, with every installed plugin loaded on first use."""
    global _manager
    if _manager is None:
        pm = pluggy.PluginManager(hookspecs.PROJECT)
        pm.add_hookspecs(hookspecs)
        _broken.clear()
        _load_entry_points(pm)
        if os.environ.get("TLCORE_TRACE_PLUGINS"):
            _trace(pm)
        _manager = pm
    return _manager


def hook() -> Any:
    """Shorthand for ``get_manager().hook``: ``hook().tl_load_backbone(...)``."""
    return get_manager().hook


def broken_plugins() -> list[BrokenPlugin]:
    """The plugins that failed to load in this process, with the reason."""
    get_manager()
    return list(_broken)


def register(plugin: object, name: str | None = None) -> str:
    """Register a plugin object or module by hand (entry points are loaded already).

    Raises:
        PluginError: it implements a hook that does not exist, or with wrong arguments.
    """
    pm = get_manager()
    label = name or getattr(plugin, "__name__", None) or type(plugin).__name__
    error = _register_checked(pm, plugin, label)
    if error:
        raise PluginError(f"plugin {label!r} is invalid: {error}", "compare with tlcore.hookspecs")
    return label


def unregister(name: str) -> None:
    """Remove a plugin registered under ``name``."""
    get_manager().unregister(name=name)


@contextmanager
def plugin_registered(plugin: object, name: str | None = None) -> Iterator[str]:
    """Register ``plugin`` for the duration of a ``with`` block (handy in tests)."""
    label = register(plugin, name)
    try:
        yield label
    finally:
        unregister(label)


def reset() -> None:
    """Forget the manager; the next use reloads every entry point (tests use this)."""
    global _manager
    _manager = None


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    wanted = os.environ.get("TLCORE_PLUGINS")
    allowed = None if wanted is None else {n.strip() for n in wanted.split(",") if n.strip()}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if allowed is not None and ep.name not in allowed:
            continue
        if pm.has_plugin(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken third-party plugin must not break tlcore
            _broken.append(BrokenPlugin(ep.name, f"import failed: {type(exc).__name__}: {exc}"))
            continue
        error = _register_checked(pm, plugin, ep.name)
        if error:
            _broken.append(BrokenPlugin(ep.name, error))


def _register_checked(pm: pluggy.PluginManager, plugin: object, name: str) -> str | None:
    """Register and validate one plugin; on failure unregister it and return the reason."""
    try:
        pm.register(plugin, name=name)
    except (pluggy.PluginValidationError, ValueError) as exc:
        return str(exc)
    unknown = [
        impl.function.__name__
        for impls in pm.get_hookcallers(plugin) or []
        for impl in impls.get_hookimpls()
        if impl.plugin is plugin and impls.spec is None
    ]
    if unknown:
        pm.unregister(plugin)
        return "implements unknown hook(s): " + ", ".join(sorted(unknown))
    return None


def _trace(pm: pluggy.PluginManager) -> None:
    def before(hook_name: str, impls: list, kwargs: dict) -> None:
        args = ", ".join(f"{k}={_short(v)}" for k, v in kwargs.items())
        print(f"[tlcore] {hook_name}({args}) -> {[i.plugin_name for i in impls]}", file=sys.stderr)

    def after(outcome: Any, hook_name: str, impls: list, kwargs: dict) -> None:
        try:
            result = outcome.get_result()
        except BaseException as exc:  # report, then let pluggy re-raise
            result = f"raised {type(exc).__name__}: {exc}"
        print(f"[tlcore] {hook_name} => {_short(result)}", file=sys.stderr)

    pm.add_hookcall_monitoring(before, after)


def _short(value: Any) -> str:
    if type(value).__module__ == "numpy":
        return f"array{getattr(value, 'shape', '')}"
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


# --- Queries the core and the CLI share ------------------------------------------------------


def backends() -> dict[str, BackendInfo]:
    """Every backend the loaded plugins provide, by name."""
    found: dict[str, BackendInfo] = {}
    hook().tl_register_backends(register=lambda info: found.setdefault(info.name, info))
    return found


def require_backend(name: str) -> BackendInfo:
    """The backend called ``name``, checked to be provided and installed, without importing it.

    Raises:
        TlcoreError: no plugin provides it, or its framework is not installed.
    """
    available = backends()
    info = available.get(name)
    if info is None:
        known = ", ".join(sorted(available)) or "none (is tlcore installed with pip?)"
        raise TlcoreError(f"unknown backend {name!r}", f"installed backends: {known}")
    missing = [p for p in info.packages if importlib.util.find_spec(p) is None]
    if missing:
        raise TlcoreError(
            f"backend {name!r} needs {', '.join(missing)}, which is not installed",
            info.install_hint,
        )
    return info


def backbones(backend: str) -> list[BackboneInfo]:
    """The backbones the plugins list for ``backend``."""
    found: list[BackboneInfo] = []
    hook().tl_register_backbones(backend=backend, register=found.append)
    return found


def choices(kind: str) -> dict[str, Choice]:
    """The values plugins registered for one of the recipe's open choices (``kind``: see
    :class:`~tlcore.interfaces.Choice`), by name, as the recipe accepts them: the first
    registration of a name wins, and none redefines a built-in value
    (:mod:`tlcore.recipe.choices` says why one is ignored)."""
    from tlcore.recipe.choices import registered  # the recipe knows the built-in values

    return {name: entry.choice for name, entry in registered(kind).items()}


def choice_registrations() -> list[tuple[str, Any]]:
    """``(plugin name, object)`` for every object a plugin passes to ``register`` in
    ``tl_register_choices``, in the order plugins are called (each through the hook, so
    ``TLCORE_TRACE_PLUGINS`` shows it).

    Raises:
        PluginError: a plugin's ``tl_register_choices`` raised; names the plugin.
    """
    pm = get_manager()
    found: list[tuple[str, Any]] = []
    impls = pm.hook.tl_register_choices.get_hookimpls()
    for impl in reversed(impls):  # pluggy calls the last registered first
        others = [i.plugin for i in impls if i is not impl]
        caller = pm.subset_hook_caller("tl_register_choices", remove_plugins=others)
        try:
            caller(register=lambda obj, name=impl.plugin_name: found.append((name, obj)))
        except Exception as exc:
            raise PluginError(
                f"plugin {impl.plugin_name!r} failed in tl_register_choices: "
                f"{type(exc).__name__}: {exc}",
                "the plugin is broken; TLCORE_PLUGINS=... leaves it out",
            ) from exc
    return found


def plugin_table() -> list[dict[str, Any]]:
    """One row per loaded plugin (name, distribution version, hooks, the recipe choices it
    registers, each with ``ignored``: why the recipe does not accept it, or empty) and per
    broken one."""
    pm = get_manager()
    dists = {
        ep.name: (ep.dist.name, ep.dist.version) if ep.dist else (None, None)
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    }
    from tlcore.recipe.choices import registered_choices

    added: dict[str, list[dict[str, Any]]] = {}
    for entry in registered_choices():
        added.setdefault(entry.plugin, []).append(entry.to_dict())
    rows = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda item: str(item[0])):
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        dist, version = dists.get(name, (None, None))
        row = {"name": name, "package": dist, "version": version, "hooks": hooks}
        rows.append({**row, "choices": added.get(name, []), "error": None})
    for bad in _broken:
        dist, version = dists.get(bad.name, (None, None))
        row = {"name": bad.name, "package": dist, "version": version, "hooks": [], "choices": []}
        rows.append({**row, "error": bad.reason})
    return rows
