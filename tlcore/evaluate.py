"""Evaluate a trained run's framework model on a labelled image folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tlcore.data import scan_folder
from tlcore.errors import DataError
from tlcore.interfaces import Batch
from tlcore.metrics import classification_report
from tlcore.plugins import hook
from tlcore.train import load_run


def evaluate_run(run: str | Path, data: str | Path, batch_size: int = 64) -> dict[str, Any]:
    """Accuracy, per-class precision/recall and confusion matrix of ``run`` on ``data``.

    The folder's class names must be among the run's; images are resized as in training.
    """
    recipe, classes, model, prep = load_run(run)
    dataset = scan_folder(data)
    unknown = sorted(set(dataset.class_names) - set(classes))
    if unknown:
        raise DataError(
            f"classes in {data} that run {run} was not trained on: {', '.join(unknown)}",
            f"the run knows: {', '.join(classes)}",
        )
    index = {name: i for i, name in enumerate(classes)}
    labels = np.array([index[dataset.class_names[y]] for y in dataset.labels], dtype=np.int64)
    predicted = []
    for start in range(0, len(dataset), batch_size):
        indices = np.arange(start, min(start + batch_size, len(dataset)))
        images = dataset.images(indices, tuple(prep.size))
        logits = hook().tl_eval_step(
            backend=recipe.backend, model=model, batch=Batch(images, labels[indices])
        )
        predicted.append(np.asarray(logits).argmax(axis=1))
    report = classification_report(labels, np.concatenate(predicted), classes)
    return {**report, "class_names": list(classes), "run": str(run), "data": str(data)}
