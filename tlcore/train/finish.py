"""The end of a run: the final checks, the bundle description, the exports and the int8 model."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlcore.bundle.graph import export_onnx
from tlcore.bundle.layout import INFO_FILE, exported_files
from tlcore.bundle.parity import (
    EMBEDDING_TOLERANCE,
    REDUCED_EMBEDDING_TOLERANCE,
    parity_indices,
)
from tlcore.bundle.tokenizer import ship_tokenizer, tokenizer_record
from tlcore.diagnose import stalled_stage_warnings
from tlcore.errors import TlcoreError
from tlcore.plugins import require_backend
from tlcore.report.plots import HISTORY_FILE, plot_history
from tlcore.runfolder import write_arrays, write_json
from tlcore.train.balance import loss_mix
from tlcore.train.feed import Feed

if TYPE_CHECKING:
    from tlcore.bundle.quantize import Quantized
    from tlcore.train.trainer import Trainer, TrainResult


def finish(t: Trainer) -> TrainResult:
    """Evaluate the final model, write the native weights, history, ``tlcore.json`` and every
    export format, then the int8 model when asked; the run's result."""
    # Cached features stay valid after the stage (its backbone was frozen), so the final
    # evaluation need not run the backbone again.
    feed = t.cached_val or Feed(t, t.val_set, cached=False)
    logits = feed.logits()
    _require_finite_outputs(logits)
    # The task's last word on the held-out images (a multi-label model's thresholds), before
    # the final metrics and the exports, which use it.
    t.task_info = t.task.calibrate(t.task_info, logits, t.val_set.labels)
    val_metrics = feed.evaluate(logits)
    _diagnose(t, val_metrics)
    native = t.folder.path / "native"
    native.mkdir(exist_ok=True)
    write_arrays(native / "weights.npz", t.get_weights())
    example = t.val_set if len(t.val_set) else t.train_set
    images = example.inputs(parity_indices(len(example)), t.input_spec)
    write_json(t.folder.path / "history.json", t.history)
    metric = t.task.default_monitor.removeprefix("val_")
    plot_history(t.history, t.folder.path / HISTORY_FILE, warn=t.progress.warn, metric=metric)
    # A text model's tokenizer goes beside model.onnx; the bundle names the copy.
    t.bundle_input = ship_tokenizer(t.input_spec, t.folder.path)
    info = {**bundle_info(t, val_metrics), **_recall(t, logits)}
    # Written before the exports too: a failed export still leaves a usable native run.
    write_json(t.folder.path / INFO_FILE, info)
    exported = []
    for fmt in t.recipe.export.formats:
        written = _export(t, fmt, images, info)
        # The native format is its folder: the backend's file and the core's weights.npz.
        record = t.folder.path / "native" if fmt == "native" else written
        info.setdefault("exports", {})[fmt] = exported_files(record, t.folder.path)
        exported.append((fmt, written))
    write_json(t.folder.path / INFO_FILE, info)
    quantized = _quantize(t, info)
    # Announced once tlcore.json is final: a tracker that stores the bundle stores this one.
    for fmt, written in exported:
        t.calls.on_export(t.info, fmt, written)
    return train_result(t, val_metrics, quantized)


def train_result(
    t: Trainer, metrics: dict[str, float], quantized: Quantized | None = None
) -> TrainResult:
    """What ``t``'s run gives back: its model, files, history and final ``metrics``."""
    from tlcore.train.trainer import TrainResult

    return TrainResult(
        path=t.folder.path,
        model=t.model,
        backend=t.backend,
        class_names=t.class_names,
        preprocessing=t.input_spec,
        history=t.history,
        metrics=metrics,
        recipe=t.recipe,
        quantized=quantized,
        warnings=list(t.warnings),
    )


def _require_finite_outputs(logits: np.ndarray) -> None:
    """No bundle holds a model that outputs NaN or inf on its validation images.

    Every epoch was checked as it ended, so this guards what came after: the best epoch's
    weights restored, a stage that never ran.
    """
    finite = np.isfinite(np.asarray(logits, np.float64))
    bad = int((~finite.all(axis=tuple(range(1, finite.ndim)))).sum())
    if bad:
        raise TlcoreError(
            f"the trained model outputs NaN or inf for {bad} of {len(logits)} validation "
            "images; no bundle is written",
            "training diverged: train again at a lower learning rate",
        )


def _diagnose(t: Trainer, val_metrics: dict[str, float]) -> None:
    """The end-of-run checks of :mod:`tlcore.diagnose` and the task's: at chance, a loss
    that never moved."""
    outputs, task, info = t.num_outputs, t.task, t.task_info
    labels = t.train_set.labels
    mix = loss_mix(t.class_weights, t.recipe.train.sampler, labels, outputs) \
        if task.loss == "cross_entropy" else None
    texts = stalled_stage_warnings(
        t.history, t.recipe.train.stages, labels, outputs, task=task, info=info, class_mix=mix
    )
    if len(t.val_set):
        final = {key.removeprefix("val_"): value for key, value in val_metrics.items()}
        chance = task.chance_warning(final, t.val_set.labels, outputs, info, "validation")
    else:
        last = t.history[-1] if t.history else {}
        chance = task.chance_warning(last, t.train_set.labels, outputs, info, "training")
    for text in [*texts, *([chance] if chance else [])]:
        t.warn(text)


