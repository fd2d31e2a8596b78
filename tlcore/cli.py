"""The ``tl`` command line. Importing this module loads no framework; commands import lazily."""

from __future__ import annotations

import json
import os
import sys
import traceback
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from tlcore import __version__
from tlcore.errors import TlcoreError

QUANTIZE_HELP = (
    "Also write model.int8.onnx: 'static' (int8 weights and activations, calibrated on "
    "training images; the one that speeds up CNN backbones on CPU) or 'dynamic' (int8 weights "
    "only; smaller, rarely faster for CNNs). It becomes the default model only if it loses at "
    "most --max-drop of validation accuracy."
)
MAX_DROP_HELP = "Largest accuracy loss of the int8 model, as a fraction (0.01 = one point)."


class _Group(click.Group):
    """A group that turns every error into one line and a hint (``--debug``: the traceback)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except TlcoreError as exc:
            _fail(ctx, f"error: {exc.message}", exc.hint, code=2)
        except BrokenPipeError:  # the reader went away (tl predict ... | head): not an error
            _quiet_stdout()
            ctx.exit(0)
        except KeyboardInterrupt:
            _fail(ctx, "interrupted", _resume_hint(ctx), code=130)
        except Exception as exc:  # a bug or a framework error: one line, not a traceback
            _fail(
                ctx,
                f"error: {type(exc).__name__}: {exc}",
                "run again with 'tl --debug ...' for the traceback, and report it if it is a bug",
                code=1,
            )


COMPARE_HELP = (
    "Then train the same recipe from random weights into OUT-random and print both "
    "accuracies: what the pretrained weights buy on this data."
)


def _fail(ctx: click.Context, message: str, hint: str, code: int) -> None:
    if ctx.obj and ctx.obj.get("debug"):
        traceback.print_exc()
    click.echo(message, err=True)
    if hint:
        click.echo(f"hint: {hint}", err=True)
    ctx.exit(code)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit raises no second BrokenPipeError."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _resume_hint(ctx: click.Context) -> str:
    out = (ctx.obj or {}).get("out")
    return f"continue with: tl train --resume {out}" if out else ""


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tlcore")
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """tlcore: fine-tune a pretrained model on your images, on PyTorch or Keras.

    \b
    Example:
      tl demo demo-data
      tl train demo-data --recipe demo-data/recipe.yaml --out runs/demo
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


