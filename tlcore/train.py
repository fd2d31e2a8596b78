"""The training driver: stages, epochs, feature caching, early stopping, checkpoints, resume.

Backend-neutral: every framework operation goes through a hook, data moves as numpy arrays.
One :class:`Trainer` runs one recipe into one run folder.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tlcore import __version__
from tlcore.builtins import default_backbone
from tlcore.bundle import INFO_FILE, SCHEMA_VERSION, export_onnx, parity_indices
from tlcore.data import Dataset, augment, load_datasets
from tlcore.diagnose import (
    chance_warning,
    feature_warning,
    random_backbone_warnings,
    stalled_stage_warnings,
)
from tlcore.errors import PluginError, TlcoreError
from tlcore.freezing import resolve_batchnorm
from tlcore.interfaces import (
    Backbone,
    Batch,
    FreezeReport,
    LoadReport,
    Preprocessing,
    RunInfo,
    StepState,
)
from tlcore.plots import HISTORY_FILE, plot_history
from tlcore.plugins import hook, require_backend
from tlcore.progress import Progress
from tlcore.quantize import Quantized
from tlcore.recipe import (
    PRETRAINED_WEIGHTS,
    Recipe,
    StageSpec,
    build_recipe,
    follows_default_stages,
    scratch_stage,
)
from tlcore.runfolder import RunFolder, read_arrays, write_arrays, write_json
from tlcore.schedule import learning_rate, stage_epochs


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


def derive_seed(*parts: int) -> int:
    """A 31-bit seed from the recipe seed, the stage and the epoch: resumable randomness."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0] & 0x7FFFFFFF)


def with_default_backbone(recipe: Recipe) -> Recipe:
    """``recipe`` with ``backbone.source`` filled in when it names no backbone: the backend's
    declared default, which for the built-in backends is the first EfficientNet-Lite whose
    ImageNet weights are installed (:func:`tlcore.builtins.default_backbone`).

    Raises:
        TlcoreError: the backend is not installed; or pretrained weights are asked for and
            none are installed (instead of training on a random backbone).
    """
    info = require_backend(recipe.backend)
    spec = recipe.backbone
    if spec.source is not None or spec.model is not None:
        return recipe
    source = default_backbone(info.default_backbone, spec.weights)
    return build_recipe(recipe.to_dict(), {"backbone.source": source})


def build_model(recipe: Recipe, num_classes: int, progress: Progress | None = None) -> tuple:
    """Load the backbone and attach the head through the hooks; returns (model, backbone)."""
    h = hook()
    spec = with_default_backbone(recipe).backbone
    h.tl_seed(backend=recipe.backend, seed=recipe.train.seed)
    backbone: Backbone | None = h.tl_load_backbone(backend=recipe.backend, spec=spec)
    if backbone is None:
        what = spec.source or type(spec.model).__name__
        raise TlcoreError(
            f"no plugin can load backbone {what!r} for backend {recipe.backend!r}",
            f"run 'tl backbones --backend {recipe.backend}' to see what is available",
        )
    report = backbone.extra.get("weights_report")
    if isinstance(report, LoadReport) and progress is not None:
        _warn_partial_load(report, spec.weights, progress)
    backbone.pretrained = not random_init(recipe, backbone)
    model = h.tl_attach_head(
        backend=recipe.backend, backbone=backbone, head=recipe.head, num_classes=num_classes
    )
    if model is None:
        raise PluginError(f"no plugin attached a head for backend {recipe.backend!r}")
    return model, backbone


def random_init(recipe: Recipe, backbone: Backbone) -> bool:
    """Whether the backbone's weights are a random initialisation.

    The recipe's ``weights`` decides where it can: ``none`` is random and a weights file is
    not (it was trained, and loaded where it fits); for ``pretrained`` the backend knows
    whether the source has published weights (:attr:`Backbone.pretrained`).
    """
    weights = recipe.backbone.weights.lower()
    if weights == "none":
        return True
    if weights not in PRETRAINED_WEIGHTS:
        return False
    return not backbone.pretrained


