"""The Keras backend on texts: a BERT encoder built from Keras layers out of a Hugging Face
folder (the real all-MiniLM-L6-v2 checked against ``transformers`` in torch; tiny BERTs built
here), masked pooling, freezing by transformer layer, the steps on int64 token ids, bf16, and
the ONNX export of ``input_ids`` → ``logits`` and ``embeddings``."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from tlcore.errors import TlcoreError
from tlcore.recipe import HeadSpec
from tlcore.testing import BackendUnderTest

from . import text_models
from .text_models import minilm, save_text_model

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")
# Keras' saving code under numpy 2 (model.save, the native export); harmless.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

KERAS = BackendUnderTest("keras")
LENGTH = 16
TEXTS = ["a cat sat on the mat", "hello", "the quick brown fox jumps over the lazy dog again",
         "tlcore fine-tunes text encoders"]


def tokenize(folder, texts=TEXTS, length: int = LENGTH) -> np.ndarray:
    """Token ids of ``texts`` (default :data:`TEXTS`) at :data:`LENGTH`."""
    return text_models.tokenize(folder, texts, length)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_text_model(tmp_path_factory.mktemp("tiny_bert"))


def build(folder, pooling: str = "avg", classes: int = 3, **spec):
    spec.setdefault("input_size", LENGTH)
    backbone = KERAS.load(source=f"hf:{folder}", **spec)
    return backbone, KERAS.attach(backbone, classes, HeadSpec(pooling=pooling))


# --- the encoder ----------------------------------------------------------------------------


def test_minilm_in_keras_matches_transformers_in_torch():
    """The real all-MiniLM-L6-v2: Keras' last hidden state within 1e-4 of ``BertModel``'s at
    the real tokens, and the model's own (mean) pooling within 1e-5 of sentence-transformers'
    mean pooling computed by hand."""
    import torch
    import transformers

    folder = minilm()
    ids = tokenize(folder, length=32)
    backbone, model = build(folder, classes=2, input_size=32)
    assert backbone.extra["pooling"] == "mean" and backbone.input_spec.shape == (32,)
    hidden = np.asarray(backbone.network(ids, training=False))
    reference = transformers.BertModel.from_pretrained(folder).eval()
    mask = ids != 0
    with torch.no_grad():
        out = reference(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask).long())
    expected = out.last_hidden_state.numpy()
    np.testing.assert_allclose(hidden[mask], expected[mask], atol=1e-4, rtol=0)
    pooled = (expected * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    np.testing.assert_allclose(KERAS.features(model, ids), pooled, atol=1e-5, rtol=0)


def test_blocks_are_the_embeddings_then_each_transformer_layer(tiny):
    backbone, model = build(tiny)
    assert backbone.extra["blocks"].names == ("embeddings", "layer_0", "layer_1")
    report = KERAS.freeze(model, policy="last_n", n=1)
    assert report.trainable_blocks == ("layer_1",)
    ids = tokenize(tiny)
    trained = KERAS.trains(model, ids, np.arange(len(ids)) % 3)
    assert trained and all(n.startswith(("backbone/layer_1/", "head/")) for n in trained)
    assert any(n.startswith("backbone/layer_1/query") for n in trained)


def test_weights_none_is_the_same_architecture_randomly_initialised(tiny):
    pretrained, _ = build(tiny)
    fresh, _ = build(tiny, weights="none")
    before = {v.path: v.numpy() for v in pretrained.network.weights}
    after = {v.path: v.numpy() for v in fresh.network.weights}
    assert [v.shape for v in before.values()] == [v.shape for v in after.values()]
    first = next(iter(before))
    assert not np.allclose(before[first], after[first])


def test_pooling_counts_only_the_real_tokens(tiny):
    """``mean``, ``max`` and ``cls`` of the hidden states, padding left out; ``avg`` is the
    model's own pooling (``cls`` without ``1_Pooling``); padding changes nothing."""
    ids = tokenize(tiny)
    mask = (ids != 0)[..., None]
    backbone, _ = build(tiny)
    hidden = np.asarray(backbone.network(ids, training=False))
    expected = {
        "mean": (hidden * mask).sum(1) / mask.sum(1),
        "max": np.where(mask, hidden, -np.inf).max(1),
        "cls": hidden[:, 0],
        "avg": hidden[:, 0],
    }
    for mode, want in expected.items():
        _, model = build(tiny, pooling=mode)
        KERAS.set_weights(model, {**KERAS.weights(model), **_backbone_of(backbone)}, strict=True)
        np.testing.assert_allclose(KERAS.features(model, ids), want, atol=1e-5, rtol=0)
    # The same texts padded to 32 tokens give the same features (positions 0.. as before).
    long_backbone = KERAS.load(source=f"hf:{tiny}", input_size=32)
    long = KERAS.attach(long_backbone, 3, HeadSpec(pooling="mean"))
    short = KERAS.attach(backbone, 3, HeadSpec(pooling="mean"))
    KERAS.set_weights(long, KERAS.weights(short), strict=True)
    np.testing.assert_allclose(KERAS.features(long, tokenize(tiny, length=32)),
                               KERAS.features(short, ids), atol=1e-5, rtol=0)


