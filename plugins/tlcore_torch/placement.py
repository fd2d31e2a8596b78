"""Where the torch backend trains (``tl_setup``): the device, the precision and the processes,
and how a model built in the setup's scope follows them.

A model built outside any scope (the API's ``tlcore.build``, ``tl export``, the conformance
suite) has no setup: it stays where its parameters are, in float32, in one process.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tlcore.errors import TlcoreError
from tlcore.parallel import Placement, Setup, choose_gpu, cpu_name
from tlcore_torch.collective import building, join

_NO_GPU_HINT = (
    "use train.device: auto or cpu, or install a CUDA build of torch on a machine with an "
    "NVIDIA GPU and its driver"
)
AUTOCAST = {"bf16": torch.bfloat16, "16-mixed": torch.float16}
"""The dtype each reduced precision autocasts to; ``32`` does not autocast."""
_CPU = torch.device("cpu")


@dataclass
class TorchSetup(Setup):
    """:class:`~tlcore.parallel.Setup` with torch's peak-memory counter on CUDA."""

    @property
    def torch_device(self) -> torch.device:
        """:attr:`device` as a ``torch.device``."""
        return torch.device(self.device)

    def peak_memory(self) -> int | None:
        """``torch.cuda.max_memory_allocated`` on a CUDA device; else the core's answer (the
        process's peak on the CPU)."""
        device = self.torch_device
        if device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(device))
        return super().peak_memory()


def setup(placement: Placement) -> TorchSetup:
    """Resolve ``placement``'s device and precision, and join the run's other processes when
    ``torchrun`` started several (``WORLD_SIZE`` > 1).

    Raises:
        TlcoreError: the device is not here (``cuda`` without a GPU, ``cuda:N`` out of range,
            ``mps`` without Apple's GPU), or the precision cannot run on it.
    """
    world = _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", 0) if world > 1 else 0
    device = resolve_device(placement.device, local_rank, world)
    check_precision(device, placement.precision)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # before NCCL joins: each process on its own GPU
    collective = join(device, world)
    name, memory = describe_device(device)
    result = TorchSetup(
        device=str(device),
        device_name=name,
        device_memory=memory,
        precision=placement.precision,
        collective=collective,
        engine=collective.engine,
    )
    collective.setup = result
    return result


def resolve_device(word: str, local_rank: int = 0, world_size: int = 1) -> torch.device:
    """The device ``train.device`` names for the process of local rank ``local_rank``.

    ``auto``: this process's GPU (``cuda:<local rank>``) when CUDA has GPUs, else Apple's
    ``mps`` in a single process, else the CPU. ``cuda``: this process's GPU. ``cuda:N``: GPU
    N (one process per machine only: NCCL needs a GPU per process).

    Raises:
        TlcoreError: the device asked for is not here.
    """
    if word == "mps":
        return _mps(world_size)
    if word == "auto" and not torch.cuda.is_available():
        mps = getattr(torch.backends, "mps", None)
        single = world_size == 1 and mps is not None and mps.is_available()
        return torch.device("mps") if single else _CPU
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    here = _env_int("LOCAL_WORLD_SIZE", 1) if world_size > 1 else 1
    found = (f"no CUDA GPU was found (torch {torch.__version__}, CUDA "
             f"{torch.version.cuda or 'not built in'})")
    number = choose_gpu(word, count, local_rank, here, found, _NO_GPU_HINT)
    return _CPU if number is None else torch.device("cuda", number)


def _mps(world_size: int) -> torch.device:
    mps = getattr(torch.backends, "mps", None)
    if mps is None or not mps.is_available():
        raise TlcoreError(
            "train.device 'mps' needs Apple's GPU (Metal), but torch finds none here",
            "use train.device: auto or cpu",
        )
    if world_size > 1:
        raise TlcoreError(
            f"train.device 'mps' cannot train in {world_size} processes: torch.distributed "
            "does not run on Apple's GPU",
            "launch one process, or use train.device: cpu",
        )
    return torch.device("mps")


