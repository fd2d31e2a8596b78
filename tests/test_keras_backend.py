"""The Keras backend through the real plugin manager: real Keras 3 on TensorFlow, real models.

Each behaviour is one small function over helpers that take the backend's name, so that it can
join a suite parametrised over both backends.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tlcore.errors import TlcoreError
from tlcore.interfaces import Backbone, Batch, FreezeReport, LoadReport, Preprocessing, StepState
from tlcore.plugins import hook
from tlcore.recipe import BackboneSpec, FreezeSpec, HeadSpec, StageSpec

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import tlcore  # noqa: E402
import tlcore_keras  # noqa: E402
from tlcore.builtins import SIMPLE_CNN_WIDTHS, simple_cnn_params  # noqa: E402
from tlcore_keras.model import TransferModel  # noqa: E402

BACKEND = "keras"
# Keras' saving code under numpy 2 (the tests' own model.save calls); harmless.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
# simple_cnn: conv 3x3 (no bias) + BatchNorm per block.
W0, W1, W2 = SIMPLE_CNN_WIDTHS
BLOCK_PARAMS = (3 * W0 * 9 + 2 * W0, W0 * W1 * 9 + 2 * W1, W1 * W2 * 9 + 2 * W2)


def load(backend=BACKEND, **spec) -> Backbone:
    return hook().tl_load_backbone(backend=backend, spec=BackboneSpec(**spec))


def attach(backbone, num_classes=3, head=None, backend=BACKEND) -> TransferModel:
    return hook().tl_attach_head(
        backend=backend, backbone=backbone, head=head or HeadSpec(), num_classes=num_classes
    )


def build(num_classes=3, head=None, backend=BACKEND, **spec) -> TransferModel:
    spec.setdefault("source", "builtin:simple_cnn")
    return attach(load(backend, **spec), num_classes, head, backend)


def freeze(model, backend=BACKEND, **policy) -> FreezeReport:
    return hook().tl_freeze(backend=backend, model=model, policy=FreezeSpec(**policy))


def optimizer(model, backend=BACKEND, **stage):
    return hook().tl_make_optimizer(backend=backend, model=model, stage=StageSpec(**stage))


def step(model, opt, x, y, lr=1e-2, features=False, smoothing=0.0, backend=BACKEND):
    return hook().tl_train_step(
        backend=backend,
        model=model,
        batch=Batch(x, y, features=features),
        state=StepState(opt, lr=lr, label_smoothing=smoothing),
    )


def logits(model, x, features=False, backend=BACKEND):
    batch = Batch(x, np.zeros(len(x), np.int64), features=features)
    return hook().tl_eval_step(backend=backend, model=model, batch=batch)


def weights(model, backend=BACKEND):
    return hook().tl_get_weights(backend=backend, model=model)


def export(model, fmt, path, backend=BACKEND):
    return hook().tl_export(
        backend=backend, model=model, fmt=fmt, path=path, example=images(2), opset=17
    )


def images(n=8, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def separable(n=32, size=32, seed=0):
    """Class 1 is bright, class 0 dark: any working trainer separates them within a few steps."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    low = rng.integers(0, 110, (n, size, size, 3))
    x = np.where(y[:, None, None, None] == 1, 255 - low, low).astype(np.uint8)
    return x, y


def cross_entropy(z, y):
    z = z - z.max(1, keepdims=True)
    return float(-(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(1))).mean())


def backbone_state(model):
    return {k: v for k, v in weights(model).items() if k.startswith("backbone/")}


