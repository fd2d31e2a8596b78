"""tlcore.Backend: a backend as one object, its hooks answering only for its name and objects.

Backends registered by hand (``plugin_registered``), called through the core's facade
(:class:`~tlcore.plugins.calls.BackendCalls`) as the trainer calls them: a small numpy backend
written from scratch, and the real torch backend under other names.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tlcore
import tlcore_torch
from tlcore import plugins
from tlcore.errors import PluginError, TlcoreError
from tlcore.files import read_arrays, write_arrays
from tlcore.interfaces import Backbone, Batch, FreezeReport, Preprocessing
from tlcore.plugins.calls import BackendCalls
from tlcore.recipe import BackboneSpec, FreezeSpec, HeadSpec
from tlcore.sources import parse_source
from tlcore.testing import images, separable
from tlcore_torch import TorchBackend

FLAT = "flat-test"


class FlatNetwork:
    """A backbone of numpy: the pixels, flattened and scaled to 0..1."""

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(len(x), -1).astype(np.float32) / 255


class FlatModel:
    """A linear classifier on :class:`FlatNetwork`; records the sizes of feature calls."""

    def __init__(self, network: FlatNetwork, width: int, num_classes: int) -> None:
        self.network = network
        self.weights = np.random.default_rng(0).normal(size=(width, num_classes))
        self.chunks: list[int] = []


class FlatBackend(tlcore.Backend):
    """Written from scratch: its own methods, one in an implementation module (this one), no
    freezing, and an ``npz`` format instead of ``native`` and ``onnx``."""

    name = FLAT
    packages = ("numpy",)
    implementation = __name__
    formats = ("npz",)
    feature_batch = 4

    def owns_network(self, network: object) -> bool:
        return isinstance(network, FlatNetwork)

    def owns_model(self, model: object) -> bool:
        return isinstance(model, FlatModel)

    def load_backbone(self, spec: BackboneSpec) -> Backbone | None:
        parsed = parse_source(spec.source or "flat:8", ("flat",))
        if parsed is None:
            return None
        size = int(parsed[1])
        return Backbone(FlatNetwork(), Preprocessing((size, size)), f"flat:{size}")

    def attach_head(self, backbone: Backbone, head: HeadSpec, num_classes: int) -> FlatModel:
        height, width = backbone.preprocessing.size
        return FlatModel(backbone.network, height * width * 3, num_classes)

    def extract_features(self, model: FlatModel, x: np.ndarray) -> np.ndarray:
        model.chunks.append(len(x))
        return model.network(x)

    def export_npz(self, model: FlatModel, path: Path, example: np.ndarray, opset: int) -> Path:
        write_arrays(path / "model.npz", {"weights": model.weights})
        return path / "model.npz"


def eval_step(model: FlatModel, batch: Batch) -> np.ndarray:
    """:class:`FlatBackend`'s eval step, which the base finds in its ``implementation``."""
    features = batch.x if batch.features else model.network(batch.x)
    return (features @ model.weights).astype(np.float32)


class TorchCopy(TorchBackend):
    """The real torch backend under another name."""

    name = "torch-copy"


class Forgetful(TorchBackend):
    """The torch backend, but its ``tl_set_optimizer_state`` answers ``None``."""

    name = "torch-forgetful"

    @tlcore.hookimpl
    def tl_set_optimizer_state(self, backend: str, optimizer: object, state: dict) -> None:
        return None


class StopAfterFirstCheckpoint:
    """An observer that interrupts the run after its first checkpoint, like Ctrl-C."""

    @tlcore.hookimpl
    def tl_on_checkpoint(self, run: object, path: Path) -> None:
        raise KeyboardInterrupt


def test_a_backend_needs_a_name():
    class Nameless(tlcore.Backend):
        pass

    with pytest.raises(TypeError, match="name"):
        Nameless()


