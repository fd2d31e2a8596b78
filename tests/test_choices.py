"""Open recipe choices: plugins register values (``tl_register_choices``), the recipe accepts
them before any framework is imported, and a run carries them out through the plugin's hooks.

Real plugins registered by hand, the real PyTorch (and Keras) backends; no mocks.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import tlcore
from tlcore.cli import cli
from tlcore.data import augment
from tlcore.errors import DataError, PluginError, RecipeError
from tlcore.interfaces import Choice, FreezeReport
from tlcore.plugins import choices, plugin_registered, plugin_table
from tlcore.plugins.calls import BackendCalls
from tlcore.recipe import BackboneSpec, FreezeSpec, HeadSpec, StageSpec, build_recipe
from tlcore.recipe.choices import (
    CARRIED_OUT_BY_THE_CORE,
    OPEN_FIELDS,
    builtin,
    field_paths,
    registered,
)
from tlcore.schedule import learning_rate

FRAMEWORKS = ("torch", "tensorflow", "keras")


class Registers:
    """A plugin that registers the choices it is given, and implements none of them."""

    def __init__(self, *items: object) -> None:
        self.items = items

    @tlcore.hookimpl
    def tl_register_choices(self, register):
        for item in self.items:
            register(item)


class BitFit:
    """The freeze policy ``bitfit`` for PyTorch: only the backbone's biases (and the head)
    train; it snapshots the backbone when it freezes it, so a test can see what trained."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.before: dict[str, object] = {}

    @tlcore.hookimpl
    def tl_register_choices(self, register):
        register(Choice("freeze", "bitfit", "train only the backbone's biases"))

    @tlcore.hookimpl
    def tl_freeze(self, backend, model, policy):
        if backend != "torch" or policy.policy != "bitfit":
            return None
        self.calls.append(policy.batchnorm)
        backbone = model.backbone
        for name, param in backbone.named_parameters():
            param.requires_grad_(name.endswith("bias"))
        for param in model.head.parameters():
            param.requires_grad_(True)
        model.keep_in_inference(["backbone"])
        self.before = {k: v.detach().clone() for k, v in backbone.state_dict().items()}
        params = list(model.parameters())
        trainable = sum(p.numel() for p in params if p.requires_grad)
        in_backbone = sum(p.numel() for p in backbone.parameters() if p.requires_grad)
        return FreezeReport(trainable, sum(p.numel() for p in params) - trainable, in_backbone)


def _path(kind: str) -> str:
    """The first recipe path of ``kind``, as a dotted override (stage 0)."""
    return field_paths(kind)[0].replace(".N.", ".0.")


def _value(kind: str, name: str) -> object:
    return [name] if kind == "augmentation" else name


def _choice(kind: str, name: str) -> Choice:
    """A registration of ``name`` for ``kind``, with the function the core needs for a schedule
    or an augmentation."""
    value = (lambda *args: args[0]) if kind in CARRIED_OUT_BY_THE_CORE else None
    return Choice(kind, name, "a plugin's", value)


KINDS = [kind for kind in OPEN_FIELDS if builtin(kind)]  # ``task`` once the recipe has it


# --- the map and the recipe -------------------------------------------------------------------


def test_every_kind_maps_to_a_choice_field_and_its_paths():
    assert set(OPEN_FIELDS) == {
        "freeze", "pooling", "optimizer", "schedule", "augmentation", "task"
    }  # fmt: skip
    assert field_paths("freeze") == ["train.stages.N.freeze.policy"]
    assert field_paths("augmentation") == ["data.augment"]
    assert builtin("freeze") == ("all", "none", "last_n", "pattern")
    assert {"freeze", "pooling", "optimizer", "schedule", "augmentation"} <= set(KINDS)
    for kind in KINDS:
        section, name = OPEN_FIELDS[kind]
        field = {f.name: f for f in dataclasses.fields(section)}[name]
        assert field.metadata["choices"] == builtin(kind), kind


