"""What the torch backend can load, described without importing torch (for ``tl backbones``)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

from tlcore.builtins import builtin_infos
from tlcore.interfaces import BackboneInfo

BUILTIN_KIND = "builtin"
HF_KIND = "hf"
FILE_KIND = "file"
TORCHVISION_KIND = "torchvision"
TIMM_KIND = "timm"
KINDS = (BUILTIN_KIND, HF_KIND, FILE_KIND, TORCHVISION_KIND, TIMM_KIND)
MLP_NAME = "mlp"
"""``builtin:mlp`` (:mod:`tlcore_torch.vectors`), the torch backend's own built-in."""
MLP_DESCRIPTION = (
    "Linear+ReLU blocks for numeric vectors (backbone.widths, default 256/128; the vector "
    "length from the data); random init (no published weights)"
)


def installed(package: str) -> bool:
    """True when ``package`` can be imported, checked without importing it."""
    return importlib.util.find_spec(package) is not None


def backbone_infos() -> Iterator[BackboneInfo]:
    """One entry per built-in backbone and one example entry per open-ended source kind."""
    yield from builtin_infos()
    yield BackboneInfo(f"{BUILTIN_KIND}:{MLP_NAME}", None, None, MLP_DESCRIPTION)
    hf = (
        "Hugging Face transformers model: a save_pretrained folder or a hub id; vision models "
        "take images, text encoders (BERT, DistilBERT, RoBERTa, MiniLM; folder with "
        "tokenizer.json) take texts"
    )
    yield BackboneInfo(f"{HF_KIND}:<dir or hub id>", None, None, _mark(hf, "transformers"))
    yield BackboneInfo(
        f"{FILE_KIND}:<torchscript.pt>",
        None,
        None,
        "a TorchScript file; needs input_size (a run's native/model.pt is a state dict: "
        "pass it as --weights)",
    )
    tv = "torchvision.models.get_model(name), classifier removed"
    yield BackboneInfo(f"{TORCHVISION_KIND}:<name>", 224, None, _mark(tv, "torchvision"))
    timm = "timm.create_model(name, num_classes=0)"
    yield BackboneInfo(f"{TIMM_KIND}:<name>", 224, None, _mark(timm, "timm"))


def _mark(description: str, package: str) -> str:
    return description if installed(package) else f"{description} ({package} not installed)"
