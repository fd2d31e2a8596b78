"""The learning-rate finder: fastai's ``lr_find`` range test, backend-neutral.

The test trains from the stage's starting weights with a rate rising exponentially from
``start`` (1e-7) towards ``end`` (10) over ``steps`` (100) optimiser steps, cycling over the
training batches when the data has fewer, and records the loss smoothed as fastai smooths it (an
exponential moving average with ``beta`` 0.98, debiased). It stops early when the smoothed loss
exceeds four times the best so far (it diverged) or turns NaN. Afterwards the weights are put
back and the test's optimiser is dropped: nothing of the test is left in the model.

The suggestion is fastai's default, ``valley``: the longest run of decreasing losses (the
longest decreasing subsequence of the curve, its first tenth and last five points left out as
fastai does), and within it the point ``1/3 + 1/6`` of the way down, the steepest part of the
valley.

It runs through the backend facade (:class:`~tlcore.plugins.calls.BackendCalls`) on the
stage's feed: on the frozen backbone's cached features it takes seconds, through an unfrozen
backbone a forward and backward pass of the images per step.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlcore.errors import TlcoreError
from tlcore.interfaces import StepState
from tlcore.recipe.spec import AUTO_LR
from tlcore.runfolder import write_json
from tlcore.train.distributed import local_batch, on_rank0, sum_over_ranks, usable_batches
from tlcore.train.stages import derive_seed

if TYPE_CHECKING:
    from tlcore.recipe import StageSpec
    from tlcore.train.feed import Feed
    from tlcore.train.trainer import Trainer

START, END, STEPS, BETA = 1e-7, 10.0, 100, 0.98
#: The smoothed loss above this many times the best so far: the test stops, it diverged.
DIVERGED = 4.0
#: The suggestion method (fastai's default).
METHOD = "valley"
#: The files' name: ``lr_find.json`` and ``lr_find.png`` (in a run folder, with the stage's
#: name: ``lr_find-head.json``).
NAME = "lr_find"
#: Mixed into the stage's seed, so the test draws its own order (an epoch's seed has the
#: epoch number there, and stages run far fewer epochs).
_SEED_SALT = 1 << 30


@dataclass(frozen=True)
class LrFindResult:
    """A range test's record: the rate and the smoothed loss of every step, the suggestion.

    Attributes:
        lrs: the rate of each step taken.
        losses: the smoothed loss after each step (NaN where the loss was not finite).
        suggestion: fastai's ``valley`` rate.
        stopped: ``diverged`` (the loss exceeded 4x the best), ``nan`` (it turned NaN or
            infinite) or ``end`` (all steps ran).
        stage: the name of the stage the test ran for.
    """

    lrs: tuple[float, ...]
    losses: tuple[float, ...]
    suggestion: float
    stopped: str
    stage: str = ""

    def to_dict(self) -> dict[str, Any]:
        """What ``lr_find.json`` holds (NaN losses written as ``null``)."""
        return {
            "stage": self.stage,
            "method": METHOD,
            "suggestion": self.suggestion,
            "stopped": self.stopped,
            "lrs": list(self.lrs),
            "losses": [v if math.isfinite(v) else None for v in self.losses],
        }

    def write(
        self, folder: str | Path, warn: Callable[[str], None] | None = None, name: str = NAME
    ) -> list[Path]:
        """Write ``NAME.json`` and, with matplotlib (the ``plots`` extra), ``NAME.png`` into
        ``folder`` (``lr_find`` by default); the files written. Without matplotlib ``warn``
        says so once."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / f"{name}.json", self.to_dict())
        written = [out / f"{name}.json"]
        if (png := self.plot(out / f"{name}.png", warn)) is not None:
            written.append(png)
        return written

    def plot(self, path: str | Path, warn: Callable[[str], None] | None = None) -> Path | None:
        """The loss against the rate (log scale), the suggestion marked; ``None`` without
        matplotlib."""
        from tlcore.report.plots import _figure, _save

        figure = _figure(warn, f"skipping {Path(path).name}", figsize=(6, 4))
        if figure is None:
            return None
        axes = figure.subplots()
        axes.plot(self.lrs, self.losses)
        axes.set_xscale("log")
        at = int(np.argmin(np.abs(np.log(np.asarray(self.lrs)) - math.log(self.suggestion))))
        axes.plot([self.suggestion], [self.losses[at]], "o", color="red",
                  label=f"{METHOD}: {self.suggestion:.2e}")
        axes.set_xlabel("learning rate")
        axes.set_ylabel("loss (smoothed)")
        axes.set_title(f"learning-rate finder{f': stage {self.stage}' if self.stage else ''}")
        axes.grid(alpha=0.3)
        axes.legend(loc="best")
        return _save(figure, path)