@pytest.mark.tlcore_hooks("tl_register_choices")
@pytest.mark.parametrize("kind", KINDS)
def test_a_registered_name_builds_and_an_unknown_one_lists_every_name(kind):
    path = _path(kind)
    with pytest.raises(RecipeError) as before:
        build_recipe({}, {path: _value(kind, "extra")})
    assert before.value.path == path + (".0" if kind == "augmentation" else "")
    assert "'extra'" in str(before.value)
    assert ", ".join(builtin(kind)) in str(before.value)
    assert "no installed plugin adds" in str(before.value)

    with plugin_registered(Registers(_choice(kind, "extra")), "extras"):
        recipe = build_recipe({}, {path: _value(kind, "extra")})
        assert "extra" in json.dumps(recipe.to_dict())
        assert build_recipe(recipe.to_dict()) == recipe  # a round trip validates again
        with pytest.raises(RecipeError) as typo:
            build_recipe({}, {path: _value(kind, "extar")})
    message = str(typo.value)
    assert ", ".join(builtin(kind)) in message
    assert "from plugins: extra (extras)" in message
    assert "did you mean 'extra'" in message


@pytest.mark.tlcore_hooks("tl_register_choices")
def test_a_plugin_freeze_policy_is_accepted_in_every_stage():
    stages = [{"name": "a", "freeze": {"policy": "bitfit"}}, {"name": "b"}, {"name": "c"}]
    with plugin_registered(BitFit(), "bitfit"):
        recipe = build_recipe(
            {"train": {"stages": stages}}, {"train.stages.2.freeze.policy": "bitfit"}
        )
    assert [s.freeze.policy for s in recipe.train.stages] == ["bitfit", "all", "bitfit"]


def test_built_in_names_are_never_redefined_and_ignored_ones_say_why():
    first = Registers(
        Choice("freeze", "all", "redefines a built-in"),
        Choice("freeze", "shared", "first"),
        Choice("freez", "typo"),
        "not a choice",
    )
    second = Registers(Choice("freeze", "shared", "second"))
    with plugin_registered(first, "first"), plugin_registered(second, "second"):
        accepted = registered("freeze")
        rows = {row["name"]: row for row in plugin_table()}
        assert choices("freeze") == {"shared": accepted["shared"].choice}
    assert list(accepted) == ["shared"]
    # pluggy calls the last registered plugin first: "second" registered "shared" first
    assert accepted["shared"].plugin == "second"
    reasons = {c["name"]: c["ignored"] for c in rows["first"]["choices"]}
    assert "built-in" in reasons["all"]
    assert "already registered by plugin 'second'" in reasons["shared"]
    assert "unknown kind 'freez'" in reasons["typo"]
    assert "not a tlcore.interfaces.Choice" in reasons["'not a choice'"]
    assert rows["second"]["choices"][0]["ignored"] == ""


def test_a_plugin_whose_registration_fails_is_named():
    class Broken:
        @tlcore.hookimpl
        def tl_register_choices(self, register):
            raise ValueError("oops")

    with plugin_registered(Broken(), "broken_choices"), pytest.raises(PluginError) as info:
        build_recipe({"head": {"pooling": "gem"}})
    assert "broken_choices" in str(info.value) and "oops" in str(info.value)


def test_tl_plugins_shows_the_choices_of_each_plugin():
    plugin = Registers(Choice("pooling", "gem", "generalised mean"), Choice("pooling", "avg"))
    with plugin_registered(plugin, "gem"):
        human = CliRunner().invoke(cli, ["plugins"])
        machine = CliRunner().invoke(cli, ["plugins", "--json"])
    assert human.exit_code == 0, human.output
    assert "    choice: pooling gem  generalised mean" in human.output
    assert "choice: pooling avg  IGNORED: 'avg' is a built-in pooling" in human.output
    rows = {row["name"]: row for row in json.loads(machine.output)}
    assert rows["gem"]["choices"][0] == {
        "kind": "pooling", "name": "gem", "description": "generalised mean", "ignored": ""
    }  # fmt: skip
    assert rows["torch"]["choices"] == []


