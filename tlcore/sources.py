"""Backbone sources: the ``kind:name`` of ``backbone.source`` and what ``backbone.weights`` asks.

Every backend reads these strings the same way, so they are read here: a backend says which
source kinds it loads and gets the name, or learns that the source is another plugin's;
:func:`load_source` runs the whole of it with a loader per kind.

Example:
    >>> parse_source("hf:microsoft/resnet-18", ("hf", "builtin"))
    ('hf', 'microsoft/resnet-18')
    >>> parse_source("keras:mobilenet_v2", ("hf", "builtin")) is None
    True
    >>> weights_file("pretrained") is None, weights_file("none") is None
    (True, True)
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar

from tlcore.errors import TlcoreError
from tlcore.interfaces import Backbone, LoadReport, Preprocessing
from tlcore.recipe import PRETRAINED_WEIGHTS, BackboneSpec

T = TypeVar("T")

Loader = Callable[[str, BackboneSpec, bool], tuple[Any, Preprocessing, dict[str, Any]]]
"""``loader(name, spec, pretrained) -> (network, preprocessing, extra)``: one source kind."""

#: The ``backbone.weights`` value that asks for a random initialisation.
NO_WEIGHTS = "none"


def parse_source(source: str, kinds: Collection[str]) -> tuple[str, str] | None:
    """Split ``source`` into ``(kind, name)`` when its kind is one of ``kinds``.

    Only the first ``:`` separates, so names may hold colons (``file:C:/models/net.pt``).

    Args:
        source: a ``backbone.source`` string.
        kinds: the source kinds the caller loads.

    Returns:
        ``(kind, name)``, or ``None`` when ``source`` has no kind or one not in ``kinds``: the
        source is another plugin's.

    Raises:
        TlcoreError: the kind is one of ``kinds`` but the name is empty (``builtin:``).
    """
    kind, sep, name = source.partition(":")
    if not sep or kind not in kinds:
        return None
    if not name:
        raise TlcoreError(f"backbone source {source!r} has no name", f"write {kind}:<name>")
    return kind, name


def wants_pretrained(weights: str) -> bool:
    """Whether ``backbone.weights`` asks for the source's own published weights."""
    return weights.lower() in PRETRAINED_WEIGHTS


def weights_file(weights: str) -> Path | None:
    """The weights file ``backbone.weights`` names, or ``None`` for ``pretrained`` (or
    ``imagenet``) and ``none``: the network is then built randomly initialised and the file
    loaded where names and shapes fit."""
    if wants_pretrained(weights) or weights.lower() == NO_WEIGHTS:
        return None
    return Path(weights).expanduser()


def load_source(
    spec: BackboneSpec,
    default: str,
    loaders: Mapping[str, Loader],
    load_weights_file: Callable[[Any, Path], LoadReport],
) -> Backbone | None:
    """Load ``spec.source`` (``default`` when it names none) with the loader of its kind.

    The loader builds the network with the source's own weights when ``backbone.weights``
    asks for them (``pretrained`` / ``imagenet``), randomly initialised otherwise; a weights
    file is then loaded into it with ``load_weights_file`` and its report kept in
    ``Backbone.extra["weights_report"]``.

    Args:
        spec: the recipe's ``backbone`` section.
        default: the backend's default source.
        loaders: a loader per source kind: ``loader(name, spec, pretrained)`` returns
            ``(network, preprocessing, extra)``; ``extra["pretrained"] = False`` says that the
            source has no published weights, ``extra["inputs"]`` (an
            :class:`~tlcore.interfaces.InputSpec`) that the network takes texts or vectors.
        load_weights_file: ``load_weights_file(network, path)`` loads a weights file where
            names and shapes fit and returns the report, refusing a file that holds NaN or
            inf (:func:`tlcore.weights.require_finite`) or of which nothing fits
            (:func:`tlcore.weights.require_some_loaded`).

    Returns:
        The :class:`~tlcore.interfaces.Backbone`, named by its source; ``None`` when the
        source's kind has no loader here (another plugin's).

    Raises:
        TlcoreError: the source has no name, or its loader or the weights file fails.
    """
    source = spec.source or default
    parsed = parse_source(source, loaders)
    if parsed is None:
        return None
    kind, name = parsed
    network, preprocessing, extra = loaders[kind](name, spec, wants_pretrained(spec.weights))
    path = weights_file(spec.weights)
    if path is not None:
        extra["weights_report"] = load_weights_file(network, path)
    # The core settles the rest of ``pretrained`` from the recipe's weights (build_model).
    return Backbone(network, preprocessing, source, extra, pretrained=extra.pop("pretrained", True),
                    inputs=extra.pop("inputs", None))


def lookup(kind: str, name: str, known: Mapping[str, T]) -> T:
    """``known[name]``, or an error listing the names of ``kind`` a backend knows.

    Raises:
        TlcoreError: ``name`` is not in ``known``; the hint lists them and the closest one.

    Example:
        >>> lookup("builtin", "simple_cnn", {"simple_cnn": 1})
        1
    """
    if name in known:
        return known[name]
    close = difflib.get_close_matches(name, list(known), n=1)
    maybe = f" (did you mean {close[0]!r}?)" if close else ""
    raise TlcoreError(
        f"unknown {kind} backbone {name!r}",
        "known: " + ", ".join(f"{kind}:{n}" for n in known) + maybe,
    )
