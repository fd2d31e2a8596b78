"""The workload's data: scikit-learn's digits (offline), split the same way for both sides."""

from __future__ import annotations

import numpy as np

from tlcore.data import ArrayDataset, split
from tlcore.demo import digits_arrays

CLASSES = tuple(str(d) for d in range(10))


def digits(count: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` digits (the same number of each class, first ones first) at ``size`` pixels:
    uint8 ``(N, size, size, 3)`` and int64 labels."""
    images, labels = digits_arrays(size=size)
    per_class = max(count // len(CLASSES), 2)
    keep = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(len(CLASSES))])
    keep.sort()
    return images[keep], labels[keep]


def train_val(count: int, size: int) -> tuple[ArrayDataset, ArrayDataset]:
    """A stratified, seeded 80/20 split of :func:`digits`, as tlcore datasets."""
    images, labels = digits(count, size)
    return split(ArrayDataset(images, labels, class_names=CLASSES), 0.2, seed=0)


def arrays(dataset: ArrayDataset) -> tuple[np.ndarray, np.ndarray]:
    """The images and labels of a split, as the hand-written code gets them."""
    return dataset.array[dataset.source_indices], np.asarray(dataset.labels)


PRETRAIN_SIZE = 64


def pretraining_digits(per_class: int, size: int = PRETRAIN_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """The last ``per_class`` digits of each class, which :func:`digits` never returns for
    the sizes the suite uses (at most 100 per class of about 180, ``per_class`` at most 60):
    what the benchmark backbones are pretrained on, so their features are not random."""
    images, labels = digits_arrays(size=size)
    keep = np.concatenate(
        [np.flatnonzero(labels == c)[-per_class:] for c in range(len(CLASSES))]
    )
    keep.sort()
    return images[keep], labels[keep]
