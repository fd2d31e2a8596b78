"""What a stage trains and validates on: cached backbone features, or images decoded per
batch."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from tlcore.data import Dataset, augment
from tlcore.data.augment import mix
from tlcore.diagnose import feature_warning
from tlcore.errors import RecipeError
from tlcore.interfaces import Batch
from tlcore.train.distributed import gather_rows, shard

if TYPE_CHECKING:
    from tlcore.interfaces import FreezeReport
    from tlcore.recipe import Recipe
    from tlcore.train.trainer import Trainer


NO_CACHE = (
    "augmentation: backbone features are recomputed every step (no cache); the decoded, "
    "resized images stay cached in memory"
)
"""What a run says when augmentation turns off the feature cache a frozen stage would use."""


class Feed:
    """Batches of one dataset for one stage: cached features, or images decoded per batch.

    Features and outputs of the whole dataset are computed on each rank's shard of it and
    gathered in order (:mod:`tlcore.train.distributed`), so every rank holds all of them.
    """

    def __init__(self, trainer: Trainer, dataset: Dataset, cached: bool) -> None:
        self.trainer = trainer
        self.dataset = dataset
        self.features: np.ndarray | None = None
        if cached and len(dataset):
            self.features = self._extract()

    def _extract(self) -> np.ndarray:
        t = self.trainer
        chunks = [
            t.calls.extract_features(t.model, self.dataset.inputs(indices, t.input_spec))
            for indices in self._chunks()
        ]
        return gather_rows(t.collective, np.concatenate(chunks))

    def _chunks(self) -> list[np.ndarray]:
        """This rank's shard of the dataset in chunks of at least 64 (one empty chunk for
        an empty shard: the backend still says how wide its outputs are)."""
        size = max(self.trainer.recipe.train.batch_size, 64)
        mine = shard(len(self.dataset), self.trainer.collective)
        return [mine[i : i + size] for i in range(0, len(mine), size)] or [mine]

    def batch(self, indices: np.ndarray, rng: np.random.Generator) -> Batch:
        """The training batch at ``indices`` (augmented images, or cached features), its
        targets as the task's loss takes them (float32 class probabilities after mixup or
        CutMix)."""
        t = self.trainer
        labels = t.task.train_targets(self.dataset.labels[indices], t.task_info)
        if self.features is not None:
            return Batch(self.features[indices], labels, features=True)
        images = self.dataset.inputs(indices, self.trainer.input_spec)
        data = self.trainer.recipe.data
        if not data.augment:
            return Batch(images, labels)
        images = augment(images, data.augment, rng, crop_scale=data.crop_scale)
        # Mixup and CutMix come last and turn the targets into float32 class probabilities
        # (multi-hot rows for multilabel): the soft targets the backends' losses take.
        images, labels = mix(
            images, labels, data.augment, rng, t.num_outputs, data.mixup_alpha,
            data.cutmix_alpha,
        )
        return Batch(images, labels)

    def logits(self) -> np.ndarray:
        """Raw outputs (logits) for the whole dataset, in order."""
        t = self.trainer
        out = []
        for indices in self._chunks():
            if not len(indices):  # an empty shard: a network need not take an empty batch
                continue
            labels = np.zeros(len(indices), dtype=np.int64)  # unused by tl_eval_step
            if self.features is not None:
                batch = Batch(self.features[indices], labels, features=True)
            else:
                batch = Batch(self.dataset.inputs(indices, t.input_spec), labels)
            out.append(np.asarray(t.calls.eval_step(t.model, batch), np.float32))
        mine = np.concatenate(out) if out else np.zeros((0, t.num_outputs), np.float32)
        return gather_rows(t.collective, mine)

    def evaluate(self, logits: np.ndarray | None = None) -> dict[str, float]:
        """The task's validation metrics, ``val_loss``, ``val_accuracy``, ... (empty when the
        dataset is), of :meth:`logits` unless given."""
        if not len(self.dataset):
            return {}
        t = self.trainer
        outputs = self.logits() if logits is None else logits
        found = t.task.metrics(outputs, self.dataset.labels, t.task_info)
        return {f"val_{key}": value for key, value in found.items()}


def check_image_only(recipe: Recipe, modality: str) -> None:
    """Refuse, for data that is not images, what only images have: ``data.augment`` (every
    augmentation, built in or registered, takes uint8 images) and ``export.tta`` (it takes
    views of images).

    Raises:
        RecipeError: either is set and ``modality`` is not ``image``; names the field.
    """
    if modality == "image":
        return
    if recipe.data.augment:
        raise RecipeError(
            "data.augment", list(recipe.data.augment),
            f"an empty list for {modality} data (augmentations transform images)",
        )
    if recipe.export.tta != "none":
        raise RecipeError(
            "export.tta", recipe.export.tta,
            f"none for {modality} data (test-time augmentation mirrors images)",
        )


def stage_feeds(t: Trainer, report: FreezeReport) -> tuple[Feed, Feed]:
    """The stage's training and validation feeds: cached features when the backbone is
    frozen (and nothing augments the images), else images decoded per batch."""
    check_image_only(t.recipe, t.modality)
    cacheable = t.recipe.train.cache_features and report.backbone_frozen
    cached = cacheable and not t.recipe.data.augment
    if cacheable and not cached:  # said in the stage that would have used the cache
        t.progress.message(NO_CACHE)
    started = time.perf_counter()
    train_feed = Feed(t, t.train_set, cached)
    val_feed = Feed(t, t.val_set, cached)
    if cached:
        t.feature_seconds += time.perf_counter() - started
    t.cached_val = val_feed if cached else None
    if train_feed.features is not None and not t.features_checked:
        # Once: every cached stage sees the same frozen backbone's features.
        t.features_checked = True
        if (text := feature_warning(train_feed.features)) is not None:
            t.warn(text)
    if cached:
        t.progress.message("backbone frozen: training the head on cached features")
    return train_feed, val_feed
