"""tlcore's pytest plugin: the conformance suite's options and the fixtures for plugin tests.

Registered through the ``pytest11`` entry point, so it is active wherever tlcore is
installed. It imports no framework and, until a fixture is used, not even numpy.

Options:
    ``--tlcore-backend NAME`` (repeatable, or comma-separated): the backends the suite runs on;
    by default every installed one. ``--tlcore-adapter module:object``: a
    :class:`~tlcore.testing.BackendAdapter` (or its class) for those backends.

Fixtures:
    ``tl_backend``: a :class:`~tlcore.testing.BackendUnderTest`, one per backend.
    ``tl_adapter``: the :class:`~tlcore.testing.BackendAdapter` for it.
    ``tl_image_folder``: a tiny image-folder dataset, written once per session.
    ``tl_plugin``: registers a plugin object for one test.
    ``tl_default_run``: the default recipe trained once per backend on ``tl_image_folder``.

Marker:
    ``@pytest.mark.tlcore_hooks("tl_freeze", ...)`` names the hooks a test exercises; the
    test fails if one of them was not called while it ran (tests/test_hookspecs.py checks
    that every hook has such a test).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tlcore.testing.adapter import BackendAdapter
from tlcore.testing.backend import BackendUnderTest
from tlcore.testing.run import DefaultRuns

HOOKS_MARKER = "tlcore_hooks"

# The suite's asserts explain themselves also where a project imports it into its own module.
pytest.register_assert_rewrite("tlcore.testing.suite")


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--tlcore-backend`` and ``--tlcore-adapter``."""
    group = parser.getgroup("tlcore", "tlcore backend conformance suite")
    group.addoption(
        "--tlcore-backend",
        action="append",
        default=[],
        metavar="NAME",
        help="run the conformance suite on this backend (repeatable, or a,b); "
        "default: every installed backend",
    )
    group.addoption(
        "--tlcore-adapter",
        default=None,
        metavar="MODULE:OBJECT",
        help="a tlcore.testing.BackendAdapter (or its class) for the backends under test",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``tlcore_hooks`` marker."""
    config.addinivalue_line(
        "markers",
        f"{HOOKS_MARKER}(*names): the tlcore hooks this test exercises; "
        "the test fails if one is not called",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One test per backend, for every test that takes ``tl_backend``.

    The backends are, in order of precedence: the module's ``TLCORE_BACKENDS`` tuple (a
    project's own test module that imports the suite), ``--tlcore-backend``, or every backend
    an installed plugin provides.
    """
    if "tl_backend" not in metafunc.fixturenames:
        return
    names = getattr(metafunc.module, "TLCORE_BACKENDS", None) or _backends_option(metafunc.config)
    if not names:
        from tlcore.plugins import backends

        names = sorted(backends())
    metafunc.parametrize("tl_backend", list(names), indirect=True)


def _backends_option(config: pytest.Config) -> list[str]:
    values = config.getoption("--tlcore-backend", default=[]) or []
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Fail a ``tlcore_hooks`` test that did not call every hook it names."""
    mark = item.get_closest_marker(HOOKS_MARKER)
    if mark is None:
        return (yield)
    from tlcore.plugins import get_manager

    called: set[str] = set()
    undo = get_manager().add_hookcall_monitoring(
        lambda name, impls, kwargs: called.add(name), lambda *args: None
    )
    try:
        result = yield
    finally:
        undo()
    missing = sorted(set(mark.args) - called)
    if missing:
        raise AssertionError(f"marked {HOOKS_MARKER} but never called: {', '.join(missing)}")
    return result


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def tl_backend(request: pytest.FixtureRequest) -> BackendUnderTest:
    """The backend under test (parametrised; skipped when its packages are not installed)."""
    from tlcore.plugins import backends

    name = request.param
    if name not in backends():
        pytest.fail(f"no installed plugin provides the backend {name!r}; see 'tl plugins'")
    backend = BackendUnderTest(name)
    for package in backend.info().packages:
        pytest.importorskip(package)
    return backend


@pytest.fixture
def tl_adapter(request: pytest.FixtureRequest) -> BackendAdapter:
    """The native side of the backend under test; override this fixture to provide one.

    Without an override it is ``--tlcore-adapter``'s object, or a bare
    :class:`BackendAdapter` (the tests that need it are then skipped).
    """
    spec = request.config.getoption("--tlcore-adapter", default=None)
    if not spec:
        return BackendAdapter()
    module, _, attr = spec.partition(":")
    adapter = getattr(importlib.import_module(module), attr or "adapter")
    return adapter() if isinstance(adapter, type) else adapter


@pytest.fixture(scope="session")
def tl_image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny image-folder dataset (3 classes x 16 PNGs of 32x32), written once per session.

    See :func:`tlcore.testing.write_image_folder`; treat it as read-only.
    """
    from tlcore.testing.data import write_image_folder

    return write_image_folder(tmp_path_factory.mktemp("tl-images") / "images")


@pytest.fixture
def tl_plugin() -> Iterator[Callable[..., str]]:
    """Register plugins for one test: ``tl_plugin(MyPlugin())``; all removed after the test.

    Takes a plugin object or module and an optional name; returns the name it was registered
    under. An invalid plugin (a misspelt hook) fails with :class:`tlcore.PluginError`.
    """
    from tlcore.plugins import plugin_registered

    with ExitStack() as stack:

        def register(plugin: object, name: str | None = None) -> str:
            return stack.enter_context(plugin_registered(plugin, name))

        yield register


@pytest.fixture(scope="session")
def tl_default_run(tl_image_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> DefaultRuns:
    """``tl_default_run("torch")``: the default recipe trained once per backend (see
    :class:`~tlcore.testing.run.DefaultRuns`)."""
    return DefaultRuns(tl_image_folder, tmp_path_factory.mktemp("tl-default-runs"))
