"""Weights and optimiser state as numpy arrays, weights files, and the native export."""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tlcore.errors import TlcoreError
from tlcore.files import atomic_path, read_arrays
from tlcore.interfaces import EMA_PREFIX, LoadReport
from tlcore.stepstate import ema_averages
from tlcore.weights import match_weights, require_finite, require_some_loaded
from tlcore_torch import amp, ema

NATIVE_FILE = "model.pt"
_SAVE_HINT = (
    "save weights with torch.save(model.state_dict(), path) or as .safetensors; tlcore "
    "unpickles tensors only, never code, whatever the source of the file"
)
_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "weights")


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A detached CPU numpy copy of ``tensor`` (bfloat16 and friends become float32)."""
    tensor = tensor.detach().cpu()
    if tensor.dtype in (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2):
        tensor = tensor.float()
    return tensor.numpy().copy()


def get_weights(model: nn.Module) -> dict[str, np.ndarray]:
    """Every parameter and persistent buffer of ``model`` (BatchNorm running statistics and
    ``num_batches_tracked`` included, the latter as int64), copied out as numpy arrays."""
    return {name: to_numpy(value) for name, value in model.state_dict().items()}


def set_weights(model: nn.Module, weights: Mapping[str, np.ndarray], strict: bool) -> LoadReport:
    """Copy numpy arrays into ``model`` by name, deciding what fits with ``tlcore.weights``,
    onto each tensor's own device and dtype (a checkpoint written on a GPU loads on a CPU
    and the other way round).

    Raises:
        TlcoreError: ``strict`` and a name or shape differs.
    """
    current = model.state_dict()
    views = {name: _shape_only(value) for name, value in current.items()}
    to_load, report = match_weights(views, weights, strict=strict)
    with torch.no_grad():
        for name, array in to_load.items():
            target = current[name]
            source = torch.from_numpy(np.require(array, requirements=["C", "W"]))
            target.copy_(source.to(device=target.device, dtype=target.dtype))
    return report


def _shape_only(tensor: torch.Tensor) -> np.ndarray:
    """A zero-cost stand-in carrying only the tensor's shape (for name and shape matching)."""
    return np.broadcast_to(np.empty((), dtype=np.uint8), tuple(tensor.shape))


def read_weights_file(path: Path) -> dict[str, np.ndarray]:
    """Read a state dict from ``.pt``/``.pth``/``.bin`` (``torch.load(weights_only=True)``),
    ``.safetensors`` or ``.npz`` (a tlcore checkpoint), without unpickling code.

    A checkpoint dict holding the state dict under ``state_dict``, ``model_state_dict``,
    ``model`` or ``weights`` is unwrapped.

    Raises:
        TlcoreError: the file is missing, unreadable, or holds no tensors.
    """
    if not path.is_file():
        raise TlcoreError(
            f"weights file not found: {path}",
            "backbone.weights is 'pretrained', 'none' or the path of a weights file",
        )
    if path.suffix == ".npz":
        return read_arrays(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            data: object = load_file(str(path), device="cpu")
        else:
            with warnings.catch_warnings():  # "pickle protocol 4 ..." is not the user's concern
                warnings.simplefilter("ignore")
                data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # what torch's weights-only unpickler refuses
        raise TlcoreError(
            f"cannot read weights file {path}: it is not a state dict of tensors saved by "
            "torch.save (it is damaged, or holds pickled objects other than tensors, which "
            "tlcore never loads)",
            _SAVE_HINT,
        ) from None
    except Exception as exc:  # torch and safetensors raise many types for a bad file
        raise TlcoreError.caused_by(
            f"cannot read weights file {path} (damaged, cut short, or not a weights file)",
            exc, _SAVE_HINT,
        ) from None
    state = _unwrap_state_dict(data)
    if not state:
        raise TlcoreError(
            f"weights file {path} holds no tensors by name",
            "save it with torch.save(model.state_dict(), path)",
        )
    return {name: to_numpy(value) for name, value in state.items()}


def _unwrap_state_dict(data: object) -> dict[str, torch.Tensor]:
    if isinstance(data, Mapping):
        tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
        for key in _STATE_DICT_KEYS:
            if isinstance(data.get(key), Mapping):
                return _unwrap_state_dict(data[key])
    return {}


def load_weights_file(network: nn.Module, path: Path) -> LoadReport:
    """Load a weights file into ``network`` where names and shapes fit.

    Raises:
        TlcoreError: the file holds NaN or inf, or nothing in it fits the network.
    """
    incoming = read_weights_file(path)
    require_finite(incoming, path)
    report = set_weights(network, incoming, strict=False)
    return require_some_loaded(report, path, network.state_dict())


def get_optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, np.ndarray]:
    """The optimiser's per-parameter state as ``{"<param index>.<key>": array}``, host numpy
    from whatever device, and for ``16-mixed`` its loss scaler's (``scaler.<key>``).

    The index is the parameter's position in the optimiser's groups; hyper-parameters are not
    included (they come from the recipe, and the learning rate is set every step). The
    weights' moving average (``train.ema``) comes as ``ema.<weight name>`` entries.
    """
    out: dict[str, np.ndarray] = {**amp.scaler_state(optimizer), **ema.state(optimizer)}
    for index, entries in optimizer.state_dict()["state"].items():
        for key, value in entries.items():
            if value is None:
                continue
            array = to_numpy(value) if isinstance(value, torch.Tensor) else np.asarray(value)
            out[f"{index}.{key}"] = array
    return out


