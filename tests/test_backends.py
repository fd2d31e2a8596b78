"""Every backend behaves the same: one test per behaviour, run on each backend.

The tests talk to the backends only through the hooks (``tlcore.plugins.hook()``) and numpy.
Where a behaviour needs a native object (a user's own network, the layers of a head, which
parameters a framework will train), the few lines of framework code live in the per-backend
helpers of :data:`NATIVE`, together with the names each backend gives its weights.
"""

from __future__ import annotations

import importlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tlcore
from tlcore import plugins
from tlcore.builtins import SIMPLE_CNN_WIDTHS, simple_cnn_params
from tlcore.errors import TlcoreError
from tlcore.interfaces import Backbone, Batch, FreezeReport, LoadReport, Preprocessing, StepState
from tlcore.plugins import backends, hook
from tlcore.recipe import BackboneSpec, FreezeSpec, HeadSpec, StageSpec
from tlcore.runfolder import read_arrays

BACKENDS = ("torch", "keras")
pytestmark = [
    # Keras' saving code under numpy 2 (the .keras and .weights.h5 files written here); harmless.
    pytest.mark.filterwarnings(
        "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
    ),
]

# simple_cnn, the shared spec: conv 3x3 (no bias) + BatchNorm per block.
W0, W1, W2 = SIMPLE_CNN_WIDTHS
BLOCK_PARAMS = tuple(
    simple_cnn_params((width,), channels)
    for channels, width in zip((3, W0, W1), SIMPLE_CNN_WIDTHS, strict=True)
)


# --- the native bits, per backend --------------------------------------------------------


def _numpy(tensor: Any) -> np.ndarray:
    return tensor.detach().numpy() if hasattr(tensor, "detach") else np.asarray(tensor)


class _Torch:
    """How the torch backend names things, and the few places a test needs torch itself."""

    prefix = "backbone."
    head_prefix = "head."
    blocks = ("blocks.0", "blocks.1", "blocks.2")
    bn_pattern = r"\.1\.(weight|bias)$"  # a freeze pattern: the BatchNorm scales and shifts
    bn_param = re.compile(r"^backbone\.blocks\.\d\.1\.(weight|bias)$")
    bn_stat = re.compile(r"\.(running_mean|running_var|num_batches_tracked)$")
    int_buffers = ("backbone.blocks.0.1.num_batches_tracked",)
    classifier = ("head.0.weight", "head.0.bias")  # the head without hidden layers
    framework = "torch"
    native_file = "model.pt"
    native_by_name = True  # the native file names its weights as tl_get_weights does
    model_class = "tlcore_torch.model:TransferModel"
    user_name = "user:Net"
    infers_input_size = False  # a module does not say what it takes: input_size is needed
    channels_first = True  # flatten pooling follows the backbone's own layout
    adamw_state = frozenset({"step", "exp_avg", "exp_avg_sq"})
    counter, counted = "0.step", ("adamw", "rmsprop")  # the step count, in these optimisers
    bad_state = ("99.exp_avg", "0.exp_avg")  # (an unknown parameter, a wrong shape)

    @staticmethod
    def conv(block: int) -> str:
        return f"backbone.blocks.{block}.0.weight"

    @staticmethod
    def bn(block: int, kind: str) -> str:
        names = {"mean": "running_mean", "scale": "weight", "shift": "bias"}
        return f"backbone.blocks.{block}.1.{names[kind]}"

    @staticmethod
    def user_weights(layer: str) -> tuple[str, str]:
        return (f"{layer}.weight", f"{layer}.bias")

    @staticmethod
    def count_params(network) -> int:
        return sum(p.numel() for p in network.parameters())

    @staticmethod
    def feature_map(model, x) -> np.ndarray:
        """The backbone's output on ``x`` in inference mode, NHWC."""
        import torch

        model.eval()
        with torch.no_grad():
            fmap = model.backbone(model.preprocess(torch.from_numpy(x)))
        return fmap.permute(0, 2, 3, 1).numpy()

    @staticmethod
    def preprocess(model, x) -> np.ndarray:
        import torch

        return model.preprocess(torch.from_numpy(x)).permute(0, 2, 3, 1).numpy()

    @staticmethod
    def head_layers(model) -> list[tuple[str, tuple[int, int] | None]]:
        """The head's layers as (kind, (in, out) for dense layers)."""
        from torch import nn

        kinds = {nn.Linear: "dense", nn.ReLU: "relu", nn.GELU: "gelu", nn.Dropout: "dropout"}
        return [
            (kinds[type(m)], (m.in_features, m.out_features) if isinstance(m, nn.Linear) else None)
            for m in model.head
        ]

    @staticmethod
    def trainable(model) -> set[str]:
        """Names (as ``tl_get_weights`` gives them) of the weights the next optimiser trains."""
        return {n for n, p in model.named_parameters() if p.requires_grad}

    @staticmethod
    def direct(model, x) -> tuple[np.ndarray, np.ndarray]:
        """(the head on the features, the whole model) called natively, in inference mode."""
        import torch

        model.eval()
        with torch.no_grad():
            images = torch.from_numpy(x)
            return model.classify(model.features(images)).numpy(), model(images).numpy()

    @staticmethod
    def user_net(outputs: int):
        """A user's own network on 8x8 images: input → hidden → outputs."""
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.hidden = nn.Linear(3 * 8 * 8, 16)
                self.out = nn.Linear(16, outputs)

            def forward(self, x):
                return self.out(torch.relu(self.hidden(x.flatten(1))))

        return Net()

    @staticmethod
    def save_user_weights(net, folder: Path) -> Path:
        import torch

        path = folder / "net.pt"
        torch.save(net.state_dict(), path)
        return path

    @staticmethod
    def layer_weight(net, layer: str) -> np.ndarray:
        return _numpy(getattr(net, layer).weight).copy()


