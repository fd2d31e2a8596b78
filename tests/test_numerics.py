"""Numerical guards: NaN and infinity never pass a check.

Recipe numbers are finite or refused when the recipe is built; a run whose loss, weights or
outputs stop being finite ends in one error naming the stage, the epoch and the step, keeping
the last good checkpoint to resume from at a lower rate (real runs on torch and keras); the
parity check refuses non-finite outputs on either side (a small numpy backend, a real
onnxruntime session, and a real torch model); a weights file holding NaN is refused by both
backends; JSON files are strict.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import typing
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tlcore
from tlcore.bundle.parity import verify_parity
from tlcore.errors import RecipeError, TlcoreError
from tlcore.files import write_arrays, write_json
from tlcore.interfaces import Backbone, Batch
from tlcore.plugins import plugin_registered
from tlcore.plugins.calls import BackendCalls
from tlcore.recipe import BackboneSpec, HeadSpec, Recipe, build_recipe
from tlcore.recipe.files import load_recipe_file
from tlcore.runfolder import RunFolder
from tlcore.testing import separable, write_image_folder
from tlcore.train.guards import check_epoch

from .conftest import run_tl

NON_FINITE = [math.nan, math.inf, -math.inf]

# --- recipe numbers ---------------------------------------------------------------------------


def _numeric_fields(cls: type = Recipe, prefix: str = "") -> list[tuple[str, type]]:
    """Every int and float field of the recipe, as (dotted path, type); a stage's as stage 0's."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint, path = hints[f.name], f"{prefix}{f.name}"
        args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
        if typing.get_origin(hint) is tuple and dataclasses.is_dataclass(args[0]):
            out += _numeric_fields(args[0], f"{path}.0.")
        elif typing.get_origin(hint) is tuple:
            if args[0] in (int, float):
                out.append((f"{path}.0", args[0]))  # a list of numbers: its first item
        elif dataclasses.is_dataclass(args[0]):
            out += _numeric_fields(args[0], f"{path}.")
        elif args[0] in (int, float):
            out.append((path, args[0]))
    return out


NUMERIC = _numeric_fields()


def test_the_numeric_fields_are_all_found():
    found = {path for path, _ in NUMERIC}
    assert {
        "train.stages.0.lr", "train.stages.0.weight_decay", "train.stages.0.momentum",
        "train.stages.0.warmup", "train.stages.0.label_smoothing", "head.dropout",
        "data.val_split", "export.tolerance", "export.max_accuracy_drop", "train.batch_size",
        "train.stages.0.epochs", "backbone.input_size", "train.seed", "head.hidden.0",
    } <= found


