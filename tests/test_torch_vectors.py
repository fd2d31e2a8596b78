"""The torch backend on numeric vectors: ``builtin:mlp``, a user's own network taking vectors,
standardisation inside the model (statistics carried by its weights), the steps on float32
vectors, a user's state dict loaded where it fits, and the ONNX export of ``vectors`` →
``logits`` and ``embeddings``."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from tlcore.errors import TlcoreError
from tlcore.interfaces import InputSpec, VectorPreprocessing
from tlcore.recipe import HeadSpec
from tlcore.testing import BackendUnderTest

torch.set_num_threads(2)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TORCH = BackendUnderTest("torch")
FEATURES = 6


def vectors(n: int = 60, features: int = FEATURES, seed: int = 0):
    """Three classes apart along the first feature, on features of very different scales."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.normal(size=(n, features)) * np.geomspace(1, 1000, features) + 50.0
    x[:, 0] += y * 5.0
    return x.astype(np.float32), y.astype(np.int64)


def with_stats(backbone, x: np.ndarray):
    """What the core does for vector data between loading the backbone and the head."""
    backbone.inputs = InputSpec.vector(VectorPreprocessing.of(x))
    return backbone


def mlp_model(x: np.ndarray, classes: int = 3, head: HeadSpec | None = None, **spec):
    backbone = TORCH.load(source="builtin:mlp", input_features=x.shape[1], **spec)
    return TORCH.attach(with_stats(backbone, x), classes, head)


# --- builtin:mlp ----------------------------------------------------------------------------


def test_mlp_is_listed_and_needs_vector_data():
    assert "builtin:mlp" in TORCH.backbones()
    with pytest.raises(TlcoreError, match="builtin:mlp needs vector data"):
        TORCH.load(source="builtin:mlp")
    with pytest.raises(TlcoreError, match="width below 1"):
        TORCH.load(source="builtin:mlp", input_features=4, widths=(8, 0))


def test_mlp_backbone():
    backbone = TORCH.load(source="builtin:mlp", input_features=FEATURES)
    spec = backbone.input_spec
    assert (spec.modality, spec.dtype, spec.shape, spec.name) == (
        "vector", "float32", (FEATURES,), "vectors"
    )
    assert spec.preprocessing == VectorPreprocessing.identity(FEATURES)
    assert backbone.pretrained is False  # no published weights
    assert backbone.extra["blocks"] == ["blocks.0", "blocks.1"]
    assert TORCH.attach(backbone).num_features == 128  # widths (256, 128) by default
    small = TORCH.load(source="builtin:mlp", input_features=FEATURES, widths=(16, 8, 4))
    assert small.extra["blocks"] == ["blocks.0", "blocks.1", "blocks.2"]
    assert TORCH.attach(small).num_features == 4


def test_vectors_are_standardised_inside_the_model_by_weights_it_carries():
    x, _ = vectors()
    model = mlp_model(x, widths=(8,))
    stats = VectorPreprocessing.of(x)
    weights = TORCH.weights(model)
    np.testing.assert_allclose(weights["input_mean"], stats.mean)
    np.testing.assert_allclose(weights["input_std"], stats.std)
    standard = (x - np.array(stats.mean, np.float32)) / np.array(stats.std, np.float32)
    with torch.no_grad():
        expected = model.backbone(torch.from_numpy(standard)).numpy()
    np.testing.assert_allclose(TORCH.features(model, x), expected, atol=1e-5)
    # a model built without the statistics (identity) takes them from a checkpoint
    fresh = TORCH.attach(TORCH.load(source="builtin:mlp", input_features=FEATURES, widths=(8,)))
    TORCH.set_weights(fresh, weights)
    np.testing.assert_allclose(TORCH.logits(fresh, x), TORCH.logits(model, x), atol=1e-6)


def test_train_steps_on_vectors_learn_and_never_move_the_statistics():
    x, y = vectors()
    model = mlp_model(x, widths=(32, 16))
    before = TORCH.weights(model)
    optimizer = TORCH.optimizer(model, optimizer="adamw", lr=1e-2)
    first = TORCH.step(model, optimizer, x, y)["loss"]
    for _ in range(30):
        last = TORCH.step(model, optimizer, x.astype(np.float64), y)["loss"]  # any real dtype
    assert last < first * 0.5
    after = TORCH.weights(model)
    for name in ("input_mean", "input_std"):
        np.testing.assert_array_equal(before[name], after[name])
    assert (TORCH.logits(model, x).argmax(1) == y).mean() > 0.9


