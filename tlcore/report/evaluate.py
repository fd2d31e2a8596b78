"""Evaluate a trained run on labelled images (a folder per class, or a CSV label file): through
its ONNX model, or the framework's; the run's task computes the metrics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tlcore.bundle.layout import INFO_FILE, MODEL_FILE
from tlcore.bundle.read import read_info
from tlcore.bundle.tta import tta_choice, view_average
from tlcore.data.given import labelled_data, recorded_columns
from tlcore.errors import DataError, TlcoreError
from tlcore.interfaces import Batch, InputSpec
from tlcore.plugins.calls import BackendCalls
from tlcore.report.mistakes import classifier_details
from tlcore.runfolder import RunFolder, write_json
from tlcore.tasks import Task, task_from_bundle
from tlcore.tasks.classification import ClassificationTask

REPORT_FILE = "report.json"


def evaluate_run(
    run: str | Path,
    data: str | Path,
    batch_size: int = 64,
    native: bool = False,
    labels: str | Path | None = None,
    tta: bool | str = False,
) -> dict[str, Any]:
    """The run's task's metrics on labelled images ``data``: for a classifier accuracy,
    per-class precision/recall and the confusion matrix; for a multi-label model per-label
    precision/recall/F1, micro and macro F1 and subset accuracy; for a regression MAE, RMSE
    and R² (:meth:`tlcore.tasks.Task.report`). A classifier's report adds its calibration
    (``ece``, ``calibration``) and its ``confident_mistakes``
    (:func:`~tlcore.report.mistakes.classifier_details`).

    The model is the bundle's default model (``model.onnx``, or its int8 model when that was
    accepted) on onnxruntime whenever there is one (``run`` may also be a bare ``.onnx``
    file): what is shipped is what is measured, and no framework is needed. Otherwise, or with
    ``native``, the framework model is rebuilt from the run's weights. ``data`` is a folder
    with one sub-folder per class, or the images of a CSV label file ``labels`` (any task; see
    :class:`~tlcore.data.LabelFileDataset`), or that CSV file itself. Its class (label) names
    must be among the run's; images are resized as in training. The report names the ``task``,
    the ``engine`` and the ``model`` file it measured.

    ``tta``: average the outputs over views of each image, ``hflip`` (also ``True``),
    ``crops`` or ``hflip_crops`` (:mod:`tlcore.bundle.tta`), through the model once per view
    unless it was exported with ``export.tta``, which does its own itself and always. The
    report's ``tta`` says which was measured and ``tta_in_model`` whether the model did it.
    """
    if not native and (Path(run).is_file() or (Path(run) / MODEL_FILE).is_file()):
        model = _onnx_model(run, tta)
    else:
        model = _native_model(run, tta)
    dataset = labelled_data(data, model.task, model.spec.modality, labels,
                            **recorded_columns(run))
    targets = model.task.align(dataset.labels, dataset.class_names, model.classes)
    outputs = [
        model.outputs(dataset.inputs(np.arange(start, min(start + batch_size, len(dataset))),
                                     model.spec))
        for start in range(0, len(dataset), batch_size)
    ]
    found = np.concatenate(outputs) if outputs else np.zeros((0, len(model.classes)))
    report = model.task.report(found, targets, model.classes, model.info)
    if isinstance(model.task, ClassificationTask):  # probabilities: calibration, mistakes
        report.update(classifier_details(found, targets, model.classes, dataset))
    return {
        **report,
        "task": model.task.name,
        "examples": dataset.noun,
        "class_names": list(model.classes),
        "run": str(run),
        "data": str(data),
        **({"labels": str(labels)} if labels else {}),
        "engine": model.engine,
        "model": model.file,
        "tta": model.tta,
        "tta_in_model": model.tta_in_model,
    }


def report_folder(run: str | Path, data: str | Path) -> Path:
    """Where ``tl eval`` writes its files by default: ``eval/<data folder name>`` in the run
    folder (beside a bare ``.onnx`` file: in its folder); for a CSV label file, its name
    without ``.csv``."""
    bundle = Path(run).parent if Path(run).is_file() else Path(run)
    source = Path(data).resolve()
    return bundle / "eval" / ((source.stem if source.is_file() else source.name) or "data")


def check_report_folder(folder: str | Path, data: str | Path) -> None:
    """Refuse a report folder inside the evaluated data: the next ``tl train`` or ``tl eval``
    of that folder would read it as a class (a folder of images, one sub-folder per class,
    holds nothing else).

    Raises:
        DataError: ``folder`` is the data folder (a folder per class, or the images of a
            label file) or lies inside it. A label file's own folder is not the data: only
            the images it lists are read.
    """
    if not Path(data).is_dir():
        return
    target, root = Path(folder).resolve(), Path(data).resolve()
    if target == root or root in target.parents:
        raise DataError(
            f"the report folder {folder} is inside the data {data}: report.json and "
            "confusion.png there would be read as part of the data",
            f"choose a folder outside {data} with --out",
        )


def write_report(report: dict[str, Any], folder: str | Path) -> list[Path]:
    """Write ``report.json``, the page ``report.html`` (:mod:`tlcore.report.html`) and, for
    a classifier, the confusion matrix ``confusion.png`` and reliability diagram
    ``reliability.png`` (when matplotlib is installed) into ``folder``, never inside the
    evaluated data (:func:`check_report_folder`); returns the files written."""
    from tlcore.report.html import write_html_report
    from tlcore.report.plots import CONFUSION_FILE, plot_confusion

    folder = Path(folder)
    if report.get("data"):
        check_report_folder(folder, report["data"])
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / REPORT_FILE, report)
    except OSError as exc:
        raise TlcoreError(
            f"cannot write the evaluation report into {folder}: {exc.strerror or exc}",
            "choose another folder with --out",
        ) from None
    if "confusion" not in report:
        return [folder / REPORT_FILE, *write_html_report(report, folder)]
    title = (f"accuracy {report['accuracy']:.4f} on {report['count']} "
             f"{report.get('examples', 'images')} ({report['model']})")
    picture = plot_confusion(
        report["confusion"], report["class_names"], folder / CONFUSION_FILE, title=title
    )
    return [folder / REPORT_FILE, *([picture] if picture else []),
            *write_html_report(report, folder)]


@dataclass(frozen=True)
class _Model:
    """What evaluation needs of a model: its output names, its input, a function from
    inputs to the task's final outputs, and what it is."""

    classes: tuple[str, ...]
    spec: InputSpec
    outputs: Callable[[np.ndarray], np.ndarray]
    engine: str
    file: str
    task: Task
    info: dict[str, Any]
    tta: str = "none"
    tta_in_model: bool = False