class _Keras:
    """How the Keras backend names things, and the few places a test needs Keras itself."""

    prefix = "backbone/"
    head_prefix = "head/"
    blocks = ("block_0", "block_1", "block_2")
    bn_pattern = r"^block_\d_bn/"
    bn_param = re.compile(r"^backbone/block_\d_bn/(gamma|beta)$")
    bn_stat = re.compile(r"/(moving_mean|moving_variance)$")
    int_buffers = ()
    classifier = ("head/classifier/kernel", "head/classifier/bias")
    framework = "keras"
    native_file = "model.keras"
    native_by_name = False  # .keras files store weights by position in the model
    model_class = "tlcore_keras.model:TransferModel"
    user_name = "user:Functional"
    infers_input_size = True  # from the model's Input
    channels_first = False
    adamw_state = frozenset({"iteration", "momentum", "velocity"})
    counter, counted = "0.iteration", ("adamw", "sgd", "rmsprop")
    bad_state = ("99.momentum", "1.momentum")

    @staticmethod
    def conv(block: int) -> str:
        return f"backbone/block_{block}_conv/kernel"

    @staticmethod
    def bn(block: int, kind: str) -> str:
        names = {"mean": "moving_mean", "scale": "gamma", "shift": "beta"}
        return f"backbone/block_{block}_bn/{names[kind]}"

    @staticmethod
    def user_weights(layer: str) -> tuple[str, str]:
        return (f"{layer}/kernel", f"{layer}/bias")

    @staticmethod
    def count_params(network) -> int:
        return sum(int(np.prod(v.shape)) for v in network.trainable_weights)

    @staticmethod
    def feature_map(model, x) -> np.ndarray:
        pixels = model.full.get_layer("preprocess")(x)
        return model.backbone(pixels, training=False).numpy()

    @staticmethod
    def preprocess(model, x) -> np.ndarray:
        return model.full.get_layer("preprocess")(x).numpy()

    @staticmethod
    def head_layers(model) -> list[tuple[str, tuple[int, int] | None]]:
        import keras

        def kind(layer) -> str:
            if isinstance(layer, keras.layers.Activation):
                return keras.activations.serialize(layer.activation)
            return {"Dense": "dense", "Dropout": "dropout", "ReLU": "relu"}[type(layer).__name__]

        return [
            (kind(layer), tuple(layer.kernel.shape) if kind(layer) == "dense" else None)
            for layer in model.classifier.layers[1:]
        ]

    @staticmethod
    def trainable(model) -> set[str]:
        ids = {id(v) for v in model.train_variables}
        return {name for name, variable in model.entries() if id(variable) in ids}

    @staticmethod
    def direct(model, x) -> tuple[np.ndarray, np.ndarray]:
        via_head = model.classifier(model.features(x, training=False), training=False)
        return via_head.numpy(), model.full(x, training=False).numpy()

    @staticmethod
    def user_net(outputs: int):
        import keras

        inputs = keras.Input((8, 8, 3))
        x = keras.layers.Flatten()(inputs)
        x = keras.layers.Dense(16, activation="relu", name="hidden")(x)
        return keras.Model(inputs, keras.layers.Dense(outputs, name="out")(x))

    @staticmethod
    def save_user_weights(net, folder: Path) -> Path:
        path = folder / "net.weights.h5"
        net.save_weights(path)
        return path

    @staticmethod
    def layer_weight(net, layer: str) -> np.ndarray:
        return net.get_layer(layer).kernel.numpy().copy()