@pytest.mark.parametrize("value", NON_FINITE, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("path", [p for p, _ in NUMERIC])
def test_a_non_finite_recipe_number_is_refused_naming_its_field(path, value):
    parent, _, index = path.rpartition(".")
    listed = index == "0" and not parent.endswith("stages")
    with pytest.raises(RecipeError) as caught:
        build_recipe(overrides={parent: [value]} if listed else {path: value})
    assert caught.value.path == path
    assert "finite" in caught.value.hint or "integer" in caught.value.hint


@pytest.mark.parametrize("shortcut", ["lr", "val_split", "max_drop"])
def test_a_non_finite_shortcut_is_refused(shortcut):
    with pytest.raises(RecipeError, match="finite"):
        build_recipe(**{shortcut: math.nan})


def test_yaml_nan_in_a_recipe_file_is_refused(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("export:\n  tolerance: .nan\nhead:\n  dropout: 0.1\n")
    with pytest.raises(RecipeError, match=r"export\.tolerance"):
        build_recipe(load_recipe_file(recipe))


@settings(max_examples=150, deadline=None)
@given(
    field=st.sampled_from(
        ["head.dropout", "export.tolerance", "train.stages.0.lr", "data.val_split"]
    ),
    value=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from(["nan", "inf", "-inf", "1e999", "-0.0"]),
    ),
)
def test_a_float_field_holds_a_finite_number_in_range_or_is_refused(field, value):
    meta = _meta(field)
    try:
        recipe = build_recipe(overrides={field: value})
    except RecipeError as exc:
        assert exc.path == field
        return
    got = _get(recipe, field)
    assert math.isfinite(got) and meta["min"] <= got <= meta["max"]
    assert got == float(value)


@settings(max_examples=100, deadline=None)
@given(value=st.one_of(st.integers(), st.floats(allow_nan=True, allow_infinity=True)))
def test_an_int_field_holds_an_exact_integer_in_range_or_is_refused(value):
    try:
        recipe = build_recipe(overrides={"train.batch_size": value})
    except RecipeError as exc:
        assert exc.path == "train.batch_size"
        return
    assert isinstance(recipe.train.batch_size, int) and 1 <= recipe.train.batch_size <= 65536
    assert recipe.train.batch_size == value


def _meta(field: str) -> dict:
    cls: type = Recipe
    *parents, name = [p for p in field.split(".") if not p.isdigit()]
    for part in parents:
        hint = typing.get_type_hints(cls)[part]
        args = typing.get_args(hint)
        cls = args[0] if args and dataclasses.is_dataclass(args[0]) else hint
    return next(f.metadata for f in dataclasses.fields(cls) if f.name == name)


def _get(recipe: Recipe, field: str) -> float:
    value: object = recipe
    for part in field.split("."):
        value = value[int(part)] if part.isdigit() else getattr(value, part)  # type: ignore
    return value  # type: ignore[return-value]


def test_epochs_zero_in_every_stage_is_refused_one_stage_may_skip():
    with pytest.raises(RecipeError, match=r"train\.stages") as caught:
        build_recipe(epochs=0)
    assert "nothing trains" in caught.value.hint
    stages = [{"name": "skip", "epochs": 0}, {"name": "run", "epochs": 1}]
    assert build_recipe({"train": {"stages": stages}}).train.stages[0].epochs == 0


# --- strict JSON ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", NON_FINITE, ids=["nan", "inf", "-inf"])
def test_write_json_refuses_non_finite_numbers_and_keeps_the_old_file(tmp_path, value):
    target = tmp_path / "info.json"
    write_json(target, {"metrics": {"val_loss": 0.5}})
    with pytest.raises(TlcoreError, match=r"info.json: metrics\.val_loss is"):
        write_json(target, {"metrics": {"val_loss": np.float32(value)}})
    assert json.loads(target.read_text()) == {"metrics": {"val_loss": 0.5}}
    with pytest.raises(TlcoreError, match=r"history\.1\.loss"):
        write_json(target, {"history": [{"loss": 1.0}, {"loss": value}]})


# --- diverging runs ---------------------------------------------------------------------------

#: A head trained by SGD at lr 10 with weight decay 1: each step multiplies the weights by
#: about -9, so the loss overflows within the stage's first epoch, on every backend, after a
#: stage at a sane rate has written a good checkpoint.
DIVERGING = {
    "backbone": {"source": "builtin:simple_cnn", "weights": "none", "input_size": 16},
    "head": {"hidden": [8, 8]},
    "data": {"val_split": 0.25},
    "train": {"batch_size": 2, "seed": 1, "stages": [
        {"name": "warm", "epochs": 1, "lr": 1e-3, "freeze": {"policy": "all"}},
        {"name": "boom", "epochs": 3, "lr": 10.0, "optimizer": "sgd", "weight_decay": 1.0,
         "schedule": "constant", "freeze": {"policy": "all"}},
    ]},
}


def _strict(path: Path) -> object:
    """The JSON file, refusing the NaN and Infinity that Python's json would accept."""
    def refuse(word: str) -> None:
        raise AssertionError(f"{path} holds {word}")

    return json.loads(path.read_text(), parse_constant=refuse)


def _assert_stopped_at_the_good_checkpoint(run: Path) -> None:
    assert not (run / "model.onnx").exists() and not (run / "tlcore.json").exists()
    history = _strict(run / "history.json")
    assert [(row["stage"], row["epoch"]) for row in history] == [("warm", 1)]
    checkpoint = RunFolder(run).load_checkpoint()
    for name, array in checkpoint["weights"].items():
        assert np.isfinite(array).all(), name


def test_a_diverging_torch_run_stops_and_its_hint_resumes_it(tmp_path):
    data = write_image_folder(tmp_path / "data", per_class=16, size=16)
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps(DIVERGING))
    run = tmp_path / "run"
    failed = run_tl("train", data, "--recipe", recipe, "--out", run, "--quiet", check=False)
    assert failed.returncode == 2, failed.stderr
    error, hint = failed.stderr.strip().splitlines()[-2:]
    assert re.search(r"diverged in stage 'boom' \(2 of 2\) at step \d+/18 of epoch 1: the "
                     r"training loss is (nan|inf)", error), error
    assert "learning rate (10) is too high" in error
    assert "stage 'warm', epoch 1" in hint
    _assert_stopped_at_the_good_checkpoint(run)

    command = re.search(r"tl train (--resume \S+ --set \S+)", hint).group(1).split()
    assert command == ["--resume", str(run), "--set", "train.stages.1.lr=1"]
    command[-1] = "train.stages.1.lr=0.001"  # a tenth is still too high for this head
    done = run_tl("train", *command)
    assert "resuming with train.stages.1.lr 0.001 (was 10)" in done.stderr
    history = _strict(run / "history.json")
    assert [row["stage"] for row in history] == ["warm", "boom", "boom", "boom"]
    info = _strict(run / "tlcore.json")
    assert info["recipe"]["train"]["stages"][1]["lr"] == 0.001
    assert _strict(run / "run.json")["recipe"]["train"]["stages"][1]["lr"] == 0.001
    assert math.isfinite(info["onnx"]["parity"]["max_abs_diff"])


