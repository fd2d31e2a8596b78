"""One process of the conformance suite's distributed check: ``python -m
tlcore.testing.workers BACKEND OUT`` joins the others through the backend's ``tl_setup`` (the
launcher's environment says how: torchrun's ``RANK``/``WORLD_SIZE``, ``TF_CONFIG``), runs every
collective operation and a few training steps on its share of fixed batches, and writes what
it got to ``OUT`` (an ``.npz``) for the test to compare.

A backend that joins no other process writes ``world_size`` 1 and nothing else.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from tlcore.parallel import Collective
from tlcore.testing.backend import BackendUnderTest
from tlcore.testing.data import separable
from tlcore.train.distributed import broadcast_arrays, broadcast_bytes, local_batch

#: The global batches the workers split (sizes 6 and 5: shares 3+3, then 3+2).
BATCHES = (np.arange(0, 6), np.arange(6, 11))


def free_ports(n: int) -> list[int]:
    """``n`` TCP ports free on localhost now, for the processes of a test to listen on."""
    import socket

    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def finish_all(processes: list[Any], timeout: float, what: str) -> None:
    """Wait for every process (``subprocess.Popen`` with ``stderr=PIPE``): each must exit 0.
    One that hangs fails the test after ``timeout`` seconds, its peers killed; a distributed
    check must never hang a test session."""
    import pytest

    for rank, process in enumerate(processes):
        try:
            _, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
            pytest.fail(f"{what} rank {rank} hung")
        assert process.returncode == 0, f"{what} rank {rank} failed:\n{stderr[-4000:]}"


def collective_answers(c: Collective) -> dict[str, np.ndarray]:
    """Every collective operation on rank-dependent inputs, as named arrays."""
    rank = c.rank
    value = np.array([rank + 1.0, 10.0 * (rank + 1)], np.float32)
    c.barrier()
    sent = b"tlcore\x00\xff" if rank == 0 else None
    return {
        "sum": c.all_reduce(value, "sum"),
        "max": c.all_reduce(value, "max"),
        "min": c.all_reduce(value, "min"),
        "gather": c.all_gather(np.full((2, 3), rank, np.int64)),
        "broadcast": c.broadcast(np.full(4, rank + 5, np.int32), src=1),
        "bytes": np.frombuffer(broadcast_bytes(c, sent), np.uint8),
    }


def train_shares(
    backend: BackendUnderTest, collective: Collective, features: bool
) -> dict[str, np.ndarray]:
    """Two steps on this rank's shares of :data:`BATCHES`, from rank 0's initial weights;
    the weights after them."""
    backend.seed(0)
    with collective.scope():
        model = backend.build(num_classes=2)
    backend.set_weights(model, broadcast_arrays(collective, backend.weights(model)))
    backend.freeze(model, policy="all" if features else "none")
    with collective.scope():
        optimizer = backend.optimizer(model, optimizer="adamw", lr=1e-2)
    x, y = separable(11)
    inputs = backend.features(model, x) if features else x
    for batch in BATCHES:
        mine, share = local_batch(batch, collective)
        backend.step(model, optimizer, inputs[mine], y[mine], features=features, share=share)
    return backend.weights(model)


def main(argv: list[str]) -> int:
    """Join, answer, train, write ``argv[1]``."""
    name, out = argv[0], Path(argv[1])
    backend = BackendUnderTest(name)
    setup = backend.setup("cpu", "32")
    collective = setup.collective
    result: dict[str, np.ndarray] = {"world_size": np.array(collective.world_size)}
    if collective.world_size > 1:
        result["rank"] = np.array(collective.rank)
        result.update(collective_answers(collective))
        for features in (True, False):
            kind = "features" if features else "images"
            for key, value in train_shares(backend, collective, features).items():
                result[f"{kind}/{key}"] = value
        collective.barrier()
    collective.close()
    np.savez(out, **result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
