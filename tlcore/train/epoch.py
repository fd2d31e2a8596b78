"""One training epoch: the steps, and the task's metrics computed by the core from the outputs
each step returns; which validation metric a stage monitors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from tlcore.errors import RecipeError
from tlcore.interfaces import StepState
from tlcore.parallel import Collective
from tlcore.schedule import learning_rate
from tlcore.train.balance import BALANCED, balanced_order
from tlcore.train.distributed import gather_rows, local_batch, sum_over_ranks, usable_batches
from tlcore.train.guards import check_step
from tlcore.train.prefetch import prefetched
from tlcore.train.stages import derive_seed
from tlcore.train.steps import check_honoured, ema_decay, step_groups

if TYPE_CHECKING:
    from tlcore.recipe import StageSpec
    from tlcore.tasks import Task
    from tlcore.train.trainer import Trainer, _StageRun

AUTO = "auto"


def train_epoch(t: Trainer, run: _StageRun, epoch: int) -> dict[str, float]:
    """Train one epoch of ``run``'s stage; its training metrics (``loss``, the task's metrics
    on the outputs before each update, ``lr``).

    In a distributed run every rank draws the same order and takes its share of each global
    batch; each step's loss is summed over the ranks, so that all of them check the same
    number, and the epoch's metrics are computed from every rank's outputs.

    With ``train.accumulate`` > 1 the batches are grouped into optimiser steps
    (:mod:`tlcore.train.steps`): the schedule's step counts updates, and each batch's
    ``share`` is its images over the whole update's.

    Raises:
        TlcoreError: a step's loss is NaN or infinite (:func:`~tlcore.train.guards.check_step`).
    """
    collective: Collective = t.collective
    seed = derive_seed(t.recipe.train.seed, run.index, epoch)
    t.calls.seed(seed)
    rng = np.random.default_rng(seed)
    feed, stage = run.train_feed, run.stage
    order = epoch_order(t, rng, feed.dataset.labels)
    if collective.world_size > 1:  # augmentation draws per rank; the order is shared
        rng = np.random.default_rng(derive_seed(seed, collective.rank))
    size = t.recipe.train.batch_size
    batches = usable_batches(
        [order[i : i + size] for i in range(0, len(order), size)], collective.world_size
    )
    metrics = EpochMetrics(t.task, t.task_info, live=t.progress.live, collective=collective)
    lr = stage.lr
    shares = [local_batch(indices, collective) for indices in batches]
    accumulate = t.recipe.train.accumulate
    groups = step_groups(len(batches), accumulate)
    # On an accelerator, the next batch's images are decoded while this one trains.
    ahead = feed.features is None and t.setup.device != "cpu"
    made = prefetched(lambda b: feed.batch(shares[b][0], rng), len(batches), ahead)
    for b, batch in enumerate(made):
        group = groups[b // accumulate]
        step = epoch * len(groups) + b // accumulate  # optimiser steps: the schedule's unit
        lr = learning_rate(stage, step, run.total_steps)
        mine, share = shares[b]
        options = step_options(t, group, b, step)
        if accumulate > 1:  # this batch's images over the whole step's, on every rank
            share = len(mine) / sum(len(batches[i]) for i in group)
        state = StepState(
            run.optimizer, lr, stage.label_smoothing, step, loss=t.task.loss, share=share,
            class_weights=t.class_weights, **options,
        )
        result = t.calls.train_step(t.model, batch, state)
        check_honoured(t.backend, _proof(t, state.apply), result)
        loss, images = sum_over_ranks(collective, float(result["loss"]) * len(mine), len(mine))
        result = {**result, "loss": loss / images}  # the global batch's mean loss
        check_step(t, run, epoch, b, len(batches), result)  # a NaN loss stops the run here
        metrics.add(result, feed.dataset.labels[mine], images=int(images))
        t.progress.batch(b + 1, len(batches), metrics.running(), samples=metrics.seen)
    return {**metrics.result(), "lr": lr}


def step_options(t: Trainer, group: range, b: int, step: int) -> dict[str, Any]:
    """What batch ``b`` (of the optimiser step that accumulates ``group``, step ``step`` of
    the stage) asks of the backend besides the batch: whether the step's update comes after
    it (its group's last batch), the clipping norm, the moving average's decay."""
    train = t.recipe.train
    return {
        "apply": b == group[-1],
        "clip_norm": train.clip_norm,
        "ema": ema_decay(train.ema, step),
    }


def _proof(t: Trainer, apply: bool) -> dict[str, str]:
    """What a step's result must hold to show the backend did what the recipe asks (see
    :func:`~tlcore.train.steps.check_honoured`); the average is checked in the optimiser's
    state, at the epoch's end."""
    train = t.recipe.train
    proof = {"accumulate": "applied"} if train.accumulate > 1 else {}
    if train.clip_norm > 0 and apply:
        proof["clip_norm"] = "grad_norm"
    return proof


