"""The model the Keras backend trains and exports: preprocessing, backbone, pooling, head.

:class:`TransferModel` holds three functional ``keras.Model``\\ s that share their layers:

- ``full``: uint8 RGB NHWC images → logits, exactly what the ONNX bundle takes, so the
  preprocessing (a :class:`Preprocess` layer: cast, channel order, scale, mean and std) lives
  inside the model and never drifts between training and serving;
- ``features``: images → pooled backbone features (for caching them once per sample);
- ``classifier`` (also ``head``): pooled features → logits.

That is for images; a text model takes int64 token ids and a vector model float32 vectors
instead, with the input steps of :mod:`tlcore_keras.modality` (what the model takes is its
``inputs``, an :class:`~tlcore.interfaces.InputSpec`).

The backbone is called without a fixed ``training`` flag: in Keras 3 a functional model
overrides the ``training=False`` of an inner call with its own caller's flag, so a flag baked
into the graph would not keep BatchNorm in inference mode anyway. Instead the train step calls
``features`` with the flag the freeze policy chose, and BatchNorm layers that must stay in
inference mode have ``trainable = False``, which Keras 3 BatchNorm honours in every mode (see
:mod:`tlcore_keras.freezing`).

A model built inside a setup's scope (:mod:`tlcore_keras.placement`) remembers that scope's
``tf.distribute`` strategy, device and Keras dtype policy (``mixed_bfloat16``,
``mixed_float16``): its variables are the strategy's (or on the device), and its layers
compute in the policy's dtype with float32 weights. Evaluation and export run it in float32
all the same (:func:`float32_compute`).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tlcore.classifier import KEEP, removes_layer
from tlcore.errors import TlcoreError
from tlcore.interfaces import Backbone, InputSpec, Preprocessing
from tlcore.recipe import HeadSpec
from tlcore.recipe.choices import builtin
from tlcore_keras.blocks import Blocks, find_blocks
from tlcore_keras.classifier import cut_classifier, keep_classifier
from tlcore_keras.modality import Standardize, make_pool, text_graph, vector_graph
from tlcore_keras.modality import backbone_output as backbone_output
from tlcore_keras.names import WeightEntry, walk_layers, weight_entries

BACKBONE_PREFIX = "backbone/"
HEAD_PREFIX = "head/"
INPUT_PREFIX = "inputs/"
_SEED_STATE = "seed_generator_state"
_LIVE: weakref.WeakSet[TransferModel] = weakref.WeakSet()


@keras.saving.register_keras_serializable(package="tlcore")
class Preprocess(keras.layers.Layer):
    """uint8 RGB NHWC pixels → the backbone's float input: ``(x[..., order] * scale - mean) / std``.

    Registered as ``tlcore>Preprocess``, so a saved model loads with ``safe_mode=True`` once
    ``tlcore_keras.model`` is imported.
    """

    def __init__(
        self,
        scale: float = 1 / 255,
        mean: Sequence[float] = (0.0, 0.0, 0.0),
        std: Sequence[float] = (1.0, 1.0, 1.0),
        channel_order: str = "RGB",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.scale = float(scale)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.channel_order = channel_order.upper()
        self.affine = Preprocessing(mean=self.mean, std=self.std, scale=self.scale).affine()

    @classmethod
    def from_preprocessing(cls, preprocessing: Preprocessing, name: str = "preprocess") -> Any:
        """The layer for a :class:`~tlcore.interfaces.Preprocessing`."""
        p = preprocessing
        return cls(p.scale, p.mean, p.std, p.channel_order, name=name)

    def call(self, images: Any) -> Any:
        """Normalise a batch of pixels (any numeric dtype) to float32: the multiply-add of
        :meth:`~tlcore.interfaces.Preprocessing.affine`, with ``(W, 3)`` constants when the
        width is known."""
        x = keras.ops.cast(images, "float32")
        if self.channel_order == "BGR":
            x = keras.ops.take(x, [2, 1, 0], axis=-1)
        gain, offset = self.affine
        rows = (images.shape[2] or 1, 1)
        return x * np.tile(np.float32(gain), rows) + np.tile(np.float32(offset), rows)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        """Same shape as the input."""
        return input_shape

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, for saving."""
        return {
            **super().get_config(),
            "scale": self.scale,
            "mean": list(self.mean),
            "std": list(self.std),
            "channel_order": self.channel_order,
        }


