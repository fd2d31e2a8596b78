"""``head.classifier``: where the new head goes on a network that ends in its own classifier.

- ``new`` (the default): the network's whole output is the features; the head goes on top.
- ``replace``: the network's own last linear layer (torch ``nn.Linear``, Keras ``Dense``) is
  removed; its input is the features (and the bundle's ``embeddings``); a new head takes its
  place.
- ``keep``: as ``replace``, but the head is one linear layer that starts from the removed
  layer's weight and bias, so training continues the network's own classifier.

The choices, the recipe's check and every refusal are here, once; each backend finds and
removes the layer in its own framework (``tlcore_torch.classifier``,
``tlcore_keras.classifier``) and raises what these functions build.
"""

from __future__ import annotations

from collections.abc import Sequence

from tlcore.errors import RecipeError, TlcoreError

NEW = "new"
REPLACE = "replace"
KEEP = "keep"
CHOICES = (NEW, REPLACE, KEEP)
"""The values of ``head.classifier``."""

KEPT_ACTIVATIONS = ("linear", "softmax")
"""The activations a kept layer may have had. tlcore's head gives logits, which its loss and
its export turn into probabilities with softmax: a layer trained under softmax (or none) means
the same there; under another activation its weights would mean something else."""


def removes_layer(choice: str) -> bool:
    """Whether ``choice`` takes the network's own last linear layer out (``replace``, ``keep``)."""
    return choice in (REPLACE, KEEP)


def check_head(classifier: str, hidden: Sequence[int], path: str = "head.") -> None:
    """Refuse ``keep`` with hidden layers: the kept layer is the head's one linear layer, and
    hidden layers in front of it would feed it other features than it was trained on.

    Raises:
        RecipeError: names ``head.classifier`` and what would be valid.
    """
    if classifier == KEEP and hidden:
        raise RecipeError(
            f"{path}classifier", classifier,
            f"new or replace while {path}hidden is set ({list(hidden)}): keep continues the "
            f"network's own last layer as the head's only layer (or set {path}hidden: [])",
        )


def check_kept_head(classifier: str, optimizers: Sequence[str]) -> None:
    """Refuse ``keep`` with a ``logistic`` stage: the logistic regression fits the head anew,
    so the kept layer's weights would be thrown away without a word.

    Raises:
        RecipeError: names ``head.classifier`` and what would be valid.
    """
    if classifier == KEEP and "logistic" in optimizers:
        raise RecipeError(
            "head.classifier", classifier,
            "replace while a stage's optimizer is logistic: the logistic regression fits the "
            "head from scratch, so the kept layer would be discarded (or train that stage "
            "with a gradient optimizer, e.g. adamw)",
        )


def refuse_modality(choice: str, modality: str) -> None:
    """Refuse ``replace`` / ``keep`` for a text encoder: tlcore loads the encoder alone, so
    its own heads (pre-training, classification) are already dropped, and its last linear
    layer is inside the last transformer layer, not a classifier.

    Raises:
        TlcoreError: for ``text``; other modalities pass.
    """
    if removes_layer(choice) and modality == "text":
        raise TlcoreError(
            f"head.classifier {choice} does not apply to a text encoder: tlcore loads the "
            "encoder without its own heads, so it has no classifier to remove",
            "use head.classifier: new (the encoder's pooled output is the features)",
        )


def not_a_classifier(choice: str, network: str, kind: str, found: str) -> TlcoreError:
    """The error for a network whose last layer is not a linear one (``found`` says what it
    is, e.g. ``ReLU``, or that there is none)."""
    return TlcoreError(
        f"head.classifier {choice} removes the network's last {kind}, but {network}'s last "
        f"layer is {found}",
        f"use head.classifier: new (the network's output is the features), or end the "
        f"network in a {kind}",
    )


def something_follows(choice: str, network: str, kind: str, layer: str) -> TlcoreError:
    """The error for a network whose output is not its last linear layer's output: something
    follows that layer (an activation, a normalisation, a residual sum), so removing it would
    not leave that layer's input as the features."""
    return TlcoreError(
        f"head.classifier {choice}: {network}'s output is not the output of its last {kind} "
        f"{layer!r}; something follows it (an activation, a normalisation, ...)",
        "use head.classifier: new (the network's whole output is the features), or end the "
        f"network's forward with that {kind}",
    )


def cannot_cut(choice: str, network: str, why: str, hint: str) -> TlcoreError:
    """The error for a network whose last layer cannot be taken out (``why``: a TorchScript
    file, a subclassed Keras model, a shared layer)."""
    return TlcoreError(f"head.classifier {choice} cannot remove the last layer of {network}: "
                       f"{why}", hint)


def check_kept_shape(shape: Sequence[int | None], classes: int, layer: str) -> None:
    """The kept layer must give one vector per sample, of one output per class.

    Args:
        shape: the layer's output shape, batch first (``(N, 10)``).
        classes: the outputs the head needs (the data's classes).
        layer: the layer's name, for the message.

    Raises:
        TlcoreError: names both numbers (or the shape, when it is not ``(N, outputs)``).
    """
    if len(shape) != 2:
        raise TlcoreError(
            f"head.classifier keep: the network's last layer {layer!r} gives outputs of "
            f"shape {tuple(shape)}, not one vector per sample, so it cannot be the head",
            "use head.classifier: replace (the head then pools that layer's input)",
        )
    if shape[-1] != classes:
        raise TlcoreError(
            f"head.classifier keep: the network's last layer {layer!r} has {shape[-1]} "
            f"outputs, but the data has {classes} classes",
            "use head.classifier: replace (a new classifier for the data's classes on the "
            "same features)",
        )


def check_kept_activation(activation: str, layer: str) -> None:
    """The kept layer must have been trained as logits (:data:`KEPT_ACTIVATIONS`).

    Raises:
        TlcoreError: names the activation and why it cannot be kept.
    """
    if activation not in KEPT_ACTIVATIONS:
        raise TlcoreError(
            f"head.classifier keep: the network's last layer {layer!r} applies "
            f"{activation}; tlcore's head outputs logits that its loss and export turn into "
            f"probabilities with softmax, so weights trained under {activation} would mean "
            "something else there",
            "use head.classifier: replace (a new classifier on the same features), or end "
            "the network in a layer with a linear or softmax activation",
        )
