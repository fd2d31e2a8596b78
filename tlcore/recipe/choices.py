"""The recipe's open choices: the fields plugins may extend, and checking a value against them.

:data:`OPEN_FIELDS` is the one map from a kind of :class:`~tlcore.interfaces.Choice` to the
recipe field it extends. A field keeps its built-in values in its ``choices`` metadata
(:mod:`tlcore.recipe.spec`); a plugin adds names through the ``tl_register_choices`` hook.
:mod:`tlcore.recipe.build` accepts a built-in value without asking anyone, and only for a
value that is not built in asks the plugins (:func:`check`): building the default recipe loads
no plugin, and loading plugins imports no framework (their entry points only register).

A registration is *ignored*, with the reason shown by ``tl plugins`` and in the recipe's error
for that name, when it is not a :class:`~tlcore.interfaces.Choice`, names an unknown kind,
reuses a built-in name (a plugin adds values; it never changes what ``policy: all`` means) or a
name an earlier plugin registered (the first wins, in the order plugins are called), or is a
schedule or augmentation without its function as ``value``.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tlcore.errors import PluginError, RecipeError
from tlcore.interfaces import Choice
from tlcore.recipe.spec import DataSpec, FreezeSpec, HeadSpec, Recipe, StageSpec

#: Each kind of :class:`~tlcore.interfaces.Choice` and the ``(section, field)`` it extends:
#: the field of that section wherever it appears (``freeze`` in every stage's ``freeze``).
#: ``augmentation`` extends each item of the list ``data.augment``.
OPEN_FIELDS: dict[str, tuple[type, str]] = {
    "freeze": (FreezeSpec, "policy"),
    "pooling": (HeadSpec, "pooling"),
    "optimizer": (StageSpec, "optimizer"),
    "schedule": (StageSpec, "schedule"),
    "augmentation": (DataSpec, "augment"),
    "task": (Recipe, "task"),
}


#: Kinds a plugin registers for what its own hooks write, checked by the recipe like the open
#: fields' values but kept out of :data:`OPEN_FIELDS` (no field's ``choices`` holds them):
#: each kind with the recipe path it names and its built-in values. ``format``: an item of
#: ``export.formats`` that the plugin's ``tl_export`` writes, so that a misspelt or missing
#: format is refused when the recipe is built, before any training, not when the run ends.
NAMED_KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "format": ("export.formats", ("native", "onnx")),
}


#: The kinds the core itself carries out, with the function a plugin registers as ``value``.
CARRIED_OUT_BY_THE_CORE = ("schedule", "augmentation")


@dataclass(frozen=True)
class RegisteredChoice:
    """One object a plugin passed to ``register`` in ``tl_register_choices``.

    Attributes:
        plugin: the name of the plugin that registered it.
        choice: what it registered (a :class:`~tlcore.interfaces.Choice`, unless ignored).
        ignored: why the recipe does not accept it; empty when it does.
    """

    plugin: str
    choice: Any
    ignored: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, for ``tl plugins --json``."""
        choice = self.choice
        if not isinstance(choice, Choice):
            return {"kind": None, "name": repr(choice), "description": "", "ignored": self.ignored}
        return {
            "kind": choice.kind,
            "name": choice.name,
            "description": choice.description,
            "ignored": self.ignored,
        }


def kind_of(section: type, name: str) -> str | None:
    """The kind of choice the field ``name`` of the recipe section ``section`` is, if open.

    Example:
        >>> kind_of(FreezeSpec, "policy"), kind_of(FreezeSpec, "batchnorm")
        ('freeze', None)
    """
    for kind, (cls, field_name) in OPEN_FIELDS.items():
        if cls is section and field_name == name:
            return kind
    return None


def builtin(kind: str) -> tuple[str, ...]:
    """The built-in values of ``kind``: its field's ``choices`` (empty for a field the recipe
    does not have).

    Example:
        >>> builtin("pooling")
        ('avg', 'max', 'flatten', 'mean', 'cls')
    """
    if kind in NAMED_KINDS:
        return NAMED_KINDS[kind][1]
    cls, name = OPEN_FIELDS[kind]
    for f in dataclasses.fields(cls):
        if f.name == name:
            return tuple(f.metadata.get("choices", ()))
    return ()


def field_paths(kind: str) -> list[str]:
    """The dotted recipe paths ``kind`` extends (``train.stages.N.freeze.policy``, ...).

    Example:
        >>> field_paths("optimizer")
        ['train.stages.N.optimizer']
    """
    if kind in NAMED_KINDS:
        return [NAMED_KINDS[kind][0]]
    cls, name = OPEN_FIELDS[kind]
    return [f"{path}.{name}" if path else name for path in _section_paths(Recipe, "", cls)]


