"""Class imbalance: class weights in the loss (``train.class_weights``), the balanced sampler
(``train.sampler``), the metrics that see imbalance and ``monitor: auto`` choosing the
balanced accuracy; and the cross-entropy of both backends on class indices and on class
probabilities (mixed targets), each against torch's own ``F.cross_entropy``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score
from sklearn.utils.class_weight import compute_class_weight
from torch.nn import functional as F

import tlcore
from tlcore.errors import RecipeError
from tlcore.interfaces import Batch, InputSpec, StepState, VectorPreprocessing
from tlcore.metrics import balanced_accuracy, confusion_matrix, f1_macro, per_class_recall
from tlcore.plugins import plugin_registered
from tlcore.recipe import build_recipe
from tlcore.report.evaluate import evaluate_run
from tlcore.runfolder import read_arrays
from tlcore.tasks import get_task
from tlcore.testing import BackendUnderTest
from tlcore.train.balance import auto_monitor, balanced_order, class_weights, imbalance
from tlcore.train.start import check_task

torch.set_num_threads(2)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

CLASSES = 4
WEIGHTS = (0.5, 2.0, 1.0, 3.0)


def torch_loss(logits, targets, weights, smoothing) -> float:
    """torch's own weighted, smoothed cross-entropy: the definition both backends follow."""
    w = None if weights is None else torch.tensor(weights, dtype=torch.float32)
    t = torch.tensor(np.array(targets))
    return float(F.cross_entropy(torch.tensor(np.array(logits)), t, weight=w,
                                 label_smoothing=smoothing))


