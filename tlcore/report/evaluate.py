"""Evaluate a trained run on a labelled image folder: through its ONNX model, or the framework's."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tlcore.bundle.layout import MODEL_FILE
from tlcore.data import scan_folder
from tlcore.errors import DataError, TlcoreError
from tlcore.interfaces import Batch
from tlcore.metrics import classification_report
from tlcore.plugins.calls import BackendCalls
from tlcore.runfolder import write_json

REPORT_FILE = "report.json"


def evaluate_run(
    run: str | Path, data: str | Path, batch_size: int = 64, native: bool = False
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall and confusion matrix of ``run`` on ``data``.

    The model is the bundle's default model (``model.onnx``, or its int8 model when that was
    accepted) on onnxruntime whenever there is one (``run`` may also be a bare ``.onnx``
    file): what is shipped is what is measured, and no framework is needed. Otherwise, or with
    ``native``, the framework model is rebuilt from the run's weights. The folder's class names
    must be among the run's; images are resized as in training. The report names the
    ``engine`` and the ``model`` file it measured.
    """
    if not native and (Path(run).is_file() or (Path(run) / MODEL_FILE).is_file()):
        classes, size, scores, engine, model = _onnx_model(run)
    else:
        classes, size, scores, engine, model = _native_model(run)
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
        "model": model,
    }


def report_folder(run: str | Path, data: str | Path) -> Path:
    """Where ``tl eval`` writes its files by default: ``eval/<data folder name>`` in the run
    folder (beside a bare ``.onnx`` file: in its folder)."""
    bundle = Path(run).parent if Path(run).is_file() else Path(run)
    return bundle / "eval" / (Path(data).resolve().name or "data")


def write_report(report: dict[str, Any], folder: str | Path) -> list[Path]:
    """Write ``report.json`` and the confusion matrix ``confusion.png`` (when matplotlib is
    installed) into ``folder``; returns the files written."""
    from tlcore.report.plots import CONFUSION_FILE, plot_confusion

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / REPORT_FILE, report)
    except OSError as exc:
        raise TlcoreError(
            f"cannot write the evaluation report into {folder}: {exc.strerror or exc}",
            "choose another folder with --out",
        ) from None
    title = f"accuracy {report['accuracy']:.4f} on {report['count']} images ({report['model']})"
    picture = plot_confusion(
        report["confusion"], report["class_names"], folder / CONFUSION_FILE, title=title
    )
    return [folder / REPORT_FILE, *([picture] if picture else [])]


_Model = tuple[tuple[str, ...], tuple[int, int], Callable[[np.ndarray], np.ndarray], str, str]


def _onnx_model(run: str | Path) -> _Model:
    from tlcore.runtime import Predictor

    predictor = Predictor(run)
    model = predictor.model_file.name
    return predictor.labels, predictor.size, predictor.probabilities, "onnxruntime", model


def _native_model(run: str | Path) -> _Model:
    from tlcore.build import load_run

    recipe, classes, model, prep = load_run(run)

    def logits(images: np.ndarray) -> np.ndarray:
        batch = Batch(images, np.zeros(len(images), dtype=np.int64))
        return BackendCalls(recipe.backend).eval_step(model, batch)

    weights = "native/weights.npz"
    return classes, tuple(prep.size), logits, recipe.backend, weights  # type: ignore[return-value]
