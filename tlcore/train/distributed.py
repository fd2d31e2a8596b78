"""What makes a distributed run the same run as one process: shards, gathers, broadcasts,
and rank 0 deciding for all.

The backend joins the processes and exchanges gradients (``tl_setup``); the driver uses its
:class:`~tlcore.parallel.Collective`, numpy in and out, for everything else:

- every rank draws the same permutation and takes its share of each global batch
  (:func:`local_batch`), so ``batch_size`` stays the global batch;
- features and validation outputs are computed on each rank's contiguous shard
  (:func:`shard`) and gathered in order (:func:`gather_rows`), so every rank computes the same
  metrics and takes the same early-stopping decision;
- rank 0 alone touches the run folder; what it finds (an error too) is broadcast
  (:func:`on_rank0`), so no rank waits for a peer that has already failed.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from tlcore.errors import TlcoreError
from tlcore.parallel import Collective

T = TypeVar("T")


def shard(n: int, collective: Collective) -> np.ndarray:
    """This rank's contiguous share of ``range(n)`` (possibly empty); the shards of all ranks,
    in rank order, are ``range(n)``."""
    return np.array_split(np.arange(n), collective.world_size)[collective.rank]


def local_batch(batch: np.ndarray, collective: Collective) -> tuple[np.ndarray, float]:
    """This rank's part of the global ``batch`` and its share of it (its images over the
    batch's): ``np.array_split`` in rank order, so the parts of all ranks are the batch."""
    part = np.array_split(batch, collective.world_size)[collective.rank]
    return part, len(part) / max(len(batch), 1)


def usable_batches(batches: list[np.ndarray], world_size: int) -> list[np.ndarray]:
    """The global batches every rank has images of: a last batch smaller than the number of
    processes would leave one with nothing to compute, so it is left out of the epoch (at most
    ``world_size - 1`` images, different ones each epoch, since the order is shuffled)."""
    if world_size > 1 and batches and len(batches[-1]) < world_size:
        return batches[:-1]
    return batches


def gather_rows(collective: Collective, array: np.ndarray) -> np.ndarray:
    """Every rank's ``array`` concatenated along the first axis in rank order; the ranks may
    hold different numbers of rows (none too), of the same shape otherwise."""
    if collective.world_size == 1:
        return array
    counts = collective.all_gather(np.array([len(array)], np.int64))[:, 0]
    longest = int(counts.max())
    padded = np.zeros((longest, *array.shape[1:]), dtype=array.dtype)
    padded[: len(array)] = array
    stacked = collective.all_gather(padded)
    return np.concatenate([stacked[r, : int(c)] for r, c in enumerate(counts)])


def sum_over_ranks(collective: Collective, *values: float) -> list[float]:
    """``values`` summed over the ranks (float64), on every rank."""
    if collective.world_size == 1:
        return [float(v) for v in values]
    total = collective.all_reduce(np.array(values, np.float64))
    return [float(v) for v in total]


def broadcast_bytes(collective: Collective, data: bytes | None) -> bytes:
    """Rank 0's ``data`` on every rank (the others pass ``None``): its length, then its bytes
    as int32 words, which every collective sums and broadcasts exactly."""
    if collective.world_size == 1:
        return data or b""
    length = collective.broadcast(np.array([len(data or b"")], np.int64))
    size = int(length[0])
    words = np.zeros((size + 3) // 4, np.int32)
    if collective.rank == 0 and data:
        words.view(np.uint8)[:size] = np.frombuffer(data, np.uint8)
    return collective.broadcast(words).view(np.uint8)[:size].tobytes()


def broadcast_json(collective: Collective, value: Any) -> Any:
    """Rank 0's JSON-able ``value`` on every rank."""
    if collective.world_size == 1:
        return value
    data = json.dumps(value).encode() if collective.rank == 0 else None
    return json.loads(broadcast_bytes(collective, data))


def broadcast_arrays(
    collective: Collective, arrays: dict[str, np.ndarray] | None
) -> dict[str, np.ndarray]:
    """Rank 0's named arrays (weights, optimiser state) on every rank, sent as an ``.npz``
    and read back without pickle."""
    if collective.world_size == 1:
        return dict(arrays or {})
    data = None
    if collective.rank == 0:
        buffer = io.BytesIO()
        np.savez(buffer, **(arrays or {}))
        data = buffer.getvalue()
    with np.load(io.BytesIO(broadcast_bytes(collective, data)), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def on_rank0(collective: Collective, work: Callable[[], T]) -> T | None:
    """Run ``work`` on rank 0 only and tell every rank how it went: rank 0 returns its
    result (or raises its error); another rank returns ``None``, or raises a
    :class:`TlcoreError` with rank 0's message, so that no rank waits for a failed one.

    The result itself is not sent: what the other ranks need, rank 0 broadcasts itself.
    """
    if collective.world_size == 1:
        return work()
    failure: BaseException | None = None
    result: T | None = None
    if collective.rank == 0:
        try:
            result = work()
        except BaseException as exc:  # every failure must reach the waiting ranks
            failure = exc
    message = None if failure is None else _describe(failure)
    told = broadcast_json(collective, message)
    if failure is not None:
        raise failure
    if told is not None:
        raise TlcoreError(f"rank 0 stopped the run: {told['message']}", told["hint"])
    return result


def _describe(exc: BaseException) -> dict[str, str]:
    """What the other ranks say about rank 0's failure."""
    if isinstance(exc, TlcoreError):
        return {"message": exc.message, "hint": exc.hint}
    return {
        "message": f"{type(exc).__name__}: {exc}",
        "hint": "see rank 0's output for the cause",
    }