def set_optimizer_state(optimizer: torch.optim.Optimizer, state: Mapping[str, np.ndarray]) -> None:
    """Restore what :func:`get_optimizer_state` returned into a new optimiser of the same
    parameters, each entry on its parameter's device (``torch.optim`` places it); loss-scaler
    entries go to the optimiser's scaler (ignored when it trains in another precision).

    Raises:
        TlcoreError: an entry names a parameter index the optimiser does not have, or its shape
            does not fit the parameter.
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    amp.restore_scaler(optimizer, {k: v for k, v in state.items() if k.startswith(amp.PREFIX)})
    ema.restore(optimizer, ema_averages(state))
    entries: dict[int, dict[str, torch.Tensor]] = {}
    for name, array in state.items():
        if name.startswith((amp.PREFIX, EMA_PREFIX)):
            continue
        index_text, _, key = name.partition(".")
        if not index_text.isdigit() or not key or int(index_text) >= len(params):
            raise TlcoreError(
                f"optimiser state entry {name!r} does not fit this optimiser "
                f"({len(params)} parameters)",
                "resume with the same model, freeze policy and optimiser",
            )
        index = int(index_text)
        tensor = torch.from_numpy(np.require(array, requirements=["C", "W"]).copy())
        if tensor.ndim and tuple(tensor.shape) != tuple(params[index].shape):
            raise TlcoreError(
                f"optimiser state {name!r} has shape {tuple(tensor.shape)}, "
                f"the parameter {tuple(params[index].shape)}",
                "resume with the same model, freeze policy and optimiser",
            )
        entries.setdefault(index, {})[key] = tensor
    full = optimizer.state_dict()
    full["state"] = entries
    optimizer.load_state_dict(full)


def export_native(
    model: nn.Module, folder: Path, example: np.ndarray | None = None, opset: int | None = None
) -> Path:
    """Write ``folder/model.pt``: the state dict on the CPU, floating-point tensors as float32
    whatever the device and precision the model trained in, loadable with
    ``torch.load(weights_only=True)``, written atomically. ``example`` and ``opset`` are not
    needed (no tracing, no ONNX)."""
    target = folder / NATIVE_FILE
    state = {name: _host_float32(value) for name, value in model.state_dict().items()}
    with atomic_path(target) as temp:
        torch.save(state, temp)
    return target


def _host_float32(tensor: torch.Tensor) -> torch.Tensor:
    tensor = tensor.detach().cpu()
    return tensor.float() if tensor.is_floating_point() else tensor