NATIVE = {"torch": _Torch, "keras": _Keras}


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """Each test runs once per backend; a backend whose packages are missing is skipped."""
    for package in backends()[request.param].packages:
        pytest.importorskip(package)
    return request.param


@pytest.fixture
def native(backend):
    return NATIVE[backend]


# --- the hooks, by backend ---------------------------------------------------------------


def load(backend, **spec) -> Backbone:
    return hook().tl_load_backbone(backend=backend, spec=BackboneSpec(**spec))


def attach(backend, backbone, num_classes=3, head=None):
    return hook().tl_attach_head(
        backend=backend, backbone=backbone, head=head or HeadSpec(), num_classes=num_classes
    )


def build(backend, num_classes=3, head=None, **spec):
    spec.setdefault("source", "builtin:simple_cnn")
    return attach(backend, load(backend, **spec), num_classes, head)


def freeze(backend, model, **policy) -> FreezeReport:
    return hook().tl_freeze(backend=backend, model=model, policy=FreezeSpec(**policy))


def optimizer(backend, model, **stage):
    return hook().tl_make_optimizer(backend=backend, model=model, stage=StageSpec(**stage))


def step(backend, model, opt, x, y, lr=1e-2, features=False, smoothing=0.0):
    return hook().tl_train_step(
        backend=backend,
        model=model,
        batch=Batch(x, y, features=features),
        state=StepState(opt, lr=lr, label_smoothing=smoothing),
    )


def logits(backend, model, x, features=False) -> np.ndarray:
    batch = Batch(x, np.zeros(len(x), np.int64), features=features)
    return hook().tl_eval_step(backend=backend, model=model, batch=batch)


def features(backend, model, x) -> np.ndarray:
    return hook().tl_extract_features(backend=backend, model=model, images=x)


def weights(backend, model) -> dict[str, np.ndarray]:
    return hook().tl_get_weights(backend=backend, model=model)


def backbone_weights(backend, model) -> dict[str, np.ndarray]:
    prefix = NATIVE[backend].prefix
    return {k: v for k, v in weights(backend, model).items() if k.startswith(prefix)}


def export(backend, model, fmt, path):
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


def assert_same(before, after, names=None):
    for name in before if names is None else names:
        np.testing.assert_array_equal(before[name], after[name], err_msg=name)


def size(shape) -> int:
    return int(np.prod(shape))


# --- loading -----------------------------------------------------------------------------


def test_builtin_simple_cnn_is_the_shared_spec(backend, native):
    infos = {}
    hook().tl_register_backbones(backend=backend, register=lambda i: infos.setdefault(i.source, i))
    info = infos["builtin:simple_cnn"]
    assert info.input_size == 32
    backbone = load(backend, source="builtin:simple_cnn", weights="pretrained")
    assert info.params == simple_cnn_params() == sum(BLOCK_PARAMS)
    assert native.count_params(backbone.network) == simple_cnn_params()
    assert backbone.preprocessing.size == (32, 32)
    assert backbone.preprocessing.mean == (0.5, 0.5, 0.5)
    model = attach(backend, backbone)
    assert native.feature_map(model, images(2)).shape == (2, 4, 4, W2)
    report = freeze(backend, model, policy="none")
    assert report.backbone_trainable == simple_cnn_params()
    assert report.trainable_blocks == native.blocks
    bigger = load(backend, source="builtin:simple_cnn", input_size=64)
    assert bigger.preprocessing.size == (64, 64)
    default = load(backend, source=None, weights="none", input_size=32)
    assert default.name == backends()[backend].default_backbone


def test_unknown_builtin_name_is_a_tlcore_error(backend):
    with pytest.raises(TlcoreError, match="simple_cn") as info:
        load(backend, source="builtin:simple_cn")
    assert "simple_cnn" in info.value.hint


