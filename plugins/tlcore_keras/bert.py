"""A BERT-family text encoder as Keras layers, built from a local Hugging Face folder.

The torch backend runs such a folder with ``transformers``; this one builds the same network
from Keras layers and reads the same ``model.safetensors`` with ``safetensors``' numpy reader
(no torch): word + position + token-type (0) embeddings and their LayerNorm, then
``num_hidden_layers`` post-LayerNorm transformer layers (self-attention with query, key, value
and output projections; exact-erf GELU feed-forward). The network takes int token ids
``(N, L)`` padded at the end with the tokenizer's ``pad_id`` and derives the attention mask
itself (``ids != pad_id``); it returns the last hidden state ``(N, L, hidden)``.

Its top-level layers are ``embeddings`` and ``layer_0`` ... ``layer_<n-1>``, the blocks
``last_n`` counts (:mod:`tlcore_keras.blocks`), so ``last_n: 2`` trains the last two
transformer layers. Weight names follow them: ``layer_3/query/kernel``.

Supported: ``model_type`` ``bert`` (BERT, MiniLM, and other checkpoints saved as
``BertModel``), absolute position embeddings, ``gelu`` / ``gelu_new`` / ``relu``
activations, keys with or without a ``bert.`` prefix. Other architectures (DistilBERT,
RoBERTa, ...) are refused with the torch backend named as the one that runs them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import keras
import numpy as np

from tlcore.errors import TlcoreError
from tlcore.textmodel import TextModelFolder

WEIGHTS_FILE = "model.safetensors"
SUPPORTED_TYPES = ("bert",)
ACTIVATIONS = {"gelu": False, "gelu_new": True, "gelu_pytorch_tanh": True, "relu": None}
"""``hidden_act`` → GELU's ``approximate`` flag (``None``: ReLU)."""

# Added to the attention scores of padding: exp() of it is exactly 0 in float32 (as with
# transformers' most negative float), and it still fits float16 under mixed precision.
_MASKED = -1e4


def _init(config: dict[str, Any]) -> keras.initializers.Initializer:
    """BERT's initialisation: a truncated normal of ``initializer_range``."""
    return keras.initializers.TruncatedNormal(stddev=float(config.get("initializer_range", 0.02)))