def test_a_diverging_keras_run_stops_and_resumes_at_a_lower_rate(tmp_path):
    pytest.importorskip("keras")
    x, y = separable(48, size=16)
    run = tmp_path / "run"
    with pytest.raises(TlcoreError, match=r"diverged in stage 'boom' .* of epoch 1") as caught:
        tlcore.fit((x, y), backend="keras", recipe=DIVERGING, out=run)
    assert f"tl train --resume {run} --set train.stages.1.lr=1" in caught.value.hint
    _assert_stopped_at_the_good_checkpoint(run)
    result = tlcore.fit(
        (x, y), out=run, resume=True, overrides={"train.stages.1.lr": 1e-3}
    )
    assert len(result.history) == 4
    assert all(math.isfinite(value) for value in result.metrics.values())
    assert (run / "model.onnx").is_file()


def test_a_run_diverging_before_its_first_checkpoint_starts_again_at_a_lower_rate(tmp_path):
    x, y = separable(48, size=16)
    recipe = {**DIVERGING, "train": {**DIVERGING["train"], "stages": [
        {**DIVERGING["train"]["stages"][1], "freeze": {"policy": "none"}}]}}
    run = tmp_path / "run"
    with pytest.raises(TlcoreError, match=r"stage 'boom' \(1 of 1\) at step \d+/18 of epoch 1"
                       ) as caught:
        tlcore.fit((x, y), recipe=recipe, out=run)
    hint = caught.value.hint
    assert hint.startswith("nothing was saved before it; start it again at a lower rate")
    assert f"tl train --resume {run} --set train.stages.0.lr=1 " in hint
    assert RunFolder(run).latest_checkpoint() is None
    result = tlcore.fit((x, y), out=run, resume=True, overrides={"train.stages.0.lr": 1e-3})
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert _strict(run / "run.json")["recipe"]["train"]["stages"][0]["lr"] == 0.001


def test_resume_takes_a_learning_rate_and_nothing_else(tmp_path):
    from click.testing import CliRunner

    from tlcore.cli import cli

    runner = CliRunner()
    for extra, named in [
        (["--epochs", "3"], "--epochs"),
        (["--set", "train.stages.0.epochs=3"], "--set train.stages.0.epochs"),
        (["--set", "train.batch_size=4"], "--set train.batch_size"),
    ]:
        result = runner.invoke(cli, ["train", "--resume", str(tmp_path), *extra])
        assert result.exit_code == 2
        assert named in result.output and "train.stages.N.lr" in result.output
    # A learning rate passes the option check (and then meets the missing run folder).
    result = runner.invoke(
        cli, ["train", "--resume", str(tmp_path), "--set", "train.stages.1.lr=1e-4"]
    )
    assert result.exit_code == 2 and "not a tlcore run folder" in result.output


