"""Building a recipe from nested values, dotted overrides and keyword shortcuts, and validating it.

Every field is validated when the recipe is built, before any framework is imported; a bad
value raises :class:`~tlcore.errors.RecipeError` naming the field's path, the value and what
is valid. A field open to plugins (:data:`~tlcore.recipe.choices.OPEN_FIELDS`) also accepts
the names plugins register; they are asked only for a value that is not built in.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tlcore.errors import RecipeError, TlcoreError
from tlcore.recipe.choices import check, kind_of
from tlcore.recipe.consistency import check_consistency
from tlcore.recipe.fields import bounds
from tlcore.recipe.gradual import expand_gradual
from tlcore.recipe.spec import (
    AUTO_LR,
    Recipe,
    _to_plain,
)

#: Short names shared by CLI flags and keyword arguments, and the field each one sets.
SHORTCUTS: dict[str, str] = {
    "backend": "backend",
    "task": "task",
    "backbone": "backbone.source",
    "weights": "backbone.weights",
    "input_size": "backbone.input_size",
    "batch_size": "train.batch_size",
    "seed": "train.seed",
    "cache_features": "train.cache_features",
    "device": "train.device",
    "precision": "train.precision",
    "accumulate": "train.accumulate",
    "clip_norm": "train.clip_norm",
    "ema": "train.ema",
    "class_weights": "train.class_weights",
    "sampler": "train.sampler",
    "data": "data.path",
    "labels": "data.labels",
    "val": "data.val_path",
    "val_split": "data.val_split",
    "augment": "data.augment",
    "export": "export.formats",
    "opset": "export.opset",
    "quantize": "export.quantize",
    "max_drop": "export.max_accuracy_drop",
}


def build_recipe(
    base: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    **shortcuts: Any,
) -> Recipe:
    """Build a validated :class:`Recipe` from a nested dict, dotted overrides and shortcuts.

    Args:
        base: nested values, e.g. a parsed recipe file.
        overrides: ``{"train.stages.1.lr": 1e-5, "backend": "keras"}``; applied in order.
        shortcuts: the names of :data:`SHORTCUTS` (``backend="keras"``, ``batch_size=16``),
            plus ``epochs`` (every stage) and ``lr`` (the first stage; later stages keep
            their ratio to it, so fine-tuning stays ten times slower). ``None`` is ignored.

    Returns:
        The frozen recipe.

    Raises:
        RecipeError: a value or key is invalid; names its path.

    Example:
        >>> build_recipe({"train": {"batch_size": 16}}, {"train.seed": 3}).train.seed
        3
    """
    data = _merge_defaults(Recipe, base or {}, "")
    for dotted, value in (overrides or {}).items():
        _set_dotted(data, dotted, value)
    for name, value in shortcuts.items():
        if value is None:
            continue
        if name == "epochs":
            for stage in data["train"]["stages"]:
                stage["epochs"] = value
        elif name == "lr":
            _set_base_lr(data["train"]["stages"], value)
        elif name in SHORTCUTS:
            _set_dotted(data, SHORTCUTS[name], value)
        else:
            known = ", ".join(sorted([*SHORTCUTS, "epochs", "lr"]))
            raise RecipeError(name, value, f"a recipe shortcut: {known}")
    # Overrides may bring partial sections (``train.stages=[{epochs: 3}]``): fill defaults again.
    return expand_gradual(_build(Recipe, _merge_defaults(Recipe, data, ""), ""))


def _set_base_lr(stages: list[dict[str, Any]], lr: Any) -> None:
    """The ``lr`` shortcut: ``auto`` makes every stage search its own rate; a number is the
    first stage's rate, and later stages keep their ratio to it (a stage at ``auto`` stays
    there, and with the first stage at ``auto`` the others keep their own rates)."""
    meta = {**bounds(1e-12, 10.0), "words": (AUTO_LR,)}
    base = _number_or_word(lr, "lr", meta)
    if base == AUTO_LR:
        for stage in stages:
            stage["lr"] = AUTO_LR
        return
    first = _number_or_word(stages[0]["lr"], "train.stages.0.lr", meta)
    for i, stage in enumerate(stages):
        own = _number_or_word(stage["lr"], f"train.stages.{i}.lr", meta)
        if i == 0:
            stage["lr"] = base
        elif own != AUTO_LR and first != AUTO_LR:
            stage["lr"] = base * own / first


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``key.path=value`` from the command line; the value is read as YAML (1e-4, true)."""
    import yaml

    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise TlcoreError(f"cannot read override {text!r}", "write it as key.path=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _merge_defaults(cls: type, given: Any, path: str) -> Any:
    """Turn ``given`` into plain data for ``cls`` with its defaults filled in."""
    if not isinstance(given, Mapping):
        if dataclasses.is_dataclass(given):
            return given
        raise RecipeError(path or "<recipe>", given, f"a mapping of {_keys(cls)}")
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in given:
        if key not in known:
            _unknown_key(cls, key, path)
    for name, f in known.items():
        sub = f"{path}.{name}" if path else name
        if name in given:
            value = given[name]
        elif f.default is not dataclasses.MISSING:
            value = f.default
        else:
            value = f.default_factory()  # type: ignore[misc]
        out[name] = _merge_value(hints[name], value, sub)
    return out


def _merge_value(hint: Any, value: Any, path: str) -> Any:
    nested = _dataclass_in(hint)
    if nested is not None:
        if dataclasses.is_dataclass(value):
            value = _to_plain(value)
        return _merge_defaults(nested, value, path)
    item = _tuple_item(hint)
    if item is not None and _dataclass_in(item) is not None:
        if dataclasses.is_dataclass(value) or isinstance(value, Mapping):
            raise RecipeError(path, value, "a list")
        if not isinstance(value, list | tuple):
            raise RecipeError(path, value, "a list")
        return [_merge_value(item, v, f"{path}.{i}") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(value):
        return value
    return list(value) if isinstance(value, tuple) else value


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node: Any = data
    for i, part in enumerate(parts):
        here = ".".join(parts[: i + 1])
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise RecipeError(here, part, f"an index below {len(node)}")
            key: Any = int(part)
        elif isinstance(node, dict):
            if part not in node:
                raise RecipeError(here, value, f"an existing field; known here: {sorted(node)}")
            key = part
        else:
            raise RecipeError(here, value, "a path that ends at a field")
        if last:
            old = node[key]
            if isinstance(old, dict) and not isinstance(value, Mapping):
                raise RecipeError(here, value, f"a mapping of {sorted(old)}")
            if isinstance(old, dict):
                old.update(value)
            else:
                node[key] = value
        else:
            node = node[key]


def _build(cls: type, data: Mapping[str, Any], path: str) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        sub = f"{path}.{f.name}" if path else f.name
        kind = kind_of(cls, f.name)
        meta = {**f.metadata, "kind": kind} if kind else f.metadata
        kwargs[f.name] = _convert(hints[f.name], data[f.name], sub, meta)
    obj = cls(**kwargs)
    check_consistency(obj, path)
    return obj


def _convert(hint: Any, value: Any, path: str, meta: Mapping[str, Any]) -> Any:
    nested = _dataclass_in(hint)
    if nested is not None:
        return value if isinstance(value, nested) else _build(nested, value, path)
    item = _tuple_item(hint)
    if item is not None:
        if isinstance(value, str) and _dataclass_in(item) is None:
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise RecipeError(path, value, "a list")
        return tuple(_convert(item, v, f"{path}.{i}", meta) for i, v in enumerate(value))
    if hint is Any:
        return value
    if "class_weights" in meta:
        return _class_weights(value, path, meta["class_weights"])
    if "words" in meta:
        return _number_or_word(value, path, meta)
    optional = _is_optional(hint)
    base = _non_none(hint)
    if value is None or (isinstance(value, str) and value.lower() in ("null", "~") and optional):
        if optional:
            return None
        raise RecipeError(path, value, f"a value of type {base.__name__}")
    value = _coerce(base, value, path)
    _check_meta(value, path, meta)
    return value


def _coerce(base: type, value: Any, path: str) -> Any:
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise RecipeError(path, value, "true or false")
    if base is int:
        if isinstance(value, bool) or not isinstance(value, int | str | float):
            raise RecipeError(path, value, "an integer")
        if isinstance(value, int):
            return value  # through float() a large integer would lose digits
        try:
            number = float(value)
        except ValueError:
            raise RecipeError(path, value, "an integer") from None
        # int() of NaN or infinity raises, so they are refused first
        if not math.isfinite(number) or number != int(number):
            raise RecipeError(path, value, "an integer")
        return int(number)
    if base is float:
        if isinstance(value, bool):
            raise RecipeError(path, value, "a number")
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise RecipeError(path, value, "a number") from None
        # NaN passes every range check (each comparison with it is false) and infinity
        # overflows the frameworks: neither is a setting.
        if not math.isfinite(number):
            raise RecipeError(path, value, "a finite number (not NaN or infinity)")
        return number
    if base is str:
        if isinstance(value, Path):  # a path given as a path (``--labels``, ``labels=Path(...)``)
            return str(value)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        raise RecipeError(path, value, "a string")
    return value


def _check_meta(value: Any, path: str, meta: Mapping[str, Any]) -> None:
    choices = meta.get("choices")
    if choices and value not in choices and meta.get("kind"):
        check(meta["kind"], value, path)  # open to plugins: asks them, only now
    elif choices and value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        extra = f" (did you mean {close[0]!r}?)" if close else ""
        raise RecipeError(path, value, "one of " + ", ".join(choices) + extra)
    lo, hi = meta.get("min"), meta.get("max")
    # Written as "not inside" so that NaN, for which every comparison is false, fails too.
    if lo is not None and not value >= lo:
        raise RecipeError(path, value, f"a number >= {lo}" + (f" and <= {hi}" if hi else ""))
    if hi is not None and not value <= hi:
        raise RecipeError(path, value, f"a number <= {hi}" + (f" and >= {lo}" if lo else ""))


def _class_weights(value: Any, path: str, words: tuple[str, ...]) -> str | dict[str, float]:
    """``train.class_weights``: one of ``words`` (``none``, ``balanced``), or a mapping of class
    names to finite weights > 0 (whether it names every class is checked against the data,
    when the run starts: :func:`tlcore.train.balance.class_weights`)."""
    if isinstance(value, str):
        if value.lower() in words:
            return value.lower()
        close = difflib.get_close_matches(value.lower(), words, n=1)
        extra = f" (did you mean {close[0]!r}?)" if close else ""
        raise RecipeError(
            path, value, f"{' or '.join(words)}, or a mapping {{class name: weight}}" + extra
        )
    if not isinstance(value, Mapping) or not value:
        raise RecipeError(path, value, f"{' or '.join(words)}, or a mapping {{class name: weight}}")
    weights: dict[str, float] = {}
    for name, weight in value.items():
        where = f"{path}.{name}"
        if isinstance(name, bool) or not isinstance(name, str | int):
            raise RecipeError(where, name, "a class name")
        number = _coerce(float, weight, where)  # refuses NaN and infinity
        if not number > 0:
            raise RecipeError(where, weight, "a weight > 0 (leave a class at 1 to keep it as is)")
        weights[str(name)] = number
    return weights


def _number_or_word(value: Any, path: str, meta: Mapping[str, Any]) -> float | str:
    """A field that takes a finite number in its range or one of its ``words`` (a stage's
    ``lr``: a rate or ``auto``)."""
    words = meta["words"]
    if isinstance(value, str) and value.strip().lower() in words:
        return value.strip().lower()
    try:
        number = _coerce(float, value, path)
    except RecipeError:
        raise RecipeError(path, value, "a finite number or " + " or ".join(words)) from None
    _check_meta(number, path, {k: v for k, v in meta.items() if k != "words"})
    return number


def _unknown_key(cls: type, key: str, path: str) -> None:
    names = [f.name for f in dataclasses.fields(cls)]
    close = difflib.get_close_matches(str(key), names, n=1)
    extra = f" (did you mean {close[0]!r}?)" if close else ""
    where = f"{path}.{key}" if path else str(key)
    raise RecipeError(where, key, f"a known field: {', '.join(names)}{extra}")


def _keys(cls: type) -> str:
    return ", ".join(f.name for f in dataclasses.fields(cls))


def _is_optional(hint: Any) -> bool:
    return type(None) in typing.get_args(hint)


def _non_none(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else Any
    return hint


def _dataclass_in(hint: Any) -> type | None:
    base = _non_none(hint)
    return base if isinstance(base, type) and dataclasses.is_dataclass(base) else None


def _tuple_item(hint: Any) -> Any:
    base = _non_none(hint)
    if typing.get_origin(base) is tuple:
        return typing.get_args(base)[0]
    return None
