"""Load a backbone from each source kind the torch backend knows.

``builtin:<name>``, ``hf:<dir or hub id>``, ``file:<torchscript.pt>``, ``torchvision:<name>``,
``timm:<name>``, or a user's own ``nn.Module`` (``spec.model``). An image loader returns a
network that maps a normalised float NCHW batch to features: a feature map ``(N, C, H, W)``,
tokens ``(N, T, D)`` or vectors ``(N, D)``. A text model's folder (``hf:``,
:mod:`tlcore_torch.text`) gives an encoder of token ids, and ``builtin:mlp`` or a user's
network built for vectors (``spec.input_features`` set, :mod:`tlcore_torch.vectors`) takes
standardised float32 vectors; their loaders say so with ``extra["inputs"]``.

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
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tlcore.builtins import BUILTIN_BACKBONES, DEFAULT_BACKBONE
from tlcore.errors import TlcoreError
from tlcore.interfaces import Backbone, Preprocessing
from tlcore.recipe import BackboneSpec
from tlcore.sources import Loader, load_source, lookup, wants_pretrained, weights_file
from tlcore_torch import catalogue
from tlcore_torch.blocks import find_blocks
from tlcore_torch.builtin import BUILDERS
from tlcore_torch.hf import HFBackbone, load_hf
from tlcore_torch.loading import IMAGENET, Loaded, optional, three
from tlcore_torch.state import load_weights_file
from tlcore_torch.vectors import load_mlp, vector_inputs

DEFAULT_SOURCE = DEFAULT_BACKBONE


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
    if backbone.inputs is None:  # an image backbone; a text one's input_size counts tokens
        backbone.preprocessing = backbone.preprocessing.with_size(spec.input_size)
    if isinstance(backbone.network, HFBackbone):
        backbone.network.set_input_size(backbone.preprocessing.size)
    backbone.extra.setdefault("blocks", find_blocks(backbone.network))
    return backbone


# --- builtin --------------------------------------------------------------------------------


def _builtin(name: str, spec: BackboneSpec, pretrained: bool) -> Loaded:
    if name == catalogue.MLP_NAME:
        return load_mlp(spec, pretrained)
    build = lookup(catalogue.BUILTIN_KIND, name, {**BUILDERS, catalogue.MLP_NAME: None})
    builtin = BUILTIN_BACKBONES[name]
    # simple_cnn ignores ``pretrained``; EfficientNet-Lite without published weights refuses it.
    network = build(pretrained)
    return network, builtin.preprocessing, {"pretrained": pretrained and builtin.published}


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
    torchvision = optional("torchvision", "pip install torchvision")
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
    timm = optional("timm", "pip install timm")
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
        three(cfg.get("mean", IMAGENET.mean)),
        three(cfg.get("std", IMAGENET.std)),
    )
    return model, preprocessing, {}


# --- user module ----------------------------------------------------------------------------


def _user_module(spec: BackboneSpec) -> Backbone | None:
    """A user's own ``nn.Module``; ``None`` for objects of other frameworks.

    With ``spec.input_features`` set it takes vectors of that length
    (:func:`~tlcore_torch.vectors.vector_inputs`). Otherwise it takes images: its
    preprocessing is its ``tlcore_preprocessing`` attribute when it has one (a
    :class:`~tlcore.interfaces.Preprocessing`), else ImageNet's; ``spec.input_size`` is
    required. ``weights=none`` re-initialises every submodule that has ``reset_parameters``.
    """
    network = spec.model
    if not isinstance(network, nn.Module):
        return None
    features = spec.input_features
    own = getattr(network, "tlcore_preprocessing", None)
    if features is None and spec.input_size is None and not isinstance(own, Preprocessing):
        raise TlcoreError(
            f"backbone.input_size is needed for the user network {type(network).__name__}",
            "pass input_size=<pixels> with the model",
        )
    preprocessing = (own if isinstance(own, Preprocessing) else IMAGENET)
    if features is None:
        preprocessing = preprocessing.with_size(spec.input_size)
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
    inputs = vector_inputs(features) if features is not None else None
    return Backbone(network, preprocessing, f"user:{type(network).__name__}", extra, inputs=inputs)


# --- helpers --------------------------------------------------------------------------------


def _some(known: list[str], name: str) -> str:
    close = difflib.get_close_matches(name, known, n=5)
    return ", ".join(close or known[:10]) + (", ..." if len(known) > 10 else "")


LOADERS: dict[str, Loader] = {
    catalogue.BUILTIN_KIND: _builtin,
    catalogue.HF_KIND: load_hf,
    catalogue.FILE_KIND: _file,
    catalogue.TORCHVISION_KIND: _torchvision,
    catalogue.TIMM_KIND: _timm,
}
