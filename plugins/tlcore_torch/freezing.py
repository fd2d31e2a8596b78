"""Apply a freeze policy to a :class:`~tlcore_torch.model.TransferModel`.

What trains is decided by the framework-free :mod:`tlcore.freezing`; this module only lists
the backbone's weight names and sets ``requires_grad`` and BatchNorm modes accordingly.
"""

from __future__ import annotations

from torch import nn

from tlcore.freezing import batchnorm_in_inference, plan_freeze
from tlcore.interfaces import FreezeReport
from tlcore.recipe import FreezeSpec
from tlcore.recipe.choices import builtin
from tlcore_torch.model import TransferModel

_BATCHNORM_TYPES = frozenset({"BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm"})


def is_batchnorm(module: nn.Module) -> bool:
    """True for BatchNorm layers, TorchScript ones included."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return True
    return str(getattr(module, "original_name", "")) in _BATCHNORM_TYPES


def weight_entries(network: nn.Module) -> list[tuple[str, str]]:
    """``(entry name, module name)`` for every parameter of ``network``, in definition order.

    A BatchNorm layer without parameters is listed by its ``running_mean`` buffer, so that the
    policy decides for it too.
    """
    entries: list[tuple[str, str]] = []
    seen: set[int] = set()
    for module_name, module in network.named_modules():
        prefix = f"{module_name}." if module_name else ""
        own = [(n, p) for n, p in module.named_parameters(recurse=False) if id(p) not in seen]
        for name, param in own:
            seen.add(id(param))
            entries.append((prefix + name, module_name))
        if not own and is_batchnorm(module):
            entries.append((prefix + "running_mean", module_name))
    return entries


def apply_freeze(model: TransferModel, policy: FreezeSpec) -> FreezeReport | None:
    """Set ``requires_grad`` and BatchNorm modes of ``model`` for ``policy``; count the result.

    ``None`` for a policy a plugin registered: that plugin's ``tl_freeze`` applies it.
    The head always trains. BatchNorm layers of the backbone stay in inference mode as
    ``policy.batchnorm`` says. When the whole backbone is frozen (and BatchNorm is not set to
    ``train``) the whole backbone runs in inference mode, dropout included, so that training
    on cached features and training on images give the same result.
    """
    if policy.policy not in builtin("freeze"):
        return None
    backbone = model.backbone
    entries = weight_entries(backbone)
    plan = plan_freeze([name for name, _ in entries], model.blocks, policy)
    trainable = set(plan.trainable)
    for name, param in backbone.named_parameters():
        param.requires_grad_(name in trainable)
    for param in model.head.parameters():
        param.requires_grad_(True)

    trainable_modules = {module for name, module in entries if name in trainable}
    backbone_trainable = sum(p.numel() for p in backbone.parameters() if p.requires_grad)
    if backbone_trainable == 0 and policy.batchnorm != "train":
        keep = ["backbone"]
    else:
        keep = [
            f"backbone.{name}" if name else "backbone"
            for name, module in backbone.named_modules()
            if is_batchnorm(module)
            and batchnorm_in_inference(name in trainable_modules, policy.batchnorm)
        ]
    model.keep_in_inference(keep)

    total_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total_frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return FreezeReport(
        trainable=total_trainable,
        frozen=total_frozen,
        backbone_trainable=backbone_trainable,
        trainable_blocks=plan.trainable_blocks,
    )
