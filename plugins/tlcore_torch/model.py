"""The model the torch backend trains and exports: preprocessing, backbone, pooling, head.

:class:`TransferModel` takes exactly what the ONNX bundle takes, as its input spec says
(:class:`~tlcore.interfaces.InputSpec`): uint8 RGB NHWC images, int64 token ids or float32
vectors. Preprocessing lives inside the model (plain tensor ops that export to ONNX) and never
drifts between training and serving: image normalisation as non-persistent buffers, vector
standardisation as persistent ones (statistics of the training data, which checkpoints carry),
the attention mask of token ids derived from the padding id (:mod:`tlcore_torch.text`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from tlcore.classifier import KEEP, removes_layer
from tlcore.errors import TlcoreError
from tlcore.interfaces import (
    Backbone,
    InputSpec,
    Preprocessing,
    TextPreprocessing,
    VectorPreprocessing,
)
from tlcore.recipe import HeadSpec
from tlcore.recipe.choices import builtin
from tlcore_torch.blocks import find_blocks, submodule
from tlcore_torch.classifier import cut_classifier, keep_classifier
from tlcore_torch.placement import place
from tlcore_torch.text import TextPool, dummy_ids, text_pooling

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


class PoolingError(TlcoreError):
    """A pooling that cannot apply to what the backbone returns (``cls`` of a feature map)."""


class Pool(nn.Module):
    """Turn image (or vector) backbone output into one vector per sample.

    ``avg`` (and its synonym ``mean``) / ``max`` reduce a feature map ``(N, C, H, W)`` over its
    spatial dimensions and tokens ``(N, T, D)`` over the tokens; ``cls`` takes the first token
    of ``(N, T, D)``; ``flatten`` keeps everything. Already flat ``(N, D)`` output passes
    through.
    """

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode  # a built-in pooling: attach_head answers only for these

    def forward(self, x: Tensor) -> Tensor:
        """Pool ``x`` to ``(N, features)``.

        Raises:
            PoolingError: ``cls`` of output that is not tokens ``(N, T, D)``.
        """
        if x.dim() > 2 and self.mode == "cls":
            if x.dim() != 3:
                raise PoolingError(
                    f"head.pooling 'cls' takes the first token of (N, T, D) tokens, but the "
                    f"backbone returns shape {tuple(x.shape)}",
                    "use pooling avg or max for a convolutional backbone",
                )
            x = x[:, 0]
        elif x.dim() > 2 and self.mode != "flatten":
            dims = (2, 3) if x.dim() == 4 else (1,)
            x = x.amax(dim=dims) if self.mode == "max" else x.mean(dim=dims)
        return x.flatten(1)

    def extra_repr(self) -> str:
        """Shown by ``print(model)``."""
        return self.mode


def build_head(in_features: int, spec: HeadSpec, num_classes: int) -> nn.Sequential:
    """Hidden ``Linear → activation → Dropout`` layers, then the classifier ``Linear``.

    Without hidden layers, ``spec.dropout`` is applied to the pooled features before the
    classifier; with them, after every hidden activation. The classifier is the last module.
    """
    layers: list[nn.Module] = []
    width = in_features
    for hidden in spec.hidden:
        layers += [nn.Linear(width, hidden), _ACTIVATIONS[spec.activation]()]
        if spec.dropout > 0:
            layers.append(nn.Dropout(spec.dropout))
        width = hidden
    if not spec.hidden and spec.dropout > 0:
        layers.append(nn.Dropout(spec.dropout))
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


class TransferModel(nn.Module):
    """A backbone with its preprocessing and a new head: the model's input (its
    :attr:`input_spec`: uint8 NHWC images, int64 token ids or float32 vectors) in, logits out.

    Submodules: ``backbone`` (the loaded network), ``pool`` and ``head``. ``blocks`` names the
    backbone's blocks (relative to it) for freezing. Modules listed by the freeze policy stay
    in inference mode across :meth:`train` calls (frozen BatchNorm statistics). A vector model
    also holds the buffers ``input_mean`` and ``input_std``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        preprocessing: Preprocessing,
        head: HeadSpec,
        num_classes: int,
        blocks: Sequence[str] = (),
        inputs: InputSpec | None = None,
        own_pooling: str | None = None,
    ) -> None:
        """``inputs``: what the model takes (``None``: images at ``preprocessing``'s size);
        ``own_pooling``: a text encoder's own pooling, which ``head.pooling`` ``avg`` means."""
        super().__init__()
        self.backbone = backbone
        self.input_spec = inputs if inputs is not None else InputSpec.image(preprocessing)
        self.modality = self.input_spec.modality
        if self.modality not in ("image", "text", "vector"):
            raise TlcoreError(
                f"the torch backend cannot build a model taking {self.modality} input",
                "use image, text or vector data",
            )
        text = self.modality == "text"
        self.pool: nn.Module = (
            TextPool(text_pooling(head.pooling, own_pooling)) if text else Pool(head.pooling)
        )
        self.preprocessing = preprocessing
        self.blocks = tuple(blocks)
        self.bgr = preprocessing.channel_order.upper() == "BGR"
        self._inference_modules: tuple[str, ...] = ()
        gain, offset = preprocessing.affine()
        self.register_buffer("input_gain", torch.tensor(gain), persistent=False)
        self.register_buffer("input_offset", torch.tensor(offset), persistent=False)
        prep = self.input_spec.preprocessing
        self.pad_id = prep.pad_id if isinstance(prep, TextPreprocessing) else 0
        if self.modality == "vector":
            self._standardisation(prep)
        self.num_features = self._probe_width()
        self.head = build_head(self.num_features, head, num_classes)
        self.train()  # throughout, as a new nn.Module (a loaded backbone may come in eval mode)

    def _standardisation(self, prep: object) -> None:
        """The buffers of ``(x - mean) / std``: persistent, so weights and checkpoints carry
        them; never trained (buffers are not parameters)."""
        features = self.input_spec.shape[0]
        if not isinstance(prep, VectorPreprocessing):
            prep = VectorPreprocessing.identity(features)
        if prep.features != features:
            raise TlcoreError(
                f"the vector statistics have {prep.features} features, the input {features}",
                "compute the statistics on the training vectors (VectorPreprocessing.of)",
            )
        self.register_buffer("input_mean", torch.tensor(prep.mean, dtype=torch.float32))
        self.register_buffer("input_std", torch.tensor(prep.std, dtype=torch.float32))

    def preprocess(self, x: Tensor) -> Tensor:
        """The backbone's input. Images: uint8 RGB NHWC → normalised float NCHW (the
        multiply-add of :meth:`~tlcore.interfaces.Preprocessing.affine`, with ``(W, 3)``
        constants). Vectors: standardised float32. Token ids pass through."""
        if self.modality == "vector":
            return (x.float() - self.input_mean) / self.input_std
        if self.modality == "text":
            return x
        x = x[..., [2, 1, 0]] if self.bgr else x
        width = x.shape[2]
        x = x.float() * self.input_gain.expand(width, 3) + self.input_offset.expand(width, 3)
        return x.permute(0, 3, 1, 2)

    def features(self, x: Tensor) -> Tensor:
        """Preprocessing, backbone and pooling: ``(N, num_features)``. A text encoder gets
        the ids and their attention mask (``ids != pad_id``), and pools over real tokens."""
        if self.modality == "text":
            mask = x != self.pad_id
            return self.pool(backbone_output(self.backbone(x, mask)), mask)
        return self.pool(backbone_output(self.backbone(self.preprocess(x))))

    def classify(self, features: Tensor) -> Tensor:
        """The head alone, on pooled features: logits ``(N, num_classes)``."""
        return self.head(features)

    def forward(self, x: Tensor) -> Tensor:
        """Logits for a batch of the model's input."""
        return self.classify(self.features(x))

    def keep_in_inference(self, module_names: Iterable[str]) -> None:
        """Keep these submodules in inference mode whenever the model trains (from now on)."""
        self._inference_modules = tuple(module_names)
        self.train(self.training)

    def train(self, mode: bool = True) -> TransferModel:
        """Set training mode, then put the modules the freeze policy froze back in eval mode."""
        super().train(mode)
        if mode:
            for name in self._inference_modules:
                submodule(self, name).eval()
        return self

    def dummy_input(self) -> Tensor:
        """One sample of the model's input, for probing: a black image, a short text,
        a vector of zeros."""
        if self.modality == "text":
            return dummy_ids(self.input_spec.shape[0], self.pad_id)
        if self.modality == "vector":
            return torch.zeros(1, self.input_spec.shape[0], dtype=torch.float32)
        height, width = self.preprocessing.size
        return torch.zeros(1, height, width, 3, dtype=torch.uint8)

    def _probe_width(self) -> int:
        """Run one dummy sample through the backbone to learn the pooled feature width."""
        modes = [(m, m.training) for m in self.modules()]
        self.eval()
        try:
            with torch.no_grad():
                out = self.features(self.dummy_input())
        except PoolingError:
            raise
        except Exception as exc:  # any framework error here means the input does not fit
            raise _misfit(self, exc) from exc
        finally:
            for module, mode in modes:
                module.training = mode
        if out.dim() != 2 or out.shape[0] != 1:
            raise TlcoreError(
                f"the backbone's pooled output has shape {tuple(out.shape)}",
                "a backbone must return (N, C, H, W), (N, T, D) or (N, D)",
            )
        return int(out.shape[1])