def epoch_order(t: Trainer, rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """The epoch's training order, drawn from the epoch's seeded ``rng`` (the same on every
    rank and after a resume): a permutation, or for ``train.sampler: balanced`` as many
    draws with replacement, each class equally likely (:func:`balanced_order`)."""
    if t.recipe.train.sampler == BALANCED:
        return balanced_order(rng, labels, t.num_outputs)
    return rng.permutation(len(labels))


class EpochMetrics:
    """The training metrics of one epoch, from what each ``tl_train_step`` returned.

    The loss is the backend's (it includes label smoothing), averaged over the images; every
    other metric is the task's, computed once over the epoch's outputs (the logits before
    each update). A backend that returns ``accuracy`` instead of ``outputs`` has its
    accuracy averaged, as before tasks existed.

    Args:
        task: the run's task.
        info: what the task learned from the training data.
        live: keep running metrics for a live progress bar.
        collective: the run's processes: each adds its own outputs, the result is computed
            from all of them.
    """

    def __init__(
        self,
        task: Task,
        info: dict[str, Any],
        live: bool = False,
        collective: Collective | None = None,
    ) -> None:
        self.task, self.info, self.live = task, info, live
        self.collective = collective or Collective()
        self.seen = 0
        self.loss = 0.0
        self.accuracy: float | None = None
        self.outputs: list[np.ndarray] = []
        self.targets: list[np.ndarray] = []
        self._running: dict[str, float] = {}

    def add(self, result: dict[str, Any], targets: np.ndarray, images: int | None = None) -> None:
        """One step's result, for ``targets`` (the dataset's labels of its batch); its loss
        is the mean over ``images`` (the global batch's, in a distributed run; by default
        the batch's own)."""
        n = len(targets)
        self.seen += n if images is None else images
        self.loss += float(result["loss"]) * (n if images is None else images)
        if result.get("outputs") is not None:
            outputs = np.asarray(result["outputs"])
            self.outputs.append(outputs)
            self.targets.append(targets)
            if self.live:
                step = self.task.metrics(outputs, targets, self.info)
                for key, value in step.items():
                    self._running[key] = self._running.get(key, 0.0) + value * n
        elif "accuracy" in result:
            self.accuracy = (self.accuracy or 0.0) + float(result["accuracy"]) * n

    def running(self) -> dict[str, float]:
        """The epoch so far: the mean loss (and, on a live display, the mean of the steps'
        metrics)."""
        seen = max(self.seen, 1)
        shown = {key: value / seen for key, value in self._running.items() if key != "loss"}
        return {"loss": self.loss / seen, **shown}

    def result(self) -> dict[str, float]:
        """The epoch's mean loss and the task's metrics over all its outputs."""
        seen = max(self.seen, 1)
        out = {"loss": self.loss / seen}
        if self.outputs:
            outputs = gather_rows(self.collective, np.concatenate(self.outputs))
            targets = gather_rows(self.collective, np.concatenate(self.targets))
            found = self.task.metrics(outputs, targets, self.info)
            out.update({key: value for key, value in found.items() if key != "loss"})
        elif self.accuracy is not None:
            out["accuracy"] = self.accuracy / seen
        return out


def monitored(stage: StageSpec, task: Task, auto: str | None = None) -> str:
    """The validation metric ``stage`` watches: its ``monitor``; for ``auto``, ``auto`` when
    given (the run's choice for its data, :func:`tlcore.train.balance.auto_monitor`), else
    the task's default."""
    if stage.monitor != AUTO:
        return stage.monitor
    return auto or task.default_monitor


def check_monitors(stages: tuple[StageSpec, ...], task: Task) -> None:
    """Every stage's ``monitor`` is ``auto`` or a validation metric of ``task``.

    Raises:
        RecipeError: names the stage's field and the task's metrics.
    """
    for i, stage in enumerate(stages):
        if stage.monitor != AUTO and stage.monitor not in task.monitors():
            raise RecipeError(
                f"train.stages.{i}.monitor",
                stage.monitor,
                f"{AUTO} or a validation metric of task {task.name}: "
                + ", ".join(task.monitors()),
            )


def improves(
    score: float, metrics: dict[str, float], best: float | None, best_metrics: dict[str, float]
) -> bool:
    """Whether an epoch's ``score`` (its monitored metric, higher is better) beats the best
    so far. A tie is broken by the validation loss: on a few dozen validation examples the
    accuracy ties for many epochs, and keeping the first of them threw the training after it
    away (a demo's head went back to its second epoch of 100)."""
    if best is None or score > best + 1e-9:
        return True
    if score < best - 1e-9 or "val_loss" not in metrics or "val_loss" not in best_metrics:
        return False
    return metrics["val_loss"] < best_metrics["val_loss"] - 1e-9
