"""``head.classifier`` on the Keras backend: a network without its own last ``Dense``
(``replace``, ``keep``), and for ``keep`` that layer's kernel and bias written into the head.

The network without the layer is ``keras.Model(network.inputs, last.input)``: it shares the
user's layers (their weights train as the backbone's) and leaves the user's model as it was
built. What is refused, and the words of each refusal, are the core's
(:mod:`tlcore.classifier`); this module only finds the layer in a Keras graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras

from tlcore import classifier as rules
from tlcore.interfaces import Backbone
from tlcore_keras.blocks import Blocks, find_blocks

KIND = "Dense"


@dataclass
class Cut:
    """A network without its last ``Dense``, and what was taken out.

    Attributes:
        network: the user's graph up to the layer's input (a functional ``keras.Model``
            sharing the user's layers).
        blocks: its blocks for ``last_n`` freezing (the removed layer is none of them).
        layer: the removed ``Dense``, with its trained kernel and bias.
    """

    network: keras.Model
    blocks: Blocks
    layer: keras.layers.Dense


def cut_classifier(backbone: Backbone, choice: str, num_classes: int) -> Cut:
    """The graph of ``backbone.network`` up to its last layer, a ``Dense`` whose output is
    the network's output.

    Raises:
        TlcoreError: a text encoder; a subclassed or unbuilt model; a last layer that is not
            a ``Dense`` or not the network's output; for ``keep``, a layer whose activation
            is neither linear nor softmax or whose outputs are not one per class.
    """
    rules.refuse_modality(choice, backbone.input_spec.modality)
    network, label = backbone.network, backbone.name
    last = _last_layer(network, choice, label)
    try:
        produced, features = last.output, last.input
    except (AttributeError, ValueError):  # Keras raises these for a layer called twice
        raise rules.cannot_cut(
            choice, label, f"its last layer {last.name!r} is called more than once",
            "use head.classifier: new, or call the last Dense once",
        ) from None
    if len(network.outputs) != 1 or network.outputs[0] is not produced:
        raise rules.something_follows(choice, label, KIND, last.name)
    if choice == rules.KEEP:
        rules.check_kept_activation(_activation(last), last.name)
        rules.check_kept_shape(tuple(produced.shape), num_classes, last.name)
    # One input as a tensor, not a one-item list: Keras warns when it is called otherwise.
    inputs = network.inputs[0] if len(network.inputs) == 1 else network.inputs
    body = keras.Model(inputs, features, name=f"{network.name}_features")
    return Cut(body, find_blocks(body), last)


def keep_classifier(head: keras.Model, cut: Cut) -> None:
    """Start the head's ``classifier`` layer (kernel ``(F, C)``, as a ``Dense`` keeps it)
    from the removed layer's kernel and bias (zero when it had none)."""
    classifier = head.get_layer("classifier")
    kernel = keras.ops.convert_to_numpy(cut.layer.kernel)
    bias = (keras.ops.convert_to_numpy(cut.layer.bias) if cut.layer.use_bias
            else keras.ops.convert_to_numpy(keras.ops.zeros_like(classifier.bias)))
    classifier.kernel.assign(kernel)
    classifier.bias.assign(bias)


def _last_layer(network: Any, choice: str, label: str) -> keras.layers.Dense:
    """The last layer of a built Sequential or functional model, which must be a ``Dense``.

    Raises:
        TlcoreError: the model is subclassed, unbuilt, or does not end in a ``Dense``.
    """
    if isinstance(network, keras.Sequential) and not network.built:
        raise rules.cannot_cut(
            choice, label, "the Sequential model is not built yet, so it has no graph",
            "start it with keras.Input(shape), or call it (fit) once before passing it",
        )
    if not isinstance(network, keras.Sequential | keras.Function):
        raise rules.cannot_cut(
            choice, label,
            f"{type(network).__name__} is a subclassed keras.Model: its call() is code, not "
            "a graph of layers that can be cut",
            "build it as a keras.Sequential or with the functional API, or use "
            "head.classifier: new",
        )
    layers = network.layers
    last = layers[-1] if layers else None
    if not isinstance(last, keras.layers.Dense):
        found = f"a {type(last).__name__} ({last.name!r})" if last is not None else "none"
        raise rules.not_a_classifier(choice, label, KIND, found)
    return last


def _activation(layer: keras.layers.Dense) -> str:
    """The name of a ``Dense``'s activation (``linear``, ``softmax``, ``relu``, a custom
    function's name)."""
    name = keras.activations.serialize(layer.activation)
    return name if isinstance(name, str) else getattr(layer.activation, "__name__", str(name))