def _run(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.split("\n")


def test_a_built_in_recipe_asks_no_plugin_and_no_recipe_imports_a_framework():
    default = _run(
        "import sys, tlcore.recipe\n"
        "tlcore.recipe.build_recipe(augment='hflip', overrides={'head.pooling': 'max'})\n"
        "manager = sys.modules.get('tlcore.plugins.manager')\n"
        "print(manager is None or manager._manager is None)\n"
        f"print([m for m in {FRAMEWORKS} if m in sys.modules])\n"
    )
    assert default[:2] == ["True", "[]"]
    other = _run(
        "import sys, tlcore\n"
        "try:\n    tlcore.build_recipe({'head': {'pooling': 'gem'}})\n"
        "except tlcore.RecipeError as e:\n    print(e.path)\n"
        "from tlcore.plugins import manager\n"
        "print(sorted(n for n, _ in manager.get_manager().list_name_plugin()))\n"
        f"print([m for m in {FRAMEWORKS} if m in sys.modules])\n"
    )
    assert other[0] == "head.pooling"
    assert "torch" in other[1]  # the plugins were loaded to ask them ...
    assert other[2] == "[]"  # ... and no framework was imported


# --- carrying the choices out -----------------------------------------------------------------


@pytest.mark.tlcore_hooks("tl_register_choices", "tl_freeze")
def test_a_torch_run_applies_the_plugin_freeze_policy(tl_image_folder, tmp_path):
    plugin = BitFit()
    recipe = {
        "backbone": {"source": "builtin:simple_cnn", "weights": "none", "input_size": 16},
        "train": {"batch_size": 16, "stages": [
            {"name": "bitfit", "epochs": 1, "lr": 0.01, "freeze": {"policy": "bitfit"}},
        ]},
        "export": {"formats": ["native"]},
    }  # fmt: skip
    with plugin_registered(plugin, "bitfit"):
        result = tlcore.fit(tl_image_folder, recipe=recipe, out=tmp_path / "run")
    assert plugin.calls == ["follow"]  # called once, after the core resolved batchnorm: auto
    after = result.model.backbone.state_dict()
    biases = [k for k in plugin.before if k.endswith("bias")]
    others = [k for k in plugin.before if not k.endswith("bias")]
    assert biases and others
    assert any(not after[k].equal(plugin.before[k]) for k in biases), "no bias trained"
    for key in others:  # weights and the frozen BatchNorm statistics
        assert after[key].equal(plugin.before[key]), key
    info = json.loads((result.path / "tlcore.json").read_text())
    assert info["recipe"]["train"]["stages"][0]["freeze"]["policy"] == "bitfit"


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_backends_leave_values_they_do_not_implement_to_plugins(backend):
    calls = BackendCalls(backend)
    backbone = calls.load_backbone(BackboneSpec("builtin:simple_cnn", "none", input_size=16))
    with pytest.raises(PluginError) as pooling:
        calls.attach_head(backbone, HeadSpec(pooling="gem"), 3)
    model = calls.attach_head(backbone, HeadSpec(), 3)
    with pytest.raises(PluginError) as freeze:
        calls.freeze(model, FreezeSpec(policy="bitfit", batchnorm="frozen"))
    calls.freeze(model, FreezeSpec(policy="none", batchnorm="frozen"))
    with pytest.raises(PluginError) as optimizer:
        calls.make_optimizer(model, StageSpec(optimizer="lion"))
    for info, hook, value in [
        (pooling, "tl_attach_head", "'gem'"),
        (freeze, "tl_freeze", "'bitfit'"),
        (optimizer, "tl_make_optimizer", "'lion'"),
    ]:
        message = str(info.value)
        assert hook in message and value in message and repr(backend) in message, message


@pytest.mark.tlcore_hooks("tl_register_choices")
def test_the_core_runs_a_plugin_schedule_and_augmentation():
    def halving(stage, step, total_steps):
        return stage.lr / 2 ** step

    def invert(images, rng):
        return 255 - images

    stage = StageSpec(lr=0.8, schedule="halving")
    images = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    with pytest.raises(PluginError, match="no plugin registers the schedule 'halving'"):
        learning_rate(stage, 0, 10)
    plugin = Registers(
        Choice("schedule", "halving", "lr / 2^step", halving),
        Choice("augmentation", "invert", "255 - x", invert),
        Choice("augmentation", "nothing", "no function"),
        Choice("augmentation", "shrink", "wrong shape", lambda x, rng: x[:, :2]),
    )
    with plugin_registered(plugin, "extras"):
        assert [learning_rate(stage, step, 10) for step in range(3)] == [0.8, 0.4, 0.2]
        rng = np.random.default_rng(0)
        np.testing.assert_array_equal(augment(images, ["invert"], rng), 255 - images)
        flipped = augment(images, ["hflip", "invert"], np.random.default_rng(1))
        assert flipped.shape == images.shape
        with pytest.raises(RecipeError, match="'extras' registers 'nothing', ignored: a"):
            build_recipe(augment=["invert", "nothing"])
        with pytest.raises(DataError, match="nothing"):
            augment(images, ["nothing"], rng)
        with pytest.raises(PluginError, match="returned uint8"):
            augment(images, ["shrink"], rng)
