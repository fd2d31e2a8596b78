"""Load a backbone from each source kind the Keras backend knows.

``keras:<name>`` (``keras.applications``, :data:`~tlcore_keras.catalogue.APPLICATIONS`),
``builtin:<name>``, ``file:<model.keras>``, ``hf:<text model folder>``
(:mod:`tlcore_keras.text`), or a user's own ``keras.Model`` (``spec.model``). An image loader
returns a ``keras.Model`` that maps a normalised float NHWC batch to features: a feature map
``(N, H, W, C)``, tokens ``(N, T, D)`` or vectors ``(N, D)``; a text encoder maps int64 token
ids to hidden states ``(N, L, H)``, a vector network (``builtin:mlp``, or a user's network
when ``backbone.input_features`` is set: :mod:`tlcore_keras.vectors`) float32 vectors to
features, and both say so in ``extra["inputs"]``.

``spec.weights``: ``pretrained`` / ``imagenet`` loads the source's own weights (for
``keras:`` the ImageNet download, cached by Keras in ``~/.keras/models``; for ``builtin:``
EfficientNet-Lite the published ImageNet weights, through :mod:`tlcore.efficientnet_lite`;
``builtin:simple_cnn`` has none: random init, ``Backbone.pretrained`` False), ``none`` builds
the same architecture randomly initialised (``Backbone.pretrained`` False), and a path builds it
randomly initialised and then loads that file where names and shapes fit (the
:class:`~tlcore.interfaces.LoadReport` goes into ``Backbone.extra["weights_report"]``).
``Backbone.extra["blocks"]`` holds the :class:`~tlcore_keras.blocks.Blocks` found.
"""

from __future__ import annotations

from math import prod
from pathlib import Path
from typing import Any

import keras

from tlcore.builtins import BUILTIN_BACKBONES
from tlcore.errors import TlcoreError
from tlcore.interfaces import Backbone, Preprocessing
from tlcore.recipe import BackboneSpec
from tlcore.sources import Loader, load_source, lookup, wants_pretrained, weights_file
from tlcore_keras import catalogue, vectors
from tlcore_keras.blocks import find_blocks
from tlcore_keras.builtin import BUILDERS
from tlcore_keras.freezing import set_trainable
from tlcore_keras.modality import Standardize
from tlcore_keras.model import Preprocess  # also registers it for .keras files
from tlcore_keras.state import load_weights_file
from tlcore_keras.text import HF_KIND, load_text_encoder

IMAGENET = catalogue.STYLES["torch"]

Loaded = tuple[Any, Preprocessing, dict[str, Any]]


def load_backbone(spec: BackboneSpec) -> Backbone | None:
    """Load the backbone ``spec`` names, or ``None`` when its source kind is not Keras'.

    Raises:
        TlcoreError: the source is the Keras backend's but cannot be loaded.
    """
    if spec.source is None and spec.model is not None:
        return _user_model(spec)
    backbone = load_source(spec, catalogue.DEFAULT_SOURCE, LOADERS, load_weights_file)
    if backbone is not None:
        backbone.extra["blocks"] = find_blocks(backbone.network)
    return backbone


# --- keras.applications ---------------------------------------------------------------------


def _application(name: str, spec: BackboneSpec, pretrained: bool) -> Loaded:
    app = lookup(catalogue.KERAS_KIND, name, catalogue.APPLICATIONS)
    size = spec.input_size or app.size
    constructor = getattr(keras.applications, app.constructor)
    try:
        network = constructor(
            include_top=False,
            weights="imagenet" if pretrained else None,
            input_shape=(size, size, 3),
        )
    except ValueError as exc:
        raise TlcoreError(
            f"keras:{name} cannot be built at {size}x{size}: {str(exc).strip()[:300]}",
            "choose another backbone.input_size",
        ) from None
    except Exception as exc:  # the download: URL errors, HTTP errors, a corrupt cache
        raise TlcoreError(
            f"cannot get the ImageNet weights of keras:{name}: {str(exc).strip()[:300]}",
            "offline? run once with a connection (Keras caches the file in ~/.keras/models), "
            "or set backbone.weights to a local weights file (.h5, .weights.h5, .keras, .npz), "
            "or to 'none' for a random initialisation",
        ) from None
    return network, app.preprocessing.with_size(size), {}


