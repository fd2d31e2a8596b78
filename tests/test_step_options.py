"""Gradient accumulation, gradient clipping and the weights' moving average (``train.accumulate``,
``train.clip_norm``, ``train.ema``): each checked against an independent computation (one big
batch, torch's own ``clip_grad_norm_``, the average computed in numpy), on both backends, and
exact under resume."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tlcore
from tlcore.errors import PluginError, RecipeError
from tlcore.files import read_arrays
from tlcore.interfaces import EMA_PREFIX, Batch, StepState
from tlcore.plugins import plugin_registered
from tlcore.plugins.calls import BackendCalls
from tlcore.recipe import BackboneSpec, FreezeSpec, HeadSpec, StageSpec, build_recipe
from tlcore.testing import separable
from tlcore.train.steps import averaged_weights, ema_decay, step_groups, steps_per_epoch

BACKENDS = ["torch", "keras"]
SIZE = 16
SGD = StageSpec(name="all", optimizer="sgd", lr=0.5, momentum=0.0, weight_decay=0.0)


def _model(backend: str, seed: int = 0):
    """A randomly initialised ``builtin:simple_cnn`` with a 3-class head, everything trainable,
    BatchNorm in inference mode (so a batch's split does not change its statistics)."""
    pytest.importorskip(backend)
    calls = BackendCalls(backend)
    calls.seed(seed)
    backbone = calls.load_backbone(BackboneSpec("builtin:simple_cnn", "none", input_size=SIZE))
    model = calls.attach_head(backbone, HeadSpec(), 3)
    calls.freeze(model, FreezeSpec(policy="none", batchnorm="frozen"))
    return calls, model


def _data(n: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)
    return x, rng.integers(0, 3, n).astype(np.int64)


def _trained(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v for k, v in weights.items() if v.dtype.kind == "f"}


def _close(a: dict[str, np.ndarray], b: dict[str, np.ndarray], atol: float = 2e-6) -> None:
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=atol, err_msg=name)


# --- the core's rules --------------------------------------------------------------------------


