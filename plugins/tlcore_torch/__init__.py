"""PyTorch backend for tlcore: :class:`TorchBackend`, one :class:`~tlcore.Backend`.

Importing this module imports neither torch nor transformers: the base class answers ``None``
for other backends, and the methods behind the hooks live in :mod:`tlcore_torch.methods`,
imported by the first call for the ``torch`` backend. The work is done in small modules:
``sources`` (loading backbones; ``hf`` for Hugging Face folders, ``text`` for text encoders
and their masked pooling, ``vectors`` for ``builtin:mlp``, ``loading`` for what the loaders
share), ``blocks`` (what ``last_n`` counts), ``model`` (the :class:`TransferModel` and its
head, by input modality), ``freezing``, ``training`` (optimisers and steps),
``state`` (weights, optimiser state, native export), ``export`` (the raw ONNX graph), and for
``tl_setup`` ``placement`` (device, precision, the scope models are built in), ``collective``
(``torch.distributed``), ``replica`` (``DistributedDataParallel``) and ``amp`` (loss scaling).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from tlcore.builtins import DEFAULT_BACKBONE
from tlcore.plugins.backend import Backend

if TYPE_CHECKING:
    from tlcore.interfaces import BackboneInfo


class TorchBackend(Backend):
    """The ``torch`` backend: builtin, ``hf:`` (vision models and text encoders), ``file:``,
    ``torchvision:`` and ``timm:`` backbones or a user's own ``nn.Module`` (on images or
    vectors), trained as a :class:`~tlcore_torch.model.TransferModel`."""

    name = "torch"
    packages = ("torch",)
    install_hint = "pip install 'tlcore[torch]' -c constraints.txt"
    default_backbone = DEFAULT_BACKBONE
    description = (
        "PyTorch: builtin, hf:, file:, torchvision:, timm: backbones or your own nn.Module"
    )
    implementation = "tlcore_torch.methods"

    def backbones(self) -> Iterable[BackboneInfo]:
        """The torch backbones (optional packages marked when missing), without torch."""
        from tlcore_torch.catalogue import backbone_infos

        return backbone_infos()

    def owns_network(self, network: Any) -> bool:
        """A ``torch.nn.Module``."""
        import torch

        return isinstance(network, torch.nn.Module)

    def owns_model(self, model: Any) -> bool:
        """A :class:`~tlcore_torch.model.TransferModel`."""
        from tlcore_torch.model import TransferModel

        return isinstance(model, TransferModel)

    def owns_optimizer(self, optimizer: Any) -> bool:
        """A ``torch.optim.Optimizer``."""
        import torch

        return isinstance(optimizer, torch.optim.Optimizer)


backend = TorchBackend()
"""The instance the ``tlcore`` entry point ``torch`` registers."""
