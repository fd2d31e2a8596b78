"""The training flags of a user's own ``torch.nn.Module``, recorded before a run and put back
after it: freezing sets ``requires_grad`` and training switches submodules between train and
eval mode (BatchNorm kept in inference), which the user did not ask to change."""

from __future__ import annotations

from collections.abc import Callable

import torch


def network_flags(network: torch.nn.Module) -> Callable[[], None]:
    """Record every parameter's ``requires_grad`` and every submodule's ``training``; the
    function returned sets them back. Objects, not names, are recorded: a module reachable
    under two names is one module."""
    grads = [(param, param.requires_grad) for param in network.parameters()]
    modes = [(module, module.training) for module in network.modules()]

    def restore() -> None:
        for param, wanted in grads:
            param.requires_grad_(wanted)
        for module, training in modes:
            module.training = training  # not .train(): that would also set the children

    return restore
