"""A recipe as YAML a person edits: every field at its value, each section introduced by its
documentation's first line and each field followed by what it may hold (``tl recipe``).

The text is plain YAML (strings and lists in JSON's notation, which YAML reads alike), so
``tl train --recipe`` reads it back to the same recipe.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from tlcore.recipe.spec import Recipe

HEADER = (
    "# A tlcore recipe: every field at its default. Delete what you do not change. What each\n"
    "# field means: docs/recipe-reference.md in the repository (the site's Reference > Recipe).\n"
    "# Use it with: tl train DATA --recipe recipe.yaml\n"
)


def commented_recipe(recipe: Recipe | None = None) -> str:
    """``recipe`` (default: the default recipe) as commented YAML.

    Example:
        >>> "lr: 0.001" in commented_recipe()
        True
    """
    recipe = recipe if recipe is not None else Recipe()
    lines = [HEADER.rstrip("\n")]
    _section(recipe, recipe.to_dict(), 0, lines)
    return "\n".join(lines) + "\n"


def _section(obj: Any, values: dict[str, Any], depth: int, lines: list[str]) -> None:
    """The fields of the dataclass ``obj`` (their plain ``values``) at ``depth``."""
    indent = "  " * depth
    for field in dataclasses.fields(obj):
        if field.name not in values:  # a user's object (backbone.model): no YAML for it
            continue
        value, current = values[field.name], getattr(obj, field.name)
        if dataclasses.is_dataclass(current):
            if depth == 0:
                lines.append("")
            lines.append(f"{indent}# {_summary(current)}")
            lines.append(f"{indent}{field.name}:")
            _section(current, value, depth + 1, lines)
        elif _sections(current):
            lines.append(f"{indent}{field.name}:  # {_summary(current[0])}")
            for item, plain in zip(current, value, strict=True):
                nested: list[str] = []
                _section(item, plain, depth + 2, nested)
                first = next(i for i, line in enumerate(nested) if line.strip()
                             and not line.strip().startswith("#"))
                nested[first] = f"{indent}  - " + nested[first].lstrip()
                lines.extend(nested)
        else:
            lines.append(f"{indent}{field.name}: {json.dumps(value)}{_allowed(field)}")


def _sections(value: Any) -> bool:
    """Whether ``value`` is a list of sections (``train.stages``)."""
    return isinstance(value, tuple) and bool(value) and all(
        dataclasses.is_dataclass(item) for item in value)


def _summary(obj: Any) -> str:
    """The first sentence of a section's documentation."""
    paragraph = (type(obj).__doc__ or type(obj).__name__).strip().split("\n\n")[0]
    return " ".join(paragraph.split()).split(". ")[0].rstrip(".") + "."


def _number(value: float) -> str:
    """``100000``, not ``1e+05``; ``1e-12`` as such."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _allowed(field: dataclasses.Field) -> str:
    """What the field may hold, as a trailing comment (empty when its metadata says
    nothing): the built-in choices, or the range."""
    choices = field.metadata.get("choices")
    if choices:
        return f"  # one of: {', '.join(choices)}"
    low, high = field.metadata.get("min"), field.metadata.get("max")
    if low is None and high is None:
        return ""
    words = "".join(f", or {word}" for word in field.metadata.get("words", ()))  # lr: auto
    if high is None:
        return f"  # at least {_number(low)}{words}"
    return f"  # {_number(low)} to {_number(high)}{words}"