def build_head(in_features: int, spec: HeadSpec, num_classes: int) -> keras.Model:
    """Hidden ``Dense → activation → Dropout`` layers, then the ``classifier`` ``Dense``.

    Without hidden layers, ``spec.dropout`` is applied to the pooled features before the
    classifier; with them, after every hidden activation (as the torch backend does). Layers
    are named ``hidden_<i>``, ``hidden_<i>_<activation>``, ``hidden_<i>_dropout``, ``dropout``
    and ``classifier``.
    """
    inputs = keras.Input((in_features,), name="features")
    x = inputs
    for i, width in enumerate(spec.hidden):
        x = linear(width, int(x.shape[-1]), f"hidden_{i}")(x)
        x = keras.layers.Activation(spec.activation, name=f"hidden_{i}_{spec.activation}")(x)
        if spec.dropout > 0:
            x = keras.layers.Dropout(spec.dropout, name=f"hidden_{i}_dropout")(x)
    if not spec.hidden and spec.dropout > 0:
        x = keras.layers.Dropout(spec.dropout, name="dropout")(x)
    logits = linear(num_classes, int(x.shape[-1]), "classifier")(x)
    return keras.Model(inputs, logits, name="head")


def linear(width: int, fan_in: int, name: str) -> keras.layers.Dense:
    """A ``Dense`` layer initialised as torch's ``nn.Linear``: kernel and bias uniform in
    ``±1 / sqrt(fan_in)``, so that one recipe trains the same head on both backends. Keras'
    Glorot default starts 2.4 times larger for a 1280-feature, 10-class head, and on the same
    cached features it ended 1-3 points below torch on Fashion-MNIST (benchmarks/transfer.py)."""
    bound = fan_in**-0.5
    return keras.layers.Dense(
        width,
        kernel_initializer=keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform"),
        bias_initializer=keras.initializers.RandomUniform(-bound, bound),
        name=name,
    )


