"""Class imbalance on the training side: the loss's class weights, the balanced sampler's
order, and whether the data is imbalanced enough for ``monitor: auto`` to watch the balanced
accuracy.

numpy only: the core computes them once from the training split's labels; a backend only
applies the weights in its loss (:attr:`tlcore.interfaces.StepState.class_weights`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from tlcore.errors import RecipeError

if TYPE_CHECKING:
    from tlcore.recipe import Recipe
    from tlcore.tasks import Task

#: ``train.class_weights`` and ``train.sampler`` values that change nothing.
NO_WEIGHTS, SHUFFLE, BALANCED = "none", "shuffle", "balanced"

#: The data is imbalanced when its largest class holds at least this many times the examples
#: of its smallest: ``monitor: auto`` then watches ``val_balanced_accuracy``, since a model
#: that ignores a rare class loses little accuracy but much balanced accuracy.
IMBALANCE_RATIO = 1.5


def class_counts(labels: np.ndarray, classes: int) -> np.ndarray:
    """Examples per class of int class indices ``labels``, int64 ``(classes,)``."""
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=classes).astype(np.int64)


def class_weights(
    setting: str | Mapping[str, float], labels: np.ndarray, names: Sequence[str]
) -> tuple[float, ...] | None:
    """The loss's weight of each class, in class-index order; ``None`` for ``none``.

    ``balanced`` is scikit-learn's ``compute_class_weight("balanced")``: ``n_samples /
    (n_classes * count_c)``, so that every class weighs as much in total. A class without
    training examples gets weight 1 (it adds nothing to the loss anyway; scikit-learn
    refuses such labels). A mapping must name every class of ``names`` and no other.

    Raises:
        RecipeError: the mapping leaves a class out or names one the data does not have.
    """
    if isinstance(setting, str):
        if setting == NO_WEIGHTS:
            return None
        counts = class_counts(labels, len(names)).astype(np.float64)
        present = counts > 0
        weights = np.ones(len(names), dtype=np.float64)
        weights[present] = counts.sum() / (len(names) * counts[present])
        return tuple(float(w) for w in weights)
    missing = [name for name in names if name not in setting]
    unknown = sorted(set(setting) - set(names))
    if missing or unknown:
        said = (f"no weight for {', '.join(missing)}" if missing else "") + (
            ("; " if missing else "") + f"unknown classes {', '.join(unknown)}" if unknown else ""
        )
        raise RecipeError(
            "train.class_weights", dict(setting),
            f"a weight for every class of the data and no other ({said}); the classes are "
            f"{', '.join(names)}; or balanced",
        )
    return tuple(float(setting[name]) for name in names)


def balanced_order(
    rng: np.random.Generator, labels: np.ndarray, classes: int
) -> np.ndarray:
    """One epoch's indices for the balanced sampler: ``len(labels)`` draws with replacement,
    each example with probability ``1 / (classes present * its class's count)``, so every
    class present is drawn equally often on average. Drawn from ``rng`` alone, so the same
    seed gives the same order (on every rank, and after a resume)."""
    labels = np.asarray(labels, dtype=np.int64)
    counts = class_counts(labels, classes)
    present = int((counts > 0).sum())
    p = 1.0 / (present * counts[labels].astype(np.float64))
    p /= p.sum()  # exact to rounding already; numpy wants the sum at 1 within 1e-8
    return rng.choice(len(labels), size=len(labels), replace=True, p=p)


def imbalance(labels: np.ndarray, classes: int) -> float:
    """The largest class's count over the smallest's, among the classes present (1 for
    balanced data)."""
    counts = class_counts(labels, classes)
    counts = counts[counts > 0]
    return float(counts.max() / counts.min()) if len(counts) else 1.0


def check_balance(recipe: Recipe, task: Task) -> None:
    """``train.class_weights`` and ``train.sampler`` need class indices: the recipe's task
    must train with the softmax cross-entropy.

    Raises:
        RecipeError: names the field and why (for multi-label data, a weighted loss per
            label is not defined here; for regression there are no classes).
    """
    if task.loss == "cross_entropy":
        return
    train = recipe.train
    for name, value, default in (
        ("class_weights", train.class_weights, NO_WEIGHTS), ("sampler", train.sampler, SHUFFLE)
    ):
        if value != default:
            raise RecipeError(
                f"train.{name}", value,
                f"{default}: task {task.name} has no single class per example "
                "(class weights and the balanced sampler are for classification)",
            )


def auto_monitor(task: Task, labels: np.ndarray, classes: int) -> tuple[str | None, str]:
    """What ``monitor: auto`` watches on this training data, and why, for the run's output:
    ``val_balanced_accuracy`` when the task has it and the classes are imbalanced
    (:data:`IMBALANCE_RATIO`), else ``None`` (the task's own default) and an empty reason."""
    metric = "val_balanced_accuracy"
    if task.loss != "cross_entropy" or metric not in task.monitors():
        return None, ""
    ratio = imbalance(labels, classes)
    if ratio < IMBALANCE_RATIO:
        return None, ""
    return metric, (
        f"imbalanced training data (largest class / smallest = {ratio:.1f} >= "
        f"{IMBALANCE_RATIO}): monitor auto watches {metric}"
    )


def plan_balance(
    recipe: Recipe, task: Task, labels: np.ndarray, names: Sequence[str]
) -> tuple[tuple[float, ...] | None, str | None, str]:
    """``(class weights, monitor for auto, what to say)`` for a run on training ``labels``
    with classes ``names`` (see :func:`class_weights`, :func:`auto_monitor`): the monitor's
    reason when a stage monitors ``auto``, and how to balance imbalanced classes when
    nothing does (a logistic stage takes both as scikit-learn's ``class_weight``).

    Raises:
        RecipeError: ``train.class_weights`` does not fit the data's classes.
    """
    if task.loss != "cross_entropy":
        return None, None, ""
    weights = class_weights(recipe.train.class_weights, labels, names)
    monitor, reason = auto_monitor(task, labels, len(names))
    if not any(stage.monitor == "auto" for stage in recipe.train.stages):
        reason = ""
    balancing = weights is not None or recipe.train.sampler == BALANCED
    if not balancing and imbalance(labels, len(names)) >= IMBALANCE_RATIO:
        # Off by default (a model for data as imbalanced as its training set may want the
        # plain loss), but measured to help balanced accuracy: say how to turn it on.
        hint = ("to weigh every class alike: --set train.sampler=balanced (or "
                "train.class_weights=balanced); docs/recipes.md measures what they buy")
        reason = f"{reason}; {hint}" if reason else hint
    return weights, monitor, reason


def loss_mix(
    weights: Sequence[float] | None, sampler: str, labels: np.ndarray, classes: int
) -> tuple[float, ...] | None:
    """The factor by which training weighs each class beyond its frequency in ``labels``:
    the class ``weights`` times, for the balanced sampler, one over the class's count (it
    draws every class equally often); ``None`` when neither applies. What guessing costs the
    training loss follows from it (:func:`tlcore.diagnose.stalled_stage_warnings`)."""
    if weights is None and sampler != BALANCED:
        return None
    factors = np.ones(classes) if weights is None else np.asarray(weights, dtype=np.float64)
    if sampler == BALANCED:
        counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=classes)
        factors = factors / np.maximum(counts, 1)
    return tuple(float(f) for f in factors)
