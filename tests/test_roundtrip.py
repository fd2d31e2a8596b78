"""Starting a run from a finished run: its ``native/`` files as a backbone and as weights.

A real Keras run on the digits is trained once (``builtin:simple_cnn``, random init, 32 px);
then its ``native/model.keras`` is

- a ``file:`` backbone: the run's trained backbone, its old head dropped and its
  preprocessing applied once, so a second run trains and its ONNX export passes the parity
  check; with the backbone frozen, that run's backbone weights are still the first run's;
- a ``--weights`` file, as is ``native/weights.npz``, for a new run of the same architecture,
  while the other files of a run (the folder, ``model.onnx``) are refused with the right file
  in the hint.

On the torch side a run's ``native/model.pt`` is a state dict: a ``--weights`` file, never a
``file:`` backbone (which takes TorchScript), and passing it as one says so.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tlcore.errors import TlcoreError
from tlcore.plugins import hook
from tlcore.recipe import BackboneSpec, HeadSpec

from .conftest import run_tl

keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow")

from tlcore_keras.names import weight_entries  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

SOURCE = "builtin:simple_cnn"


def recipe(source: str, weights: str, policy: str = "none") -> dict:
    """One short stage on the Keras backend."""
    return {
        "backend": "keras",
        "backbone": {"source": source, "weights": weights},
        "train": {
            "batch_size": 16,
            "seed": 3,
            "stages": [
                {"name": "one", "epochs": 1, "lr": 3e-3, "freeze": {"policy": policy}},
            ],
        },
    }


def native_weights(run: Path) -> dict[str, np.ndarray]:
    with np.load(run / "native" / "weights.npz") as npz:
        return dict(npz)


def backbone_part(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v for k, v in weights.items() if k.startswith("backbone/")}


def info(run: Path) -> dict:
    return json.loads((run / "tlcore.json").read_text())


def load(source: str, weights: str = "pretrained", backend: str = "keras"):
    return hook().tl_load_backbone(backend=backend, spec=BackboneSpec(source, weights=weights))


def keras_backbone_weights(network) -> dict[str, np.ndarray]:
    """A Keras backbone's weights by the stable names a run's ``weights.npz`` uses."""
    return {f"backbone/{e.name}": e.variable.numpy() for e in weight_entries(network)}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from tlcore.demo import write_demo

    return write_demo(tmp_path_factory.mktemp("roundtrip") / "digits", size=32, per_class=12)


@pytest.fixture(scope="module")
def run1(data: Path) -> Path:
    """The finished first run (two epochs, the whole network trained)."""
    import tlcore

    out = data.parent / "run1"
    first = recipe(SOURCE, "none")
    first["train"]["stages"][0]["epochs"] = 2
    tlcore.fit(data, recipe=first, out=out)
    return out


# --- the run's model.keras as a file: backbone -------------------------------------------------


def test_a_run_model_gives_its_trained_backbone_and_preprocessing(run1):
    backbone = load(f"file:{run1 / 'native' / 'model.keras'}")
    network = backbone.network
    # The backbone alone: float pixels in, the feature map out; no uint8 input, no old head.
    assert network.name == "simple_cnn"
    assert network.inputs[0].dtype == "float32"
    assert tuple(network.output.shape) == (None, 4, 4, 64)
    assert backbone.input_spec.to_dict() == info(run1)["input"]
    current = keras_backbone_weights(network)
    assert current.keys() == backbone_part(native_weights(run1)).keys()
    for name, array in backbone_part(native_weights(run1)).items():
        np.testing.assert_array_equal(current[name], array, err_msg=name)
    assert all(layer.trainable for layer in network.layers), "the old freeze plan carried over"

    fresh = load(f"file:{run1 / 'native' / 'model.keras'}", weights="none").network
    assert not np.array_equal(fresh.weights[0].numpy(), network.weights[0].numpy())


def test_a_run_model_as_file_backbone_trains_and_exports(data, run1):
    import tlcore

    out = data.parent / "run2"
    tlcore.fit(
        data, recipe=recipe(f"file:{run1 / 'native' / 'model.keras'}", "pretrained", "all"), out=out
    )
    parity = info(out)["onnx"]["parity"]
    assert parity["max_abs_diff"] <= parity["tolerance"] and parity["top1_agreement"] == 1.0
    assert info(out)["input"] == info(run1)["input"]
    first, second = backbone_part(native_weights(run1)), native_weights(out)
    # A frozen backbone (BatchNorm frozen too): every backbone array is still run 1's.
    assert first.keys() == backbone_part(second).keys()
    for name, array in first.items():
        np.testing.assert_array_equal(second[name], array, err_msg=name)
    assert {k for k in second if k.startswith("head/")} == {
        "head/classifier/kernel",
        "head/classifier/bias",
    }


# --- the run's files as --weights ----------------------------------------------------------


@pytest.mark.parametrize("file", ["model.keras", "weights.npz"])
def test_a_run_native_file_is_a_weights_file(run1, file):
    backbone = load(SOURCE, weights=str(run1 / "native" / file))
    report = backbone.extra["weights_report"]
    expected = backbone_part(native_weights(run1))
    assert len(report.loaded) == len(expected) == 15
    assert not report.missing and not report.mismatched
    assert len(report.unexpected) == 2  # the old head's kernel and bias
    current = keras_backbone_weights(backbone.network)
    assert current.keys() == expected.keys()
    for name, array in expected.items():
        np.testing.assert_array_equal(current[name], array, err_msg=name)


def test_tl_train_with_a_run_model_as_weights(data, run1):
    out = data.parent / "run3"
    result = run_tl(
        "train",
        data,
        "--backend",
        "keras",
        "--backbone",
        SOURCE,
        "--weights",
        run1 / "native" / "model.keras",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--out",
        out,
    )
    assert "loaded 15 tensors from" in result.stdout + result.stderr
    parity = info(out)["onnx"]["parity"]
    assert parity["max_abs_diff"] <= parity["tolerance"]


def test_other_run_files_as_weights_name_the_right_file(run1):
    for wrong in (run1, run1 / "native"):
        with pytest.raises(TlcoreError, match="weights file not found") as caught:
            load(SOURCE, weights=str(wrong))
        assert "native/weights.npz" in caught.value.hint
    with pytest.raises(TlcoreError, match="unknown weights file type") as caught:
        load(SOURCE, weights=str(run1 / "model.onnx"))
    assert "native/weights.npz" in caught.value.hint
    with pytest.raises(TlcoreError, match=r"\.keras files") as caught:
        load(f"file:{run1 / 'native' / 'weights.npz'}")
    assert "backbone.weights" in caught.value.hint


def test_a_keras_file_with_integer_input_is_refused(tmp_path):
    """Any other model that takes uint8 pixels would get normalised floats truncated."""
    inputs = keras.Input((8, 8, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    path = tmp_path / "uint8.keras"
    keras.Model(inputs, keras.layers.Conv2D(4, 3)(x)).save(path)
    with pytest.raises(TlcoreError, match="uint8 input") as caught:
        load(f"file:{path}")
    assert "float32 keras.Input" in caught.value.hint


# --- torch: native/model.pt --------------------------------------------------------------------


def test_a_torch_run_model_is_weights_not_a_file_backbone(tmp_path):
    pytest.importorskip("torch")
    h = hook()
    model = h.tl_attach_head(
        backend="torch", backbone=load(SOURCE, backend="torch"), head=HeadSpec(), num_classes=3
    )
    native = h.tl_export(
        backend="torch",
        model=model,
        fmt="native",
        path=tmp_path / "native",
        example=np.zeros((1, 32, 32, 3), np.uint8),
        opset=17,
    )
    assert native.name == "model.pt"
    with pytest.raises(TlcoreError, match="holds weights only") as caught:
        load(f"file:{native}", backend="torch")
    assert f"--weights {native}" in caught.value.hint
    report = load(SOURCE, weights=str(native), backend="torch").extra["weights_report"]
    assert len(report.loaded) == 18 and not report.missing
