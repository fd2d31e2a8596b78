"""Find a network's blocks, the units that ``last_n`` freezing counts from the end.

The rule, general enough for Hugging Face, torchvision, timm and hand-written networks:

1. A network with a ``tlcore_blocks`` attribute (a sequence of submodule names) decides itself.
2. Otherwise every ``nn.ModuleList`` / ``nn.Sequential`` is a candidate, and so is every group
   of sibling lists outside a list (torchvision's ``layer1`` ... ``layer4``). A candidate's
   units are its children; a child that is a *stage* — a list of one repeated module type, or
   a module whose largest child list of one repeated type holds at least 3/4 of its
   parameters — is replaced by that list's children (Hugging Face ResNet
   ``encoder.stages.0.layers.*``, Swin ``encoder.layers.0.blocks.*``). Once, not recursively.
3. The candidate whose units hold the most parameters wins; ties go to the outermost one.
4. With no candidate at all, the network's direct children that hold parameters are the blocks.

TorchScript modules are handled by their original class names.
"""

from __future__ import annotations

from torch import nn

_LIST_TYPES = frozenset({"ModuleList", "Sequential"})
_STAGE_SHARE = 0.75


def find_blocks(network: nn.Module) -> list[str]:
    """The ordered block names of ``network`` (submodule names, e.g. ``encoder.layer.3``)."""
    declared = getattr(network, "tlcore_blocks", None)
    if declared is not None:
        return [str(name) for name in declared]
    sizes = _param_counts(network)
    best: tuple[int, list[str]] | None = None
    for group in _candidate_groups(network):
        units = [u for name in group for u in _units(network, name, sizes) if sizes.get(u, 0)]
        covered = sum(sizes[u] for u in units)
        if units and (best is None or covered > best[0]):
            best = (covered, units)
    if best is not None:
        return best[1]
    return [name for name, child in network.named_children() if sizes.get(name, 0) > 0]


def submodule(root: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name`` (``""`` is ``root``); works on TorchScript modules too."""
    module = root
    for part in name.split(".") if name else ():
        module = dict(module.named_children())[part]
    return module


def _class_name(module: nn.Module) -> str:
    return str(getattr(module, "original_name", type(module).__name__))


def _is_list(module: nn.Module) -> bool:
    return _class_name(module) in _LIST_TYPES


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _param_counts(network: nn.Module) -> dict[str, int]:
    """Parameters held under every submodule name (shared parameters counted once each)."""
    counts: dict[str, int] = {}
    for module_name, module in network.named_modules():
        counts[module_name] = sum(p.numel() for p in module.parameters())
    return counts


def _candidate_groups(network: nn.Module) -> list[tuple[str, ...]]:
    """Every list on its own, then every group of two or more sibling lists."""
    groups: list[tuple[str, ...]] = []
    for name, module in network.named_modules():
        if _is_list(module):
            groups.append((name,))
            continue
        siblings = tuple(_join(name, c) for c, child in module.named_children() if _is_list(child))
        if len(siblings) > 1:
            groups.append(siblings)
    return groups


def _units(network: nn.Module, list_name: str, sizes: dict[str, int]) -> list[str]:
    """The children of a list, with stages replaced by their own children."""
    units: list[str] = []
    container = submodule(network, list_name)
    for child_name, child in container.named_children():
        name = _join(list_name, child_name)
        inner = _stage_list(child, name, sizes)
        if inner is None:
            units.append(name)
        else:
            inner_module = submodule(network, inner)
            units.extend(_join(inner, c) for c, _ in inner_module.named_children())
    return units


def _stage_list(module: nn.Module, name: str, sizes: dict[str, int]) -> str | None:
    """The name of the list of repeated modules that ``module`` is a stage of, if it is one."""
    if _is_list(module):
        return name if _repeats_one_type(module) else None
    lists = [(_join(name, c), child) for c, child in module.named_children() if _is_list(child)]
    if not lists or sizes.get(name, 0) == 0:
        return None
    inner_name, inner = max(lists, key=lambda item: sizes.get(item[0], 0))
    if sizes.get(inner_name, 0) >= _STAGE_SHARE * sizes[name] and _repeats_one_type(inner):
        return inner_name
    return None


def _repeats_one_type(module: nn.Module) -> bool:
    """True when the children holding parameters are all of one class (at least one child)."""
    types = {_class_name(c) for c in module.children() if any(True for _ in c.parameters())}
    return len(types) == 1
