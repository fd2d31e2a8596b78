"""What a model takes, by modality: decoding and checking inputs, for training and the runtime.

A model's :class:`~tlcore.interfaces.InputSpec` names its modality; :func:`modality` gives the
object that turns what a user passes (files, folders, in-memory objects) into the model's input
array. Images (:mod:`tlcore.inputs.image`), texts (:mod:`tlcore.inputs.text`) and vectors
(:mod:`tlcore.inputs.vector`) are the modalities; another is one module here
and one entry in :data:`MODALITIES`. Nothing in this package imports the recipe, the trainer or
a framework.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Protocol

from tlcore.errors import TlcoreError

if TYPE_CHECKING:
    import numpy as np

    from tlcore.interfaces import InputSpec

#: modality name → ``module:class`` of its inputs object, imported when first used.
MODALITIES = {
    "image": "tlcore.inputs.image:ImageInputs",
    "text": "tlcore.inputs.text:TextInputs",
    "vector": "tlcore.inputs.vector:VectorInputs",
}


class Inputs(Protocol):
    """What the runtime needs of a modality."""

    name: str

    def expand(self, inputs: Any) -> list[tuple[str, Any]]:
        """``(source name, item)`` per sample in what the user passed."""

    def decode(self, item: Any, spec: InputSpec) -> np.ndarray:
        """One item as one sample of the model's input."""

    def check(self, batch: np.ndarray, spec: InputSpec) -> np.ndarray:
        """A batch the caller prepared, checked against the spec."""


def modality(spec: InputSpec) -> Inputs:
    """The inputs object of ``spec.modality``.

    Raises:
        TlcoreError: this tlcore does not know the modality (a newer bundle).
    """
    target = MODALITIES.get(spec.modality)
    if target is None:
        raise TlcoreError(
            f"this model takes {spec.modality!r} inputs, which this tlcore cannot decode",
            f"known modalities: {', '.join(MODALITIES)}; upgrade tlcore",
        )
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)()