def test_groups_steps_and_decay_follow_the_documented_rules():
    assert step_groups(7, 3) == [range(0, 3), range(3, 6), range(6, 7)]
    assert step_groups(4, 1) == [range(i, i + 1) for i in range(4)]
    # ceil(ceil(n / b) / k) == ceil(n / (b k)) for every small case
    for n in range(1, 60):
        for b in range(1, 9):
            for k in range(1, 5):
                assert steps_per_epoch(n, b, k) == len(step_groups(-(-n // b), k))
    assert ema_decay(0.99, 0) == pytest.approx(0.1)
    assert ema_decay(0.99, 1000) == 0.99
    assert ema_decay(0.0, 3) == 0.0
    weights = {"a": np.zeros(2, np.float32), "b": np.ones(1, np.float32)}
    assert averaged_weights(weights, {"0.momentum": np.ones(2)}) is None
    merged = averaged_weights(weights, {EMA_PREFIX + "a": np.full(2, 5.0, np.float32)})
    assert merged["a"].tolist() == [5.0, 5.0] and merged["b"] is weights["b"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("train.accumulate", 0), ("train.clip_norm", -1.0), ("train.clip_norm", float("nan")),
     ("train.ema", 1.0), ("train.ema", -0.1), ("train.ema", float("nan"))],
)
def test_bad_values_are_refused_with_the_field(field, value):
    with pytest.raises(RecipeError) as caught:
        build_recipe(overrides={field: value})
    assert caught.value.path == field


def test_defaults_and_shortcuts():
    train = build_recipe().train
    assert (train.accumulate, train.clip_norm, train.ema) == (1, 0.0, 0.0)
    train = build_recipe(accumulate=4, clip_norm=1.5, ema=0.99).train
    assert (train.accumulate, train.clip_norm, train.ema) == (4, 1.5, 0.99)


# --- one optimiser step on each backend ---------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_accumulated_batches_of_8_are_one_batch_of_16(backend):
    x, y = _data(16)
    calls, model = _model(backend)
    start = calls.get_weights(model)
    optimizer = calls.make_optimizer(model, SGD)
    result = calls.train_step(model, Batch(x, y), StepState(optimizer, 0.5))
    assert result["applied"] is True
    one = calls.get_weights(model)

    calls.set_weights(model, start, strict=True)
    optimizer = calls.make_optimizer(model, SGD)
    first = calls.train_step(
        model, Batch(x[:8], y[:8]), StepState(optimizer, 0.5, share=0.5, apply=False)
    )
    assert first["applied"] is False
    _close(calls.get_weights(model), start, atol=0)  # nothing moves before the step's end
    calls.train_step(model, Batch(x[8:], y[8:]), StepState(optimizer, 0.5, share=0.5))
    two = calls.get_weights(model)
    _close(_trained(two), _trained(one))
    moved = [n for n in _trained(one) if not np.array_equal(one[n], start[n])]
    assert len(moved) > len(_trained(one)) // 2  # the step trained most of the network


def _step_delta(calls, model, start, stage, x, y, **options):
    """The weights' change by one step from ``start`` (a fresh optimiser each time), and
    the step's result."""
    calls.set_weights(model, start, strict=True)
    optimizer = calls.make_optimizer(model, stage)
    result = calls.train_step(model, Batch(x, y), StepState(optimizer, stage.lr, **options))
    after = calls.get_weights(model)
    return {k: after[k] - start[k] for k in _trained(start)}, result


@pytest.mark.parametrize("backend", BACKENDS)
def test_clipping_is_torchs_clip_grad_norm_before_weight_decay(backend):
    torch = pytest.importorskip("torch")  # the reference, for both backends

    x, y = _data(16, seed=1)
    calls, model = _model(backend)
    start = calls.get_weights(model)
    plain, result = _step_delta(calls, model, start, dataclasses.replace(SGD, lr=1.0), x, y)
    assert "grad_norm" not in result
    # SGD at lr 1 without decay moves the trained weights by minus their gradient (the
    # BatchNorm statistics, in inference mode, do not move).
    gradient = {k: -v for k, v in plain.items() if np.any(v)}
    assert len(gradient) > 4
    grads = [torch.tensor(g) for g in gradient.values()]
    limit = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g)
                                                        for g in grads]))) / 4
    params = [torch.zeros_like(g, requires_grad=True) for g in grads]
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    norm = torch.nn.utils.clip_grad_norm_(params, limit)  # torch's own, independently
    clipped = {k: p.grad.numpy() for k, p in zip(gradient, params, strict=True)}

    decayed = dataclasses.replace(SGD, lr=0.1, weight_decay=0.01)
    delta, result = _step_delta(calls, model, start, decayed, x, y, clip_norm=limit)
    assert result["grad_norm"] == pytest.approx(float(norm), rel=1e-5)
    want = {k: -0.1 * (clipped[k] + 0.01 * start[k]) for k in clipped}
    _close({k: delta[k] for k in want}, want, atol=1e-6)
    big, result = _step_delta(calls, model, start, decayed, x, y, clip_norm=limit * 100)
    unclipped = {k: -0.1 * (gradient[k] + 0.01 * start[k]) for k in gradient}
    _close({k: big[k] for k in unclipped}, unclipped, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_average_follows_each_update_and_covers_batchnorm_statistics(backend):
    x, y = _data(24, seed=2)
    calls, model = _model(backend)
    calls.freeze(model, FreezeSpec(policy="none", batchnorm="train"))  # statistics move too
    optimizer = calls.make_optimizer(model, SGD)
    average = _trained(calls.get_weights(model))
    for step, decay in enumerate((0.1, 0.5, 0.9)):
        rows = slice(8 * step, 8 * step + 8)
        calls.train_step(model, Batch(x[rows], y[rows]), StepState(optimizer, 0.5, ema=decay))
        now = calls.get_weights(model)
        average = {k: decay * v + (1 - decay) * now[k] for k, v in average.items()}
    state = calls.get_optimizer_state(optimizer)
    kept = {k[len(EMA_PREFIX):]: v for k, v in state.items() if k.startswith(EMA_PREFIX)}
    assert kept.keys() == average.keys()  # every trained weight and every statistic
    assert any("mean" in name for name in kept) and any("var" in name for name in kept)
    _close(kept, average, atol=1e-6)
    assert not all(np.allclose(kept[k], now[k]) for k in kept)  # not the weights themselves

    # A new optimiser given that state continues the same average (what a resume does).
    again = calls.make_optimizer(model, SGD)
    calls.set_optimizer_state(again, state)
    assert calls.get_optimizer_state(again).keys() == state.keys()
    calls.train_step(model, Batch(x[:8], y[:8]), StepState(again, 0.5, ema=0.5))
    now = calls.get_weights(model)
    got = calls.get_optimizer_state(again)
    _close({k: got[EMA_PREFIX + k] for k in kept},
           {k: 0.5 * v + 0.5 * now[k] for k, v in kept.items()}, atol=1e-6)


# --- whole runs ---------------------------------------------------------------------------------


def _recipe(backend: str, **train) -> dict:
    """Two stages (the head on cached features, then everything) of ``builtin:simple_cnn``
    on 16 px images, batches of 8."""
    return {
        "backend": backend,
        "backbone": {"source": "builtin:simple_cnn", "weights": "none", "input_size": SIZE},
        "train": {
            "batch_size": 8, "seed": 5, **train,
            "stages": [
                {"name": "head", "epochs": 2, "lr": 0.05, "optimizer": "sgd", "momentum": 0.9,
                 "freeze": {"policy": "all"}},
                {"name": "all", "epochs": 2, "lr": 0.02, "optimizer": "sgd", "momentum": 0.9,
                 "schedule": "cosine", "freeze": {"policy": "none"}},
            ],
        },
        "data": {"val_split": 0.25},
        "export": {"formats": ["native"]},
    }


class _Stop:
    """Interrupts a run like Ctrl-C after its checkpoint ``after``; keeps every checkpoint's
    optimiser state."""

    def __init__(self, after: int = 0) -> None:
        self.after, self.states = after, []

    @tlcore.hookimpl
    def tl_on_checkpoint(self, run: object, path: Path) -> None:
        self.states.append(read_arrays(path / "optimizer.npz"))
        if len(self.states) == self.after:
            raise KeyboardInterrupt


@pytest.mark.parametrize("backend", BACKENDS)
def test_accumulate_clip_and_ema_together_resume_exactly(backend, tmp_path):
    pytest.importorskip(backend)
    data = separable(48, size=SIZE, seed=3)
    recipe = _recipe(backend, accumulate=2, clip_norm=0.5, ema=0.8)
    whole = _Stop()
    with plugin_registered(whole, "watch"):
        result = tlcore.fit(data, recipe=recipe, out=tmp_path / "whole")
    final = read_arrays(tmp_path / "whole" / "native" / "weights.npz")
    # Every checkpoint carries the average; the run ends on it (restore_best picks the best
    # epoch's average, the last one's here or another).
    averages = [{k[len(EMA_PREFIX):]: v for k, v in s.items() if k.startswith(EMA_PREFIX)}
                for s in whole.states]
    assert len(averages) == 4 and all(averages)
    assert any(all(np.array_equal(final[k], a[k]) for k in a) for a in averages[2:])

    with plugin_registered(_Stop(after=3), "stopper"), pytest.raises(KeyboardInterrupt):
        tlcore.fit(data, recipe=recipe, out=tmp_path / "cut")  # mid-way through stage 2
    again = tlcore.fit(data, out=tmp_path / "cut", resume=True)
    resumed = read_arrays(tmp_path / "cut" / "native" / "weights.npz")
    assert resumed.keys() == final.keys()
    for name, value in final.items():
        np.testing.assert_array_equal(resumed[name], value, err_msg=name)
    assert [r["loss"] for r in again.history] == [r["loss"] for r in result.history]


def test_the_schedule_and_dry_run_count_optimiser_steps(tmp_path):
    pytest.importorskip("torch")
    data = separable(48, size=SIZE, seed=3)  # 36 training images: 5 batches of 8, 3 steps
    recipe = _recipe("torch", accumulate=2)
    recipe["train"]["stages"] = [dict(recipe["train"]["stages"][1], epochs=2)]
    lrs = []

    class Rates:
        @tlcore.hookimpl(tryfirst=True)
        def tl_train_step(self, backend, model, batch, state):
            lrs.append((state.step, state.lr, state.apply, round(state.share, 6)))

    with plugin_registered(Rates(), "rates"):
        tlcore.fit(data, recipe=recipe, out=tmp_path / "run")
    steps = [s for s, _, _, _ in lrs]
    assert steps == [0, 0, 1, 1, 2, 3, 3, 4, 4, 5]  # the fifth batch is a step of its own
    assert [a for _, _, a, _ in lrs] == [False, True, False, True, True] * 2
    assert [s for *_, s in lrs[:5]] == [0.5, 0.5, 0.5, 0.5, 1.0]
    from tlcore.recipe import build_recipe as build
    from tlcore.schedule import learning_rate

    stage = build(recipe).train.stages[0]
    assert [lr for _, lr, _, _ in lrs] == [learning_rate(stage, s, 6) for s in steps]


def test_the_dry_run_shows_the_effective_batch_and_counts_updates():
    pytest.importorskip("torch")
    data = separable(48, size=SIZE, seed=3)  # 36 training images: 5 batches of 8
    plan = tlcore.plan(data, recipe=_recipe("torch", accumulate=2))
    text = plan.to_text()
    assert "3 steps per epoch (batch size 8 × 2 accumulated = effective batch 16)" in text
    assert [stage["steps"] for stage in plan.stages] == [6, 6]
    plain = tlcore.plan(data, recipe=_recipe("torch")).to_text()
    assert "5 steps per epoch (batch size 8)" in plain


class _Forgetful:
    """A train step written before ``accumulate`` and ``clip_norm``: the torch step, with
    what it would not have said."""

    @tlcore.hookimpl(tryfirst=True)
    def tl_train_step(self, backend, model, batch, state):
        from tlcore_torch.training import train_step

        result = train_step(model, batch, state)
        return {k: v for k, v in result.items() if k not in ("applied", "grad_norm")}


@pytest.mark.parametrize(("field", "value"), [("accumulate", 2), ("clip_norm", 1.0)])
def test_a_backend_that_ignores_a_step_option_is_refused(field, value, tmp_path):
    pytest.importorskip("torch")
    recipe = _recipe("torch", **{field: value})
    with plugin_registered(_Forgetful(), "forgetful"), pytest.raises(PluginError) as caught:
        tlcore.fit(separable(48, size=SIZE, seed=3), recipe=recipe, out=tmp_path / "run")
    assert f"train.{field}" in caught.value.message


# --- distributed: torchrun (two gloo processes) and a MirroredStrategy (two logical CPUs) ------

RANKS = """
import contextlib, json, sys
import numpy as np
backend, out = sys.argv[1], sys.argv[2]
if backend == "keras":  # before TensorFlow starts: two logical CPUs, one strategy over them
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from tlcore_keras.collective import KerasCollective
    collective = KerasCollective(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
from tlcore.interfaces import EMA_PREFIX, Batch, StepState
from tlcore.parallel import Placement
from tlcore.plugins.calls import BackendCalls
from tlcore.recipe import BackboneSpec, FreezeSpec, HeadSpec, StageSpec
calls = BackendCalls(backend)
if backend == "torch":
    import torch
    torch.set_num_threads(1)
    collective = calls.setup(Placement("auto", "32")).collective
rank, world = collective.rank, collective.world_size

def build(scope):
    calls.seed(0)
    with scope:
        spec = BackboneSpec("builtin:simple_cnn", "none", input_size=16)
        model = calls.attach_head(calls.load_backbone(spec), HeadSpec(), 3)
    calls.freeze(model, FreezeSpec(policy="none", batchnorm="frozen"))
    return model

dist, ref = build(collective.scope()), build(contextlib.nullcontext())
calls.set_weights(ref, calls.get_weights(dist), strict=True)
stage = StageSpec(name="s", optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=0.01)
with collective.scope():
    opt = calls.make_optimizer(dist, stage)
ref_opt = calls.make_optimizer(ref, stage)
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (26, 16, 16, 3), dtype=np.uint8)
y = rng.integers(0, 3, 26)
norms = []
for start in (0, 13):  # two optimiser steps of 13 images: batches of 8 and 5, accumulated
    for index, apply in ((np.arange(start, start + 8), False),
                         (np.arange(start + 8, start + 13), True)):
        mine = np.array_split(index, world)[rank]
        state = StepState(opt, 0.1, share=len(mine) / 13, apply=apply, clip_norm=0.1, ema=0.5)
        got = calls.train_step(dist, Batch(x[mine], y[mine]), state)
    whole = np.arange(start, start + 13)
    want = calls.train_step(ref, Batch(x[whole], y[whole]),
                            StepState(ref_opt, 0.1, clip_norm=0.1, ema=0.5))
    norms.append([got["grad_norm"], want["grad_norm"]])
wd, wr = calls.get_weights(dist), calls.get_weights(ref)
sd, sr = calls.get_optimizer_state(opt), calls.get_optimizer_state(ref_opt)
averages = [k for k in sr if k.startswith(EMA_PREFIX)]
report = {
    "weights": max(float(np.abs(wd[k] - wr[k]).max()) for k in wr),
    "moved": max(float(np.abs(wr[k] - w).max()) for k, w in calls.get_weights(build(
        contextlib.nullcontext())).items()),
    "averages": len(averages),
    "ema": max(float(np.abs(sd[k] - sr[k]).max()) for k in averages),
    "norms": norms,
}
with open(f"{out}/rank{rank}.json", "w") as fh:
    json.dump(report, fh)
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_accumulation_clipping_and_average_are_the_same_distributed(backend, tmp_path):
    """Each rank (replica) takes its part of each accumulated batch, 8 = 4 + 4 and 5 = 3 + 2:
    two optimiser steps end where one process ends on the whole 13 images, with the same
    clipped norm and the same average; the gradients are reduced at every batch."""
    pytest.importorskip(backend)
    script = tmp_path / "ranks.py"
    script.write_text(RANKS)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TLCORE_DIST_TIMEOUT": "60",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "TF_CONFIG"):
        env.pop(name, None)
    launch = ["-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"] \
        if backend == "torch" else []
    done = subprocess.run([sys.executable, *launch, str(script), backend, str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    reports = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("rank*.json"))]
    assert len(reports) == (2 if backend == "torch" else 1)
    for report in reports:
        assert report["moved"] > 1e-3  # the steps changed the weights...
        assert report["weights"] < 1e-6 and report["ema"] < 1e-6  # ...as one process does
        assert report["averages"] > 4
        for got, want in report["norms"]:
            assert got == pytest.approx(want, rel=1e-5) and got > 0.1  # clipped, same norm