def test_a_backend_written_from_scratch_through_the_facade(tmp_path):
    with plugins.plugin_registered(FlatBackend()):
        calls = BackendCalls(FLAT)
        backbone = calls.load_backbone(BackboneSpec("flat:4"))
        model = calls.attach_head(backbone, HeadSpec(), 3)
        x = images(10, size=4)

        assert calls.extract_features(model, x).shape == (10, 48)
        assert model.chunks == [4, 4, 2]  # the base's chunks of feature_batch images
        logits = calls.eval_step(model, Batch(x, np.zeros(10, np.int64)))
        np.testing.assert_allclose(logits, FlatNetwork()(x) @ model.weights, rtol=1e-6)

        written = calls.export(model, "npz", tmp_path, x, 17)
        np.testing.assert_array_equal(read_arrays(written)["weights"], model.weights)
        with pytest.raises(TlcoreError, match="format 'onnx'"):
            calls.export(model, "onnx", tmp_path, x, 17)
        with pytest.raises(TlcoreError, match="at least one output"):
            calls.attach_head(backbone, HeadSpec(), 0)
        with pytest.raises(TlcoreError, match="no plugin can load"):
            calls.load_backbone(BackboneSpec("builtin:simple_cnn"))


def test_a_method_the_backend_lacks_is_an_error_naming_the_hook_and_backend():
    with plugins.plugin_registered(FlatBackend()):
        calls = BackendCalls(FLAT)
        model = calls.attach_head(calls.load_backbone(BackboneSpec()), HeadSpec(), 2)
        assert plugins.hook().tl_freeze(backend=FLAT, model=model, policy=FreezeSpec()) is None
        with pytest.raises(PluginError) as info:
            calls.freeze(model, FreezeSpec())
    assert "tl_freeze" in str(info.value) and repr(FLAT) in str(info.value)


def test_an_instance_registered_by_hand_is_a_backend():
    backend = FlatBackend()
    with plugins.plugin_registered(backend) as name:
        assert plugins.backends()[FLAT] == backend.info()
        assert plugins.backends()[FLAT].packages == ("numpy",)
        assert plugins.require_backend(FLAT).name == FLAT
        assert plugins.backbones(FLAT) == []
        row = next(r for r in plugins.plugin_table() if r["name"] == name)
        assert "tl_load_backbone" in row["hooks"] and "tl_on_epoch_end" not in row["hooks"]
    assert FLAT not in plugins.backends()


def test_a_backend_answers_only_for_its_name_and_its_own_objects():
    copy = TorchCopy()
    with plugins.plugin_registered(copy):
        calls = BackendCalls(copy.name)
        spec = BackboneSpec("builtin:simple_cnn", weights="none")
        model = calls.attach_head(calls.load_backbone(spec), HeadSpec(), 3)
        policy = FreezeSpec(batchnorm="frozen")

        report = copy.tl_freeze(backend=copy.name, model=model, policy=policy)
        assert isinstance(report, FreezeReport)
        assert copy.tl_freeze(backend="torch", model=model, policy=policy) is None
        assert copy.tl_freeze(backend=copy.name, model=object(), policy=policy) is None
        assert copy.tl_get_optimizer_state(backend=copy.name, optimizer=object()) is None
        numpy_backbone = Backbone(FlatNetwork(), Preprocessing((4, 4)), "flat:4")
        head = HeadSpec()
        assert copy.tl_attach_head(copy.name, numpy_backbone, head, 3) is None
        # the built-in torch backend is one more instance: its name, not this one
        assert tlcore_torch.backend.tl_freeze(backend=copy.name, model=model, policy=policy) is None
        assert plugins.backbones(copy.name) == plugins.backbones("torch")
        registered = []
        copy.tl_register_backbones(backend=FLAT, register=registered.append)
        assert registered == []


@pytest.mark.slow
def test_a_resume_whose_optimiser_state_is_not_restored_fails(tmp_path):
    """``tl_set_optimizer_state`` answering ``None`` stops the resume: it never goes on with a
    fresh optimiser as if nothing were lost."""
    x, y = separable(32)
    recipe = {
        "backend": Forgetful.name,
        "backbone": {"source": "builtin:simple_cnn", "weights": "none"},
        "train": {
            "batch_size": 16,
            "seed": 1,
            "stages": [{"name": "head", "epochs": 2, "lr": 3e-3, "freeze": {"policy": "all"}}],
        },
        "data": {"val_split": 0.2},
        "export": {"formats": ["native"]},
    }
    out = tmp_path / "run"
    with plugins.plugin_registered(Forgetful()):
        stop = plugins.plugin_registered(StopAfterFirstCheckpoint())
        with stop, pytest.raises(KeyboardInterrupt):
            tlcore.fit((x, y), recipe=recipe, out=out)
        with pytest.raises(PluginError) as info:
            tlcore.fit((x, y), out=out, resume=True)
    assert "tl_set_optimizer_state" in str(info.value) and Forgetful.name in str(info.value)
    assert not (out / "native").exists()  # it did not carry on to the end
