"""Devices and processes (``tl_setup``): one process on the CPU, and two processes that agree.

The two-process check starts two real processes (:mod:`tlcore.testing.workers`) with the
environment of both launchers the built-in backends follow, torchrun's (``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ...) and ``tf.distribute``'s (``TF_CONFIG``), so a backend
joins them the way it joins its users' launches. Its answers must be those of the
:class:`~tlcore.parallel.Collective` contract, and a few training steps with each process on
its share of a batch must end where one process ends on the whole batch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tlcore.testing.backend import BackendUnderTest
from tlcore.testing.data import separable
from tlcore.testing.marks import SUITE_MARKS, hooks
from tlcore.testing.workers import BATCHES, finish_all, free_ports

pytestmark = SUITE_MARKS


@hooks("tl_setup")
def test_setup_on_one_cpu_process(tl_backend: BackendUnderTest) -> None:
    setup = tl_backend.setup("cpu", "32")
    c = setup.collective
    assert (setup.device, setup.precision, c.rank, c.world_size) == ("cpu", "32", 0, 1)
    value = np.array([1.5, -2.0], np.float32)
    assert np.array_equal(c.all_reduce(value, "sum"), value)
    assert c.all_gather(value).shape == (1, 2)
    assert np.array_equal(c.broadcast(value), value)
    c.barrier()
    described = setup.describe()
    assert described["world_size"] == 1 and described["device"] == "cpu"
    json.dumps(described)  # recorded in run.json: plain JSON


def _launch(backend: str, folder: Path) -> list[Path]:
    """Two worker processes, with both launchers' environments; their result files."""
    master, *workers = free_ports(3)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in workers]}
    processes, outs = [], []
    for rank in range(2):
        env = {
            **os.environ,
            "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
            "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(master),
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker",
                                                                  "index": rank}}),
        }
        out = folder / f"rank{rank}.npz"
        command = [sys.executable, "-m", "tlcore.testing.workers", backend, str(out)]
        processes.append(subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True))
        outs.append(out)
    finish_all(processes, 300, f"the distributed check of backend {backend!r}:")
    return outs


def _single(tl_backend: BackendUnderTest, features: bool) -> dict[str, np.ndarray]:
    """The steps the workers take, in one process on the whole batches."""
    tl_backend.seed(0)
    model = tl_backend.build(num_classes=2)
    tl_backend.freeze(model, policy="all" if features else "none")
    optimizer = tl_backend.optimizer(model, optimizer="adamw", lr=1e-2)
    x, y = separable(11)
    inputs = tl_backend.features(model, x) if features else x
    for batch in BATCHES:
        tl_backend.step(model, optimizer, inputs[batch], y[batch], features=features)
    return tl_backend.weights(model)


@hooks("tl_train_step")
def test_two_processes_agree_and_train_as_one(
    tl_backend: BackendUnderTest, tmp_path: Path
) -> None:
    """Collectives give the contract's answers on every rank; two steps split 3+3 and 3+2
    between the ranks end within float rounding of one process (the gradient is a sum of
    two partial sums instead of one: ~1e-7 relative per step)."""
    results = []
    for out in _launch(tl_backend.name, tmp_path):
        with np.load(out) as npz:
            results.append({name: npz[name] for name in npz.files})
    if all(int(r["world_size"]) == 1 for r in results):
        pytest.skip(f"backend {tl_backend.name!r} joins no other process: it trains in one "
                    "(the core refuses a launch of several for it, with the reason)")
    assert [int(r["world_size"]) for r in results] == [2, 2]
    assert sorted(int(r["rank"]) for r in results) == [0, 1]
    for r in results:
        np.testing.assert_array_equal(r["sum"], [3.0, 30.0])
        np.testing.assert_array_equal(r["max"], [2.0, 20.0])
        np.testing.assert_array_equal(r["min"], [1.0, 10.0])
        assert r["gather"].shape == (2, 2, 3)
        np.testing.assert_array_equal(r["gather"][:, 0, 0], [0, 1])
        np.testing.assert_array_equal(r["broadcast"], [6] * 4)
        assert r["bytes"].tobytes() == b"tlcore\x00\xff"
    for features in (True, False):
        kind = "features" if features else "images"
        single = _single(tl_backend, features)
        for r in results:
            for name, value in single.items():
                np.testing.assert_allclose(
                    r[f"{kind}/{name}"], value, rtol=1e-4, atol=2e-5, err_msg=f"{kind} {name}"
                )
