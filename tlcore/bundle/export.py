"""Export a finished run again (``tl export``): another opset, a run trained without ONNX, or
an int8 model beside the float one."""

from __future__ import annotations

from pathlib import Path

from tlcore.build import load_run
from tlcore.bundle.graph import OnnxExport, export_onnx
from tlcore.bundle.layout import INFO_FILE, MODEL_FILE, file_sha256
from tlcore.bundle.parity import parity_indices
from tlcore.bundle.quantize import Quantized, discard, quantize_bundle, record
from tlcore.data import Dataset, LabelFileDataset, load_datasets, scan_folder
from tlcore.errors import TlcoreError
from tlcore.interfaces import RunInfo
from tlcore.plugins.calls import BackendCalls
from tlcore.recipe import Recipe, build_recipe
from tlcore.runfolder import read_json, write_json
from tlcore.tasks import get_task, task_from_bundle


def export_run(
    run: str | Path, *, opset: int | None = None, data: str | Path | None = None
) -> OnnxExport:
    """Write a run's ``model.onnx`` again from its native weights, verified like training does.

    An int8 model made from the previous ``model.onnx`` is deleted with it (it would no longer
    match); :func:`quantize_run` makes a new one.

    Args:
        run: a finished run folder.
        opset: the ONNX opset (default: the recipe's ``export.opset``).
        data: an image folder for the parity samples (default: the run's own validation
            images, or its training images without a validation set).

    Returns:
        What was written; ``tlcore.json`` records it.

    Raises:
        TlcoreError: the run is not finished, its data is gone and no ``data`` is given, or
            the export fails its check.
    """
    recipe, classes, model, prep = load_run(run)
    info_file = _info_file(run)
    info = read_json(info_file)
    task, task_info = task_from_bundle(info.get("task"))
    _, dataset, _ = _images(recipe, data, "the parity check")
    samples = dataset.images(parity_indices(len(dataset)), prep.size)
    spec = recipe.export
    result = export_onnx(
        recipe.backend, model, run, samples, classes, prep,
        opset=spec.opset if opset is None else opset, tolerance=spec.tolerance,
        task=task, task_info=task_info,
    )
    info["onnx"] = result.to_dict()
    discard(run, info)
    write_json(info_file, info)
    BackendCalls(recipe.backend).on_export(
        RunInfo(Path(run), recipe.backend, classes, recipe.to_dict()), "onnx", result.path
    )
    return result


def quantize_run(
    run: str | Path,
    mode: str | None = None,
    *,
    data: str | Path | None = None,
    max_drop: float | None = None,
    calibration_images: int | None = None,
) -> Quantized | None:
    """Quantise a finished run's verified ``model.onnx`` to ``model.int8.onnx`` (onnxruntime only).

    Static quantisation calibrates on the run's training images; both models are measured on
    its validation images (its training images when it has none). The int8 model becomes
    ``default_model`` in ``tlcore.json`` only if it loses at most ``max_drop`` of accuracy.

    Args:
        run: a finished run folder with a ``model.onnx``.
        mode: ``static``, ``dynamic`` or ``none`` (removes an int8 model); default: the
            recipe's ``export.quantize``.
        data: an image folder with one sub-folder per class, used instead of the run's data
            for both calibration and measurement.
        max_drop: the largest accuracy loss accepted, a fraction (default: the recipe's
            ``export.max_accuracy_drop``).
        calibration_images: how many images to calibrate on (default: the recipe's
            ``export.calibration_images``).

    Returns:
        The int8 model and its figures, or ``None`` for mode ``none``.

    Raises:
        TlcoreError: a bad value, the run has no verified ``model.onnx``, its data is gone
            and no ``data`` is given, or onnxruntime cannot quantise the model.
    """
    info_file = _info_file(run)
    info = read_json(info_file)
    overrides = {
        "export.quantize": mode,
        "export.max_accuracy_drop": max_drop,
        "export.calibration_images": calibration_images,
    }
    recipe = build_recipe(info["recipe"], {k: v for k, v in overrides.items() if v is not None})
    spec = recipe.export
    if spec.quantize == "none":
        discard(run, info)
        write_json(info_file, info)
        return None
    _check_float_model(Path(run), info)
    task, task_info = task_from_bundle(info.get("task"))
    calibration, evaluation, names = _images(recipe, data, "quantisation")
    result = quantize_bundle(
        run, spec.quantize,
        calibration=calibration, evaluation=evaluation, size=tuple(info["input"]["size"]),
        labels=info["labels"], max_drop=spec.max_accuracy_drop,
        calibration_images=spec.calibration_images,
        calibrated_on=names[0], evaluated_on=names[1], task=task, task_info=task_info,
    )
    record(info, result)
    write_json(info_file, info)
    return result


def _info_file(run: str | Path) -> Path:
    info_file = Path(run) / INFO_FILE
    if not info_file.is_file():
        raise TlcoreError(
            f"run {run} has not finished (no {INFO_FILE})",
            f"finish it with 'tl train --resume {run}'",
        )
    return info_file


def _check_float_model(run: Path, info: dict) -> None:
    recorded = (info.get("onnx") or {}).get("sha256")
    model = run / MODEL_FILE
    if not recorded or not model.is_file():
        raise TlcoreError(f"run {run} has no verified {MODEL_FILE}", f"run 'tl export {run}'")
    if file_sha256(model) != recorded:
        raise TlcoreError(
            f"{model} does not match the sha256 recorded in {INFO_FILE}",
            f"write it again with 'tl export {run}'",
        )


def _images(
    recipe: Recipe, data: str | Path | None, purpose: str
) -> tuple[Dataset, Dataset, tuple[str, str]]:
    """``(training images, held-out images, their names)``: the run's own, or ``data`` (a
    folder with one sub-folder per class, or a CSV label file) for both. The held-out images
    are the validation set, or the training set without one."""
    task = get_task(recipe.task)
    if data is not None:
        if Path(data).is_file():
            dataset: Dataset = LabelFileDataset(data, task, verify=False)
        else:
            dataset = scan_folder(data, verify=False)
        return dataset, dataset, (str(data), str(data))
    try:
        train, val = load_datasets(recipe.data, recipe.train.seed, task=task)
    except TlcoreError as exc:
        raise TlcoreError(
            f"{purpose} needs sample images, and the run's data cannot be read: {exc.message}",
            "pass an image folder of the same kind with --data",
        ) from None
    if len(val):
        return train, val, ("training", "validation")
    return train, train, ("training", "training")
