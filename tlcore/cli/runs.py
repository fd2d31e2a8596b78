"""Commands on a finished run or bundle: ``tl eval``, ``tl predict``, ``tl export``,
``tl embed``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from tlcore.bundle.layout import TTA_CHOICES
from tlcore.cli.app import MAX_DROP_HELP, QUANTIZE_HELP, cli
from tlcore.errors import TlcoreError
from tlcore.progress import printable

#: ``tl eval`` and ``tl predict``'s ``--tta``: alone it means ``hflip``.
TTA_OPTION = click.option(
    "--tta", type=click.Choice(TTA_CHOICES[1:]), is_flag=False, flag_value="hflip",
    help="Test-time augmentation: average over views of each image: hflip (the image and its "
    "mirror image; --tta alone), crops (and its four corner crops) or hflip_crops (those and "
    "their mirrors); one run per view, unless the model was exported with export.tta.",
)


@cli.command(name="eval")
@click.argument("run", type=click.Path(path_type=Path))
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--native", is_flag=True, help="Use the framework model, not model.onnx.")
@click.option("--labels", type=click.Path(path_type=Path),
              help="CSV label file (path,label) of the images in DATA; DATA may also be the "
              "CSV file itself.")
@click.option("--out", "-o", type=click.Path(path_type=Path),
              help="Folder for report.json, report.html and the pictures "
              "[default: RUN/eval/<DATA name>].")
@TTA_OPTION
def eval_(
    run: Path,
    data: Path,
    as_json: bool,
    batch_size: int,
    native: bool,
    labels: Path | None,
    out: Path | None,
    tta: str | None,
) -> None:
    """Evaluate a trained run (or its model.onnx) on labelled images: a folder with one
    sub-folder per class, or images with a CSV label file.

    Prints the metrics of the run's task (classification: accuracy, per-class precision and
    recall, the confusion matrix; multilabel: per-label precision, recall and F1, micro and
    macro F1, subset accuracy; regression: MAE, RMSE, R²) and writes them as report.json,
    with report.html, a page to look at (a classifier's adds its calibration, ECE and
    reliability diagram, and the thumbnails of the images it got most confidently wrong),
    and for a classifier pictures of the matrix and calibration, confusion.png and
    reliability.png (with matplotlib). The
    bundle's default model (model.onnx, or model.int8.onnx when its quantisation was
    accepted) is evaluated on onnxruntime when there is one, else the framework model.

    \b
    Example:
      tl eval runs/demo demo-data
      tl eval runs/demo demo-data --json --out reports/demo
      tl eval runs/tags photos/ --labels photos/test.csv
    """
    from tlcore.report.evaluate import (
        check_report_folder,
        evaluate_run,
        report_folder,
        write_report,
    )
    from tlcore.tasks import get_task

    folder = out or report_folder(run, data)
    check_report_folder(folder, data)  # before the work, not after it
    report = evaluate_run(run, data, batch_size=batch_size, native=native, labels=labels,
                          tta=tta)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(printable(get_task(report["task"]).format_report(report)))
    written = write_report(report, folder)
    click.echo("wrote " + " and ".join(str(p) for p in written), err=True)


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("paths", nargs=-1, required=True)
@click.option("--top-k", "-k", type=click.IntRange(min=1), default=1, show_default=True,
              help="Classes to show per image (a classifier's; a multi-label model shows "
              "every label over its threshold, a regression its value).")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Images decoded and run together. Peak memory grows with it (a float "
              "MobileNetV2 at 224 px: about 10 MB per image); larger batches gain little "
              "speed on CPU.")
@click.option("--threads", type=click.IntRange(min=1), help="onnxruntime intra-op threads.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.option("--csv", "as_csv", is_flag=True,
              help="Print CSV: source,rank,label,probability (regression: source,label,value).")
@click.option("--model", "model", metavar="FILE",
              help="Model file in the bundle, e.g. model.onnx for the float model "
              "[default: the bundle's default model].")
@click.option("--skip-bad", is_flag=True,
              help="Skip images that cannot be read (a warning each) instead of stopping.")
@TTA_OPTION
def predict(
    bundle: Path,
    paths: tuple[str, ...],
    top_k: int,
    batch_size: int,
    threads: int | None,
    as_json: bool,
    as_csv: bool,
    model: str | None,
    skip_bad: bool,
    tta: str | None,
) -> None:
    """Predict for image files or folders, texts, or vectors with a bundle's model
    (onnxruntime only): the top classes, every label over its threshold (multilabel) or the
    value (regression).

    BUNDLE is a run folder or a .onnx file; folders in PATHS are searched for images. For a
    text model each argument is a text, unless it names an existing .txt file or a folder of
    them; for a vector model, .npy or .csv files of vectors. A run
    folder's default model is model.onnx, or model.int8.onnx when its quantisation was
    accepted. An image that cannot be read stops the command (exit code 2) unless
    --skip-bad is given.

    \b
    Examples:
      tl predict runs/demo photo.jpg
      tl predict runs/demo/model.onnx new-photos/ --top-k 3 --csv > predictions.csv
      tl predict runs/demo new-photos/ --skip-bad --json
      tl predict runs/spam "Win a free cruise now" "Minutes of Tuesday's meeting"
    """
    if as_json and as_csv:
        raise TlcoreError("--json and --csv exclude each other", "choose one output format")
    from tlcore.errors import DataError
    from tlcore.runtime import Predictor

    def skip(source: str, error: DataError) -> None:
        click.echo(printable(f"warning: skipped {source}: {error.message}"), err=True)

    def stop(source: str, error: DataError) -> None:
        raise DataError(error.message, f"{error.hint}, or pass --skip-bad to skip such images")

    predictor = Predictor(bundle, threads=threads, model=model, tta=tta)
    predictions = predictor.iter_predict(
        paths, top_k=top_k, batch_size=batch_size, on_error=skip if skip_bad else stop
    )
    if as_json:
        click.echo(json.dumps([p.to_dict() for p in predictions], indent=2))
    elif as_csv:
        import csv

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(predictor.task.csv_header())
        for p in predictions:
            rows = predictor.task.csv_rows(p)
            writer.writerows([printable(c) if isinstance(c, str) else c for c in r] for r in rows)
    else:
        for p in predictions:
            click.echo(printable(p.text()))  # labels are folder names: no escape sequences


@cli.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--opset", type=click.IntRange(min=9), help="ONNX opset (default: the recipe's).")
@click.option("--data", type=click.Path(path_type=Path),
              help="Image folder (one sub-folder per class) for the parity check and the "
              "quantisation; default: the run's own images.")
@click.option("--quantize", type=click.Choice(["none", "static", "dynamic"]),
              help=QUANTIZE_HELP + " [default: the recipe's export.quantize]")
@click.option("--max-drop", type=click.FloatRange(0.0, 1.0),
              help=MAX_DROP_HELP + " [default: the recipe's, 0.01]")
@click.option("--calibration-images", type=click.IntRange(min=1),
              help="Training images that calibrate static quantisation [default: 300].")
@click.option("--format", "fmt", default="onnx", show_default=True,
              help="The format to write: onnx, native, or one a plugin adds (tl plugins "
              "lists them).")
def export(
    run: Path,
    opset: int | None,
    data: Path | None,
    quantize: str | None,
    max_drop: float | None,
    calibration_images: int | None,
    fmt: str,
) -> None:
    """Write a finished run's model.onnx again, verified against the framework model, or
    the model in another --format.

    Rebuilds the model from the run's weights; the checksum and the parity figures go into
    tlcore.json. With --quantize it also writes model.int8.onnx and prints its accuracy next
    to the float model's; it becomes the bundle's default model only within --max-drop.
    Another --format is written by the plugin that adds it; tlcore.json records its files
    with their sha256 under exports.

    \b
    Examples:
      tl export runs/demo --opset 13
      tl export runs/demo --quantize static --max-drop 0.005
      tl export runs/demo --format native
    """
    from tlcore.bundle.export import export_format, export_run, quantize_run

    if fmt != "onnx":
        if quantize not in (None, "none"):
            raise click.UsageError("--quantize makes an int8 ONNX model: use it with --format onnx")
        written = export_format(run, fmt, data=data, opset=opset)
        click.echo(f"wrote {written} (format {fmt})")
        return

    def warn(text: str) -> None:
        click.echo(f"warning: {printable(text)}", err=True)

    result = export_run(run, opset=opset, data=data, warn=warn)
    parity = result.parity
    agreed = (
        f", {parity.agreement_on} agreement {parity.agreement:.0%}"
        if parity.agreement is not None else ""
    )
    click.echo(
        f"wrote {result.path} (opset {result.opset}; max difference of the "
        f"{parity.output} {parity.max_abs_diff:.2g}{agreed} on {parity.samples} images)"
    )
    quantized = quantize_run(
        run, quantize, data=data, max_drop=max_drop, calibration_images=calibration_images
    )
    if quantized is not None:
        click.echo(quantized.summary())


@cli.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.argument("data", nargs=-1, required=True)
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path),
              help="File to write: .npz, .npy (with FILE.rows.csv) or .parquet.")
@click.option("--native", is_flag=True,
              help="Use the framework model rebuilt from the run's weights, not model.onnx.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
def embed(run: Path, data: tuple[str, ...], out: Path, native: bool, batch_size: int) -> None:
    """Write the backbone's pooled features (embeddings) of DATA: a labelled folder or table
    as training reads it (rows keep their labels), or files, folders or texts as 'tl predict'
    takes them.

    The bundle's model.onnx gives them (its embeddings output, checked against the
    framework when it was exported); --native computes them with the framework.

    \b
    Example:
      tl embed runs/demo demo-data --out demo.npz
      tl embed runs/spam "win a prize now" "meeting at 10" --out texts.npy
    """
    from tlcore.embeddings import embed as run_embed

    given: object = data[0] if len(data) == 1 else list(data)
    result = run_embed(run, given, out, native=native, batch_size=batch_size)
    rows, width = result.vectors.shape
    click.echo(f"wrote {out}: {rows} embeddings of {width} features ({result.engine})",
               err=True)