def _quantize(t: Trainer, info: dict[str, Any]) -> Quantized | None:
    """``export.quantize``: an int8 model beside the verified ``model.onnx``, calibrated on
    the training images and measured on the validation images; recorded in ``info``."""
    spec = t.recipe.export
    if spec.quantize == "none":
        return None
    from tlcore.bundle.quantize import quantize_bundle, record

    evaluation, name = (t.val_set, "validation") if len(t.val_set) else (
        t.train_set, "training"
    )
    t.progress.message(f"quantising model.onnx ({spec.quantize})")
    result = quantize_bundle(
        t.folder.path, spec.quantize,
        calibration=t.train_set, evaluation=evaluation, spec=t.input_spec,
        labels=t.class_names, max_drop=spec.max_accuracy_drop,
        calibration_images=spec.calibration_images, evaluated_on=name,
        task=t.task, task_info=t.task_info,
    )
    record(info, result)
    write_json(t.folder.path / INFO_FILE, info)
    (t.progress.message if result.accepted else t.progress.warn)(result.summary())
    return result


def _export(t: Trainer, fmt: str, images: np.ndarray, info: dict[str, Any]) -> Path:
    """Write one export format; ONNX goes through the core's bundle layer, which records
    its checksum and parity in ``info``."""
    if fmt == "onnx":
        spec = t.recipe.export
        onnx = export_onnx(
            t.backend, t.model, t.folder.path, images, t.class_names,
            t.bundle_input,
            opset=spec.opset, tolerance=spec.tolerance, task=t.task, task_info=t.task_info,
            # Features come from the training precision; the export is float32.
            embeddings_tolerance=EMBEDDING_TOLERANCE if t.setup.precision == "32"
            else REDUCED_EMBEDDING_TOLERANCE,
        )
        if spec.tta != "none":  # the averaging graph, checked against two native forwards
            from tlcore.bundle.tta import export_tta

            onnx = export_tta(
                onnx, t.backend, t.model, images, t.bundle_input, t.task, t.task_info,
                spec.tolerance, spec.tta,
                EMBEDDING_TOLERANCE if t.setup.precision == "32" else REDUCED_EMBEDDING_TOLERANCE,
            )
        info["onnx"] = {**onnx.to_dict(), "tta": spec.tta}
        if t.modality == "text":
            info["strings"] = _strings_model(t)
        from tlcore.bundle.quantize import discard

        discard(t.folder.path, info)  # an int8 file left by an earlier model
        return onnx.path
    target = t.folder.path / "native" if fmt == "native" else t.folder.path
    return t.calls.export(t.model, fmt, target, images, t.recipe.export.opset)


def _strings_model(t: Trainer) -> dict[str, Any]:
    """``model.strings.onnx`` (texts in, no tokenizer file needed), checked on the validation
    texts (the training texts without a validation set); what ``tlcore.json`` records."""
    from tlcore.bundle.strings_export import PARITY_TEXTS, export_strings

    texts_from = t.val_set if len(t.val_set) else t.train_set
    texts = [texts_from.text(i) for i in range(min(len(texts_from), PARITY_TEXTS))]
    section = export_strings(t.folder.path, t.input_spec.preprocessing, texts)
    if not section["written"]:
        t.warn(f"no model.strings.onnx: {section['reason']}")
    return section


def bundle_info(t: Trainer, metrics: dict[str, float]) -> dict[str, Any]:
    """``tlcore.json``: the run's description plus labels, input, metrics and versions."""
    info = require_backend(t.backend)
    versions = {package: _version(package) for package in info.packages}
    tokenizer = tokenizer_record(t.bundle_input, t.folder.path)
    return {
        **t.run_info(),
        "labels": list(t.class_names),
        "input": t.bundle_input.to_dict(),
        **({"tokenizer": tokenizer} if tokenizer else {}),
        "metrics": metrics,
        "framework_versions": versions,
        "warnings": list(t.warnings),
        "timing": {
            "feature_extraction_seconds": round(t.feature_seconds, 3),
            "epoch_seconds": sum(row.get("seconds", 0.0) for row in t.history),
        },
    }


def _recall(t: Trainer, logits: np.ndarray) -> dict[str, Any]:
    """Each class's recall from the validation ``logits``, by class name (``None`` for a
    class the set does not hold), for a classification run with a validation set: what an
    imbalanced run is judged by, in ``tlcore.json``."""
    recall_by_class = getattr(t.task, "recall_by_class", None)
    if recall_by_class is None or not len(t.val_set):
        return {}
    return {"recall_by_class": recall_by_class(logits, t.val_set.labels, t.class_names)}


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
