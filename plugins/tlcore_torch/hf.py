"""``hf:<dir or hub id>`` backbones: Hugging Face vision models, and the dispatch of text models
to :mod:`tlcore_torch.text`.

A vision model (ResNet, ViT, ConvNeXt, ...) becomes an :class:`HFBackbone` taking normalised
NCHW pixels; its normalisation and size come from the saved image processor config, else
ImageNet's and the config's. A folder holding a text model (a tokenizer and no image config,
:func:`tlcore.textmodel.is_text_model`) becomes a text encoder taking token ids.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import Tensor, nn

from tlcore.errors import TlcoreError
from tlcore.interfaces import Preprocessing
from tlcore.plugins.calls import is_out_of_memory
from tlcore.recipe import BackboneSpec
from tlcore_torch.loading import (
    IMAGENET,
    TORCH_INSTALL,
    Loaded,
    hf_model_kwargs,
    optional,
    three,
)
from tlcore_torch.text import load_text_encoder, text_folder


class HFBackbone(nn.Module):
    """A Hugging Face vision model whose forward returns ``last_hidden_state`` as a tensor.

    ResNet-like models give ``(N, C, H, W)``, ViT-like models ``(N, T, D)``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.interpolate = False

    def set_input_size(self, size: tuple[int, int]) -> None:
        """Interpolate position embeddings when ``size`` differs from the model's own."""
        own = getattr(self.model.config, "image_size", None)
        own_size = tuple(own) if isinstance(own, list | tuple) else (own, own)
        accepts = "interpolate_pos_encoding" in inspect.signature(self.model.forward).parameters
        self.interpolate = own is not None and accepts and tuple(size) != own_size

    def forward(self, pixel_values: Tensor) -> Tensor:
        """Hidden states of a normalised NCHW batch."""
        extra = {"interpolate_pos_encoding": True} if self.interpolate else {}
        out = self.model(pixel_values=pixel_values, **extra)
        hidden = getattr(out, "last_hidden_state", None)
        return hidden if hidden is not None else out[0]


def load_hf(name: str, spec: BackboneSpec, pretrained: bool) -> Loaded:
    """``hf:<dir or hub id>``: a text model's folder as a :class:`~tlcore_torch.text.TextEncoder`
    (:func:`tlcore_torch.text.load_text_encoder`), any other model as an :class:`HFBackbone`
    with the normalisation of its saved image processor.

    Raises:
        TlcoreError: the folder, its config or its weights cannot be loaded.
    """
    transformers = optional("transformers", TORCH_INSTALL)
    folder = text_folder(name)
    if folder is not None:
        return load_text_encoder(transformers, folder, spec, pretrained)
    local = Path(name).expanduser()
    if not local.is_dir() and (local.exists() or name.startswith((".", "/", "~"))):
        raise TlcoreError(
            f"Hugging Face model folder not found: {name}"
            + (" (it is a file)" if local.exists() else ""),
            "give a folder written by save_pretrained (with config.json), or a hub id",
        )
    where = str(local) if local.is_dir() else name
    hint = (
        "a folder needs config.json and weights from save_pretrained; a hub id needs a "
        "connection or the Hugging Face cache (save_pretrained once online, then use the folder)"
    )
    config_file = local / "config.json" if local.is_dir() else None
    try:
        config = transformers.AutoConfig.from_pretrained(where, trust_remote_code=False)
    except Exception as exc:  # transformers raises many types for a missing or malformed config
        if config_file is None or not config_file.is_file():
            what = f"cannot load Hugging Face model {name!r}"
            raise TlcoreError.caused_by(what, exc, hint) from None
        raise TlcoreError.caused_by(
            f"cannot load Hugging Face model {name!r}: {config_file} is not a usable config",
            exc, "config.json must be the JSON file save_pretrained wrote, with a model_type "
            "this transformers knows; write it again with save_pretrained",
        ) from None
    kwargs = {**hf_model_kwargs(config), "trust_remote_code": False}
    try:
        if pretrained:
            model = transformers.AutoModel.from_pretrained(where, config=config, **kwargs)
        else:
            model = transformers.AutoModel.from_config(config, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise TlcoreError.caused_by(f"cannot load Hugging Face model {name!r}", exc, hint) from None
    except (TypeError, RuntimeError, AttributeError) as exc:  # values the model cannot be built of
        if is_out_of_memory(exc):
            raise  # the facade names the sizes to lower
        raise TlcoreError.caused_by(
            f"cannot build the Hugging Face model that {config_file or name} describes", exc,
            "the configuration holds values this architecture cannot take (a negative size, "
            "a wrong type): write it again with save_pretrained",
        ) from None
    return HFBackbone(model), _hf_preprocessing(transformers, where, config), {}


def _hf_preprocessing(transformers: ModuleType, where: str, config: Any) -> Preprocessing:
    """Normalisation and size from the saved image processor, else ImageNet's and the config's."""
    try:
        mixin = transformers.image_processing_utils.ImageProcessingMixin
        data, _ = mixin.get_image_processor_dict(where)
    except (OSError, ValueError, AttributeError):
        data = {}
    mean, std = data.get("image_mean", IMAGENET.mean), data.get("image_std", IMAGENET.std)
    if data.get("do_normalize") is False:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    scale = float(data.get("rescale_factor", 1 / 255)) if data.get("do_rescale", True) else 1.0
    size_field = data.get("crop_size") if data.get("do_center_crop") else data.get("size")
    size = _hf_size(size_field) or _hf_size(getattr(config, "image_size", None)) or (224, 224)
    return Preprocessing(size, three(mean), three(std), scale)


def _hf_size(value: Any) -> tuple[int, int] | None:
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, list | tuple) and len(value) == 2:
        return (int(value[0]), int(value[1]))
    if isinstance(value, dict):
        if "height" in value and "width" in value:
            return (int(value["height"]), int(value["width"]))
        edge = value.get("shortest_edge")
        if edge:
            return (int(edge), int(edge))
    return None
