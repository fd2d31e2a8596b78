"""Evaluate a trained run on a labelled image folder: through its ONNX model, or the framework's."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tlcore.bundle import MODEL_FILE
from tlcore.data import scan_folder
from tlcore.errors import DataError
from tlcore.interfaces import Batch
from tlcore.metrics import classification_report
from tlcore.plugins import hook


def evaluate_run(
    run: str | Path, data: str | Path, batch_size: int = 64, native: bool = False
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall and confusion matrix of ``run`` on ``data``.

    The model is the bundle's ``model.onnx`` on onnxruntime whenever there is one (``run``
    may also be a bare ``.onnx`` file): what is shipped is what is measured, and no framework
    is needed. Otherwise, or with ``native``, the framework model is rebuilt from the run's
    weights. The folder's class names must be among the run's; images are resized as in
    training.
    """
    if not native and (Path(run).is_file() or (Path(run) / MODEL_FILE).is_file()):
        classes, size, scores, engine = _onnx_model(run)
    else:
        classes, size, scores, engine = _native_model(run)
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
        predicted.append(scores(dataset.images(indices, size)).argmax(axis=1))
    report = classification_report(labels, np.concatenate(predicted), classes)
    return {
        **report,
        "class_names": list(classes),
        "run": str(run),
        "data": str(data),
        "engine": engine,
    }


_Model = tuple[tuple[str, ...], tuple[int, int], Callable[[np.ndarray], np.ndarray], str]


def _onnx_model(run: str | Path) -> _Model:
    from tlcore.runtime import Predictor

    predictor = Predictor(run)
    return predictor.labels, predictor.size, predictor.probabilities, "onnxruntime"


def _native_model(run: str | Path) -> _Model:
    from tlcore.train import load_run

    recipe, classes, model, prep = load_run(run)

    def logits(images: np.ndarray) -> np.ndarray:
        batch = Batch(images, np.zeros(len(images), dtype=np.int64))
        return np.asarray(hook().tl_eval_step(backend=recipe.backend, model=model, batch=batch))

    return classes, tuple(prep.size), logits, recipe.backend  # type: ignore[return-value]