def plan_stages(
    stages: tuple[StageSpec, ...], pretrained: bool
) -> tuple[tuple[StageSpec, ...], list[str]]:
    """The stages a run trains, and the warnings they deserve.

    A pretrained backbone keeps ``stages``. A randomly initialised one trains from scratch:
    the default two stages (up to ``epochs`` and ``lr``) become :func:`scratch_stage`; the
    user's own stages stay, with a warning where they freeze it.
    """
    if pretrained:
        return stages, []
    if follows_default_stages(stages):
        return (scratch_stage(stages),), []
    return stages, random_backbone_warnings(stages)


def _warn_partial_load(report: LoadReport, source: str, progress: Progress) -> None:
    progress.message(f"loaded {len(report.loaded)} tensors from {source}")
    if report.mismatched:
        progress.warn(
            f"re-initialised (shape differs from {source}): {', '.join(report.mismatched)}"
        )
    if report.missing:
        progress.warn(f"not in {source}, left as initialised: {', '.join(report.missing)}")
    if report.unexpected:
        progress.warn(f"ignored (no such layer in the model): {', '.join(report.unexpected)}")


def _absolute_paths(recipe: Recipe) -> Recipe:
    """The recipe with its data folders made absolute, so a resume works from anywhere."""
    paths = {
        f"data.{name}": str(Path(value).resolve())
        for name in ("path", "val_path")
        if (value := getattr(recipe.data, name)) is not None
    }
    return recipe.replace(**paths) if paths else recipe


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
    ) -> None:
        self.backend = recipe.backend
        self.folder = RunFolder(out)
        self.resume = resume
        self.progress = Progress(quiet=quiet)
        self.hook = hook()
        # Resolved once and written into run.json, so a resume or export rebuilds the same one.
        self.recipe = _absolute_paths(with_default_backbone(recipe))
        if isinstance(data, tuple) and all(isinstance(d, Dataset) for d in data):
            self.train_set, self.val_set = data
        else:
            self.train_set, self.val_set = load_datasets(recipe.data, recipe.train.seed, data)
        if recipe.backbone.source is None and recipe.backbone.model is None:
            self.progress.message(
                f"no backbone given: using {self.recipe.backbone.source} "
                f"(weights: {self.recipe.backbone.weights})"
            )
        if not len(self.val_set) and self.recipe.data.val_split is None:
            self.progress.message(
                f"{len(self.train_set)} images: too few to hold out a validation set that "
                "measures anything, so all of them train and the run reports training accuracy; "
                "measure the model on other images with 'tl eval' (or pass --val or --val-split)"
            )
        self.class_names = tuple(self.train_set.class_names)
        self.history: list[dict[str, Any]] = []
        self.model: Any = None
        self.preprocessing: Preprocessing | None = None
        self.pretrained = True  # whether the backbone's weights are more than an initialisation
        self.warnings: list[str] = []
        self._features_checked = False
        self._cached_val: _Feed | None = None  # the last stage's, when it trained on features

    # --- the run --------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        """Train every stage (continuing from the last checkpoint when resuming)."""
        self.folder.start(self._run_info(), resume=self.resume)
        self.model, backbone = build_model(self.recipe, len(self.class_names), self.progress)
        self.preprocessing = backbone.preprocessing
        self.progress.message(
            f"{self.backend} · {backbone.name} · {len(self.class_names)} classes · "
            f"{len(self.train_set)} train / {len(self.val_set)} val images"
        )
        self.pretrained = backbone.pretrained
        self._plan_stages(backbone.name)
        progress = _StageProgress()
        counter = 0
        restored: dict[str, Any] | None = None
        if self.resume:
            restored = self.folder.load_checkpoint()
            state = restored["state"]
            self._set_weights(restored["weights"], strict=True)
            self.history = state["history"]
            counter = state["counter"]
            progress = _StageProgress(**state["progress"])
            for text in state.get("warnings", []):
                self._warn(text)
            self.progress.message(
                f"resuming {self.folder.path} at stage {progress.stage + 1}, "
                f"epoch {progress.epoch + 1}"
            )
        stages = self.recipe.train.stages
        for index in range(progress.stage, len(stages)):
            if index > progress.stage:
                progress = _StageProgress(stage=index)
                restored = None
            counter = self._run_stage(index, stages[index], progress, restored, counter)
        return self._finish()

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
        report: FreezeReport = self._call("tl_freeze", model=self.model, policy=policy)
        epochs = stage_epochs(stage, len(self.train_set), self.recipe.train.batch_size)
        longer = f" (at least {stage.min_steps} steps)" if epochs > stage.epochs else ""
        self.progress.message(
            f"stage {stage.name}: {report.trainable:,} trainable / {report.frozen:,} frozen "
            f"parameters, lr {stage.lr:g}, {epochs} epochs{longer}"
        )
        optimizer = self._call("tl_make_optimizer", model=self.model, stage=stage)
        best = None
        if restored is not None:
            self.hook.tl_set_optimizer_state(
                backend=self.backend, optimizer=optimizer, state=restored["optimizer"]
            )
            best = restored["best"]
        cached = (
            self.recipe.train.cache_features
            and report.backbone_frozen
            and not self.recipe.data.augment
        )
        train_feed = _Feed(self, self.train_set, cached)
        val_feed = _Feed(self, self.val_set, cached)
        self._cached_val = val_feed if cached else None
        if train_feed.features is not None and not self._features_checked:
            # Once: every cached stage sees the same frozen backbone's features.
            self._features_checked = True
            if (text := feature_warning(train_feed.features)) is not None:
                self._warn(text)
        at_start = self._get_weights()
        if cached:
            self.progress.message("backbone frozen: training the head on cached features")
        steps_per_epoch = math.ceil(len(self.train_set) / self.recipe.train.batch_size)
        total_steps = steps_per_epoch * epochs
        while progress.epoch < epochs and not progress.stopped:
            epoch = progress.epoch
            self.progress.start_epoch(f"{stage.name} {epoch + 1}/{epochs}")
            started = time.perf_counter()
            metrics = self._train_epoch(index, stage, optimizer, train_feed, epoch, total_steps)
            metrics.update(val_feed.evaluate())
            row = {
                "stage": stage.name,
                "epoch": epoch + 1,
                **metrics,
                "seconds": round(time.perf_counter() - started, 3),
            }
            self.history.append(row)
            self.progress.end_epoch(metrics)
            best_changed = self._track_best(stage, progress, metrics)
            weights = self._get_weights()
            if best_changed or best is None:
                best = weights
            progress.epoch += 1
            if stage.patience and progress.bad_epochs >= stage.patience:
                progress.stopped = True
                self.progress.message(
                    f"stage {stage.name}: no improvement of {stage.monitor} for "
                    f"{stage.patience} epochs, stopping"
                )
            counter += 1
            path = self.folder.save_checkpoint(
                {
                    "counter": counter,
                    "progress": vars(progress),
                    "history": self.history,
                    "warnings": self.warnings,
                },
                weights,
                self._call("tl_get_optimizer_state", optimizer=optimizer),
                best,
                best_changed,
                unchanged(at_start, weights, best),
            )
            write_json(self.folder.path / "history.json", self.history)
            self.hook.tl_on_epoch_end(
                run=self.info, stage=stage.name, epoch=epoch + 1, metrics=metrics
            )
            self.hook.tl_on_checkpoint(run=self.info, path=path)
        if stage.restore_best and best is not None and len(self.val_set):
            self._set_weights(best, strict=True)
        self.hook.tl_on_stage_end(run=self.info, stage=stage.name, metrics=progress.best_metrics)
        return counter

    def _train_epoch(
        self,
        index: int,
        stage: StageSpec,
        optimizer: Any,
        feed: _Feed,
        epoch: int,
        total_steps: int,
    ) -> dict[str, float]:
        seed = derive_seed(self.recipe.train.seed, index, epoch)
        self.hook.tl_seed(backend=self.backend, seed=seed)
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(feed.dataset))
        size = self.recipe.train.batch_size
        batches = [order[i : i + size] for i in range(0, len(order), size)]
        sums = {"loss": 0.0, "accuracy": 0.0}
        lr = stage.lr
        for b, indices in enumerate(batches):
            step = epoch * len(batches) + b
            lr = learning_rate(stage, step, total_steps)
            batch = feed.batch(indices, rng)
            state = StepState(optimizer, lr, stage.label_smoothing, step)
            result = self._call("tl_train_step", model=self.model, batch=batch, state=state)
            for key in sums:
                sums[key] += float(result[key]) * len(indices)
            seen = b * size + len(indices)
            self.progress.batch(b + 1, len(batches), {k: v / seen for k, v in sums.items()})
        n = max(len(order), 1)
        return {"loss": sums["loss"] / n, "accuracy": sums["accuracy"] / n, "lr": lr}

    def _track_best(
        self, stage: StageSpec, progress: _StageProgress, metrics: dict[str, float]
    ) -> bool:
        if stage.monitor not in metrics:
            return False
        score = metrics[stage.monitor] * (-1 if stage.monitor == "val_loss" else 1)
        if progress.best_score is None or score > progress.best_score + 1e-9:
            progress.best_score = score
            progress.best_metrics = dict(metrics)
            progress.bad_epochs = 0
            return True
        progress.bad_epochs += 1
        return False

    def _finish(self) -> TrainResult:
        # Cached features stay valid after the stage (its backbone was frozen), so the final
        # evaluation need not run the backbone again.
        val_metrics = (self._cached_val or _Feed(self, self.val_set, cached=False)).evaluate()
        self._diagnose(val_metrics)
        native = self.folder.path / "native"
        native.mkdir(exist_ok=True)
        write_arrays(native / "weights.npz", self._get_weights())
        example = self.val_set if len(self.val_set) else self.train_set
        images = example.images(parity_indices(len(example)), self.size)
        write_json(self.folder.path / "history.json", self.history)
        plot_history(self.history, self.folder.path / HISTORY_FILE, warn=self.progress.warn)
        info = self._bundle_info(val_metrics)
        # Written before the exports too: a failed export still leaves a usable native run.
        write_json(self.folder.path / INFO_FILE, info)
        for fmt in self.recipe.export.formats:
            written = self._export(fmt, images, info)
            self.hook.tl_on_export(run=self.info, fmt=fmt, path=written)
        write_json(self.folder.path / INFO_FILE, info)
        quantized = self._quantize(info)
        return TrainResult(
            path=self.folder.path,
            model=self.model,
            backend=self.backend,
            class_names=self.class_names,
            preprocessing=self.preprocessing,  # type: ignore[arg-type]
            history=self.history,
            metrics=val_metrics,
            recipe=self.recipe,
            quantized=quantized,
            warnings=list(self.warnings),
        )

    def _plan_stages(self, name: str) -> None:
        """Fit the stages to a randomly initialised backbone (see :func:`plan_stages`); the
        recipe becomes the effective one, in ``run.json`` too, so a resume follows it."""
        planned, warnings = plan_stages(self.recipe.train.stages, self.pretrained)
        for text in warnings:
            self._warn(text)
        if planned == self.recipe.train.stages:
            return
        (stage,) = planned
        self.recipe = dataclasses.replace(
            self.recipe, train=dataclasses.replace(self.recipe.train, stages=planned)
        )
        if not self.resume:
            write_json(self.folder.run_file, self._run_info())
        self.progress.message(
            f"{name} is randomly initialised: instead of the two-stage fine-tuning recipe, one "
            f"stage {stage.name!r} trains the whole network from scratch, BatchNorm in training "
            f"mode ({stage.epochs} epochs, {stage.optimizer} at lr {stage.lr:g}, {stage.schedule} "
            f"after {stage.warmup:.0%} warm-up)"
        )

    def _diagnose(self, val_metrics: dict[str, float]) -> None:
        """The end-of-run checks of :mod:`tlcore.diagnose`: at chance, a loss that never moved."""
        classes = len(self.class_names)
        texts = stalled_stage_warnings(
            self.history, self.recipe.train.stages, self.train_set.labels, classes
        )
        if len(self.val_set):
            chance = chance_warning(val_metrics.get("val_accuracy"), self.val_set.labels, classes)
        else:
            last = self.history[-1].get("accuracy") if self.history else None
            chance = chance_warning(last, self.train_set.labels, classes, part="training")
        for text in [*texts, *([chance] if chance else [])]:
            self._warn(text)

    def _warn(self, text: str) -> None:
        """Say ``text`` once and keep it for ``tlcore.json`` and the result."""
        if text not in self.warnings:
            self.warnings.append(text)
            self.progress.warn(text)

    def _quantize(self, info: dict[str, Any]) -> Quantized | None:
        """``export.quantize``: an int8 model beside the verified ``model.onnx``, calibrated on
        the training images and measured on the validation images; recorded in ``info``."""
        spec = self.recipe.export
        if spec.quantize == "none":
            return None
        from tlcore.quantize import quantize_bundle, record

        evaluation, name = (self.val_set, "validation") if len(self.val_set) else (
            self.train_set, "training"
        )
        self.progress.message(f"quantising model.onnx ({spec.quantize})")
        result = quantize_bundle(
            self.folder.path, spec.quantize,
            calibration=self.train_set, evaluation=evaluation, size=self.size,
            labels=self.class_names, max_drop=spec.max_accuracy_drop,
            calibration_images=spec.calibration_images, evaluated_on=name,
        )
        record(info, result)
        write_json(self.folder.path / INFO_FILE, info)
        (self.progress.message if result.accepted else self.progress.warn)(result.summary())
        return result

    def _export(self, fmt: str, images: np.ndarray, info: dict[str, Any]) -> Path:
        """Write one export format; ONNX goes through the core's bundle layer, which records
        its checksum and parity in ``info``."""
        if fmt == "onnx":
            spec = self.recipe.export
            onnx = export_onnx(
                self.backend, self.model, self.folder.path, images, self.class_names,
                self.preprocessing,  # type: ignore[arg-type]
                opset=spec.opset, tolerance=spec.tolerance,
            )
            info["onnx"] = onnx.to_dict()
            from tlcore.quantize import discard

            discard(self.folder.path, info)  # an int8 file left by an earlier model
            return onnx.path
        target = self.folder.path / "native" if fmt == "native" else self.folder.path
        written = self.hook.tl_export(
            backend=self.backend,
            model=self.model,
            fmt=fmt,
            path=target,
            example=images,
            opset=self.recipe.export.opset,
        )
        if written is None:
            raise TlcoreError(
                f"no plugin can export format {fmt!r} for backend {self.backend!r}",
                "check export.formats in the recipe, or 'tl plugins' for what is installed",
            )
        return Path(written)

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

    def _run_info(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "tlcore_version": __version__,
            "backend": self.backend,
            "class_names": list(self.class_names),
            "recipe": self.recipe.to_dict(),
        }

    def _bundle_info(self, metrics: dict[str, float]) -> dict[str, Any]:
        info = require_backend(self.backend)
        versions = {package: _version(package) for package in info.packages}
        assert self.preprocessing is not None
        return {
            **self._run_info(),
            "labels": list(self.class_names),
            "input": self.preprocessing.to_dict(),
            "metrics": metrics,
            "framework_versions": versions,
            "warnings": list(self.warnings),
        }

    def _call(self, name: str, **kwargs: Any) -> Any:
        result = getattr(self.hook, name)(backend=self.backend, **kwargs)
        if result is None:
            raise PluginError(
                f"no plugin answered {name} for backend {self.backend!r}",
                "the backend plugin is incomplete; see 'tl plugins'",
            )
        return result

    def _get_weights(self) -> dict[str, np.ndarray]:
        weights = self._call("tl_get_weights", model=self.model)
        return {k: np.array(v, copy=True) for k, v in weights.items()}

    def _set_weights(self, weights: dict[str, np.ndarray], strict: bool) -> None:
        self._call("tl_set_weights", model=self.model, weights=weights, strict=strict)


