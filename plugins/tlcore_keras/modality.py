"""What comes between a model's input and its pooled features, by the input's modality.

- images: :class:`~tlcore_keras.model.Preprocess`, the backbone, then :func:`make_pool`;
- texts: int64 token ids ``(N, max_length)`` straight into the encoder (which derives its
  attention mask from ``pad_id``), then :class:`TextPool` over the real tokens;
- vectors: float32 ``(N, features)`` through :class:`Standardize` (the training split's mean
  and std as non-trainable weights, so every checkpoint carries them), then the network.

Pooling (``head.pooling``): ``avg`` and ``max`` reduce a feature map ``(N, H, W, C)`` over its
positions and tokens ``(N, T, D)`` over the tokens, ``mean`` is ``avg``, ``cls`` takes the
first token, ``flatten`` keeps everything. For a text encoder they count only the text's
tokens, not the padding, and ``avg`` is the model's own pooling (``mean`` for a
sentence-transformers folder that says so, else ``cls``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from tlcore.errors import TlcoreError
from tlcore.interfaces import InputSpec, TextPreprocessing, VectorPreprocessing

TEXT_POOLINGS = ("mean", "cls", "max", "flatten")


def backbone_output(out: Any) -> Any:
    """The features tensor of a backbone's output (a tensor, or the first of a list/dict)."""
    if isinstance(out, dict):
        out = next(iter(out.values()), None)
    if isinstance(out, list | tuple):
        out = out[0] if out else None
    if out is None or not hasattr(out, "shape"):
        raise TlcoreError(
            f"the backbone returned {type(out).__name__}, not a tensor",
            "a backbone must return its feature map, tokens or feature vectors",
        )
    return out


def make_pool(mode: str, rank: int) -> keras.layers.Layer | None:
    """The pooling layer for backbone output of ``rank`` (4: feature map, 3: tokens, 2: flat).

    ``avg`` (and its alias ``mean``) / ``max`` reduce a feature map ``(N, H, W, C)`` over its
    spatial dimensions and tokens ``(N, T, D)`` over the tokens; ``cls`` takes the first of
    the tokens; ``flatten`` keeps everything. Already flat ``(N, D)`` output needs no pooling
    (``None``).

    Raises:
        TlcoreError: ``cls`` on a feature map, or a reducing pooling on output of rank > 4.
    """
    if rank == 2:
        return None
    if mode == "flatten" or rank > 4:
        if mode != "flatten":
            raise TlcoreError(
                f"pooling {mode!r} needs (N, H, W, C) or (N, T, D) backbone output, "
                f"got rank {rank}",
                "use pooling: flatten",
            )
        return keras.layers.Flatten(name="pool")
    if mode == "cls":
        if rank != 3:
            raise TlcoreError(
                "pooling 'cls' takes the first token of (N, T, D) backbone output, but this "
                "backbone returns a feature map (N, H, W, C)",
                "use pooling: avg (or max, flatten) for a convolutional backbone",
            )
        return FirstToken(name="pool")
    layers = keras.layers
    if rank == 4:
        cls = layers.GlobalMaxPooling2D if mode == "max" else layers.GlobalAveragePooling2D
    else:
        cls = layers.GlobalMaxPooling1D if mode == "max" else layers.GlobalAveragePooling1D
    return cls(name="pool")


@keras.saving.register_keras_serializable(package="tlcore")
class FirstToken(keras.layers.Layer):
    """``(N, T, D)`` → ``(N, D)``: the first token (a transformer's ``[CLS]``)."""

    def call(self, tokens: Any) -> Any:
        """The first token of each sample."""
        return tokens[:, 0]

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        """``(N, D)``."""
        return (input_shape[0], input_shape[-1])


