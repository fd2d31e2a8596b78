"""Export a finished run again (``tl export``): another opset, or a run trained without ONNX."""

from __future__ import annotations

from pathlib import Path

from tlcore.bundle import INFO_FILE, OnnxExport, export_onnx, parity_indices
from tlcore.data import load_datasets, scan_folder
from tlcore.errors import TlcoreError
from tlcore.interfaces import RunInfo
from tlcore.plugins import hook
from tlcore.runfolder import read_json, write_json
from tlcore.train import load_run


def export_run(
    run: str | Path, *, opset: int | None = None, data: str | Path | None = None
) -> OnnxExport:
    """Write a run's ``model.onnx`` again from its native weights, verified like training does.

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
    info_file = Path(run) / INFO_FILE
    if not info_file.is_file():
        raise TlcoreError(
            f"run {run} has not finished (no {INFO_FILE})",
            f"finish it with 'tl train --resume {run}'",
        )
    if data is not None:
        dataset = scan_folder(data, verify=False)
    else:
        try:
            train, val = load_datasets(recipe.data, recipe.train.seed)
        except TlcoreError as exc:
            raise TlcoreError(
                f"the parity check needs sample images, and the run's data cannot be read: "
                f"{exc.message}",
                "pass an image folder of the same kind with --data",
            ) from None
        dataset = val if len(val) else train
    samples = dataset.images(parity_indices(len(dataset)), prep.size)
    spec = recipe.export
    result = export_onnx(
        recipe.backend, model, run, samples, classes, prep,
        opset=spec.opset if opset is None else opset, tolerance=spec.tolerance,
    )
    info = read_json(info_file)
    info["onnx"] = result.to_dict()
    write_json(info_file, info)
    hook().tl_on_export(
        run=RunInfo(Path(run), recipe.backend, classes, recipe.to_dict()),
        fmt="onnx",
        path=result.path,
    )
    return result
