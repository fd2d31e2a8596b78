"""Runs that learned nothing say so; a randomly initialised backbone trains from scratch.

The rules of :mod:`tlcore.diagnose` on arrays (each firing and not firing), then real runs of
``builtin:simple_cnn`` and of a user's network whose features are dead, with the PyTorch
backend.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

import tlcore
from tlcore.diagnose import (
    chance_level,
    chance_warning,
    feature_warning,
    label_entropy,
    random_backbone_warnings,
    stalled_stage_warnings,
)
from tlcore.errors import TlcoreError
from tlcore.recipe import FreezeSpec, StageSpec, build_recipe
from tlcore.train.stages import plan_stages

from .conftest import TL

TEN = np.arange(80) % 10  # 80 validation labels, 10 balanced classes


# --- the rules, on arrays ------------------------------------------------------------------


def test_chance_is_two_standard_errors_above_the_majority_share():
    assert chance_level(TEN, 10) == pytest.approx(0.1)
    band = 2 * math.sqrt(0.1 * 0.9 / 80)  # 0.067
    text = chance_warning(0.1, TEN, 10)
    assert text is not None and "0.100 ± 0.067 for 80 examples" in text and "learned" in text
    assert chance_warning(0.1 + band - 1e-9, TEN, 10) is not None
    assert chance_warning(0.1 + band + 1e-9, TEN, 10) is None
    assert chance_warning(0.9, TEN, 10) is None
    # 90 % of one class: always answering it scores 0.9, so 0.92 is no skill on 100 images
    skewed = np.array([0] * 90 + [1] * 10)
    assert chance_level(skewed, 2) == pytest.approx(0.9)
    assert chance_warning(0.92, skewed, 2) is not None
    assert chance_warning(0.99, skewed, 2) is None
    # no validation set: nothing to judge
    assert chance_warning(None, np.zeros(0, np.int64), 10) is None
    assert chance_warning(0.0, np.zeros(0, np.int64), 10) is None


def _rows(stage: str, *losses: float) -> list[dict[str, object]]:
    return [{"stage": stage, "epoch": i + 1, "loss": v} for i, v in enumerate(losses)]


def test_a_stage_whose_loss_never_left_guessing_is_flagged():
    labels = np.arange(320) % 10
    guess = label_entropy(labels, 10)
    assert guess == pytest.approx(math.log(10))
    head, tune = StageSpec(name="head"), StageSpec(name="tune")
    # dead: a head on constant features only learns the class frequencies
    dead = _rows("head", guess + 0.05, guess + 0.01, guess)
    (text,) = stalled_stage_warnings(dead, [head], labels, 10)
    assert text.startswith("stage 'head': the training loss never moved") and "2.3026" in text
    # learning, even slowly, is not flagged; neither is a fine-tuning stage flat at a low loss
    assert not stalled_stage_warnings(_rows("head", 2.2, 1.5, 0.9), [head], labels, 10)
    assert not stalled_stage_warnings(_rows("head", 2.30, 2.2), [head], labels, 10)
    assert not stalled_stage_warnings(
        _rows("head", 1.0, 0.5) + _rows("tune", 0.30, 0.30, 0.30), [head, tune], labels, 10
    )
    # one epoch is too little to judge: its loss averages the untrained first steps
    assert not stalled_stage_warnings(_rows("head", guess), [head], labels, 10)
    # only the stalled stage is named
    (text,) = stalled_stage_warnings(
        _rows("head", 1.0, 0.5) + _rows("tune", guess, guess), [head, tune], labels, 10
    )
    assert "'tune'" in text
    # a diverged loss is flagged whatever the number of epochs
    (text,) = stalled_stage_warnings(_rows("head", float("nan")), [head], labels, 10)
    assert "not finite" in text


def test_label_smoothing_moves_both_ends_of_the_scale():
    """Heavy smoothing on two classes: a perfect model's loss is near ln 2, yet not flagged;
    guessing is."""
    labels = np.arange(100) % 2
    smooth = StageSpec(name="s", label_smoothing=0.9)
    perfect = -(0.55 * math.log(0.55) + 0.45 * math.log(0.45))  # one smoothed target's entropy
    assert not stalled_stage_warnings(_rows("s", 0.693, perfect), [smooth], labels, 2)
    assert stalled_stage_warnings(_rows("s", 0.6932, 0.6931), [smooth], labels, 2)


def test_constant_features_are_dead_and_varying_ones_are_not():
    rng = np.random.default_rng(0)
    zeros = np.zeros((50, 64), np.float32)
    text = feature_warning(zeros)
    assert text is not None and "same for all 50 training examples" in text
    assert "freeze policy none" in text
    flat = np.full((50, 64), 1000.0, np.float32) + rng.normal(0, 1e-4, (50, 64)).astype(np.float32)
    assert feature_warning(flat) is not None  # relative range 1e-7: constant for any head
    assert feature_warning(rng.normal(size=(50, 64)).astype(np.float32)) is None
    one_alive = zeros.copy()
    one_alive[:, 3] = rng.normal(size=50)
    assert feature_warning(one_alive) is None  # one varying feature is enough to learn from
    assert feature_warning(np.ones((1, 64), np.float32)) is None  # one image: nothing to compare
    broken = rng.normal(size=(50, 64)).astype(np.float32)
    broken[[4, 7], 0] = [np.nan, np.inf]
    with pytest.raises(TlcoreError, match=r"non-finite features .* for 2 of 50"):
        feature_warning(broken)


def test_stages_for_a_random_backbone():
    defaults = build_recipe(epochs=2).train.stages
    assert plan_stages(defaults, pretrained=True) == (defaults, [])
    (scratch,), warnings = plan_stages(defaults, pretrained=False)
    assert not warnings
    assert (scratch.name, scratch.epochs, scratch.lr) == ("scratch", 4, 1e-3)
    assert scratch.freeze == FreezeSpec(policy="none", batchnorm="train")
    own = (StageSpec(name="head", freeze=FreezeSpec(policy="all")),)
    stages, (text,) = plan_stages(own, pretrained=False)
    assert stages == own
    assert "randomly initialised" in text and "'head'" in text and "freeze policy none" in text
    stale = (StageSpec(name="all", freeze=FreezeSpec(policy="none", batchnorm="frozen")),)
    (text,) = random_backbone_warnings(stale)
    assert "batchnorm frozen" in text and "'all'" in text
    fine = (StageSpec(name="all", freeze=FreezeSpec(policy="none")),)  # auto: follow, all train
    assert plan_stages(fine, pretrained=False) == (fine, [])


# --- real runs ------------------------------------------------------------------------------

SIMPLE = {"source": "builtin:simple_cnn", "weights": "none", "input_size": 16}
VAL = {"val_split": 0.2}  # 40 images a class: the adaptive default would hold none out


def test_weights_none_with_the_default_stages_trains_everything_from_scratch(
    small_digits, tmp_path
):
    from tlcore.plugins import hook

    out = tmp_path / "run"
    native = {"formats": ["native"]}
    recipe = {"backbone": SIMPLE, "export": native, "data": VAL}
    result = tlcore.fit(small_digits, recipe=recipe, out=out)
    assert {row["stage"] for row in result.history} == {"scratch"}
    assert len(result.history) == 10  # the default stages' 5 + 5 epochs
    (stage,) = result.recipe.train.stages
    assert (stage.freeze.policy, stage.freeze.batchnorm) == ("none", "train")
    saved = json.loads((out / "run.json").read_text())["recipe"]["train"]["stages"]
    assert [s["name"] for s in saved] == ["scratch"]  # what a resume continues
    weights = hook().tl_get_weights(backend="torch", model=result.model)
    means = [v for k, v in weights.items() if k.endswith("running_mean")]
    variances = [v for k, v in weights.items() if k.endswith("running_var")]
    assert len(means) == 3 and all(np.abs(m).max() > 1e-3 for m in means)  # BatchNorm trained
    assert all(np.abs(v - 1).max() > 1e-3 for v in variances)
    assert result.metrics["val_accuracy"] >= 0.9, result.history  # 1.0 when it was written
    assert result.warnings == []
    with pytest.raises(TlcoreError, match="nothing to compare"):  # already random weights
        tlcore.random_baseline(result, tmp_path / "baseline")
    assert json.loads((out / "tlcore.json").read_text())["warnings"] == []


def test_freezing_a_random_backbone_warns_at_the_start_and_the_cli_repeats_it(
    small_digits, tmp_path
):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "backbone: {source: builtin:simple_cnn, weights: none, input_size: 16}\n"
        "train:\n  stages:\n    - {name: head, epochs: 1, freeze: {policy: all}}\n"
        "export: {formats: [native]}\n"
    )
    out = tmp_path / "run"
    done = subprocess.run(
        [*TL, "train", small_digits, "--recipe", recipe, "--out", out],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout
    lines = done.stdout.splitlines()
    start = "warning: the backbone is randomly initialised"
    said = [i for i, line in enumerate(lines) if line.startswith(start)]
    assert len(said) == 2, done.stdout  # when found, and again before "done:"
    assert said[0] < next(i for i, line in enumerate(lines) if line.startswith("head 1/"))
    assert said[1] < next(i for i, line in enumerate(lines) if line.startswith("done: "))
    warnings = json.loads((out / "tlcore.json").read_text())["warnings"]
    assert warnings[0].startswith(start.removeprefix("warning: "))
    assert "use freeze policy none" in warnings[0]


def test_dead_features_a_loss_that_never_moved_and_chance_are_all_reported(
    small_digits, tmp_path, capfd
):
    """A user's network whose output is the same for every image: the head learns nothing,
    and the run says so three ways, once each, in the result, tlcore.json and on stderr."""
    from torch import nn

    class Dead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)

        def forward(self, x):
            return self.conv(x) * 0  # a broken layer: every image maps to zeros

    out = tmp_path / "run"
    result = _fit_a_head_on(Dead(), small_digits, out, backend="torch")
    assert json.loads((out / "tlcore.json").read_text())["warnings"] == result.warnings
    err = capfd.readouterr().err
    assert all(err.count(f"warning: {text}") == 1 for text in result.warnings), err


def test_the_import_stays_framework_free():
    code = "import tlcore.diagnose, tlcore.train, sys; print(sorted(m for m in sys.modules " \
        "if m.split('.')[0] in ('torch', 'tensorflow', 'keras')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "[]", done.stderr


def test_dead_features_are_reported_on_keras_too(small_digits, tmp_path):
    """The same checks on the Keras backend: a user's keras.Model with all-zero kernels gives
    the same features for every image, and the run says so instead of ending quietly."""
    keras = pytest.importorskip("keras")
    dead = keras.Sequential([
        keras.Input((16, 16, 3)),
        keras.layers.Conv2D(8, 3, kernel_initializer="zeros", bias_initializer="zeros"),
    ])  # fmt: skip
    _fit_a_head_on(dead, small_digits, tmp_path / "run", backend="keras")


def _fit_a_head_on(network, data, out, backend: str):
    """Train a head for two epochs on the user's dead ``network``, frozen, and check that the
    run reports all three: dead features, a loss that never moved, chance accuracy."""
    stages = [{"name": "head", "epochs": 2, "lr": 1e-3, "freeze": {"policy": "all"}}]
    result = tlcore.fit(
        data, backend=backend, backbone=network, input_size=16, out=out,
        recipe={"train": {"stages": stages}, "export": {"formats": ["native"]}, "data": VAL},
    )  # fmt: skip
    dead, stalled, chance = result.warnings
    assert dead.startswith("the frozen backbone's features are the same for all 320 training")
    assert stalled.startswith("stage 'head': the training loss never moved")
    assert chance.startswith("validation accuracy 0.100 is within noise of chance")
    return result