def test_a_users_own_network_as_the_backbone(backend, native):
    net = native.user_net(2)
    if native.infers_input_size:
        backbone = load(backend, source=None, model=net)
    else:
        with pytest.raises(TlcoreError, match="input_size"):
            load(backend, source=None, model=net)
        backbone = load(backend, source=None, model=net, input_size=8)
    assert backbone.network is net and backbone.name == native.user_name
    assert backbone.preprocessing.size == (8, 8)
    model = attach(backend, backbone, num_classes=4)
    assert freeze(backend, model, policy="none").trainable_blocks == ("hidden", "out")
    assert features(backend, model, np.zeros((3, 8, 8, 3), np.uint8)).shape == (3, 2)
    assert logits(backend, model, np.zeros((3, 8, 8, 3), np.uint8)).shape == (3, 4)
    with pytest.raises(TlcoreError, match="cannot run on 32x32"):
        build(backend, source=None, model=native.user_net(2), input_size=32)


def test_weights_from_another_task_load_partially(backend, native, tmp_path):
    """The seed example: a 10-class network's weights into a 2-class one of the same design."""
    hook().tl_seed(backend=backend, seed=1)
    trained = native.user_net(10)
    path = native.save_user_weights(trained, tmp_path)
    hook().tl_seed(backend=backend, seed=2)
    target = native.user_net(2)
    initial_out = native.layer_weight(target, "out")

    backbone = load(backend, source=None, model=target, input_size=8, weights=str(path))
    report = backbone.extra["weights_report"]
    assert isinstance(report, LoadReport)
    assert report.loaded == native.user_weights("hidden")
    assert report.mismatched == native.user_weights("out")
    assert report.missing == () and report.unexpected == ()
    hidden = native.layer_weight(target, "hidden")
    np.testing.assert_array_equal(hidden, native.layer_weight(trained, "hidden"))
    np.testing.assert_array_equal(native.layer_weight(target, "out"), initial_out)

    # Nothing of it fits simple_cnn: that is an error, not an empty load.
    with pytest.raises(TlcoreError, match="no weight"):
        load(backend, source="builtin:simple_cnn", weights=str(path))
    with pytest.raises(TlcoreError, match="not found"):
        load(backend, source="builtin:simple_cnn", weights=str(tmp_path / "missing.pt"))


def test_a_full_model_export_loads_into_a_bare_backbone(backend, native, tmp_path):
    """Train on one task, export, start the next task's backbone from it (native and .npz)."""
    source = build(backend, num_classes=5)
    exported = export(backend, source, "native", tmp_path)
    npz = tmp_path / "weights.npz"
    np.savez(npz, **weights(backend, source))
    own = backbone_weights(backend, source)
    expected = {k.removeprefix(native.prefix): v for k, v in own.items()}
    for path in (exported, npz):
        backbone = load(backend, source="builtin:simple_cnn", weights=str(path))
        report = backbone.extra["weights_report"]
        assert len(report.loaded) == len(expected), path
        assert report.mismatched == () and report.missing == ()
        assert len(report.unexpected) == 2, report.unexpected  # the head's, in the file's names
        if path == npz or native.native_by_name:
            assert set(report.unexpected) == set(native.classifier), report.unexpected
        loaded = backbone_weights(backend, attach(backend, backbone))
        got = {k.removeprefix(native.prefix): v for k, v in loaded.items()}
        assert_same(expected, got)
    with pytest.raises(TlcoreError, match="no weight"):
        load(backend, source=None, model=native.user_net(2), input_size=8, weights=str(npz))


# --- preprocessing and head --------------------------------------------------------------


def test_preprocessing_is_inside_the_model(backend, native):
    model = build(backend)
    x = images(2)
    expected = (x.astype(np.float32) / 255 - 0.5) / 0.5
    np.testing.assert_allclose(native.preprocess(model, x), expected, rtol=1e-6, atol=1e-6)
    # Normalisation constants are not weights: every weight is the backbone's or the head's.
    assert all(k.startswith((native.prefix, native.head_prefix)) for k in weights(backend, model))

    bgr = Preprocessing((32, 32), (1.0, 2.0, 3.0), (1.0, 1.0, 1.0), 1.0, "BGR")
    network = load(backend, source="builtin:simple_cnn").network
    model = attach(backend, Backbone(network, bgr, "bgr"), num_classes=2)
    expected = x.astype(np.float32)[..., ::-1] - np.array([1.0, 2.0, 3.0], np.float32)
    np.testing.assert_allclose(native.preprocess(model, x), expected, rtol=1e-6)


