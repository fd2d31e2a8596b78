"""The Keras backend on vectors: ``builtin:mlp``, a user's own network on vectors, the
standardisation inside the model (non-trainable, carried by the weights), the steps on float32
vectors, the ONNX export of ``vectors`` → ``logits`` and ``embeddings``, and seed 001: a
network trained on one task, fine-tuned on another."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from tlcore.errors import TlcoreError
from tlcore.files import write_arrays
from tlcore.interfaces import InputSpec, VectorPreprocessing
from tlcore.testing import BackendUnderTest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

KERAS = BackendUnderTest("keras")
FEATURES = 6


def vectors(n: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two separable classes of vectors far from standardised (mean 5, std 3)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(5.0, 3.0, (n, FEATURES)) + 4.0 * y[:, None] * np.eye(FEATURES)[0]
    return x.astype(np.float32), y


def build(classes: int = 2, data: np.ndarray | None = None, **spec):
    """Load a vector backbone (``builtin:mlp`` unless told), give it the data's statistics
    as the core does, attach the head."""
    spec.setdefault("source", "builtin:mlp")
    spec.setdefault("input_features", FEATURES)
    backbone = KERAS.load(**spec)
    if data is not None:
        backbone.inputs = InputSpec.vector(VectorPreprocessing.of(data))
    return backbone, KERAS.attach(backbone, classes)


# --- builtin:mlp ----------------------------------------------------------------------------


def test_builtin_mlp_is_listed_built_for_the_vectors_and_not_pretrained():
    assert "builtin:mlp" in KERAS.backbones()
    backbone, model = build()
    assert backbone.input_spec == InputSpec.vector(VectorPreprocessing.identity(FEATURES))
    assert backbone.pretrained is False
    assert backbone.extra["blocks"].names == ("mlp_0", "mlp_1")
    assert model.num_features == 128
    dense = [layer.units for layer in backbone.network.layers if hasattr(layer, "units")]
    assert dense == [256, 128]
    narrow, _ = build(widths=(16, 8, 4))
    assert narrow.extra["blocks"].names == ("mlp_0", "mlp_1", "mlp_2")
    report = KERAS.freeze(build(widths=(16, 8, 4))[1], policy="last_n", n=1)
    assert report.trainable_blocks == ("mlp_2",) and report.backbone_trainable == 8 * 4 + 4


def test_builtin_mlp_without_vector_data_is_refused_clearly():
    with pytest.raises(TlcoreError, match="builtin:mlp needs vector data") as info:
        KERAS.load(source="builtin:mlp")
    assert "input_features" in info.value.hint
    with pytest.raises(TlcoreError, match="unknown builtin backbone"):
        KERAS.load(source="builtin:mlpp")


# --- the standardisation --------------------------------------------------------------------


def test_the_standardisation_is_in_the_weights_and_never_trains():
    x, y = vectors()
    backbone, model = build(data=x)
    stats = backbone.input_spec.preprocessing
    weights = KERAS.weights(model)
    np.testing.assert_allclose(weights["inputs/mean"], stats.mean)
    np.testing.assert_allclose(weights["inputs/std"], stats.std)
    # The features are the network on standardised vectors.
    standardised = (x - np.float32(stats.mean)) / np.float32(stats.std)
    np.testing.assert_allclose(KERAS.features(model, x),
                               np.asarray(backbone.network(standardised)), atol=1e-5)
    KERAS.freeze(model, policy="none", batchnorm="follow")
    trained = KERAS.trains(model, x, y)
    assert "inputs/mean" not in trained and "inputs/std" not in trained
    assert "backbone/mlp_0/kernel" in trained
    # A checkpoint carries them: a model built with other statistics takes them back.
    _, other = build()
    KERAS.set_weights(other, KERAS.weights(model), strict=True)
    np.testing.assert_allclose(KERAS.logits(other, x), KERAS.logits(model, x), atol=1e-6)


def test_training_on_vectors_learns_and_wrong_inputs_are_refused():
    x, y = vectors()
    _, model = build(data=x, widths=(16,))
    KERAS.freeze(model, policy="none", batchnorm="follow")
    optimizer = KERAS.optimizer(model, optimizer="adamw", lr=1e-2)
    losses = [KERAS.step(model, optimizer, x, y)["loss"] for _ in range(60)]
    assert losses[-1] < losses[0] * 0.6
    assert (KERAS.logits(model, x).argmax(1) == y).mean() > 0.9
    np.testing.assert_allclose(KERAS.logits(model, x.astype(np.float64)), KERAS.logits(model, x))
    with pytest.raises(TlcoreError, match=f"the model takes float32 \\(N, {FEATURES}\\)"):
        KERAS.logits(model, x[:, :3])
    with pytest.raises(TlcoreError, match="vectors have shape"):
        KERAS.logits(model, x.astype(str))


def test_onnx_export_takes_vectors_and_gives_logits_and_embeddings(tmp_path):
    x, _ = vectors()
    _, model = build(classes=3, data=x)
    path = KERAS.export(model, "onnx", tmp_path, example=x[:2])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (source,) = session.get_inputs()
    assert (source.name, source.type, source.shape[1]) == ("vectors", "tensor(float)", FEATURES)
    assert [o.name for o in session.get_outputs()] == ["logits", "embeddings"]
    for batch in (x[:1], x):
        logits, embeddings = session.run(None, {"vectors": batch})
        np.testing.assert_allclose(logits, KERAS.logits(model, batch), atol=1e-4, rtol=0)
        np.testing.assert_allclose(embeddings, KERAS.features(model, batch), atol=1e-4, rtol=0)


# --- a user's own network -------------------------------------------------------------------


def user_mlp(features: int = FEATURES, outputs: int | None = None) -> keras.Model:
    inputs = keras.Input((features,), name="x")
    x = keras.layers.Dense(12, activation="relu", name="fc1")(inputs)
    x = keras.layers.Dense(8, activation="relu", name="fc2")(x)
    if outputs:
        x = keras.layers.Dense(outputs, name="out")(x)
    return keras.Model(inputs, x)


def test_a_user_network_on_vectors(tmp_path):
    x, _ = vectors()
    network = user_mlp()
    backbone, model = build(source=None, model=network, data=x)
    assert backbone.input_spec.modality == "vector" and model.num_features == 8
    assert backbone.extra["blocks"].names == ("fc1", "fc2")
    ids = keras.Input((FEATURES,), dtype="int32")
    integer = keras.Model(ids, keras.layers.Flatten()(keras.layers.Embedding(10, 4)(ids)))
    with pytest.raises(TlcoreError, match="but the data holds float vectors of 6 features"):
        KERAS.load(model=integer, input_features=FEATURES)
    with pytest.raises(TlcoreError, match="takes vectors of 6 features, the data's have 4"):
        KERAS.load(model=user_mlp(), input_features=4)
    unbuilt = keras.Sequential([keras.layers.Dense(8), keras.layers.Dense(3)])
    with pytest.raises(TlcoreError, match="has no input yet") as info:
        KERAS.load(model=unbuilt, input_features=FEATURES)
    assert "keras.Input((6,))" in info.value.hint


# --- seed 001: pretrained on one task, fine-tuned on another --------------------------------


def pretrain(tmp_path, **spec):
    """Train on task A (2 classes); its checkpoint (weights.npz) and native model.keras."""
    x, y = vectors(seed=1)
    _, model = build(data=x, **spec)
    KERAS.freeze(model, policy="none", batchnorm="follow")
    optimizer = KERAS.optimizer(model, optimizer="adamw", lr=1e-2)
    for _ in range(5):
        KERAS.step(model, optimizer, x, y)
    weights = KERAS.weights(model)
    write_arrays(tmp_path / "weights.npz", weights)
    native = KERAS.export(model, "native", tmp_path / "native")
    return model, weights, native


def test_seed_001_an_mlp_trained_on_one_task_fine_tunes_on_another(tmp_path):
    """Task A's network (builtin:mlp) comes into task B (3 classes) as backbone.weights:
    its backbone loads, the head is new; through its native model.keras as a file: source,
    the trained network alone (not task A's standardisation and head) is the backbone."""
    first, weights, native = pretrain(tmp_path, widths=(16, 8))
    x, y = vectors(seed=2)
    saved = str(tmp_path / "weights.npz")
    backbone, model = build(classes=3, data=x, widths=(16, 8), weights=saved)
    report = backbone.extra["weights_report"]
    assert set(report.loaded) == {"mlp_0/kernel", "mlp_0/bias", "mlp_1/kernel", "mlp_1/bias"}
    now = KERAS.weights(model)
    for name in report.loaded:
        np.testing.assert_array_equal(now[f"backbone/{name}"], weights[f"backbone/{name}"])
    assert now["head/classifier/kernel"].shape == (8, 3)
    task_a = first.backbone(np.ones((2, FEATURES), np.float32))
    from_file, model_b = build(classes=3, data=x, source=f"file:{native}")
    assert from_file.input_spec.modality == "vector"
    np.testing.assert_allclose(np.asarray(from_file.network(np.ones((2, FEATURES), np.float32))),
                               np.asarray(task_a), atol=1e-6)
    KERAS.freeze(model_b, policy="last_n", n=1)
    optimizer = KERAS.optimizer(model_b, optimizer="adamw", lr=1e-2)
    assert np.isfinite(KERAS.step(model_b, optimizer, x, y % 3)["loss"])


def test_seed_001_a_user_keras_model_saved_after_training_is_a_backbone(tmp_path):
    """The way the article does it: a Keras MLP trained with ``fit`` on task A, saved with
    ``model.save``; its body (without the output layer) is the backbone for task B."""
    x, y = vectors(seed=3)
    full = user_mlp(outputs=2)
    full.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(True))
    full.fit(x, y, epochs=2, verbose=0)
    full.save(tmp_path / "task_a.keras")
    loaded = keras.saving.load_model(tmp_path / "task_a.keras", safe_mode=True)
    body = keras.Model(loaded.inputs, loaded.get_layer("fc2").output)
    _, model = build(classes=3, data=x, source=None, model=body)
    np.testing.assert_allclose(KERAS.weights(model)["backbone/fc1/kernel"],
                               full.get_layer("fc1").kernel.numpy())
    KERAS.freeze(model, policy="all")
    features = KERAS.features(model, x)
    optimizer = KERAS.optimizer(model, optimizer="adamw", lr=1e-2)
    assert np.isfinite(KERAS.step(model, optimizer, features, y, features=True)["loss"])