def check_precision(device: torch.device, precision: str) -> None:
    """Refuse a precision ``device`` cannot train in, with the reason.

    Raises:
        TlcoreError: ``16-mixed`` off a CUDA GPU; ``bf16`` where the device does not compute
            bfloat16 (a GPU before Ampere; a CPU or mps whose autocast does not run it).
    """
    if precision == "16-mixed" and device.type != "cuda":
        where = "a CPU" if device.type == "cpu" else f"{device.type}"
        raise TlcoreError(
            f"train.precision '16-mixed' cannot train on {device}: float16 autocast and loss "
            f"scaling are for GPUs; on {where} use bf16 or 32",
            "set train.precision: bf16 (or 32), or train on a CUDA GPU",
        )
    if precision != "bf16":
        return
    if device.type == "cuda":
        if not torch.cuda.is_bf16_supported(including_emulation=False):
            major, minor = torch.cuda.get_device_capability(device)
            raise TlcoreError(
                f"train.precision 'bf16': {torch.cuda.get_device_name(device)} (compute "
                f"capability {major}.{minor}) does not compute bfloat16 natively",
                "set train.precision: 16-mixed (or 32) on this GPU; bf16 needs Ampere or later",
            )
    elif not _autocasts(device, torch.bfloat16):
        raise TlcoreError(
            f"train.precision 'bf16': torch's autocast on {device} does not compute bfloat16",
            "set train.precision: 32",
        )


def _autocasts(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether a matrix product under autocast on ``device`` really runs in ``dtype``."""
    try:
        ones = torch.ones(2, 2, device=device)
        with torch.autocast(device.type, dtype=dtype):
            return torch.nn.functional.linear(ones, ones).dtype == dtype
    except RuntimeError:  # the device type has no autocast for dtype
        return False


def describe_device(device: torch.device) -> tuple[str, int | None]:
    """What ``device`` is and its memory in bytes (known on CUDA)."""
    if device.type == "cuda":
        memory = torch.cuda.get_device_properties(device).total_memory
        return torch.cuda.get_device_name(device), int(memory)
    if device.type == "mps":
        return "Apple GPU (mps)", None
    return cpu_name(), None


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    return int(text) if text.isdigit() else default


# --- what a model built in a scope carries ---------------------------------------------------


def place(model: nn.Module) -> None:
    """Put a model being built inside a setup's scope on its device and remember the setup
    (``model.setup``); outside any scope, leave it as it is."""
    current = building()
    if isinstance(current, TorchSetup):
        model.to(current.torch_device)
        model.setup = current


def setup_of(model: nn.Module) -> TorchSetup | None:
    """The setup ``model`` was built for, or ``None`` (built outside any scope)."""
    found = model.__dict__.get("setup")
    return found if isinstance(found, TorchSetup) else None


def precision_of(model: nn.Module) -> str:
    """The precision ``model`` trains in: its setup's, else ``32``."""
    found = setup_of(model)
    return found.precision if found is not None else "32"


def device_of(model: nn.Module) -> torch.device:
    """Where ``model``'s parameters (or buffers) live; the CPU for a model with neither."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return _CPU


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A numpy batch as a tensor on ``device``: on CUDA copied from pinned host memory
    without blocking (the copy overlaps the work already queued)."""
    tensor = torch.from_numpy(np.require(array, requirements=["C", "W"]))
    if device.type == "cpu":
        return tensor
    if device.type == "cuda":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to the precision's dtype on ``device``; nothing for ``32``."""
    dtype = AUTOCAST.get(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def exact_float32(device: torch.device) -> Iterator[None]:
    """Plain float32: no autocast, and on CUDA no TF32 in matrix products and convolutions
    (whose 10-bit mantissa would break parity with onnxruntime), restored afterwards."""
    with torch.autocast(device_type=device.type, enabled=False):
        if device.type != "cuda":
            yield
            return
        # The fp32_precision API (torch >= 2.9); mixing it with allow_tf32 is an error.
        matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
        before = (matmul.fp32_precision, conv.fp32_precision)
        matmul.fp32_precision = conv.fp32_precision = "ieee"
        try:
            yield
        finally:
            matmul.fp32_precision, conv.fp32_precision = before


def float32_cpu(model: nn.Module) -> nn.Module:
    """``model`` itself when it lives on the CPU without half-precision tensors, else a
    float32 CPU copy of it (for export), leaving the live model on its device untouched. The
    copy has no setup."""
    tensors = itertools.chain(model.parameters(), model.buffers())
    if all(t.device.type == "cpu" and t.dtype != torch.float16 and t.dtype != torch.bfloat16
           for t in tensors):
        return model
    # Share what is not the network's instead of copying it: the setup (the copy has none).
    memo = {id(model.__dict__["setup"]): None} if "setup" in model.__dict__ else {}
    clone = copy.deepcopy(model, memo)
    return clone.cpu().float()