@pytest.mark.parametrize(("pooling", "width"), [("avg", W2), ("max", W2), ("flatten", W2 * 16)])
def test_pooling_widths_on_a_feature_map(backend, native, pooling, width):
    model = build(backend, head=HeadSpec(pooling=pooling), num_classes=5)
    x = images(4)
    fmap = native.feature_map(model, x)  # NHWC
    own_layout = fmap.transpose(0, 3, 1, 2) if native.channels_first else fmap
    expected = {
        "avg": fmap.mean((1, 2)),
        "max": fmap.max((1, 2)),
        "flatten": own_layout.reshape(4, -1),  # flattened in the backbone's own layout
    }
    feats = features(backend, model, x)
    assert feats.shape == (4, width)
    np.testing.assert_allclose(feats, expected[pooling], rtol=1e-5, atol=1e-5)
    assert logits(backend, model, x).shape == (4, 5)


def test_hidden_layers_activation_and_dropout(backend, native):
    head = HeadSpec(hidden=(16, 8), dropout=0.25, activation="gelu")
    model = build(backend, head=head, num_classes=4)
    assert native.head_layers(model) == [
        ("dense", (W2, 16)), ("gelu", None), ("dropout", None),
        ("dense", (16, 8)), ("gelu", None), ("dropout", None),
        ("dense", (8, 4)),
    ]  # fmt: skip
    assert logits(backend, model, images(3)).shape == (3, 4)
    plain = build(backend, head=HeadSpec(dropout=0.5))
    assert native.head_layers(plain) == [("dropout", None), ("dense", (W2, 3))]
    relu = build(backend, head=HeadSpec(hidden=(8,)))
    assert [kind for kind, _ in native.head_layers(relu)] == ["dense", "relu", "dense"]


def test_features_then_head_equals_the_full_model(backend, native):
    model = build(backend, num_classes=3, head=HeadSpec(hidden=(8,)))
    x = images(6)
    feats = features(backend, model, x)
    assert feats.dtype == np.float32 and feats.shape == (6, W2)
    full = logits(backend, model, x)
    from_features = logits(backend, model, feats, features=True)
    np.testing.assert_allclose(from_features, full, rtol=1e-5, atol=1e-5)
    via_head, whole = native.direct(model, x)
    np.testing.assert_allclose(via_head, whole, rtol=1e-6, atol=1e-6)
    assert features(backend, model, images(0)).shape == (0, W2)

    freeze(backend, model, policy="all")
    opt = optimizer(backend, model)
    before = backbone_weights(backend, model)
    result = step(backend, model, opt, feats, np.array([0, 1, 2, 0, 1, 2]), features=True)
    assert np.isfinite(result["loss"])
    assert_same(before, backbone_weights(backend, model))


# --- freezing ----------------------------------------------------------------------------


def test_freeze_policy_counts(backend, native):
    model = build(backend, num_classes=3)
    head = W2 * 3 + 3
    total = simple_cnn_params()
    blocks = native.blocks
    cases = {
        "all": ({}, 0, ()),
        "none": ({}, total, blocks),
        "last_n": ({"n": 2}, BLOCK_PARAMS[1] + BLOCK_PARAMS[2], blocks[1:]),
        "pattern": ({"pattern": native.bn_pattern}, total - (W0 + W1 + W2) * 2, blocks),
    }
    shapes = {k: v.shape for k, v in weights(backend, model).items()}
    for policy, (extra, backbone, trainable_blocks) in cases.items():
        report = freeze(backend, model, policy=policy, **extra)
        expected = FreezeReport(head + backbone, total - backbone, backbone, trainable_blocks)
        assert report == expected, policy
        trainable = native.trainable(model)
        in_backbone = [n for n in trainable if n.startswith(native.prefix)]
        assert sum(size(shapes[n]) for n in in_backbone) == backbone, policy
        assert sum(size(shapes[n]) for n in trainable) == head + backbone, policy
        bn_params = [n for n in shapes if native.bn_param.match(n)]
        assert len(bn_params) == 6
        frozen_bn = {n for n in bn_params if n not in trainable}
        expected_bn = {
            "all": set(bn_params),
            "pattern": set(bn_params),
            "none": set(),
            "last_n": {native.bn(0, "scale"), native.bn(0, "shift")},
        }
        assert frozen_bn == expected_bn[policy], policy
    assert freeze(backend, model, policy="last_n", n=0).backbone_frozen
    assert freeze(backend, model, policy="last_n", n=10).backbone_trainable == total
    with pytest.raises(TlcoreError, match="matches no backbone weight"):
        freeze(backend, model, policy="pattern", pattern="nothing_like_this")


