"""Where the Keras backend trains (``tl_setup``): the device, the precision and the
``tf.distribute`` strategy that joins the run's processes.

- ``TF_CONFIG`` naming more than one worker: ``MultiWorkerMirroredStrategy``, one replica per
  process (each process sees only its own GPU, or none on CPUs, where the workers talk over
  ``RING`` collectives; ``NCCL`` between GPUs). It must be made before TensorFlow runs any
  operation in the process, which is why ``tl_setup`` is the core's first call of a run.
- one process and several GPUs, with ``train.device`` ``auto`` or ``cuda``:
  ``MirroredStrategy`` over them (each step's batch is split between the GPUs).
- otherwise no strategy: the code path of a model built outside any setup.

Precision is a Keras dtype policy models are built with (``collective.scope()``):
``mixed_bfloat16`` for ``bf16``, ``mixed_float16`` for ``16-mixed`` (whose optimisers are
wrapped in ``keras.optimizers.LossScaleOptimizer``). Weights stay float32 either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from tlcore.errors import TlcoreError
from tlcore.parallel import (
    TIMEOUT_ENV,
    Placement,
    Setup,
    choose_gpu,
    collective_timeout,
    cpu_name,
    launched_rank,
)
from tlcore_keras.collective import KerasCollective, cluster_peers, unreachable

POLICIES = {"32": "float32", "bf16": "mixed_bfloat16", "16-mixed": "mixed_float16"}
"""The Keras dtype policy of each ``train.precision``."""
_NO_GPU_HINT = (
    "use train.device: auto or cpu, or install TensorFlow with CUDA (pip install "
    "'tensorflow[and-cuda]') on a machine with an NVIDIA GPU and its driver"
)


@dataclass
class KerasSetup(Setup):
    """:class:`~tlcore.parallel.Setup` with TensorFlow's peak-memory counter on GPUs.

    Attributes:
        tf_devices: the GPUs the run computes on, as TensorFlow names them (``GPU:0``).
    """

    tf_devices: tuple[str, ...] = ()

    def peak_memory(self) -> int | None:
        """The highest peak of ``tf.config.experimental.get_memory_info`` over the run's
        GPUs; on the CPU the core's answer (the process's peak)."""
        peaks = [tf.config.experimental.get_memory_info(d)["peak"] for d in self.tf_devices]
        return int(max(peaks)) if peaks else super().peak_memory()


def setup(placement: Placement) -> KerasSetup:
    """Resolve ``placement``'s device and precision, and join the run's other workers when
    ``TF_CONFIG`` names several.

    Raises:
        TlcoreError: the device is not here (``cuda`` without a GPU, ``cuda:N`` out of range,
            ``mps``), the precision cannot run on it, or the workers cannot join.
    """
    peers = cluster_peers()
    world = max(len(peers), 1)
    rank = launched_rank() if world > 1 else 0
    if rank >= world:
        raise TlcoreError(
            f"TF_CONFIG makes this process rank {rank}, but its cluster has {world} workers",
            "give each worker its own task index, from 0 to the number of workers - 1",
        )
    hosts = [address.rpartition(":")[0] for address in peers] or ["localhost"]
    local_rank = hosts[:rank].count(hosts[rank])
    gpus = tf.config.list_physical_devices("GPU")
    index = resolve_device(placement.device, gpus, local_rank, world, hosts.count(hosts[rank]))
    gpu = gpus[index] if index is not None else None
    check_precision(placement.precision, gpu)
    device = None
    if world > 1:
        strategy, engine, rank = join_workers(gpu, world, peers, rank)
    else:
        strategy, engine, device = _one_process(placement.device, gpu, index, gpus)
    if placement.precision == "bf16" and gpu is None and not cpu_computes_bfloat16():
        raise TlcoreError(
            "train.precision 'bf16': TensorFlow on this CPU does not compute bfloat16 "
            "convolutions and matrix products",
            "set train.precision: 32",
        )
    mirrored = isinstance(strategy, tf.distribute.MirroredStrategy) and world == 1
    if mirrored:
        computing = list(range(len(gpus)))
    elif gpu is None:
        computing = []
    else:  # a GPU TensorFlow was left to see alone is its GPU:0
        computing = [index if device else 0]
    collective = KerasCollective(
        strategy,
        POLICIES[placement.precision],
        rank=rank,
        world_size=world,
        local_rank=local_rank,
        peers=peers if world > 1 else (),
        device=device,
    )
    return KerasSetup(
        device="cpu" if gpu is None else ("cuda" if mirrored else f"cuda:{index}"),
        device_name=_describe(gpu, len(computing)),
        precision=placement.precision,
        collective=collective,
        engine=engine,
        tf_devices=tuple(f"GPU:{i}" for i in computing),
    )


def resolve_device(
    word: str, gpus: list[Any], local_rank: int = 0, world: int = 1, local_world: int = 1
) -> int | None:
    """The index of the GPU ``train.device`` names for this process, ``None`` for the CPU.

    ``auto``: this process's GPU (its local rank's; the first in one process) when
    TensorFlow sees GPUs, else the CPU. ``cuda``: this process's GPU. ``cuda:N``: GPU N (with
    one process per machine).

    Raises:
        TlcoreError: the device asked for is not here.
    """
    if word == "mps":
        raise TlcoreError(
            "train.device 'mps' is Apple's GPU through torch; TensorFlow has no 'mps' device "
            "(with tensorflow-metal it shows Apple's GPU as a GPU)",
            "use train.device: auto or cpu with the keras backend, or --backend torch for mps",
        )
    seen = ", ".join(d.name.rpartition("physical_device:")[2]
                     for d in tf.config.list_physical_devices())
    found = f"TensorFlow {tf.__version__} finds none (it sees {seen or 'no device'})"
    here = local_world if world > 1 else 1
    return choose_gpu(word, len(gpus), local_rank, here, found, _NO_GPU_HINT)


def check_precision(precision: str, gpu: Any) -> None:
    """Refuse a precision the device cannot train in, with the reason.

    Raises:
        TlcoreError: ``16-mixed`` on the CPU; ``bf16`` on a GPU before Ampere.
    """
    if precision == "16-mixed" and gpu is None:
        raise TlcoreError(
            "train.precision '16-mixed' cannot train on cpu: float16 autocast and loss "
            "scaling are for GPUs; on a CPU use bf16 or 32",
            "set train.precision: bf16 (or 32), or train on a CUDA GPU",
        )
    if precision == "bf16" and gpu is not None:
        details = tf.config.experimental.get_device_details(gpu)
        capability = tuple(details.get("compute_capability") or (0, 0))
        if capability < (8, 0):
            name = details.get("device_name", gpu.name)
            raise TlcoreError(
                f"train.precision 'bf16': {name} (compute capability "
                f"{'.'.join(map(str, capability))}) does not compute bfloat16 natively",
                "set train.precision: 16-mixed (or 32) on this GPU; bf16 needs Ampere or later",
            )


def cpu_computes_bfloat16() -> bool:
    """Whether TensorFlow on this CPU runs a convolution, a depthwise convolution and a
    matrix product in bfloat16, forward and backward (its kernels differ by build and CPU)."""
    try:
        with tf.device("/cpu:0"):
            x = tf.ones((1, 4, 4, 3), tf.bfloat16)
            kernel = tf.ones((3, 3, 3, 3), tf.bfloat16)
            with tf.GradientTape() as tape:
                tape.watch(kernel)
                y = tf.nn.conv2d(x, kernel, 1, "SAME")
                y = tf.nn.depthwise_conv2d(y, kernel[..., :1], [1, 1, 1, 1], "SAME")
                y = tf.matmul(tf.reshape(y, (16, 3)), kernel[0, 0])
                total = tf.reduce_sum(tf.cast(y, tf.float32))
            grad = tape.gradient(total, kernel)
            return y.dtype == tf.bfloat16 and grad is not None and grad.dtype == tf.bfloat16
    except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
        return False


def _show_only(gpus: list[Any]) -> bool:
    """Let TensorFlow see ``gpus`` alone, so that it neither places work on nor reserves the
    memory of the others; ``False`` when it has already started (too late to choose)."""
    if tf.config.get_visible_devices("GPU") == gpus:
        return True
    try:
        tf.config.set_visible_devices(gpus, "GPU")
    except RuntimeError:
        return False
    return True


def _one_process(
    word: str, gpu: Any, index: int | None, gpus: list[Any]
) -> tuple[Any, str, str | None]:
    """The strategy of a single process (``MirroredStrategy`` over several GPUs for
    ``auto``/``cuda``, else none), and the ``tf.device`` to pin the model to when TensorFlow
    had already started on the GPUs it should no longer see (the API after other work)."""
    if gpu is None:
        shown = not gpus or _show_only([])
        return None, "", None if shown else "/cpu:0"
    if word in ("auto", "cuda") and len(gpus) > 1:
        return tf.distribute.MirroredStrategy(), f"MirroredStrategy ({len(gpus)} GPUs)", None
    shown = len(gpus) == 1 or _show_only([gpu])
    return None, "", None if shown else f"/gpu:{index}"


def join_workers(
    gpu: Any, world: int, peers: tuple[str, ...], rank: int
) -> tuple[Any, str, int]:
    """``MultiWorkerMirroredStrategy`` over the ``TF_CONFIG`` workers, this one on ``gpu``
    (or the CPU), with the collective timeout; waits at most that long for the others.
    Returns it, the engine's description and this worker's rank: its replica's index, as the
    strategy's cluster resolver places it (the chief first, then the workers).

    Raises:
        TlcoreError: TensorFlow already ran in this process, ``TF_CONFIG`` is wrong, or the
            other workers did not come within the timeout.
    """
    if not _show_only([gpu] if gpu is not None else []):
        raise RuntimeError("the TensorFlow context is already initialized")
    wait = collective_timeout()
    implementation = tf.distribute.experimental.CommunicationImplementation
    chosen = implementation.NCCL if gpu is not None else implementation.RING
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=chosen, timeout_seconds=wait
    )
    try:
        _coordinate(wait)
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    except (RuntimeError, ValueError, tf.errors.OpError) as exc:
        raise _join_error(exc, peers, rank, wait) from None
    if strategy.num_replicas_in_sync != world:
        raise TlcoreError(
            f"the {world} TF_CONFIG workers make {strategy.num_replicas_in_sync} replicas",
            "start one worker per device: each process takes one GPU (or the CPU)",
        )
    resolver = strategy.cluster_resolver
    chiefs = len(resolver.cluster_spec().as_dict().get("chief", []))
    rank = int(resolver.task_id) + (chiefs if resolver.task_type == "worker" else 0)
    return strategy, f"MultiWorkerMirroredStrategy ({chosen.name})", rank


def _coordinate(wait: float) -> None:
    """Configure TensorFlow's coordination service as ``MultiWorkerMirroredStrategy`` would
    (the same leader and jobs), except that the workers must all register within ``wait``
    seconds: its own configuration waits for a missing worker forever. Through TensorFlow's
    internal modules, so a TensorFlow without them keeps its own configuration."""
    try:
        from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2 as config
        from tensorflow.python.distribute import multi_worker_util
        from tensorflow.python.eager import context
    except ImportError:
        return
    spec = tf.distribute.cluster_resolver.TFConfigClusterResolver().cluster_spec()
    jobs = [
        config.CoordinatedJob(name=job, num_tasks=spec.num_tasks(job))
        for job in ("chief", "worker")
        if job in spec.jobs
    ]
    runtime = context.context()
    if getattr(runtime, "_initialized", False):
        raise RuntimeError("the TensorFlow context is already initialized")
    runtime.configure_coordination_service(
        service_type="standalone",
        service_leader=multi_worker_util.coordination_leader(spec),
        coordinated_jobs=jobs,
        cluster_register_timeout_in_ms=int(wait * 1000),
    )
    runtime.coordination_service.cluster_register_with_barrier = True


def _join_error(exc: BaseException, peers: tuple[str, ...], rank: int, wait: float) -> TlcoreError:
    """What a failed start of ``MultiWorkerMirroredStrategy`` means for the user."""
    text = str(exc)
    if isinstance(exc, tf.errors.DeadlineExceededError) or "register" in text:
        missing = unreachable(peers, rank) or ["a worker that does not answer"]
        return TlcoreError(
            f"rank {rank}: the other TF_CONFIG workers did not all come within {wait:g} s: "
            f"{', '.join(missing)}",
            f"start every worker of TF_CONFIG (or give them longer with {TIMEOUT_ENV})",
        )
    if "must be configured at program startup" in text or "initialized" in text:
        return TlcoreError(
            "TensorFlow already ran in this process before tl_setup, so it cannot join the "
            "TF_CONFIG workers",
            "start each worker as a fresh process and call tl_setup before anything runs "
            "TensorFlow",
        )
    return TlcoreError(
        f"rank {rank}: cannot join the TF_CONFIG workers: {type(exc).__name__}: {text[:300]}",
        'set TF_CONFIG to {"cluster": {"worker": ["host:port", ...]}, "task": {"type": '
        '"worker", "index": N}}, the same cluster on every worker',
    )


def _describe(gpu: Any, count: int) -> str:
    """What the device is: the GPU's name (``4 x NVIDIA H200`` for several), else the CPU."""
    if gpu is None:
        return cpu_name()
    name = tf.config.experimental.get_device_details(gpu).get("device_name", "GPU")
    return f"{count} x {name}" if count > 1 else name
