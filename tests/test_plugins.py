"""The plugin system: entry points, broken plugins, tracing, and a third-party backbone."""

from __future__ import annotations

import json
import os

import pytest

import tlcore
from tlcore import plugins
from tlcore.errors import PluginError, TlcoreError

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
    assert "tinynet:<width>" in out.stdout


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
