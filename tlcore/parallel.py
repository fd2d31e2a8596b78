"""Where a run computes and with whom: the contract between the core and a backend's devices
and processes (``tl_setup``).

The core asks with a :class:`Placement` (the recipe's ``train.device`` and
``train.precision``); a backend answers with a :class:`Setup`: the device and precision it
resolved, and a :class:`Collective` over the processes of the run. The base classes here are
the single-process answers, so a backend that runs on one CPU needs nothing more than
``Setup()``.

A distributed run is one process per device, started by the engine the user already runs
(``torchrun``; ``TF_CONFIG`` workers for ``tf.distribute``). The backend joins them in
``tl_setup`` and exchanges gradients its own way (``DistributedDataParallel``, a
``tf.distribute`` strategy); the core shards the data and agrees on metrics and decisions
through the collective, whose operations take and return numpy arrays.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DEVICES = ("auto", "cpu", "cuda", "mps")
"""The device words a recipe takes; ``cuda:N`` picks one GPU."""

PRECISIONS = ("32", "bf16", "16-mixed")
"""``32``: float32 throughout; ``bf16``: bfloat16 autocast (float32 weights);
``16-mixed``: float16 autocast with loss scaling. Exports and parity checks are float32."""


@dataclass(frozen=True)
class Placement:
    """What a recipe asks of the hardware.

    Attributes:
        device: ``auto`` (the first GPU when there is one, else the CPU), ``cpu``, ``cuda``,
            ``cuda:N`` or ``mps``. In a distributed run ``auto`` and ``cuda`` mean the
            process's own GPU (its local rank).
        precision: one of :data:`PRECISIONS`.
    """

    device: str = "auto"
    precision: str = "32"


class Collective:
    """The processes of a run, with numpy in and out; this base is the single process.

    Every rank calls every operation in the same order with arrays of the same shape and
    dtype (a rank with nothing to add passes zeros): the operations are collective, so a rank
    that skips one leaves the others waiting until the backend's timeout.

    Attributes:
        rank: this process's index, 0 to ``world_size - 1``; rank 0 writes the run's files.
        world_size: how many processes train together.
        local_rank: this process's index on its machine (which GPU it takes).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    def all_reduce(self, array: np.ndarray, op: str = "sum") -> np.ndarray:
        """Element-wise ``sum``, ``max`` or ``min`` of ``array`` over all ranks, on every rank."""
        return np.array(array, copy=True)

    def all_gather(self, array: np.ndarray) -> np.ndarray:
        """Every rank's ``array``, stacked in rank order: shape ``(world_size, *array.shape)``."""
        return np.array(array, copy=True)[None]

    def broadcast(self, array: np.ndarray, src: int = 0) -> np.ndarray:
        """Rank ``src``'s ``array`` on every rank (the others pass an array of its shape)."""
        return np.array(array, copy=True)

    def barrier(self) -> None:
        """Wait until every rank has arrived here."""

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """The context the model and its optimisers are built in (a ``tf.distribute``
        strategy's scope; the device a torch model is placed on)."""
        yield

    def close(self) -> None:
        """Leave the group of processes (the run is over, or failed)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, world_size={self.world_size})"


@dataclass
class Setup:
    """What a backend's ``tl_setup`` resolved: the device, the precision, the processes.

    Attributes:
        device: the device it trains on, as the framework names it (``cpu``, ``cuda:0``, ...).
        device_name: what the device is (``NVIDIA H200``, the CPU's model).
        device_memory: its memory in bytes, when known.
        precision: the precision it trains in, one of :data:`PRECISIONS`.
        collective: the processes of the run (:class:`Collective` for one).
        engine: how the processes were joined (``torch.distributed (gloo)``,
            ``MultiWorkerMirroredStrategy``, ...); empty for one process.
    """

    device: str = "cpu"
    device_name: str = ""
    device_memory: int | None = None
    precision: str = "32"
    collective: Collective = field(default_factory=Collective)
    engine: str = ""

    def peak_memory(self) -> int | None:
        """The most memory the run has held so far, in bytes: the device's when the framework
        tracks it (backends override this for their GPUs); on the CPU, this process's peak
        resident memory; ``None`` where neither is known."""
        if self.device != "cpu":
            return None
        try:
            import resource
        except ImportError:  # not on Windows
            return None
        # ru_maxrss is in kilobytes on Linux (bytes on macOS, where this over-reports).
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024

    def describe(self) -> dict[str, Any]:
        """What ``run.json`` and ``tlcore.json`` record about where the run trained."""
        return {
            "device": self.device,
            "device_name": self.device_name,
            "device_memory_bytes": self.device_memory,
            "precision": self.precision,
            "world_size": self.collective.world_size,
            "engine": self.engine,
            "peak_memory_bytes": self.peak_memory(),
        }


TIMEOUT_ENV = "TLCORE_DIST_TIMEOUT"
"""Seconds a process waits for its peers in a collective operation before failing."""
DEFAULT_TIMEOUT_S = 1800.0
"""30 minutes, torch's own default: after training, rank 0 alone writes the bundle (export,
parity, maybe int8 calibration) while the others wait in a collective. A dead peer is found
sooner: torchrun stops every worker when one exits, and ``tf.distribute``'s coordination
service notices missing heartbeats within seconds."""


def collective_timeout() -> float:
    """How long a collective operation waits for the other processes, in seconds:
    ``TLCORE_DIST_TIMEOUT``, else :data:`DEFAULT_TIMEOUT_S`.

    Raises:
        TlcoreError: the variable is not a positive number.
    """
    from tlcore.errors import TlcoreError

    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < 1e7:
        raise TlcoreError(
            f"{TIMEOUT_ENV}={text!r} is not a number of seconds",
            f"set {TIMEOUT_ENV} to a positive number of seconds (default {DEFAULT_TIMEOUT_S:g})",
        )
    return seconds


def choose_gpu(
    word: str, count: int, local_rank: int, processes_here: int, found: str, hint: str
) -> int | None:
    """The GPU ``train.device`` names for this process, of the ``count`` the framework sees;
    ``None`` for the CPU. Backends handle ``mps`` (and what ``auto`` means without a CUDA
    GPU) before asking.

    ``auto``: this process's GPU (that of its local rank) when there are GPUs, else the CPU.
    ``cuda``: this process's GPU. ``cuda:N``: GPU N, with one process on the machine only.

    Args:
        word: the recipe's ``train.device``.
        count: the GPUs the framework sees.
        local_rank: this process's index on its machine.
        processes_here: how many processes of the run share this machine.
        found: what the framework sees, for the error when there is no GPU.
        hint: how to get a GPU build, for that error.

    Raises:
        TlcoreError: ``cuda`` without a GPU; ``cuda:N`` out of range or shared by the
            processes of one machine; this process's GPU out of range.
    """
    from tlcore.errors import TlcoreError

    kind, _, index = word.partition(":")
    if word == "cpu" or (word == "auto" and not count):
        return None
    if kind not in ("cuda", "auto") or (index and not index.isdigit()):
        raise TlcoreError(f"train.device {word!r} is not a device", "use " + ", ".join(DEVICES))
    if not count:
        raise TlcoreError(f"train.device {word!r} needs a CUDA GPU, but {found}", hint)
    if index and processes_here > 1:
        raise TlcoreError(
            f"train.device {word!r} would put every process of this machine on one GPU",
            "use train.device: cuda (or auto): each process takes the GPU of its local rank",
        )
    number = int(index) if index else local_rank
    if number >= count:
        which = f"local rank {local_rank}'s GPU" if not index else f"GPU {number}"
        raise TlcoreError(
            f"train.device {word!r} asks for {which}, but {count} GPU(s) were found "
            f"(cuda:0 to cuda:{count - 1})",
            f"pick cuda:0 to cuda:{count - 1}, or start at most {count} processes per machine",
        )
    return number


def cpu_name() -> str:
    """What this machine's CPU is (``/proc/cpuinfo``'s model name on Linux, else what Python
    knows), with its core count: ``Intel(R) Xeon(R) ... (2 cores)``."""
    import platform

    name = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", errors="replace") as info:
        models = (line for line in info if line.startswith("model name"))
        name = next(models, ":").split(":", 1)[1].strip()
    return f"{name or platform.processor() or 'CPU'} ({os.cpu_count()} cores)"


def launched_world_size() -> int:
    """How many processes the launcher started this one among: ``WORLD_SIZE`` (torchrun,
    ``torch.distributed``) or the workers of ``TF_CONFIG`` (``tf.distribute``); 1 when
    neither is set.

    The core reads this only to say when a backend cannot join the others; joining them is
    the backend's ``tl_setup``.
    """
    if (world := os.environ.get("WORLD_SIZE", "").strip()).isdigit():
        return max(int(world), 1)
    config = os.environ.get("TF_CONFIG", "").strip()
    if config:
        try:
            cluster = json.loads(config).get("cluster", {})
        except (ValueError, AttributeError):
            return 1
        if isinstance(cluster, dict):
            return max(
                sum(len(v) for k, v in cluster.items() if k in ("chief", "worker")), 1
            )
    return 1


def launched_rank() -> int:
    """This process's rank as the launcher set it (``RANK``, or ``TF_CONFIG``'s task index,
    the chief first); 0 when not launched as one of several."""
    if (rank := os.environ.get("RANK", "").strip()).isdigit():
        return int(rank)
    config = os.environ.get("TF_CONFIG", "").strip()
    if config:
        try:
            data = json.loads(config)
            task = data.get("task", {})
            chief = 1 if data.get("cluster", {}).get("chief") else 0
            index = int(task.get("index", 0))
            return index if task.get("type") == "chief" else index + chief
        except (ValueError, AttributeError, TypeError):
            return 0
    return 0
