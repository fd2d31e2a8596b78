"""A tlcore plugin: the backbone source ``convmixer:<width>/<depth>`` for PyTorch."""

import tlcore
from tlcore.errors import TlcoreError
from tlcore.interfaces import Backbone, BackboneInfo, Preprocessing, Register
from tlcore.recipe import BackboneSpec

PREFIX = "convmixer:"


@tlcore.hookimpl
def tl_register_backbones(backend: str, register: Register) -> None:
    """List the source in ``tl backbones``."""
    if backend == "torch":
        register(BackboneInfo(PREFIX + "<width>/<depth>", 32, None, "ConvMixer, from scratch"))


@tlcore.hookimpl
def tl_load_backbone(backend: str, spec: BackboneSpec) -> Backbone | None:
    """Build ``convmixer:<width>/<depth>``; ``None`` for every other source."""
    if backend != "torch" or not (spec.source or "").startswith(PREFIX):
        return None
    try:
        width, depth = (int(n) for n in spec.source.removeprefix(PREFIX).split("/"))
    except ValueError:
        raise TlcoreError(f"cannot read {spec.source!r}", "e.g. convmixer:64/4") from None
    if spec.weights != "none":
        raise TlcoreError("ConvMixer has no published weights", "set weights: none")

    from tlcore_convmixer.network import convmixer  # imports torch: only now is it needed

    size = spec.input_size or 32
    return Backbone(convmixer(width, depth), Preprocessing().with_size(size), spec.source)
