"""The Keras backend through the real plugin manager: real Keras 3 on TensorFlow, real models.

What every backend does alike (the builtin, freezing, heads, state, export, the driver) is the
conformance suite (``test_conformance.py``); this file keeps what is Keras' own.
"""

from __future__ import annotations

import stat
import subprocess
import sys

import numpy as np
import pytest

from tlcore.errors import TlcoreError
from tlcore.files import write_json
from tlcore.interfaces import Preprocessing
from tlcore.plugins import hook
from tlcore.recipe import BackboneSpec, FreezeSpec, HeadSpec
from tlcore.testing import BackendUnderTest, images, separable
from tlcore.testing.backend import backbone_part
from tlcore.testing.simple_cnn import BLOCK_PARAMS, WIDTHS

from .adapters import KerasAdapter

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import tlcore_keras  # noqa: E402

BACKEND = "keras"
# Keras' saving code under numpy 2 (the tests' own model.save calls); harmless.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
W2 = WIDTHS[-1]


KERAS = BackendUnderTest(BACKEND)
load, attach, build, freeze = KERAS.load, KERAS.attach, KERAS.build, KERAS.freeze
optimizer, step, logits, weights, export = (
    KERAS.optimizer, KERAS.step, KERAS.logits, KERAS.weights, KERAS.export
)
user_net = KerasAdapter().user_network


def backbone_state(model):
    return backbone_part(weights(model))


# --- the plugin as a plugin ---------------------------------------------------------------


