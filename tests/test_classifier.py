"""``head.classifier`` (:mod:`tlcore.classifier`) on both backends: the network's own last
linear layer removed (``replace``) or continued as the head (``keep``), and what is refused;
then the two seed articles' recipes as written, through ``tlcore.fit`` to a checked bundle:
seed 002 (a PyTorch ``Net``'s saved ``state_dict`` into a ``Net`` of another output size) and
seed 001 (a Keras ``Sequential`` pretrained with ``fit``, its softmax head trained on)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import tlcore
from tlcore.errors import RecipeError, TlcoreError
from tlcore.recipe import HeadSpec, build_recipe
from tlcore.runtime import Predictor
from tlcore.testing import BackendUnderTest

torch.set_num_threads(2)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TORCH = BackendUnderTest("torch")
KERAS = BackendUnderTest("keras")
FEATURES, HIDDEN = 64, 32  # sklearn's digits: 8x8 pixels, 10 classes
REPLACE, KEEP = HeadSpec(classifier="replace"), HeadSpec(classifier="keep")


def digits() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's digits as the seeds scale MNIST: pixel values divided by their maximum."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return (data.data / 16.0).astype(np.float32), data.target.astype(np.int64)


# --- the recipe -----------------------------------------------------------------------------


def test_the_field_defaults_to_new_and_keep_refuses_hidden_layers():
    assert build_recipe().head.classifier == "new"
    assert build_recipe({"head": {"classifier": "replace", "hidden": [16]}}).head.hidden == (16,)
    with pytest.raises(RecipeError, match=r"head\.classifier") as info:
        build_recipe({"head": {"classifier": "keep", "hidden": [16]}})
    assert "head.hidden" in info.value.hint
    with pytest.raises(RecipeError, match="did you mean 'keep'"):
        build_recipe({"head": {"classifier": "kept"}})
    # A logistic stage fits the head anew: the kept layer would be thrown away unsaid.
    logistic = {"stages": [{"name": "head", "optimizer": "logistic"}]}
    with pytest.raises(RecipeError, match=r"head\.classifier") as info:
        build_recipe({"head": {"classifier": "keep"}, "train": logistic})
    assert "logistic" in info.value.hint
    assert build_recipe({"head": {"classifier": "replace"}, "train": logistic})


# --- torch ----------------------------------------------------------------------------------


class Net(nn.Module):
    """Seed 002's network: ``layer1`` Linear, ReLU, ``layer2`` Linear."""

    def __init__(self, features: int, hidden: int, outputs: int) -> None:
        super().__init__()
        self.layer1 = nn.Linear(features, hidden)
        self.layer2 = nn.Linear(hidden, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer2(torch.relu(self.layer1(x)))


class Softmaxed(Net):
    """A network whose forward ends after its last Linear (the old MNIST examples)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(super().forward(x), dim=1)


def torch_attach(network: nn.Module, classes: int, head: HeadSpec, **spec):
    return TORCH.attach(TORCH.load(model=network, input_features=FEATURES, **spec), classes, head)


def test_torch_replace_takes_the_last_linear_out_of_a_copy():
    torch.manual_seed(0)
    net = Net(FEATURES, HIDDEN, 10)
    model = torch_attach(net, 3, REPLACE)
    assert isinstance(model.backbone.layer2, nn.Identity)
    assert isinstance(net.layer2, nn.Linear) and model.backbone is not net  # the user's, intact
    assert model.num_features == HIDDEN and model.blocks == ("layer1",)
    assert model.head[-1].weight.shape == (3, HIDDEN)
    x = np.random.default_rng(0).normal(size=(5, FEATURES)).astype(np.float32)
    with torch.no_grad():  # the features (the bundle's embeddings) are the layer's input
        expected = torch.relu(net.layer1(torch.from_numpy(x))).numpy()
    np.testing.assert_allclose(TORCH.features(model, x), expected, atol=1e-6)


def test_torch_keep_starts_the_head_from_the_layer_and_checks_its_width():
    torch.manual_seed(0)
    net = Net(FEATURES, HIDDEN, 10)
    model = torch_attach(net, 10, KEEP)
    assert torch.equal(model.head[-1].weight, net.layer2.weight)
    assert torch.equal(model.head[-1].bias, net.layer2.bias)
    assert len(model.head) == 1  # no dropout, no hidden layers: the layer itself
    x = np.random.default_rng(0).normal(size=(5, FEATURES)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(TORCH.logits(model, x), net(torch.from_numpy(x)).numpy(),
                                   atol=1e-6)
    with pytest.raises(TlcoreError, match="'layer2' has 10 outputs, but the data has 2") as info:
        torch_attach(net, 2, KEEP)
    assert "head.classifier: replace" in info.value.hint


def test_torch_refuses_a_network_whose_last_linear_is_not_its_output():
    with pytest.raises(TlcoreError, match="something follows it") as info:
        TORCH.attach(TORCH.load(source="builtin:mlp", input_features=8, widths=(16,)), 3, KEEP)
    assert "'blocks.0.0'" in str(info.value)  # builtin:mlp ends in ReLU
    with pytest.raises(TlcoreError, match=r"output is not the output of its last nn\.Linear"):
        torch_attach(Softmaxed(FEATURES, HIDDEN, 3), 3, REPLACE)
    with pytest.raises(TlcoreError, match=r"it has no nn\.Linear"):
        TORCH.attach(TORCH.load(source="builtin:simple_cnn", input_size=32), 3, REPLACE)


def test_torch_refuses_torchscript_and_text_encoders(tmp_path):
    from .text_models import save_text_model

    path = tmp_path / "net.pt"
    torch.jit.save(torch.jit.script(Net(FEATURES, HIDDEN, 3)), path)
    with pytest.raises(TlcoreError, match="it is TorchScript"):
        TORCH.attach(TORCH.load(source=f"file:{path}", input_size=8), 3, REPLACE)
    encoder = save_text_model(tmp_path / "bert")
    with pytest.raises(TlcoreError, match="does not apply to a text encoder") as info:
        TORCH.attach(TORCH.load(source=f"hf:{encoder}", input_size=16), 3, KEEP)
    assert "head.classifier: new" in info.value.hint


@pytest.mark.slow
def test_seed_002_a_saved_state_dict_into_a_net_of_another_output_size(tmp_path, capsys):
    """As written: Net(784, 100, 10) trained, its state_dict saved to a plain file, loaded
    into Net(784, 100, 2) for another task: the layers that fit load (layer1), the output
    layer of another size does not (reported), and the Net's own 2-way layer2 is the head."""
    x, y = digits()
    torch.manual_seed(0)
    trained = Net(FEATURES, HIDDEN, 10)
    optimizer = torch.optim.Adam(trained.parameters(), lr=1e-2)
    inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(30):
        optimizer.zero_grad()
        nn.functional.cross_entropy(trained(inputs), targets).backward()
        optimizer.step()
    path = tmp_path / "net.pt"
    torch.save(trained.state_dict(), path)

    pair = (y == 3) | (y == 8)
    x2, y2 = x[pair], (y[pair] == 8).astype(np.int64)
    net = Net(FEATURES, HIDDEN, 2)
    result = tlcore.fit(
        (x2, y2), backbone=net, backend="torch", out=tmp_path / "keep", quiet=True,
        recipe={"backbone": {"weights": str(path)}, "head": {"classifier": "keep"},
                "data": {"val_split": 0.25},
                "train": {"stages": [{"name": "head", "epochs": 5, "lr": 1e-2,
                                      "freeze": {"policy": "all"}}]}},
    )
    assert "re-initialised (shape differs from" in capsys.readouterr().err
    model = result.model
    assert torch.equal(model.backbone.layer1.weight.cpu(), trained.layer1.weight)  # frozen
    assert isinstance(model.backbone.layer2, nn.Identity) and isinstance(net.layer2, nn.Linear)
    assert result.metrics["val_accuracy"] > 0.9
    info = json.loads((result.path / "tlcore.json").read_text())
    assert info["recipe"]["head"]["classifier"] == "keep"
    assert info["onnx"]["parity"]["agreement"] == 1.0
    bundle = Predictor(result.path)
    assert bundle.embeddings(x2[:4]).shape == (4, HIDDEN)  # layer2's input
    with torch.no_grad():
        native = torch.softmax(model.eval()(torch.tensor(x2[:8])), dim=1).numpy()
    np.testing.assert_allclose(bundle.outputs(x2[:8]), native, atol=1e-5)

    # The same file into Net(..., 10): everything loads, and `replace` puts a 2-way head in
    # place of the trained 10-way layer2.
    capsys.readouterr()
    replaced = tlcore.fit(
        (x2, y2), backbone=Net(FEATURES, HIDDEN, 10), weights=str(path), backend="torch",
        out=tmp_path / "replace", quiet=True, recipe={"head": {"classifier": "replace"}},
        overrides={"train.stages": [{"name": "head", "epochs": 3, "lr": 1e-2,
                                     "freeze": {"policy": "all"}}]},
    )
    assert "shape differs" not in capsys.readouterr().err
    assert replaced.model.head[-1].weight.shape == (2, HIDDEN)
    assert torch.equal(replaced.model.backbone.layer1.weight.cpu(), trained.layer1.weight)


# --- keras ----------------------------------------------------------------------------------


def keras_mlp(outputs: int = 10, activation: str = "softmax"):
    """Seed 001's network: Flatten, Dense(HIDDEN, relu), Dense(outputs, ``activation``)."""
    import keras

    return keras.Sequential([
        keras.Input((FEATURES,)), keras.layers.Flatten(),
        keras.layers.Dense(HIDDEN, activation="relu", name="hidden"),
        keras.layers.Dense(outputs, activation=activation, name="out"),
    ])


def keras_attach(network, classes: int, head: HeadSpec):
    return KERAS.attach(KERAS.load(model=network, input_features=FEATURES), classes, head)


def test_keras_replace_and_keep_cut_the_graph_and_leave_the_users_model():
    import keras

    keras.utils.set_random_seed(0)
    net = keras_mlp(10)
    replaced = keras_attach(net, 3, REPLACE)
    assert replaced.num_features == HIDDEN and replaced.blocks.names == ("hidden",)
    assert replaced.classifier.get_layer("classifier").kernel.shape == (HIDDEN, 3)
    assert [layer.name for layer in net.layers][-1] == "out" and net.outputs[0].shape[-1] == 10
    kept = keras_attach(net, 10, KEEP)
    head = kept.classifier.get_layer("classifier")
    np.testing.assert_array_equal(np.asarray(head.kernel), np.asarray(net.get_layer("out").kernel))
    x = np.random.default_rng(0).normal(size=(5, FEATURES)).astype(np.float32)
    probabilities = np.asarray(keras.ops.softmax(KERAS.logits(kept, x)))
    np.testing.assert_allclose(probabilities, net.predict(x, verbose=0), atol=1e-6)


def test_keras_refusals(tmp_path):
    import keras

    from .text_models import save_text_model

    encoder = save_text_model(tmp_path / "bert")
    with pytest.raises(TlcoreError, match="does not apply to a text encoder"):
        KERAS.attach(KERAS.load(source=f"hf:{encoder}", input_size=16), 3, KEEP)

    with pytest.raises(TlcoreError, match="last layer is a ReLU"):
        KERAS.attach(KERAS.load(source="builtin:mlp", input_features=8, widths=(16,)), 3, KEEP)
    with pytest.raises(TlcoreError, match=r"applies relu; .* would mean something else"):
        keras_attach(keras_mlp(3, "relu"), 3, KEEP)
    assert keras_attach(keras_mlp(3, "relu"), 3, REPLACE).num_features == HIDDEN
    with pytest.raises(TlcoreError, match="has 10 outputs, but the data has 2 classes"):
        keras_attach(keras_mlp(10), 2, KEEP)

    class Subclassed(keras.Model):
        """An image network whose forward is code, not a graph of layers."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = keras.layers.Conv2D(4, 3)
            self.pool = keras.layers.GlobalAveragePooling2D()
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            return self.dense(self.pool(self.conv(x)))

    with pytest.raises(TlcoreError, match=r"subclassed keras\.Model"):
        KERAS.attach(KERAS.load(model=Subclassed(), input_size=16), 3, REPLACE)


@pytest.mark.slow
def test_seed_001_a_keras_mlp_pretrained_with_fit_continues_its_softmax_head(tmp_path):
    """As written: Sequential([Flatten, Dense(relu), Dense(10, softmax)]) trained with
    ``fit`` on half of the digits 0-9, then fine-tuned on the other half by ``tlcore.fit``
    with ``head.classifier: keep``, every layer training. The run starts from the network's own
    classifier: at a learning rate that moves nothing, the bundle answers as the Keras
    model does (a new head would answer at chance)."""
    import keras

    x, y = digits()
    first, second = slice(0, 900), slice(900, None)
    keras.utils.set_random_seed(0)
    network = keras_mlp(10)
    network.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                    metrics=["accuracy"])
    network.fit(x[first], y[first], epochs=10, batch_size=32, verbose=0)
    # A network with trained weights takes the vectors as they come (data.standardize
    # unset): as it was trained on them.
    expected = network.predict(x[second], verbose=0)
    assert (expected.argmax(1) == y[second]).mean() > 0.85
    kernel = np.asarray(network.get_layer("out").kernel).copy()

    result = tlcore.fit(
        (x[second], y[second]), backbone=network, backend="keras", out=tmp_path / "keep",
        quiet=True,
        recipe={"head": {"classifier": "keep"}, "data": {"val_split": 0.0},
                "train": {"stages": [{"name": "tune", "epochs": 1, "lr": 1e-9,
                                      "freeze": {"policy": "none"}}]}},
    )
    head = result.model.classifier.get_layer("classifier")
    np.testing.assert_allclose(np.asarray(head.kernel), kernel, atol=1e-6)
    bundle = Predictor(result.path)
    np.testing.assert_allclose(bundle.outputs(x[second]), expected, atol=1e-4)
    assert bundle.embeddings(x[second][:3]).shape == (3, HIDDEN)
    info = json.loads((result.path / "tlcore.json").read_text())
    assert info["onnx"]["parity"]["agreement"] == 1.0

    pair = (y == 0) | (y == 1)
    with pytest.raises(TlcoreError, match="has 10 outputs, but the data has 2 classes"):
        tlcore.fit((x[pair], y[pair]), backbone=network, backend="keras", quiet=True,
                   out=tmp_path / "mismatch", recipe={"head": {"classifier": "keep"}})