def rates(steps: int = STEPS, start: float = START, end: float = END) -> np.ndarray:
    """The test's rates: from ``start`` towards ``end``, exponentially, over ``steps`` steps,
    as fastai's ``LRFinder`` sets them: ``start * (end / start) ** (i / steps)`` at step
    ``i`` (the last step's rate one step short of ``end``)."""
    return start * (end / start) ** (np.arange(steps) / steps)


def range_test(
    step: Callable[[float, int], float],
    steps: int = STEPS,
    start: float = START,
    end: float = END,
    beta: float = BETA,
    stage: str = "",
) -> LrFindResult:
    """Run the range test with ``step(lr, i) -> loss`` (one optimiser step at ``lr``, its
    batch's mean loss) and suggest a rate.

    Raises:
        TlcoreError: too few steps ran before the loss diverged to suggest anything.
    """
    lrs, losses = [], []
    average, best, stopped = 0.0, math.inf, "end"
    for i, lr in enumerate(rates(steps, start, end)):
        loss = float(step(float(lr), i))
        average = beta * average + (1 - beta) * loss
        smoothed = average / (1 - beta ** (i + 1))
        lrs.append(float(lr))
        losses.append(smoothed if math.isfinite(smoothed) else math.nan)
        if not math.isfinite(smoothed):
            stopped = "nan"
            break
        best = min(best, smoothed)
        if smoothed > DIVERGED * best:
            stopped = "diverged"
            break
    suggestion = valley(lrs, losses, steps)
    return LrFindResult(tuple(lrs), tuple(losses), suggestion, stopped, stage)