def registered_choices() -> list[RegisteredChoice]:
    """Every registration of every plugin, in the order plugins are called, each marked with
    why it is ignored (if it is).

    Raises:
        PluginError: a plugin's ``tl_register_choices`` raised.
    """
    from tlcore.plugins.manager import choice_registrations

    out: list[RegisteredChoice] = []
    first: dict[tuple[str, str], str] = {}
    for plugin, choice in choice_registrations():
        reason = _ignored(choice, first)
        if not reason:
            first[(choice.kind, choice.name)] = plugin
        out.append(RegisteredChoice(plugin, choice, reason))
    return out


def registered(kind: str) -> dict[str, RegisteredChoice]:
    """The names plugins add to ``kind`` (those the recipe accepts), by name."""
    entries = registered_choices()
    return {r.choice.name: r for r in entries if not r.ignored and r.choice.kind == kind}


def implementation(kind: str, name: str) -> Callable[..., Any]:
    """The function a plugin registered as the ``value`` of ``name``, for the kinds the core
    itself carries out: a ``schedule`` (``value(stage, step, total_steps) -> lr``) and an
    ``augmentation`` (``value(images, rng) -> images``, uint8 NHWC in and out).

    Raises:
        PluginError: no plugin registers ``name`` (any more).
    """
    entry = registered(kind).get(name)
    if entry is None:  # a registration without a function is ignored: see _ignored
        raise PluginError(
            f"no plugin registers the {kind} {name!r}",
            "install the plugin that adds it, or see 'tl plugins' for what is registered",
        )
    return entry.choice.value


def check(kind: str, value: Any, path: str) -> Choice:
    """The registered choice ``value`` of ``kind``; the recipe calls it for a value that is not
    built in.

    Raises:
        RecipeError: no plugin registered ``value``; lists the built-in and registered names.
    """
    entries = [r for r in registered_choices() if getattr(r.choice, "kind", None) == kind]
    found = {r.choice.name: r for r in entries if not r.ignored}
    if value in found:
        return found[value].choice
    names = builtin(kind)
    valid = "one of " + ", ".join(names)
    if found:
        valid += "; from plugins: " + ", ".join(
            f"{name} ({r.plugin})" for name, r in sorted(found.items())
        )
    else:
        valid += f"; no installed plugin adds to {kind!r} (see 'tl plugins')"
    for r in entries:
        if r.ignored and r.choice.name == value:
            valid += f"; plugin {r.plugin!r} registers {value!r}, ignored: {r.ignored}"
    close = difflib.get_close_matches(str(value), [*names, *found], n=1)
    if close:
        valid += f"; did you mean {close[0]!r}?"
    raise RecipeError(path, value, valid)


def _ignored(choice: Any, first: dict[tuple[str, str], str]) -> str:
    """Why the recipe does not accept ``choice``, or ``""`` when it does."""
    if not isinstance(choice, Choice):
        return f"not a tlcore.interfaces.Choice: {type(choice).__name__}"
    if not isinstance(choice.name, str) or not choice.name:
        return f"the name must be a non-empty string, not {choice.name!r}"
    if choice.kind not in OPEN_FIELDS and choice.kind not in NAMED_KINDS:
        return f"unknown kind {choice.kind!r}; kinds: {', '.join([*OPEN_FIELDS, *NAMED_KINDS])}"
    if not _has_field(choice.kind):
        return f"this version of tlcore's recipe has no field for {choice.kind!r}"
    if choice.name in builtin(choice.kind):
        return f"{choice.name!r} is a built-in {choice.kind}; a plugin cannot redefine it"
    earlier = first.get((choice.kind, choice.name))
    if earlier is not None:
        return f"{choice.name!r} is already registered by plugin {earlier!r}"
    if choice.kind in CARRIED_OUT_BY_THE_CORE and not callable(choice.value):
        return f"a {choice.kind} carries its function as value (Choice(..., value=function))"
    return ""


def _has_field(kind: str) -> bool:
    if kind in NAMED_KINDS:
        return True
    cls, name = OPEN_FIELDS[kind]
    return any(f.name == name for f in dataclasses.fields(cls))


def _section_paths(cls: type, path: str, target: type) -> list[str]:
    """The dotted paths of every occurrence of the section ``target`` under ``cls``."""
    found = [path] if cls is target else []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        for candidate in (hint, *typing.get_args(hint)):
            if isinstance(candidate, type) and dataclasses.is_dataclass(candidate):
                item = f"{f.name}.N" if typing.get_origin(hint) is tuple else f.name
                found += _section_paths(candidate, f"{path}.{item}" if path else item, target)
    return found
