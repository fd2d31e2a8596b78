"""What the Python API takes and gives back: a PyTorch ``DataLoader``, a ``tf.data.Dataset`` or
any iterable of ``(x, y)`` batches trains exactly as the same arrays do; the user's own network
comes back trained, with the training flags it had (``tl_network_flags``), on both backends.

Real torch, Keras and TensorFlow; small images and vectors, one short epoch each.
"""

from __future__ import annotations

import numpy as np
import pytest

import tlcore
from tlcore.errors import DataError
from tlcore.plugins import plugin_registered
from tlcore.runfolder import read_arrays

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SIDE, COUNT = 16, 24
RECIPE = {
    "backbone": {"source": "builtin:simple_cnn", "weights": "none", "input_size": SIDE},
    "train": {"batch_size": 8, "seed": 5,
              "stages": [{"name": "all", "epochs": 1, "lr": 3e-3, "freeze": {"policy": "none"}}]},
    "data": {"val_split": 0.25},
    "export": {"formats": ["native"]},
}


def images() -> tuple[np.ndarray, np.ndarray]:
    """``COUNT`` uint8 RGB images NHWC, two classes told apart by brightness."""
    rng = np.random.default_rng(0)
    labels = np.arange(COUNT) % 2
    pixels = rng.integers(0, 128, size=(COUNT, SIDE, SIDE, 3)) + 100 * labels[:, None, None, None]
    return pixels.astype(np.uint8), labels.astype(np.int64)


def weights_of(run) -> dict[str, np.ndarray]:
    return read_arrays(run / "native" / "weights.npz")


def assert_same_weights(a, b) -> None:
    wa, wb = weights_of(a), weights_of(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        np.testing.assert_array_equal(wa[key], wb[key], err_msg=key)


@pytest.fixture(scope="module")
def arrays_run(tmp_path_factory):
    """The run on the arrays themselves, which every other form must repeat exactly."""
    out = tmp_path_factory.mktemp("arrays") / "run"
    tlcore.fit(images(), recipe=RECIPE, out=out, backend="torch")
    return out


# --- batches from the user's pipeline ---------------------------------------------------------


def test_a_torch_dataloader_of_totensor_batches_trains_as_the_arrays(arrays_run, tmp_path):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    x, y = images()
    # What transforms.ToTensor() gives: float CHW in [0, 1].
    chw = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0
    loader = DataLoader(TensorDataset(chw, torch.from_numpy(y)), batch_size=5, shuffle=False)
    result = tlcore.fit(loader, recipe=RECIPE, out=tmp_path / "run", backend="torch")
    assert result.path == tmp_path / "run"
    assert_same_weights(arrays_run, tmp_path / "run")


def test_a_tf_data_dataset_trains_as_the_arrays(arrays_run, tmp_path):
    import tensorflow as tf

    x, y = images()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(7)
    tlcore.fit(dataset, recipe=RECIPE, out=tmp_path / "run", backend="torch")
    assert_same_weights(arrays_run, tmp_path / "run")


def test_a_generator_of_numpy_batches_trains_as_the_arrays(arrays_run, tmp_path):
    x, y = images()
    batches = ((x[i : i + 10], y[i : i + 10]) for i in range(0, COUNT, 10))
    tlcore.fit(batches, recipe=RECIPE, out=tmp_path / "run", backend="torch")
    assert_same_weights(arrays_run, tmp_path / "run")


def test_embed_reads_a_dataloader_as_the_arrays_with_its_labels(arrays_run):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    x, y = images()
    chw = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0
    loader = DataLoader(TensorDataset(chw, torch.from_numpy(y)), batch_size=5, shuffle=False)
    streamed = tlcore.embed(arrays_run, loader, native=True, batch_size=7)
    direct = tlcore.embed(arrays_run, x, native=True)
    np.testing.assert_array_equal(streamed.vectors, direct.vectors)
    assert streamed.labels == tuple(str(label) for label in y)
    assert streamed.sources[-1] == f"<batches>:{COUNT}"
    assert direct.labels is None  # arrays alone carry no labels


def test_plan_reads_an_iterable_too():
    x, y = images()
    plan = tlcore.plan([(x[:12], y[:12]), (x[12:], y[12:])], recipe=RECIPE, backend="torch")
    assert plan.steps_per_epoch == 3  # 18 training images of the 24, 8 a batch
    assert plan.train.startswith("18 ")


def test_text_and_vector_batches_are_read_as_their_arrays():
    from tlcore.data.iterables import read_batches

    texts, labels = read_batches([(["a b", "c"], [0, 1]), ((b"d",), np.array([1]))])
    assert texts == ["a b", "c", "d"] and labels.tolist() == [0, 1, 1]
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(9, 4)).astype(np.float32)
    x, y = read_batches(iter([(vectors[:4], np.zeros(4)), (vectors[4:], np.ones(5))]))
    np.testing.assert_array_equal(x, vectors)  # vectors are never taken for images
    assert y.tolist() == [0] * 4 + [1] * 5


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (42, "cannot read data of type int; expected a folder"),
        ({"x": 1}, "cannot read data of type dict"),
        (np.zeros((4, 8, 8, 3)), "cannot read data of type ndarray"),
        ([np.zeros((2, 8, 8, 3))], "batch 0 is a ndarray; each batch must be a pair"),
        ([(np.zeros((2, 8, 8, 3)), [0])], "batch 0 has 2 inputs and 1 labels"),
        (iter([]), "gave no batches"),
        ([(np.zeros((8, 8, 3)), 1)], "batch 0 holds one label, not a batch of them"),
        ([(np.zeros((2, 8, 8, 3)), [0, 1]), (np.zeros((2, 9, 9, 3)), [0, 1])],
         "differ in shape after the batch axis"),
        ([(np.full((2, 3, 8, 8), -1.5, np.float32), [0, 1])], "the images look normalised"),
    ],
)
def test_unusable_data_is_one_data_error_saying_what_is_expected(data, message, tmp_path):
    with pytest.raises(DataError, match=message) as info:
        tlcore.fit(data, recipe=RECIPE, out=tmp_path / "run", backend="torch")
    assert info.value.hint
    assert not (tmp_path / "run" / "native").exists()