class _Feed:
    """Batches of one dataset for one stage: cached features, or images decoded per batch."""

    def __init__(self, trainer: Trainer, dataset: Dataset, cached: bool) -> None:
        self.trainer = trainer
        self.dataset = dataset
        self.features: np.ndarray | None = None
        if cached and len(dataset):
            self.features = self._extract()

    def _extract(self) -> np.ndarray:
        t = self.trainer
        size = max(t.recipe.train.batch_size, 64)
        chunks = []
        for start in range(0, len(self.dataset), size):
            indices = np.arange(start, min(start + size, len(self.dataset)))
            images = self.dataset.images(indices, t.size)
            chunks.append(t._call("tl_extract_features", model=t.model, images=images))
        return np.concatenate(chunks)

    def batch(self, indices: np.ndarray, rng: np.random.Generator) -> Batch:
        """The training batch at ``indices`` (augmented images, or cached features)."""
        labels = self.dataset.labels[indices]
        if self.features is not None:
            return Batch(self.features[indices], labels, features=True)
        images = self.dataset.images(indices, self.trainer.size)
        names = self.trainer.recipe.data.augment
        return Batch(augment(images, names, rng) if names else images, labels)

    def logits(self) -> np.ndarray:
        """Logits for the whole dataset, in order."""
        t = self.trainer
        size = max(t.recipe.train.batch_size, 64)
        out = []
        for start in range(0, len(self.dataset), size):
            indices = np.arange(start, min(start + size, len(self.dataset)))
            labels = self.dataset.labels[indices]
            if self.features is not None:
                batch = Batch(self.features[indices], labels, features=True)
            else:
                batch = Batch(self.dataset.images(indices, t.size), labels)
            out.append(t._call("tl_eval_step", model=t.model, batch=batch))
        return np.concatenate(out) if out else np.zeros((0, len(t.class_names)), np.float32)

    def evaluate(self) -> dict[str, float]:
        """Validation loss and accuracy (empty when the dataset is)."""
        if not len(self.dataset):
            return {}
        logits = self.logits()
        return {
            "val_loss": cross_entropy(logits, self.dataset.labels),
            "val_accuracy": float(np.mean(logits.argmax(axis=1) == self.dataset.labels)),
        }


