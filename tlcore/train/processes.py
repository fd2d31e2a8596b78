"""The trainer's side of a run's processes: joining them, starting every rank from the same
weights, resuming from rank 0's checkpoint, and rank 0 writing for all.

One process is the case of a world of one: every function here does what a single-process
run always did, through the same calls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tlcore.errors import TlcoreError
from tlcore.parallel import Collective, launched_world_size
from tlcore.train.distributed import broadcast_arrays, broadcast_json, on_rank0

if TYPE_CHECKING:
    from tlcore.train.trainer import Trainer, TrainResult


def join(t: Trainer) -> None:
    """``tl_setup``: the device, the precision and the other processes of ``t``'s run; say
    where it trains, and when the backend could not join processes that were launched."""
    t.setup = t.calls.setup(t.placement)
    t.collective = t.setup.collective
    world, launched = t.collective.world_size, launched_world_size()
    if world == 1 and launched > 1:
        # Every process would train the whole run into the same folder: only one may.
        raise TlcoreError(
            f"{launched} processes were launched, but backend {t.backend!r} joined none of "
            "the others: each would train the whole run into the same folder",
            "launch one process, or launch the way the backend joins processes (torch: "
            "torchrun or tl train --nproc; keras: one process per TF_CONFIG worker)",
        )


def where(t: Trainer) -> str:
    """Where the run trains, for its first line: ``cpu``, ``cuda:0 (NVIDIA H200) bf16``,
    ``cpu, 2 processes (torch.distributed (gloo))``."""
    setup, world = t.setup, t.collective.world_size
    text = setup.device + (f" ({setup.device_name})" if setup.device.startswith("cuda") else "")
    if setup.precision != "32":
        text += f" {setup.precision}"
    return text + (f", {world} processes ({setup.engine})" if world > 1 else "")


def load_checkpoint(t: Trainer) -> dict[str, Any]:
    """The run's latest checkpoint on every rank: rank 0 reads it and sends it.

    Raises:
        TlcoreError: the checkpoint was written by another number of processes.
    """
    collective = t.collective
    restored = on_rank0(collective, t.folder.load_checkpoint) or {}
    state = broadcast_json(collective, restored.get("state"))
    recorded = int(state.get("world_size", 1))
    if recorded != collective.world_size:
        raise TlcoreError(
            f"{t.folder.path} was trained by {recorded} process(es); this resume has "
            f"{collective.world_size}",
            f"resume with {recorded} process(es) (torchrun --nproc_per_node={recorded}, or "
            f"{recorded} TF_CONFIG workers): each process's share of every batch and the "
            "order of the gradient sums are those of the run only then",
        )
    has_best = broadcast_json(collective, restored.get("best") is not None)
    return {
        "state": state,
        "weights": broadcast_arrays(collective, restored.get("weights")),
        "optimizer": broadcast_arrays(collective, restored.get("optimizer")),
        "best": broadcast_arrays(collective, restored.get("best")) if has_best else None,
    }


def share_weights(t: Trainer) -> None:
    """Start every rank from rank 0's weights (a random head is drawn per process)."""
    if t.collective.world_size > 1:
        weights = t.get_weights() if t.collective.rank == 0 else None
        t.set_weights(broadcast_arrays(t.collective, weights))


def finish_on_rank0(t: Trainer, finish: Any) -> TrainResult:
    """Rank 0 evaluates the final model and writes the bundle on its own (a world of one:
    no collective while the others wait); every rank returns the run's result."""
    from tlcore.train.finish import train_result

    collective = t.collective
    if collective.world_size == 1:
        return finish(t)
    t.collective = Collective()  # rank 0's final evaluation and exports need no peer

    def alone() -> TrainResult:
        return finish(t)

    result = on_rank0(collective, alone)
    t.collective = collective
    metrics = broadcast_json(collective, result.metrics if result is not None else None)
    if result is not None:
        return result
    return train_result(t, metrics)