def test_frozen_backbone_is_bit_identical_after_training_steps(backend, native):
    """Every backbone weight, BatchNorm statistics included, is unchanged by training the head."""
    model = build(backend, num_classes=2)
    assert freeze(backend, model, policy="all").backbone_frozen
    before = backbone_weights(backend, model)
    assert len([n for n in before if native.bn_stat.search(n)]) >= 6
    head_before = weights(backend, model)[native.classifier[0]]
    opt = optimizer(backend, model, optimizer="adamw", weight_decay=0.1)
    x, y = separable(16)
    for _ in range(3):
        step(backend, model, opt, x, y)
    after = backbone_weights(backend, model)
    assert after.keys() == before.keys()
    assert_same(before, after)
    assert not np.array_equal(head_before, weights(backend, model)[native.classifier[0]])


@pytest.mark.parametrize("batchnorm", ["frozen", "follow", "train"])
def test_batchnorm_modes_with_a_partly_trainable_backbone(backend, native, batchnorm):
    model = build(backend, num_classes=2)
    freeze(backend, model, policy="last_n", n=1, batchnorm=batchnorm)
    before = backbone_weights(backend, model)
    opt = optimizer(backend, model, optimizer="sgd")
    x, y = separable(16)
    for _ in range(2):
        step(backend, model, opt, x, y)
    after = backbone_weights(backend, model)
    for block in range(3):
        stats = native.bn(block, "mean")
        changes = batchnorm == "train" or (batchnorm == "follow" and block == 2)
        assert np.array_equal(before[stats], after[stats]) != changes, (batchnorm, stats)
        kernel = native.conv(block)
        assert np.array_equal(before[kernel], after[kernel]) == (block != 2), kernel
    scale = native.bn(2, "scale")
    assert not np.array_equal(before[scale], after[scale])


# --- training ----------------------------------------------------------------------------


def test_training_steps_reduce_the_loss(backend):
    hook().tl_seed(backend=backend, seed=0)
    model = build(backend, num_classes=2)
    freeze(backend, model, policy="none")
    x, y = separable(32)
    before = cross_entropy(logits(backend, model, x), y)
    opt = optimizer(backend, model, optimizer="adamw", lr=1e-2)
    results = [step(backend, model, opt, x, y, lr=1e-2, smoothing=0.1) for _ in range(8)]
    assert all(set(r) == {"loss", "accuracy"} for r in results)
    assert all(isinstance(v, float) for r in results for v in r.values())
    out = logits(backend, model, x)
    assert out.dtype == np.float32 and out.shape == (32, 2)
    assert cross_entropy(out, y) < before / 2
    assert (out.argmax(1) == y).mean() == 1.0


def test_label_smoothing_matches_the_definition(backend):
    model = build(backend, num_classes=3)
    freeze(backend, model, policy="all")
    feats = features(backend, model, images(6))
    y = np.array([0, 1, 2, 0, 1, 2])
    z = logits(backend, model, feats, features=True).astype(np.float64)
    log_p = z - z.max(1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(1, keepdims=True))
    expected = 0.8 * -log_p[np.arange(6), y].mean() + 0.2 * -log_p.mean()
    opt = optimizer(backend, model)
    result = step(backend, model, opt, feats, y, features=True, smoothing=0.2, lr=0.0)
    assert result["loss"] == pytest.approx(expected, rel=1e-5)


def test_seed_makes_initialisation_repeatable(backend, native):
    def head_weights(seed):
        hook().tl_seed(backend=backend, seed=seed)
        return weights(backend, build(backend))[native.classifier[0]]

    first = head_weights(7)
    np.testing.assert_array_equal(head_weights(7), first)
    assert not np.array_equal(head_weights(8), first)


# --- state -------------------------------------------------------------------------------


