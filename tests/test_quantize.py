"""int8 bundles, training curves and confusion pictures: real training, real onnxruntime
quantisation, real PNG files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

from tlcore.bundle.export import quantize_run
from tlcore.bundle.layout import file_sha256
from tlcore.bundle.quantize import input_prefix
from tlcore.data import load_datasets
from tlcore.errors import RecipeError, TlcoreError
from tlcore.recipe import build_recipe
from tlcore.report import plots
from tlcore.runfolder import read_arrays, write_arrays
from tlcore.runtime import Predictor

from .conftest import run_tl

RECIPE = """\
backbone: {source: "builtin:simple_cnn", weights: none, input_size: 16}
train:
  batch_size: 16
  seed: 3
  stages:
    - {name: head, epochs: 2, lr: 0.003, freeze: {policy: none}}
    - {name: tune, epochs: 1, lr: 0.001, freeze: {policy: none}}
data: {val_split: 0.2}
"""


@pytest.fixture(scope="module")
def trained(small_digits, tmp_path_factory):
    """One real two-stage run, quantised (static) by ``tl train`` itself: (run, stdout)."""
    root = tmp_path_factory.mktemp("quantize")
    (root / "recipe.yaml").write_text(RECIPE)
    out = run_tl(
        "train", small_digits, "--recipe", root / "recipe.yaml", "--quantize", "static",
        "--max-drop", "0.1", "--out", root / "run", "--quiet",
    )
    return root / "run", out.stdout


@pytest.fixture
def bundle(trained, tmp_path):
    """A private copy of the trained run, free to modify."""
    return shutil.copytree(trained[0], tmp_path / "run")


def _info(run) -> dict:
    return json.loads((run / "tlcore.json").read_text())


def _accuracy(model_file, run) -> tuple[float, int]:
    """The model's accuracy on the run's validation split, with a session of our own."""
    info = _info(run)
    _, val = load_datasets(build_recipe(info["recipe"]).data, info["recipe"]["train"]["seed"])
    images = val.images(np.arange(len(val)), tuple(info["input"]["size"]))
    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    predicted = session.run(["probabilities"], {"images": images})[0].argmax(axis=1)
    return float((predicted == val.labels).mean()), len(val)


def _valid_png(path) -> None:
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
    with Image.open(path) as image:
        assert min(image.size) > 100


def test_static_quantisation_at_train_time_becomes_the_default(trained):
    run, stdout = trained
    info = _info(run)
    q = info["quantized"]
    assert q["mode"] == "static" and q["file"] == "model.int8.onnx"
    assert q["sha256"] == file_sha256(run / "model.int8.onnx")
    assert q["calibration"] == {"images": 300, "data": "training"}
    assert q["accuracy"]["images"] == 80 and q["accuracy"]["data"] == "validation"
    # Both figures measured again here, independently, on the same images.
    float_acc, count = _accuracy(run / "model.onnx", run)
    int8_acc, _ = _accuracy(run / "model.int8.onnx", run)
    assert q["accuracy"]["float"] == pytest.approx(float_acc)
    assert q["accuracy"]["quantized"] == pytest.approx(int8_acc)
    assert q["accuracy"]["float"] == pytest.approx(info["metrics"]["val_accuracy"], abs=1 / count)
    assert q["accuracy"]["float"] > 0.5
    assert q["max_accuracy_drop"] == 0.1
    assert q["accepted"] is (float_acc - int8_acc <= 0.1) is True
    assert info["default_model"] == "model.int8.onnx"
    assert f"accuracy {int8_acc:.4f} vs float {float_acc:.4f}" in stdout

    model = onnx.load(str(run / "model.int8.onnx"))
    (image,) = model.graph.input
    assert image.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    ops = [node.op_type for node in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    int8 = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8}
    dequantized = {n.output[0]: n.input[0] for n in model.graph.node
                   if n.op_type == "DequantizeLinear"}
    conv_weights = [n.input[1] for n in model.graph.node if n.op_type == "Conv"]
    assert len(conv_weights) == 3
    assert all(dequantized.get(w) in int8 for w in conv_weights), "conv weights are not int8"
    # Activations are uint8 (U8S8, what x86 int8 kernels take), and the preprocessing in
    # front of the first convolution stays float: nothing is quantised before it.
    zero_points = {t.name: t.data_type for t in model.graph.initializer}
    activations = [n.input[2] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert activations and {zero_points[z] for z in activations} == {onnx.TensorProto.UINT8}
    kinds = {n.name: n.op_type for n in model.graph.node}
    before_conv = [kinds[name] for name in input_prefix(run / "model.int8.onnx")]
    assert {"Mul", "Add"} <= set(before_conv), before_conv  # the normalisation, in float
    for op in ("QuantizeLinear", "DequantizeLinear"):  # only the first convolution's input
        assert before_conv.count(op) == 1, before_conv
    assert not any(op.startswith("QLinear") for op in before_conv), before_conv
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["tlcore.labels"]) == [str(d) for d in range(10)]

    predictor = Predictor(run)
    assert predictor.model_file.name == "model.int8.onnx"
    assert Predictor(run, model="model.onnx").model_file.name == "model.onnx"
    _valid_png(run / "history.png")


def test_tl_export_dynamic_replaces_the_int8_model(bundle, small_digits):
    before = _info(bundle)["quantized"]["sha256"]
    out = run_tl("export", bundle, "--quantize", "dynamic", "--max-drop", "0.1")
    info = _info(bundle)
    q = info["quantized"]
    assert q["mode"] == "dynamic" and q["calibration"] is None
    assert q["sha256"] == file_sha256(bundle / "model.int8.onnx") != before
    assert f"accuracy {q['accuracy']['quantized']:.4f} vs float {q['accuracy']['float']:.4f}" \
        in out.stdout
    assert q["accepted"] and info["default_model"] == "model.int8.onnx"
    ops = {n.op_type for n in onnx.load(str(bundle / "model.int8.onnx")).graph.node}
    assert ops & {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"}
    predictor = Predictor(bundle)
    assert predictor.model_file.name == "model.int8.onnx"
    assert len(predictor.predict(small_digits / "3")) == 40


def _outlier_channel(run, factor: float = 1000.0) -> None:
    """Make one channel after the first block ``factor`` times larger and undo it in the next
    conv: the float model computes the same function (ReLU and max-pool commute with a
    positive scale), but one int8 range per activation tensor can no longer resolve the
    other channels, the classic way quantisation breaks a model."""
    weights = read_arrays(run / "native" / "weights.npz")
    for key in ("backbone.blocks.0.1.weight", "backbone.blocks.0.1.bias"):
        weights[key][0] *= factor
    weights["backbone.blocks.1.0.weight"][:, 0] /= factor
    write_arrays(run / "native" / "weights.npz", weights)


def test_a_quantised_model_that_loses_too_much_is_not_the_default(bundle):
    float_before = _info(bundle)["quantized"]["accuracy"]["float"]
    _outlier_channel(bundle)
    out = run_tl("export", bundle, "--quantize", "static", "--max-drop", "0.05")
    info = _info(bundle)
    q = info["quantized"]
    assert q["accuracy"]["float"] == pytest.approx(float_before, abs=1 / 80 + 1e-9)
    assert q["accuracy"]["drop"] > 0.05, f"expected a real accuracy loss, got {q['accuracy']}"
    assert q["accuracy"]["drop"] == pytest.approx(
        q["accuracy"]["float"] - q["accuracy"]["quantized"]
    )
    assert q["max_accuracy_drop"] == 0.05 and q["accepted"] is False
    assert info["default_model"] == "model.onnx"
    assert "model.onnx stays the default model" in out.stdout
    assert Predictor(bundle).model_file.name == "model.onnx"
    # The rejected file is kept and still verified, for whoever wants to look at it.
    assert q["sha256"] == file_sha256(bundle / "model.int8.onnx")
    assert Predictor(bundle, model="model.int8.onnx").model_file.name == "model.int8.onnx"

    # The same model within a looser limit (no new float export): accepted, the default.
    again = quantize_run(bundle, "static", max_drop=1.0)
    assert again.accuracy == pytest.approx(q["accuracy"]["quantized"]) and again.accepted
    assert _info(bundle)["default_model"] == "model.int8.onnx"
    assert Predictor(bundle).model_file.name == "model.int8.onnx"


def test_the_default_model_is_verified_and_can_be_removed(bundle, small_digits):
    data = bytearray((bundle / "model.int8.onnx").read_bytes())
    data[-10] ^= 0xFF
    (bundle / "model.int8.onnx").write_bytes(bytes(data))
    with pytest.raises(TlcoreError, match=r"model\.int8\.onnx does not match the sha256"):
        Predictor(bundle)
    with pytest.raises(TlcoreError, match="not a file name inside the bundle"):
        Predictor(bundle, model="../model.onnx")

    assert quantize_run(bundle, "none") is None
    info = _info(bundle)
    assert "quantized" not in info and "default_model" not in info
    assert not (bundle / "model.int8.onnx").exists()
    assert Predictor(bundle).model_file.name == "model.onnx"


def test_tl_eval_writes_report_and_confusion_picture(trained, small_digits, tmp_path):
    run = shutil.copytree(trained[0], tmp_path / "run")
    out = run_tl("eval", run, small_digits, "--json")
    folder = run / "eval" / small_digits.name
    report = json.loads((folder / "report.json").read_text())
    assert report == json.loads(out.stdout)
    assert report["model"] == "model.int8.onnx" and report["count"] == 400
    assert str(folder / "confusion.png") in out.stderr
    _valid_png(folder / "confusion.png")


def test_recipe_checks_the_quantisation_fields():
    assert build_recipe(max_drop=0.05).export.max_accuracy_drop == 0.05
    with pytest.raises(RecipeError, match=r"export\.max_accuracy_drop"):
        build_recipe({"export": {"max_accuracy_drop": 1.5}})
    with pytest.raises(RecipeError, match=r"export\.calibration_images"):
        build_recipe({"export": {"calibration_images": 0}})
    with pytest.raises(RecipeError, match=r"export\.quantize") as error:
        build_recipe({"export": {"quantize": "static", "formats": ["native"]}})
    assert "onnx" in error.value.hint


def test_pictures_are_skipped_with_one_warning_without_matplotlib(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import now fails
    monkeypatch.setattr(plots, "_warned", False)
    warnings: list[str] = []
    history = [{"stage": "s", "epoch": 1, "loss": 1.0, "accuracy": 0.5}]
    assert plots.plot_history(history, tmp_path / "h.png", warn=warnings.append) is None
    assert plots.plot_confusion([[1]], ["a"], tmp_path / "c.png", warn=warnings.append) is None
    assert len(warnings) == 1 and "pip install 'tlcore[plots]'" in warnings[0]
    assert list(tmp_path.iterdir()) == []


def test_no_matplotlib_or_onnxruntime_on_import_or_help():
    code = (
        "import sys\nimport tlcore, tlcore.cli, tlcore.bundle.quantize\n"
        "import tlcore.report.plots, tlcore.report.evaluate\n"
        "from tlcore.cli import cli\n"
        "for args in ([], ['export'], ['eval'], ['train']):\n"
        "    try:\n        cli.main(args=[*args, '--help'], prog_name='tl')\n"
        "    except SystemExit:\n        pass\n"
        "print([m for m in ('matplotlib', 'onnxruntime', 'onnx', 'torch') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert "static" in out.stdout and "speeds up CNN" in " ".join(out.stdout.split())


def test_static_calibration_takes_the_range_of_every_batch(bundle, tmp_path):
    """Two calibration batches (16 images each): one all white, one all black. The first
    convolution's input range must span both; onnxruntime's chunked calibration once kept only
    the last chunk's range, and failed outright on an even number of batches."""
    from tlcore.bundle.quantize import quantize_model
    from tlcore.interfaces import Preprocessing

    prep = Preprocessing.from_dict(_info(bundle)["input"])
    height, width = prep.size
    white = np.full((16, height, width, 3), 255, np.uint8)
    samples = np.concatenate([white, np.zeros_like(white)])
    target = tmp_path / "int8.onnx"
    quantize_model(bundle / "model.onnx", target, "static", samples, tmp_path)
    model = onnx.load(str(target))
    values = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    kinds = {n.name: n for n in model.graph.node}
    (quantize,) = [kinds[n] for n in input_prefix(target) if kinds[n].op_type == "QuantizeLinear"]
    gain, offset = np.array(prep.affine())
    normalised = np.concatenate([255 * gain + offset, offset])
    low, high = min(0.0, normalised.min()), max(0.0, normalised.max())
    assert float(values[quantize.input[1]]) == pytest.approx((high - low) / 255, rel=1e-3)