def user_net(outputs: int, size: int = 8) -> keras.Model:
    """A user's own network: input → hidden → outputs (auto-named layers included)."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(16, activation="relu", name="hidden")(x)
    return keras.Model(inputs, keras.layers.Dense(outputs, name="out")(x))


# --- the plugin as a plugin ---------------------------------------------------------------


def test_importing_the_plugin_imports_no_framework():
    code = (
        "import sys, tlcore_keras\n"
        "from tlcore.plugins import backends, hook\n"
        "hook().tl_seed(backend='torch-less', seed=1)\n"
        "assert hook().tl_load_backbone(backend='other', spec=None) is None\n"
        "assert tlcore_keras.tl_freeze(backend='keras', model=object(), policy=None) is None\n"
        "info = backends()['keras']\n"
        "assert info.default_backbone == 'keras:mobilenet_v2', info\n"
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
    assert tlcore_keras.tl_freeze(backend="torch", model=model, policy=FreezeSpec()) is None
    assert tlcore_keras.tl_freeze(backend="keras", model=object(), policy=FreezeSpec()) is None
    assert tlcore_keras.tl_get_weights(backend="torch", model=model) is None
    assert tlcore_keras.tl_get_optimizer_state(backend="keras", optimizer=object()) is None
    assert tlcore_keras.tl_load_backbone(backend="keras", spec=BackboneSpec("hf:x")) is None
    assert tlcore_keras.tl_load_backbone(backend="keras", spec=BackboneSpec(model=object())) is None
    assert (
        tlcore_keras.tl_export(
            backend="keras", model=model, fmt="tflite", path=".", example=None, opset=17
        )
        is None
    )


def test_registered_backbones_with_parameter_counts():
    infos = {}
    hook().tl_register_backbones(backend=BACKEND, register=lambda i: infos.setdefault(i.source, i))
    assert infos["builtin:simple_cnn"].params == simple_cnn_params() == sum(BLOCK_PARAMS)
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


def test_builtin_simple_cnn_matches_the_shared_spec():
    backbone = load(source="builtin:simple_cnn", weights="pretrained")
    assert backbone.preprocessing.size == (32, 32)
    assert backbone.preprocessing.mean == (0.5, 0.5, 0.5)
    assert backbone.extra["blocks"].names == ("block_0", "block_1", "block_2")
    network = backbone.network
    assert sum(int(np.prod(v.shape)) for v in network.trainable_weights) == sum(BLOCK_PARAMS)
    assert network(np.zeros((2, 32, 32, 3), np.float32)).shape == (2, 4, 4, W2)
    assert load(source="builtin:simple_cnn", input_size=64).preprocessing.size == (64, 64)
    assert load(source=None, weights="none", input_size=32).name == "keras:mobilenet_v2"


def test_unknown_names_are_tlcore_errors():
    with pytest.raises(TlcoreError) as info:
        load(source="keras:mobilenet_v9")
    assert "keras:mobilenet_v2" in info.value.hint and "did you mean" in info.value.hint
    with pytest.raises(TlcoreError, match="simple_cn"):
        load(source="builtin:simple_cn")


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


def test_user_model_and_its_blocks():
    net = user_net(2)
    backbone = load(source=None, model=net)
    assert backbone.network is net and backbone.name == "user:Functional"
    assert backbone.preprocessing.size == (8, 8)
    assert backbone.extra["blocks"].names == ("hidden", "out")
    model = attach(backbone, num_classes=4)
    assert model.num_features == 2
    assert model(np.zeros((3, 8, 8, 3), np.uint8)).shape == (3, 4)
    with pytest.raises(TlcoreError, match="cannot run on 32x32"):
        build(source=None, model=user_net(2), input_size=32)


def test_weights_file_from_another_task_loads_partially(tmp_path):
    """The seed example: a 10-class network's weights into a 2-class one of the same design."""
    keras.utils.set_random_seed(1)
    trained = user_net(10)
    path = tmp_path / "net10.weights.h5"
    trained.save_weights(path)
    keras.utils.set_random_seed(2)
    target = user_net(2)
    initial_out = target.get_layer("out").kernel.numpy()

    backbone = load(source=None, model=target, weights=str(path))
    report = backbone.extra["weights_report"]
    assert isinstance(report, LoadReport)
    assert report.loaded == ("hidden/kernel", "hidden/bias")
    assert report.mismatched == ("out/kernel", "out/bias")
    assert report.missing == ()
    np.testing.assert_array_equal(
        target.get_layer("hidden").kernel.numpy(), trained.get_layer("hidden").kernel.numpy()
    )
    np.testing.assert_array_equal(target.get_layer("out").kernel.numpy(), initial_out)


