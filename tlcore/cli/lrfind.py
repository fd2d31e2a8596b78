"""``tl lr-find``: the learning-rate range test of a recipe's stage (over
:func:`tlcore.lr_find`), its plot and its suggestion.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from tlcore.cli.app import cli
from tlcore.cli.training import train
from tlcore.progress import printable

#: The options of ``tl train`` that mean the same here: what the run is (data, recipe,
#: backbone, batches) and where it runs. Taken from ``tl train`` itself, so they stay one.
SHARED = (
    "recipe", "backend", "backbone", "weights", "input_size", "epochs", "batch_size", "seed",
    "task", "labels", "val", "val_split", "augment", "no_cache", "device", "precision", "sets",
    "quiet",
)


@cli.command("lr-find")
@click.argument("data", required=False, type=click.Path(path_type=Path))
@click.option("--stage", default="0", show_default=True,
              help="The stage to test, by name or index: a later stage is tested after the "
              "ones before it train, as in the run.")
@click.option("--out", "-o", type=click.Path(path_type=Path), default=Path("."),
              show_default=True, help="Folder for lr_find.json and lr_find.png.")
@click.option("--steps", type=click.IntRange(10, 100_000), default=100, show_default=True,
              help="Steps of the test, the rate rising from 1e-7 to 10.")
def lr_find(data: Path | None, stage: str, out: Path, steps: int, **options: Any) -> None:
    """Run fastai's learning-rate range test on a stage of the recipe and suggest a rate.

    The rate rises exponentially from 1e-7 to 10 while the stage trains, until the smoothed
    loss diverges; the suggestion is fastai's 'valley' (the steepest part of the longest
    descent). The model is left as it was; nothing of the run is kept but the curve
    (lr_find.json, and lr_find.png with the plots extra). Use the rate as the stage's lr,
    or write lr: auto in the recipe to have every run search it.

    \b
    Examples:
      tl lr-find demo-data --recipe demo-data/recipe.yaml
      tl lr-find photos/ --stage fine_tune --backend keras --out lr-test
    """
    from tlcore.api import lr_find as find
    from tlcore.recipe import parse_override
    from tlcore.train.lrfind import describe

    overrides = dict(parse_override(s) for s in options.pop("sets"))
    if options.pop("no_cache"):
        options["cache_features"] = False
    quiet = options.pop("quiet")
    recipe = options.pop("recipe")
    shortcuts = {k: v for k, v in options.items() if v is not None}
    result = find(data, recipe=recipe, stage=stage, steps=steps, quiet=quiet,
                  overrides=overrides, **shortcuts)
    written = result.write(out, warn=lambda text: click.echo(f"warning: {text}", err=True))
    click.echo(printable(describe(result)))
    click.echo(f"wrote {', '.join(str(path) for path in written)}")


lr_find.params.extend(param for param in train.params if param.name in SHARED)