def test_importing_the_plugin_imports_no_framework():
    code = (
        "import sys, tlcore_keras\n"
        "from tlcore.plugins import backends, hook\n"
        "hook().tl_seed(backend='torch-less', seed=1)\n"
        "assert hook().tl_load_backbone(backend='other', spec=None) is None\n"
        "plugin = tlcore_keras.backend\n"
        "assert plugin.tl_freeze(backend='keras', model=object(), policy=None) is None\n"
        "info = backends()['keras']\n"
        "assert info.default_backbone == 'builtin:efficientnet_lite0', info\n"
        "assert info.packages == ('keras', 'tensorflow'), info\n"
        "from tlcore.plugins import backbones\n"
        "assert len([i for i in backbones('keras') if i.params]) > 30\n"
        "bad = [m for m in ('keras', 'tensorflow') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_another_keras_backend_is_a_tlcore_error():
    code = (
        "import os; os.environ['KERAS_BACKEND'] = 'jax'\n"
        "from tlcore.errors import TlcoreError\n"
        "from tlcore.plugins import hook\n"
        "from tlcore.recipe import BackboneSpec\n"
        "try:\n"
        "    hook().tl_load_backbone(backend='keras', spec=BackboneSpec('builtin:simple_cnn'))\n"
        "except TlcoreError as exc:\n"
        "    assert 'KERAS_BACKEND' in str(exc) and 'tensorflow' in exc.hint, exc\n"
        "else:\n"
        "    raise SystemExit('no error')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_hooks_answer_none_for_other_backends_and_objects():
    model = build()
    plugin = tlcore_keras.backend
    assert plugin.tl_freeze(backend="torch", model=model, policy=FreezeSpec()) is None
    assert plugin.tl_freeze(backend="keras", model=object(), policy=FreezeSpec()) is None
    assert plugin.tl_get_weights(backend="torch", model=model) is None
    assert plugin.tl_get_optimizer_state(backend="keras", optimizer=object()) is None
    assert plugin.tl_load_backbone(backend="keras", spec=BackboneSpec("timm:x")) is None
    assert plugin.tl_load_backbone(backend="keras", spec=BackboneSpec(model=object())) is None
    assert (
        plugin.tl_export(
            backend="keras", model=model, fmt="tflite", path=".", example=None, opset=17
        )
        is None
    )


def test_registered_backbones_with_parameter_counts():
    infos = {}
    hook().tl_register_backbones(backend=BACKEND, register=lambda i: infos.setdefault(i.source, i))
    assert infos["keras:mobilenet_v2"].input_size == 224
    assert "file:<model.keras>" in infos
    from tlcore_keras.sources import application_params

    for name in (
        "mobilenet_v2",
        "mobilenet_v3_small",
        "efficientnet_b0",
        "resnet50",
        "vgg16",
        "convnext_tiny",
        "densenet121",
        "xception",
    ):
        assert infos[f"keras:{name}"].params == application_params(name), name
    # Counting builds abstractly: nothing waits to be allocated by the next model built.
    from keras.src.backend.common import global_state

    assert not global_state.get_global_attribute("uninitialized_variables")


# --- loading backbones -------------------------------------------------------------------


def test_unknown_names_are_tlcore_errors():
    with pytest.raises(TlcoreError) as info:
        load(source="keras:mobilenet_v9")
    assert "keras:mobilenet_v2" in info.value.hint and "did you mean" in info.value.hint


def test_keras_application_without_weights_at_a_small_size():
    backbone = load(source="keras:mobilenet_v2", weights="none", input_size=32)
    assert backbone.preprocessing == Preprocessing(
        (32, 32), (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), 1 / 127.5
    )
    blocks = backbone.extra["blocks"].names
    assert blocks[0] == "block_1" and blocks[-2:] == ("block_16", "Conv_1")
    model = attach(backbone, num_classes=4)
    assert model.num_features == 1280
    assert model(images(2)).shape == (2, 4)
    report = freeze(model, policy="last_n", n=1)
    assert report.trainable_blocks == ("Conv_1",)
    assert report.backbone_trainable == 320 * 1280 + 2 * 1280


def test_imagenet_weights_offline_are_a_tlcore_error():
    try:
        load(source="keras:mobilenet_v2", weights="imagenet", input_size=96)
    except TlcoreError as exc:
        assert "ImageNet weights" in exc.message and "local weights file" in exc.hint
    else:
        pytest.skip("the ImageNet weights are available here (online or cached)")


def test_keras_file_loads_in_safe_mode(tmp_path):
    path = tmp_path / "net.keras"
    user_net(5).save(path)
    with pytest.raises(TlcoreError, match="not found"):
        load(source=f"file:{tmp_path / 'missing.keras'}")
    with pytest.raises(TlcoreError, match=r"\.keras files"):
        load(source=f"file:{tmp_path / 'net.h5'}")
    backbone = load(source=f"file:{path}")
    assert backbone.preprocessing.size == (8, 8)
    saved = keras.saving.load_model(path, safe_mode=True)
    x = np.random.default_rng(0).random((2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_array_equal(backbone.network(x), saved(x))
    fresh = load(source=f"file:{path}", weights="none").network
    assert not np.array_equal(fresh(x), saved(x))

    lam = tmp_path / "lambda.keras"
    inputs = keras.Input((8, 8, 3))
    keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(inputs)).save(lam)
    with pytest.raises(TlcoreError, match="cannot load"):
        load(source=f"file:{lam}")


def test_keras2_h5_weights_load_by_layer_name(tmp_path):
    """The layout of the weight files keras.applications downloads (Keras 2 HDF5)."""
    import h5py

    network = load(source="builtin:simple_cnn").network
    path = tmp_path / "legacy_no_top.h5"
    with h5py.File(path, "w") as h5:
        layers = [layer for layer in network.layers if layer.weights]
        h5.attrs["layer_names"] = [layer.name.encode() for layer in layers]
        for layer in layers:
            group = h5.create_group(layer.name)
            names = [f"{layer.name}/{v.name}:0" for v in layer.weights]
            group.attrs["weight_names"] = [n.encode() for n in names]
            for name, v in zip(names, layer.weights, strict=True):
                group[name] = v.numpy() + 1
    backbone = load(source="builtin:simple_cnn", weights=str(path))
    assert len(backbone.extra["weights_report"].loaded) == 15
    np.testing.assert_array_equal(
        backbone.network.get_layer("block_2_bn").moving_variance.numpy(),
        network.get_layer("block_2_bn").moving_variance.numpy() + 1,
    )


# --- head and preprocessing --------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "family"),
    [
        ("keras:vgg16", "vgg16"),
        ("keras:mobilenet_v2", "mobilenet_v2"),
        ("keras:densenet121", "densenet"),
    ],
)
def test_preprocessing_inside_the_model_matches_keras_preprocess_input(source, family):
    """caffe (BGR, mean), tf (-1..1) and torch (ImageNet mean/std) styles."""
    backbone = load(source=source, weights="none", input_size=32)
    model = attach(backbone)
    x = images(3)
    inside = model.full.get_layer("preprocess")(x).numpy()
    module = getattr(keras.applications, family)
    expected = module.preprocess_input(x.astype(np.float32))
    np.testing.assert_allclose(inside, expected, rtol=1e-5, atol=1e-4)


def test_builtin_preprocessing_networks_take_raw_pixels():
    backbone = load(source="keras:efficientnet_b0", weights="none", input_size=32)
    assert (backbone.preprocessing.scale, backbone.preprocessing.mean) == (1.0, (0.0, 0.0, 0.0))
    layers = [type(layer).__name__ for layer in backbone.network.layers[:3]]
    assert "Rescaling" in layers


# --- freezing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "policy",
    [{"policy": "all"}, {"policy": "none"}, {"policy": "last_n", "n": 2},
     {"policy": "pattern", "pattern": r"^block_\d_bn/"}],
)
def test_keras_own_trainable_weights_follow_the_policy(policy):
    """What ``model.trainable_weights`` says (and a later ``model.fit`` would train) never goes
    beyond what the policy trains; the policies' counts are tested in the conformance suite."""
    model = build(num_classes=3)
    freeze(model, **policy)
    keras_view = {id(v) for v in model.full.trainable_weights}
    assert keras_view <= {id(v) for v in model.train_variables}
    assert {id(v) for v in model.classifier.trainable_weights} <= keras_view


def test_batchnorm_stays_in_inference_mode_after_unfreezing():
    """The Keras guide's rule: unfrozen BatchNorm layers keep their moving statistics, and
    the batch of a train step is normalised with them (the train-mode output equals
    inference)."""
    model = build(num_classes=2)
    freeze(model, policy="none")
    x, y = separable(16)
    before = backbone_state(model)
    step(model, optimizer(model, lr=0.0), x, y, lr=0.0)
    after = backbone_state(model)
    for name in before:
        np.testing.assert_array_equal(before[name], after[name], err_msg=name)
    train_mode = model.features(x, training=True).numpy()
    np.testing.assert_allclose(train_mode, model.features(x, training=False).numpy(), rtol=1e-6)


# --- training ----------------------------------------------------------------------------


def test_train_step_is_traced_once_per_stage():
    model = build(num_classes=2)
    freeze(model, policy="all")
    opt = optimizer(model)
    feats = hook().tl_extract_features(backend=BACKEND, model=model, images=images(12))
    for n in (4, 5, 12):  # batch sizes change, the trace does not
        step(model, opt, feats[:n], np.arange(n) % 2, features=True)
        step(model, opt, images(n), np.arange(n) % 2)
    # One step per input kind (the key's first two parts; the rest say what else the trace
    # holds as constants: target kind, class weights, accumulation mode, clipping).
    assert len(opt.steps) == 2
    assert {key[:2] for key in opt.steps} == {(True, "cross_entropy"), (False, "cross_entropy")}
    assert all(fn.experimental_get_tracing_count() == 1 for fn in opt.steps.values())
    freeze(model, policy="none")
    with pytest.raises(TlcoreError, match="tl_make_optimizer"):
        step(model, opt, *separable(4))


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd", "rmsprop"])
def test_optimizers_cover_only_trainable_variables(name):
    model = build()
    freeze(model, policy="last_n", n=1)
    opt = optimizer(model, optimizer=name, lr=0.5, weight_decay=0.01, momentum=0.8)
    count = sum(int(np.prod(v.shape)) for v in opt.variables)
    assert count == BLOCK_PARAMS[2] + W2 * 3 + 3
    keras_opt = opt.optimizer
    if name == "adamw":
        assert keras_opt.weight_decay == pytest.approx(0.01) and opt.l2 == 0.0
    else:
        assert opt.l2 == pytest.approx(0.01)
    if name in ("sgd", "rmsprop"):
        assert keras_opt.momentum == pytest.approx(0.8)
    step(model, opt, *separable(4), lr=0.125)
    assert float(keras_opt.learning_rate.numpy()) == 0.125


def test_same_seed_same_dropout_other_seed_other_dropout():
    x, y = separable(16)

    def run(seed):
        hook().tl_seed(backend=BACKEND, seed=0)
        model = build(num_classes=2, head=HeadSpec(hidden=(32,), dropout=0.5))
        freeze(model, policy="none")
        opt = optimizer(model)
        hook().tl_seed(backend=BACKEND, seed=seed)
        return [step(model, opt, x, y)["loss"] for _ in range(3)]

    first = run(5)
    assert run(5) == first
    assert run(6) != first


# --- state -------------------------------------------------------------------------------


def test_weight_names_are_stable_across_instances():
    def names():
        inputs = keras.Input((8, 8, 3))
        x = keras.layers.Conv2D(4, 3)(inputs)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.Conv2D(4, 3)(x)
        x = keras.layers.LayerNormalization()(x)
        return sorted(weights(build(source=None, model=keras.Model(inputs, x))))

    first = names()
    assert "backbone/conv2d_1/kernel" in first and "backbone/layer_normalization/gamma" in first
    assert names() == first


def test_native_export_is_an_atomic_safe_keras_file(tmp_path):
    model = build(head=HeadSpec(hidden=(8,), dropout=0.2))
    path = export(model, "native", tmp_path)
    assert path == tmp_path / "model.keras"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]
    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    x = images(4)
    np.testing.assert_allclose(loaded(x, training=False).numpy(), model(x), rtol=1e-6)
    # written through tlcore.files.atomic_path, with the mode of the core's own files
    core = tmp_path / "core" / "tlcore.json"
    write_json(core, {})
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(core.stat().st_mode)


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_optimizer_state_is_named_by_index_and_kind(name):
    """``{"<index>.<kind>": array}``: the iteration count first, then the slots."""
    model = build(num_classes=2)
    freeze(model, policy="all")
    opt = optimizer(model, optimizer=name)
    for _ in range(3):
        step(model, opt, *separable(8))
    state = KERAS.optimizer_state(opt)
    assert state["0.iteration"] == 3
    if name == "adamw":
        assert {k.split(".", 1)[1] for k in state} == {"iteration", "momentum", "velocity"}