def _backbone_of(backbone):
    from tlcore_keras.names import weight_entries

    return {f"backbone/{e.name}": e.variable.numpy() for e in weight_entries(backbone.network)}


def test_a_sentence_transformers_folder_pools_as_it_says(tmp_path):
    folder = save_text_model(tmp_path / "mean_model", pooling="mean")
    backbone, model = build(folder)
    assert backbone.extra["pooling"] == "mean"
    ids = tokenize(folder)
    mask = (ids != 0)[..., None]
    hidden = np.asarray(backbone.network(ids, training=False))
    np.testing.assert_allclose(KERAS.features(model, ids), (hidden * mask).sum(1) / mask.sum(1),
                               atol=1e-5, rtol=0)


def test_other_architectures_and_inputs_are_refused_clearly(tmp_path, tiny):
    import transformers

    distil = transformers.DistilBertConfig(vocab_size=30522, dim=32, n_layers=1, n_heads=2,
                                           hidden_dim=64, max_position_embeddings=64)
    folder = save_text_model(tmp_path / "distil", config=distil)
    with pytest.raises(TlcoreError) as info:
        KERAS.load(source=f"hf:{folder}")
    assert "'distilbert'" in info.value.message and "--backend torch" in info.value.hint
    vision = tmp_path / "vision"
    vision.mkdir()
    (vision / "config.json").write_text(json.dumps({"model_type": "vit", "image_size": 32}))
    with pytest.raises(TlcoreError, match="not a text model"):
        KERAS.load(source=f"hf:{vision}")
    with pytest.raises(TlcoreError, match="longer than this text model's 64 positions"):
        KERAS.load(source=f"hf:{tiny}", input_size=100)
    _, model = build(tiny)
    with pytest.raises(TlcoreError, match="token ids have shape"):
        KERAS.logits(model, tokenize(tiny).astype(np.float32))
    with pytest.raises(TlcoreError, match="token ids have shape"):
        KERAS.logits(model, tokenize(tiny, length=8))


# --- training, features, export -------------------------------------------------------------


def test_training_on_token_ids_learns_and_cached_features_agree(tiny):
    ids = tokenize(tiny)
    y = np.array([0, 1, 2, 0])
    _, model = build(tiny)
    KERAS.freeze(model, policy="none", batchnorm="follow")
    optimizer = KERAS.optimizer(model, optimizer="adamw", lr=1e-3)
    losses = [KERAS.step(model, optimizer, ids, y)["loss"] for _ in range(15)]
    assert np.isfinite(losses).all() and losses[-1] < losses[0] / 2
    KERAS.freeze(model, policy="all")
    features = KERAS.features(model, ids)
    np.testing.assert_allclose(KERAS.logits(model, features, features=True),
                               KERAS.logits(model, ids), atol=1e-5, rtol=0)
    head = KERAS.optimizer(model, optimizer="adamw", lr=1e-2)
    out = KERAS.step(model, head, features, y, features=True)
    assert np.isfinite(out["loss"])


def test_onnx_export_takes_input_ids_and_gives_logits_and_embeddings(tiny, tmp_path):
    ids = tokenize(tiny)
    _, model = build(tiny, pooling="mean")
    path = KERAS.export(model, "onnx", tmp_path, example=ids)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (source,) = session.get_inputs()
    assert (source.name, source.type, source.shape[1]) == ("input_ids", "tensor(int64)", LENGTH)
    assert [o.name for o in session.get_outputs()] == ["logits", "embeddings"]
    for batch in (ids[:1], ids):
        logits, embeddings = session.run(None, {"input_ids": batch})
        np.testing.assert_allclose(logits, KERAS.logits(model, batch), atol=1e-4, rtol=0)
        np.testing.assert_allclose(embeddings, KERAS.features(model, batch), atol=1e-4, rtol=0)


def test_native_export_and_weights_round_trip(tiny, tmp_path):
    ids = tokenize(tiny)
    _, model = build(tiny)
    native = KERAS.export(model, "native", tmp_path)
    loaded = keras.saving.load_model(native, safe_mode=True, compile=False)
    np.testing.assert_allclose(np.asarray(loaded(ids, training=False)), KERAS.logits(model, ids),
                               atol=1e-5, rtol=0)
    _, other = build(tiny, weights="none")
    KERAS.set_weights(other, KERAS.weights(model), strict=True)
    np.testing.assert_allclose(KERAS.logits(other, ids), KERAS.logits(model, ids), atol=1e-6)


def test_bf16_trains_in_bfloat16_and_evaluates_and_exports_in_float32(tiny, tmp_path):
    ids = tokenize(tiny)
    setup = KERAS.setup("cpu", "bf16")
    with setup.collective.scope():
        _, model = build(tiny)
    assert model.policy == "mixed_bfloat16"
    KERAS.freeze(model, policy="none", batchnorm="follow")
    with setup.collective.scope():
        optimizer = KERAS.optimizer(model, optimizer="adamw", lr=1e-3)
    out = KERAS.step(model, optimizer, ids, np.array([0, 1, 2, 0]))
    assert np.isfinite(out["loss"]) and out["outputs"].dtype == np.float32
    logits = KERAS.logits(model, ids)
    path = KERAS.export(model, "onnx", tmp_path, example=ids)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input_ids": ids})[0], logits, atol=1e-4)
