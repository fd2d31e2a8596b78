"""Keras 3 (TensorFlow) backend for tlcore: :class:`KerasBackend`, one :class:`~tlcore.Backend`.

Importing this module imports neither Keras nor TensorFlow: the base class answers ``None`` for
other backends (and other backends' objects), and the methods behind the hooks live in
:mod:`tlcore_keras.methods`, imported by the first call for the ``keras`` backend. The work is
done in small modules: ``catalogue`` (what can be loaded, framework-free), ``sources`` (loading
backbones), ``builtin``, ``names`` (stable weight names), ``blocks`` (what ``last_n`` counts),
``model`` (the :class:`TransferModel` and its head), ``freezing``, ``training`` (optimisers and
compiled steps), ``state`` (weights, optimiser state, native export), ``export`` (the raw
ONNX graph), ``placement`` (devices, precision, ``tf.distribute``) and ``collective`` (the
processes of a run).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from tlcore.builtins import DEFAULT_BACKBONE
from tlcore.plugins.backend import Backend

if TYPE_CHECKING:
    from tlcore.interfaces import Backbone, BackboneInfo
    from tlcore.parallel import Placement, Setup
    from tlcore.recipe import BackboneSpec


class KerasBackend(Backend):
    """The ``keras`` backend: ``keras.applications``, builtin and ``.keras`` backbones or a
    user's own ``keras.Model``, trained as a :class:`~tlcore_keras.model.TransferModel`.

    Ownership is answered without importing Keras: until the module that defines a kind of
    object is imported, no object of that kind can exist.
    """

    name = "keras"
    packages = ("keras", "tensorflow")
    install_hint = "pip install 'tlcore[keras]' -c constraints.txt"
    default_backbone = DEFAULT_BACKBONE
    description = (
        "Keras 3 on TensorFlow: keras.applications, builtin, .keras files, BERT text encoders "
        "or your own keras.Model"
    )
    implementation = "tlcore_keras.methods"

    def backbones(self) -> Iterable[BackboneInfo]:
        """The Keras backbones with their parameter counts, without importing Keras."""
        from tlcore_keras.catalogue import backbone_infos

        return backbone_infos()

    def owns_network(self, network: Any) -> bool:
        """A ``keras.Model``, with Keras checked to run on TensorFlow."""
        if "keras" not in sys.modules:
            return False
        from tlcore_keras.framework import require_keras

        return isinstance(network, require_keras().Model)

    def owns_model(self, model: Any) -> bool:
        """A :class:`~tlcore_keras.model.TransferModel`."""
        if "tlcore_keras.model" not in sys.modules:
            return False
        from tlcore_keras.model import TransferModel

        return isinstance(model, TransferModel)

    def owns_optimizer(self, optimizer: Any) -> bool:
        """A :class:`~tlcore_keras.training.StageOptimizer`."""
        if "tlcore_keras.training" not in sys.modules:
            return False
        from tlcore_keras.training import StageOptimizer

        return isinstance(optimizer, StageOptimizer)

    # Setup, loading and seeding are the calls that can come before any Keras object exists,
    # so they check, before Keras is first imported, that it will run on TensorFlow: a Keras
    # set to another backend is a TlcoreError that says how to fix it, not an import failure.

    def setup(self, placement: Placement) -> Setup | None:
        """The device, precision and ``tf.distribute`` strategy of a run (see
        :mod:`tlcore_keras.placement`)."""
        from tlcore_keras.framework import require_keras

        require_keras()
        from tlcore_keras.placement import setup

        return setup(placement)

    def load_backbone(self, spec: BackboneSpec) -> Backbone | None:
        """``keras:``, ``builtin:`` (``builtin:mlp`` for vectors), ``file:<model.keras>``,
        ``hf:<BERT text model folder>`` or a user keras.Model."""
        from tlcore_keras.framework import require_keras

        require_keras()
        from tlcore_keras.sources import load_backbone

        return load_backbone(spec)

    def seed(self, seed: int) -> None:
        """Seed Keras (``keras.utils.set_random_seed``) and restart live models' dropout
        streams."""
        from tlcore_keras.framework import require_keras

        require_keras()
        from tlcore_keras.seeding import seed as seed_all

        seed_all(seed)


backend = KerasBackend()
"""The instance the ``tlcore`` entry point ``keras`` registers."""