def test_weights_round_trip_and_strictness(backend, native):
    hook().tl_seed(backend=backend, seed=0)
    source = build(backend, num_classes=3)
    freeze(backend, source, policy="none", batchnorm="train")
    step(backend, source, optimizer(backend, source), *separable(8))
    saved = weights(backend, source)
    assert all(isinstance(v, np.ndarray) for v in saved.values())
    assert saved[native.bn(0, "mean")].any()  # the statistics are there, and they moved
    for name in native.int_buffers:
        assert saved[name].dtype == np.int64, name
    copies = {k: v.copy() for k, v in saved.items()}
    step(backend, source, optimizer(backend, source), *separable(8))  # copies stay as they were
    assert_same(copies, saved)

    target = build(backend, num_classes=3)
    report = hook().tl_set_weights(backend=backend, model=target, weights=saved, strict=True)
    assert len(report.loaded) == len(saved)
    assert_same(saved, weights(backend, target))

    other = build(backend, num_classes=5)
    with pytest.raises(TlcoreError, match=re.escape(native.classifier[0])):
        hook().tl_set_weights(backend=backend, model=other, weights=saved, strict=True)
    report = hook().tl_set_weights(backend=backend, model=other, weights=saved, strict=False)
    assert report.mismatched == native.classifier
    assert len(report.loaded) == len(saved) - 2


@pytest.mark.parametrize("name", ["adamw", "sgd", "rmsprop"])
def test_optimizer_state_round_trip_repeats_the_next_step(backend, native, name):
    x, y = separable(8)

    def fresh(seed):
        hook().tl_seed(backend=backend, seed=seed)
        model = build(backend, num_classes=2)
        freeze(backend, model, policy="last_n", n=1)
        return model, optimizer(backend, model, optimizer=name, lr=1e-2)

    model, opt = fresh(0)
    for _ in range(3):
        step(backend, model, opt, x, y)
    saved = weights(backend, model)
    state = hook().tl_get_optimizer_state(backend=backend, optimizer=opt)
    assert state and all(isinstance(v, np.ndarray) for v in state.values())
    if name == "adamw":
        assert {k.split(".", 1)[1] for k in state} == native.adamw_state
    if name in native.counted:
        assert state[native.counter] == 3
    step(backend, model, opt, x, y)
    expected = weights(backend, model)

    resumed, resumed_opt = fresh(1)
    hook().tl_set_weights(backend=backend, model=resumed, weights=saved, strict=True)
    assert hook().tl_set_optimizer_state(backend=backend, optimizer=resumed_opt, state=state)
    step(backend, resumed, resumed_opt, x, y)
    assert_same(expected, weights(backend, resumed))


def test_optimizer_state_that_does_not_fit(backend, native):
    model = build(backend)
    freeze(backend, model, policy="all")
    opt = optimizer(backend, model)
    unknown, wrong_shape = native.bad_state
    with pytest.raises(TlcoreError, match="does not fit"):
        hook().tl_set_optimizer_state(backend=backend, optimizer=opt, state={unknown: np.zeros(3)})
    with pytest.raises(TlcoreError, match="shape"):
        hook().tl_set_optimizer_state(
            backend=backend, optimizer=opt, state={wrong_shape: np.zeros(3)}
        )


# --- export ------------------------------------------------------------------------------


def test_raw_onnx_export_runs_on_onnxruntime(backend, tmp_path):
    """The raw graph: uint8 NHWC in (any batch), logits out, BGR preprocessing included."""
    ort = pytest.importorskip("onnxruntime")
    bgr = Preprocessing((32, 32), (1.0, 2.0, 3.0), (2.0, 2.0, 2.0), 1.0, "BGR")
    network = load(backend, source="builtin:simple_cnn").network
    model = attach(backend, Backbone(network, bgr, "bgr"), head=HeadSpec(hidden=(8,), dropout=0.3))
    path = export(backend, model, "onnx", tmp_path)
    assert path == tmp_path / "model.onnx"
    session = ort.InferenceSession(str(path))
    (image_input,) = session.get_inputs()
    assert image_input.type == "tensor(uint8)" and image_input.shape[1:] == [32, 32, 3]
    for n in (1, 5):
        x = images(n)
        out = session.run(None, {image_input.name: x})[0]
        np.testing.assert_allclose(out, logits(backend, model, x), rtol=1e-4, atol=1e-5)


# --- through the core driver -------------------------------------------------------------

SMALL = {
    "backbone": {"source": "builtin:simple_cnn", "weights": "none"},
    "train": {"batch_size": 32, "seed": 3},
}


@dataclass
class _Run:
    result: Any
    path: Path
    info: dict


@pytest.fixture(scope="module")
def default_runs(small_digits, tmp_path_factory):
    """The default recipe (one epoch per stage, default export formats) once per backend."""
    runs: dict[str, _Run] = {}

    def get(backend: str) -> _Run:
        if backend not in runs:
            out = tmp_path_factory.mktemp(f"default-{backend}") / "run"
            recipe = {**SMALL, "backend": backend}
            result = tlcore.fit(small_digits, recipe=recipe, out=out, epochs=1)
            info = json.loads((out / "tlcore.json").read_text())
            runs[backend] = _Run(result, out, info)
        return runs[backend]

    return get


