"""The plugin system: entry points, broken plugins, tracing, and a third-party backbone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import tlcore
from tlcore import plugins
from tlcore.errors import PluginError, TlcoreError
from tlcore.testing import separable

from .conftest import run_tl


def _env(site, **extra):
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path, **extra}


def test_builtin_backend_comes_through_the_entry_point():
    rows = {row["name"]: row for row in plugins.plugin_table()}
    assert rows["torch"]["package"] == "tlcore"
    assert "tl_load_backbone" in rows["torch"]["hooks"]
    assert "torch" in plugins.backends()


def test_tl_plugins_lists_versions_hooks_and_broken_ones(plugin_site):
    out = run_tl("plugins", "--json", env=_env(plugin_site))
    rows = {row["name"]: row for row in json.loads(out.stdout)}
    assert rows["tinynet"]["version"] == "1.2.3"
    assert rows["tinynet"]["hooks"] == ["tl_load_backbone", "tl_register_backbones"]
    assert "a_module_that_does_not_exist" in rows["broken"]["error"]
    assert "tl_load_backbon" in rows["misspelt"]["error"]
    human = run_tl("plugins", env=_env(plugin_site)).stdout
    assert "broken" in human and "BROKEN" in human


def test_tlcore_plugins_variable_limits_what_loads(plugin_site):
    out = run_tl("plugins", "--json", env=_env(plugin_site, TLCORE_PLUGINS="torch,tinynet"))
    assert sorted(row["name"] for row in json.loads(out.stdout)) == ["tinynet", "torch"]


def test_trace_prints_hook_calls(plugin_site):
    out = run_tl("backbones", "--backend", "torch",
                 env=_env(plugin_site, TLCORE_TRACE_PLUGINS="1"))
    assert "[tlcore] tl_register_backbones(backend='torch'" in out.stderr
    assert "'tinynet'" in out.stderr  # the plugins the call reaches
    assert "[tlcore] tl_register_backbones => " in out.stderr  # and what it returned
    assert "tinynet:<width>" in out.stdout


def test_trace_in_process_shows_arguments_and_results(monkeypatch, capsys):
    class Answer:
        @tlcore.hookimpl
        def tl_seed(self, backend, seed):
            return f"seeded {seed}"

    monkeypatch.setenv("TLCORE_TRACE_PLUGINS", "1")
    plugins.reset()
    try:
        with plugins.plugin_registered(Answer(), "answer"):
            plugins.hook().tl_seed(backend="nothing", seed=42)
    finally:
        plugins.reset()
    err = capsys.readouterr().err
    assert "[tlcore] tl_seed(backend='nothing', seed=42) -> " in err and "'answer'" in err
    assert "[tlcore] tl_seed => ['seeded 42']" in err


def test_empty_tlcore_plugins_loads_nothing(monkeypatch):
    monkeypatch.setenv("TLCORE_PLUGINS", "")
    plugins.reset()
    try:
        assert plugins.backends() == {}
        assert plugins.plugin_table() == []
    finally:
        monkeypatch.undo()
        plugins.reset()
    assert "torch" in plugins.backends()


def test_third_party_backbone_trains_through_tl_train(plugin_site, digits_folder, tmp_path):
    out = run_tl(
        "train", digits_folder, "--backbone", "tinynet:8", "--weights", "none",
        "--set", "train.stages.0.freeze.policy=none", "--set", "head.pooling=flatten",
        "--epochs", "1", "--quiet",
        "--out", tmp_path / "run", env=_env(plugin_site),
    )
    assert "done:" in out.stdout
    info = json.loads((tmp_path / "run" / "tlcore.json").read_text())
    assert info["recipe"]["backbone"]["source"] == "tinynet:8"
    assert info["metrics"]["val_accuracy"] > 0.6


def test_misspelt_hook_is_an_error_naming_it():
    class Plugin:
        @tlcore.hookimpl
        def tl_atach_head(self, backend, backbone, head, num_classes):
            return None

    with pytest.raises(PluginError, match="tl_atach_head"):
        plugins.register(Plugin(), "typo")
    assert not plugins.get_manager().has_plugin("typo")


def test_misspelt_hook_argument_is_an_error_naming_it(tl_plugin):
    class Plugin:
        @tlcore.hookimpl
        def tl_freeze(self, backend, model, polcy):
            return None

    with pytest.raises(PluginError, match="polcy") as info:
        tl_plugin(Plugin(), "typo")
    assert "tl_freeze" in info.value.message
    assert not plugins.get_manager().has_plugin("typo")


def test_plugin_registered_for_one_block():
    seen = []

    class Observer:
        @tlcore.hookimpl
        def tl_register_backbones(self, backend, register):
            seen.append(backend)

    with plugins.plugin_registered(Observer(), "observer"):
        plugins.backbones("torch")
        assert plugins.get_manager().has_plugin("observer")
    assert not plugins.get_manager().has_plugin("observer")
    assert seen == ["torch"]


@pytest.mark.tlcore_hooks("tl_register_backends")
def test_unknown_and_uninstalled_backends_are_clear_errors():
    with pytest.raises(TlcoreError, match="unknown backend 'jax'"):
        plugins.require_backend("jax")

    class Fake:
        @tlcore.hookimpl
        def tl_register_backends(self, register):
            from tlcore.interfaces import BackendInfo

            register(BackendInfo("mx", ("mxnet_not_installed",), "pip install mxnet", "x"))

    with plugins.plugin_registered(Fake(), "fake"), pytest.raises(TlcoreError) as info:
        plugins.require_backend("mx")
    assert "not installed" in info.value.message and info.value.hint == "pip install mxnet"


class Recorder:
    """An observer plugin: every event, in order."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    @tlcore.hookimpl
    def tl_on_epoch_end(self, run, stage, epoch, metrics):
        self.events.append(("epoch", stage, epoch, sorted(metrics)))

    @tlcore.hookimpl
    def tl_on_checkpoint(self, run, path):
        self.events.append(("checkpoint", path.exists()))

    @tlcore.hookimpl
    def tl_on_stage_end(self, run, stage, metrics):
        self.events.append(("stage", stage, "val_accuracy" in metrics))

    @tlcore.hookimpl
    def tl_on_export(self, run, fmt, path):
        self.events.append(("export", run.backend, fmt, path.name, path.is_file()))


