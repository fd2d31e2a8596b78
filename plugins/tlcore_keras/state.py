"""Weights and optimiser state as numpy arrays, weights files, and the native export.

Weights cross the boundary by stable name (:mod:`tlcore_keras.names`):
``backbone/<layer>/<var>`` and ``head/<layer>/<var>``. Which arrays load where is decided by
:func:`tlcore.weights.match_weights`; for non-strict loads the names are matched with ``.``
in place of ``/`` so that its prefix alignment applies (a full model's
``backbone/conv/kernel`` into a bare backbone's ``conv/kernel``).

Weights files (``backbone.weights=<path>``):

- ``.npz``: a tlcore checkpoint (``native/weights.npz``), by stable name;
- ``.h5`` in the Keras 2 layout (the files ``keras.applications`` downloads, and Keras 2
  ``save_weights``): by ``<layer>/<weight>`` name;
- ``.weights.h5`` (Keras 3 ``save_weights``) and ``.keras`` (``model.save``, the weights
  inside): by their position in the model's structure, the way Keras itself loads them
  (``layers/conv2d/vars/0``), which needs no layer names. The model's own structural paths come
  from Keras' saving code run against an in-memory store.
"""

from __future__ import annotations

import contextlib
import io
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tlcore.errors import TlcoreError
from tlcore.files import atomic_path, read_arrays
from tlcore.interfaces import EMA_PREFIX, LoadReport
from tlcore.stepstate import ema_averages
from tlcore.weights import match_weights, require_finite, require_some_loaded
from tlcore_keras import ema
from tlcore_keras.model import TransferModel, float32_compute
from tlcore_keras.names import weight_entries
from tlcore_keras.training import StageOptimizer

NATIVE_FILE = "model.keras"
_KERAS_WEIGHTS_MEMBER = "model.weights.h5"
_NUMPY_COPY_NOTE = "__array__ implementation doesn't accept a copy keyword"
_FORMATS = ".npz (tlcore), .weights.h5 or .h5 (Keras save_weights), .keras (Keras model.save)"


# --- by name -------------------------------------------------------------------------------


def get_weights(model: TransferModel) -> dict[str, np.ndarray]:
    """Every weight of ``model`` (BatchNorm moving statistics included) as numpy copies."""
    return {name: np.array(variable.numpy(), copy=True) for name, variable in model.entries()}


def set_weights(
    model: TransferModel, weights: Mapping[str, np.ndarray], strict: bool
) -> LoadReport:
    """Copy numpy arrays into ``model`` by stable name.

    A model built under a strategy is assigned in its scope (cross-replica): every copy of
    a variable takes the value.

    Raises:
        TlcoreError: ``strict`` and a name or shape differs.
    """
    with model.scope():
        return assign(dict(model.entries()), weights, strict=strict)


def assign(
    current: Mapping[str, Any], incoming: Mapping[str, np.ndarray], *, strict: bool
) -> LoadReport:
    """Assign incoming arrays to the variables of ``current`` where names and shapes match."""
    if strict:
        to_load, report = match_weights(current, incoming, strict=True)
    else:
        to_load, report = _match_dotted(current, incoming)
    for name, array in to_load.items():
        variable = current[name]
        variable.assign(np.asarray(array, dtype=variable.dtype))
    return report