class TransferModel:
    """A backbone with its input step and a new head: the model's input (uint8 NHWC images,
    int64 token ids or float32 vectors, as ``inputs`` says) in, logits out.

    Attributes:
        backbone: the loaded network (a ``keras.Model``).
        preprocessing: an image model's input size and normalisation, applied inside
            ``full``.
        inputs: what the model takes (:class:`~tlcore.interfaces.InputSpec`; images at
            ``preprocessing`` unless given).
        full: inputs → logits; ``features``: inputs → pooled features; ``classifier`` (and
            its alias ``head``): pooled features → logits. They share their layers.
        blocks: the backbone's blocks, for ``last_n`` freezing.
        num_features: the width of the pooled features.
        backbone_training: the ``training`` flag the train step passes to the backbone (set by
            the freeze policy: ``False`` runs the whole backbone in inference mode).
        train_variables: the variables the next optimiser trains (set by the freeze policy).
        freeze_version: counts freeze policies applied, so a stale optimiser is caught.
        compiled: the compiled inference functions, by kind (see ``training``).
        strategy: the ``tf.distribute`` strategy whose scope the model was built in (its
            variables are that strategy's), or ``None``.
        policy: the name of the Keras dtype policy its layers were built with (``float32``,
            ``mixed_bfloat16``, ``mixed_float16``).
        device: the ``tf.device`` it was built under (its compiled functions run there), or
            ``None``: TensorFlow places it.
    """

    def __init__(
        self,
        backbone: keras.Model,
        preprocessing: Preprocessing,
        head: HeadSpec,
        num_classes: int,
        blocks: Blocks | None = None,
        inputs: InputSpec | None = None,
        own_pooling: str = "cls",
    ) -> None:
        self.backbone = backbone
        self.preprocessing = preprocessing
        self.inputs = inputs if inputs is not None else InputSpec.image(preprocessing)
        self.strategy = tf.distribute.get_strategy() if tf.distribute.has_strategy() else None
        self.policy = str(keras.config.dtype_policy().name)
        self.device = _device_scope()
        _check_same_strategy(backbone, self.strategy)
        self.blocks = blocks if blocks is not None else find_blocks(backbone)
        modality = self.inputs.modality
        if modality == "text":
            source, pooled = text_graph(backbone, self.inputs, head.pooling, own_pooling)
        elif modality == "vector":
            source, pooled = vector_graph(backbone, self.inputs, head.pooling)
        else:
            source, pooled = _image_graph(backbone, self.inputs, preprocessing, head.pooling)
        if len(pooled.shape) != 2 or pooled.shape[-1] is None:
            raise TlcoreError(
                f"the backbone's pooled output has shape {tuple(pooled.shape)}",
                "a backbone must return (N, H, W, C), (N, T, D) or (N, D) of a known width",
            )
        self.num_features = int(pooled.shape[-1])
        self.num_classes = num_classes
        self.features = keras.Model(source, pooled, name="features")
        self.classifier = build_head(self.num_features, head, num_classes)
        self.full = keras.Model(source, self.classifier(pooled), name="transfer_model")
        self._backbone_entries = weight_entries(backbone)
        standardize = [layer for layer in self.full.layers if isinstance(layer, Standardize)]
        self._input_entries = [e for layer in standardize for e in weight_entries(layer)]
        self._head_entries = weight_entries(self.classifier)
        self.backbone_training = True
        self.freeze_version = 0
        self.train_variables: list[Any] = [
            *(e.variable for e in self._backbone_entries if e.variable.trainable),
            *(e.variable for e in self._head_entries if e.variable.trainable),
        ]
        self.compiled: dict[Any, Callable[..., Any]] = {}
        _LIVE.add(self)

    @property
    def head(self) -> keras.Model:
        """The classifier model (pooled features → logits)."""
        return self.classifier

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        """Logits for a batch of the model's inputs, in inference mode, computed in float32."""
        with float32_compute(self), self.placement():
            return np.asarray(self.full(inputs, training=False), dtype=np.float32)

    def scope(self) -> contextlib.AbstractContextManager:
        """The scope of the strategy the model was built in (where its optimisers are made
        and its variables assigned), or nothing."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def placement(self) -> contextlib.AbstractContextManager:
        """``tf.device`` of the device the model was built under (entered where its
        functions are traced), or nothing."""
        return tf.device(self.device) if self.device else contextlib.nullcontext()

    def backbone_entries(self) -> list[WeightEntry]:
        """The backbone's weights under names relative to it (``block_1_expand/kernel``)."""
        return list(self._backbone_entries)

    def entries(self) -> list[tuple[str, Any]]:
        """Every weight of the model by its stable name: a vector model's standardisation
        (``inputs/mean``, ``inputs/std``), then ``backbone/...``, then ``head/...``."""
        return [
            *((INPUT_PREFIX + e.name, e.variable) for e in self._input_entries),
            *((BACKBONE_PREFIX + e.name, e.variable) for e in self._backbone_entries),
            *((HEAD_PREFIX + e.name, e.variable) for e in self._head_entries),
        ]

    def seed_states(self) -> list[Any]:
        """The state variables of the random generators in the model (dropout), in order."""
        return [v for v in self.full.variables if v.name == _SEED_STATE]

    def reseed(self, seed: int) -> None:
        """Restart every random generator in the model from ``seed`` (one stream each), so
        dropout masks depend on the seed alone and not on how many steps ran before."""
        for index, state in enumerate(self.seed_states()):
            start = np.random.SeedSequence([seed, index]).generate_state(1)[0] & 0x7FFFFFFF
            state.assign(np.asarray([start, 0], dtype=state.dtype))


