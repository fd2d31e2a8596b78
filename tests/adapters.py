"""The built-in backends' native side for the conformance suite: a user's own network.

A third-party backend writes the same few lines for its framework (see
:class:`tlcore.testing.BackendAdapter`). The backend-specific test modules use them too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tlcore.testing import BackendAdapter


class TorchAdapter(BackendAdapter):
    """A user's ``torch.nn.Module``, saved as a state dict."""

    def user_network(self, outputs: int) -> Any:
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.hidden = nn.Linear(3 * 8 * 8, 16)
                self.out = nn.Linear(16, outputs)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.out(torch.relu(self.hidden(x.flatten(1))))

        return Net()

    def save_weights(self, network: Any, folder: Path) -> Path:
        import torch

        path = folder / "net.pt"
        torch.save(network.state_dict(), path)
        return path


class KerasAdapter(BackendAdapter):
    """A user's functional ``keras.Model``, saved with ``save_weights``."""

    def user_network(self, outputs: int, size: int = 8) -> Any:
        import keras

        inputs = keras.Input((size, size, 3))
        x = keras.layers.Flatten()(inputs)
        x = keras.layers.Dense(16, activation="relu", name="hidden")(x)
        return keras.Model(inputs, keras.layers.Dense(outputs, name="out")(x))

    def save_weights(self, network: Any, folder: Path) -> Path:
        path = folder / "net.weights.h5"
        network.save_weights(path)
        return path


ADAPTERS: dict[str, BackendAdapter] = {"torch": TorchAdapter(), "keras": KerasAdapter()}
