"""What a backend author tells the conformance suite that the hooks cannot.

Almost everything the suite checks goes through the hooks and numpy. Only a *user's own
network* (``BackboneSpec(model=...)``) must be made in the backend's framework; a backend
that accepts one says how by subclassing :class:`BackendAdapter`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class BackendAdapter:
    """The native side of a backend, for the two suite tests that need a user's own network.

    Subclass it and override both methods; with the base class those tests are skipped,
    saying why. Hand it to the suite by overriding the ``tl_adapter`` fixture, or with
    ``--tlcore-adapter module:object`` on the command line.

    Example:
        >>> class TorchAdapter(BackendAdapter):
        ...     def user_network(self, outputs):
        ...         from torch import nn
        ...
        ...         class Net(nn.Module):
        ...             def __init__(self):
        ...                 super().__init__()
        ...                 self.hidden = nn.Linear(3 * 8 * 8, 16)
        ...                 self.out = nn.Linear(16, outputs)
        ...
        ...             def forward(self, x):
        ...                 return self.out(self.hidden(x.flatten(1)).relu())
        ...
        ...         return Net()
    """

    def user_network(self, outputs: int) -> Any:
        """A network as the framework's users write one, for 8x8 RGB inputs.

        It flattens its input, then a dense layer named ``hidden`` (16 units, ReLU), then a
        dense layer named ``out`` with ``outputs`` units. The suite passes it as
        ``BackboneSpec(model=...)`` and expects blocks ``("hidden", "out")``.
        """
        raise NotImplementedError

    def save_weights(self, network: Any, folder: Path) -> Path:
        """Save ``network``'s weights into ``folder`` as the framework's users do; the file.

        The suite loads this file with ``BackboneSpec(weights=<file>)`` into another network
        of the same design.
        """
        raise NotImplementedError

    def supports(self, method: str) -> bool:
        """Whether a subclass overrides ``method`` (the tests that need it run only then)."""
        return getattr(type(self), method) is not getattr(BackendAdapter, method)
