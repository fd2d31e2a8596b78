"""The ONNX bundle: models fine-tuned for real, real ONNX files, real onnxruntime sessions."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import transformers
from PIL import Image

import tlcore
from tlcore import plugins
from tlcore.build import load_run
from tlcore.bundle import graph
from tlcore.bundle.export import export_run
from tlcore.bundle.graph import export_onnx
from tlcore.bundle.layout import SCHEMA_VERSION, file_sha256
from tlcore.bundle.parity import softmax
from tlcore.data import load_image, scan_folder
from tlcore.errors import TlcoreError
from tlcore.interfaces import Batch, Preprocessing
from tlcore.plugins import hook
from tlcore.report.evaluate import evaluate_run
from tlcore.runtime import Predictor
from tlcore_torch.export import export_onnx as torch_export_onnx

from .conftest import run_tl
from .test_cli import _loaded_after
from .test_torch_backend import TINY_RESNET, TINY_VIT

torch.set_num_threads(2)

BACKBONES = ("simple_cnn", "hf_resnet", "hf_vit")
FRAMEWORKS = ("torch", "tensorflow", "keras", "transformers")
BLOCKER = f"""
import sys
class _Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {FRAMEWORKS!r}:
            raise ImportError(f"{{name}} is blocked in this test")
sys.meta_path.insert(0, _Blocked())
from tlcore.cli import main
main(sys.argv[1:])
"""


def _source(name: str, folder) -> str:
    """The backbone source for ``name``: the builtin CNN, or a tiny HF model saved to disk."""
    if name == "simple_cnn":
        return "builtin:simple_cnn"
    torch.manual_seed(0)
    config = (
        transformers.ResNetConfig(**TINY_RESNET)
        if name == "hf_resnet"
        else transformers.ViTConfig(**TINY_VIT)
    )
    transformers.AutoModel.from_config(config).save_pretrained(folder / name)
    return f"hf:{folder / name}"


@pytest.fixture(scope="module")
def train_run(small_digits, tmp_path_factory):
    """Fine-tune a backbone on the small digits (whole network trainable), once per name."""
    runs = {}

    def get(name: str):
        if name not in runs:
            root = tmp_path_factory.mktemp(name)
            freeze = {"policy": "none", "batchnorm": "train"}  # exported BN with real stats
            stage = {"name": "tune", "epochs": 1, "lr": 3e-3, "freeze": freeze}
            recipe = {
                "backbone": {"source": _source(name, root), "input_size": 32},
                "train": {"batch_size": 32, "seed": 3, "stages": [stage]},
            }
            if name == "simple_cnn":  # from scratch, at 16 px, long enough to learn the digits
                recipe["backbone"].update(weights="none", input_size=16)
                recipe["train"]["batch_size"] = 16
                stage.update(epochs=3, schedule="cosine", freeze={"policy": "none"})
            runs[name] = tlcore.fit(small_digits, recipe=recipe, out=root / "run", quiet=True).path
        return runs[name]

    return get


@pytest.fixture
def cnn_run(train_run, tmp_path):
    """A private copy of the simple_cnn bundle, free to modify."""
    return shutil.copytree(train_run("simple_cnn"), tmp_path / "bundle")


def _sample_images(folder, size):
    """Eight real images, one from each of eight classes."""
    dataset = scan_folder(folder)
    indices = [int(np.flatnonzero(dataset.labels == c)[0]) for c in range(8)]
    return dataset.images(indices, size)


@pytest.mark.parametrize("name", BACKBONES)
def test_parity_at_batch_1_and_8(name, train_run, small_digits):
    run = train_run(name)
    info = json.loads((run / "tlcore.json").read_text())
    recorded = info["onnx"]
    assert recorded["sha256"] == file_sha256(run / "model.onnx")
    # Every exported file, each format's, with its checksum.
    exports = info["exports"]
    assert exports["onnx"] == {"model.onnx": recorded["sha256"]}
    native = sorted(exports["native"])
    assert native and all(name.startswith("native/") for name in native)
    assert native == sorted(p.relative_to(run).as_posix()
                            for p in (run / "native").rglob("*") if p.is_file())
    assert all(exports["native"][name] == file_sha256(run / name) for name in native)
    assert recorded["opset"] == 17
    assert recorded["parity"]["batch_sizes"] == [1, 8]
    assert recorded["parity"]["max_abs_diff"] <= 1e-4
    assert recorded["parity"]["top1_agreement"] == 1.0

    model = onnx.load(str(run / "model.onnx"))
    (image,) = model.graph.input
    assert image.name == "images"
    assert image.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert image.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert [o.name for o in model.graph.output] == ["probabilities", "logits", "embeddings"]

    # Checked again here, independently of the core: a fresh session, the rebuilt model.
    _, _, native, prep = load_run(run)
    x = _sample_images(small_digits, prep.size)
    logits = hook().tl_eval_step(backend="torch", model=native, batch=Batch(x, np.zeros(8)))
    expected = softmax(logits)
    session = ort.InferenceSession(str(run / "model.onnx"), providers=["CPUExecutionProvider"])
    batch8, onnx_logits = session.run(["probabilities", "logits"], {"images": x})
    batch1 = np.concatenate([session.run(["probabilities"], {"images": x[i : i + 1]})[0]
                             for i in range(8)])
    for got in (batch8, batch1):
        np.testing.assert_allclose(got, expected, atol=1e-4)
        assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()
    np.testing.assert_allclose(onnx_logits, logits, atol=1e-4)


def test_model_onnx_alone_gives_labels_and_probabilities(train_run, small_digits, tmp_path):
    run = train_run("simple_cnn")
    alone = shutil.copy(run / "model.onnx", tmp_path / "digits.onnx")
    session = ort.InferenceSession(str(alone), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    labels = json.loads(meta["tlcore.labels"])
    spec = Preprocessing.from_dict(json.loads(meta["tlcore.input"]))
    assert labels == [str(d) for d in range(10)]
    assert spec.size == (16, 16)
    assert meta["tlcore.schema_version"] == str(SCHEMA_VERSION)
    assert meta["tlcore.version"] == tlcore.__version__
    path = small_digits / "7" / sorted(p.name for p in (small_digits / "7").iterdir())[0]
    probs = session.run(["probabilities"], {"images": load_image(path, spec.size)[None]})[0][0]
    assert probs.sum() == pytest.approx(1.0, abs=1e-5)

    bare = Predictor(alone).predict(path)[0]
    bundled = Predictor(run).predict(path)[0]
    assert bare.label == bundled.label == labels[int(probs.argmax())]
    assert bare.probability == pytest.approx(float(probs.max()), abs=1e-6)


def test_predictor_takes_files_folders_pillow_images_and_arrays(train_run, small_digits):
    predictor = Predictor(train_run("simple_cnn"), threads=1)
    folder = small_digits / "2"
    files = sorted(folder.iterdir())[:5]
    by_path = predictor.predict(files, top_k=3)
    assert [p.source for p in by_path] == [str(f) for f in files]
    for p in by_path:
        probabilities = [prob for _, prob in p.top]
        assert len(p.top) == 3 and probabilities == sorted(probabilities, reverse=True)
    with Image.open(files[0]) as image:
        assert predictor.predict(image, top_k=3)[0].top == by_path[0].top
    stacked = np.stack([load_image(f, 32) for f in files])
    assert predictor.predict(stacked[1], top_k=3)[0].top == by_path[1].top
    assert [p.top for p in predictor.predict(stacked, top_k=3)] == [p.top for p in by_path]
    whole = predictor.predict(folder, batch_size=32)
    assert [p.top for p in predictor.predict(folder, batch_size=3)] == [p.top for p in whole]
    assert len(whole) == 40
    assert len(predictor.predict(files[0], top_k=99)[0].top) == 10


def test_a_tampered_model_is_refused(cnn_run, small_digits):
    data = bytearray((cnn_run / "model.onnx").read_bytes())
    data[-10] ^= 0xFF
    (cnn_run / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(TlcoreError, match="does not match the sha256") as info:
        Predictor(cnn_run)
    assert "tl export" in info.value.hint
    out = run_tl("predict", cnn_run, small_digits / "1", check=False)
    assert out.returncode == 2 and "sha256" in out.stderr


def test_a_newer_schema_version_is_refused(cnn_run, tmp_path):
    info = json.loads((cnn_run / "tlcore.json").read_text())
    info["schema_version"] = SCHEMA_VERSION + 1
    (cnn_run / "tlcore.json").write_text(json.dumps(info))
    with pytest.raises(TlcoreError, match=f"schema version {SCHEMA_VERSION + 1}") as error:
        Predictor(cnn_run)
    assert f"version {SCHEMA_VERSION + 1}" in error.value.hint

    model = onnx.load(str(cnn_run / "model.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    onnx.helper.set_model_props(model, {**meta, "tlcore.schema_version": "7"})
    onnx.save(model, str(tmp_path / "future.onnx"))
    with pytest.raises(TlcoreError, match="schema version 7"):
        Predictor(tmp_path / "future.onnx")


def test_predict_and_eval_run_without_any_framework(train_run, small_digits, digits_folder):
    run = train_run("simple_cnn")

    def tl(*args):
        return subprocess.run(
            [sys.executable, "-c", BLOCKER, *map(str, args)],
            capture_output=True, text=True, check=True,
        ).stdout

    files = sorted((small_digits / "5").iterdir())[:3]
    predicted = json.loads(tl("predict", run, *files, small_digits / "6", "--json", "-k", "2"))
    assert len(predicted) == 3 + 40
    expected = Predictor(run).predict(files, top_k=2)
    for got, want in zip(predicted, expected, strict=False):
        assert got["source"] == want.source and got["label"] == want.label
        assert [t["probability"] for t in got["top"]] == pytest.approx(
            [p for _, p in want.top], abs=1e-6
        )
    rows = tl("predict", run, files[0], "--csv", "--top-k", "3", "--threads", "1").splitlines()
    assert rows[0] == "source,rank,label,probability"
    assert [r.split(",")[1] for r in rows[1:]] == ["1", "2", "3"]
    assert rows[1].split(",")[2] == expected[0].label

    onnx_report = json.loads(tl("eval", run, digits_folder, "--json"))
    native_report = evaluate_run(run, digits_folder, native=True)
    assert onnx_report["engine"] == "onnxruntime" and native_report["engine"] == "torch"
    assert onnx_report["count"] == native_report["count"] == 1797
    assert onnx_report["accuracy"] == native_report["accuracy"] > 0.5
    assert onnx_report["confusion"] == native_report["confusion"]


def test_tl_export_writes_another_opset(cnn_run):
    out = run_tl("export", cnn_run, "--opset", "13")
    assert "opset 13" in out.stdout
    info = json.loads((cnn_run / "tlcore.json").read_text())
    assert info["onnx"]["opset"] == 13
    assert info["onnx"]["parity"]["max_abs_diff"] <= 1e-4
    # The new file's checksum, in the onnx section and in the record of every export.
    assert info["exports"]["onnx"] == {"model.onnx": file_sha256(cnn_run / "model.onnx")}
    model = onnx.load(str(cnn_run / "model.onnx"))
    assert {op.version for op in model.opset_import if op.domain in ("", "ai.onnx")} == {13}
    assert Predictor(cnn_run).labels == tuple(str(d) for d in range(10))


class _Exporter:
    """A plugin that answers ``tl_export(fmt="onnx")`` before the torch backend does: it exports
    a copy of the model, perturbed by ``change``, with the given torch exporters."""

    def __init__(self, change=None, exporters=("torchscript",)):
        self.change = change
        self.exporters = exporters

    @tlcore.hookimpl(tryfirst=True)
    def tl_export(self, backend, model, fmt, path, example, opset):
        if fmt != "onnx":
            return None
        model = copy.deepcopy(model)
        if self.change:
            with torch.no_grad():
                self.change(model)
        return torch_export_onnx(model, path, example, opset, exporters=self.exporters)


def _export_with(plugin, run, folder, small_digits, opset=17):
    _, classes, model, prep = load_run(run)
    with plugins.plugin_registered(plugin, "test-exporter"):
        samples = _sample_images(small_digits, prep.size)
        return export_onnx("torch", model, folder, samples, classes, prep, opset=opset)


def test_an_export_that_differs_from_the_model_is_an_error(train_run, small_digits, tmp_path):
    def nudge(model):
        model.head[-1].bias[0] += 0.05

    with pytest.raises(TlcoreError, match="ONNX export does not match the torch model: sample"):
        _export_with(_Exporter(nudge), train_run("simple_cnn"), tmp_path, small_digits)
    assert list(tmp_path.iterdir()) == []


def test_the_dynamo_exporter_passes_the_same_check(train_run, small_digits, tmp_path):
    # The dynamo exporter writes opset 18 and up; asked for less it would be refused.
    result = _export_with(
        _Exporter(exporters=("dynamo",)), train_run("simple_cnn"), tmp_path, small_digits, 18
    )
    assert result.opset == 18 and result.parity.max_abs_diff <= 1e-4
    assert result.path == tmp_path / "model.onnx"
    assert Predictor(result.path).predict(_sample_images(small_digits, 16)[0])[0].label


@pytest.mark.parametrize("command", ["predict", "export"])
def test_help_of_new_commands_loads_no_framework(command):
    code = (
        "from tlcore.cli import cli\n"
        f"try:\n    cli.main(args=[{command!r}, '--help'], prog_name='tl')\n"
        "except SystemExit:\n    pass"
    )
    assert _loaded_after(code) == []
    assert "Example" in run_tl(command, "--help").stdout


def test_a_model_over_the_protobuf_limit_keeps_its_tensors_beside_it(
    cnn_run, small_digits, monkeypatch
):
    # No 2 GB model here: the limit is lowered, the code path is the one a big model takes.
    expected = Predictor(cnn_run).predict(small_digits / "4")
    monkeypatch.setattr(graph, "_PROTOBUF_LIMIT", 0)
    result = export_run(cnn_run)
    assert result.data_sha256 == file_sha256(cnn_run / "model.onnx.data")
    assert (cnn_run / "model.onnx").stat().st_size < 10_000
    info = json.loads((cnn_run / "tlcore.json").read_text())["onnx"]
    assert info["data_file"] == "model.onnx.data" and info["data_sha256"] == result.data_sha256
    got = Predictor(cnn_run).predict(small_digits / "4")
    assert [p.top for p in got] == [p.top for p in expected]
    with open(cnn_run / "model.onnx.data", "r+b") as fh:
        fh.write(b"\0\0\0\0")
    with pytest.raises(TlcoreError, match=r"model\.onnx\.data does not match the sha256"):
        Predictor(cnn_run)


def test_predictor_converts_any_image_mode_and_resizes_like_training(train_run, tmp_path):
    predictor = Predictor(train_run("simple_cnn"))
    rgb = np.stack([np.linspace(0, 255, 32, dtype=np.uint8)] * 32)
    rgb = np.dstack([rgb, rgb.T, np.full_like(rgb, 90)])
    gray = rgb[..., 0]
    folder = tmp_path / "modes"
    folder.mkdir()
    Image.fromarray(gray).save(folder / "gray.png")
    Image.fromarray(np.dstack([gray, gray, gray, np.full_like(gray, 255)])).save(
        folder / "rgba.png"
    )
    Image.fromarray(gray.astype(np.uint16) * 257).save(folder / "gray16.png")
    with Image.open(folder / "gray16.png") as image:
        assert image.mode.startswith("I")
    as_gray = predictor.predict(np.dstack([gray] * 3), top_k=3)[0].top
    for name in ("gray.png", "rgba.png", "gray16.png"):
        assert predictor.predict(folder / name, top_k=3)[0].top == as_gray, name
    assert predictor.predict(gray.astype(np.uint16) * 257, top_k=3)[0].top == as_gray
    assert predictor.predict(np.dstack([gray, gray]), top_k=3)[0].top == as_gray  # gray + alpha

    # Another size: resized exactly as the training data reader resizes it.
    classes = tmp_path / "sized"
    (classes / "a").mkdir(parents=True)
    (classes / "b").mkdir()
    Image.fromarray(rgb).resize((53, 71)).save(classes / "a" / "odd.png")
    Image.fromarray(rgb).save(classes / "b" / "plain.png")
    trained_view = scan_folder(classes).images([0], predictor.size)
    expected = predictor.probabilities(trained_view)[0]
    got = predictor.predict(classes / "a" / "odd.png", top_k=10)[0]
    want = dict(zip(predictor.labels, expected.tolist(), strict=True))
    assert dict(got.top) == pytest.approx(want)


def test_unreadable_images_are_named_and_can_be_skipped(train_run, small_digits, tmp_path):
    run = train_run("simple_cnn")
    folder = tmp_path / "new"
    folder.mkdir()
    good = sorted((small_digits / "4").iterdir())[:2]
    for path in good:
        shutil.copy(path, folder / path.name)
    (folder / "a-broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (folder / "b-cut.png").write_bytes(good[0].read_bytes()[:60])

    with pytest.raises(TlcoreError, match=r"cannot decode image .*a-broken\.png"):
        Predictor(run).predict(folder)
    skipped: list[str] = []
    kept = Predictor(run).predict(folder, on_error=lambda source, error: skipped.append(source))
    assert skipped == [str(folder / "a-broken.png"), str(folder / "b-cut.png")]
    assert [p.source for p in kept] == [str(folder / p.name) for p in good]

    out = run_tl("predict", run, folder, check=False)
    assert out.returncode == 2 and out.stdout == ""
    error, hint = out.stderr.strip().splitlines()
    assert error.startswith("error:") and "a-broken.png" in error
    assert hint.startswith("hint:") and "--skip-bad" in hint
    out = run_tl("predict", run, folder, "--skip-bad", "--json")
    assert [p["source"] for p in json.loads(out.stdout)] == [p.source for p in kept]
    warnings = out.stderr.strip().splitlines()
    assert len(warnings) == 2 and "a-broken.png" in warnings[0] and "b-cut.png" in warnings[1]