def targets_of(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Class indices, or class probabilities as mixup makes them (two one-hots mixed)."""
    if kind == "indices":
        return rng.integers(0, CLASSES, n).astype(np.int64)
    lam = rng.uniform(0.1, 0.9, (n, 1))
    a, b = np.eye(CLASSES)[rng.integers(0, CLASSES, (2, n))]
    return (lam * a + (1 - lam) * b).astype(np.float32)


CASES = [
    (kind, weights, smoothing)
    for kind in ("indices", "probabilities")
    for weights in (None, WEIGHTS)
    for smoothing in (0.0, 0.2)
]


@pytest.mark.parametrize(("kind", "weights", "smoothing"), CASES)
def test_the_keras_loss_is_torch_cross_entropy(kind, weights, smoothing):
    tf = pytest.importorskip("tensorflow")
    pytest.importorskip("keras")
    from tlcore_keras.losses import smoothed_cross_entropy

    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (24, CLASSES)).astype(np.float32)
    y = targets_of(kind, 24, rng)
    labels = tf.constant(y.astype(np.int32) if kind == "indices" else y)
    ours = float(smoothed_cross_entropy(tf.constant(logits), labels, smoothing, weights))
    assert ours == pytest.approx(torch_loss(logits, y, weights, smoothing), rel=1e-5)


def test_the_weighted_mean_differs_from_the_plain_mean():
    """The case where a careless weighting (a plain mean of weighted terms) would pass."""
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 3, (16, CLASSES)).astype(np.float32)
    y = rng.integers(0, CLASSES, 16).astype(np.int64)
    weighted = torch_loss(logits, y, WEIGHTS, 0.1)
    per_example = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(y),
                                  reduction="none", label_smoothing=0.1).numpy()
    w = np.asarray(WEIGHTS)[y]
    assert weighted != pytest.approx(float((w * per_example).mean()), rel=1e-3)


# --- the backends' train steps --------------------------------------------------------------


def vector_model(backend: BackendUnderTest, x: np.ndarray):
    backbone = backend.load(source="builtin:mlp", input_features=x.shape[1], widths=(8,))
    backbone.inputs = InputSpec.vector(VectorPreprocessing.of(x))
    model = backend.attach(backbone, CLASSES)
    backend.freeze(model, policy="none", batchnorm="follow")
    return model


@pytest.mark.parametrize("name", ["torch", "keras"])
def test_train_steps_take_indices_and_probabilities_with_weights(name):
    if name == "keras":
        pytest.importorskip("keras")
    backend = BackendUnderTest(name)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(20, 5)).astype(np.float32)
    model = vector_model(backend, x)
    optimizer = backend.optimizer(model, optimizer="sgd", lr=0.1)
    for kind, weights in [("probabilities", WEIGHTS), ("indices", WEIGHTS),
                          ("probabilities", None), ("indices", None)]:
        y = targets_of(kind, len(x), rng)
        state = StepState(optimizer, 0.1, 0.1, loss="cross_entropy", class_weights=weights)
        result = backend.calls.train_step(model, Batch(x, y), state)
        # The loss of the logits before the update, as torch defines it.
        expected = torch_loss(result["outputs"], y, weights, 0.1)
        assert result["loss"] == pytest.approx(expected, rel=1e-5), (kind, weights)


# --- class weights and the sampler ----------------------------------------------------------


def test_balanced_weights_are_scikit_learns():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 7 + [3] * 1)
    names = ["a", "b", "c", "d"]
    expected = compute_class_weight("balanced", classes=np.arange(4), y=labels)
    np.testing.assert_allclose(class_weights("balanced", labels, names), expected, rtol=1e-12)
    assert class_weights("none", labels, names) is None
    given = {"d": 4.0, "a": 1.0, "b": 2.0, "c": 0.5}
    assert class_weights(given, labels, names) == (1.0, 2.0, 0.5, 4.0)  # in class order


def test_a_mapping_must_name_every_class_and_no_other():
    labels = np.array([0, 1, 2])
    with pytest.raises(RecipeError, match=r"train\.class_weights.*no weight for c"):
        class_weights({"a": 1.0, "b": 2.0}, labels, ["a", "b", "c"])
    with pytest.raises(RecipeError, match="unknown classes z"):
        class_weights({"a": 1.0, "b": 2.0, "c": 1.0, "z": 1.0}, labels, ["a", "b", "c"])


@pytest.mark.parametrize(("value", "says"), [
    ("balancd", "did you mean 'balanced'"),
    ({"cat": float("nan")}, "train.class_weights.cat.*finite"),
    ({"cat": float("inf")}, "train.class_weights.cat.*finite"),
    ({"cat": 0}, "train.class_weights.cat.*> 0"),
    ({"cat": -1.0}, "train.class_weights.cat.*> 0"),
    ({}, "train.class_weights"),
    (2.0, "train.class_weights"),
])
def test_bad_class_weights_are_refused_with_the_field(value, says):
    with pytest.raises(RecipeError, match=says):
        build_recipe(class_weights=value)


def test_class_weights_and_sampler_are_recipe_fields():
    recipe = build_recipe(class_weights={"cat": 2, "dog": "0.5"}, sampler="balanced")
    assert recipe.train.class_weights == {"cat": 2.0, "dog": 0.5}
    assert recipe.train.sampler == "balanced"
    again = build_recipe(recipe.to_dict())  # as run.json records it, for a resume
    assert again.train.class_weights == {"cat": 2.0, "dog": 0.5}
    with pytest.raises(RecipeError, match=r"train\.sampler.*shuffle, balanced"):
        build_recipe(sampler="oversample")


def test_class_weights_are_for_classification_only():
    """Refused with the recipe's task, before any data is read (:func:`check_task`)."""
    recipe = build_recipe(task="multilabel", class_weights="balanced")
    with pytest.raises(RecipeError, match=r"train\.class_weights.*task multilabel"):
        check_task(get_task("multilabel"), recipe)
    recipe = build_recipe(task="regression", sampler="balanced")
    with pytest.raises(RecipeError, match=r"train\.sampler.*task regression"):
        check_task(get_task("regression"), recipe)
    check_task(get_task("classification"), build_recipe(class_weights={"a": 1}, sampler="balanced"))


def test_the_balanced_sampler_draws_every_class_equally_and_is_seeded():
    labels = np.array([0] * 900 + [1] * 90 + [2] * 10)
    first = balanced_order(np.random.default_rng(7), labels, 3)
    again = balanced_order(np.random.default_rng(7), labels, 3)
    np.testing.assert_array_equal(first, again)  # the same seed, the same order (a resume)
    assert len(first) == len(labels)
    shares = np.bincount(labels[first], minlength=3) / len(first)
    # Each class a third of the draws: 1000 draws, binomial std 0.015; 4 std of slack.
    np.testing.assert_allclose(shares, 1 / 3, atol=0.06)
    other = balanced_order(np.random.default_rng(8), labels, 3)
    assert not np.array_equal(first, other)


def test_a_class_without_examples_is_never_drawn():
    labels = np.array([0, 0, 0, 2])
    order = balanced_order(np.random.default_rng(0), labels, 3)
    assert set(labels[order]) <= {0, 2}
    assert class_weights("balanced", labels, ["a", "b", "c"])[1] == 1.0


# --- metrics -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_metrics_are_scikit_learns(seed):
    rng = np.random.default_rng(seed)
    targets = rng.choice(5, 60, p=[0.6, 0.2, 0.1, 0.1, 0.0])  # class 4 never occurs
    logits = rng.normal(size=(60, 5)) + 2.0 * np.eye(5)[targets] * rng.uniform(0, 1, (60, 1))
    predicted = logits.argmax(1)
    found = get_task("classification").metrics(logits, targets, {})
    assert found["balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(targets, predicted), abs=1e-12)
    assert found["f1_macro"] == pytest.approx(
        f1_score(targets, predicted, average="macro", zero_division=0), abs=1e-12)
    confusion = confusion_matrix(targets, predicted, 5)
    np.testing.assert_allclose(
        per_class_recall(confusion),
        recall_score(targets, predicted, average=None, labels=range(5), zero_division=0),
    )
    assert balanced_accuracy(confusion) == found["balanced_accuracy"]
    assert f1_macro(confusion) == found["f1_macro"]
    by_class = get_task("classification").recall_by_class(logits, targets, list("abcde"))
    assert by_class["e"] is None  # no example of class 4: no recall to speak of
    assert [by_class[c] for c in "abcd"] == pytest.approx(
        list(recall_score(targets, predicted, average=None, labels=range(4), zero_division=0)))
    report = get_task("classification").report(logits, targets, list("abcde"), {})
    assert report["balanced_accuracy"] == found["balanced_accuracy"]
    assert [report["per_class"][c]["recall"] for c in "abcde"] == pytest.approx(
        list(per_class_recall(confusion)))


def test_auto_monitor_watches_balanced_accuracy_on_imbalanced_data():
    task = get_task("classification")
    assert imbalance(np.array([0, 0, 0, 1, 1]), 2) == 1.5
    assert auto_monitor(task, np.array([0, 0, 0, 1, 1]), 2)[0] == "val_balanced_accuracy"
    assert auto_monitor(task, np.array([0, 0, 0, 1, 1, 1, 1]), 2)[0] is None  # 4 / 3 < 1.5
    assert auto_monitor(get_task("regression"), np.zeros(4), 1) == (None, "")


def test_imbalanced_data_gets_the_hint_to_balance_unless_something_balances():
    from tlcore.recipe import build_recipe
    from tlcore.train.balance import plan_balance

    task, names = get_task("classification"), ["a", "b"]
    hint = "--set train.sampler=balanced"
    assert hint in plan_balance(build_recipe(), task, np.array([0, 0, 0, 1, 1]), names)[2]
    assert hint not in plan_balance(build_recipe(), task, np.array([0, 0, 1, 1]), names)[2]
    for shortcut in ({"sampler": "balanced"}, {"class_weights": "balanced"}):
        said = plan_balance(build_recipe(**shortcut), task, np.array([0, 0, 0, 1, 1]), names)[2]
        assert hint not in said and "monitor auto watches" in said


# --- through tlcore.fit --------------------------------------------------------------------


def imbalanced_vectors(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three classes of 40, 12 and 6 vectors, apart along the first two features."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1, 2], [40, 12, 6])
    x = rng.normal(size=(len(y), 4)).astype(np.float32)
    x[:, 0] += 2.0 * (y == 1)
    x[:, 1] += 2.0 * (y == 2)
    return x, y


def fit_imbalanced(tmp_path, name: str, backend: str = "torch", **kwargs):
    return tlcore.fit(
        imbalanced_vectors(), backend=backend, backbone="builtin:mlp", out=tmp_path / name,
        recipe={"backbone": {"widths": [8]}, "train": {"batch_size": 16, "stages": [
            {"name": "all", "epochs": 3, "lr": 0.01, "freeze": {"policy": "none"}}]},
            "export": {"formats": ["native"]}},
        val_split=0.25, quiet=False, **kwargs,
    )


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_fit_with_class_weights_and_the_balanced_sampler(tmp_path, capsys, backend):
    if backend == "keras":
        pytest.importorskip("keras")
    result = fit_imbalanced(tmp_path, "run", backend, class_weights="balanced",
                            sampler="balanced")
    err = capsys.readouterr().err
    assert "monitor auto watches val_balanced_accuracy" in err
    info = json.loads((result.path / "tlcore.json").read_text())
    recipe = info["recipe"]["train"]
    assert (recipe["class_weights"], recipe["sampler"]) == ("balanced", "balanced")
    # Each class's validation recall, by name; their mean is the balanced accuracy.
    recall = info["recall_by_class"]
    assert sorted(recall) == list(result.class_names)
    present = [value for value in recall.values() if value is not None]
    assert present and all(0.0 <= value <= 1.0 for value in present)
    assert np.mean(present) == pytest.approx(info["metrics"]["val_balanced_accuracy"])
    row = result.history[-1]
    for key in ("balanced_accuracy", "f1_macro", "val_balanced_accuracy", "val_f1_macro"):
        assert 0.0 <= row[key] <= 1.0
    # The same seed draws the same balanced order and weights: the same run again.
    again = fit_imbalanced(tmp_path, "again", backend, class_weights="balanced",
                           sampler="balanced")
    assert [r["loss"] for r in again.history] == [r["loss"] for r in result.history]
    # And a plain run differs (the loss is weighted, the order another).
    plain = fit_imbalanced(tmp_path, "plain", backend)
    assert [r["loss"] for r in plain.history] != [r["loss"] for r in result.history]


class Stopper:
    """Interrupts a run like Ctrl-C after its second checkpoint."""

    def __init__(self) -> None:
        self.seen = 0

    @tlcore.hookimpl
    def tl_on_checkpoint(self, run: object, path: object) -> None:
        self.seen += 1
        if self.seen == 2:
            raise KeyboardInterrupt


def test_a_balanced_run_resumes_exactly(tmp_path):
    """The sampler's order and the weights come from the seed and the training labels: a run
    stopped after its second epoch and resumed ends with the uninterrupted run's weights."""
    settings = {"class_weights": "balanced", "sampler": "balanced"}
    whole = fit_imbalanced(tmp_path, "whole", **settings)
    with plugin_registered(Stopper(), "stopper"), pytest.raises(KeyboardInterrupt):
        fit_imbalanced(tmp_path, "cut", **settings)
    resumed = tlcore.fit(imbalanced_vectors(), out=tmp_path / "cut", resume=True)
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in whole.history]
    final = read_arrays(whole.path / "native" / "weights.npz")
    again = read_arrays(resumed.path / "native" / "weights.npz")
    for name, value in final.items():
        np.testing.assert_array_equal(again[name], value, err_msg=name)


def test_a_mapping_that_misses_a_class_fails_before_training(tmp_path):
    with pytest.raises(RecipeError, match="no weight for 2"):
        fit_imbalanced(tmp_path, "run", class_weights={"0": 1.0, "1": 2.0})


def test_eval_report_holds_the_imbalance_metrics(tmp_path):
    x, y = imbalanced_vectors(1)
    result = fit_imbalanced(tmp_path, "run", class_weights={"0": 1.0, "1": 3.0, "2": 6.0})
    np.savez(tmp_path / "test.npz", x=x, y=y)
    report = evaluate_run(result.path, tmp_path / "test.npz", native=True)
    recalls = [report["per_class"][c]["recall"] for c in ("0", "1", "2")]
    assert report["balanced_accuracy"] == pytest.approx(np.mean(recalls), abs=1e-12)
    f1s = [report["per_class"][c]["f1"] for c in ("0", "1", "2")]
    assert report["f1_macro"] == pytest.approx(np.mean(f1s), abs=1e-12)
    assert "balanced accuracy" in get_task("classification").format_report(report)


def test_never_moved_measures_guessing_on_the_class_mix_the_loss_saw():
    """Balanced weights or the balanced sampler make guessing cost ln K, not the entropy of the
    imbalanced frequencies: a weighted loss that fell from ln 3 is learning, one at ln 3 is not."""
    from tlcore.diagnose import stalled_stage_warnings
    from tlcore.recipe import StageSpec
    from tlcore.tasks.classification import label_entropy
    from tlcore.train.balance import class_weights, loss_mix

    labels = np.repeat([0, 1, 2], [40, 12, 6])
    weights = class_weights("balanced", labels, ["a", "b", "c"])
    mixes = [loss_mix(weights, "shuffle", labels, 3), loss_mix(None, "balanced", labels, 3)]
    assert loss_mix(None, "shuffle", labels, 3) is None
    for mix in mixes:
        assert label_entropy(labels, 3, 0.0, mix) == pytest.approx(np.log(3))
    assert label_entropy(labels, 3) < 0.9  # the plain frequencies' entropy
    head = [StageSpec(name="head")]
    learning = [{"stage": "head", "loss": loss} for loss in (1.10, 0.95)]
    dead = [{"stage": "head", "loss": loss} for loss in (1.11, 1.10, 1.099)]
    assert stalled_stage_warnings(learning, head, labels, 3)  # measured on the wrong mix
    for mix in mixes:
        assert not stalled_stage_warnings(learning, head, labels, 3, class_mix=mix)
        assert stalled_stage_warnings(dead, head, labels, 3, class_mix=mix)


def test_a_logistic_stage_weighs_the_classes_as_scikit_learns_class_weight():
    """The logistic head takes the class mix as ``class_weight``: the same model as
    scikit-learn's with those weights, and more of the rare classes recalled."""
    from sklearn.linear_model import LogisticRegression

    from tlcore.train.balance import class_weights, loss_mix
    from tlcore.train.logistic import _fit

    x, y = imbalanced_vectors()
    x = x + np.random.default_rng(1).normal(scale=1.5, size=x.shape).astype(np.float32)
    mix = loss_mix(class_weights("balanced", y, ["a", "b", "c"]), "shuffle", y, 3)
    weight, bias, chosen = _fit(x.astype(np.float64), y, 3, 0, mix)
    plain_weight, plain_bias, _ = _fit(x.astype(np.float64), y, 3, 0)
    mean, std = x.mean(axis=0), x.std(axis=0)
    theirs = LogisticRegression(C=chosen, max_iter=2000, class_weight=dict(enumerate(mix)))
    theirs.fit((x - mean) / std, y)
    np.testing.assert_allclose(x @ weight.T + bias, theirs.decision_function((x - mean) / std),
                               rtol=1e-4, atol=1e-4)
    recall = recall_score(y, (x @ weight.T + bias).argmax(1), average=None)
    plain = recall_score(y, (x @ plain_weight.T + plain_bias).argmax(1), average=None)
    assert recall[1:].mean() > plain[1:].mean()  # the rare classes