# --- the user's own network after fit ---------------------------------------------------------


def torch_network():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def vectors() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    y = np.arange(40) % 2
    return (rng.normal(size=(40, 6)) + y[:, None]).astype(np.float32), y.astype(np.int64)


def frozen_recipe(classifier: str) -> dict:
    """Two stages that leave the network frozen and in inference mode when they end."""
    return {
        "head": {"classifier": classifier},
        "data": {"val_split": 0.0},
        "export": {"formats": ["native"]},
        "train": {"batch_size": 8, "stages": [
            {"name": "tune", "epochs": 1, "lr": 1e-2, "freeze": {"policy": "none"}},
            {"name": "head", "epochs": 1, "lr": 1e-2, "freeze": {"policy": "all"}},
        ]},
    }


@pytest.mark.tlcore_hooks("tl_network_flags")
@pytest.mark.parametrize("classifier", ["new", "replace"])
def test_a_torch_network_keeps_its_flags_and_new_trains_it_in_place(classifier, tmp_path):
    network = torch_network()
    network[0].weight.requires_grad_(False)  # the user's own choices, which must survive
    network.train()
    network[1].eval()
    before = network[0].bias.detach().clone().numpy()
    grads = [p.requires_grad for p in network.parameters()]
    modes = [m.training for m in network.modules()]

    result = tlcore.fit(vectors(), backbone=network, backend="torch", out=tmp_path / "run",
                        recipe=frozen_recipe(classifier))

    assert [p.requires_grad for p in network.parameters()] == grads
    assert [m.training for m in network.modules()] == modes
    after = network[0].bias.detach().numpy()
    saved = weights_of(result.path)
    trained = result.model.backbone[0].bias.detach().numpy()
    assert any(np.array_equal(value, trained) for value in saved.values())
    assert not np.array_equal(trained, before)
    if classifier == "new":  # the model is built on the user's network: trained in place
        assert result.model.backbone is network
        np.testing.assert_array_equal(after, trained)
    else:  # the layer is cut from a copy: the user's network is left as it was
        assert result.model.backbone is not network
        np.testing.assert_array_equal(after, before)


class Watch:
    """An observer that notes ``look()`` at the end of the stage ``head`` (the user's
    network's flags as the run had set them) and, with ``stop``, stops the run there."""

    def __init__(self, look, stop: bool = False) -> None:
        self.look, self.stop = look, stop
        self.seen: list[bool] = []

    @tlcore.hookimpl
    def tl_on_epoch_end(self, run, stage, epoch, metrics):
        if stage == "head":
            self.seen = self.look()
            if self.stop:
                raise KeyboardInterrupt  # as a user's Ctrl-C mid-run


def test_the_flags_come_back_when_the_run_fails(tmp_path):
    network = torch_network()
    grads = [p.requires_grad for p in network.parameters()]
    observer = Watch(lambda: [p.requires_grad for p in network.parameters()], stop=True)
    with plugin_registered(observer, "interrupt"), pytest.raises(KeyboardInterrupt):
        tlcore.fit(vectors(), backbone=network, backend="torch", out=tmp_path / "run",
                   recipe=frozen_recipe("new"))
    assert observer.seen == [False] * len(grads)  # frozen by the stage when it stopped
    assert [p.requires_grad for p in network.parameters()] == grads == [True] * len(grads)
    assert all(m.training for m in network.modules())


@pytest.mark.parametrize("classifier", ["new", "replace"])
def test_a_keras_network_keeps_its_trainable_flags(classifier, tmp_path):
    import keras

    keras.utils.set_random_seed(0)
    network = keras.Sequential([
        keras.Input((6,)), keras.layers.Dense(8, activation="relu", name="hidden"),
        keras.layers.BatchNormalization(name="norm"), keras.layers.Dense(2, name="out"),
    ])
    network.get_layer("norm").trainable = False  # the user's own choice

    def flags():
        return [layer.trainable for layer in [network, *network.layers]]

    before_flags = flags()
    before = np.asarray(network.get_layer("hidden").kernel).copy()
    observer = Watch(flags)
    with plugin_registered(observer, "watch"):
        tlcore.fit(vectors(), backbone=network, backend="keras", out=tmp_path / "run",
                   recipe=frozen_recipe(classifier))

    assert observer.seen[1:3] == [False, False]  # the stage had frozen the layers
    assert flags() == before_flags == [True, True, False, True]
    # The model shares the user's layers: they hold the trained weights.
    assert not np.array_equal(np.asarray(network.get_layer("hidden").kernel), before)