@pytest.mark.tlcore_hooks("tl_on_epoch_end", "tl_on_checkpoint", "tl_on_stage_end", "tl_on_export")
def test_event_hooks_follow_the_run(tl_plugin, tmp_path):
    pytest.importorskip("torch")
    recorder = Recorder()
    tl_plugin(recorder)
    recipe = {
        "backend": "torch",
        "backbone": {"source": "builtin:simple_cnn", "weights": "none"},
        "train": {"batch_size": 16, "stages": [
            {"name": "head", "epochs": 1, "freeze": {"policy": "all"}},
            {"name": "tune", "epochs": 1, "freeze": {"policy": "none"}},
        ]},
        "data": {"val_split": 0.2},
        "export": {"formats": ["native"]},
    }
    tlcore.fit(separable(32), recipe=recipe, out=tmp_path / "run")
    metrics = ["accuracy", "balanced_accuracy", "f1_macro", "loss", "lr", "val_accuracy",
               "val_balanced_accuracy", "val_f1_macro", "val_loss"]
    assert recorder.events == [
        ("epoch", "head", 1, metrics), ("checkpoint", True), ("stage", "head", True),
        ("epoch", "tune", 1, metrics), ("checkpoint", True), ("stage", "tune", True),
        ("export", "torch", "native", "model.pt", True),
    ]  # fmt: skip


# --- tlcore.testing: what a plugin author's tests use ---------------------------------------


def test_importing_tlcore_testing_imports_no_framework():
    code = (
        "import sys, tlcore.testing, tlcore.testing.pytest_plugin, tlcore.testing.backend\n"
        "bad = [m for m in ('torch', 'tensorflow', 'keras', 'numpy') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_a_plugin_authors_tests_get_the_fixtures(tmp_path):
    """A third party's test file, run by pytest in a fresh process: the fixtures come from the
    ``pytest11`` entry point, and ``tl_plugin`` removes its plugin after the test."""
    (tmp_path / "test_mine.py").write_text(textwrap.dedent("""
        import tlcore
        from tlcore.plugins import backbones, get_manager

        class Lister:
            @tlcore.hookimpl
            def tl_register_backbones(self, backend, register):
                from tlcore.interfaces import BackboneInfo
                register(BackboneInfo("mine:net"))

        def test_registered(tl_plugin, tl_image_folder):
            assert tl_plugin(Lister(), "mine") == "mine"
            assert "mine:net" in [b.source for b in backbones("torch")]
            assert sorted(p.name for p in tl_image_folder.iterdir()) == ["blue", "green", "red"]
            assert len(list((tl_image_folder / "red").glob("*.png"))) == 16

        def test_removed_after():
            assert not get_manager().has_plugin("mine")
    """))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_one_command_runs_the_conformance_suite_on_a_backend():
    """``python -m tlcore.testing torch``, as a third-party backend's author runs it (two
    tests of it here, one of which needs the adapter)."""
    root = os.path.dirname(os.path.dirname(__file__))
    args = ["torch", "--adapter", "tests.adapters:TorchAdapter", "-q", "-p", "no:cacheprovider",
            "-k", "unknown_builtin or users_own_network"]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "tlcore.testing", *args], capture_output=True, text=True, cwd=root
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