@keras.saving.register_keras_serializable(package="tlcore")
class PaddingMask(keras.layers.Layer):
    """Token ids → a float32 mask ``(N, L)``: 1 for real tokens, 0 for ``pad_id``."""

    def __init__(self, pad_id: int = 0, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.pad_id = int(pad_id)

    def call(self, ids: Any) -> Any:
        """The mask of ``ids``."""
        return keras.ops.cast(keras.ops.not_equal(ids, self.pad_id), "float32")

    def compute_output_spec(self, ids: Any) -> Any:
        """Same shape as the ids, float32."""
        return keras.KerasTensor(ids.shape, dtype="float32")

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, for saving."""
        return {**super().get_config(), "pad_id": self.pad_id}


@keras.saving.register_keras_serializable(package="tlcore")
class BertEmbeddings(keras.layers.Layer):
    """Token ids → ``LayerNorm(word + position + token_type[0])``, with dropout."""

    def __init__(self, config: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = dict(config)
        hidden, init = int(config["hidden_size"]), _init(config)
        embedding = keras.layers.Embedding
        self.word_embeddings = embedding(
            int(config["vocab_size"]), hidden, embeddings_initializer=init, name="word_embeddings"
        )
        self.position_embeddings = embedding(
            int(config.get("max_position_embeddings", 512)), hidden,
            embeddings_initializer=init, name="position_embeddings",
        )
        self.token_type_embeddings = embedding(
            int(config.get("type_vocab_size", 2)), hidden, embeddings_initializer=init,
            name="token_type_embeddings",
        )
        self.layer_norm = keras.layers.LayerNormalization(
            epsilon=float(config.get("layer_norm_eps", 1e-12)), name="layer_norm"
        )
        self.dropout = keras.layers.Dropout(float(config.get("hidden_dropout_prob", 0.1)))

    def build(self, input_shape: tuple) -> None:
        """Create every weight now, so a saved model's weights load into them."""
        for layer in (self.word_embeddings, self.position_embeddings, self.token_type_embeddings):
            layer.build((None, None))
        self.layer_norm.build((None, None, int(self.config["hidden_size"])))

    def call(self, ids: Any, training: bool | None = None) -> Any:
        """Embed ``(N, L)`` ids at positions ``0 .. L-1`` with token type 0."""
        ops = keras.ops
        positions = ops.expand_dims(ops.arange(ops.shape(ids)[1], dtype="int32"), 0)
        token_type = self.token_type_embeddings(ops.zeros((1, 1), dtype="int32"))
        x = self.word_embeddings(ids) + self.position_embeddings(positions) + token_type
        return self.dropout(self.layer_norm(x), training=training)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        """``(N, L, hidden)``."""
        return (*input_shape, int(self.config["hidden_size"]))

    def get_config(self) -> dict[str, Any]:
        """The model's config, for saving."""
        return {**super().get_config(), "config": self.config}


@keras.saving.register_keras_serializable(package="tlcore")
class BertLayer(keras.layers.Layer):
    """One post-LayerNorm transformer layer: ``(hidden (N, L, H), mask (N, L))`` → hidden."""

    def __init__(self, config: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = dict(config)
        hidden, init = int(config["hidden_size"]), _init(config)
        self.heads = int(config["num_attention_heads"])
        self.head_size = hidden // self.heads
        self.approximate = ACTIVATIONS[str(config.get("hidden_act", "gelu"))]
        eps = float(config.get("layer_norm_eps", 1e-12))

        def dense(width: int, name: str) -> keras.layers.Dense:
            return keras.layers.Dense(width, kernel_initializer=init, name=name)

        self.query, self.key, self.value = (dense(hidden, n) for n in ("query", "key", "value"))
        self.attention_output = dense(hidden, "attention_output")
        self.attention_norm = keras.layers.LayerNormalization(epsilon=eps, name="attention_norm")
        self.intermediate = dense(int(config["intermediate_size"]), "intermediate")
        self.output_dense = dense(hidden, "output")
        self.output_norm = keras.layers.LayerNormalization(epsilon=eps, name="output_norm")
        self.attention_dropout = keras.layers.Dropout(
            float(config.get("attention_probs_dropout_prob", 0.1))
        )
        self.hidden_dropout = keras.layers.Dropout(float(config.get("hidden_dropout_prob", 0.1)))

    def build(self, input_shape: Any) -> None:
        """Create every weight now, so a saved model's weights load into them."""
        hidden = int(self.config["hidden_size"])
        shape = (None, None, hidden)
        for layer in (self.query, self.key, self.value, self.attention_output, self.intermediate):
            layer.build(shape)
        self.output_dense.build((None, None, int(self.config["intermediate_size"])))
        self.attention_norm.build(shape)
        self.output_norm.build(shape)

    def _activation(self, x: Any) -> Any:
        """BERT's activation. Exact GELU is written with ``erf``, as torch computes it:
        TensorFlow's own uses ``erfc``, which tf2onnx cannot convert."""
        if self.approximate is None:
            return keras.ops.relu(x)
        if self.approximate:
            return keras.activations.gelu(x, approximate=True)
        return 0.5 * x * (1.0 + keras.ops.erf(x * (1.0 / math.sqrt(2.0))))

    def _split(self, x: Any, length: Any) -> Any:
        """``(N, L, H)`` → ``(N, heads, L, head_size)``."""
        x = keras.ops.reshape(x, (-1, length, self.heads, self.head_size))
        return keras.ops.transpose(x, (0, 2, 1, 3))

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        """Self-attention over the real tokens, then the feed-forward block."""
        ops = keras.ops
        x, mask = inputs
        length = ops.shape(x)[1]
        q, k, v = (self._split(f(x), length) for f in (self.query, self.key, self.value))
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) / math.sqrt(self.head_size)
        bias = (1.0 - ops.cast(mask, scores.dtype)) * _MASKED
        probs = ops.softmax(scores + bias[:, None, None, :], axis=-1)
        context = ops.matmul(self.attention_dropout(probs, training=training), v)
        context = ops.reshape(ops.transpose(context, (0, 2, 1, 3)), ops.shape(x))
        attended = self.hidden_dropout(self.attention_output(context), training=training)
        x = self.attention_norm(attended + x)
        inner = self._activation(self.intermediate(x))
        out = self.hidden_dropout(self.output_dense(inner), training=training)
        return self.output_norm(out + x)

    def compute_output_shape(self, input_shape: Any) -> tuple:
        """Same shape as the hidden states."""
        return tuple(input_shape[0])

    def get_config(self) -> dict[str, Any]:
        """The model's config, for saving."""
        return {**super().get_config(), "config": self.config}


def check_config(config: dict[str, Any], where: Path) -> None:
    """Refuse a config this module cannot build.

    Raises:
        TlcoreError: another architecture, position embedding or activation; says which are
            supported and that the torch backend runs the rest.
    """
    kind = config.get("model_type")
    hint = ("the keras backend builds BERT encoders (model_type 'bert': BERT, MiniLM, "
            "all-MiniLM-L6-v2 ...); use --backend torch for other Hugging Face text models")
    if kind not in SUPPORTED_TYPES:
        raise TlcoreError(f"{where} holds a {kind!r} model, which the keras backend cannot "
                          "build", hint)
    position = config.get("position_embedding_type", "absolute")
    act = config.get("hidden_act", "gelu")
    if position != "absolute" or act not in ACTIVATIONS:
        raise TlcoreError(
            f"{where}: position_embedding_type {position!r} / hidden_act {act!r} is not "
            "supported by the keras backend (absolute; " + ", ".join(ACTIVATIONS) + ")", hint,
        )
    if int(config["hidden_size"]) % int(config["num_attention_heads"]):
        raise TlcoreError(f"{where}: hidden_size is not a multiple of num_attention_heads",
                          "fix config.json")


def build_encoder(folder: TextModelFolder, pretrained: bool) -> keras.Model:
    """The encoder of ``folder``: int ids ``(N, L)`` → last hidden state ``(N, L, H)``; with
    the folder's weights when ``pretrained``, else randomly initialised (BERT's init).

    Raises:
        TlcoreError: the architecture is not supported, or the weights do not fit.
    """
    config = folder.config
    check_config(config, folder.path)
    ids = keras.Input((None,), dtype="int64", name="input_ids")
    mask = PaddingMask(folder.pad_id, name="padding_mask")(ids)
    x = BertEmbeddings(config, name="embeddings")(ids)
    for i in range(int(config["num_hidden_layers"])):
        x = BertLayer(config, name=f"layer_{i}")([x, mask])
    network = keras.Model(ids, x, name="bert")
    if pretrained:
        load_safetensors(network, folder.path / WEIGHTS_FILE)
    return network


def _targets(network: keras.Model) -> dict[str, tuple[Any, bool]]:
    """Hugging Face key (without prefix) → (Keras variable, transpose?)."""
    out: dict[str, tuple[Any, bool]] = {}
    emb = network.get_layer("embeddings")
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        out[f"embeddings.{name}.weight"] = (getattr(emb, name).embeddings, False)
    out["embeddings.LayerNorm.weight"] = (emb.layer_norm.gamma, False)
    out["embeddings.LayerNorm.bias"] = (emb.layer_norm.beta, False)
    parts = {
        "attention.self.query": "query", "attention.self.key": "key",
        "attention.self.value": "value", "attention.output.dense": "attention_output",
        "intermediate.dense": "intermediate", "output.dense": "output_dense",
    }
    norms = {"attention.output.LayerNorm": "attention_norm", "output.LayerNorm": "output_norm"}
    layers = [layer for layer in network.layers if isinstance(layer, BertLayer)]
    for i, layer in enumerate(layers):
        for key, attr in parts.items():
            dense = getattr(layer, attr)
            out[f"encoder.layer.{i}.{key}.weight"] = (dense.kernel, True)
            out[f"encoder.layer.{i}.{key}.bias"] = (dense.bias, False)
        for key, attr in norms.items():
            norm = getattr(layer, attr)
            out[f"encoder.layer.{i}.{key}.weight"] = (norm.gamma, False)
            out[f"encoder.layer.{i}.{key}.bias"] = (norm.beta, False)
    return out


# Older checkpoints (TensorFlow-converted BERT) name LayerNorm's weights gamma and beta.
_ALIASES = {".LayerNorm.gamma": ".LayerNorm.weight", ".LayerNorm.beta": ".LayerNorm.bias"}


def load_safetensors(network: keras.Model, path: Path) -> None:
    """Copy a Hugging Face BERT checkpoint into ``network`` (torch ``Linear`` weights
    transposed); the pooler and unknown keys are ignored.

    Raises:
        TlcoreError: the file is missing or unreadable, a weight is missing, or a shape
            differs from the config's.
    """
    from safetensors import safe_open

    if not path.is_file():
        raise TlcoreError(f"{path.parent} has no {path.name}",
                          "save the model with save_pretrained (safetensors), or set "
                          "backbone.weights to none for a random initialisation")
    targets = _targets(network)
    try:
        with safe_open(str(path), framework="np") as handle:
            names = handle.keys()  # a safetensors handle is not iterable
            arrays = {_canonical(key): key for key in names}
            missing = [key for key in targets if key not in arrays]
            if missing:
                raise TlcoreError(
                    f"{path} lacks {len(missing)} BERT weights, e.g. {missing[0]}",
                    "give a BERT checkpoint written by save_pretrained",
                )
            for key, (variable, transpose) in targets.items():
                value = handle.get_tensor(arrays[key])
                _assign(variable, value.T if transpose else value, key, path)
    except TlcoreError:
        raise
    except Exception as exc:  # safetensors raises its own errors for a bad file
        raise TlcoreError.caused_by(f"cannot read {path}", exc,
                                    "restore the model's model.safetensors") from None


def _canonical(key: str) -> str:
    key = key.removeprefix("bert.")
    for old, new in _ALIASES.items():
        if key.endswith(old):
            key = key[: -len(old)] + new
    return key


def _assign(variable: Any, value: np.ndarray, key: str, path: Path) -> None:
    if tuple(value.shape) != tuple(variable.shape):
        raise TlcoreError(
            f"{path}: {key} has shape {tuple(value.shape)}, the config asks for "
            f"{tuple(variable.shape)}", "the folder's config.json and weights disagree",
        )
    if not np.all(np.isfinite(value)):
        raise TlcoreError(f"{path}: {key} holds NaN or infinite values",
                          "restore the model's weights")
    variable.assign(np.asarray(value, dtype=np.float32))