def test_a_full_model_export_loads_into_a_bare_backbone(tmp_path):
    """Train on one task, export, start the next task's backbone from it (.keras and .npz)."""
    source = build(num_classes=5)
    exported = export(source, "native", tmp_path)
    npz = tmp_path / "weights.npz"
    np.savez(npz, **weights(source))
    expected = {k.removeprefix("backbone/"): v for k, v in backbone_state(source).items()}
    for path in (exported, npz):
        backbone = load(source="builtin:simple_cnn", weights=str(path))
        report = backbone.extra["weights_report"]
        assert len(report.loaded) == len(expected), path
        assert report.mismatched == () and report.missing == ()
        assert len(report.unexpected) == 2, report.unexpected  # the head's kernel and bias
        got = {k.removeprefix("backbone/"): v for k, v in backbone_state(attach(backbone)).items()}
        for name, value in expected.items():
            np.testing.assert_array_equal(got[name], value, err_msg=name)
    with pytest.raises(TlcoreError, match="no weight"):
        load(source=None, model=user_net(2), weights=str(npz))


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


@pytest.mark.parametrize(("pooling", "width"), [("avg", W2), ("max", W2), ("flatten", W2 * 4 * 4)])
def test_pooling_widths_on_a_feature_map(pooling, width):
    model = build(head=HeadSpec(pooling=pooling), num_classes=5)
    assert model.num_features == width
    x = images(4)
    feature_map = model.backbone(model.full.get_layer("preprocess")(x), training=False).numpy()
    expected = {
        "avg": feature_map.mean((1, 2)),
        "max": feature_map.max((1, 2)),
        "flatten": feature_map.reshape(4, -1),
    }
    feats = hook().tl_extract_features(backend=BACKEND, model=model, images=x)
    np.testing.assert_allclose(feats, expected[pooling], rtol=1e-5, atol=1e-5)
    assert model(x).shape == (4, 5)


def test_hidden_layers_activation_and_dropout():
    model = build(head=HeadSpec(hidden=(16, 8), dropout=0.25, activation="gelu"), num_classes=4)
    kinds = [type(layer).__name__ for layer in model.classifier.layers[1:]]
    assert kinds == ["Dense", "Activation", "Dropout", "Dense", "Activation", "Dropout", "Dense"]
    dense = [layer for layer in model.classifier.layers if isinstance(layer, keras.layers.Dense)]
    assert [tuple(d.kernel.shape) for d in dense] == [(W2, 16), (16, 8), (8, 4)]
    assert dense[-1].name == "classifier"
    plain = build(head=HeadSpec(dropout=0.5))
    assert [type(layer).__name__ for layer in plain.classifier.layers[1:]] == ["Dropout", "Dense"]


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


def test_features_path_matches_the_full_model():
    model = build(num_classes=3, head=HeadSpec(hidden=(8,)))
    x = images(6)
    feats = hook().tl_extract_features(backend=BACKEND, model=model, images=x)
    assert feats.dtype == np.float32 and feats.shape == (6, W2)
    full = logits(model, x)
    np.testing.assert_allclose(logits(model, feats, features=True), full, rtol=1e-5, atol=1e-5)
    direct = model.classifier(model.features(x, training=False), training=False).numpy()
    np.testing.assert_allclose(direct, model.full(x, training=False).numpy(), rtol=1e-6)
    empty = hook().tl_extract_features(backend=BACKEND, model=model, images=images(0))
    assert empty.shape == (0, W2)


# --- freezing ----------------------------------------------------------------------------


def test_freeze_policy_counts():
    model = build(num_classes=3)
    head = W2 * 3 + 3
    total = sum(BLOCK_PARAMS)
    blocks = ("block_0", "block_1", "block_2")
    cases = {
        "all": ({}, 0, ()),
        "none": ({}, total, blocks),
        "last_n": ({"n": 2}, BLOCK_PARAMS[1] + BLOCK_PARAMS[2], blocks[1:]),
        "pattern": ({"pattern": r"^block_\d_bn/"}, total - (W0 + W1 + W2) * 2, blocks),
    }
    for policy, (extra, backbone, trainable_blocks) in cases.items():
        report = freeze(model, policy=policy, **extra)
        expected = FreezeReport(head + backbone, total - backbone, backbone, trainable_blocks)
        assert report == expected, policy
        keras_view = {id(v) for v in model.full.trainable_weights}
        assert keras_view <= {id(v) for v in model.train_variables}, policy
    assert freeze(model, policy="last_n", n=0).backbone_frozen
    assert freeze(model, policy="last_n", n=10).backbone_trainable == total
    with pytest.raises(TlcoreError, match="matches no backbone weight"):
        freeze(model, policy="pattern", pattern="nothing_like_this")