def valley(lrs: Sequence[float], losses: Sequence[float], steps: int = STEPS) -> float:
    """fastai's ``valley`` suggestion from the recorded curve: the first ``steps // 10`` points
    and the last five are left out (and everything from the first NaN), then the rate
    ``1/3 + 1/6`` of the way along the longest decreasing run.

    Raises:
        TlcoreError: fewer than two points are left.
    """
    lrs, losses = list(lrs[steps // 10 : -5]), list(losses[steps // 10 : -5])
    if any(math.isnan(v) for v in losses):
        cut = next(i for i, v in enumerate(losses) if math.isnan(v))
        lrs, losses = lrs[:cut], losses[:cut]
    if len(losses) < 2:
        raise TlcoreError(
            f"the learning-rate finder has too few steps to suggest a rate ({len(losses)} "
            "usable after the loss diverged or turned NaN)",
            "give the stage a learning rate (lr: 1e-3), or check the data and the model: the "
            "loss diverged at the smallest rates",
        )
    n = len(losses)
    longest = [1] * n
    start = end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and longest[i] < longest[j] + 1:
                longest[i] = longest[j] + 1
            if longest[end] < longest[i]:
                end = i
                start = end - longest[end]
    sections = (end - start) / 3
    return float(lrs[start + int(sections) + int(sections / 2)])


def find_lr(
    t: Trainer, stage: StageSpec, index: int, feed: Feed, steps: int = STEPS
) -> LrFindResult:
    """Run the range test for ``t``'s stage ``index`` on ``feed`` (the model frozen for the
    stage already), with the stage's optimiser settings; put the weights back.

    The batches are drawn in a seeded order (a pass over the data, then another, as long as
    the test runs); in a distributed run every rank takes its share of each batch and sees
    the global batch's loss, so every rank stops at the same step and suggests the same rate.
    """
    collective = t.collective
    seed = derive_seed(t.recipe.train.seed, index, _SEED_SALT)
    rng = np.random.default_rng(seed)  # the order: the same on every rank
    # augmentation draws per rank (each augments its own share), never from the order's
    augment_rng = np.random.default_rng(derive_seed(seed, collective.rank))
    size = t.recipe.train.batch_size
    weights = t.get_weights()
    t.calls.seed(seed)
    with collective.scope():
        optimizer = t.calls.make_optimizer(t.model, dataclasses.replace(stage, lr=START))
    batches: list[np.ndarray] = []

    def step(lr: float, i: int) -> float:
        if not batches:  # another pass over the data
            order = rng.permutation(len(feed.dataset))
            chunks = [order[k : k + size] for k in range(0, len(order), size)]
            batches.extend(reversed(usable_batches(chunks, collective.world_size)))
        mine, share = local_batch(batches.pop(), collective)
        state = StepState(optimizer, lr, stage.label_smoothing, i, loss=t.task.loss, share=share)
        result = t.calls.train_step(t.model, feed.batch(mine, augment_rng), state)
        total, count = sum_over_ranks(collective, float(result["loss"]) * len(mine), len(mine))
        return total / max(count, 1)

    try:
        return range_test(step, steps=steps, stage=stage.name)
    finally:
        t.set_weights(weights)  # nothing of the test stays in the model


def resolve_lr(t: Trainer, index: int, stage: StageSpec, progress: Any, feed: Feed) -> StageSpec:
    """``stage`` with a number for ``lr: auto``: the range test's suggestion, found once at
    the stage's start (after its freezing) and kept in ``progress`` (so in every checkpoint:
    a resume trains on at the same rate and never searches again). The curve goes into the
    run folder (``lr_find-STAGE.json`` and ``.png``) and the rate into ``t``'s recipe, which
    ``tlcore.json`` records; ``run.json`` keeps ``auto``. A stage of 0 epochs (skipped) is
    not tested."""
    if stage.lr != AUTO_LR or stage.epochs == 0:
        return stage
    if progress.lr is None:
        found = find_lr(t, stage, index, feed)
        progress.lr = found.suggestion
        t.progress.message(describe(found))

        def write() -> None:
            written = found.write(t.folder.path, t.progress.warn, f"{NAME}-{stage.name}")
            t.progress.message(f"wrote {', '.join(path.name for path in written)}")

        on_rank0(t.collective, write)
    else:
        t.progress.message(f"stage {stage.name}: lr {progress.lr:.3g}, found by the "
                           "learning-rate finder when the stage started")
    stage = dataclasses.replace(stage, lr=progress.lr)
    stages = list(t.recipe.train.stages)
    stages[index] = stage
    t.recipe = dataclasses.replace(
        t.recipe, train=dataclasses.replace(t.recipe.train, stages=tuple(stages))
    )
    return stage


def describe(result: LrFindResult) -> str:
    """One line: the suggestion, how it was chosen, how the test ended."""
    ended = {"end": f"{len(result.lrs)} steps", "diverged": "stopped when the loss diverged",
             "nan": "stopped when the loss turned NaN"}[result.stopped]
    where = f"stage {result.stage}: " if result.stage else ""
    return (f"{where}learning-rate finder suggests lr {result.suggestion:.3g} ({METHOD}; "
            f"{result.lrs[0]:.0e} to {result.lrs[-1]:.2g}, {ended})")


def stage_index(stages: Sequence[StageSpec], stage: int | str) -> int:
    """The index of ``stage`` (a name, or an index as a number or a string) among ``stages``.

    Raises:
        TlcoreError: no such stage; names the stages there are.
    """
    names = [s.name for s in stages]
    if isinstance(stage, str) and stage in names:
        return names.index(stage)
    text = str(stage)
    if text.lstrip("-").isdigit() and -len(stages) <= int(text) < len(stages):
        return int(text) % len(stages)
    raise TlcoreError(
        f"the recipe has no stage {stage!r}",
        "name one of its stages (" + ", ".join(names) + f") or give an index below {len(names)}",
    )


class _Found(Exception):  # not an error: how the run hands the result back
    """Ends a range-test run at its stage, carrying the result out of the trainer."""

    def __init__(self, result: LrFindResult) -> None:
        super().__init__(result.stage)
        self.result = result


def run_range_test(
    recipe: Any, out: Path, data: Any, stage: int | str, steps: int, quiet: bool
) -> LrFindResult:
    """The range test for ``recipe``'s stage ``stage``, as a run would meet it: the stages
    before it train first (into ``out``, a scratch run folder), since a fine-tuning stage
    starts from the head they trained; then that stage's freezing, its feed (cached
    features when the backbone is frozen), the test.

    Raises:
        TlcoreError: no such stage; too few steps to suggest a rate.
    """
    from tlcore.train.trainer import Trainer

    index = stage_index(recipe.train.stages, stage)
    if recipe.train.stages[index].optimizer == "logistic":
        raise TlcoreError(
            f"stage {recipe.train.stages[index].name!r} fits a logistic regression, which "
            "takes no learning rate", "choose a stage that trains with a gradient optimiser",
        )
    stages = tuple(
        s if i < index else dataclasses.replace(s, lr=AUTO_LR)
        for i, s in enumerate(recipe.train.stages[: index + 1])
    )
    recipe = dataclasses.replace(
        recipe, train=dataclasses.replace(recipe.train, stages=stages)
    )

    class RangeTest(Trainer):
        """A run that stops at the start of its last stage with that stage's range test."""

        def _resolve_lr(self, i: int, s: StageSpec, progress: Any, feed: Feed) -> StageSpec:
            if i < index:
                return super()._resolve_lr(i, s, progress, feed)
            raise _Found(find_lr(self, s, i, feed, steps))

    try:
        RangeTest(recipe, out, data=data, quiet=quiet).run()
    except _Found as found:
        return found.result
    raise AssertionError("the range test's stage was not reached")  # pragma: no cover