def application_params(name: str) -> int | None:
    """Parameters of ``keras:<name>`` (trainable weights), counted without allocating them;
    what :data:`~tlcore_keras.catalogue.APPLICATIONS` records, so the tests check it here.

    The network is built inside a ``keras.StatelessScope``, where variables get shapes but no
    values. Keras keeps such variables on a list to initialise at the next scope exit; they are
    taken off it again, or any later model build would allocate every network listed here.
    ``None`` when this Keras version does not allow that.
    """
    app = catalogue.APPLICATIONS[name]
    try:
        from keras.src.backend.common import global_state
    except ImportError:
        return None
    key = "uninitialized_variables"
    pending = list(global_state.get_global_attribute(key, []) or [])
    try:
        with keras.StatelessScope(initialize_variables=False):
            network = getattr(keras.applications, app.constructor)(
                include_top=False, weights=None, input_shape=(app.size, app.size, 3)
            )
        return sum(prod(int(d) for d in v.shape) for v in network.trainable_weights)
    except Exception:  # a network this Keras cannot build abstractly: leave the count out
        return None
    finally:
        global_state.set_global_attribute(key, pending)


# --- builtin --------------------------------------------------------------------------------


def _builtin(name: str, spec: BackboneSpec, pretrained: bool) -> Loaded:
    build = lookup(catalogue.BUILTIN_KIND, name, {**BUILDERS, vectors.MLP: None})
    if build is None:  # builtin:mlp, built for the data's vectors
        network, extra = vectors.load_mlp(spec)
        return network, IMAGENET, extra
    builtin = BUILTIN_BACKBONES[name]
    size = spec.input_size or builtin.preprocessing.size[0]
    # simple_cnn ignores ``pretrained``; EfficientNet-Lite without published weights refuses it.
    network = build(size, pretrained)
    return network, builtin.preprocessing.with_size(size), {
        "pretrained": pretrained and builtin.published
    }


# --- .keras file ----------------------------------------------------------------------------


def _file(name: str, spec: BackboneSpec, pretrained: bool) -> Loaded:
    """A Keras 3 ``.keras`` file, loaded with ``safe_mode=True``.

    A tlcore run's own ``native/model.keras`` gives its trained backbone, with the run's
    normalisation and input size (see :func:`_run_backbone`); any other model is the backbone
    as saved and takes ImageNet's (torch style) normalisation.
    """
    path = Path(name).expanduser()
    if path.suffix != ".keras":
        raise TlcoreError(
            f"the keras backend loads file: backbones from .keras files, not {path.name}",
            "save the model with model.save('model.keras') (a tlcore run's native/model.keras "
            "is one); for a weights file such as a run's native/weights.npz, set "
            "backbone.weights to its path and choose an architecture as source",
        )
    if not path.is_file():
        raise TlcoreError(f"Keras model file not found: {path}", "give the path of a .keras file")
    try:
        network = keras.saving.load_model(str(path), safe_mode=True, compile=False)
    except Exception as exc:  # Keras raises many types for a bad or unsafe file
        raise TlcoreError.caused_by(
            f"cannot load {path}", exc,
            "save it with model.save(path) from Keras 3; custom layers must be registered "
            "with keras.saving.register_keras_serializable, and lambdas are refused",
        ) from None
    label = f"file:{name}"
    extra: dict[str, Any] = {}
    found = _run_backbone(network)
    if found is not None:
        network, preprocessing = found
        preprocessing = preprocessing.with_size(spec.input_size)
    else:
        network = _vector_run_backbone(network) or network
        features = vectors.vector_features(network, spec, label)
        if features:
            preprocessing = IMAGENET
            extra["inputs"] = vectors.vector_inputs(features)
        else:
            _refuse_integer_input(network, label)
            preprocessing = IMAGENET.with_size(_input_size(network, spec, label))
    if not pretrained:
        _reinitialise(network, label)
    return network, preprocessing, extra


def _vector_run_backbone(network: Any) -> Any:
    """The trained network inside a vector run's ``native/model.keras`` (float32 ``vectors``
    → :class:`~tlcore_keras.modality.Standardize` → network → head), or ``None``: as for an
    image run (:func:`_run_backbone`), what a user means is the network that run trained."""
    layers = list(getattr(network, "layers", ()))
    found = [i for i, layer in enumerate(layers) if isinstance(layer, Standardize)]
    if len(found) != 1 or found[0] + 1 >= len(layers):
        return None
    backbone = layers[found[0] + 1]
    if not isinstance(backbone, keras.Model):
        return None
    set_trainable(backbone, True)  # as saved, the old run's last freeze plan would hold
    return backbone