def test_frozen_backbone_is_bit_identical_after_training_steps():
    model = build(num_classes=2)
    assert freeze(model, policy="all").backbone_frozen
    before = backbone_state(model)
    head_before = weights(model)["head/classifier/kernel"]
    opt = optimizer(model, optimizer="adamw", weight_decay=0.1)
    x, y = separable(16)
    for _ in range(3):
        step(model, opt, x, y)
    after = backbone_state(model)
    for name, value in before.items():
        np.testing.assert_array_equal(value, after[name], err_msg=name)
    assert not np.array_equal(head_before, weights(model)["head/classifier/kernel"])


@pytest.mark.parametrize("batchnorm", ["frozen", "follow", "train"])
def test_batchnorm_modes_with_a_partly_trainable_backbone(batchnorm):
    model = build(num_classes=2)
    freeze(model, policy="last_n", n=1, batchnorm=batchnorm)
    before = backbone_state(model)
    opt = optimizer(model, optimizer="sgd")
    x, y = separable(16)
    for _ in range(2):
        step(model, opt, x, y)
    after = backbone_state(model)
    for block in range(3):
        stats = f"backbone/block_{block}_bn/moving_mean"
        changes = batchnorm == "train" or (batchnorm == "follow" and block == 2)
        assert np.array_equal(before[stats], after[stats]) != changes, (batchnorm, stats)
        kernel = f"backbone/block_{block}_conv/kernel"
        assert np.array_equal(before[kernel], after[kernel]) == (block != 2), kernel
    gamma = "backbone/block_2_bn/gamma"
    assert not np.array_equal(before[gamma], after[gamma])


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


def test_training_steps_reduce_the_loss():
    hook().tl_seed(backend=BACKEND, seed=0)
    model = build(num_classes=2)
    freeze(model, policy="none")
    x, y = separable(32)
    before = cross_entropy(logits(model, x), y)
    opt = optimizer(model, optimizer="adamw", lr=1e-2)
    results = [step(model, opt, x, y, lr=1e-2, smoothing=0.1) for _ in range(8)]
    assert all(set(r) == {"loss", "accuracy"} for r in results)
    assert all(isinstance(v, float) for r in results for v in r.values())
    out = logits(model, x)
    assert out.dtype == np.float32 and out.shape == (32, 2)
    assert cross_entropy(out, y) < before / 2
    assert (out.argmax(1) == y).mean() == 1.0


def test_train_step_is_traced_once_per_stage():
    model = build(num_classes=2)
    freeze(model, policy="all")
    opt = optimizer(model)
    feats = hook().tl_extract_features(backend=BACKEND, model=model, images=images(12))
    for n in (4, 5, 12):  # batch sizes change, the trace does not
        step(model, opt, feats[:n], np.arange(n) % 2, features=True)
        step(model, opt, images(n), np.arange(n) % 2)
    assert set(opt.steps) == {True, False}
    assert all(fn.experimental_get_tracing_count() == 1 for fn in opt.steps.values())
    freeze(model, policy="none")
    with pytest.raises(TlcoreError, match="tl_make_optimizer"):
        step(model, opt, *separable(4))


def test_label_smoothing_matches_the_definition():
    model = build(num_classes=3)
    freeze(model, policy="all")
    feats = hook().tl_extract_features(backend=BACKEND, model=model, images=images(6))
    y = np.array([0, 1, 2, 0, 1, 2])
    z = logits(model, feats, features=True).astype(np.float64)
    log_p = z - z.max(1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(1, keepdims=True))
    expected = 0.8 * -log_p[np.arange(6), y].mean() + 0.2 * -log_p.mean()
    result = step(model, optimizer(model), feats, y, features=True, smoothing=0.2, lr=0.0)
    assert result["loss"] == pytest.approx(expected, rel=1e-5)


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


