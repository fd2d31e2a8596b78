"""Learning rates: the range test (``tl lr-find``, ``tlcore.lr_find``, ``lr: auto``), layer-wise
rates (``layer_decay``), gradual unfreezing (``unfreeze: gradual``) and warm restarts
(``schedule: cosine_restarts``), each against an independent computation: torch's own
scheduler, fastai's definitions, the backends' plain optimiser step, an uninterrupted run."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

import tlcore
from tlcore.errors import RecipeError, TlcoreError
from tlcore.interfaces import Batch, StepState
from tlcore.plugins import plugin_registered
from tlcore.plugins.calls import BackendCalls
from tlcore.recipe import BackboneSpec, FreezeSpec, HeadSpec, StageSpec, build_recipe
from tlcore.runfolder import read_arrays
from tlcore.schedule import first_cycle, layer_multipliers, learning_rate
from tlcore.testing import separable, write_image_folder
from tlcore.testing.simple_cnn import WIDTHS, batchnorm, conv_kernel
from tlcore.train.lrfind import range_test, rates

SIZE = 16

# --- warm restarts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "cycles", "mult"),
    [(30, 3, 1), (70, 3, 2), (50, 3, 2), (37, 4, 3), (7, 3, 1), (1, 2, 2), (100, 1, 1)],
)
def test_cosine_restarts_is_torchs_warm_restarts_step_for_step(total, cycles, mult):
    """``T_0`` is the fewest steps whose ``cycles`` cycles cover the stage; every step's rate
    is ``CosineAnnealingWarmRestarts``' with that ``T_0`` and ``T_mult``."""
    import torch

    t0 = first_cycle(total, cycles, mult)
    assert sum(t0 * mult**i for i in range(cycles)) >= total
    assert t0 == 1 or sum((t0 - 1) * mult**i for i in range(cycles)) < total
    stage = StageSpec(lr=0.1, schedule="cosine_restarts", cycles=cycles, cycle_mult=mult)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    schedule = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=t0,
                                                                    T_mult=mult)
    ours, theirs = [], []
    for step in range(total):
        ours.append(learning_rate(stage, step, total))
        theirs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)
    if total >= 30 and mult == 1 and cycles > 1:  # it does restart: back at lr after each cycle
        assert ours[t0] == pytest.approx(0.1) and ours[t0 - 1] < 0.01


def test_cosine_restarts_begin_after_the_warmup():
    stage = StageSpec(lr=0.2, schedule="cosine_restarts", warmup=0.2, cycles=2)
    values = [learning_rate(stage, step, 50) for step in range(50)]
    np.testing.assert_allclose(values[:10], [0.2 * (s + 1) / 11 for s in range(10)])
    # then 2 cycles of 20 steps over the remaining 40
    expected = [0.1 * (1 + math.cos(math.pi * (s % 20) / 20)) for s in range(40)]
    np.testing.assert_allclose(values[10:], expected, rtol=1e-12)


def test_learning_rate_refuses_an_unresolved_auto():
    with pytest.raises(ValueError, match="resolved"):
        learning_rate(StageSpec(lr="auto"), 0, 10)


# --- layer-wise rates: the core's rule ----------------------------------------------------------


def test_layer_multipliers_follow_timms_layer_decay():
    names = ["stem.w", "b0.conv", "b0.bn", "b1.w", "between", "b2.w", "norm.w"]
    got = layer_multipliers(names, ["b0", "b1", "b2"], 0.5)
    # b2 (last) 0.5, b1 0.25, b0 0.125, the stem before every block 0.0625; weights outside
    # the blocks go with the block before them
    assert got == [0.0625, 0.125, 0.125, 0.25, 0.25, 0.5, 0.5]
    assert layer_multipliers(names, ["b0", "b1", "b2"], 1.0) == [1.0] * len(names)
    assert layer_multipliers(["a", "b"], [], 0.7) == [0.7, 0.7]  # no blocks: one block


# --- the range test: fastai's definitions -------------------------------------------------------


def _smoothed(losses: list[float], beta: float = 0.98) -> np.ndarray:
    """fastai's debiased moving average, as the weighted mean it is (weights beta**age)."""
    out = []
    for i in range(len(losses)):
        weights = beta ** np.arange(i, -1, -1, dtype=np.float64)
        out.append(float(np.dot(weights, losses[: i + 1]) / weights.sum()))
    return np.array(out)