def test_freezing_counts_mlp_blocks_and_cached_features_match():
    x, y = vectors()
    model = mlp_model(x, widths=(16, 8))
    assert TORCH.freeze(model, policy="last_n", n=1).trainable_blocks == ("blocks.1",)
    trained = {n for n in TORCH.trains(model, x, y) if n.startswith("backbone.")}
    assert trained == {"backbone.blocks.1.0.weight", "backbone.blocks.1.0.bias"}
    TORCH.freeze(model, policy="all")
    cached = TORCH.features(model, x)
    np.testing.assert_allclose(
        TORCH.logits(model, cached, features=True), TORCH.logits(model, x), atol=1e-5
    )


def test_wrong_vectors_are_refused():
    x, _ = vectors()
    model = mlp_model(x, widths=(8,))
    with pytest.raises(TlcoreError, match=rf"float32 vectors of shape \(N, {FEATURES}\)"):
        TORCH.logits(model, x[:, :3])
    with pytest.raises(TlcoreError, match="float32 vectors"):
        TORCH.logits(model, np.array([["a"] * FEATURES]))


# --- a user's network -----------------------------------------------------------------------


class Net(nn.Module):
    """The seed article's network: 784 pixel values → 128 → ``outputs``."""

    def __init__(self, outputs: int = 10) -> None:
        super().__init__()
        self.hidden = nn.Linear(784, 128)
        self.out = nn.Linear(128, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(x)))


def test_user_network_on_vectors_is_probed_with_vectors():
    backbone = TORCH.load(model=Net(10), input_features=784)
    assert backbone.input_spec.shape == (784,) and backbone.input_spec.dtype == "float32"
    model = TORCH.attach(backbone)
    assert model.num_features == 10
    with pytest.raises(TlcoreError, match="cannot run on vectors of 5 features"):
        TORCH.attach(TORCH.load(model=Net(10), input_features=5))


def test_a_trained_state_dict_loads_where_it_fits(tmp_path):
    # Seed 002: a Net trained for 10 digits; its state dict reused for a 3-class task.
    torch.manual_seed(0)
    trained = Net(10)
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.1)
    x = torch.rand(32, 784)
    y = torch.randint(0, 10, (32,))
    for _ in range(3):
        optimizer.zero_grad()
        nn.functional.cross_entropy(trained(x), y).backward()
        optimizer.step()
    path = tmp_path / "net.pt"
    torch.save(trained.state_dict(), path)

    backbone = TORCH.load(model=Net(3), input_features=784, weights=str(path))
    report = backbone.extra["weights_report"]
    assert set(report.loaded) == {"hidden.weight", "hidden.bias"}
    assert set(report.mismatched) == {"out.weight", "out.bias"}
    assert torch.equal(backbone.network.hidden.weight, trained.hidden.weight)
    model = TORCH.attach(with_stats(backbone, x.numpy()), 3)
    optimizer = TORCH.optimizer(model)
    loss = TORCH.step(model, optimizer, x.numpy(), (y % 3).numpy())["loss"]
    assert np.isfinite(loss)


# --- export --------------------------------------------------------------------------------


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_onnx_export_of_a_vector_model(tmp_path, exporter):
    from tlcore_torch.export import export_onnx

    x, y = vectors()
    model = mlp_model(x, head=HeadSpec(hidden=(8,)), widths=(16,))
    optimizer = TORCH.optimizer(model, lr=1e-2)
    for _ in range(3):
        TORCH.step(model, optimizer, x, y)
    path = export_onnx(model, tmp_path, x[:2], 17, exporters=(exporter,))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (graph_input,) = session.get_inputs()
    assert (graph_input.name, graph_input.type) == ("vectors", "tensor(float)")
    assert graph_input.shape[1] == FEATURES
    assert [o.name for o in session.get_outputs()] == ["logits", "embeddings"]
    for batch in (x, x[:1]):
        logits, embeddings = session.run(None, {"vectors": batch})
        np.testing.assert_allclose(logits, TORCH.logits(model, batch), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(embeddings, TORCH.features(model, batch), rtol=1e-4, atol=1e-4)
