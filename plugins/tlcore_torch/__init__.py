"""PyTorch backend for tlcore: the hook implementations.

Importing this module imports neither torch nor transformers; each hook returns ``None`` for
another backend and imports the torch side (its submodules) only when called for ``torch``.
The work is done in small modules: ``sources`` (loading backbones), ``blocks`` (what
``last_n`` counts), ``model`` (the :class:`TransferModel` and its head), ``freezing``,
``training`` (optimisers and steps), ``state`` (weights, optimiser state, native export) and
``export`` (the raw ONNX graph).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlcore.builtins import DEFAULT_BACKBONE
from tlcore.hookspecs import hookimpl
from tlcore.interfaces import BackendInfo, Register

if TYPE_CHECKING:
    import numpy as np

    from tlcore.interfaces import Backbone, Batch, FreezeReport, LoadReport, StepState
    from tlcore.recipe import BackboneSpec, FreezeSpec, HeadSpec, StageSpec

BACKEND = "torch"


def _ours(backend: str, model: Any = None) -> bool:
    """True when the call is for the torch backend (and ``model`` is one of its models)."""
    if backend != BACKEND:
        return False
    if model is None:
        return True
    from tlcore_torch.model import TransferModel

    return isinstance(model, TransferModel)


@hookimpl
def tl_register_backends(register: Register) -> None:
    """Declare the ``torch`` backend, without importing torch."""
    register(
        BackendInfo(
            name=BACKEND,
            packages=("torch",),
            install_hint="pip install 'tlcore[torch]' -c constraints.txt",
            default_backbone=DEFAULT_BACKBONE,
            description="PyTorch: builtin, hf:, file:, torchvision:, timm: backbones "
            "or your own nn.Module",
        )
    )


@hookimpl
def tl_register_backbones(backend: str, register: Register) -> None:
    """List the torch backbones (optional packages marked when missing), without torch."""
    if backend != BACKEND:
        return
    from tlcore_torch.catalogue import backbone_infos

    for info in backbone_infos():
        register(info)


@hookimpl
def tl_load_backbone(backend: str, spec: BackboneSpec) -> Backbone | None:
    """Load ``builtin:``, ``hf:``, ``file:``, ``torchvision:``, ``timm:`` or a user nn.Module."""
    if backend != BACKEND:
        return None
    from tlcore_torch.sources import load_backbone

    return load_backbone(spec)


@hookimpl
def tl_attach_head(backend: str, backbone: Backbone, head: HeadSpec, num_classes: int) -> Any:
    """Wrap a torch backbone into a ``TransferModel`` (preprocessing, pooling, new head)."""
    if backend != BACKEND:
        return None
    import torch

    if not isinstance(backbone.network, torch.nn.Module):
        return None
    from tlcore_torch.model import attach_head

    return attach_head(backbone, head, num_classes)


@hookimpl
def tl_freeze(backend: str, model: Any, policy: FreezeSpec) -> FreezeReport | None:
    """Set what trains in the backbone and which BatchNorm layers stay in inference mode."""
    if not _ours(backend, model):
        return None
    from tlcore_torch.freezing import apply_freeze

    return apply_freeze(model, policy)


@hookimpl
def tl_make_optimizer(backend: str, model: Any, stage: StageSpec) -> Any:
    """AdamW, Adam, SGD or RMSprop over the trainable parameters."""
    if not _ours(backend, model):
        return None
    from tlcore_torch.training import make_optimizer

    return make_optimizer(model, stage)


@hookimpl
def tl_train_step(backend: str, model: Any, batch: Batch, state: StepState) -> dict | None:
    """One optimisation step on images or cached features."""
    if not _ours(backend, model):
        return None
    from tlcore_torch.training import train_step

    return train_step(model, batch, state)


@hookimpl
def tl_eval_step(backend: str, model: Any, batch: Batch) -> np.ndarray | None:
    """float32 logits in inference mode."""
    if not _ours(backend, model):
        return None
    from tlcore_torch.training import eval_step

    return eval_step(model, batch)


@hookimpl
def tl_extract_features(backend: str, model: Any, images: np.ndarray) -> np.ndarray | None:
    """float32 pooled backbone features in inference mode."""
    if not _ours(backend, model):
        return None
    from tlcore_torch.training import extract_features

    return extract_features(model, images)


@hookimpl
def tl_export(
    backend: str, model: Any, fmt: str, path: Path, example: np.ndarray, opset: int
) -> Path | None:
    """``native``: the state dict as ``path/model.pt``, written atomically; ``onnx``: the raw
    graph (uint8 NHWC ``images`` → ``logits``) as ``path/model.onnx``, for the core to finish."""
    if fmt not in ("native", "onnx") or not _ours(backend, model):
        return None
    if fmt == "onnx":
        from tlcore_torch.export import export_onnx

        return export_onnx(model, Path(path), example, opset)
    from tlcore_torch.state import export_native

    return export_native(model, Path(path))


@hookimpl
def tl_get_weights(backend: str, model: Any) -> dict[str, np.ndarray] | None:
    """The state dict (parameters and buffers) as numpy copies."""
    if not _ours(backend, model):
        return None
    from tlcore_torch.state import get_weights

    return get_weights(model)


@hookimpl
def tl_set_weights(
    backend: str, model: Any, weights: dict[str, np.ndarray], strict: bool
) -> LoadReport | None:
    """Load numpy weights by name and shape, strictly or where they fit."""
    if not _ours(backend, model):
        return None
    from tlcore_torch.state import set_weights

    return set_weights(model, weights, strict=strict)


@hookimpl
def tl_get_optimizer_state(backend: str, optimizer: Any) -> dict[str, np.ndarray] | None:
    """The optimiser's moments and step counts as ``{"<index>.<key>": array}``."""
    if backend != BACKEND:
        return None
    import torch

    if not isinstance(optimizer, torch.optim.Optimizer):
        return None
    from tlcore_torch.state import get_optimizer_state

    return get_optimizer_state(optimizer)


@hookimpl
def tl_set_optimizer_state(
    backend: str, optimizer: Any, state: dict[str, np.ndarray]
) -> bool | None:
    """Restore what ``tl_get_optimizer_state`` returned."""
    if backend != BACKEND:
        return None
    import torch

    if not isinstance(optimizer, torch.optim.Optimizer):
        return None
    from tlcore_torch.state import set_optimizer_state

    set_optimizer_state(optimizer, state)
    return True


@hookimpl
def tl_seed(backend: str, seed: int) -> None:
    """Seed torch's generators (``torch.manual_seed``)."""
    if backend != BACKEND:
        return
    import torch

    torch.manual_seed(seed)
