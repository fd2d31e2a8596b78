"""The torch backend on texts: Hugging Face text encoders (tiny BERT, DistilBERT and RoBERTa
built here, the real all-MiniLM-L6-v2), masked pooling, freezing by transformer layer, the
steps on token ids, and the ONNX export of ``input_ids`` → ``logits`` and ``embeddings``."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tlcore.errors import TlcoreError
from tlcore.recipe import HeadSpec
from tlcore.testing import BackendUnderTest

from . import text_models
from .text_models import minilm, save_text_model

torch.set_num_threads(2)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TORCH = BackendUnderTest("torch")
LENGTH = 16
TEXTS = ["a cat sat on the mat", "hello", "the quick brown fox jumps over the lazy dog again"]


def tokenize(folder, texts=TEXTS, length: int = LENGTH, pad_id: int = 0) -> np.ndarray:
    """Token ids of ``texts`` (default :data:`TEXTS`) at :data:`LENGTH`."""
    return text_models.tokenize(folder, texts, length, pad_id)


def hf_hidden(folder, ids: np.ndarray, kind: str = "bert") -> torch.Tensor:
    """The last hidden states of the saved model, run by hand with transformers."""
    import transformers

    model = transformers.AutoModel.from_pretrained(folder).eval()
    pad = 1 if kind == "roberta" else 0
    ids_t = torch.from_numpy(ids)
    with torch.no_grad():
        return model(input_ids=ids_t, attention_mask=(ids_t != pad).long()).last_hidden_state


def mean_pool(hidden: torch.Tensor, ids: np.ndarray, pad: int = 0) -> np.ndarray:
    """sentence-transformers' mean pooling: the average of the real tokens' states."""
    mask = torch.from_numpy(ids != pad).unsqueeze(-1).float()
    return ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).numpy()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    return {kind: save_text_model(root / kind, kind) for kind in ("bert", "distilbert", "roberta")}


def build(folder, head: HeadSpec | None = None, classes: int = 3, **spec):
    spec.setdefault("input_size", LENGTH)
    return TORCH.attach(TORCH.load(source=f"hf:{folder}", **spec), classes, head)


# --- loading --------------------------------------------------------------------------------


def test_text_folder_is_a_text_encoder_with_its_input_spec(models):
    backbone = TORCH.load(source=f"hf:{models['bert']}", input_size=LENGTH)
    spec = backbone.input_spec
    assert (spec.modality, spec.dtype, spec.name) == ("text", "int64", "input_ids")
    assert spec.shape == (LENGTH,)
    assert spec.preprocessing.pad_id == 0 and spec.preprocessing.max_length == LENGTH
    assert backbone.extra["pooling"] == "cls"  # no 1_Pooling: as BERT's classifiers pool
    assert backbone.extra["blocks"] == [
        "model.embeddings", "model.encoder.layer.0", "model.encoder.layer.1"
    ]
    distil = TORCH.load(source=f"hf:{models['distilbert']}", input_size=LENGTH)
    assert distil.extra["blocks"] == [
        "model.embeddings", "model.transformer.layer.0", "model.transformer.layer.1"
    ]
    roberta = TORCH.load(source=f"hf:{models['roberta']}", input_size=LENGTH)
    assert roberta.input_spec.preprocessing.pad_id == 1


def test_default_length_and_too_long_input(models):
    assert TORCH.load(source=f"hf:{models['bert']}").input_spec.shape == (64,)  # min(128, 64)
    with pytest.raises(TlcoreError, match="longer than this text model's 64 positions"):
        TORCH.load(source=f"hf:{models['bert']}", input_size=100)


def test_roberta_positions_start_after_the_padding_id(models):
    # 66 position embeddings, numbered from pad id + 1 = 2: 64 tokens fit, 65 would not.
    roberta = TORCH.load(source=f"hf:{models['roberta']}")
    assert roberta.input_spec.shape == (64,)
    model = build(models["roberta"], HeadSpec(pooling="cls"), input_size=64)
    full = np.full((2, 64), 5, np.int64)  # no padding: every position is used
    assert np.isfinite(TORCH.features(model, full)).all()
    with pytest.raises(TlcoreError, match="64 positions"):
        TORCH.load(source=f"hf:{models['roberta']}", input_size=65)


def test_weights_none_is_a_random_encoder(models):
    ids = tokenize(models["bert"])
    saved = TORCH.features(build(models["bert"], HeadSpec(pooling="cls")), ids)
    fresh = TORCH.features(build(models["bert"], HeadSpec(pooling="cls"), weights="none"), ids)
    assert not np.allclose(saved, fresh, atol=1e-3)


# --- the model: features, pooling ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["bert", "distilbert", "roberta"])
def test_features_are_the_hf_model_pooled_over_real_tokens(models, kind):
    pad = 1 if kind == "roberta" else 0
    ids = tokenize(models[kind], pad_id=pad)
    assert (ids == pad).any() and (ids[:, 0] != pad).all()  # padded at the end
    hidden = hf_hidden(models[kind], ids, kind)
    mean = TORCH.features(build(models[kind], HeadSpec(pooling="mean")), ids)
    np.testing.assert_allclose(mean, mean_pool(hidden, ids, pad), atol=1e-5)
    cls = TORCH.features(build(models[kind], HeadSpec(pooling="cls")), ids)
    np.testing.assert_allclose(cls, hidden[:, 0].numpy(), atol=1e-5)
    top = TORCH.features(build(models[kind], HeadSpec(pooling="max")), ids)
    real = torch.from_numpy(ids != pad).unsqueeze(-1)
    expected = hidden.masked_fill(~real, -1e30).amax(1).numpy()
    np.testing.assert_allclose(top, expected, atol=1e-5)


def test_avg_is_the_models_own_pooling(tmp_path, models):
    ids = tokenize(models["bert"])
    own_cls = TORCH.features(build(models["bert"]), ids)
    np.testing.assert_allclose(own_cls, hf_hidden(models["bert"], ids)[:, 0].numpy(), atol=1e-5)
    meaned = save_text_model(tmp_path / "st", "bert", pooling="mean")
    backbone = TORCH.load(source=f"hf:{meaned}", input_size=LENGTH)
    assert backbone.extra["pooling"] == "mean"
    own_mean = TORCH.features(TORCH.attach(backbone), ids)
    np.testing.assert_allclose(own_mean, mean_pool(hf_hidden(meaned, ids), ids), atol=1e-5)


def test_padding_does_not_change_a_texts_features(models):
    folder = models["bert"]
    short = tokenize(folder, ["hello there"], length=LENGTH)
    longer = tokenize(folder, ["hello there"], length=LENGTH * 2)
    model16 = build(folder, HeadSpec(pooling="mean"))
    model32 = build(folder, HeadSpec(pooling="mean"), input_size=LENGTH * 2)
    np.testing.assert_allclose(
        TORCH.features(model16, short), TORCH.features(model32, longer), atol=1e-5
    )


# --- freezing ------------------------------------------------------------------------------


def test_last_n_counts_transformer_layers_then_embeddings(models):
    ids, y = tokenize(models["bert"]), np.array([0, 1, 2])
    model = build(models["bert"])
    report = TORCH.freeze(model, policy="last_n", n=1)
    assert report.trainable_blocks == ("model.encoder.layer.1",)
    trained = {n for n in TORCH.trains(model, ids, y) if n.startswith("backbone.")}
    assert trained and all(n.startswith("backbone.model.encoder.layer.1.") for n in trained)
    report = TORCH.freeze(model, policy="last_n", n=3)
    assert report.trainable_blocks[0] == "model.embeddings"
    trained = TORCH.trains(model, ids, y)
    assert "backbone.model.embeddings.word_embeddings.weight" in trained


def test_frozen_encoder_features_equal_the_full_models(models):
    ids = tokenize(models["distilbert"])
    model = build(models["distilbert"], HeadSpec(pooling="mean"))
    assert TORCH.freeze(model, policy="all").backbone_frozen
    cached = TORCH.features(model, ids)
    model.train()  # training mode: the frozen encoder still runs in inference mode (no dropout)
    with torch.no_grad():
        live = model.features(torch.from_numpy(ids)).numpy()
    np.testing.assert_allclose(cached, live, atol=1e-6)
    np.testing.assert_allclose(
        TORCH.logits(model, cached, features=True), TORCH.logits(model, ids), atol=1e-5
    )


# --- steps ---------------------------------------------------------------------------------


def test_train_and_eval_steps_on_token_ids(models):
    folder = models["bert"]
    ids, y = tokenize(folder), np.array([0, 1, 2])
    model = build(folder)
    optimizer = TORCH.optimizer(model, optimizer="adamw", lr=1e-3)
    first = TORCH.step(model, optimizer, ids, y)["loss"]
    for _ in range(4):
        last = TORCH.step(model, optimizer, ids.astype(np.int32), y)["loss"]  # any int dtype
    assert np.isfinite(last) and last < first
    logits = TORCH.logits(model, ids)
    assert logits.shape == (3, 3) and logits.dtype == np.float32


def test_wrong_token_inputs_are_refused(models):
    model = build(models["bert"])
    with pytest.raises(TlcoreError, match="int64 token ids of shape"):
        TORCH.logits(model, tokenize(models["bert"]).astype(np.float32))
    with pytest.raises(TlcoreError, match=r"\(N, 16\)"):
        TORCH.logits(model, tokenize(models["bert"], length=8))


def test_bf16_autocast_on_token_ids(models):
    ids, y = tokenize(models["bert"]), np.array([0, 1, 2])
    setup = TORCH.setup("cpu", "bf16")
    with setup.collective.scope():
        model = build(models["bert"])
    optimizer = TORCH.optimizer(model, lr=1e-3)
    assert np.isfinite(TORCH.step(model, optimizer, ids, y)["loss"])
    assert TORCH.features(model, ids).dtype == np.float32


# --- export --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bert", "distilbert", "roberta"])
def test_onnx_export_of_a_text_model(tmp_path, models, kind):
    pad = 1 if kind == "roberta" else 0
    folder = models[kind]
    model = build(folder, HeadSpec(pooling="mean", hidden=(8,)))
    ids = tokenize(folder, pad_id=pad)
    path = TORCH.export(model, "onnx", tmp_path, example=ids[:2])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (graph_input,) = session.get_inputs()
    assert (graph_input.name, graph_input.type) == ("input_ids", "tensor(int64)")
    assert graph_input.shape[1] == LENGTH
    assert [o.name for o in session.get_outputs()] == ["logits", "embeddings"]
    others = tokenize(folder, ["one", "two words here", "x " * 30, "the end"], pad_id=pad)
    for batch in (ids, others, others[:1]):
        logits, embeddings = session.run(None, {"input_ids": batch})
        np.testing.assert_allclose(logits, TORCH.logits(model, batch), atol=1e-4)
        np.testing.assert_allclose(embeddings, TORCH.features(model, batch), atol=1e-4)


# --- the real all-MiniLM-L6-v2 -----------------------------------------------------------


def test_minilm_embedding_is_sentence_transformers_mean_pooling():
    import transformers

    folder = minilm()
    backbone = TORCH.load(source=f"hf:{folder}")
    # Its own length (sentence_bert_config.json's max_seq_length) unless the recipe says.
    assert backbone.input_spec.shape == (256,)
    backbone = TORCH.load(source=f"hf:{folder}", input_size=128)
    assert backbone.extra["pooling"] == "mean" and backbone.input_spec.shape == (128,)
    model = TORCH.attach(backbone, 2)
    ids = tokenize(folder, length=128)
    ours = TORCH.features(model, ids)
    bert = transformers.BertModel.from_pretrained(folder).eval()
    with torch.no_grad():
        hidden = bert(input_ids=torch.from_numpy(ids),
                      attention_mask=torch.from_numpy(ids != 0).long()).last_hidden_state
    assert ours.shape == (3, 384)
    np.testing.assert_allclose(ours, mean_pool(hidden, ids), atol=1e-5)


def test_resumed_text_model_has_the_same_weights_by_name(models):
    """A run's model is rebuilt with weights none, then its checkpoint set strictly."""
    trained = build(models["roberta"])
    rebuilt = build(models["roberta"], weights="none")
    weights = TORCH.weights(trained)
    assert not any("pooler" in name for name in weights)
    assert set(weights) == set(TORCH.weights(rebuilt))
    TORCH.set_weights(rebuilt, weights, strict=True)
    ids = tokenize(models["roberta"], pad_id=1)
    np.testing.assert_allclose(TORCH.logits(rebuilt, ids), TORCH.logits(trained, ids), atol=1e-6)


# --- the new poolings on images --------------------------------------------------------------


def test_image_poolings_mean_and_cls(tmp_path):
    from tlcore.testing import images

    from .test_torch_backend import save_hf

    x = images(2)
    cnn = {p: TORCH.build(head=HeadSpec(pooling=p)) for p in ("avg", "mean")}
    cnn["mean"].load_state_dict(cnn["avg"].state_dict())
    np.testing.assert_array_equal(TORCH.features(cnn["mean"], x), TORCH.features(cnn["avg"], x))
    with pytest.raises(TlcoreError, match="'cls' takes the first token"):
        TORCH.build(head=HeadSpec(pooling="cls"))
    vit = TORCH.load(source=f"hf:{save_hf(tmp_path, 'vit')}")
    model = TORCH.attach(vit, 2, HeadSpec(pooling="cls"))
    pixels = torch.from_numpy(x)
    with torch.no_grad():
        tokens = model.backbone(model.preprocess(pixels))
    np.testing.assert_allclose(TORCH.features(model, x), tokens[:, 0].numpy(), atol=1e-6)