def _match_dotted(
    current: Mapping[str, Any], incoming: Mapping[str, np.ndarray]
) -> tuple[dict[str, Any], LoadReport]:
    """``match_weights`` with ``/`` read as ``.``, its prefix separator (when no name has one)."""
    names = [*current, *incoming]
    if any("." in name for name in names):
        return match_weights(current, incoming)
    to_load, report = match_weights(
        {k.replace("/", "."): v for k, v in current.items()},
        {k.replace("/", "."): v for k, v in incoming.items()},
    )

    def back(items: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(name.replace(".", "/") for name in items)

    report = LoadReport(
        back(report.loaded), back(report.mismatched), back(report.missing), back(report.unexpected)
    )
    return {k.replace(".", "/"): v for k, v in to_load.items()}, report


# --- weights files -------------------------------------------------------------------------


def read_weights_file(path: Path) -> tuple[dict[str, np.ndarray], bool]:
    """Read a weights file into ``({name: array}, by_structure)``, without unpickling.

    ``by_structure`` is ``True`` for Keras 3 files, whose names are structural paths.

    Raises:
        TlcoreError: the file is missing, of an unknown kind, or unreadable.
    """
    if not path.is_file():
        raise TlcoreError(
            f"weights file not found: {path}",
            _run_file_hint(path)
            or "backbone.weights is 'pretrained', 'none' or the path of a weights file: "
            + _FORMATS,
        )
    if path.suffix == ".npz":
        return read_arrays(path), False
    try:
        if path.suffix == ".keras":
            with zipfile.ZipFile(path) as archive:
                data = archive.read(_KERAS_WEIGHTS_MEMBER)
            with h5py.File(io.BytesIO(data), "r") as h5:
                return _structural_arrays(h5), True
        if path.suffix == ".h5":
            with h5py.File(path, "r") as h5:
                root = h5.get("model_weights", h5)
                if "layer_names" in root.attrs:
                    return _legacy_arrays(root), False
                return _structural_arrays(h5), True
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise TlcoreError.caused_by(
            f"cannot read weights file {path} (damaged, cut short, or not a weights file)",
            exc, "give a weights file: " + _FORMATS,
        ) from None
    raise TlcoreError(
        f"unknown weights file type: {path.name}",
        _run_file_hint(path) or "give a weights file: " + _FORMATS,
    )


def _run_file_hint(path: Path) -> str:
    """A hint naming the right file when ``path`` is a run folder, its ``native/`` folder, a
    bundle's ONNX file or a PyTorch file; empty otherwise."""
    native = path / "native" if (path / "native").is_dir() else path
    if path.is_dir() and (native / NATIVE_FILE).is_file():
        return (
            f"a run folder is not a weights file: pass {native / 'weights.npz'} (or "
            f"{native / NATIVE_FILE}) with the source that run trained"
        )
    if path.suffix == ".onnx":
        return (
            "an ONNX bundle cannot be loaded back for training: pass the run's "
            "native/weights.npz (or native/model.keras) instead"
        )
    if path.suffix in (".pt", ".pth"):
        return (
            "that is a PyTorch file: train with --backend torch to start from it; the keras "
            "backend reads " + _FORMATS
        )
    return ""


def _text(value: Any) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _legacy_arrays(root: h5py.Group) -> dict[str, np.ndarray]:
    """Keras 2 layout: a group per layer, its ``weight_names`` attribute (``conv/kernel:0``)."""
    out = {}
    for layer in map(_text, root.attrs["layer_names"]):
        group = root[layer]
        for weight in map(_text, group.attrs.get("weight_names", [])):
            short = weight.rsplit("/", 1)[-1].split(":", 1)[0]
            out[f"{layer}/{short}"] = np.asarray(group[weight])
    return out


def _structural_arrays(h5: h5py.File) -> dict[str, np.ndarray]:
    """Keras 3 layout: every dataset by its path (``layers/conv2d/vars/0``)."""
    out: dict[str, np.ndarray] = {}

    def visit(name: str, item: Any) -> None:
        if isinstance(item, h5py.Dataset):
            out[name] = np.asarray(item)

    h5.visititems(visit)
    return out


def structural_variables(model: Any) -> dict[str, Any]:
    """The variables of ``model`` by the path Keras 3 stores them under in weights files.

    Runs Keras' own saving walk against an in-memory store that keeps the variables instead
    of writing them, so the paths are exactly Keras' (``layers/functional/layers/conv2d/vars/0``).

    Raises:
        TlcoreError: this Keras version's saving internals differ from the ones known here.
    """
    try:
        from keras.src.saving import saving_lib

        store = saving_lib.NpzIOStore("unused.npz", mode="w")
        saving_lib._save_state(model, store, None, "", set())
    except (ImportError, AttributeError, TypeError, ValueError) as exc:
        raise TlcoreError(
            f"this Keras version's weights files cannot be matched by structure ({exc})",
            "pass a .npz of the weights by name (tl_get_weights) instead",
        ) from None
    out = {}
    for path, values in store.contents.items():
        base = "" if path == "__root__" else f"{path}/"
        for key, value in values.items():
            out[f"{base}vars/{key}"] = value
    return out


_LEAF_JOIN = "::"


def _one_leaf(path: str) -> str:
    """``layers/dense/vars/0`` → ``layers/dense/vars::0``: the weight's leaf as one part."""
    head, sep, index = path.rpartition("/")
    return f"{head}{_LEAF_JOIN}{index}" if sep and head.rpartition("/")[2] == "vars" else path


def load_weights_file(network: Any, path: Path) -> LoadReport:
    """Load a weights file into a Keras network where names (or structure) and shapes fit.

    The report names the network's weights by stable name; ``unexpected`` holds the file's own
    names.

    Raises:
        TlcoreError: the file cannot be read, holds NaN or inf, or nothing in it fits.
    """
    incoming, by_structure = read_weights_file(path)
    require_finite(incoming, path)
    stable = {e.name: e.variable for e in weight_entries(network)}
    if by_structure:
        named = {id(v): name for name, v in stable.items()}
        structural = structural_variables(network)
        # ``vars/0`` is one weight's name: kept as one component, prefix alignment never
        # strips the layer's own path from it (which would match layers by position alone).
        current = {_one_leaf(p): v for p, v in structural.items() if id(v) in named}
        report = assign(current, {_one_leaf(p): a for p, a in incoming.items()}, strict=False)

        def rename(items: tuple[str, ...]) -> tuple[str, ...]:
            return tuple(named[id(current[p])] for p in items)

        report = LoadReport(
            rename(report.loaded),
            rename(report.mismatched),
            rename(report.missing),
            tuple(p.replace(_LEAF_JOIN, "/") for p in report.unexpected),
        )
    else:
        report = assign(stable, incoming, strict=False)
    return require_some_loaded(report, path, stable)


# --- optimiser state -----------------------------------------------------------------------


def _state_variables(opt: StageOptimizer) -> list[Any]:
    """The optimiser's variables that carry state (all but the learning rate, set per step)."""
    rate = opt.optimizer.learning_rate
    return [v for v in opt.optimizer.variables if v is not rate and v.name != "learning_rate"]


def _kind(variable: Any) -> str:
    """``iteration``, ``momentum``, ``velocity``: the last part of a slot variable's name."""
    return str(variable.name).rsplit("_", 1)[-1]


def get_optimizer_state(opt: StageOptimizer) -> dict[str, np.ndarray]:
    """The optimiser's state as ``{"<index>.<kind>": array}`` (``0.iteration``,
    ``1.momentum``, ...), the index being the variable's position in the optimiser; the
    weights' moving average (``train.ema``) as ``ema.<weight name>`` entries."""
    return {
        **{
            f"{i}.{_kind(v)}": np.array(v.numpy(), copy=True)
            for i, v in enumerate(_state_variables(opt))
        },
        **ema.state(opt),
    }


def set_optimizer_state(opt: StageOptimizer, state: Mapping[str, np.ndarray]) -> None:
    """Restore what :func:`get_optimizer_state` returned into an optimiser of the same
    variables.

    Raises:
        TlcoreError: an entry names an index the optimiser does not have, or its shape does not
            fit.
    """
    variables = _state_variables(opt)
    ema.restore(opt, ema_averages(state))
    state = {k: v for k, v in state.items() if not k.startswith(EMA_PREFIX)}
    with opt.strategy.scope() if opt.strategy is not None else contextlib.nullcontext():
        _restore_state(variables, state)


def _restore_state(variables: list[Any], state: Mapping[str, np.ndarray]) -> None:
    for name, array in state.items():
        index_text, _, kind = name.partition(".")
        if not index_text.isdigit() or int(index_text) >= len(variables):
            raise TlcoreError(
                f"optimiser state entry {name!r} does not fit this optimiser "
                f"({len(variables)} state variables)",
                "resume with the same model, freeze policy and optimiser",
            )
        variable = variables[int(index_text)]
        value = np.asarray(array)
        if tuple(value.shape) != tuple(variable.shape) or kind != _kind(variable):
            raise TlcoreError(
                f"optimiser state {name!r} has shape {tuple(value.shape)}, the optimiser's "
                f"{index_text}.{_kind(variable)} {tuple(variable.shape)}",
                "resume with the same model, freeze policy and optimiser",
            )
        variable.assign(value.astype(variable.dtype))


# --- native export -------------------------------------------------------------------------


def export_native(
    model: TransferModel,
    folder: Path,
    example: np.ndarray | None = None,
    opset: int | None = None,
) -> Path:
    """Write ``folder/model.keras``: the full model (uint8 images → logits), atomically;
    ``example`` and ``opset`` are not needed (no tracing, no ONNX).

    For a later run it is both a ``file:`` backbone (the trained backbone alone, with its
    normalisation) and a ``backbone.weights`` file for the same architecture (matched by
    structure; ``native/weights.npz`` next to it is matched by name).

    Loads with ``keras.saving.load_model(path, safe_mode=True)`` once ``tlcore_keras.model``
    is imported (it registers the preprocessing layer). Written with float32 layers whatever
    the training precision, like every export.
    """
    # Keras' public ``model.save`` insists on a path ending in ``.keras``, which the temporary
    # file of an atomic write does not; its saving library writes the same archive to an open
    # file.
    from keras.src.saving import saving_lib

    target = folder / NATIVE_FILE
    with float32_compute(model), atomic_path(target) as temp, temp.open("wb") as fh, \
            warnings.catch_warnings():
        # Keras' own saving code, under numpy 2; the values are written all the same.
        warnings.filterwarnings("ignore", _NUMPY_COPY_NOTE, DeprecationWarning)
        saving_lib.save_model(model.full, fh)
    return target
