"""Preparing the next batch while the device trains on this one.

On a GPU a training step returns as soon as its kernels are queued, so decoding the next
batch's images on the host at the same time keeps the device fed instead of idle between
steps. Batches are made in order by one background thread, so what they draw from a
generator (augmentation) is the same as when made one after the other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def prefetched(make: Callable[[int], T], count: int, ahead: bool) -> Iterator[T]:
    """``make(0)``, ..., ``make(count - 1)`` in order; with ``ahead``, ``make(i + 1)`` runs in a
    background thread while the caller works on ``make(i)``. An exception in ``make`` is
    raised where its result is taken."""
    if not ahead or count < 2:
        for i in range(count):
            yield make(i)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tlcore-prefetch") as pool:
        pending: Future[T] = pool.submit(make, 0)
        for i in range(count):
            current = pending.result()
            if i + 1 < count:
                pending = pool.submit(make, i + 1)
            yield current
