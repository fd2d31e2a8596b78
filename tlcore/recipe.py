"""The recipe: one frozen dataclass tree that drives a run, from YAML, TOML, flags or kwargs.

Every field is validated when the recipe is built, before any framework is imported; a bad
value raises :class:`~tlcore.errors.RecipeError` naming the field's path, the value and what
is valid. Values come in as nested dicts (from a file), dotted overrides
(``train.stages.1.lr=1e-5``, from ``tl train --set``) or keyword shortcuts
(``tlcore.fit(data, epochs=3)``), merged in that order onto the defaults.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlcore.errors import RecipeError, TlcoreError


def _choice(*values: str) -> dict[str, Any]:
    return {"choices": values}


def _range(lo: float | None = None, hi: float | None = None) -> dict[str, Any]:
    return {"min": lo, "max": hi}


#: The ``backbone.weights`` values that mean the source's own published weights.
PRETRAINED_WEIGHTS = ("pretrained", "imagenet")


@dataclass(frozen=True)
class BackboneSpec:
    """Which pretrained network to start from.

    ``source`` is ``<kind>:<name>``, e.g. ``hf:./my-resnet``, ``hf:microsoft/resnet-18``,
    ``file:model.pt`` (TorchScript), ``keras:mobilenet_v2``, ``builtin:simple_cnn``;
    ``None`` asks the backend for its default. ``weights`` is ``pretrained`` (the source's
    own weights; ``imagenet`` is an alias), ``none`` (random initialisation) or the path of a
    weights file from another task, loaded where shapes fit. ``model`` is a user's own
    ``torch.nn.Module`` / ``keras.Model`` (Python API only).
    """

    source: str | None = None
    weights: str = "pretrained"
    input_size: int | None = field(default=None, metadata=_range(8, 4096))
    model: Any = field(default=None, compare=False, repr=False, metadata={"serialize": False})


@dataclass(frozen=True)
class FreezeSpec:
    """What stays frozen in a stage.

    ``policy``: ``all`` (the whole backbone frozen), ``none`` (nothing frozen), ``last_n``
    (the backbone frozen except its last ``n`` blocks), ``pattern`` (backbone parameters whose
    name matches the regular expression ``pattern`` are frozen). The head always trains.
    ``batchnorm``: ``frozen`` (every BatchNorm of the backbone in inference mode, its running
    statistics untouched, also in unfrozen blocks, as the Keras guide prescribes), ``follow``
    (inference mode only in frozen parts), ``train`` (all BatchNorm layers update) or
    ``auto`` (the default): ``frozen`` for a pretrained backbone; ``follow`` for a randomly
    initialised one (``weights: none``, or a source without published weights), whose
    statistics have yet to be learned wherever it trains, so that training it from scratch
    (``policy: none``) updates every BatchNorm layer. Backends never see ``auto``: the core
    resolves it.
    """

    policy: str = field(default="all", metadata=_choice("all", "none", "last_n", "pattern"))
    n: int = field(default=2, metadata=_range(0))
    pattern: str = ""
    batchnorm: str = field(default="auto", metadata=_choice("auto", "frozen", "follow", "train"))


@dataclass(frozen=True)
class HeadSpec:
    """The new classifier: pooling, optional hidden layers, dropout, a linear classifier."""

    pooling: str = field(default="avg", metadata=_choice("avg", "max", "flatten"))
    hidden: tuple[int, ...] = ()
    dropout: float = field(default=0.0, metadata=_range(0.0, 0.95))
    activation: str = field(default="relu", metadata=_choice("relu", "gelu"))


@dataclass(frozen=True)
class StageSpec:
    """One training stage: what is frozen, how it is optimised, when it stops.

    ``schedule``: ``constant``, ``cosine`` (after ``warmup``, a fraction of the stage's steps,
    of linear warm-up) or ``onecycle``. ``patience`` > 0 stops the stage after that many
    epochs without improvement of ``monitor``; ``restore_best`` then keeps the best epoch.
    ``min_steps``: the stage runs more epochs than ``epochs`` when that many would give fewer
    optimiser steps, so that a small dataset still trains (five epochs of 40 images are ten
    steps, far from converged); the run says when it extends a stage.
    """

    name: str = "stage"
    epochs: int = field(default=5, metadata=_range(0, 100_000))
    freeze: FreezeSpec = FreezeSpec()
    optimizer: str = field(default="adamw", metadata=_choice("adamw", "adam", "sgd", "rmsprop"))
    lr: float = field(default=1e-3, metadata=_range(1e-12, 10.0))
    weight_decay: float = field(default=1e-4, metadata=_range(0.0, 1.0))
    momentum: float = field(default=0.9, metadata=_range(0.0, 1.0))
    schedule: str = field(default="cosine", metadata=_choice("constant", "cosine", "onecycle"))
    warmup: float = field(default=0.0, metadata=_range(0.0, 0.9))
    label_smoothing: float = field(default=0.0, metadata=_range(0.0, 0.9))
    patience: int = field(default=0, metadata=_range(0))
    monitor: str = field(default="val_accuracy", metadata=_choice("val_accuracy", "val_loss"))
    restore_best: bool = True
    min_steps: int = field(default=0, metadata=_range(0, 10_000_000))


def default_stages() -> tuple[StageSpec, ...]:
    """The recipe practitioners use: train the head, then fine-tune the top at lr / 10.

    The head trains for at least 300 steps: on cached features they take about a second, and
    with fewer a linear head stays below a logistic regression on the same features at 5 to
    100 images per class (``benchmarks/transfer.py``). For a pretrained backbone: a randomly
    initialised one trains with :func:`scratch_stage` instead when a run keeps these stages.
    """
    return (
        StageSpec(
            name="head", epochs=5, lr=1e-3, freeze=FreezeSpec(policy="all"), min_steps=300
        ),
        StageSpec(
            name="fine_tune",
            epochs=5,
            lr=1e-4,
            warmup=0.1,
            freeze=FreezeSpec(policy="last_n", n=2),
            patience=3,
        ),
    )


#: The warm-up of :func:`scratch_stage`, a fraction of its steps.
SCRATCH_WARMUP = 0.05


def follows_default_stages(stages: tuple[StageSpec, ...]) -> bool:
    """True when ``stages`` are :func:`default_stages`, up to their ``epochs`` and ``lr``.

    Those two are what the ``epochs`` and ``lr`` shortcuts (``--epochs``, ``--lr``) change, so
    a run with them still follows the default recipe; any other change is the user's own plan.
    """
    defaults = default_stages()
    return len(stages) == len(defaults) and all(
        dataclasses.replace(stage, epochs=default.epochs, lr=default.lr) == default
        for stage, default in zip(stages, defaults, strict=True)
    )


def scratch_stage(stages: tuple[StageSpec, ...]) -> StageSpec:
    """The default recipe for a randomly initialised backbone, in place of ``stages``.

    Freezing random weights trains a head on random features, so the whole network trains in
    one stage, BatchNorm in training mode: as many epochs as ``stages`` have together, AdamW at
    the first stage's learning rate (1e-3 by default, a usual rate for AdamW from scratch),
    cosine decay after a short warm-up.
    """
    return StageSpec(
        name="scratch",
        epochs=sum(stage.epochs for stage in stages),
        lr=stages[0].lr,
        optimizer="adamw",
        schedule="cosine",
        warmup=SCRATCH_WARMUP,
        freeze=FreezeSpec(policy="none", batchnorm="train"),
    )


@dataclass(frozen=True)
class TrainSpec:
    """The stages, the batch size, the seed, and whether frozen-backbone features are cached."""

    stages: tuple[StageSpec, ...] = field(default_factory=default_stages)
    batch_size: int = field(default=32, metadata=_range(1, 65536))
    seed: int = field(default=0, metadata=_range(0))
    cache_features: bool = True


@dataclass(frozen=True)
class DataSpec:
    """Where the images are and how the validation set is made.

    ``path``: a folder with one sub-folder per class. ``val_path``: a separate validation
    folder with the same classes; without it, ``val_split`` of each class is held out (seeded
    by ``train.seed``). Left unset (``null``), it adapts to the data: 20 % of each class but at
    least 2 images, and nothing at all when the smallest class has fewer than 100 images or the
    validation set would hold fewer than 50: with few images, a fifth of them is worth more as
    training data than as a measurement (:func:`tlcore.data.load_datasets`); measure such a
    model on other images (``val_path``, ``tl eval``) or set ``val_split`` to hold some out.
    ``augment``: any of ``hflip``, ``shift`` (applied to training batches; any augmentation
    turns feature caching off).
    """

    path: str | None = None
    val_path: str | None = None
    val_split: float | None = field(default=None, metadata=_range(0.0, 0.9))
    augment: tuple[str, ...] = field(default=(), metadata=_choice("hflip", "shift"))


@dataclass(frozen=True)
class ExportSpec:
    """What the end of training writes: formats, ONNX opset, quantisation, parity tolerance.

    ``quantize``: ``none``, ``static`` (int8 weights and activations, calibrated on
    ``calibration_images`` training images; the one that speeds up CNNs on CPU) or
    ``dynamic`` (int8 weights only). The int8 model becomes the bundle's default model only
    if its validation accuracy is at most ``max_accuracy_drop`` (a fraction: 0.01 is one
    point) below the float model's; ``model.onnx`` is always kept.
    """

    formats: tuple[str, ...] = ("native", "onnx")
    opset: int = field(default=17, metadata=_range(9, 30))
    quantize: str = field(default="none", metadata=_choice("none", "static", "dynamic"))
    max_accuracy_drop: float = field(default=0.01, metadata=_range(0.0, 1.0))
    calibration_images: int = field(default=300, metadata=_range(1, 100_000))
    tolerance: float = field(default=1e-4, metadata=_range(0.0, 1.0))


@dataclass(frozen=True)
class Recipe:
    """Everything a run needs, except the data arrays a Python caller may pass directly."""

    backend: str = "torch"
    backbone: BackboneSpec = BackboneSpec()
    head: HeadSpec = HeadSpec()
    train: TrainSpec = TrainSpec()
    data: DataSpec = DataSpec()
    export: ExportSpec = ExportSpec()

    def to_dict(self) -> dict[str, Any]:
        """The recipe as plain JSON-able data (user objects left out)."""
        return _to_plain(self)

    def replace(self, **overrides: Any) -> Recipe:
        """A copy with dotted overrides applied, e.g. ``replace(**{"train.seed": 3})``."""
        return build_recipe(self.to_data(), overrides)

    def to_data(self) -> dict[str, Any]:
        """Like :meth:`to_dict`, but keeping the user's own network object."""
        data = self.to_dict()
        data["backbone"]["model"] = self.backbone.model
        return data


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {
            f.name: _to_plain(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if f.metadata.get("serialize", True)
        }
    if isinstance(obj, tuple | list):
        return [_to_plain(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------------------------
# Building and validating


def load_recipe_file(path: str | Path) -> dict[str, Any]:
    """Read a recipe file (``.yaml``/``.yml``, ``.toml`` or ``.json``) into a plain dict."""
    p = Path(path)
    if not p.is_file():
        raise TlcoreError(f"recipe file not found: {p}", "give the path of a .yaml or .toml file")
    import yaml

    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        elif p.suffix == ".toml":
            data = tomllib.loads(text)
        elif p.suffix == ".json":
            data = json.loads(text)
        else:
            raise TlcoreError(
                f"unknown recipe file type: {p.name}", "use .yaml, .yml, .toml or .json"
            )
    except (ValueError, yaml.YAMLError) as exc:  # TOMLDecodeError is a ValueError
        raise TlcoreError(f"cannot parse recipe {p}: {exc}", "check the file's syntax") from exc
    if not isinstance(data, dict):
        raise TlcoreError(f"recipe {p} is not a mapping", "the top level holds keys like 'train:'")
    return data


#: Short names shared by CLI flags and keyword arguments, and the field each one sets.
SHORTCUTS: dict[str, str] = {
    "backend": "backend",
    "backbone": "backbone.source",
    "weights": "backbone.weights",
    "input_size": "backbone.input_size",
    "batch_size": "train.batch_size",
    "seed": "train.seed",
    "cache_features": "train.cache_features",
    "data": "data.path",
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
    return _build(Recipe, _merge_defaults(Recipe, data, ""), "")


def _set_base_lr(stages: list[dict[str, Any]], lr: Any) -> None:
    base = _coerce(float, lr, "lr")
    _check_meta(base, "lr", _range(1e-12, 10.0))
    first = float(stages[0]["lr"])
    for stage in stages:
        stage["lr"] = base * float(stage["lr"]) / first


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
        kwargs[f.name] = _convert(hints[f.name], data[f.name], sub, f.metadata)
    obj = cls(**kwargs)
    _check_consistency(obj, path)
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
        try:
            number = float(value)
        except ValueError:
            raise RecipeError(path, value, "an integer") from None
        if number != int(number):
            raise RecipeError(path, value, "an integer")
        return int(number)
    if base is float:
        if isinstance(value, bool):
            raise RecipeError(path, value, "a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise RecipeError(path, value, "a number") from None
    if base is str:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        raise RecipeError(path, value, "a string")
    return value


def _check_meta(value: Any, path: str, meta: Mapping[str, Any]) -> None:
    choices = meta.get("choices")
    if choices and value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        extra = f" (did you mean {close[0]!r}?)" if close else ""
        raise RecipeError(path, value, "one of " + ", ".join(choices) + extra)
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and value < lo:
        raise RecipeError(path, value, f"a number >= {lo}" + (f" and <= {hi}" if hi else ""))
    if hi is not None and value > hi:
        raise RecipeError(path, value, f"a number <= {hi}" + (f" and >= {lo}" if lo else ""))


def _check_consistency(obj: Any, path: str) -> None:
    prefix = f"{path}." if path else ""
    if isinstance(obj, FreezeSpec) and obj.policy == "pattern":
        import re

        if not obj.pattern:
            raise RecipeError(prefix + "pattern", obj.pattern, "a regular expression")
        try:
            re.compile(obj.pattern)
        except re.error as exc:
            raise RecipeError(prefix + "pattern", obj.pattern, f"a valid regex ({exc})") from None
    if isinstance(obj, BackboneSpec) and not obj.weights:
        raise RecipeError(prefix + "weights", obj.weights, "pretrained, imagenet, none or a path")
    if isinstance(obj, HeadSpec):
        for i, width in enumerate(obj.hidden):
            if width < 1:
                raise RecipeError(f"{prefix}hidden.{i}", width, "a positive layer width")
    if isinstance(obj, TrainSpec):
        if not obj.stages:
            raise RecipeError(prefix + "stages", [], "at least one stage")
        names = [s.name for s in obj.stages]
        if len(set(names)) != len(names):
            raise RecipeError(prefix + "stages", names, "stages with distinct names")
    if isinstance(obj, ExportSpec):
        for i, fmt in enumerate(obj.formats):
            if not fmt or not fmt.replace("_", "").isalnum():
                raise RecipeError(f"{prefix}formats.{i}", fmt, "a format name such as onnx")
        if obj.quantize != "none" and "onnx" not in obj.formats:
            raise RecipeError(
                prefix + "quantize", obj.quantize, "none, unless export.formats includes onnx"
            )


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
