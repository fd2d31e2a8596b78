"""Feature-based transfer with a classical classifier: a stage whose ``optimizer`` is
``logistic`` fits scikit-learn's logistic regression on the frozen backbone's cached features
and makes it the model's own linear head, so that the bundle exports it like any head (one
ONNX model, its parity checked).

Multinomial logistic regression is a linear layer under a softmax, exactly the head tlcore
attaches without hidden layers: its coefficients become the head's weights (two classes: the
binary model's ``z`` as logits ``(-z/2, z/2)``, whose softmax is its sigmoid). The features
are standardised for the solver and the standardisation folded back into the weights. The
regularisation ``C`` is chosen by stratified cross-validation on the training features.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tlcore.errors import RecipeError, TlcoreError
from tlcore.interfaces import Batch
from tlcore.train.balance import loss_mix

if TYPE_CHECKING:
    from tlcore.train.trainer import Trainer, _StageRun

LOGISTIC = "logistic"
"""The ``optimizer`` of a stage whose head is fitted by logistic regression."""

C_GRID = tuple(float(c) for c in np.logspace(-3, 3, 7))
"""Inverse regularisation strengths tried by cross-validation."""

MAX_FOLDS = 5


def check_logistic(t: Trainer, run: _StageRun) -> None:
    """A logistic stage needs cached features, a classification task and a linear head.

    Raises:
        RecipeError: names what stands in the way.
    """
    if t.task.name != "classification":
        raise RecipeError(f"train.stages[{run.index}].optimizer", LOGISTIC,
                          "adamw, adam, sgd or rmsprop: logistic regression fits classifiers")
    if t.recipe.head.hidden:
        raise RecipeError("head.hidden", list(t.recipe.head.hidden),
                          "[] for a logistic stage: its head is one linear layer")
    if run.train_feed.features is None:
        raise RecipeError(
            f"train.stages[{run.index}].optimizer", LOGISTIC,
            "adamw, adam, sgd or rmsprop: a logistic stage fits on cached features, so its "
            "backbone must be frozen (freeze.policy all), train.cache_features on and "
            "data.augment empty",
        )


def fit_logistic(t: Trainer, run: _StageRun) -> dict[str, float]:
    """Fit the head by logistic regression on ``run``'s cached training features; the
    epoch's training metrics (``loss``: the training log-loss, ``accuracy``, ``C``)."""
    check_logistic(t, run)
    features = np.asarray(run.train_feed.features, dtype=np.float64)
    labels = np.asarray(run.train_feed.dataset.labels, dtype=np.int64)
    # Class weights and the balanced sampler weigh the classes here as in a gradient stage.
    mix = loss_mix(t.class_weights, t.recipe.train.sampler, labels, t.num_outputs)
    weight, bias, chosen = _fit(features, labels, t.num_outputs, t.recipe.train.seed, mix)
    _set_head(t, weight, bias, features[: min(len(features), 8)])
    logits = features @ weight.T + bias
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = float(-log_probs[np.arange(len(labels)), labels].mean())
    accuracy = float((logits.argmax(axis=1) == labels).mean())
    return {"loss": loss, "accuracy": accuracy, "C": chosen, "lr": 0.0}


def _fit(
    features: np.ndarray,
    labels: np.ndarray,
    classes: int,
    seed: int,
    mix: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """``(weight (classes, F), bias (classes,), C)`` of the softmax model on raw features;
    with ``mix`` (each class's weight, :func:`~tlcore.train.balance.loss_mix`) scikit-learn's
    ``class_weight`` takes it, and ``C`` is chosen by balanced accuracy."""
    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold, cross_validate
    except ImportError:
        raise TlcoreError(
            "a logistic stage needs scikit-learn, which is not installed",
            "pip install scikit-learn (it is in tlcore[all])",
        ) from None
    present = np.unique(labels)
    if len(present) != classes:
        raise TlcoreError(
            f"logistic regression needs training samples of every class; "
            f"{classes - len(present)} of {classes} classes have none",
            "give every class training samples, or use a gradient-trained head",
        )
    weights = None if mix is None else {c: float(mix[c]) for c in range(classes)}
    mean, std = features.mean(axis=0), features.std(axis=0)
    std[std < 1e-12] = 1.0
    scaled = (features - mean) / std
    folds = min(MAX_FOLDS, int(np.bincount(labels).min()))
    chosen = 1.0
    if folds >= 2:
        split = StratifiedKFold(folds, shuffle=True, random_state=seed)
        # Accuracy first, ties broken by the log loss: on a few dozen samples most C tie on
        # accuracy, and the first of them (the strongest regularisation) gave logits near 0.
        scores = []
        metric = "accuracy" if weights is None else "balanced_accuracy"
        for c in C_GRID:
            done = cross_validate(
                LogisticRegression(C=c, max_iter=2000, class_weight=weights), scaled, labels,
                cv=split, scoring=(metric, "neg_log_loss"),
            )
            scores.append((round(float(done[f"test_{metric}"].mean()), 9),
                           float(done["test_neg_log_loss"].mean())))
        chosen = C_GRID[max(range(len(C_GRID)), key=scores.__getitem__)]
    model = LogisticRegression(C=chosen, max_iter=2000, class_weight=weights)
    model.fit(scaled, labels)
    coef, intercept = model.coef_, model.intercept_
    if classes == 2:  # one binary logit z: softmax(-z/2, z/2) is sigmoid(z)
        coef = np.concatenate([-coef / 2, coef / 2])
        intercept = np.concatenate([-intercept / 2, intercept / 2])
    weight = coef / std
    bias = intercept - weight @ mean
    return weight, bias, chosen


def _set_head(t: Trainer, weight: np.ndarray, bias: np.ndarray, sample: np.ndarray) -> None:
    """Write ``weight`` and ``bias`` into the model's linear head, checked on ``sample``.

    The head is the two ``head``-named entries of the backend's weights (a matrix and a
    vector); its matrix may be stored transposed (Keras ``kernel`` is ``(F, classes)``), so
    the orientation is the one whose logits, through the backend's own ``tl_eval_step`` on
    features, match the fitted model's.

    Raises:
        TlcoreError: the weights hold no such head, or neither orientation matches.
    """
    weights = t.get_weights()
    head = [key for key in weights if key.split(".")[0].split("/")[0] == "head"]
    matrices = [k for k in head if weights[k].ndim == 2]
    vectors = [k for k in head if weights[k].ndim == 1]
    if len(matrices) != 1 or len(vectors) != 1:
        raise TlcoreError(
            f"the {t.backend} model's head is not one linear layer (its weights: "
            f"{', '.join(head) or 'none named head'})",
            "use a gradient-trained head for this backend",
        )
    expected = sample @ weight.T + bias
    for matrix in (weight, weight.T):
        if matrix.shape != weights[matrices[0]].shape:
            continue
        dtype = weights[matrices[0]].dtype
        trial: dict[str, Any] = {**weights, matrices[0]: matrix.astype(dtype),
                                 vectors[0]: bias.astype(weights[vectors[0]].dtype)}
        t.set_weights(trial)
        batch = Batch(sample.astype(np.float32), np.zeros(len(sample), np.int64), features=True)
        got = np.asarray(t.calls.eval_step(t.model, batch), dtype=np.float64)
        if np.allclose(got, expected, rtol=1e-3, atol=1e-3 * (1 + np.abs(expected).max())):
            return
    t.set_weights(weights)
    raise TlcoreError(
        f"the fitted logistic regression could not be written into the {t.backend} head",
        "use a gradient-trained head for this backend, and report it",
    )