def test_default_recipe_trains_the_head_then_fine_tunes(
    backend, native, default_runs, small_digits
):
    run = default_runs(backend)
    history = run.result.history
    assert [r["stage"] for r in history] == ["head", "fine_tune"]
    assert history[1]["lr"] < history[0]["lr"]
    assert all(np.isfinite(r["loss"]) and 0 <= r["val_accuracy"] <= 1 for r in history)
    assert run.info["labels"] == [str(i) for i in range(10)]
    assert run.info["input"]["size"] == [32, 32] and run.info["input"]["dtype"] == "uint8"
    framework = importlib.import_module(native.framework)
    assert run.info["framework_versions"][native.framework] == framework.__version__
    module, cls = native.model_class.split(":")
    assert isinstance(run.result.model, getattr(importlib.import_module(module), cls))
    assert (run.path / "native" / native.native_file).is_file()
    with pytest.raises(tlcore.TlcoreError, match="already exists"):
        tlcore.fit(small_digits, recipe={**SMALL, "backend": backend}, out=run.path, epochs=1)


def test_onnx_export_parity_at_batch_1_and_8(backend, default_runs):
    """Training with the default formats writes a verified model.onnx and its parity."""
    run = default_runs(backend)
    onnx = run.info["onnx"]
    parity = onnx["parity"]
    assert parity["samples"] == 8 and parity["batch_sizes"] == [1, 8]
    assert parity["top1_agreement"] == 1.0
    assert 0 <= parity["max_abs_diff"] <= parity["tolerance"] == 1e-4
    import hashlib

    model_file = run.path / onnx["file"]
    assert onnx["sha256"] == hashlib.sha256(model_file.read_bytes()).hexdigest()


def test_a_finished_run_rebuilds_from_its_weights(backend, default_runs):
    from tlcore.train import load_run

    run = default_runs(backend)
    _, classes, model, _ = load_run(run.path)
    assert classes == tuple(str(i) for i in range(10))
    x = images(4)
    np.testing.assert_allclose(
        logits(backend, model, x), logits(backend, run.result.model, x), rtol=1e-6, atol=1e-6
    )


class _StopAfter:
    """An observer plugin that interrupts the run after its N-th checkpoint, like Ctrl-C."""

    def __init__(self, count: int) -> None:
        self.count = count

    @tlcore.hookimpl
    def tl_on_checkpoint(self, run, path):
        self.count -= 1
        if self.count == 0:
            raise KeyboardInterrupt


def test_resume_ends_where_an_uninterrupted_run_ends(backend, tmp_path):
    """Interrupted in the middle (dropout in the head, a fine-tuned block), then resumed: the
    same losses, metrics and final weights as a run that was never interrupted."""
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
    assert not (tmp_path / "cut" / "native").exists()
    resumed = tlcore.fit((x, y), out=tmp_path / "cut", resume=True)
    assert [(r["stage"], r["epoch"]) for r in resumed.history] == [
        ("head", 1), ("head", 2), ("tune", 1), ("tune", 2),
    ]  # fmt: skip
    for key in ("loss", "val_loss", "val_accuracy"):
        assert [r[key] for r in resumed.history] == [r[key] for r in whole.history], key
    wa = read_arrays(tmp_path / "whole" / "native" / "weights.npz")
    wb = read_arrays(tmp_path / "cut" / "native" / "weights.npz")
    assert wa.keys() == wb.keys()
    assert_same(wa, wb)


# --- the demo, from the command line ------------------------------------------------------


def test_demo_recipe_reaches_the_same_accuracy_on_both_backends(demo_run):
    """``tl demo``, then ``tl train --recipe recipe.yaml`` with each backend: both learn the
    digits, and to within five points of each other."""
    for name in BACKENDS:
        for package in backends()[name].packages:
            pytest.importorskip(package)
    accuracy = {
        name: json.loads((demo_run(name) / "tlcore.json").read_text())["metrics"]["val_accuracy"]
        for name in BACKENDS
    }
    assert all(a >= 0.85 for a in accuracy.values()), accuracy
    assert abs(accuracy["torch"] - accuracy["keras"]) <= 0.05, accuracy
