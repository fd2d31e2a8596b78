"""Export a finished run again (``tl export``): another opset, a run trained without ONNX, or
an int8 model beside the float one."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tlcore.build import load_run
from tlcore.bundle.graph import OnnxExport, check_opset, export_onnx
from tlcore.bundle.layout import INFO_FILE, MODEL_FILE, RUN_FILE, exported_files, file_sha256
from tlcore.bundle.parity import parity_indices
from tlcore.bundle.quantize import Quantized, discard, quantize_bundle, record
from tlcore.bundle.read import (
    Description,
    describe_info,
    describe_model,
    differences,
    open_bundle,
    read_info,
)
from tlcore.bundle.tokenizer import resolve_tokenizer, ship_tokenizer, tokenizer_record
from tlcore.data import Dataset, load_datasets
from tlcore.data.given import labelled_data
from tlcore.errors import TlcoreError
from tlcore.interfaces import RunInfo
from tlcore.plugins.calls import BackendCalls
from tlcore.recipe import Recipe, build_recipe
from tlcore.runfolder import RunFolder, write_json
from tlcore.tasks import DEFAULT_TASK, Task, get_task, task_from_bundle

Warn = Callable[[str], None]
"""Where :func:`export_run` says what it corrected in ``tlcore.json``."""


def export_run(
    run: str | Path,
    *,
    opset: int | None = None,
    data: str | Path | None = None,
    warn: Warn | None = None,
) -> OnnxExport:
    """Write a run's ``model.onnx`` again from its native weights, verified like training does.

    The model gets the run's own labels (``run.json``), input (the rebuilt backbone's) and
    task (the recipe's, with what the bundle's intact ``model.onnx``, else ``tlcore.json``,
    stored for it: a multi-label model's thresholds). Where ``tlcore.json`` said otherwise,
    or nothing, it is written again, and ``warn`` names what differed. The finished bundle is
    then opened with the runtime's own reader (:func:`tlcore.bundle.read.open_bundle`): an
    export either passes every check ``tl predict`` makes or is an error.

    An int8 model made from the previous ``model.onnx`` is deleted with it (it would no longer
    match); :func:`quantize_run` makes a new one.

    Args:
        run: a finished run folder.
        opset: the ONNX opset (default: the recipe's ``export.opset``); one the installed
            ``onnx`` cannot write is refused before anything is rebuilt.
        data: an image folder for the parity samples (default: the run's own validation
            images, or its training images without a validation set).
        warn: called with each correction (default: :func:`warnings.warn`).

    Returns:
        What was written; ``tlcore.json`` records it.

    Raises:
        TlcoreError: a bad opset, the run is not finished or its ``tlcore.json`` unreadable,
            its data is gone and no ``data`` is given, or the export fails its check.
    """
    if opset is not None:
        check_opset(opset)
    say = warn or _warn
    info_file = _info_file(run)
    info = read_info(info_file)
    recipe, classes, model, spec = load_run(run)
    shipped = ship_tokenizer(spec, Path(run))
    task, task_info = _run_task(Path(run), recipe.task, info)
    _describe(info, info_file, Description(classes, shipped, task.to_dict(task_info)), say)
    tokenizer = tokenizer_record(shipped, Path(run))
    if tokenizer:
        info["tokenizer"] = tokenizer
    _, dataset, _ = _images(recipe, data, "the parity check", spec.modality)
    samples = dataset.inputs(parity_indices(len(dataset)), spec)
    result = export_onnx(
        recipe.backend, model, run, samples, classes, shipped,
        opset=recipe.export.opset if opset is None else opset,
        tolerance=recipe.export.tolerance, task=task, task_info=task_info,
    )
    if recipe.export.tta != "none":
        from tlcore.bundle.tta import export_tta

        result = export_tta(
            result, recipe.backend, model, samples, shipped, task, task_info,
            recipe.export.tolerance, recipe.export.tta,
        )
    info["onnx"] = {**result.to_dict(), "tta": recipe.export.tta}
    info.setdefault("exports", {})["onnx"] = exported_files(result.path, run)
    discard(run, info)
    write_json(info_file, info)
    _verify(run, MODEL_FILE)
    BackendCalls(recipe.backend).on_export(
        RunInfo(Path(run), recipe.backend, classes, recipe.to_dict()), "onnx", result.path
    )
    return result


def export_format(
    run: str | Path, fmt: str, *, data: str | Path | None = None, opset: int | None = None
) -> Path:
    """Write a finished run's model in the format ``fmt`` (``native``, or one a plugin
    registers and writes) through the backend's ``tl_export`` on the model rebuilt from the
    run's weights, as the end of training does; ``tlcore.json`` records every file written,
    with its sha256, under ``exports``. ``onnx`` is :func:`export_run`'s.

    Args:
        run: a finished run folder.
        fmt: the format, as ``export.formats`` names it.
        data: samples for formats that trace the model (default: the run's own).
        opset: passed on to the plugin (default: the recipe's ``export.opset``).

    Returns:
        The main file written.

    Raises:
        TlcoreError: the format is unknown (the list of known ones), the run is not finished,
            or no plugin writes ``fmt`` for the run's backend.
    """
    from tlcore.errors import RecipeError
    from tlcore.recipe.choices import builtin, check

    if fmt not in builtin("format"):
        try:
            check("format", fmt, "export.formats")  # before the model is rebuilt
        except RecipeError as exc:
            raise TlcoreError(f"unknown export format {fmt!r}", exc.hint) from None
    if fmt == "onnx":
        return export_run(run, opset=opset, data=data).path
    info_file = _info_file(run)
    info = read_info(info_file)
    recipe, classes, model, spec = load_run(run)
    _, dataset, _ = _images(recipe, data, f"the {fmt} export", spec.modality)
    samples = dataset.inputs(parity_indices(len(dataset)), spec)
    target = Path(run) / "native" if fmt == "native" else Path(run)
    calls = BackendCalls(recipe.backend)
    written = calls.export(
        model, fmt, target, samples, recipe.export.opset if opset is None else opset
    )
    # The native format is its folder: the backend's file and the core's weights.npz.
    info.setdefault("exports", {})[fmt] = exported_files(
        target if fmt == "native" else written, run
    )
    write_json(info_file, info)
    calls.on_export(RunInfo(Path(run), recipe.backend, classes, recipe.to_dict()), fmt, written)
    return written


def _run_task(run: Path, name: str, info: dict[str, Any]) -> tuple[Task, dict[str, Any]]:
    """The recipe's task ``name`` with what it stored: from ``model.onnx`` when ``tlcore.json``
    vouches for its checksum (the model is the source of truth), else ``tlcore.json``'s
    ``task``, else ``run.json``'s (written before training: no thresholds yet)."""
    sections: list[Any] = []
    model = run / MODEL_FILE
    section = info.get("onnx")
    recorded = section.get("sha256") if isinstance(section, dict) else None
    if recorded and model.is_file() and file_sha256(model) == recorded:
        with contextlib.suppress(TlcoreError):  # metadata unreadable: the next source decides
            sections.append(describe_model(model).task)
    sections += [info.get("task"), RunFolder(run).info().get("task")]
    for section in sections:
        if isinstance(section, dict) and section.get("name", DEFAULT_TASK) == name:
            return task_from_bundle(section)
    return task_from_bundle({"name": name})


def _describe(info: dict[str, Any], info_file: Path, run: Description, say: Warn) -> None:
    """``tlcore.json``'s labels, input and task made the run's; a difference is said."""
    try:
        found = differences(describe_info(info, info_file), run, INFO_FILE, "the run")
    except TlcoreError as exc:
        found = [exc.message]
    if found:
        say(
            f"{info_file} did not describe the run's model ({'; '.join(found)}); its labels, "
            f"input and task are written again from {RUN_FILE} and the recipe"
        )
    info.update(run.to_dict())


def _verify(run: str | Path, model: str) -> None:
    """Open what was just written as ``tl predict`` will: every check must pass."""
    try:
        open_bundle(run, model=model)
    except TlcoreError as exc:
        raise TlcoreError(
            f"the bundle written in {run} fails its own check: {exc.message}",
            "this is a bug (of tlcore or of the backend plugin): please report it with this "
            "message",
        ) from None


def _warn(text: str) -> None:
    warnings.warn(text, UserWarning, stacklevel=3)


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
    info = read_info(info_file)
    overrides = {
        "export.quantize": mode,
        "export.max_accuracy_drop": max_drop,
        "export.calibration_images": calibration_images,
    }
    if not isinstance(info.get("recipe"), dict):
        raise TlcoreError(f"{info_file} records no recipe", "restore it from a copy of the run")
    recipe = build_recipe(info["recipe"], {k: v for k, v in overrides.items() if v is not None})
    spec = recipe.export
    if spec.quantize == "none":
        discard(run, info)
        write_json(info_file, info)
        return None
    # The verified float model (every check of tl predict) gives labels, input and task.
    float_model = open_bundle(run, model=MODEL_FILE)
    calibration, evaluation, names = _images(
        recipe, data, "quantisation", float_model.description.input.modality
    )
    result = quantize_bundle(
        run, spec.quantize,
        calibration=calibration, evaluation=evaluation,
        spec=resolve_tokenizer(float_model.description.input, Path(run)),
        labels=float_model.description.labels,
        max_drop=spec.max_accuracy_drop, calibration_images=spec.calibration_images,
        calibrated_on=names[0], evaluated_on=names[1],
        task=float_model.task, task_info=float_model.task_info,
    )
    record(info, result)
    write_json(info_file, info)
    _verify(run, result.path.name)
    return result


def _info_file(run: str | Path) -> Path:
    info_file = Path(run) / INFO_FILE
    if not info_file.is_file():
        raise TlcoreError(
            f"run {run} has not finished (no {INFO_FILE})",
            f"finish it with 'tl train --resume {run}'",
        )
    return info_file


def _images(
    recipe: Recipe, data: str | Path | None, purpose: str, modality: str = "image"
) -> tuple[Dataset, Dataset, tuple[str, str]]:
    """``(training samples, held-out samples, their names)``: the run's own, or ``data`` (for
    images a folder with one sub-folder per class or a CSV label file; texts and vectors as
    :func:`tlcore.data.given.labelled_data` reads them) for both. The held-out samples are
    the validation set, or the training set without one."""
    task = get_task(recipe.task)
    if data is not None:
        dataset = labelled_data(
            data, task, modality, text_column=recipe.data.text_column,
            label_column=recipe.data.label_column, verify=False,
        )
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