def _misfit(model: TransferModel, exc: Exception) -> TlcoreError:
    """The error for a backbone that cannot run on its dummy input."""
    if model.modality == "text":
        what = f"the text encoder cannot run on {model.input_spec.shape[0]} token ids"
        hint = "check backbone.input_size (tokens per text) against the model's positions"
    elif model.modality == "vector":
        what = f"the network cannot run on vectors of {model.input_spec.shape[0]} features"
        hint = "check backbone.input_features, and that the network takes (N, features) input"
    else:
        height, width = model.preprocessing.size
        what = f"the backbone cannot run on {height}x{width} RGB images"
        hint = "check backbone.input_size, and that the network takes (N, 3, H, W) input"
    return TlcoreError.caused_by(what, exc, hint)


def backbone_output(out: object) -> Tensor:
    """The features tensor of a backbone's output (a tensor, a tuple, or a model output)."""
    if isinstance(out, Tensor):
        return out
    hidden = getattr(out, "last_hidden_state", None)
    if isinstance(hidden, Tensor):
        return hidden
    if isinstance(out, tuple | list) and out and isinstance(out[0], Tensor):
        return out[0]
    raise TlcoreError(
        f"the backbone returned {type(out).__name__}, not a tensor",
        "a backbone's forward must return its feature map or hidden states",
    )


def attach_head(backbone: Backbone, head: HeadSpec, num_classes: int) -> TransferModel | None:
    """Build the :class:`TransferModel` for a loaded backbone; ``None`` for a pooling a plugin
    registered: that plugin's ``tl_attach_head`` builds the model.

    ``head.classifier`` ``replace`` / ``keep`` build it on a copy of the network without its
    last ``nn.Linear`` (:mod:`tlcore_torch.classifier`); ``keep`` starts the head from it.

    Built inside a setup's scope (``collective.scope()``), the model goes to the setup's
    device and keeps the setup as ``model.setup`` (its precision and processes)."""
    if head.pooling not in builtin("pooling"):
        return None
    network, blocks = backbone.network, backbone.extra.get("blocks")
    cut = None
    if removes_layer(head.classifier):
        cut = cut_classifier(backbone, head.classifier, num_classes)
        network, blocks = cut.network, cut.blocks
    if blocks is None:
        blocks = find_blocks(network)
    model = TransferModel(
        network, backbone.preprocessing, head, num_classes, blocks,
        inputs=backbone.input_spec, own_pooling=backbone.extra.get("pooling"),
    )
    if cut is not None and head.classifier == KEEP:
        keep_classifier(model.head, cut)
    place(model)
    return model