def unchanged(
    reference: dict[str, np.ndarray], *states: dict[str, np.ndarray] | None
) -> dict[str, np.ndarray]:
    """The arrays of ``reference`` that every one of ``states`` (``None`` skipped) holds
    unchanged, as ``reference``'s own objects: the frozen weights checkpoints can share."""
    others: list[dict[str, np.ndarray]] = []
    for state in states:
        if state is not None and all(state is not other for other in others):
            others.append(state)
    return {
        name: value
        for name, value in reference.items()
        if all(
            name in other
            and other[name].shape == value.shape
            and np.array_equal(other[name], value)
            for other in others
        )
    }


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean softmax cross-entropy of integer ``labels`` under ``logits``, in float64."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def _version(package: str) -> str | None:
    """The version of an imported package (its ``__version__``: distributions such as
    ``tensorflow-cpu`` install under another name), else its distribution's, else ``None``."""
    module = sys.modules.get(package)
    if module is not None and isinstance(getattr(module, "__version__", None), str):
        return module.__version__
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


#: The default backbones of tlcore 0.1, for the run folders it wrote without naming them.
V01_DEFAULTS = {"torch": "builtin:simple_cnn", "keras": "keras:mobilenet_v2"}


def load_run(path: str | Path) -> tuple[Recipe, tuple[str, ...], Any, Preprocessing]:
    """Rebuild a finished run's model from its folder: (recipe, class names, model, prep).

    The backbone is built without pretrained weights (nothing is downloaded), then the run's
    own ``native/weights.npz`` is loaded strictly.
    """
    folder = RunFolder(path)
    if not folder.run_file.is_file():
        raise TlcoreError(f"{path} is not a tlcore run folder", "pass a folder 'tl train' wrote")
    info = folder.info()
    weights_file = folder.path / "native" / "weights.npz"
    if not weights_file.is_file():
        raise TlcoreError(
            f"run {path} has not finished (no native/weights.npz)",
            f"finish it with 'tl train --resume {path}'",
        )
    overrides: dict[str, Any] = {"backbone.weights": "none"}
    backend = info["recipe"].get("backend")
    if info["recipe"].get("backbone", {}).get("source") is None and backend in V01_DEFAULTS:
        # tlcore 0.1 wrote runs without their default backbone's name, which has changed since.
        overrides["backbone.source"] = V01_DEFAULTS[backend]
    recipe = build_recipe(info["recipe"], overrides)
    classes = tuple(info["class_names"])
    model, backbone = build_model(recipe, len(classes))
    hook().tl_set_weights(
        backend=recipe.backend, model=model, weights=read_arrays(weights_file), strict=True
    )
    return recipe, classes, model, backbone.preprocessing