def test_weights_round_trip_and_strictness():
    source = build(num_classes=3)
    freeze(source, policy="none", batchnorm="train")
    step(source, optimizer(source), *separable(8))
    saved = weights(source)
    assert saved["backbone/block_0_bn/moving_mean"].any()
    assert all(isinstance(v, np.ndarray) for v in saved.values())
    copies = {k: v.copy() for k, v in saved.items()}
    step(source, optimizer(source), *separable(8))  # the copies must not follow the model
    for key, value in saved.items():
        np.testing.assert_array_equal(value, copies[key])

    target = build(num_classes=3)
    report = hook().tl_set_weights(backend=BACKEND, model=target, weights=saved, strict=True)
    assert len(report.loaded) == len(saved)
    for key, value in weights(target).items():
        np.testing.assert_array_equal(value, saved[key])

    other = build(num_classes=5)
    with pytest.raises(TlcoreError, match=r"head/classifier/kernel"):
        hook().tl_set_weights(backend=BACKEND, model=other, weights=saved, strict=True)
    report = hook().tl_set_weights(backend=BACKEND, model=other, weights=saved, strict=False)
    assert report.mismatched == ("head/classifier/kernel", "head/classifier/bias")
    assert len(report.loaded) == len(saved) - 2


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


@pytest.mark.parametrize("name", ["adamw", "sgd", "rmsprop"])
def test_optimizer_state_round_trip_repeats_the_next_step(name):
    x, y = separable(8)

    def fresh(seed):
        hook().tl_seed(backend=BACKEND, seed=seed)
        model = build(num_classes=2)
        freeze(model, policy="last_n", n=1)
        return model, optimizer(model, optimizer=name, lr=1e-2)

    model, opt = fresh(0)
    for _ in range(3):
        step(model, opt, x, y)
    saved = weights(model)
    state = hook().tl_get_optimizer_state(backend=BACKEND, optimizer=opt)
    assert state and all(isinstance(v, np.ndarray) for v in state.values())
    assert state["0.iteration"] == 3
    step(model, opt, x, y)
    expected = weights(model)

    resumed, resumed_opt = fresh(1)
    hook().tl_set_weights(backend=BACKEND, model=resumed, weights=saved, strict=True)
    assert hook().tl_set_optimizer_state(backend=BACKEND, optimizer=resumed_opt, state=state)
    step(resumed, resumed_opt, x, y)
    got = weights(resumed)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


def test_optimizer_state_that_does_not_fit():
    model = build()
    freeze(model, policy="all")
    opt = optimizer(model)
    with pytest.raises(TlcoreError, match="does not fit"):
        hook().tl_set_optimizer_state(
            backend=BACKEND, optimizer=opt, state={"99.momentum": np.zeros(3)}
        )
    with pytest.raises(TlcoreError, match="shape"):
        hook().tl_set_optimizer_state(
            backend=BACKEND, optimizer=opt, state={"1.momentum": np.zeros(3)}
        )


def test_native_export_is_an_atomic_safe_keras_file(tmp_path):
    model = build(head=HeadSpec(hidden=(8,), dropout=0.2))
    path = export(model, "native", tmp_path)
    assert path == tmp_path / "model.keras"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]
    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    x = images(4)
    np.testing.assert_allclose(loaded(x, training=False).numpy(), model(x), rtol=1e-6)