@cli.command()
@click.argument("data", required=False, type=click.Path(path_type=Path))
@click.option("--recipe", "-r", type=click.Path(path_type=Path), help="YAML/TOML recipe file.")
@click.option("--backend", "-b", help="torch or keras (or any installed backend).")
@click.option("--backbone", help="Backbone source, e.g. hf:./resnet, file:net.pt.")
@click.option("--weights", help="pretrained (default), none, or a weights file.")
@click.option("--input-size", type=int, help="Square input size in pixels.")
@click.option("--epochs", type=int, help="Epochs of every stage.")
@click.option("--lr", type=float, help="First stage's learning rate; later stages keep ratio.")
@click.option("--batch-size", type=int, help="Batch size.")
@click.option("--seed", type=int, help="Seed for a repeatable run.")
@click.option("--val", "val", type=click.Path(path_type=Path), help="Separate validation folder.")
@click.option("--val-split", type=float, help="Fraction held out for validation.")
@click.option("--augment", help="Comma-separated: hflip, shift.")
@click.option("--no-cache", is_flag=True, help="Do not cache frozen-backbone features.")
@click.option("--quantize", type=click.Choice(["none", "static", "dynamic"]), help=QUANTIZE_HELP)
@click.option("--max-drop", type=click.FloatRange(0.0, 1.0), help=MAX_DROP_HELP)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Any recipe field.")
@click.option("--out", "-o", type=click.Path(path_type=Path), help="Run folder to write.")
@click.option("--resume", type=click.Path(path_type=Path), help="Continue an interrupted run.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@click.option("--compare-random", is_flag=True, help=COMPARE_HELP)
@click.pass_context
def train(ctx: click.Context, data: Path | None, recipe: Path | None, **options: Any) -> None:
    """Fine-tune a pretrained backbone on a folder of images (one sub-folder per class).

    \b
    Examples:
      tl train photos/ --backbone hf:microsoft/resnet-18 --epochs 5
      tl train demo-data --recipe demo-data/recipe.yaml --backend keras
      tl train --resume runs/demo
    """
    from tlcore.recipe import load_recipe_file, parse_override

    resume = options.pop("resume")
    quiet = options.pop("quiet")
    compare = options.pop("compare_random")
    out = options.pop("out")
    sets = options.pop("sets")
    if options.pop("no_cache"):
        options["cache_features"] = False
    shortcuts = {k: v for k, v in options.items() if v is not None}
    if data is not None:
        shortcuts["data"] = str(data)
    overrides = dict(parse_override(s) for s in sets)
    if resume is not None:
        if recipe or shortcuts or overrides:
            raise TlcoreError(
                "--resume takes no other recipe options", "the run continues with its own recipe"
            )
        out = resume
        from tlcore.runfolder import RunFolder

        base: Any = RunFolder(resume).info()["recipe"]
    else:
        base = load_recipe_file(recipe) if recipe else {}
        out = out or Path("runs") / datetime.now().strftime("run-%Y%m%d-%H%M%S")
    from tlcore.recipe import build_recipe

    resolved = build_recipe(base, overrides, **shortcuts)
    if resolved.data.path is None:
        raise TlcoreError("no data given", "tl train PATH, or data.path in the recipe")
    ctx.obj["out"] = out
    from tlcore.train import Trainer

    result = Trainer(resolved, out, resume=resume is not None, quiet=quiet).run()
    if result.warnings and not quiet:
        # Said when found, but a warning from the start has scrolled away under the epochs:
        # repeat them all where the run ends. Quiet runs printed nothing in between.
        click.echo(f"{len(result.warnings)} warning(s), also in tlcore.json:", err=True)
        for text in result.warnings:
            click.echo(f"warning: {text}", err=True)
    acc = result.metrics.get("val_accuracy")
    summary = f"done: {result.path}" + (f" (val_accuracy {acc:.4f})" if acc is not None else "")
    if acc is None and result.history:  # no validation images: say what was measured
        summary += f" (training accuracy {result.history[-1]['accuracy']:.4f}, no validation set)"
    click.echo(summary)
    if result.quantized is not None:
        click.echo(result.quantized.summary())
    if compare:
        _compare_random(result, Path(f"{result.path}-random"), quiet)


def _compare_random(result: Any, out: Path, quiet: bool) -> None:
    """``--compare-random``: the same recipe from random weights, and both accuracies."""
    from tlcore.api import random_baseline

    if not quiet:
        click.echo(f"same recipe from random weights, for comparison: {out}")
    baseline = random_baseline(result, out, quiet=quiet)
    key = "val_accuracy" if "val_accuracy" in result.metrics else None
    if key is None or key not in baseline.metrics:
        click.echo(f"random-weights baseline: {baseline.path} (no validation set to compare on)")
        return
    ours, theirs = result.metrics[key], baseline.metrics[key]
    click.echo(
        f"from random weights, same data and epochs: {key} {theirs:.4f} ({baseline.path}); "
        f"the pretrained weights {'add' if ours >= theirs else 'lose'} "
        f"{abs(ours - theirs) * 100:.1f} points"
    )


@cli.command(name="eval")
@click.argument("run", type=click.Path(path_type=Path))
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--native", is_flag=True, help="Use the framework model, not model.onnx.")
@click.option("--out", "-o", type=click.Path(path_type=Path),
              help="Folder for report.json and confusion.png [default: RUN/eval/<DATA name>].")
def eval_(
    run: Path, data: Path, as_json: bool, batch_size: int, native: bool, out: Path | None
) -> None:
    """Evaluate a trained run (or its model.onnx) on a folder of labelled images.

    Prints accuracy, per-class precision and recall, and the confusion matrix, and writes
    them as report.json with a picture of the matrix, confusion.png (with matplotlib). The
    bundle's default model (model.onnx, or model.int8.onnx when its quantisation was
    accepted) is evaluated on onnxruntime when there is one, else the framework model.

    \b
    Example:
      tl eval runs/demo demo-data
      tl eval runs/demo demo-data --json --out reports/demo
    """
    from tlcore.evaluate import evaluate_run, report_folder, write_report
    from tlcore.metrics import format_report

    report = evaluate_run(run, data, batch_size=batch_size, native=native)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(format_report(report, report["class_names"]))
    written = write_report(report, out or report_folder(run, data))
    click.echo("wrote " + " and ".join(str(p) for p in written), err=True)


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--top-k", "-k", type=click.IntRange(min=1), default=1, show_default=True,
              help="Classes to show per image.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Images decoded and run together. Peak memory grows with it (a float "
              "MobileNetV2 at 224 px: about 10 MB per image); larger batches gain little "
              "speed on CPU.")
@click.option("--threads", type=click.IntRange(min=1), help="onnxruntime intra-op threads.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV: source,rank,label,probability.")
@click.option("--model", "model", metavar="FILE",
              help="Model file in the bundle, e.g. model.onnx for the float model "
              "[default: the bundle's default model].")
@click.option("--skip-bad", is_flag=True,
              help="Skip images that cannot be read (a warning each) instead of stopping.")