@keras.saving.register_keras_serializable(package="tlcore")
class TextPool(keras.layers.Layer):
    """``[hidden (N, L, H), ids (N, L)]`` → ``(N, H)`` (``(N, L*H)`` for ``flatten``), over
    the real tokens (``ids != pad_id``), computed in float32.

    ``mean`` averages the real tokens (as sentence-transformers does), ``max`` takes their
    maximum, ``cls`` the first token, ``flatten`` keeps every position.
    """

    def __init__(self, mode: str = "mean", pad_id: int = 0, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.mode = mode
        self.pad_id = int(pad_id)

    def call(self, inputs: Sequence[Any]) -> Any:
        """Pool the hidden states of the real tokens."""
        ops = keras.ops
        hidden, ids = inputs
        hidden = ops.cast(hidden, "float32")
        if self.mode == "cls":
            return hidden[:, 0]
        if self.mode == "flatten":
            return ops.reshape(hidden, (-1, hidden.shape[1] * hidden.shape[2]))
        mask = ops.expand_dims(ops.cast(ops.not_equal(ids, self.pad_id), "float32"), -1)
        if self.mode == "max":
            return ops.max(ops.where(mask > 0, hidden, -1e9), axis=1)
        total = ops.sum(hidden * mask, axis=1)
        return total / ops.maximum(ops.sum(mask, axis=1), 1e-9)

    def compute_output_shape(self, input_shape: Any) -> tuple:
        """``(N, H)``, or ``(N, L*H)`` for ``flatten``."""
        batch, length, width = input_shape[0]
        if self.mode == "flatten":
            return (batch, length * width)
        return (batch, width)

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, for saving."""
        return {**super().get_config(), "mode": self.mode, "pad_id": self.pad_id}


@keras.saving.register_keras_serializable(package="tlcore")
class Standardize(keras.layers.Layer):
    """Raw vectors → ``(x - mean) / std`` per feature, in float32 whatever the precision.

    ``mean`` and ``std`` are non-trainable weights (named ``inputs/mean`` and ``inputs/std``
    in a :class:`~tlcore_keras.model.TransferModel`), so checkpoints and ``model.keras``
    carry them; they start from the :class:`~tlcore.interfaces.VectorPreprocessing` given.
    """

    def __init__(self, mean: Sequence[float] = (0.0,), std: Sequence[float] = (1.0,),
                 **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.initial = (tuple(float(m) for m in mean), tuple(float(s) for s in std))
        features = len(self.initial[0])
        self.mean = self.add_weight(
            shape=(features,), name="mean", trainable=False,
            initializer=keras.initializers.Constant(np.float32(self.initial[0])),
        )
        self.std = self.add_weight(
            shape=(features,), name="std", trainable=False,
            initializer=keras.initializers.Constant(np.float32(self.initial[1])),
        )

    def call(self, vectors: Any) -> Any:
        """Standardise a batch of vectors."""
        x = keras.ops.cast(vectors, "float32")
        return (x - self.mean) / self.std

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        """Same shape as the input."""
        return input_shape

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, for saving (the weights hold the current values)."""
        return {**super().get_config(), "mean": list(self.initial[0]),
                "std": list(self.initial[1])}


def text_graph(backbone: keras.Model, spec: InputSpec, pooling: str, own: str) -> tuple:
    """``(ids input, pooled features)`` of a text encoder: ``spec``'s int64 ids, the
    encoder, then :class:`TextPool` (``avg`` is the model's own pooling ``own``).

    Raises:
        TlcoreError: the encoder cannot run on the ids, or the pooling is unknown.
    """
    prep = spec.preprocessing
    pad_id = prep.pad_id if isinstance(prep, TextPreprocessing) else 0
    ids = keras.Input(spec.shape, dtype="int64", name=spec.name)
    out = _run(backbone, ids, f"{spec.shape[0]} token ids", "backbone.input_size (tokens)")
    if len(out.shape) == 2:  # an encoder that pools itself
        return ids, out
    mode = own if pooling == "avg" else pooling
    if mode not in TEXT_POOLINGS or len(out.shape) != 3:
        raise TlcoreError(
            f"pooling {mode!r} on a text encoder's output of shape {tuple(out.shape)}",
            "use pooling avg, mean, cls, max or flatten on (N, L, H) hidden states",
        )
    return ids, TextPool(mode, pad_id, name="pool")([out, ids])


def vector_graph(backbone: keras.Model, spec: InputSpec, pooling: str) -> tuple:
    """``(vectors input, pooled features)`` of a vector network: ``spec``'s float32
    vectors, :class:`Standardize`, the network (pooled by :func:`make_pool` if it returns
    more than ``(N, D)``)."""
    prep = spec.preprocessing
    if not isinstance(prep, VectorPreprocessing):
        prep = VectorPreprocessing.identity(spec.shape[0])
    vectors = keras.Input(spec.shape, dtype="float32", name=spec.name)
    x = Standardize(prep.mean, prep.std, name="inputs")(vectors)
    out = _run(backbone, x, f"vectors of {spec.shape[0]} features",
               "backbone.input_features (the data's vector length)")
    pool = make_pool(pooling, len(out.shape))
    return vectors, pool(out) if pool is not None else out


def _run(backbone: keras.Model, x: Any, what: str, setting: str) -> Any:
    try:
        return backbone_output(backbone(x))
    except TlcoreError:
        raise
    except Exception as exc:  # any framework error here means the input does not fit
        raise TlcoreError.caused_by(
            f"the backbone cannot run on {what}", exc,
            f"check {setting}, and that the network takes that input",
        ) from None