def test_raw_onnx_export_runs_on_onnxruntime(tmp_path):
    """The raw graph: uint8 NHWC in (any batch), logits out, BGR preprocessing included."""
    ort = pytest.importorskip("onnxruntime")
    bgr = Preprocessing((32, 32), (1.0, 2.0, 3.0), (2.0, 2.0, 2.0), 1.0, "BGR")
    network = load(source="builtin:simple_cnn").network
    model = attach(Backbone(network, bgr, "bgr"), head=HeadSpec(hidden=(8,), dropout=0.3))
    path = export(model, "onnx", tmp_path)
    assert path == tmp_path / "model.onnx"
    session = ort.InferenceSession(str(path))
    (image_input,) = session.get_inputs()
    assert image_input.type == "tensor(uint8)" and image_input.shape[1:] == [32, 32, 3]
    for n in (1, 5):
        x = images(n)
        out = session.run(None, {image_input.name: x})[0]
        np.testing.assert_allclose(out, model(x), rtol=1e-4, atol=1e-5)


# --- end to end --------------------------------------------------------------------------


def test_fit_through_the_core_driver(small_digits, tmp_path):
    recipe = {
        "backend": BACKEND,
        "backbone": {"source": "builtin:simple_cnn", "weights": "none"},
        "train": {
            "batch_size": 32,
            "seed": 3,
            "stages": [
                {"name": "head", "epochs": 1, "lr": 3e-3, "freeze": {"policy": "all"}},
                {"name": "tune", "epochs": 1, "lr": 1e-3, "freeze": {"policy": "last_n", "n": 1}},
            ],
        },
        "export": {"formats": ["native", "onnx"]},
    }
    result = tlcore.fit(small_digits, recipe=recipe, out=tmp_path / "run")
    assert [r["stage"] for r in result.history] == ["head", "tune"]
    info = json.loads((tmp_path / "run" / "tlcore.json").read_text())
    assert info["onnx"]["parity"]["top1_agreement"] == 1.0
    assert info["framework_versions"]["keras"] == keras.__version__
    assert all(np.isfinite(r["loss"]) and 0 <= r["val_accuracy"] <= 1 for r in result.history)
    assert isinstance(result.model, TransferModel)
    assert (tmp_path / "run" / "native" / "model.keras").is_file()
    recipe["export"] = {"formats": ["native"]}
    again = tlcore.fit(small_digits, recipe=recipe, out=tmp_path / "again")
    assert [r["loss"] for r in again.history] == [r["loss"] for r in result.history]

    # A finished run rebuilds in this process from its weights, strictly by name.
    from tlcore.train import load_run

    _, _, model, _ = load_run(tmp_path / "run")
    x = images(4)
    np.testing.assert_allclose(model(x), result.model(x), rtol=1e-6, atol=1e-6)


class _StopAfter:
    """An observer plugin that interrupts the run after its N-th checkpoint, like Ctrl-C."""

    def __init__(self, count: int) -> None:
        self.count = count

    @tlcore.hookimpl
    def tl_on_checkpoint(self, run, path):
        self.count -= 1
        if self.count == 0:
            raise KeyboardInterrupt


def test_resume_with_dropout_repeats_an_uninterrupted_run(tmp_path, backend=BACKEND):
    from tlcore import plugins
    from tlcore.runfolder import read_arrays

    x, y = separable(64)
    recipe = {
        "backend": backend,
        "backbone": {"source": "builtin:simple_cnn", "weights": "none"},
        "head": {"hidden": [16], "dropout": 0.5},
        "train": {
            "batch_size": 16,
            "seed": 1,
            "stages": [
                {"name": "head", "epochs": 2, "lr": 3e-3, "freeze": {"policy": "all"}},
                {"name": "tune", "epochs": 2, "lr": 1e-3, "freeze": {"policy": "last_n", "n": 1}},
            ],
        },
        "export": {"formats": ["native"]},
    }
    whole = tlcore.fit((x, y), recipe=recipe, out=tmp_path / "whole")
    with plugins.plugin_registered(_StopAfter(3), "stopper"), pytest.raises(KeyboardInterrupt):
        tlcore.fit((x, y), recipe=recipe, out=tmp_path / "cut")
    resumed = tlcore.fit((x, y), out=tmp_path / "cut", resume=True)
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in whole.history]
    wa = read_arrays(tmp_path / "whole" / "native" / "weights.npz")
    wb = read_arrays(tmp_path / "cut" / "native" / "weights.npz")
    assert wa.keys() == wb.keys()
    for key in wa:
        np.testing.assert_array_equal(wa[key], wb[key], err_msg=key)
