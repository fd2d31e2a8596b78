"""A run's training stages: what each freezes and how it trains, and the default stages.

Re-exported by :mod:`tlcore.recipe.spec`, whose :class:`~tlcore.recipe.spec.TrainSpec` holds them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from tlcore.recipe.fields import AUTO_LR, MONITORS, bounds, choice


@dataclass(frozen=True)
class FreezeSpec:
    """What stays frozen in a stage.

    ``policy``: ``all`` (the whole backbone frozen), ``none`` (nothing frozen), ``last_n``
    (the backbone frozen except its last ``n`` blocks), ``pattern`` (backbone parameters whose
    name matches the regular expression ``pattern`` are frozen). The head always trains.
    ``batchnorm``: ``frozen`` (every BatchNorm of the backbone in inference mode, its running
    statistics untouched, also in unfrozen blocks, as the Keras guide prescribes), ``follow``
    (inference mode only in frozen parts), ``train`` (all BatchNorm layers update) or
    ``auto`` (the default): ``frozen`` for a pretrained backbone; ``follow`` for a randomly
    initialised one (``weights: none``, or a source without published weights), whose
    statistics have yet to be learned wherever it trains, so that training it from scratch
    (``policy: none``) updates every BatchNorm layer. Backends never see ``auto``: the core
    resolves it.
    """

    policy: str = field(default="all", metadata=choice("all", "none", "last_n", "pattern"))
    n: int = field(default=2, metadata=bounds(0))
    pattern: str = ""
    batchnorm: str = field(default="auto", metadata=choice("auto", "frozen", "follow", "train"))


@dataclass(frozen=True)
class StageSpec:
    """One training stage: what is frozen, how it is optimised, when it stops.

    ``schedule``: ``constant``, ``cosine`` (after ``warmup``, a fraction of the stage's steps,
    of linear warm-up) or ``onecycle``. ``patience`` > 0 stops the stage after that many
    epochs without improvement of ``monitor``; ``restore_best`` then keeps the best epoch.
    ``monitor``: a validation metric of the recipe's task (``val_loss``; ``val_accuracy``,
    ``val_balanced_accuracy``, ``val_f1_macro`` for classification; ``val_f1_micro``,
    ``val_f1_macro``, ``val_subset_accuracy`` for multilabel; ``val_mae``, ``val_rmse``,
    ``val_r2`` for regression) or ``auto`` (the default): the task's own (``val_accuracy``,
    ``val_f1_micro``, ``val_mae``), except that a classification whose training classes are
    imbalanced (the largest at least 1.5 times the smallest) watches
    ``val_balanced_accuracy``, and the run says so.
    ``optimizer``: ``adamw``, ``adam``, ``sgd``, ``rmsprop``, or ``logistic``: the head is
    fitted by scikit-learn's logistic regression on the frozen backbone's cached features
    (``C`` chosen by cross-validation) instead of by gradient steps; it needs a frozen
    backbone and a head without hidden layers, and one epoch does it all
    (:mod:`tlcore.train.logistic`).
    ``min_steps``: the stage runs more epochs than ``epochs`` when that many would give fewer
    optimiser steps, so that a small dataset still trains (five epochs of 40 images are ten
    steps, far from converged); the run says when it extends a stage. ``epochs: 0`` skips
    the stage; a recipe whose every stage has 0 is refused (it would export an untrained
    model). Numbers must be finite: NaN and infinity are refused. A loss or weight that
    turns NaN or infinite while training stops the run (:mod:`tlcore.train.guards`).

    ``lr``: a number, or ``auto``: the stage starts with the learning-rate range test of
    fastai's ``lr_find`` (:mod:`tlcore.train.lrfind`: after the stage's freezing, with its
    optimiser, the weights restored afterwards) and trains at its suggestion, fastai's
    ``valley``; the rate found is printed, kept in the history and the checkpoints (a resume
    reuses it, never searches again) and written into ``tlcore.json``'s recipe.
    ``schedule`` ``cosine_restarts``: SGDR warm restarts (PyTorch's
    ``CosineAnnealingWarmRestarts`` with ``T_mult`` = ``cycle_mult``), ``cycles`` cosine
    cycles over the stage's steps after the warm-up (:func:`tlcore.schedule.learning_rate`).
    ``layer_decay`` (timm's): layer-wise learning rates, in (0, 1]; the head trains at ``lr``,
    the backbone's last block at ``lr * layer_decay``, the block before at
    ``lr * layer_decay**2``, and so on (blocks as ``last_n`` freezing counts them,
    :func:`tlcore.schedule.layer_multipliers`); 1 (the default) trains every weight at ``lr``.
    ``unfreeze: gradual`` (ULMFiT's gradual unfreezing) makes the stage, whose ``freeze``
    must be ``last_n`` with ``n`` blocks, the ``n`` stages ``NAME-1`` ... ``NAME-n``: the last
    block trains, then the last two, ... the last ``n``, each with the stage's own settings
    (``epochs`` each). After the default head stage it is one line:
    ``--set train.stages.1.unfreeze=gradual``. The recipe is expanded when it is built, so
    ``tl train --dry-run`` lists those stages and a resume follows them.
    """

    name: str = "stage"
    epochs: int = field(default=5, metadata=bounds(0, 100_000))
    freeze: FreezeSpec = FreezeSpec()
    optimizer: str = field(
        default="adamw", metadata=choice("adamw", "adam", "sgd", "rmsprop", "logistic")
    )
    lr: float | str = field(default=1e-3, metadata={**bounds(1e-12, 10.0), "words": (AUTO_LR,)})
    weight_decay: float = field(default=1e-4, metadata=bounds(0.0, 1.0))
    momentum: float = field(default=0.9, metadata=bounds(0.0, 1.0))
    schedule: str = field(
        default="cosine", metadata=choice("constant", "cosine", "onecycle", "cosine_restarts")
    )
    warmup: float = field(default=0.0, metadata=bounds(0.0, 0.9))
    label_smoothing: float = field(default=0.0, metadata=bounds(0.0, 0.9))
    patience: int = field(default=0, metadata=bounds(0))
    monitor: str = field(default="auto", metadata=choice(*MONITORS))
    restore_best: bool = True
    min_steps: int = field(default=0, metadata=bounds(0, 10_000_000))
    layer_decay: float = field(default=1.0, metadata=bounds(1e-6, 1.0))
    unfreeze: str = field(default="none", metadata=choice("none", "gradual"))
    cycles: int = field(default=3, metadata=bounds(1, 10_000))
    cycle_mult: int = field(default=1, metadata=bounds(1, 100))


def default_stages() -> tuple[StageSpec, ...]:
    """The recipe practitioners use: train the head, then fine-tune the top at lr / 10.

    The head trains for at least 300 steps: on cached features they take about a second, and
    with fewer a linear head stays below a logistic regression on the same features at 5 to
    100 images per class (``benchmarks/transfer.py``). For a pretrained backbone: a randomly
    initialised one trains with :func:`scratch_stage` instead when a run keeps these stages.
    """
    return (
        StageSpec(
            name="head", epochs=5, lr=1e-3, freeze=FreezeSpec(policy="all"), min_steps=300
        ),
        StageSpec(
            name="fine_tune",
            epochs=5,
            lr=1e-4,
            warmup=0.1,
            freeze=FreezeSpec(policy="last_n", n=2),
            patience=3,
        ),
    )


#: The warm-up of :func:`scratch_stage`, a fraction of its steps.
SCRATCH_WARMUP = 0.05


def follows_default_stages(stages: tuple[StageSpec, ...]) -> bool:
    """True when ``stages`` are :func:`default_stages`, up to their ``epochs`` and ``lr``.

    Those two are what the ``epochs`` and ``lr`` shortcuts (``--epochs``, ``--lr``) change, so
    a run with them still follows the default recipe; any other change is the user's own plan.
    """
    defaults = default_stages()
    return len(stages) == len(defaults) and all(
        dataclasses.replace(stage, epochs=default.epochs, lr=default.lr) == default
        for stage, default in zip(stages, defaults, strict=True)
    )


def scratch_stage(stages: tuple[StageSpec, ...]) -> StageSpec:
    """The default recipe for a randomly initialised backbone, in place of ``stages``.

    Freezing random weights trains a head on random features, so the whole network trains in
    one stage, BatchNorm in training mode: as many epochs as ``stages`` have together, AdamW at
    the first stage's learning rate (1e-3 by default, a usual rate for AdamW from scratch),
    cosine decay after a short warm-up.
    """
    return StageSpec(
        name="scratch",
        epochs=sum(stage.epochs for stage in stages),
        lr=stages[0].lr,
        optimizer="adamw",
        schedule="cosine",
        warmup=SCRATCH_WARMUP,
        freeze=FreezeSpec(policy="none", batchnorm="train"),
    )
