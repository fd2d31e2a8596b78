"""Load a backbone from each source kind the torch backend knows.

``builtin:<name>``, ``hf:<dir or hub id>``, ``file:<torchscript.pt>``, ``torchvision:<name>``,
``timm:<name>``, or a user's own ``nn.Module`` (``spec.model``). Every loader returns a network
that maps a normalised float NCHW batch to features: a feature map ``(N, C, H, W)``, tokens
``(N, T, D)`` or vectors ``(N, D)``.

``spec.weights``: ``pretrained`` / ``imagenet`` loads the source's own weights (builtin
backbones have none: random init), ``none`` builds the same architecture randomly initialised,
and a path builds it randomly initialised and then loads that file where names and shapes fit
(the :class:`~tlcore.interfaces.LoadReport` goes into ``Backbone.extra["weights_report"]``).

Normalisation comes from the source where it records one (a Hugging Face image processor
config, timm's ``pretrained_cfg``, builtin definitions, a user module's
``tlcore_preprocessing`` attribute); otherwise ImageNet's (torchvision, TorchScript files).
``Backbone.extra["blocks"]`` lists the blocks found by :mod:`tlcore_torch.blocks`.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from tlcore.builtins import BUILTIN_BACKBONES, DEFAULT_BACKBONE
from tlcore.errors import TlcoreError
from tlcore.interfaces import Backbone, Preprocessing
from tlcore.plugins.calls import is_out_of_memory
from tlcore.recipe import BackboneSpec
from tlcore.sources import Loader, load_source, lookup, wants_pretrained, weights_file
from tlcore_torch import catalogue
from tlcore_torch.blocks import find_blocks
from tlcore_torch.builtin import BUILDERS
from tlcore_torch.state import load_weights_file

IMAGENET = Preprocessing()
DEFAULT_SOURCE = DEFAULT_BACKBONE

Loaded = tuple[nn.Module, Preprocessing, dict[str, Any]]


def load_backbone(spec: BackboneSpec) -> Backbone | None:
    """Load the backbone ``spec`` names, or ``None`` when its source kind is not torch's.

    Raises:
        TlcoreError: the source is the torch backend's but cannot be loaded.
    """
    if spec.source is None and spec.model is not None:
        return _user_module(spec)
    backbone = load_source(spec, DEFAULT_SOURCE, LOADERS, load_weights_file)
    if backbone is None:
        return None
    backbone.preprocessing = backbone.preprocessing.with_size(spec.input_size)
    if isinstance(backbone.network, HFBackbone):
        backbone.network.set_input_size(backbone.preprocessing.size)
    backbone.extra.setdefault("blocks", find_blocks(backbone.network))
    return backbone


# --- builtin --------------------------------------------------------------------------------


def _builtin(name: str, spec: BackboneSpec, pretrained: bool) -> Loaded:
    build = lookup(catalogue.BUILTIN_KIND, name, BUILDERS)
    builtin = BUILTIN_BACKBONES[name]
    # simple_cnn ignores ``pretrained``; EfficientNet-Lite without published weights refuses it.
    network = build(pretrained)
    return network, builtin.preprocessing, {"pretrained": pretrained and builtin.published}


# --- Hugging Face ---------------------------------------------------------------------------


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


def _hf(name: str, spec: BackboneSpec, pretrained: bool) -> Loaded:
    transformers = _optional("transformers", "pip install 'tlcore[torch]' -c constraints.txt")
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
    kwargs = {**_hf_model_kwargs(config), "trust_remote_code": False}
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


def _hf_model_kwargs(config: Any) -> dict[str, Any]:
    """Leave out the pooler (unused: tlcore pools itself) when the model class allows it."""
    try:
        from transformers.models.auto.modeling_auto import MODEL_MAPPING

        cls = MODEL_MAPPING[type(config)]
    except (ImportError, KeyError, ValueError):
        return {}
    params = inspect.signature(cls.__init__).parameters
    return {"add_pooling_layer": False} if "add_pooling_layer" in params else {}


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
    return Preprocessing(size, _three(mean), _three(std), scale)


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


def _three(values: Any) -> tuple[float, float, float]:
    items = [float(v) for v in values] if isinstance(values, list | tuple) else [float(values)]
    if len(items) == 1:
        items *= 3
    return (items[0], items[1], items[2])


# --- TorchScript file -----------------------------------------------------------------------


def _file(name: str, spec: BackboneSpec, pretrained: bool) -> Loaded:
    path = Path(name).expanduser()
    if not path.is_file():
        raise TlcoreError(f"TorchScript file not found: {path}", "give the path of a .pt file")
    _refuse_weights_only(path, name)
    if spec.input_size is None:
        raise TlcoreError(
            f"backbone file:{name} needs backbone.input_size",
            "a TorchScript file does not record its input size; set e.g. input_size: 224",
        )
    if spec.weights.lower() == "none":
        raise TlcoreError(
            "backbone.weights 'none' cannot apply to a TorchScript file (it cannot be re-built)",
            "use weights: pretrained (the file's own), or a weights file path",
        )
    try:
        network = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError) as exc:
        raise TlcoreError(
            f"{path} is not a TorchScript file: {str(exc).splitlines()[0]}",
            "save it with torch.jit.save(torch.jit.script(net), path); for a state dict, "
            "set backbone.weights to its path and choose an architecture as source",
        ) from None
    return network, IMAGENET, {"warnings": [TORCHSCRIPT_WARNING.format(path=path)]}


TORCHSCRIPT_WARNING = (
    "{path} is TorchScript: loading it and running it runs the code inside it, which no "
    "loader can make safe; use only files you made or trust (see docs/security.md)"
)


def _refuse_weights_only(path: Path, name: str) -> None:
    """Refuse a file of weights alone (a state dict, as in a tlcore run's ``native/model.pt``,
    or a Keras model) before anything asks for an input size it would not need.

    ``torch.save`` and ``torch.jit.save`` both write a zip; only TorchScript's holds
    ``constants.pkl`` (its code), so the member names tell them apart without unpickling.

    Raises:
        TlcoreError: ``path`` holds weights only, or is a Keras file.
    """
    if path.suffix == ".keras":
        raise TlcoreError(
            f"file:{name} is a Keras model; the torch backend takes TorchScript files",
            "train it with --backend keras",
        )
    weights_only = path.suffix in (".npz", ".safetensors")
    if not weights_only and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            members = {member.rsplit("/", 1)[-1] for member in archive.namelist()}
        weights_only = "data.pkl" in members and "constants.pkl" not in members
    if weights_only:
        raise TlcoreError(
            f"file:{name} holds weights only (a state dict, as a run's native/model.pt does), "
            "not a TorchScript file",
            f"pass it as the weights of the architecture it was trained on: --backbone "
            f"<that source, e.g. builtin:simple_cnn> --weights {path}",
        )


# --- torchvision / timm ---------------------------------------------------------------------

_CLASSIFIER_NAMES = ("fc", "classifier", "heads", "head")


def _drop_classifier(model: nn.Module) -> None:
    """Replace the final classifier with ``Identity`` so the model returns pooled features."""
    for attr in _CLASSIFIER_NAMES:
        if isinstance(getattr(model, attr, None), nn.Module):
            setattr(model, attr, nn.Identity())
            return


def _torchvision(name: str, spec: BackboneSpec, pretrained: bool) -> Loaded:
    torchvision = _optional("torchvision", "pip install torchvision")
    models = torchvision.models
    known = models.list_models()
    if name not in known:
        raise TlcoreError(f"unknown torchvision model {name!r}", "known: " + _some(known, name))
    try:
        model = models.get_model(name, weights="DEFAULT" if pretrained else None)
    except (OSError, RuntimeError, ValueError) as exc:  # e.g. offline with an empty cache
        raise TlcoreError(
            f"cannot load torchvision:{name} weights: {exc}",
            "download them once online (they are cached under $TORCH_HOME), or use weights: none",
        ) from None
    _drop_classifier(model)
    size = 224
    try:
        crop = models.get_model_weights(name).DEFAULT.transforms().crop_size
        size = int(crop[0])
    except (AttributeError, ValueError, IndexError, TypeError):
        pass
    return model, IMAGENET.with_size(size), {}


def _timm(name: str, spec: BackboneSpec, pretrained: bool) -> Loaded:
    timm = _optional("timm", "pip install timm")
    if not timm.is_model(name):
        raise TlcoreError(
            f"unknown timm model {name!r}", "known: " + _some(timm.list_models(), name)
        )
    try:
        model = timm.create_model(name, pretrained=pretrained, num_classes=0)
    except (OSError, RuntimeError, ValueError) as exc:
        raise TlcoreError(
            f"cannot load timm:{name} weights: {exc}",
            "download them once online (Hugging Face cache), or use weights: none",
        ) from None
    cfg = getattr(model, "pretrained_cfg", None) or {}
    input_size = cfg.get("input_size", (3, 224, 224))
    preprocessing = Preprocessing(
        (int(input_size[1]), int(input_size[2])),
        _three(cfg.get("mean", IMAGENET.mean)),
        _three(cfg.get("std", IMAGENET.std)),
    )
    return model, preprocessing, {}


# --- user module ----------------------------------------------------------------------------


def _user_module(spec: BackboneSpec) -> Backbone | None:
    """A user's own ``nn.Module``; ``None`` for objects of other frameworks.

    Its preprocessing is its ``tlcore_preprocessing`` attribute when it has one (a
    :class:`~tlcore.interfaces.Preprocessing`), else ImageNet's; ``spec.input_size`` is required.
    ``weights=none`` re-initialises every submodule that has ``reset_parameters``.
    """
    network = spec.model
    if not isinstance(network, nn.Module):
        return None
    own = getattr(network, "tlcore_preprocessing", None)
    if spec.input_size is None and not isinstance(own, Preprocessing):
        raise TlcoreError(
            f"backbone.input_size is needed for the user network {type(network).__name__}",
            "pass input_size=<pixels> with the model",
        )
    preprocessing = (own if isinstance(own, Preprocessing) else IMAGENET).with_size(spec.input_size)
    extra: dict[str, Any] = {}
    path = weights_file(spec.weights)
    if path is not None:
        extra["weights_report"] = load_weights_file(network, path)
    elif not wants_pretrained(spec.weights):
        for module in network.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    extra["blocks"] = find_blocks(network)
    return Backbone(network, preprocessing, f"user:{type(network).__name__}", extra)


# --- helpers --------------------------------------------------------------------------------


def _optional(package: str, install: str) -> ModuleType:
    """Import an optional package, or say how to install it."""
    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise TlcoreError(
            f"the {package} package is needed for this backbone but cannot be imported ({exc})",
            install,
        ) from None


def _some(known: list[str], name: str) -> str:
    close = difflib.get_close_matches(name, known, n=5)
    return ", ".join(close or known[:10]) + (", ..." if len(known) > 10 else "")


LOADERS: dict[str, Loader] = {
    catalogue.BUILTIN_KIND: _builtin,
    catalogue.HF_KIND: _hf,
    catalogue.FILE_KIND: _file,
    catalogue.TORCHVISION_KIND: _torchvision,
    catalogue.TIMM_KIND: _timm,
}
