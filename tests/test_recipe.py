"""The recipe: files, flags and kwargs merge in order; bad values name their field."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tlcore import RecipeError, TlcoreError, build_recipe
from tlcore.recipe import load_recipe_file, parse_override


def test_defaults_are_the_two_stage_recipe():
    recipe = build_recipe()
    head, fine = recipe.train.stages
    assert head.freeze.policy == "all"
    assert fine.freeze.policy == "last_n"
    assert fine.lr <= head.lr / 10
    # frozen for a pretrained backbone, follow for a random one (resolved by the core)
    assert head.freeze.batchnorm == fine.freeze.batchnorm == "auto"


def test_a_random_backbone_s_default_is_one_scratch_stage():
    """The default stages, also after --epochs and --lr, are recognised as the defaults and
    become one stage that trains everything with BatchNorm in training mode."""
    from tlcore.freezing import resolve_batchnorm
    from tlcore.recipe import follows_default_stages, scratch_stage

    for shortcuts in ({}, {"epochs": 3}, {"lr": 3e-3, "epochs": 2}):
        stages = build_recipe(**shortcuts).train.stages
        assert follows_default_stages(stages), shortcuts
        stage = scratch_stage(stages)
        assert stage.epochs == sum(s.epochs for s in stages)
        assert stage.lr == stages[0].lr
        assert (stage.freeze.policy, stage.freeze.batchnorm) == ("none", "train")
    assert scratch_stage(build_recipe().train.stages).lr == 1e-3
    own = build_recipe({}, {"train.stages.0.freeze.policy": "none"}).train.stages
    assert not follows_default_stages(own)
    assert not follows_default_stages(build_recipe().train.stages[:1])
    auto = build_recipe().train.stages[0].freeze
    assert resolve_batchnorm(auto, pretrained=True).batchnorm == "frozen"
    assert resolve_batchnorm(auto, pretrained=False).batchnorm == "follow"  # = train, unfrozen
    explicit = build_recipe({}, {"train.stages.0.freeze.batchnorm": "follow"}).train.stages[0]
    assert resolve_batchnorm(explicit.freeze, pretrained=False).batchnorm == "follow"


def test_yaml_and_toml_load_the_same_recipe(tmp_path):
    yaml_file = tmp_path / "r.yaml"
    yaml_file.write_text(
        "backend: torch\nhead:\n  hidden: [64]\n  dropout: 0.3\n"
        "train:\n  batch_size: 8\n  stages:\n    - {name: only, epochs: 2, lr: 0.01}\n"
    )
    toml_file = tmp_path / "r.toml"
    toml_file.write_text(
        'backend = "torch"\n[head]\nhidden = [64]\ndropout = 0.3\n'
        "[train]\nbatch_size = 8\n[[train.stages]]\nname = \"only\"\nepochs = 2\nlr = 0.01\n"
    )
    a = build_recipe(load_recipe_file(yaml_file))
    b = build_recipe(load_recipe_file(toml_file))
    assert a == b
    assert a.head.hidden == (64,)
    assert len(a.train.stages) == 1 and a.train.stages[0].lr == 0.01


def test_flags_override_the_file(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("train:\n  batch_size: 8\n  seed: 1\n")
    key, value = parse_override("train.seed=7")
    recipe = build_recipe(load_recipe_file(f), {key: value}, batch_size=4)
    assert recipe.train.seed == 7
    assert recipe.train.batch_size == 4


def test_lr_shortcut_keeps_the_stage_ratio():
    recipe = build_recipe(lr=3e-3, epochs=2)
    head, fine = recipe.train.stages
    assert head.lr == pytest.approx(3e-3)
    assert fine.lr == pytest.approx(3e-4)
    assert head.epochs == fine.epochs == 2


@pytest.mark.parametrize(
    ("data", "overrides", "path", "fragment"),
    [
        ({"head": {"pooling": "median"}}, {}, "head.pooling", "avg, max, flatten, mean, cls"),
        ({}, {"train.stages.0.lr": -1}, "train.stages.0.lr", ">= 1e-12"),
        (
            {"train": {"stages": [{"optimiser": "sgd"}]}},
            {},
            "train.stages.0.optimiser",
            "optimizer",
        ),
        ({"train": {"batch_size": "big"}}, {}, "train.batch_size", "an integer"),
        ({"train": {"stages": []}}, {}, "train.stages", "at least one stage"),
        ({"data": {"augment": ["twirl"]}}, {}, "data.augment.0", "hflip"),
        ({"train": {"stages": [{"freeze": {"policy": "pattern", "pattern": "("}}]}}, {},
         "train.stages.0.freeze.pattern", "regex"),
        ({}, {"train.stages.5.lr": 1}, "train.stages.5", "index below 2"),
    ],
)
def test_bad_values_name_field_value_and_valid(data, overrides, path, fragment):
    with pytest.raises(RecipeError) as info:
        build_recipe(data, overrides)
    assert info.value.path == path
    assert fragment in str(info.value)


def test_bad_recipe_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(TlcoreError, match="cannot parse"):
        load_recipe_file(bad)
    with pytest.raises(TlcoreError, match="not found"):
        load_recipe_file(tmp_path / "missing.yaml")


def test_round_trip_through_dict():
    recipe = build_recipe(backend="keras", epochs=3, augment="hflip")
    assert build_recipe(recipe.to_dict()) == recipe
    assert recipe.data.augment == ("hflip",)


def test_validation_imports_no_framework():
    code = (
        "import sys, tlcore\n"
        "try:\n    tlcore.build_recipe({'train': {'batch_size': 0}})\n"
        "except tlcore.RecipeError as e:\n    print(e.path)\n"
        "print([m for m in ('torch', 'tensorflow', 'keras', 'numpy') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["train.batch_size", "[]"]
