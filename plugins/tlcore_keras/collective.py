"""The processes of a Keras run: :class:`KerasCollective`, numpy in and out, over a
``tf.distribute`` strategy's collectives.

Every operation is one compiled function per kind and dtype (the array travels flat, so no
shape retraces it) that runs ``strategy.run`` of the replica context's ``all_reduce`` or
``all_gather``: the same collectives the gradients travel by, under the same communication
options (``RING`` on CPUs, ``NCCL`` on GPUs) and timeout. ``max`` and ``min``, which
``tf.distribute`` does not reduce, are an all-gather reduced here; ``broadcast`` is a sum in
which every rank but the source adds zeros.

A peer that dies is found by TensorFlow's coordination service (its heartbeats stop: every
collective is aborted within seconds, naming the task) or by the timeout
(:func:`tlcore.parallel.collective_timeout`) for one alive but stuck; either way the
operation ends in a :class:`~tlcore.errors.TlcoreError` that names the workers that no
longer answer.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tlcore.errors import TlcoreError
from tlcore.parallel import TIMEOUT_ENV, Collective, collective_timeout

PEER_ERRORS = (
    tf.errors.DeadlineExceededError,  # the timeout passed
    tf.errors.UnavailableError,  # the health check found a peer down
    tf.errors.CancelledError,
    tf.errors.AbortedError,
)
"""What a collective raises when a peer died or did not take part in time."""

# What the CPU ring and NCCL reduce; other dtypes travel widened and come back as they were.
# Not int32: tf.distribute keeps int32 tensors on the host and will not all-reduce them.
_WIRE = {np.dtype(t) for t in (np.float32, np.float64, np.int64)}


class KerasCollective(Collective):
    """The processes of a run over a ``tf.distribute`` strategy, and the scope a model is
    built in: the strategy's scope (or a device's) with the run's Keras dtype policy.

    With one process (no strategy, or a ``MirroredStrategy`` over this machine's GPUs) the
    operations are the single process's; with ``MultiWorkerMirroredStrategy`` every worker is
    one rank, in the order of its replicas (the chief, then the workers).

    Args:
        strategy: the run's strategy, or ``None``.
        policy: the Keras dtype policy models are built with (``float32``,
            ``mixed_bfloat16``, ``mixed_float16``).
        rank, world_size, local_rank: this process among the run's.
        peers: every rank's ``host:port`` (from ``TF_CONFIG``), to name the ones that died.
        device: a ``tf.device`` models are built under and run on (``/cpu:0`` when a CPU
            run could no longer hide the GPUs from TensorFlow), or ``None``.
    """

    def __init__(
        self,
        strategy: Any = None,
        policy: str = "float32",
        *,
        rank: int = 0,
        world_size: int = 1,
        local_rank: int = 0,
        peers: tuple[str, ...] = (),
        device: str | None = None,
    ) -> None:
        self.strategy = strategy
        self.device = device
        self.policy = policy
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.peers = peers
        self._functions: dict[tuple[str, np.dtype], Callable[..., Any]] = {}

    def all_reduce(self, array: np.ndarray, op: str = "sum") -> np.ndarray:
        """Element-wise ``sum``, ``max`` or ``min`` over the ranks, on every rank."""
        if op not in ("sum", "max", "min"):
            raise TlcoreError(f"all_reduce op {op!r} is unknown", "use sum, max or min")
        array = np.asarray(array)
        if self.world_size == 1:
            return np.array(array, copy=True)
        if op == "sum":
            return self._run("sum", array)
        gathered = self.all_gather(array)
        return (gathered.max if op == "max" else gathered.min)(axis=0)

    def all_gather(self, array: np.ndarray) -> np.ndarray:
        """Every rank's ``array`` stacked in rank order: ``(world_size, *array.shape)``."""
        array = np.asarray(array)
        if self.world_size == 1:
            return np.array(array, copy=True)[None]
        return self._run("gather", array)

    def broadcast(self, array: np.ndarray, src: int = 0) -> np.ndarray:
        """Rank ``src``'s ``array`` on every rank: a sum to which the others add zeros."""
        array = np.asarray(array)
        if self.world_size == 1:
            return np.array(array, copy=True)
        mine = array if self.rank == src else np.zeros_like(array)
        return self._run("sum", mine)

    def barrier(self) -> None:
        """Wait until every rank has arrived here (a sum of one number)."""
        if self.world_size > 1:
            self._run("sum", np.zeros(1, np.int64))

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Build models and optimisers in the strategy's scope (their variables are the
        strategy's), on the device, with the run's dtype policy, restored afterwards."""
        before = keras.config.dtype_policy()
        keras.config.set_dtype_policy(self.policy)
        try:
            with contextlib.ExitStack() as stack:
                if self.strategy is not None:
                    stack.enter_context(self.strategy.scope())
                if self.device is not None:
                    stack.enter_context(tf.device(self.device))
                yield
        finally:
            keras.config.set_dtype_policy(before)

    def close(self) -> None:
        """Nothing to leave: TensorFlow's coordination service waits for every worker when
        the processes exit (its shutdown barrier), so none is reported dead for ending."""

    # --- the compiled operations -----------------------------------------------------------

    def _run(self, kind: str, array: np.ndarray) -> np.ndarray:
        """One collective ``kind`` (``sum`` or ``gather``) of ``array`` over the ranks."""
        wire = _wire_dtype(array.dtype)
        flat = np.ascontiguousarray(array, dtype=wire).reshape(-1)
        function = self._functions.get((kind, wire))
        if function is None:
            function = self._functions[kind, wire] = self._compile(kind, wire)
        try:
            out = function(flat).numpy()
        except PEER_ERRORS as exc:
            raise peer_failure(exc, self.peers, self.rank) from None
        shape = array.shape if kind == "sum" else (self.world_size, *array.shape)
        return out.reshape(shape).astype(array.dtype, copy=False)

    def _compile(self, kind: str, dtype: np.dtype) -> Callable[..., Any]:
        strategy = self.strategy

        def replica(x: Any) -> Any:
            context = tf.distribute.get_replica_context()
            x = tf.identity(x)  # on the replica's device: a collective's destination
            if kind == "sum":
                return context.all_reduce(tf.distribute.ReduceOp.SUM, x)
            return context.all_gather(x[None], axis=0)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.as_dtype(dtype))], autograph=False)
        def run(x: Any) -> Any:
            return strategy.experimental_local_results(strategy.run(replica, args=(x,)))[0]

        return run


def _wire_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype ``dtype`` travels as: itself when the collectives reduce it, else a wider
    one that holds every value exactly (booleans and small integers as int64)."""
    if dtype in _WIRE:
        return dtype
    if dtype.kind in "biu":
        return np.dtype(np.int64)
    if dtype.kind == "f":
        return np.dtype(np.float64)
    raise TlcoreError(
        f"arrays of {dtype} cannot travel between processes",
        "pass numbers: booleans, integers or floats",
    )


def cluster_peers() -> tuple[str, ...]:
    """Every rank's ``host:port`` in rank order (the chief, then the workers) from
    ``TF_CONFIG``; empty without one."""
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG", "") or "{}").get("cluster", {})
    except (ValueError, AttributeError):
        return ()
    if not isinstance(cluster, dict):
        return ()
    return tuple(str(a) for kind in ("chief", "worker") for a in cluster.get(kind, []) or [])


def unreachable(peers: tuple[str, ...], me: int) -> list[str]:
    """The peers (``rank N (host:port)``) whose server refuses a connection: processes that
    ended. A peer that answers but hangs is not listed."""
    down = []
    for rank, address in enumerate(peers):
        host, _, port = address.rpartition(":")
        if rank == me or not port.isdigit():
            continue
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
                pass
        except OSError:
            down.append(f"rank {rank} ({address})")
    return down


def peer_failure(exc: BaseException, peers: tuple[str, ...], me: int) -> TlcoreError:
    """The error a failed collective operation (a dead peer, the timeout) ends the run with,
    naming the peers that no longer answer."""
    down = unreachable(peers, me)
    who = f"{', '.join(down)} no longer answer(s)" if down else "a peer did not take part"
    return TlcoreError(
        f"rank {me}: a collective operation across the workers failed: {who} "
        f"({type(exc).__name__}: {_cause(exc)})",
        f"see that worker's own output for why it stopped; a worker that is alive but slower "
        f"than {TIMEOUT_ENV} ({collective_timeout():g} s) allows also ends the run",
    )


_NOISE = ("Graph execution error", "Detected at node", "File ", "[[")


def _cause(exc: BaseException) -> str:
    """The cause in TensorFlow's message, without where the failed op was defined (its
    first lines) and the op's name (its last): its first two remaining lines."""
    lines = [line.strip() for line in str(getattr(exc, "message", exc)).splitlines()]
    kept = [line for line in lines if line and not line.startswith(_NOISE)]
    return " ".join(kept[:2])[:300] or type(exc).__name__