def attach_head(backbone: Backbone, head: HeadSpec, num_classes: int) -> TransferModel | None:
    """Build the :class:`TransferModel` for a loaded Keras backbone; ``None`` for a pooling a
    plugin registered: that plugin's ``tl_attach_head`` builds the model.

    ``head.classifier`` ``replace`` / ``keep`` build it on the network's graph without its
    last ``Dense`` (:mod:`tlcore_keras.classifier`); ``keep`` starts the head from it."""
    if head.pooling not in builtin("pooling"):
        return None
    network, blocks = backbone.network, backbone.extra.get("blocks")
    cut = None
    if removes_layer(head.classifier):
        cut = cut_classifier(backbone, head.classifier, num_classes)
        network, blocks = cut.network, cut.blocks
    own = backbone.extra.get("pooling")
    model = TransferModel(
        network,
        backbone.preprocessing,
        head,
        num_classes,
        blocks if isinstance(blocks, Blocks) else None,
        backbone.input_spec,
        own if own in ("mean", "cls") else "cls",
    )
    if cut is not None and head.classifier == KEEP:
        keep_classifier(model.classifier, cut)
    return model


def _image_graph(
    backbone: keras.Model, spec: InputSpec, preprocessing: Preprocessing, pooling: str
) -> tuple[Any, Any]:
    """``(images input, pooled features)``: uint8 NHWC images, :class:`Preprocess`, the
    backbone, the pooling."""
    height, width = spec.size
    images = keras.Input((height, width, 3), dtype="uint8", name="images")
    x = Preprocess.from_preprocessing(preprocessing)(images)
    try:
        out = backbone_output(backbone(x))
    except TlcoreError:
        raise
    except Exception as exc:  # any framework error here means the input does not fit
        raise TlcoreError.caused_by(
            f"the backbone cannot run on {height}x{width} RGB images", exc,
            "check backbone.input_size, and that the network takes (N, H, W, 3) input",
        ) from None
    pool = make_pool(pooling, len(out.shape))
    return images, pool(out) if pool is not None else out


def _device_scope() -> str | None:
    """The device of the ``tf.device`` block being run in, if any (TensorFlow's eager
    context knows it; there is no public accessor)."""
    from tensorflow.python.eager import context

    return getattr(context.context(), "device_name", "") or None


def _check_same_strategy(backbone: keras.Model, strategy: Any) -> None:
    """Refuse a backbone whose variables were made outside the strategy the head is built in
    (a user's network built before ``tl_setup``): training would mix them."""
    if strategy is None:
        return
    for variable in backbone.weights:
        value = getattr(variable, "value", variable)
        if not isinstance(value, tf.distribute.DistributedValues):
            raise TlcoreError(
                f"the backbone's weight {variable.path!r} was made outside the "
                f"{type(strategy).__name__}'s scope this model is built in",
                "build your keras.Model inside setup.collective.scope() (or pass a saved "
                ".keras file as the backbone), so that its weights are the strategy's",
            )


@contextlib.contextmanager
def float32_compute(model: TransferModel) -> Iterator[None]:
    """Run ``model``'s layers in float32 inside the block, whatever dtype policy they were
    built with, and restore their policies afterwards.

    A Keras layer reads its compute dtype from its policy when it is called (and when a
    ``tf.function`` calling it is traced), and a mixed policy keeps float32 weights, so
    switching the policies is all a float32 evaluation or export of a mixed-precision model
    needs: no copy of the model, no second set of weights. Quantised policies and policy
    maps are left alone (tlcore builds neither). TensorFloat-32, which TensorFlow uses by
    default for float32 products on GPUs since Ampere (a 10-bit mantissa: ~1e-3 off, past
    the export's parity tolerance), is off inside the block too.
    """
    tf32 = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(False)
    changed = []
    if model.policy != "float32":
        for layer, _ in walk_layers(model.full):
            policy = layer.dtype_policy
            mixed = policy.compute_dtype != policy.variable_dtype == "float32"
            plain = not isinstance(policy, keras.dtype_policies.DTypePolicyMap)
            if plain and policy.quantization_mode is None and mixed:
                changed.append((layer, policy))
                layer.dtype_policy = "float32"
    try:
        yield
    finally:
        for layer, policy in changed:
            layer.dtype_policy = policy
        tf.config.experimental.enable_tensor_float_32_execution(tf32)


def live_models() -> Iterator[TransferModel]:
    """Every :class:`TransferModel` still referenced somewhere (for ``tl_seed``)."""
    yield from list(_LIVE)