def _guard_run(tmp_path: Path, validation: dict[str, float], outputs: np.ndarray):
    """The little of a trainer and a stage that the guards read (no checkpoint yet): the
    model's validation outputs are ``outputs``, their metrics ``validation``."""
    recipe = build_recipe({"train": {"stages": [{"name": "only", "lr": 0.5}]}})
    trainer = SimpleNamespace(recipe=recipe, folder=RunFolder(tmp_path), history=[])
    feed = SimpleNamespace(logits=lambda: outputs, evaluate=lambda logits: dict(validation))
    return trainer, SimpleNamespace(stage=recipe.train.stages[0], index=0, val_feed=feed)


FINE = np.zeros((2, 2))


@pytest.mark.parametrize(
    ("train", "validation", "outputs", "arrays", "message"),
    [
        ({"loss": math.inf}, {}, FINE, {}, "loss is inf"),
        ({"loss": 0.1}, {"val_loss": math.nan}, FINE, {}, "val_loss is nan"),
        # -inf for a class that is not the label leaves the cross-entropy finite
        ({"loss": 0.1}, {}, np.array([[0.0, -np.inf], [1.0, 0.0]]), {},
         "outputs are NaN or inf for 1 validation images"),
        ({"loss": 0.1}, {}, FINE, {"weight": {"fc.b": np.array([np.inf])}},
         "weight 'fc.b' holds NaN or inf"),
        ({"loss": 0.1}, {}, FINE,
         {"weight": {"fc.b": np.ones(2)}, "optimiser state": {"0.exp_avg": np.array([np.nan])}},
         "optimiser state '0.exp_avg' holds NaN or inf"),
    ],
)
def test_an_epoch_that_ends_non_finite_stops_before_its_checkpoint(
    tmp_path, train, validation, outputs, arrays, message
):
    trainer, run = _guard_run(tmp_path, validation, outputs)
    with pytest.raises(TlcoreError, match=re.escape(message)) as caught:
        check_epoch(trainer, run, 4, train, arrays)
    assert "stage 'only' (1 of 1) at the end of epoch 5" in caught.value.message
    assert "nothing was saved before it" in caught.value.hint
    assert "train.stages.0.lr=0.05" in caught.value.hint


def test_a_finite_epoch_passes_with_its_validation_metrics(tmp_path):
    arrays = {"weight": {"w": np.ones(2), "steps": np.array([3])}}
    for outputs in (FINE, np.zeros((0, 2))):  # with and without validation images
        trainer, run = _guard_run(tmp_path, {"val_loss": 0.3}, outputs)
        assert check_epoch(trainer, run, 0, {"loss": 0.1}, arrays) == {"val_loss": 0.3}


# --- parity -----------------------------------------------------------------------------------

MEAN = "mean-test"


class MeanModel:
    """Logits: each channel's mean pixel, times ``scale``."""

    def __init__(self, scale: float) -> None:
        self.scale = scale


class MeanBackend(tlcore.Backend):
    """A numpy backend whose model is :class:`MeanModel`: enough for the parity check."""

    name = MEAN
    packages = ("numpy",)

    def owns_model(self, model: object) -> bool:
        return isinstance(model, MeanModel)

    def load_backbone(self, spec: BackboneSpec) -> Backbone | None:
        return None

    def eval_step(self, model: MeanModel, batch: Batch) -> np.ndarray:
        x = np.asarray(batch.x, np.float32)
        return (x.mean(axis=(1, 2)) / 255 * model.scale).astype(np.float32)


