"""The training driver: stages, epochs, early stopping, checkpoints, resume.

Backend-neutral: every framework operation goes through the backend's hooks
(:class:`~tlcore.plugins.calls.BackendCalls`), data moves as numpy arrays. One
:class:`Trainer` runs one recipe into one run folder.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tlcore import __version__
from tlcore.build import build_model
from tlcore.bundle.layout import SCHEMA_VERSION
from tlcore.bundle.quantize import Quantized
from tlcore.freezing import resolve_batchnorm
from tlcore.interfaces import FreezeReport, InputSpec, Preprocessing, RunInfo
from tlcore.parallel import Collective, Placement, Setup, launched_rank
from tlcore.plugins.calls import BackendCalls
from tlcore.progress import Progress
from tlcore.recipe import Recipe, StageSpec
from tlcore.runfolder import RunFolder, unchanged, write_json
from tlcore.schedule import describe_lr, stage_epochs
from tlcore.tasks import Task, get_task
from tlcore.train.balance import plan_balance
from tlcore.train.distributed import broadcast_json, on_rank0
from tlcore.train.epoch import improves, monitored, train_epoch
from tlcore.train.feed import Feed, stage_feeds
from tlcore.train.finish import finish
from tlcore.train.guards import check_epoch
from tlcore.train.logistic import LOGISTIC, fit_logistic
from tlcore.train.lrfind import resolve_lr
from tlcore.train.processes import (
    finish_on_rank0,
    join,
    load_checkpoint,
    share_weights,
    where,
)
from tlcore.train.stages import record_resumed_recipe, use_planned_stages
from tlcore.train.start import check_task, read_data, resolve_recipe, start_run, vector_input
from tlcore.train.steps import averaged_weights, steps_per_epoch


@dataclass
class TrainResult:
    """What a finished run gives back: the native model and where its files are."""

    path: Path
    model: Any
    backend: str
    class_names: tuple[str, ...]
    preprocessing: Preprocessing
    history: list[dict[str, Any]]
    metrics: dict[str, float]
    recipe: Recipe
    quantized: Quantized | None = None
    warnings: list[str] = field(default_factory=list)
    """What the run found wrong (learned nothing, dead features, ...): also on stderr and in
    ``tlcore.json``; see :mod:`tlcore.diagnose`."""


@dataclass
class _StageProgress:
    """What a checkpoint must remember about the stage in flight."""

    stage: int = 0
    epoch: int = 0
    best_score: float | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    bad_epochs: int = 0
    stopped: bool = False
    lr: float | None = None  # the rate ``lr: auto`` found for this stage


class Trainer:
    """Runs a recipe's stages on a pair of datasets, writing everything into a run folder."""

    def __init__(
        self,
        recipe: Recipe,
        out: str | Path,
        *,
        data: Any = None,
        resume: bool = False,
        quiet: bool = False,
        data_changed_ok: bool = False,
    ) -> None:
        self.backend = recipe.backend
        self.calls = BackendCalls(recipe.backend)
        self.folder = RunFolder(out)
        self.resume = resume
        self.data_changed_ok = data_changed_ok  # resume on data that changed since the start
        # Rank 0 speaks for a distributed run, from the start (reading the data warns).
        self.progress = Progress(quiet=quiet, silent=launched_rank() > 0)
        self.placement = Placement(recipe.train.device, recipe.train.precision)
        self.setup = Setup()  # what tl_setup resolved, at the start of the run
        self.collective = Collective()  # the run's processes; one until joined
        self.task: Task = get_task(recipe.task)
        check_task(self.task, recipe)
        # The data first: what it holds decides the default backbone and a vector network's
        # input. The recipe is resolved once and written into run.json, so a resume or export
        # rebuilds the same model.
        self.train_set, self.val_set = read_data(recipe, data, self.task)
        self.modality: str = getattr(self.train_set, "modality", "image")
        self.vector_input = vector_input(self.train_set) if self.modality == "vector" else None
        self.recipe = resolve_recipe(recipe, self.modality, self.vector_input, self.progress,
                                     len(self.train_set), len(self.val_set))
        # What the task learns from the training targets (a regression's scaling); its
        # calibration on the validation images (thresholds) is added at the end of the run.
        self.task_info: dict[str, Any] = self.task.prepare(self.train_set.labels)
        self.class_names = tuple(self.train_set.class_names)
        self.num_outputs = self.task.num_outputs(self.class_names)
        # The loss's class weights and what ``monitor: auto`` watches follow the training
        # split's classes (imbalanced data: the balanced accuracy).
        self.class_weights, self.auto_monitor, reason = plan_balance(
            self.recipe, self.task, self.train_set.labels, self.class_names
        )
        if reason:
            self.progress.message(reason)
        self.history: list[dict[str, Any]] = []
        self.model: Any = None
        self.preprocessing: Preprocessing | None = None
        self.pretrained = True  # whether the backbone's weights are more than an initialisation
        self.warnings: list[str] = []
        self.features_checked = False  # the cached features' check, once a run
        self.cached_val: Feed | None = None  # the last stage's, when it trained on features
        self.input_spec: InputSpec | None = None  # what the model takes, once it is built
        self.bundle_input: InputSpec | None = None  # how the bundle describes it (finish)
        self.feature_seconds = 0.0  # spent extracting features to cache, this process

    # --- the run --------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        """Train every stage (continuing from the last checkpoint when resuming)."""
        try:
            return self._run()
        finally:
            self.progress.close()  # an epoch's bar, left by an error or Ctrl-C
            self.folder.release()  # the run folder's lock, however the run ends
            self.collective.close()

    def _run(self) -> TrainResult:
        join(self)  # tl_setup: device, precision, the other processes
        # Rank 0 alone locks and writes the folder; every rank learns whether it resumes.
        on_rank0(self.collective, lambda: start_run(self))
        self.resume = broadcast_json(self.collective, self.resume)
        with self.collective.scope():
            self.model, backbone = build_model(
                self.recipe, self.num_outputs, self.progress, self.modality, self.vector_input
            )
        self.preprocessing = backbone.preprocessing
        self.input_spec = backbone.input_spec
        self.progress.message(
            f"{self.backend} on {where(self)} · {backbone.name} · {self.task.name}, "
            f"{self.num_outputs} outputs · {len(self.train_set)} train / {len(self.val_set)} "
            f"val {self.modality}s"
        )
        self.pretrained = backbone.pretrained
        use_planned_stages(self, backbone.name)
        progress = _StageProgress()
        counter = 0
        restored: dict[str, Any] | None = None
        if self.resume:
            restored = load_checkpoint(self)  # rank 0's, on every rank
            counter, progress = self._restore(restored)
        else:
            share_weights(self)
        stages = self.recipe.train.stages
        for index in range(progress.stage, len(stages)):
            if index > progress.stage:
                progress = _StageProgress(stage=index)
                restored = None
            counter = self._run_stage(index, stages[index], progress, restored, counter)
        return finish_on_rank0(self, finish)

    def _restore(self, restored: dict[str, Any]) -> tuple[int, _StageProgress]:
        """Take a checkpoint's weights, history and warnings back; where to continue from."""
        state = restored["state"]
        self.set_weights(restored["weights"])
        self.history = state["history"]
        progress = _StageProgress(**state["progress"])
        for text in state.get("warnings", []):
            self.warn(text)
        self.progress.message(
            f"resuming {self.folder.path} at stage {progress.stage + 1}, "
            f"epoch {progress.epoch + 1}"
        )
        on_rank0(
            self.collective,
            lambda: record_resumed_recipe(self.folder, self.recipe, self.progress.message),
        )
        return state["counter"], progress

    def _run_stage(
        self,
        index: int,
        stage: StageSpec,
        progress: _StageProgress,
        restored: dict[str, Any] | None,
        counter: int,
    ) -> int:
        # The core decides what ``batchnorm: auto`` means: backends only see concrete modes.
        policy = resolve_batchnorm(stage.freeze, self.pretrained)
        report: FreezeReport = self.calls.freeze(self.model, policy)
        train = self.recipe.train
        # Epochs and steps count optimiser steps: of the effective batch (batch × accumulate).
        epochs = stage_epochs(stage, len(self.train_set), train.batch_size * train.accumulate)
        longer = f" (at least {stage.min_steps} steps)" if epochs > stage.epochs else ""
        self.progress.message(
            f"stage {stage.name}: {report.trainable:,} trainable / {report.frozen:,} frozen "
            f"parameters, lr {describe_lr(stage.lr)}, {epochs} epochs{longer}"
        )
        train_feed, val_feed = stage_feeds(self, report)
        stage = self._resolve_lr(index, stage, progress, train_feed)
        with self.collective.scope():
            # A logistic stage fits its head outside the backend; it gets an optimiser it
            # never steps, so its checkpoints look like any stage's.
            made = dataclasses.replace(stage, optimizer="sgd") if stage.optimizer == LOGISTIC \
                else stage
            optimizer = self.calls.make_optimizer(self.model, made)
        best = None
        if restored is not None:
            self.calls.set_optimizer_state(optimizer, restored["optimizer"])
            best = restored["best"]
        at_start = self.get_weights()
        per_epoch = steps_per_epoch(len(self.train_set), train.batch_size, train.accumulate)
        run = _StageRun(stage, index, optimizer, train_feed, val_feed, per_epoch * epochs)
        while progress.epoch < epochs and not progress.stopped:
            counter += 1
            best = self._epoch(run, progress, epochs, at_start, best, counter)
        if stage.restore_best and best is not None and len(self.val_set):
            self.set_weights(best)
        if self.collective.rank == 0:
            self.calls.on_stage_end(self.info, stage.name, progress.best_metrics)
        return counter

    def _resolve_lr(
        self, index: int, stage: StageSpec, progress: _StageProgress, feed: Feed
    ) -> StageSpec:
        """``stage`` with its ``lr: auto`` resolved (:func:`~tlcore.train.lrfind.resolve_lr`)."""
        return resolve_lr(self, index, stage, progress, feed)

    def _epoch(
        self,
        run: _StageRun,
        progress: _StageProgress,
        epochs: int,
        at_start: dict[str, np.ndarray],
        best: dict[str, np.ndarray] | None,
        counter: int,
    ) -> dict[str, np.ndarray] | None:
        """Train and validate one epoch, keep the best weights, write the checkpoint; returns
        the best weights so far."""
        stage, epoch = run.stage, progress.epoch
        self.progress.start_epoch(f"{stage.name} {epoch + 1}/{epochs}")
        started = time.perf_counter()
        logistic = stage.optimizer == LOGISTIC
        metrics = fit_logistic(self, run) if logistic else train_epoch(self, run, epoch)
        weights, optimizer = self.get_weights(), self.calls.get_optimizer_state(run.optimizer)
        live, weights = weights, self._averaged(run, weights, optimizer)
        # Checked before anything is recorded: the last checkpoint and best epoch stay finite.
        saved = {"weight": weights, "optimiser state": optimizer}
        metrics.update(check_epoch(self, run, epoch, metrics, saved))  # + validation metrics
        seconds = round(time.perf_counter() - started, 3)
        row = {"stage": stage.name, "epoch": epoch + 1, **metrics, "seconds": seconds}
        self.history.append(row)
        self.progress.end_epoch(metrics)
        best_changed = self._track_best(stage, progress, metrics)
        if best_changed or best is None:
            best = weights
        progress.epoch += 1
        if stage.patience and progress.bad_epochs >= stage.patience:
            progress.stopped = True
            watched = monitored(stage, self.task, self.auto_monitor)
            self.progress.message(
                f"stage {stage.name}: no improvement of {watched} for "
                f"{stage.patience} epochs, stopping"
            )
        # Training goes on from its own weights; a stage ends on its average (if any).
        ends = progress.epoch >= epochs or progress.stopped
        kept = weights if ends or live is weights else self._set_back(live)
        state = {
            "counter": counter,
            "progress": vars(progress),
            "history": self.history,
            "warnings": self.warnings,
            "world_size": self.collective.world_size,
        }

        def save() -> Path:
            path = self.folder.save_checkpoint(
                state, kept, optimizer, best, best_changed, unchanged(at_start, weights, best)
            )
            write_json(self.folder.path / "history.json", self.history)
            self.calls.on_epoch_end(self.info, stage.name, epoch + 1, metrics)
            self.calls.on_checkpoint(self.info, path)
            return path

        on_rank0(self.collective, save)  # the other ranks hold the same weights, and wait
        return best

    def _averaged(
        self, run: _StageRun, weights: dict[str, np.ndarray], optimizer: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """The weights an epoch is validated, chosen and ended with: with ``train.ema`` the
        moving average, loaded into the model (a ``logistic`` stage has none); else
        ``weights`` themselves."""
        if not self.recipe.train.ema or run.stage.optimizer == LOGISTIC:
            return weights
        average = averaged_weights(weights, optimizer, self.backend)
        assert average is not None  # refused above when the backend keeps none
        self.set_weights(average)
        return average

    def _set_back(self, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Load the weights training continues from after validating their average."""
        self.set_weights(weights)
        return weights

    def _track_best(
        self, stage: StageSpec, progress: _StageProgress, metrics: dict[str, float]
    ) -> bool:
        monitor = monitored(stage, self.task, self.auto_monitor)
        if monitor not in metrics:
            return False
        score = metrics[monitor] * (1 if self.task.higher_is_better(monitor) else -1)
        if improves(score, metrics, progress.best_score, progress.best_metrics):
            progress.best_score = score
            progress.best_metrics = dict(metrics)
            progress.bad_epochs = 0
            return True
        progress.bad_epochs += 1
        return False

    def warn(self, text: str) -> None:
        """Say ``text`` once and keep it for ``tlcore.json`` and the result."""
        if text not in self.warnings:
            self.warnings.append(text)
            self.progress.warn(text)

    # --- helpers ----------------------------------------------------------------------------

    @property
    def size(self) -> tuple[int, int]:
        """The backbone's input size (height, width)."""
        assert self.preprocessing is not None
        return tuple(self.preprocessing.size)  # type: ignore[return-value]

    @property
    def info(self) -> RunInfo:
        """What event hooks receive."""
        return RunInfo(self.folder.path, self.backend, self.class_names, self.recipe.to_dict())

    def run_info(self) -> dict[str, Any]:
        """What ``run.json`` holds: versions, backend, classes (the model's output names),
        the task with what it learned from the data, the resolved recipe and where it
        trains."""
        return {
            "schema_version": SCHEMA_VERSION,
            "tlcore_version": __version__,
            "backend": self.backend,
            "class_names": list(self.class_names),
            "task": self.task.to_dict(self.task_info),
            "recipe": self.recipe.to_dict(),
            # Where it trained: device, precision, processes (and, at the end, peak memory).
            "compute": self.setup.describe(),
        }

    def get_weights(self) -> dict[str, np.ndarray]:
        """The model's weights, as numpy copies."""
        return self.calls.get_weights(self.model)

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Load the run's own weights back, strictly."""
        self.calls.set_weights(self.model, weights, strict=True)


@dataclass(frozen=True)
class _StageRun:
    """What every epoch of a stage shares."""

    stage: StageSpec
    index: int
    optimizer: Any
    train_feed: Feed
    val_feed: Feed
    total_steps: int
