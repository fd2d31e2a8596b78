"""Labelled data given to a finished run (``tl eval``, ``tl export --data``, ``tl embed``): read
as the run's model takes it, whatever form it comes in.
"""

from __future__ import annotations

import json
from pathlib import Path

from tlcore.bundle.layout import INFO_FILE
from tlcore.data.dataset import Dataset
from tlcore.data.folder import scan_folder
from tlcore.data.labelfile import LabelFileDataset
from tlcore.errors import DataError
from tlcore.tasks import Task


def labelled_data(
    data: str | Path,
    task: Task,
    modality: str = "image",
    labels: str | Path | None = None,
    *,
    text_column: str = "text",
    label_column: str = "label",
    verify: bool = True,
) -> Dataset:
    """The labelled samples of ``data`` for a model of ``modality``.

    Images: a folder with one sub-folder per class, the images of a CSV label file
    ``labels``, or that CSV file itself. Texts and vectors: a folder of class sub-folders of
    ``.txt`` files, a CSV or JSONL table (``text_column``, ``label_column``), or a ``.npz``
    file (:func:`tlcore.data.load_datasets` reads them as training data is read, all of
    them, none held out).

    Raises:
        DataError: the data cannot be read, or a task that reads label files got a folder.
    """
    if modality != "image":
        from tlcore.data.load import load_datasets
        from tlcore.recipe import DataSpec

        spec = DataSpec(path=str(data), labels=str(labels) if labels else None, val_split=0.0,
                        text_column=text_column, label_column=label_column)
        return load_datasets(spec, 0, task=task)[0]
    if labels is None and Path(data).is_file():
        return LabelFileDataset(data, task, verify=verify)
    if labels is not None:
        return LabelFileDataset(labels, task, images=data, verify=verify)
    if not task.reads_folders:
        raise DataError(
            f"a {task.name} model is evaluated on images with a label file",
            f"pass --labels FILE.csv (lines like {task.label_example}), or the CSV file as DATA",
        )
    return scan_folder(data, verify=verify)


def recorded_columns(run: str | Path) -> dict[str, str]:
    """The table columns a run was trained with (``text_column``, ``label_column`` of the
    recipe its ``tlcore.json`` records), so that a table read for it later is read alike;
    the defaults for a bare model file or a run that records none."""
    folder = Path(run) if Path(run).is_dir() else Path(run).parent
    try:
        recorded = json.loads((folder / INFO_FILE).read_text(encoding="utf-8"))
        data = recorded["recipe"]["data"]
    except (OSError, ValueError, KeyError, TypeError):  # not a run: the defaults
        return {}
    return {key: data[key] for key in ("text_column", "label_column")
            if isinstance(data, dict) and isinstance(data.get(key), str)}