def _run_backbone(network: Any) -> tuple[Any, Preprocessing] | None:
    """The trained backbone inside a tlcore run's ``native/model.keras`` and the run's
    preprocessing (its normalisation at its input size), or ``None`` for any other model.

    A run saves its whole model: uint8 ``images`` → :class:`~tlcore_keras.model.Preprocess` →
    backbone → pooling → head. Used whole as a backbone it would get the already normalised
    floats at its uint8 input (Keras casts them, which wipes out the image and which TensorFlow
    and onnxruntime round differently, so the export fails its parity check), normalise them a
    second time and hand the old head's logits to the new head as features. What a user means
    by it is the backbone that run trained, so only that layer is kept.
    """
    layers = list(getattr(network, "layers", ()))
    # A functional model lists its layers in graph order: the backbone follows Preprocess.
    found = [i for i, layer in enumerate(layers) if isinstance(layer, Preprocess)]
    if len(found) != 1 or found[0] + 1 >= len(layers):
        return None
    preprocess, backbone = layers[found[0]], layers[found[0] + 1]
    shape = tuple(getattr(network, "input_shape", ()))
    # A run's model always takes images of a fixed size, the size it was trained at.
    if not isinstance(backbone, keras.Model) or len(shape) != 4 or not shape[1] or not shape[2]:
        return None
    preprocessing = Preprocessing(
        size=(int(shape[1]), int(shape[2])),
        mean=preprocess.mean,
        std=preprocess.std,
        scale=preprocess.scale,
        channel_order=preprocess.channel_order,
    )
    # ``trainable`` is saved with each layer: without this, the old run's last freeze plan
    # would hold until this run's freeze policy is applied.
    set_trainable(backbone, True)
    return backbone, preprocessing


def _refuse_integer_input(network: Any, label: str) -> None:
    """Refuse a model that takes integer pixels: tlcore feeds a backbone normalised floats,
    which an integer input would silently truncate.

    Raises:
        TlcoreError: the model's input is of an integer dtype.
    """
    dtypes = [str(getattr(tensor, "dtype", "float32")) for tensor in network.inputs or ()]
    if any("int" in dtype for dtype in dtypes):
        raise TlcoreError(
            f"{label} takes {', '.join(dtypes)} input, but a backbone gets normalised float32 "
            "pixels (tlcore puts the preprocessing in front of it)",
            "save the model without its own input scaling, from a float32 keras.Input",
        )


# --- user model -----------------------------------------------------------------------------


def _user_model(spec: BackboneSpec) -> Backbone | None:
    """A user's own ``keras.Model``; ``None`` for objects of other frameworks.

    A vector network when the data holds vectors (:mod:`tlcore_keras.vectors`); otherwise
    an image network: its preprocessing is its ``tlcore_preprocessing`` attribute when it has one (a
    :class:`~tlcore.interfaces.Preprocessing`), else ImageNet's (torch style); the input size
    is ``spec.input_size``, else the model's own. ``weights=none`` re-initialises it in place.
    """
    network = spec.model
    if not isinstance(network, keras.Model):
        return None
    label = f"user:{type(network).__name__}"
    extra: dict[str, Any] = {}
    features = vectors.vector_features(network, spec, label)
    if features:
        preprocessing = IMAGENET
        extra["inputs"] = vectors.vector_inputs(features)
    else:
        preprocessing = _user_preprocessing(network, spec, label)
    path = weights_file(spec.weights)
    if path is not None:
        extra["weights_report"] = load_weights_file(network, path)
    elif not wants_pretrained(spec.weights):
        _reinitialise(network, label)
    extra["blocks"] = find_blocks(network)
    return Backbone(network, preprocessing, label, extra, inputs=extra.pop("inputs", None))


def _user_preprocessing(network: Any, spec: BackboneSpec, label: str) -> Preprocessing:
    """An image network's preprocessing: its ``tlcore_preprocessing`` attribute when it has
    one, else ImageNet's (torch style), at ``spec.input_size`` or the network's own size."""
    own = getattr(network, "tlcore_preprocessing", None)
    base = own if isinstance(own, Preprocessing) else IMAGENET
    if spec.input_size is None and isinstance(own, Preprocessing):
        size = None
    else:
        size = _input_size(network, spec, label)
    return base.with_size(size)


# --- helpers --------------------------------------------------------------------------------


def _input_size(network: Any, spec: BackboneSpec, label: str) -> int:
    """``spec.input_size``, else the network's own square input size."""
    if spec.input_size is not None:
        return spec.input_size
    shape = getattr(network, "input_shape", None)
    if isinstance(shape, tuple) and len(shape) == 4 and shape[1] and shape[1] == shape[2]:
        return int(shape[1])
    raise TlcoreError(
        f"backbone.input_size is needed for {label} (its input shape is {shape})",
        "pass input_size=<pixels>",
    )


def _reinitialise(network: Any, label: str) -> None:
    """Give ``network`` fresh random weights, in place: clone the architecture (new
    initialisers run) and copy the clone's weights in."""
    try:
        fresh = keras.models.clone_model(network)
    except Exception as exc:  # subclassed models cannot be cloned from their config
        raise TlcoreError(
            f"backbone.weights 'none' cannot re-initialise {label}: {exc}",
            "use weights: pretrained (its own weights), or re-create the model yourself",
        ) from None
    network.set_weights(fresh.get_weights())


LOADERS: dict[str, Loader] = {
    catalogue.KERAS_KIND: _application,
    catalogue.BUILTIN_KIND: _builtin,
    catalogue.FILE_KIND: _file,
    HF_KIND: load_text_encoder,
}
