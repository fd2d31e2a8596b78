"""Which weights load into a model: matching by name and shape, for every backend.

A backend hands over its model's current weights and the incoming ones, both as
``{name: array}``; :func:`match_weights` decides what loads and reports the rest. The backend
then copies the chosen arrays in its own way. Only ``.shape`` of the arrays is looked at, so the
current weights may be zero-copy views of the framework's tensors.

Without ``strict``, names are first aligned when a whole prefix differs, the usual case when
transferring between tasks: a checkpoint of a full model (``backbone.conv.weight``) loaded into
a bare backbone (``conv.weight``), a ``module.`` prefix left by data-parallel training, or a
bare backbone's weights loaded into a full model.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tlcore.errors import TlcoreError
from tlcore.interfaces import LoadReport

_MAX_NAMES_IN_MESSAGE = 8
_PREFIX_DEPTH = 2


def match_weights(
    current: Mapping[str, Any], incoming: Mapping[str, Any], *, strict: bool = False
) -> tuple[dict[str, Any], LoadReport]:
    """Decide which incoming arrays load into a model, by name and shape.

    Args:
        current: the model's weights by name (anything with a ``.shape``).
        incoming: the weights to load, by name.
        strict: require every name of both sides to match exactly, with equal shapes; used
            for a run's own checkpoints. Without it, what fits loads and the rest is reported.

    Returns:
        ``(to_load, report)``: ``to_load`` maps names of ``current`` to incoming arrays of the
        same shape. ``report.mismatched`` names current weights whose incoming array has
        another shape, ``report.missing`` current weights with no incoming array (both stay
        as initialised), ``report.unexpected`` incoming names that went nowhere.

    Raises:
        TlcoreError: ``strict`` and anything does not match; the message names the weights.

    Example:
        >>> import numpy as np
        >>> model = {"hidden.weight": np.zeros((8, 4)), "out.weight": np.zeros((2, 8))}
        >>> saved = {"hidden.weight": np.ones((8, 4)), "out.weight": np.ones((10, 8))}
        >>> to_load, report = match_weights(model, saved)
        >>> sorted(to_load), report.mismatched
        (['hidden.weight'], ('out.weight',))
    """
    mapping = (
        {name: name for name in incoming if name in current}
        if strict
        else align_names(current, incoming)
    )
    to_load: dict[str, Any] = {}
    loaded: list[str] = []
    mismatched: list[str] = []
    for name in current:
        source = mapping.get(name)
        if source is None:
            continue
        if tuple(_shape(incoming[source])) == tuple(_shape(current[name])):
            to_load[name] = incoming[source]
            loaded.append(name)
        else:
            mismatched.append(name)
    used = set(mapping.values())
    report = LoadReport(
        loaded=tuple(loaded),
        mismatched=tuple(mismatched),
        missing=tuple(name for name in current if name not in mapping),
        unexpected=tuple(name for name in incoming if name not in used),
    )
    if strict and (report.mismatched or report.missing or report.unexpected):
        raise TlcoreError(_strict_message(report, current, incoming, mapping), _STRICT_HINT)
    return to_load, report


def require_some_loaded(report: LoadReport, path: Path, names: Iterable[str]) -> LoadReport:
    """Refuse a weights file of which nothing loaded into a network.

    A non-strict load reports what did not fit instead of failing; but a file of which not a
    single weight fits is another architecture's (or not a weights file at all), and training
    on would silently start from a random initialisation.

    Args:
        report: what loading ``path`` non-strictly did.
        path: the weights file, for the message.
        names: the network's weight names, a few of which the hint shows.

    Returns:
        ``report``, when something loaded.

    Raises:
        TlcoreError: nothing in the file matched by name and shape, or only counters did
            (BatchNorm's ``num_batches_tracked``: every network of BatchNorm layers has them,
            so matching them says nothing about the architecture).
    """
    if any(not is_counter(name) for name in report.loaded):
        return report
    example = ", ".join(itertools.islice((n for n in names if not is_counter(n)), 3))
    counters = f" (only {len(report.loaded)} BatchNorm counters did)" if report.loaded else ""
    raise TlcoreError(
        f"no weight in {path} matches the backbone by name and shape{counters}",
        f"the backbone's weights are named like {example}; "
        "was the file saved from another architecture?",
    )


def require_finite(arrays: Mapping[str, Any], path: Path | str) -> None:
    """Refuse a weights file that holds NaN or infinity.

    Such weights are what a diverged run saves; a network that starts from them outputs NaN
    and trains nothing, so every backend refuses the file before loading it.

    Args:
        arrays: the file's tensors by name, as numpy arrays (or anything ``np.asarray`` takes).
        path: the file, for the message.

    Raises:
        TlcoreError: a floating-point tensor holds a NaN or an infinity; names the file, the
            first such tensor and how many values are bad.

    Example:
        >>> import numpy as np
        >>> require_finite({"fc.weight": np.ones((2, 2))}, "w.pt")  # finite: nothing happens
    """
    import numpy as np

    bad = []
    for name, value in arrays.items():
        array = np.asarray(value)
        if array.dtype.kind not in "fc":  # integers (BatchNorm counters) cannot be NaN
            continue
        finite = np.isfinite(array)
        if not finite.all():
            bad.append((name, int(array.size - finite.sum()), int(array.size)))
    if not bad:
        return
    name, count, size = bad[0]
    more = f" (and {len(bad) - 1} more tensors)" if len(bad) > 1 else ""
    raise TlcoreError(
        f"weights file {path} holds non-finite values: tensor {name!r} has {count} NaN or "
        f"infinite values of {size}{more}",
        "the run that saved it diverged; use weights saved before it diverged, or "
        "backbone.weights: pretrained",
    )


COUNTERS = ("num_batches_tracked",)
"""Last name components of counters rather than weights (PyTorch's BatchNorm step count)."""


def is_counter(name: str) -> bool:
    """True for a counter such as ``layer1.0.bn1.num_batches_tracked``, which any network with
    the same kind of layer has: loading one proves nothing about the file fitting."""
    return name.rsplit(".", 1)[-1] in COUNTERS


_STRICT_HINT = (
    "strict loading needs the same model the weights came from; to start from another "
    "task's weights, load them non-strictly (what fits loads, the rest is reported)"
)


def align_names(current: Iterable[str], incoming: Iterable[str]) -> dict[str, str]:
    """Map current names to incoming names, replacing a differing leading prefix if that helps.

    Tries stripping up to two leading dotted components from the incoming names and adding up
    to two leading components of the current names; keeps the identity unless another choice
    matches strictly more names.

    A prefix is only ever *replaced* (stripped on one side and another added) above a layer:
    the part of the name that stays must hold more than the weight's own last component. So
    ``model.encoder.w`` may become ``resnet.encoder.w``, but ``fc.weight`` never becomes
    ``head.weight``: that would load one layer's weights into another layer that merely has
    weights of the same names and shapes.

    Returns:
        ``{current_name: incoming_name}`` for every name found on both sides.
    """
    current_set = set(current)
    incoming_list = list(incoming)
    best: dict[str, str] = {n: n for n in incoming_list if n in current_set}
    if len(best) == len(current_set):
        return best
    for strip in _prefixes(incoming_list):
        stripped = {n[len(strip) :]: n for n in incoming_list if n.startswith(strip)}
        for add in _prefixes(current_set):
            found = {
                add + rest: src
                for rest, src in stripped.items()
                if add + rest in current_set and (not (strip and add) or "." in rest)
            }
            if len(found) > len(best):
                best = found
    return best


def _prefixes(names: Iterable[str]) -> list[str]:
    """``""`` and every distinct leading ``a.`` / ``a.b.`` prefix of ``names``."""
    found = {""}
    for name in names:
        parts = name.split(".")
        for depth in range(1, min(_PREFIX_DEPTH, len(parts) - 1) + 1):
            found.add(".".join(parts[:depth]) + ".")
    return sorted(found, key=lambda p: (len(p), p))


def _shape(array: Any) -> tuple[int, ...]:
    return tuple(getattr(array, "shape", ()))


def _strict_message(
    report: LoadReport,
    current: Mapping[str, Any],
    incoming: Mapping[str, Any],
    mapping: Mapping[str, str],
) -> str:
    parts = []
    if report.mismatched:
        shapes = [
            f"{n} {_shape(current[n])} vs {_shape(incoming[mapping[n]])}" for n in report.mismatched
        ]
        parts.append("shape mismatch: " + _names(shapes))
    if report.missing:
        parts.append("missing: " + _names(report.missing))
    if report.unexpected:
        parts.append("unexpected: " + _names(report.unexpected))
    return "weights do not match the model (" + "; ".join(parts) + ")"


def _names(names: Iterable[str]) -> str:
    names = list(names)
    shown = ", ".join(names[:_MAX_NAMES_IN_MESSAGE])
    more = len(names) - _MAX_NAMES_IN_MESSAGE
    return shown + (f" and {more} more" if more > 0 else "")