def predict(
    bundle: Path,
    paths: tuple[Path, ...],
    top_k: int,
    batch_size: int,
    threads: int | None,
    as_json: bool,
    as_csv: bool,
    model: str | None,
    skip_bad: bool,
) -> None:
    """Classify image files or folders with a bundle's model (onnxruntime only).

    BUNDLE is a run folder or a .onnx file; folders in PATHS are searched for images. A run
    folder's default model is model.onnx, or model.int8.onnx when its quantisation was
    accepted. An image that cannot be read stops the command (exit code 2) unless
    --skip-bad is given.

    \b
    Examples:
      tl predict runs/demo photo.jpg
      tl predict runs/demo/model.onnx new-photos/ --top-k 3 --csv > predictions.csv
      tl predict runs/demo new-photos/ --skip-bad --json
    """
    if as_json and as_csv:
        raise TlcoreError("--json and --csv exclude each other", "choose one output format")
    from tlcore.errors import DataError
    from tlcore.runtime import Predictor

    def skip(source: str, error: DataError) -> None:
        click.echo(f"warning: skipped {source}: {error.message}", err=True)

    def stop(source: str, error: DataError) -> None:
        raise DataError(error.message, f"{error.hint}, or pass --skip-bad to skip such images")

    predictions = Predictor(bundle, threads=threads, model=model).iter_predict(
        paths, top_k=top_k, batch_size=batch_size, on_error=skip if skip_bad else stop
    )
    if as_json:
        click.echo(json.dumps([p.to_dict() for p in predictions], indent=2))
    elif as_csv:
        import csv

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["source", "rank", "label", "probability"])
        for p in predictions:
            writer.writerows(
                [p.source, rank, label, f"{prob:.6g}"]
                for rank, (label, prob) in enumerate(p.top, 1)
            )
    else:
        for p in predictions:
            click.echo(f"{p.source}\t" + ", ".join(f"{lab} {prob:.4f}" for lab, prob in p.top))


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
def export(
    run: Path,
    opset: int | None,
    data: Path | None,
    quantize: str | None,
    max_drop: float | None,
    calibration_images: int | None,
) -> None:
    """Write a finished run's model.onnx again, verified against the framework model.

    Rebuilds the model from the run's weights; the checksum and the parity figures go into
    tlcore.json. With --quantize it also writes model.int8.onnx and prints its accuracy next
    to the float model's; it becomes the bundle's default model only within --max-drop.

    \b
    Examples:
      tl export runs/demo --opset 13
      tl export runs/demo --quantize static --max-drop 0.005
    """
    from tlcore.export import export_run, quantize_run

    result = export_run(run, opset=opset, data=data)
    parity = result.parity
    click.echo(
        f"wrote {result.path} (opset {result.opset}; max probability difference "
        f"{parity.max_abs_diff:.2g}, top-1 agreement {parity.top1_agreement:.0%} "
        f"on {parity.samples} images)"
    )
    quantized = quantize_run(
        run, quantize, data=data, max_drop=max_drop, calibration_images=calibration_images
    )
    if quantized is not None:
        click.echo(quantized.summary())


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json: bool) -> None:
    """List installed plugins, their versions and hooks, and any that failed to load.

    \b
    Example:
      tl plugins --json
    """
    from tlcore.plugins import plugin_table

    rows = plugin_table()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        version = f"{row['package']} {row['version']}" if row["package"] else "(registered)"
        if row["error"]:
            click.echo(f"{row['name']}  {version}  BROKEN: {row['error']}")
        else:
            click.echo(f"{row['name']}  {version}")
            click.echo(f"    hooks: {', '.join(row['hooks'])}")


@cli.command()
@click.option("--backend", "-b", default=None, help="Only this backend.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def backbones(backend: str | None, as_json: bool) -> None:
    """List the backbones each backend can load, with input size and parameter count.

    \b
    Example:
      tl backbones --backend torch
    """
    from tlcore import plugins as registry

    names = [backend] if backend else sorted(registry.backends())
    if backend:
        registry.require_backend(backend)
    rows = [
        {"backend": name, **vars(info)} for name in names for info in registry.backbones(name)
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        size = f"{row['input_size']}px" if row["input_size"] else "-"
        params = f"{row['params'] / 1e6:.1f}M" if row["params"] else "-"
        click.echo(f"{row['backend']:<6} {row['source']:<32} {size:>6} {params:>7}  "
                   f"{row['description']}")


@cli.command()
@click.argument("path", type=click.Path(path_type=Path), default=Path("demo-data"))
@click.option("--size", type=int, default=64, show_default=True, help="Image side in pixels.")
@click.option("--per-class", default="20", show_default=True,
              help="Scans of each digit to write (a number, or 'all': 174 to 183).")
def demo(path: Path, size: int, per_class: str) -> None:
    """Write a demo image-folder dataset from scikit-learn's handwritten digits (offline).

    Also writes PATH/recipe.yaml: the default recipe on the default pretrained backbone.
    Twenty scans per digit by default: few examples are where a pretrained backbone matters
    (with all of them, this easy task is learned from scratch too).

    \b
    Example:
      tl demo demo-data && tl train demo-data --recipe demo-data/recipe.yaml --compare-random
    """
    from tlcore.demo import write_demo, write_demo_recipe

    if per_class != "all" and not per_class.isdigit():
        raise TlcoreError(f"--per-class must be a number or 'all', not {per_class!r}", "e.g. 20")
    folder = write_demo(path, size=size, per_class=None if per_class == "all" else int(per_class))
    recipe = write_demo_recipe(folder)
    click.echo(f"wrote {folder} and {recipe}")
    click.echo(f"next: tl train {folder} --recipe {recipe} --out runs/demo --compare-random")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``tl`` console script."""
    cli.main(args=argv, prog_name="tl", obj={})


if __name__ == "__main__":
    main(sys.argv[1:])
