"""Which backbone weights train under a freeze policy, and which BatchNorm layers run frozen.

Framework-free: a backend lists its backbone's weight names (in definition order) and its
blocks (ordered names of sub-networks, e.g. residual blocks or transformer layers), and applies
the :class:`FreezePlan` it gets back. A name belongs to a block when it equals the block's name
or starts with it followed by ``.`` or ``/`` (torch and Keras naming alike).

Policies (see :class:`~tlcore.recipe.FreezeSpec`):

- ``all``: every backbone weight frozen.
- ``none``: every backbone weight trains.
- ``last_n``: the weights of the last ``n`` blocks train, and so do weights outside every
  block that come after the first of those blocks in definition order (a final norm layer);
  weights before it (the stem) stay frozen.
- ``pattern``: weights whose name the regular expression matches (``re.search``) are frozen,
  every other backbone weight trains. A pattern that matches nothing is an error (a typo would
  otherwise silently train the whole backbone).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass

from tlcore.errors import TlcoreError
from tlcore.recipe import FreezeSpec

_SEPARATORS = (".", "/")


@dataclass(frozen=True)
class FreezePlan:
    """The decision of a freeze policy over a backbone's weight names.

    Attributes:
        trainable: names that train, in the order given.
        frozen: names that stay fixed, in the order given.
        trainable_blocks: blocks holding at least one trainable name, in block order.
    """

    trainable: tuple[str, ...]
    frozen: tuple[str, ...]
    trainable_blocks: tuple[str, ...]


def block_of(name: str, blocks: Sequence[str]) -> str | None:
    """The block a weight name belongs to (the longest matching block name), or ``None``."""
    best: str | None = None
    for block in blocks:
        inside = name == block or any(name.startswith(block + sep) for sep in _SEPARATORS)
        if inside and (best is None or len(block) > len(best)):
            best = block
    return best


def plan_freeze(names: Sequence[str], blocks: Sequence[str], spec: FreezeSpec) -> FreezePlan:
    """Decide which backbone weights train under ``spec``.

    Args:
        names: every backbone weight name, in definition order (the order matters for
            ``last_n``: weights outside the blocks train only after the first trainable block).
        blocks: the backbone's block names, first to last.
        spec: the stage's freeze policy.

    Returns:
        The :class:`FreezePlan`.

    Raises:
        TlcoreError: an unknown policy, an invalid pattern or one that matches nothing, or
            ``last_n`` on a backbone without blocks.

    Example:
        >>> spec = FreezeSpec(policy="last_n", n=1)
        >>> plan_freeze(["stem.w", "b0.w", "b1.w", "norm.w"], ["b0", "b1"], spec).trainable
        ('b1.w', 'norm.w')
    """
    owner = [block_of(name, blocks) for name in names]
    if spec.policy == "all":
        flags = [False] * len(names)
    elif spec.policy == "none":
        flags = [True] * len(names)
    elif spec.policy == "last_n":
        flags = _last_n(owner, blocks, spec.n)
    elif spec.policy == "pattern":
        regex = _compile(spec.pattern)
        flags = [regex.search(name) is None for name in names]
        if names and all(flags):
            raise TlcoreError(
                f"freeze pattern {spec.pattern!r} matches no backbone weight",
                "names look like " + ", ".join(names[:3]) + " (matched with re.search)",
            )
    else:
        raise TlcoreError(
            f"unknown freeze policy {spec.policy!r}", "valid: all, none, last_n, pattern"
        )
    trainable_owners = {block for block, flag in zip(owner, flags, strict=True) if flag}
    return FreezePlan(
        trainable=tuple(n for n, flag in zip(names, flags, strict=True) if flag),
        frozen=tuple(n for n, flag in zip(names, flags, strict=True) if not flag),
        trainable_blocks=tuple(b for b in blocks if b in trainable_owners),
    )


def resolve_batchnorm(spec: FreezeSpec, pretrained: bool) -> FreezeSpec:
    """``spec`` with ``batchnorm: auto`` made concrete, as the core does before ``tl_freeze``.

    A pretrained backbone keeps its BatchNorm statistics (``frozen``): a small dataset's batch
    statistics would overwrite what it learned on a large one. A randomly initialised backbone
    has no statistics worth keeping, so they train wherever its weights train (``follow``;
    under ``policy: none``, everywhere). Not ``train``: a layer whose weights are frozen keeps
    its statistics too, so that a frozen backbone's features stay fixed and can be cached.

    Example:
        >>> resolve_batchnorm(FreezeSpec(policy="none"), pretrained=False).batchnorm
        'follow'
    """
    if spec.batchnorm != "auto":
        return spec
    return dataclasses.replace(spec, batchnorm="frozen" if pretrained else "follow")


def batchnorm_in_inference(trainable: bool, batchnorm: str) -> bool:
    """Whether one BatchNorm layer runs in inference mode (running statistics untouched).

    Args:
        trainable: whether the layer's weights train under the freeze plan.
        batchnorm: the policy's ``batchnorm``: ``frozen`` (always inference mode),
            ``follow`` (inference mode when the layer is frozen) or ``train`` (never);
            ``auto`` must have been resolved first (:func:`resolve_batchnorm`).

    Raises:
        TlcoreError: an unknown mode, or ``auto``, which only the caller can resolve (it
            depends on whether the backbone is pretrained).
    """
    if batchnorm == "frozen":
        return True
    if batchnorm == "follow":
        return not trainable
    if batchnorm == "train":
        return False
    if batchnorm == "auto":
        raise TlcoreError(
            "batchnorm 'auto' reached a backend unresolved",
            "resolve it with tlcore.freezing.resolve_batchnorm(spec, pretrained) before "
            "calling tl_freeze, as the training driver does",
        )
    raise TlcoreError(f"unknown batchnorm mode {batchnorm!r}", "valid: frozen, follow, train")


def _last_n(owner: Sequence[str | None], blocks: Sequence[str], n: int) -> list[bool]:
    if n <= 0:
        return [False] * len(owner)
    if not blocks:
        raise TlcoreError(
            "freeze policy last_n needs a backbone with blocks, and this one has none",
            "use policy 'none' or 'pattern' instead",
        )
    chosen = set(blocks[-n:])
    first = next((i for i, block in enumerate(owner) if block in chosen), len(owner))
    return [block in chosen if block is not None else i > first for i, block in enumerate(owner)]


def _compile(pattern: str) -> re.Pattern[str]:
    if not pattern:
        raise TlcoreError("freeze policy 'pattern' needs a pattern", "set freeze.pattern")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise TlcoreError(
            f"freeze pattern {pattern!r} is not a valid regular expression: {exc}",
            "write a Python regular expression, e.g. '^stem|blocks\\.0\\.'",
        ) from None
