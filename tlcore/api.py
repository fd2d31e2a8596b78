"""The Python API: the same runs as the CLI, for codebases that hold their own models and data."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlcore.errors import TlcoreError
from tlcore.parallel import launched_rank
from tlcore.recipe import Recipe, build_recipe, load_recipe_file

if TYPE_CHECKING:
    from tlcore.train import TrainResult


def make_recipe(
    recipe: Recipe | str | Path | dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    **shortcuts: Any,
) -> Recipe:
    """Resolve a recipe from a :class:`Recipe`, a file path or a dict, plus overrides.

    ``shortcuts`` are the short names of :data:`tlcore.recipe.SHORTCUTS` plus ``epochs`` and
    ``lr``; a ``backbone`` that is not a string is taken as the user's own network.
    """
    if isinstance(recipe, str | Path):
        base: Any = load_recipe_file(recipe)
    elif isinstance(recipe, Recipe):
        base = recipe.to_data()
    else:
        base = dict(recipe or {})
    network = shortcuts.get("backbone")
    if network is not None and not isinstance(network, str):
        shortcuts.pop("backbone")
        base = {**base, "backbone": {**base.get("backbone", {}), "model": network, "source": None}}
    return build_recipe(base, overrides, **shortcuts)


def random_baseline(result: Any, out: str | Path, *, data: Any = None, quiet: bool = True) -> Any:
    """Train ``result``'s recipe again from random weights: what the pretrained weights bought.

    The same data (and so the same split and seed), the same backbone architecture and epochs;
    only ``backbone.weights`` becomes ``none``, so the run trains the whole network with
    BatchNorm in training mode (the default stages become one from-scratch stage).

    Args:
        result: a finished :class:`tlcore.train.TrainResult` of a pretrained backbone.
        out: the baseline's own run folder.
        data: the arrays ``result`` was trained on, if it was not trained on a folder.
        quiet: no progress output.

    Returns:
        The baseline's :class:`tlcore.train.TrainResult`.

    Raises:
        TlcoreError: ``result``'s backbone was not pretrained, or is the user's own network
            (which cannot be re-initialised portably).
    """
    from tlcore.train import Trainer

    spec = result.recipe.backbone
    if spec.weights.lower() not in ("pretrained", "imagenet") or spec.model is not None:
        raise TlcoreError(
            f"the run's backbone ({spec.source or 'a user network'}, weights {spec.weights}) "
            "is not a published pretrained backbone: there is nothing to compare",
            "compare runs of a backbone with weights: pretrained",
        )
    recipe = result.recipe.replace(**{"backbone.weights": "none"})
    return Trainer(recipe, out, data=data, quiet=quiet).run()


def default_out() -> Path:
    """Where a run goes when no folder is given: ``runs/run-YYYYmmdd-HHMMSS``, a new folder
    per run (the CLI and the API alike)."""
    return Path("runs") / datetime.now().strftime("run-%Y%m%d-%H%M%S")


def resolve_run(
    data: Any = None,
    *,
    recipe: Recipe | str | Path | dict[str, Any] | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    overrides: dict[str, Any] | None = None,
    **shortcuts: Any,
) -> tuple[Recipe, Path, Any]:
    """The one place a run is assembled, for :func:`fit` and ``tl train``: the resolved
    recipe, the run folder and the in-memory data (``None`` for a folder).

    ``data`` that is an iterable of ``(x, y)`` batches (a ``DataLoader``, a
    ``tf.data.Dataset``, a generator) is read here, once, into arrays
    (:func:`tlcore.data.iterables.read_batches`).

    Raises:
        TlcoreError: resuming without a run folder; another process is writing the run
            folder (refused here, before any data is read); no data at all.
        DataError: ``data`` is of no type the API reads, or its batches are unusable.
    """
    from tlcore.data.iterables import check_data_type, is_batch_iterable, read_batches
    from tlcore.runfolder import RunFolder

    if isinstance(data, str | Path):
        shortcuts["data"] = str(data)
        data = None
    if out is not None and launched_rank() == 0:  # rank 0 alone locks and writes the folder
        RunFolder(out).check_free()
    if resume:
        if out is None:
            raise TlcoreError("resuming needs the run folder", "pass out= (tl train --resume RUN)")
        recipe = recipe if recipe is not None else RunFolder(out).info()["recipe"]
    check_data_type(data)
    resolved = make_recipe(recipe, overrides, **shortcuts)
    if resolved.data.path is None and resolved.data.labels is None and data is None:
        raise TlcoreError("no data given", "tl train PATH, or data.path in the recipe")
    if is_batch_iterable(data):
        data = read_batches(data)  # read once: the core's pipeline then works on arrays
    return resolved, Path(out) if out is not None else default_out(), data


def fit(
    data: Any = None,
    *,
    recipe: Recipe | str | Path | dict[str, Any] | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    quiet: bool = True,
    overrides: dict[str, Any] | None = None,
    data_changed_ok: bool = False,
    **shortcuts: Any,
) -> TrainResult:
    """Fine-tune a pretrained backbone on ``data`` and write a run folder.

    Args:
        data: a folder of class sub-folders, a ``(images, labels)`` pair of numpy arrays
            (uint8 NHWC), a ``tlcore.data.Dataset``, or an iterable of ``(x, y)`` batches:
            a PyTorch ``DataLoader``, a ``tf.data.Dataset``, a generator, of numpy arrays or
            tensors. An iterable is read once, in its order, into arrays (its own shuffling
            and random transforms act once, not per epoch: ``data.augment`` augments every
            epoch); channels-first image batches (``ToTensor``'s) are made channels-last,
            normalised ones refused. ``None`` uses the recipe's ``data.path``.
        recipe: a :class:`Recipe`, a YAML/TOML file, or a dict; defaults otherwise.
        out: the run folder; default :func:`default_out`, a new timestamped folder.
        resume: continue the interrupted run in ``out`` (pass the same ``data``). The data
            must be what the run started with (its files, sizes and times, or the same
            arrays); a run that stopped before its first checkpoint starts again.
        quiet: no progress output.
        overrides: dotted-path overrides, ``{"train.stages.1.lr": 1e-5}``.
        data_changed_ok: resume even though files were added, removed or changed since the
            run started (the validation images are then drawn from the data as it is now);
            other classes are refused all the same.
        shortcuts: ``backend="keras"``, ``backbone="hf:./resnet"`` or a ``torch.nn.Module`` /
            ``keras.Model``, ``epochs=3``, ``lr=1e-3``, ``batch_size=16``, ``task="multilabel"``
            with ``labels="tags.csv"`` (a CSV label file; ``data`` is then the folder its paths
            start from), ...

    Returns:
        A :class:`tlcore.train.TrainResult` with the native model and the run folder.

    A network of your own (``backbone=`` a ``torch.nn.Module`` / ``keras.Model``) is trained
    in place: afterwards it holds the trained weights (those of the model returned), and its
    training flags are as you left them (``requires_grad`` and each submodule's train/eval
    mode, Keras's ``trainable``), also when the run fails.

    Example:
        >>> result = tlcore.fit("demo-data", recipe="demo-data/recipe.yaml")  # doctest: +SKIP
    """
    from tlcore.train import Trainer

    resolved, folder, arrays = resolve_run(
        data, recipe=recipe, out=out, resume=resume, overrides=overrides, **shortcuts
    )
    with users_network_flags(resolved):
        trainer = Trainer(
            resolved, folder, data=arrays, resume=resume, quiet=quiet,
            data_changed_ok=data_changed_ok,
        )
        return trainer.run()


@contextmanager
def users_network_flags(recipe: Recipe) -> Iterator[None]:
    """Put the training flags of the user's own network (``backbone.model``) back as they
    were when the block is left, however it is left: freezing and training change them, and
    they are the user's (``tl_network_flags``). Nothing to do for a backbone tlcore loads."""
    network = recipe.backbone.model
    if network is None:
        yield
        return
    from tlcore.plugins.calls import BackendCalls

    restore = BackendCalls(recipe.backend).network_flags(network)
    try:
        yield
    finally:
        restore()


def plan(
    data: Any = None,
    *,
    recipe: Recipe | str | Path | dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    **shortcuts: Any,
) -> Any:
    """What :func:`fit` with the same arguments would do, without training or writing
    anything: a :class:`tlcore.train.dryrun.RunPlan` (the resolved recipe, the data, the
    backbone, each stage's trainable and frozen parameters, epochs and steps). The data is
    read and the model built as the run would, so what would fail there fails here.

    Example:
        >>> print(tlcore.plan("demo-data").to_text())  # doctest: +SKIP
    """
    import tempfile

    from tlcore.train import Trainer
    from tlcore.train.dryrun import plan_run

    with tempfile.TemporaryDirectory(prefix="tlcore-plan-") as scratch:
        resolved, folder, arrays = resolve_run(
            data, recipe=recipe, out=Path(scratch) / "run", overrides=overrides, **shortcuts
        )
        with users_network_flags(resolved):  # planning freezes the model to count
            return plan_run(Trainer(resolved, folder, data=arrays, quiet=True))


def lr_find(
    data: Any = None,
    *,
    recipe: Recipe | str | Path | dict[str, Any] | None = None,
    stage: int | str = 0,
    out: str | Path | None = None,
    steps: int = 100,
    quiet: bool = True,
    overrides: dict[str, Any] | None = None,
    **shortcuts: Any,
) -> Any:
    """The learning-rate range test (fastai's ``lr_find``) for one stage of the run
    :func:`fit` with the same arguments would train, and its suggestion (fastai's ``valley``).

    The stages before ``stage`` train first, as in the run (a fine-tuning stage starts from
    the head they trained); then ``stage``'s freezing, and ``steps`` optimiser steps at rates
    rising from 1e-7 to 10, stopped when the loss diverges. Nothing is kept: the run happens
    in a scratch folder, removed afterwards (see :mod:`tlcore.train.lrfind`).

    Args:
        data, recipe, overrides, shortcuts: as for :func:`fit`.
        stage: the stage, by name or index (default the first).
        out: a folder to write ``lr_find.json`` and ``lr_find.png`` (with the ``plots``
            extra) into; nothing is written without it.
        steps: the steps of the test (fastai's 100).
        quiet: no progress output.

    Returns:
        A :class:`tlcore.train.lrfind.LrFindResult`: ``lrs``, ``losses``, ``suggestion``.

    Example:
        >>> tlcore.lr_find("demo-data", stage="fine_tune").suggestion  # doctest: +SKIP
        0.000301
    """
    import tempfile

    from tlcore.train.lrfind import run_range_test

    if isinstance(steps, bool) or not isinstance(steps, int) or not 10 <= steps <= 100_000:
        raise TlcoreError(f"steps must be a whole number from 10 to 100000, not {steps!r}",
                          "the range test takes 100 steps by default")
    with tempfile.TemporaryDirectory(prefix="tlcore-lr-find-") as scratch:
        resolved, folder, arrays = resolve_run(
            data, recipe=recipe, out=Path(scratch) / "run", overrides=overrides, **shortcuts
        )
        result = run_range_test(resolved, folder, arrays, stage, steps, quiet)
    if out is not None:
        result.write(out)
    return result
