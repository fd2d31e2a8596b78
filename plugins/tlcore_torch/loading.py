"""What the backbone loaders of :mod:`tlcore_torch.sources` share: the triple a loader returns,
ImageNet's normalisation, and importing an optional package with advice when it is missing."""

from __future__ import annotations

import importlib
import inspect
from types import ModuleType
from typing import Any

from torch import nn

from tlcore.errors import TlcoreError
from tlcore.interfaces import Preprocessing

IMAGENET = Preprocessing()
"""The normalisation of sources that record none (torchvision, TorchScript files); also the
placeholder image preprocessing of text and vector backbones, which never use it."""

Loaded = tuple[nn.Module, Preprocessing, dict[str, Any]]
"""``(network, preprocessing, extra)``, as :data:`tlcore.sources.Loader` returns it."""

TORCH_INSTALL = "pip install 'tlcore[torch]' -c constraints.txt"


def optional(package: str, install: str) -> ModuleType:
    """Import an optional package, or say how to install it.

    Raises:
        TlcoreError: ``package`` cannot be imported; the hint is ``install``.
    """
    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise TlcoreError(
            f"the {package} package is needed for this backbone but cannot be imported ({exc})",
            install,
        ) from None


def three(values: Any) -> tuple[float, float, float]:
    """Three per-channel values from a list of three, or one value repeated."""
    items = [float(v) for v in values] if isinstance(values, list | tuple) else [float(values)]
    if len(items) == 1:
        items *= 3
    return (items[0], items[1], items[2])


def hf_model_kwargs(config: Any) -> dict[str, Any]:
    """Leave out the pooler (unused: tlcore pools itself) when the model class allows it."""
    try:
        from transformers.models.auto.modeling_auto import MODEL_MAPPING

        cls = MODEL_MAPPING[type(config)]
    except (ImportError, KeyError, ValueError):
        return {}
    params = inspect.signature(cls.__init__).parameters
    return {"add_pooling_layer": False} if "add_pooling_layer" in params else {}