def _mean_session(scale: float):
    """onnxruntime on the graph of :class:`MeanModel`: uint8 NHWC in, softmax out."""
    import onnxruntime
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Cast", ["images"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["x"], ["m"], axes=[1, 2], keepdims=0),
        helper.make_node("Mul", ["m", "k"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "mean",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, ["batch", 4, 4, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor("k", TensorProto.FLOAT, [], [scale / 255])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnxruntime.InferenceSession(
        proto.SerializeToString(), providers=["CPUExecutionProvider"]
    )


@pytest.mark.parametrize(
    ("framework", "onnx", "side"),
    [
        (1.0, 1.0, None),  # the same finite model on both sides passes
        (math.nan, 1.0, "the mean-test model"),
        (1.0, math.nan, "onnxruntime"),
        (math.nan, math.nan, "the mean-test model"),  # what used to pass: NaN == NaN nowhere
        (math.inf, math.inf, "the mean-test model"),
    ],
)
def test_parity_fails_on_non_finite_outputs_of_either_side(framework, onnx, side):
    samples = np.random.default_rng(0).integers(0, 256, (6, 4, 4, 3), dtype=np.uint8)
    with plugin_registered(MeanBackend()):
        if side is None:
            parity = verify_parity(_mean_session(onnx), MEAN, MeanModel(framework), samples, 1e-4)
            assert parity.max_abs_diff < 1e-4 and parity.agreement == 1.0
            return
        with pytest.raises(TlcoreError, match=re.escape(f"{side} gives non-finite")):
            verify_parity(_mean_session(onnx), MEAN, MeanModel(framework), samples, 1e-4)


@pytest.mark.parametrize("tolerance", [math.nan, math.inf, -1.0])
def test_parity_refuses_a_tolerance_that_is_no_bound(tolerance):
    samples = np.zeros((2, 4, 4, 3), np.uint8)
    with plugin_registered(MeanBackend()), pytest.raises(TlcoreError, match="tolerance"):
        verify_parity(_mean_session(1.0), MEAN, MeanModel(1.0), samples, tolerance)


def test_a_torch_model_with_nan_weights_is_never_exported(tmp_path):
    from tlcore.bundle.graph import export_onnx

    calls = BackendCalls("torch")
    backbone = calls.load_backbone(BackboneSpec("builtin:simple_cnn", "none", input_size=16))
    model = calls.attach_head(backbone, HeadSpec(), 3)
    weights = calls.get_weights(model)
    name = next(n for n, w in weights.items() if w.dtype.kind == "f" and w.ndim == 2)
    weights[name] = np.full_like(weights[name], np.nan)
    calls.set_weights(model, weights, strict=True)
    samples = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    with pytest.raises(TlcoreError, match="the torch model gives non-finite probabilities"):
        export_onnx("torch", model, tmp_path, samples, ["a", "b", "c"],
                    backbone.preprocessing)
    assert not (tmp_path / "model.onnx").exists()


# --- weights files ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_a_weights_file_holding_nan_is_refused_with_the_file_and_tensor(backend, tmp_path):
    pytest.importorskip(backend)
    calls = BackendCalls(backend)
    spec = BackboneSpec("builtin:simple_cnn", "none", input_size=16)
    weights = calls.get_weights(calls.attach_head(calls.load_backbone(spec), HeadSpec(), 2))
    path = tmp_path / "diverged.npz"
    name = next(n for n, w in weights.items() if w.dtype.kind == "f" and w.size > 1)
    write_arrays(path, {**weights, name: np.full_like(weights[name], np.nan)})
    spec = dataclasses.replace(spec, weights=str(path))
    with pytest.raises(TlcoreError) as caught:
        calls.load_backbone(spec)
    assert f"weights file {path} holds non-finite values: tensor {name!r}" in caught.value.message
    assert "diverged" in caught.value.hint


def test_a_torch_state_dict_holding_inf_is_refused(tmp_path):
    import torch

    path = tmp_path / "w.pt"
    torch.save({"fc.weight": torch.tensor([[1.0, float("inf")]])}, path)
    spec = BackboneSpec("builtin:simple_cnn", str(path), input_size=16)
    with pytest.raises(TlcoreError, match=r"w\.pt holds non-finite values: tensor 'fc\.weight' "
                                          r"has 1 NaN or infinite values of 2"):
        BackendCalls("torch").load_backbone(spec)

