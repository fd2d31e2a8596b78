"""``head.classifier`` on the torch backend: the network's own last ``nn.Linear`` taken out of
a copy of the network (``replace``, ``keep``), and for ``keep`` written into the new head.

What is refused, and the words of each refusal, are the core's (:mod:`tlcore.classifier`);
this module only finds the layer in a torch network and proves that it is the network's
last step.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tlcore import classifier as rules
from tlcore.errors import TlcoreError
from tlcore.interfaces import Backbone, InputSpec
from tlcore_torch.blocks import find_blocks

KIND = "nn.Linear"


@dataclass
class Cut:
    """A network without its last ``nn.Linear``, and what was taken out.

    Attributes:
        network: a deep copy of the user's network, the layer swapped for ``nn.Identity``.
        blocks: the copy's blocks for ``last_n`` freezing (the removed layer is none of them).
        layer: the removed layer, with its trained weight and bias.
        name: its name in the network (``layer2``, ``classifier.1``).
    """

    network: nn.Module
    blocks: list[str]
    layer: nn.Linear
    name: str


def cut_classifier(backbone: Backbone, choice: str, num_classes: int) -> Cut:
    """Take the last ``nn.Linear`` (in ``named_modules`` order) out of a copy of
    ``backbone.network``; the user's own object is never changed.

    A forward hook on a probe input proves that the network's output *is* that layer's
    output, and that without it the network returns that layer's input (the features).

    Raises:
        TlcoreError: a text encoder; a TorchScript network; no ``nn.Linear``; something
            follows the layer; for ``keep``, a layer whose outputs are not one per class.
    """
    rules.refuse_modality(choice, backbone.input_spec.modality)
    label = backbone.name
    if isinstance(backbone.network, torch.jit.ScriptModule):
        raise rules.cannot_cut(
            choice, label, "it is TorchScript, whose submodules cannot be swapped",
            "pass the nn.Module itself (backbone=net), or use head.classifier: new",
        )
    network = copy.deepcopy(backbone.network)
    linears = [(n, m) for n, m in network.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise rules.not_a_classifier(choice, label, KIND, "none: it has no nn.Linear")
    name, layer = linears[-1]
    probe = _probe(backbone.input_spec, network)
    seen: dict[str, Tensor] = {}

    def record(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        seen["input"], seen["output"] = inputs[0], output

    handle = layer.register_forward_hook(record)
    try:
        out = _run(network, probe, choice, label)
    finally:
        handle.remove()
    if "output" not in seen or not _same(out, seen["output"]):
        raise rules.something_follows(choice, label, KIND, name)
    network = _swap(network, name, nn.Identity())
    if not _same(_run(network, probe, choice, label), seen["input"]):
        raise rules.cannot_cut(
            choice, label, f"without {name!r} it does not return that layer's input",
            "use head.classifier: new, or call the layer once, last, in forward",
        )
    if choice == rules.KEEP:
        rules.check_kept_shape(tuple(seen["output"].shape), num_classes, name)
    # A declared ``tlcore_blocks`` attribute (copied along) may still name the removed layer.
    blocks = [b for b in find_blocks(network) if b != name and not b.startswith(name + ".")]
    return Cut(network, blocks, layer, name)


def keep_classifier(head: nn.Sequential, cut: Cut) -> None:
    """Start the head's classifier (its last ``nn.Linear``, weight ``(C, F)``) from the
    removed layer's weight and bias (zero when it had none)."""
    classifier = head[-1]
    with torch.no_grad():
        classifier.weight.copy_(cut.layer.weight)
        if cut.layer.bias is not None:
            classifier.bias.copy_(cut.layer.bias)
        else:
            classifier.bias.zero_()


def _probe(spec: InputSpec, network: nn.Module) -> Tensor:
    """Two random samples of what the network takes, on its device: vectors
    ``(2, features)``, images ``(2, 3, H, W)`` (already normalised floats). Drawn from a
    generator of its own, so the run's random stream is untouched."""
    shape = (2, spec.shape[0]) if spec.modality == "vector" else (2, 3, *spec.size)
    parameter = next(network.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    generator = torch.Generator().manual_seed(0)
    return torch.randn(shape, generator=generator).to(device)


def _run(network: nn.Module, probe: Tensor, choice: str, label: str) -> Tensor:
    """The network's output on ``probe`` in inference mode (dropout off, BatchNorm on its
    running statistics), every module's mode restored afterwards."""
    from tlcore_torch.model import backbone_output  # model imports this module

    modes = [(m, m.training) for m in network.modules()]
    network.eval()
    try:
        with torch.no_grad():
            return backbone_output(network(probe))
    except TlcoreError:
        raise
    except Exception as exc:  # any framework error here means the input does not fit
        raise TlcoreError.caused_by(
            f"head.classifier {choice}: {label} cannot run on a probe of shape "
            f"{tuple(probe.shape)}", exc,
            "check backbone.input_features / input_size against what the network takes",
        ) from None
    finally:
        for module, mode in modes:
            module.training = mode


def _same(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and torch.equal(a, b)


def _swap(network: nn.Module, name: str, module: nn.Module) -> nn.Module:
    """``network`` with ``module`` where the submodule called ``name`` was (``""``: the
    network itself, a lone ``nn.Linear``, is replaced)."""
    if not name:
        return module
    parent_name, _, child = name.rpartition(".")
    parent = network.get_submodule(parent_name) if parent_name else network
    setattr(parent, child, module)
    return network