def _onnx_model(run: str | Path, tta: bool | str = False) -> _Model:
    from tlcore.runtime import Predictor

    predictor = Predictor(run, tta=tta)
    return _Model(
        predictor.labels, predictor.input_spec, predictor.outputs, "onnxruntime",
        predictor.model_file.name, predictor.task, predictor.task_info, predictor.tta,
        predictor.tta_in_model,
    )


def _native_model(run: str | Path, tta: bool | str = False) -> _Model:
    from tlcore.build import load_run

    recipe, classes, model, spec = load_run(run)
    described = Path(run) / INFO_FILE
    saved = read_info(described) if described.is_file() else RunFolder(run).info()
    task, info = task_from_bundle(saved.get("task"))

    def outputs(images: np.ndarray) -> np.ndarray:
        batch = Batch(images, np.zeros(len(images), dtype=np.int64))
        return task.activate(BackendCalls(recipe.backend).eval_step(model, batch), info)

    weights, chosen = "native/weights.npz", tta_choice(tta)
    if chosen != "none":
        if spec.modality != "image":
            raise TlcoreError(
                f"test-time augmentation takes views of images; this is a {spec.modality} "
                "model", "leave out --tta",
            )
        plain = outputs

        def outputs(images: np.ndarray) -> np.ndarray:
            return view_average(plain, images, chosen)

    return _Model(classes, spec, outputs, recipe.backend, weights, task, info, chosen)
