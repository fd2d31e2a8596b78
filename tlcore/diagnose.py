"""Checks that tell a run that learned nothing from one that learned: each returns warnings.

The training driver runs them where their facts are known: :func:`random_backbone_warnings`
at the start, :func:`feature_warning` on the first cached features of a frozen backbone,
:func:`chance_warning` and :func:`stalled_stage_warnings` at the end. A warning names what was
measured, the likely cause and a fix. They are warnings, not errors: a run that learned nothing
still finishes, with its files, and says so (on stderr, in ``tlcore.json`` under
``"warnings"`` and in ``TrainResult.warnings``). Framework-free: numpy arrays only.

The rules, with their thresholds:

- **At chance** (:func:`chance_warning`): chance is the share of the most common class among
  the validation labels (never below 1 / K: predicting that class always scores it). A
  validation accuracy ``a`` over ``n`` images is within noise of chance when
  ``a <= chance + 2 * sqrt(chance * (1 - chance) / n)``: two binomial standard errors of a
  guesser's accuracy, which a model that guesses exceeds about 2 % of the time. Without a
  validation set the final training accuracy is checked the same way: a model at chance even
  on its training images learned nothing at all.
- **Never moved** (:func:`stalled_stage_warnings`): a stage of two or more epochs whose lowest
  epoch training loss closed less than 3 % of the gap between the loss of predicting the
  training labels' class frequencies (``ln K`` for balanced classes; a model that learned
  nothing from the inputs cannot do better) and the lowest loss possible (0, or the entropy of
  a smoothed target under label smoothing). Measured against that baseline rather than the
  stage's first epoch, so that a fine-tuning stage that starts low and stays there is not
  flagged, and a head that only learns the class frequencies is. One-epoch stages are skipped:
  their only loss averages the untrained first steps. A loss that is not finite is flagged too.
- **Dead features** (:func:`feature_warning`): the cached features of a frozen backbone are
  (near) constant when, in every dimension, their range over the images is at most
  ``1e-6 * (1 + mean |feature|)``: a head trained at an ordinary learning rate cannot tell such
  images apart (all-zero features included). Non-finite features are an error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tlcore.errors import TlcoreError
from tlcore.recipe import StageSpec
from tlcore.tasks import DEFAULT_TASK, Task, get_task
from tlcore.tasks.classification import label_entropy

__all__ = [
    "chance_level",
    "chance_warning",
    "feature_warning",
    "label_entropy",
    "random_backbone_warnings",
    "stalled_stage_warnings",
]

#: Standard errors above chance that a validation accuracy must reach not to be warned about.
CHANCE_SIGMAS = 2.0
#: The fraction of the gap from guessing to a perfect fit a stage's loss must close.
MIN_PROGRESS = 0.03
#: Relative range below which a feature counts as constant across images.
FLAT_FEATURES = 1e-6

_CLASSES = get_task(DEFAULT_TASK)


def chance_level(labels: np.ndarray, num_classes: int) -> float:
    """The accuracy of always predicting the most common class of ``labels`` (at least 1/K)."""
    if not len(labels):
        return 1.0 / max(num_classes, 1)
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    return max(float(counts.max()) / len(labels), 1.0 / max(num_classes, 1))


def chance_warning(
    accuracy: float | None, labels: np.ndarray, num_classes: int, part: str = "validation"
) -> str | None:
    """A warning when ``accuracy`` on validation ``labels`` is within noise of chance.

    Args:
        accuracy: the final validation accuracy; ``None`` (no validation set) checks nothing.
        labels: the validation labels (integers below ``num_classes``).
        num_classes: the number of classes of the task.
        part: which images ``labels`` are, for the message: ``validation``, or ``training``
            when a run has no validation images (at chance even on its training images, a
            model learned nothing at all).

    Returns:
        The warning, or ``None`` when the accuracy is clearly above chance.

    Example:
        >>> chance_warning(0.12, np.arange(100) % 10, 10) is not None
        True
        >>> chance_warning(0.9, np.arange(100) % 10, 10) is None
        True
    """
    n = len(labels)
    if accuracy is None or n == 0:
        return None
    chance = chance_level(labels, num_classes)
    noise = CHANCE_SIGMAS * math.sqrt(chance * (1 - chance) / n)
    if accuracy > chance + noise:
        return None
    return (
        f"{part} accuracy {accuracy:.3f} is within noise of chance ({chance:.3f} ± "
        f"{noise:.3f} for {n} examples; chance is the share of the most common class): the "
        "model learned little or nothing. Train longer or at a higher learning rate, start "
        "from a pretrained backbone, check that the labels match the inputs, or validate on "
        "more examples"
    )


def stalled_stage_warnings(
    history: Sequence[dict[str, Any]],
    stages: Sequence[StageSpec],
    labels: np.ndarray,
    num_classes: int,
    task: Task | None = None,
    info: dict[str, Any] | None = None,
    class_mix: Sequence[float] | None = None,
) -> list[str]:
    """Warnings for stages whose training loss never moved from guessing (see the module).

    Args:
        history: the run's epoch rows (``stage``, ``epoch``, ``loss``, ...), every stage.
        stages: the stages that ran (for their ``label_smoothing``).
        labels: the training labels (targets, for another task than classification).
        num_classes: the number of classes (the model's outputs).
        task: the run's task, whose :meth:`~tlcore.tasks.Task.baseline_loss` is the loss of
            guessing (default: classification, as above).
        info: what the task learned from the training data.
        class_mix: for classification, the factor by which the training loss weighs each
            class beyond its frequency (class weights, the balanced sampler:
            :func:`tlcore.train.balance.loss_mix`): guessing is then measured on that mix,
            as the loss was, not on the plain frequencies.

    Returns:
        One warning per stalled stage, in stage order.

    Example:
        >>> flat = [{"stage": "head", "loss": 2.31}, {"stage": "head", "loss": 2.30}]
        >>> len(stalled_stage_warnings(flat, [StageSpec(name="head")], np.arange(50) % 10, 10))
        1
    """
    out = []
    for stage in stages:
        losses = [float(row["loss"]) for row in history if row.get("stage") == stage.name]
        if not losses:
            continue
        bad = [i + 1 for i, loss in enumerate(losses) if not math.isfinite(loss)]
        if bad:
            out.append(
                f"stage {stage.name!r}: the training loss is not finite (from epoch {bad[0]}): "
                "training diverged; lower the learning rate, or check the inputs for NaN"
            )
            continue
        if len(losses) < 2:
            continue
        guess, floor = (task or _CLASSES).baseline_loss(
            labels, num_classes, info or {}, stage.label_smoothing
        )
        if class_mix is not None:  # the loss saw another class mix: its best guess differs
            guess = label_entropy(labels, num_classes, stage.label_smoothing, class_mix)
        best = min(losses)
        if guess - floor <= 1e-9 or guess - best >= MIN_PROGRESS * (guess - floor):
            continue
        out.append(
            f"stage {stage.name!r}: the training loss never moved (lowest {best:.4f} in "
            f"{len(losses)} epochs, first {losses[0]:.4f}; {(task or _CLASSES).baseline} "
            f"gives {guess:.4f}): it learned nothing from the inputs. Raise the learning "
            "rate, unfreeze the backbone (freeze policy none) if its features are random or "
            "constant, or check that the labels match the inputs"
        )
    return out


def feature_warning(features: np.ndarray) -> str | None:
    """A warning when a frozen backbone's cached ``features`` are (near) constant.

    Args:
        features: one row per training image (any trailing shape).

    Returns:
        The warning, or ``None`` when the features vary (or there are fewer than 2 rows).

    Raises:
        TlcoreError: a feature is NaN or infinite.

    Example:
        >>> feature_warning(np.zeros((4, 8), np.float32)) is not None
        True
        >>> feature_warning(np.eye(4, dtype=np.float32)) is None
        True
    """
    flat = np.asarray(features).reshape(len(features), -1)
    finite = np.isfinite(flat).all(axis=1)
    if not finite.all():
        raise TlcoreError(
            f"the frozen backbone gives non-finite features (NaN or inf) for "
            f"{int((~finite).sum())} of {len(flat)} training examples",
            "check the backbone's weights and its input normalisation (backbone.input_size, "
            "the preprocessing it declares)",
        )
    if len(flat) < 2 or flat.shape[1] == 0:
        return None
    spread = float(np.ptp(flat, axis=0).max())
    level = float(np.abs(flat).mean(dtype=np.float64))
    if spread > FLAT_FEATURES * (1 + level):
        return None
    return (
        f"the frozen backbone's features are the same for all {len(flat)} training examples "
        f"(largest range of a feature {spread:.2g}, mean |feature| {level:.2g}): a head "
        "trained on them cannot tell the examples apart. Check the backbone (its weights, "
        "input size and normalisation), or train it too (freeze policy none)"
    )


def random_backbone_warnings(stages: Sequence[StageSpec]) -> list[str]:
    """Warnings for stages that freeze a randomly initialised backbone, or its BatchNorm.

    Args:
        stages: the recipe's stages (``batchnorm: auto`` resolves to ``follow`` here, so
            it trains the BatchNorm layers of a backbone that trains).

    Returns:
        At most two warnings: one naming the stages that freeze backbone weights (``policy``
        other than ``none``), one naming the stages that keep BatchNorm statistics frozen while
        the whole backbone trains.

    Example:
        >>> from tlcore.recipe import FreezeSpec
        >>> head = StageSpec(name="head", freeze=FreezeSpec(policy="all"))
        >>> random_backbone_warnings([head])[0].split(":")[0]
        'the backbone is randomly initialised (weights'
    """
    out = []
    frozen = [s.name for s in stages if s.freeze.policy != "none"]
    if frozen:
        out.append(
            "the backbone is randomly initialised (weights: none, or a source without "
            f"published weights), but stage(s) {', '.join(map(repr, frozen))} freeze (part of) "
            "it: freezing it trains a head on random features; use freeze policy none (with "
            "batchnorm train) to train it from scratch, or start from pretrained weights"
        )
    stale = [
        s.name for s in stages if s.freeze.policy == "none" and s.freeze.batchnorm == "frozen"
    ]
    if stale:
        out.append(
            f"stage(s) {', '.join(map(repr, stale))} train a randomly initialised backbone "
            "with batchnorm frozen: its BatchNorm layers keep their initial statistics (mean "
            "0, variance 1) instead of the data's; use batchnorm train (or auto)"
        )
    return out