def test_range_test_records_fastais_rates_and_smoothed_losses_and_stops_when_it_diverges():
    def loss(lr: float, step: int) -> float:  # falls to lr 1e-3, then climbs steeply
        return 1.0 + (math.log10(lr) + 3) ** 2 * (1 if lr < 1e-3 else 20)

    result = range_test(loss)
    raw = [loss(lr, 0) for lr in rates()]
    smoothed = _smoothed(raw)
    diverged = next(i for i in range(100) if smoothed[i] > 4 * smoothed[: i + 1].min())
    assert result.stopped == "diverged" and len(result.lrs) == diverged + 1 < 100
    np.testing.assert_allclose(result.lrs, [1e-7 * 1e8 ** (i / 100) for i in range(diverged + 1)],
                               rtol=1e-12)
    np.testing.assert_allclose(result.losses, smoothed[: diverged + 1], rtol=1e-9)
    # valley on this one-dip curve: the first tenth and the last five points left out, the
    # longest decreasing run is from the start to the minimum; fastai takes the point
    # int(n/3) + int(n/6) - 1 along a run of n points
    kept = smoothed[10 : diverged + 1 - 5]
    n = int(np.argmin(kept)) + 1
    assert np.all(np.diff(kept[:n]) < 0)
    assert result.suggestion == pytest.approx(result.lrs[10 + n // 3 + int(n / 3 / 2) - 1])
    assert 1e-6 < result.suggestion < 1e-3


def test_range_test_stops_at_nan_and_suggests_from_the_finite_part():
    result = range_test(lambda lr, step: float("nan") if step == 60 else 2.0 - step / 100)
    assert result.stopped == "nan" and len(result.lrs) == 61 and math.isnan(result.losses[-1])
    assert result.lrs[10] <= result.suggestion <= result.lrs[54]
    assert result.to_dict()["losses"][-1] is None  # JSON has no NaN


def test_range_test_that_diverges_at_once_is_an_error_with_a_fix():
    with pytest.raises(TlcoreError, match="too few steps") as info:
        range_test(lambda lr, step: 1.0 if step < 3 else 100.0)
    assert "lr: 1e-3" in info.value.hint


# --- the recipe ---------------------------------------------------------------------------------


def test_lr_accepts_auto_and_refuses_other_words_and_non_finite_numbers():
    recipe = build_recipe(overrides={"train.stages.1.lr": "auto"})
    assert [s.lr for s in recipe.train.stages] == [1e-3, "auto"]
    assert build_recipe(recipe.to_dict()) == recipe  # as run.json reads back
    assert [s.lr for s in build_recipe(lr="auto").train.stages] == ["auto", "auto"]
    assert [s.lr for s in build_recipe(lr="1e-2").train.stages] == [1e-2, pytest.approx(1e-3)]
    for bad in ("fast", float("nan"), float("inf"), "", True):
        with pytest.raises(RecipeError, match=r"train\.stages\.0\.lr"):
            build_recipe(overrides={"train.stages.0.lr": bad})
    with pytest.raises(RecipeError, match=r"train\.stages\.0\.lr.*<= 10"):
        build_recipe(overrides={"train.stages.0.lr": 20})
    with pytest.raises(RecipeError, match=r"train\.stages\.0\.lr.*logistic"):
        build_recipe(overrides={"train.stages.0.lr": "auto", "train.stages.0.optimizer":
                                "logistic"})
    with pytest.raises(RecipeError, match="a finite number or auto"):
        build_recipe(lr="quick")


def test_layer_decay_and_cycles_are_checked():
    for field, bad in (("layer_decay", 0), ("layer_decay", 1.5), ("layer_decay", "nan"),
                       ("cycles", 0), ("cycle_mult", 0)):
        with pytest.raises(RecipeError, match=rf"train\.stages\.1\.{field}"):
            build_recipe(overrides={f"train.stages.1.{field}": bad})


def test_gradual_unfreezing_is_one_line_that_expands_into_stages():
    recipe = build_recipe(
        overrides={"train.stages.1.unfreeze": "gradual", "train.stages.1.freeze.n": 3}
    )
    stages = recipe.train.stages
    assert [(s.name, s.freeze.policy, s.freeze.n) for s in stages] == [
        ("head", "all", 2), ("fine_tune-1", "last_n", 1), ("fine_tune-2", "last_n", 2),
        ("fine_tune-3", "last_n", 3),
    ]
    assert {(s.lr, s.epochs, s.patience, s.unfreeze) for s in stages[1:]} == {
        (1e-4, 5, 3, "none")
    }
    assert build_recipe(recipe.to_dict()) == recipe  # run.json holds the expanded stages
    with pytest.raises(RecipeError, match=r"train\.stages\.0\.unfreeze"):
        build_recipe(overrides={"train.stages.0.unfreeze": "gradual"})  # policy all
    with pytest.raises(RecipeError, match="distinct names"):
        build_recipe({"train": {"stages": [
            {"name": "a-1", "freeze": {"policy": "all"}},
            {"name": "a", "unfreeze": "gradual", "freeze": {"policy": "last_n", "n": 1}},
        ]}})


def test_dry_run_lists_the_expanded_stages_and_auto(tmp_path):
    pytest.importorskip("torch")
    x, y = separable(16, SIZE)
    text = tlcore.plan(
        (x, y), backend="torch", backbone="builtin:simple_cnn", weights="none",
        input_size=SIZE, lr="auto",
        recipe={"train": {"stages": [
            {"name": "head", "epochs": 1, "freeze": {"policy": "all"}},
            {"name": "tune", "epochs": 1, "unfreeze": "gradual",
             "freeze": {"policy": "last_n", "n": 2}},
        ]}},
    ).to_text()
    assert "stage tune-1:" in text and "stage tune-2:" in text
    assert text.count("lr auto (the learning-rate finder's, at the stage's start)") == 3


# --- layer-wise rates on both backends ----------------------------------------------------------


def _model(backend: str):
    pytest.importorskip(backend)
    calls = BackendCalls(backend)
    calls.seed(0)
    backbone = calls.load_backbone(BackboneSpec("builtin:simple_cnn", "none", input_size=SIZE))
    model = calls.attach_head(backbone, HeadSpec(), 3)
    calls.freeze(model, FreezeSpec(policy="none", batchnorm="frozen"))
    return calls, model


def _step(calls, model, start, stage, x, y):
    """The weights' change in one step of ``stage`` from ``start``, and the optimiser."""
    calls.set_weights(model, start, strict=True)
    optimizer = calls.make_optimizer(model, stage)
    calls.train_step(model, Batch(x, y), StepState(optimizer, stage.lr))
    after = calls.get_weights(model)
    return {k: after[k].astype(np.float64) - start[k] for k in start}, optimizer


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_layer_decay_scales_each_blocks_update(backend, optimizer):
    """From the same weights, each block's update under ``layer_decay`` 0.5 is its update at
    the plain rate × its multiplier: 0.5 for the last of simple_cnn's three blocks, 0.25,
    0.125 for the first, 1 for the head. For SGD that is ``-lr * mult * grad``; for AdamW
    it shows the rate itself is scaled (scaling the gradient would leave Adam's first step
    unchanged)."""
    calls, model = _model(backend)
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (8, SIZE, SIZE, 3), dtype=np.uint8)
    y = rng.integers(0, 3, 8).astype(np.int64)
    start = calls.get_weights(model)
    # SGD's updates large enough to read from float32 weights: w1 - w0 is exact to about
    # the weights' spacing, which the tolerance allows
    lr = 1.0 if optimizer == "sgd" else 0.01
    stage = StageSpec(optimizer=optimizer, lr=lr, momentum=0.0, weight_decay=0.0)
    layered = dataclasses.replace(stage, layer_decay=0.5)
    plain, _ = _step(calls, model, start, stage, x, y)
    decayed, made = _step(calls, model, start, layered, x, y)
    expected: dict[str, float] = {}
    for block in range(len(WIDTHS)):
        multiplier = 0.5 ** (len(WIDTHS) - block)
        expected[conv_kernel(start, block)] = multiplier
        for name in batchnorm(start, block):
            expected[name] = multiplier
    moved = [name for name in start if np.abs(plain[name]).max() > 0]
    head = [name for name in moved if name not in expected]
    assert head and len(moved) == len(head) + 3 * len(WIDTHS)  # kernels, BN scale and shift
    for name in moved:
        spacing = float(np.spacing(np.abs(start[name]).max()))
        np.testing.assert_allclose(decayed[name], expected.get(name, 1.0) * plain[name],
                                   rtol=2e-3, atol=4 * spacing, err_msg=name)
    if optimizer != "adamw":
        return
    # Adam's moments go into a checkpoint and back into a new optimiser of the same stage
    state = calls.get_optimizer_state(made)
    assert len(state) >= 2 * len(moved)
    fresh = calls.make_optimizer(model, layered)
    calls.set_optimizer_state(fresh, state)
    again = calls.get_optimizer_state(fresh)
    assert again.keys() == state.keys()
    for key in state:
        np.testing.assert_array_equal(again[key], state[key], err_msg=key)


# --- the range test through a run ---------------------------------------------------------------

RECIPE = {"export": {"formats": ["native"]}, "train": {"batch_size": 8, "stages": [
    {"name": "all", "epochs": 2, "lr": "auto", "optimizer": "sgd", "schedule": "constant",
     "freeze": {"policy": "none"}},
]}}
COMMON = {"backend": "torch", "backbone": "builtin:simple_cnn", "weights": "none",
          "input_size": SIZE}


class StopAfter:
    """Interrupts a run like Ctrl-C after its first checkpoint."""

    @tlcore.hookimpl
    def tl_on_checkpoint(self, run: object, path: Path) -> None:
        raise KeyboardInterrupt


def test_lr_auto_trains_at_the_suggestion_leaves_nothing_and_resumes_at_it(tmp_path, capfd):
    """A run with ``lr: auto`` ends with exactly the weights of a run at the suggested rate
    (so the test left nothing in the model, its optimiser or its seeds); the rate is in
    tlcore.json and the curve in the run folder; a run interrupted after its first epoch
    resumes at the recorded rate without searching again, to the same weights."""
    pytest.importorskip("torch")
    data = separable(24, SIZE)
    auto = tlcore.fit(data, recipe=RECIPE, out=tmp_path / "auto", quiet=False, **COMMON)
    err = capfd.readouterr().err
    assert "learning-rate finder suggests lr" in err
    curve = json.loads((tmp_path / "auto" / "lr_find-all.json").read_text())
    rate = curve["suggestion"]
    assert curve["method"] == "valley" and 1e-7 <= rate < 10 and len(curve["lrs"]) >= 16
    recorded = json.loads((tmp_path / "auto" / "tlcore.json").read_text())
    assert recorded["recipe"]["train"]["stages"][0]["lr"] == rate
    assert auto.recipe.train.stages[0].lr == rate

    fixed = {**RECIPE["train"], "stages": [{**RECIPE["train"]["stages"][0], "lr": rate}]}
    tlcore.fit(data, recipe={**RECIPE, "train": fixed}, out=tmp_path / "fixed", **COMMON)
    final = read_arrays(tmp_path / "auto" / "native" / "weights.npz")
    _same(read_arrays(tmp_path / "fixed" / "native" / "weights.npz"), final)

    with plugin_registered(StopAfter(), "stop"), pytest.raises(KeyboardInterrupt):
        tlcore.fit(data, recipe=RECIPE, out=tmp_path / "cut", **COMMON)
    capfd.readouterr()
    tlcore.fit(data, out=tmp_path / "cut", resume=True, quiet=False)
    err = capfd.readouterr().err
    assert "suggests" not in err and f"lr {rate:.3g}, found by the learning-rate finder" in err
    _same(read_arrays(tmp_path / "cut" / "native" / "weights.npz"), final)


def _same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_lr_find_api_on_keras_cached_features_writes_its_curve(tmp_path):
    """(The torch backend: ``tl lr-find`` below.)"""
    backend = "keras"
    pytest.importorskip(backend)
    result = tlcore.lr_find(
        separable(24, SIZE), stage="head", steps=30, out=tmp_path,
        recipe={"train": {"batch_size": 8, "stages": [
            {"name": "head", "epochs": 1, "freeze": {"policy": "all"}}]}},
        **{**COMMON, "backend": backend},
    )
    assert result.stage == "head" and 16 <= len(result.lrs) <= 30
    assert result.lrs[0] == pytest.approx(1e-7) and result.lrs[10] <= result.suggestion
    saved = json.loads((tmp_path / "lr_find.json").read_text())
    assert saved["suggestion"] == result.suggestion and saved["lrs"] == list(result.lrs)
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(TlcoreError, match="no stage 'tune'"):
        tlcore.lr_find(separable(8, SIZE), stage="tune", **COMMON)


def test_tl_lr_find_tests_a_later_stage_after_the_ones_before(tmp_path):
    from .conftest import run_tl

    pytest.importorskip("torch")
    data = write_image_folder(tmp_path / "data", per_class=6, size=SIZE)
    (tmp_path / "recipe.yaml").write_text(
        "train:\n  batch_size: 6\n  stages:\n"
        "    - {name: head, epochs: 1, freeze: {policy: all}}\n"
        "    - {name: tune, epochs: 1, freeze: {policy: last_n, n: 1}}\n",
        encoding="utf-8",
    )
    result = run_tl("lr-find", data, "--recipe", tmp_path / "recipe.yaml", "--stage", "tune",
                    "--steps", "20", "--out", tmp_path / "out", "--backbone",
                    "builtin:simple_cnn", "--weights", "none", "--input-size", SIZE,
                    "--backend", "torch", "-q")
    assert "stage tune: learning-rate finder suggests lr" in result.stdout
    saved = json.loads((tmp_path / "out" / "lr_find.json").read_text())
    assert saved["stage"] == "tune" and len(saved["lrs"]) <= 20
