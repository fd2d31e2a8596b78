"""The processes of a torch run: joining them (``torch.distributed``) and the
:class:`TorchCollective` the core exchanges numpy arrays through.

A run launched by ``torchrun`` (``WORLD_SIZE`` > 1) joins one process group over
``env://``: NCCL when the process trains on a CUDA GPU, gloo otherwise. A peer that dies is
found by torchrun, which stops every worker; a peer alive but stuck, by the group's timeout
(:func:`tlcore.parallel.collective_timeout`, 30 minutes by default).
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import distributed as dist

from tlcore.errors import TlcoreError
from tlcore.parallel import TIMEOUT_ENV, Collective, collective_timeout
from tlcore_torch.replica import release_all

if TYPE_CHECKING:
    from tlcore.parallel import Setup

_BUILDING: ContextVar[Any] = ContextVar("tlcore_torch_building", default=None)

_OPS = {"sum": "SUM", "max": "MAX", "min": "MIN"}
_WIRE = {np.dtype(t) for t in (np.float32, np.float64, np.int32, np.int64, np.uint8)}
"""The dtypes gloo reduces (NCCL takes them too); others travel widened (:func:`_wire_dtype`)."""
_WIDENED = {
    np.dtype(np.bool_): np.dtype(np.int64),  # int64, not uint8: a sum over 256 ranks fits
    np.dtype(np.float16): np.dtype(np.float32),
    np.dtype(np.int8): np.dtype(np.int64),
    np.dtype(np.int16): np.dtype(np.int64),
    np.dtype(np.uint16): np.dtype(np.int64),
    np.dtype(np.uint32): np.dtype(np.int64),
}


def building() -> Setup | None:
    """The setup whose :meth:`TorchCollective.scope` is open here (models built now go to its
    device); ``None`` outside any scope."""
    return _BUILDING.get()


def join(device: torch.device, world_size: int) -> TorchCollective:
    """The processes this one trains with: the process group already initialised (by the
    user's own script), a new one over ``env://`` when ``world_size`` > 1, or this process
    alone.

    Raises:
        TlcoreError: the group cannot be joined (the launcher's variables are missing, or the
            other processes did not come within the timeout).
    """
    if dist.is_available() and dist.is_initialized():
        return TorchCollective(device, owns_group=False)
    if world_size <= 1:
        return TorchCollective(device, owns_group=False)
    if not dist.is_available():
        raise TlcoreError(
            f"{world_size} processes were launched, but this torch build has no "
            "torch.distributed",
            "install a torch build with distributed support, or launch one process",
        )
    backend = "nccl" if device.type == "cuda" else "gloo"
    wait = timedelta(seconds=collective_timeout())
    try:
        dist.init_process_group(backend, init_method="env://", timeout=wait)
    except (RuntimeError, ValueError) as exc:  # a missing variable, a port taken, no peer
        raise TlcoreError.caused_by(
            f"this process cannot join the other {world_size - 1} of the run "
            f"(torch.distributed, {backend})",
            exc,
            "launch with torchrun (it sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT); "
            f"every process must start within {wait.total_seconds():g} s ({TIMEOUT_ENV})",
        ) from None
    return TorchCollective(device, owns_group=True)


class TorchCollective(Collective):
    """The run's processes over ``torch.distributed``, numpy in and out; a world of one
    without a process group.

    Arrays travel as tensors on the device for NCCL, on the CPU for gloo, in their own dtype
    where the backend reduces it (float32/64, int32/64, uint8), else widened exactly (bool,
    float16, small integers) and returned in their own dtype. A bool sum is the logical or,
    as numpy adds bools.

    Attributes:
        device: the device the process trains on.
        setup: the :class:`~tlcore_torch.placement.TorchSetup` this collective belongs to;
            :meth:`scope` builds models for it.
        engine: ``torch.distributed (<backend>)``, or empty for one process.
    """

    def __init__(self, device: torch.device, owns_group: bool) -> None:
        self.device = device
        self.setup: Setup | None = None
        self._owns_group = owns_group
        grouped = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if grouped else 0
        self.world_size = dist.get_world_size() if grouped else 1
        local = os.environ.get("LOCAL_RANK", "").strip()
        self.local_rank = int(local) if local.isdigit() and self.world_size > 1 else 0
        self.backend = str(dist.get_backend()) if grouped else ""
        self.engine = f"torch.distributed ({self.backend})" if self.world_size > 1 else ""
        # NCCL moves only GPU tensors; gloo only CPU ones.
        self._wire_device = device if self.backend == "nccl" else torch.device("cpu")

    def all_reduce(self, array: np.ndarray, op: str = "sum") -> np.ndarray:
        """Element-wise ``sum``, ``max`` or ``min`` of ``array`` over all ranks, on every rank."""
        if op not in _OPS:
            raise ValueError(f"all_reduce op must be one of {sorted(_OPS)}, not {op!r}")
        if self.world_size == 1:
            return super().all_reduce(array, op)
        tensor, dtype = self._tensor(array)
        with _failing_loudly("all_reduce"):
            dist.all_reduce(tensor, op=getattr(dist.ReduceOp, _OPS[op]))
        return _array(tensor, dtype)

    def all_gather(self, array: np.ndarray) -> np.ndarray:
        """Every rank's ``array``, stacked in rank order: shape ``(world_size, *array.shape)``."""
        if self.world_size == 1:
            return super().all_gather(array)
        tensor, dtype = self._tensor(array)
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        with _failing_loudly("all_gather"):
            dist.all_gather(parts, tensor)
        return _array(torch.stack(parts), dtype)

    def broadcast(self, array: np.ndarray, src: int = 0) -> np.ndarray:
        """Rank ``src``'s ``array`` on every rank (the others pass an array of its shape)."""
        if not 0 <= src < self.world_size:
            raise ValueError(f"broadcast src must be a rank of 0..{self.world_size - 1}, not {src}")
        if self.world_size == 1:
            return super().broadcast(array, src)
        tensor, dtype = self._tensor(array)
        with _failing_loudly("broadcast"):
            dist.broadcast(tensor, src=src)
        return _array(tensor, dtype)

    def barrier(self) -> None:
        """Wait until every rank has arrived here (at most the group's timeout)."""
        if self.world_size == 1:
            return
        with _failing_loudly("barrier"):
            if self.backend == "nccl":  # names the GPU, or NCCL guesses one and warns
                dist.barrier(device_ids=[self.device.index or 0])
            else:
                dist.barrier()

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Models built in here (``tl_attach_head``) go to the device and remember the setup:
        its precision and these processes."""
        token = _BUILDING.set(self.setup)
        try:
            yield
        finally:
            _BUILDING.reset(token)

    def close(self) -> None:
        """Destroy the process group when this collective created it (idempotent), after the
        ``DistributedDataParallel`` wrappers that use it."""
        if self._owns_group and dist.is_available() and dist.is_initialized():
            release_all()
            gc.collect()  # a wrapper held in a reference cycle goes now, not at exit
            dist.destroy_process_group()
        self._owns_group = False

    def _tensor(self, array: np.ndarray) -> tuple[torch.Tensor, np.dtype]:
        """A fresh tensor of ``array`` on the wire device, in a dtype the backend reduces."""
        array = np.asarray(array)
        dtype = array.dtype.newbyteorder("=")  # a big-endian float32 is a float32 here
        host = torch.from_numpy(np.array(array, dtype=_wire_dtype(dtype), order="C", copy=True))
        return host.to(self._wire_device), dtype


def _wire_dtype(dtype: np.dtype) -> np.dtype:
    if dtype in _WIRE:
        return dtype
    if dtype in _WIDENED:
        return _WIDENED[dtype]
    # Every rank passes the same dtype, so every rank refuses alike: nobody is left waiting.
    raise TypeError(
        f"a collective operation cannot carry {dtype} exactly; pass float32/64, an integer "
        "type up to 32 bits, int64, uint8 or bool"
    )


def _array(tensor: torch.Tensor, dtype: np.dtype) -> np.ndarray:
    result = tensor.cpu().numpy()
    if dtype == np.bool_:
        return result != 0
    return result.astype(dtype, copy=False)


@contextlib.contextmanager
def _failing_loudly(operation: str) -> Iterator[None]:
    """A collective that fails (a peer died, the timeout passed) ends the run with an error
    naming it, not a traceback from the depths of the process group."""
    try:
        yield
    except RuntimeError as exc:  # torch's DistError types derive from it
        raise TlcoreError.caused_by(
            f"{operation} across the run's processes failed (a process died, or did not come "
            f"within {TIMEOUT_ENV} seconds)",
            exc,
            "another process of the run failed or was killed: see its error; fix it and "
            "resume the run from its last checkpoint",
        ) from exc
