"""The hook contract stays honest: every hook documented, tested, and implemented to spec.

In the style of datasette's ``test_plugin_hooks_have_tests``: adding a hook to
:mod:`tlcore.hookspecs` fails here until it has a docstring that documents it fully and a test
marked ``@pytest.mark.tlcore_hooks("<hook>")`` (a mark the tlcore pytest plugin checks while
the test runs: the hook must really be called).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path
from types import ModuleType

import pytest

import tlcore.testing.suite
import tlcore_keras
import tlcore_torch
from tlcore import hookspecs
from tlcore.testing.pytest_plugin import HOOKS_MARKER

SPEC = f"{hookspecs.PROJECT}_spec"
IMPL = f"{hookspecs.PROJECT}_impl"
HOOKS = {name: f for name, f in vars(hookspecs).items() if hasattr(f, SPEC)}
BUILTIN_PLUGINS = (tlcore_torch.backend, tlcore_keras.backend)
HERE = Path(__file__).parent


def _marked_modules() -> list[ModuleType]:
    """The conformance suite's modules and this folder's test modules that use the mark."""
    suite = tlcore.testing.suite
    modules = [
        importlib.import_module(f"{suite.__name__}.{info.name}")
        for info in pkgutil.iter_modules(suite.__path__)
    ]
    for path in sorted(HERE.glob("test_*.py")):
        if path.stem != Path(__file__).stem and HOOKS_MARKER in path.read_text():
            modules.append(importlib.import_module(f"{__package__}.{path.stem}"))
    return modules


def _hooks_with_tests() -> dict[str, list[str]]:
    covered: dict[str, list[str]] = {}
    for module in _marked_modules():
        for name, test in vars(module).items():
            if not name.startswith("test_") or test.__module__ != module.__name__:
                continue
            for mark in getattr(test, "pytestmark", []):
                if mark.name == HOOKS_MARKER:
                    for hook in mark.args:
                        covered.setdefault(hook, []).append(f"{module.__name__}.{name}")
    return covered


def test_marked_hooks_exist():
    unknown = sorted(set(_hooks_with_tests()) - set(HOOKS))
    assert not unknown, f"tests marked with hooks that do not exist: {unknown}"


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_every_hook_has_a_test(hook):
    assert _hooks_with_tests().get(hook), (
        f"{hook} has no test: mark one that calls it @pytest.mark.{HOOKS_MARKER}({hook!r})"
    )


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_every_hook_is_documented(hook):
    """Type hints, every argument and the return value, when it is called, who answers."""
    function = HOOKS[hook]
    signature = inspect.signature(function)
    doc = " ".join((inspect.getdoc(function) or "").split())
    assert signature.return_annotation is not inspect.Signature.empty, f"{hook}: return type"
    for name, parameter in signature.parameters.items():
        assert parameter.annotation is not inspect.Parameter.empty, f"{hook}: type of {name}"
        assert f":param {name}:" in doc, f"{hook}: the docstring does not document {name!r}"
    assert ":return:" in doc, f"{hook}: the docstring does not say what it returns"
    assert "Called " in doc, f"{hook}: the docstring does not say when it is called"
    if getattr(function, SPEC)["firstresult"]:
        assert "first non-``None`` answer wins" in doc, hook
    else:
        assert "every implementation is called" in doc.lower(), hook


def test_hookspecs_module_is_the_manual():
    """The module docstring walks through a plugin, the rules and the order of the calls."""
    doc = hookspecs.__doc__ or ""
    for needed in ("@tlcore.hookimpl", "entry-points.tlcore", "TLCORE_TRACE_PLUGINS",
                   "TLCORE_PLUGINS", "python -m tlcore.testing"):  # fmt: skip
        assert needed in doc, needed
    order = [h for h in HOOKS if h.startswith(("tl_load", "tl_attach", "tl_freeze", "tl_export"))]
    assert all(f"``{h}``" in doc for h in order)


@pytest.mark.parametrize("plugin", BUILTIN_PLUGINS, ids=lambda p: p.name)
def test_builtin_hookimpls_match_a_spec(plugin):
    """Every ``tl_*`` method of a built-in plugin is a hook implementation of a real hook,
    taking only arguments the spec has (no forgotten ``@hookimpl``, no misspelt name)."""
    functions = {
        name: getattr(plugin, name)
        for name in dir(plugin)
        if name.startswith("tl_") and inspect.ismethod(getattr(plugin, name))
    }
    assert functions
    for name, function in functions.items():
        assert hasattr(function, IMPL), f"{plugin!r}.{name} lacks @hookimpl"
        assert name in HOOKS, f"{plugin!r}.{name} is not a hook"
        spec_args = set(inspect.signature(HOOKS[name]).parameters)
        impl_args = set(inspect.signature(function).parameters)
        assert impl_args <= spec_args, (name, sorted(impl_args - spec_args))
        assert inspect.signature(function).return_annotation is not inspect.Signature.empty
