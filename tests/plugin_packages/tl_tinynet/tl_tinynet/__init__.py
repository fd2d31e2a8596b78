"""A third-party tlcore plugin: adds the backbone source ``tinynet:<width>`` for PyTorch."""

import tlcore
from tlcore.interfaces import Backbone, BackboneInfo, Preprocessing


@tlcore.hookimpl
def tl_register_backbones(backend, register):
    if backend == "torch":
        register(BackboneInfo("tinynet:<width>", 32, None, "two conv layers of <width> channels"))


@tlcore.hookimpl
def tl_load_backbone(backend, spec):
    if backend != "torch" or not (spec.source or "").startswith("tinynet:"):
        return None
    from torch import nn

    width = int(spec.source.split(":", 1)[1])
    net = nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
    )
    prep = Preprocessing((32, 32), (0.5,) * 3, (0.5,) * 3).with_size(spec.input_size)
    return Backbone(net, prep, spec.source)
