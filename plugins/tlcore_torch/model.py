"""The model the torch backend trains and exports: preprocessing, backbone, pooling, head.

:class:`TransferModel` takes uint8 RGB NHWC images, exactly what the ONNX bundle takes, so
preprocessing lives inside the model (as non-persistent buffers, plain tensor ops that export
to ONNX) and never drifts between training and serving.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from tlcore.errors import TlcoreError
from tlcore.interfaces import Backbone, Preprocessing
from tlcore.recipe import HeadSpec
from tlcore.recipe.choices import builtin
from tlcore_torch.blocks import find_blocks, submodule
from tlcore_torch.placement import place

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


class Pool(nn.Module):
    """Turn backbone output into one vector per sample.

    ``avg`` / ``max`` reduce a feature map ``(N, C, H, W)`` over its spatial dimensions and
    tokens ``(N, T, D)`` over the tokens; ``flatten`` keeps everything. Already flat
    ``(N, D)`` output passes through.
    """

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode  # avg, max or flatten: attach_head answers only for these

    def forward(self, x: Tensor) -> Tensor:
        """Pool ``x`` to ``(N, features)``."""
        if x.dim() > 2 and self.mode != "flatten":
            dims = (2, 3) if x.dim() == 4 else (1,)
            x = x.mean(dim=dims) if self.mode == "avg" else x.amax(dim=dims)
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
    """A backbone with its preprocessing and a new head: uint8 NHWC images in, logits out.

    Submodules: ``backbone`` (the loaded network), ``pool`` and ``head``. ``blocks`` names the
    backbone's blocks (relative to it) for freezing. Modules listed by the freeze policy stay
    in inference mode across :meth:`train` calls (frozen BatchNorm statistics).
    """

    def __init__(
        self,
        backbone: nn.Module,
        preprocessing: Preprocessing,
        head: HeadSpec,
        num_classes: int,
        blocks: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.pool = Pool(head.pooling)
        self.preprocessing = preprocessing
        self.blocks = tuple(blocks)
        self.bgr = preprocessing.channel_order.upper() == "BGR"
        self._inference_modules: tuple[str, ...] = ()
        gain, offset = preprocessing.affine()
        self.register_buffer("input_gain", torch.tensor(gain), persistent=False)
        self.register_buffer("input_offset", torch.tensor(offset), persistent=False)
        self.num_features = self._probe_width()
        self.head = build_head(self.num_features, head, num_classes)
        self.train()  # throughout, as a new nn.Module (a loaded backbone may come in eval mode)

    def preprocess(self, images: Tensor) -> Tensor:
        """uint8 RGB NHWC → the backbone's normalised float NCHW input (the multiply-add of
        :meth:`~tlcore.interfaces.Preprocessing.affine`, with ``(W, 3)`` constants)."""
        x = images[..., [2, 1, 0]] if self.bgr else images
        width = x.shape[2]
        x = x.float() * self.input_gain.expand(width, 3) + self.input_offset.expand(width, 3)
        return x.permute(0, 3, 1, 2)

    def features(self, images: Tensor) -> Tensor:
        """Preprocessing, backbone and pooling: ``(N, num_features)``."""
        return self.pool(backbone_output(self.backbone(self.preprocess(images))))

    def classify(self, features: Tensor) -> Tensor:
        """The head alone, on pooled features: logits ``(N, num_classes)``."""
        return self.head(features)

    def forward(self, images: Tensor) -> Tensor:
        """Logits for uint8 RGB NHWC images."""
        return self.classify(self.features(images))

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

    def _probe_width(self) -> int:
        """Run one dummy image through the backbone to learn the pooled feature width."""
        modes = [(m, m.training) for m in self.modules()]
        self.eval()
        height, width = self.preprocessing.size
        try:
            with torch.no_grad():
                dummy = torch.zeros(1, height, width, 3, dtype=torch.uint8)
                out = self.features(dummy)
        except Exception as exc:  # any framework error here means the input does not fit
            raise TlcoreError.caused_by(
                f"the backbone cannot run on {height}x{width} RGB images", exc,
                "check backbone.input_size, and that the network takes (N, 3, H, W) input",
            ) from exc
        finally:
            for module, mode in modes:
                module.training = mode
        if out.dim() != 2 or out.shape[0] != 1:
            raise TlcoreError(
                f"the backbone's pooled output has shape {tuple(out.shape)}",
                "a backbone must return (N, C, H, W), (N, T, D) or (N, D)",
            )
        return int(out.shape[1])


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

    Built inside a setup's scope (``collective.scope()``), the model goes to the setup's
    device and keeps the setup as ``model.setup`` (its precision and processes)."""
    if head.pooling not in builtin("pooling"):
        return None
    blocks = backbone.extra.get("blocks")
    if blocks is None:
        blocks = find_blocks(backbone.network)
    model = TransferModel(backbone.network, backbone.preprocessing, head, num_classes, blocks)
    place(model)
    return model
