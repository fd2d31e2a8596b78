"""Training steps: the loss goes down, each loss is the textbook one, seeds repeat."""

from __future__ import annotations

import numpy as np
import pytest

from tlcore.testing.backend import BackendUnderTest, head_part
from tlcore.testing.data import images, separable
from tlcore.testing.marks import SUITE_MARKS, hooks
from tlcore.testing.reference import binary_cross_entropy, cross_entropy, mean_squared_error

pytestmark = SUITE_MARKS


@hooks("tl_seed", "tl_make_optimizer", "tl_train_step", "tl_eval_step")
def test_training_steps_reduce_the_loss(tl_backend: BackendUnderTest) -> None:
    tl_backend.seed(0)
    model = tl_backend.build(num_classes=2)
    tl_backend.freeze(model, policy="none")
    x, y = separable(32)
    before = cross_entropy(tl_backend.logits(model, x), y)
    optimizer = tl_backend.optimizer(model, optimizer="adamw", lr=1e-2)
    results = [tl_backend.step(model, optimizer, x, y, smoothing=0.1) for _ in range(8)]
    # ``applied`` and ``grad_norm``: what a step says of train.accumulate and train.clip_norm
    known = {"loss", "outputs", "accuracy", "applied", "grad_norm"}
    assert all(set(r) <= known and "loss" in r for r in results)
    assert all(type(r["loss"]) is float for r in results)
    for r in results:  # the batch's logits before the update, for the core's metrics
        if "outputs" in r:
            assert r["outputs"].dtype == np.float32 and r["outputs"].shape == (32, 2)
    out = tl_backend.logits(model, x)
    assert out.dtype == np.float32 and out.shape == (32, 2)
    assert cross_entropy(out, y) < before / 2
    assert (out.argmax(1) == y).mean() == 1.0


@hooks("tl_train_step", "tl_extract_features")
def test_label_smoothing_matches_the_definition(tl_backend: BackendUnderTest) -> None:
    """Loss = (1 - s) * NLL + s * mean over classes of -log p, on the batch before the step."""
    model = tl_backend.build(num_classes=3)
    tl_backend.freeze(model, policy="all")
    feats = tl_backend.features(model, images(6))
    y = np.array([0, 1, 2, 0, 1, 2])
    expected = cross_entropy(tl_backend.logits(model, feats, features=True), y, smoothing=0.2)
    optimizer = tl_backend.optimizer(model)
    result = tl_backend.step(model, optimizer, feats, y, features=True, smoothing=0.2, lr=0.0)
    assert result["loss"] == pytest.approx(expected, rel=1e-5)


@hooks("tl_train_step", "tl_eval_step")
@pytest.mark.parametrize("loss", ["binary_cross_entropy", "mse"])
def test_multilabel_and_regression_losses_match_the_definition(
    tl_backend: BackendUnderTest, loss: str
) -> None:
    """``binary_cross_entropy`` (multi-hot float targets) and ``mse`` (float targets) by name,
    on the batch before the step; the outputs returned are that batch's logits."""
    model = tl_backend.build(num_classes=3)
    tl_backend.freeze(model, policy="none")
    x = images(6)
    rng = np.random.default_rng(1)
    if loss == "mse":
        y = rng.normal(size=(6, 3)).astype(np.float32)
        reference = mean_squared_error
    else:
        y = (rng.random((6, 3)) > 0.5).astype(np.float32)
        reference = binary_cross_entropy
    expected = reference(tl_backend.logits(model, x), y)
    optimizer = tl_backend.optimizer(model)
    result = tl_backend.step(model, optimizer, x, y, lr=0.0, loss=loss)
    assert result["loss"] == pytest.approx(expected, rel=1e-4)
    if "outputs" in result:
        np.testing.assert_allclose(result["outputs"], tl_backend.logits(model, x), atol=1e-4)


@hooks("tl_seed", "tl_attach_head", "tl_train_step", "tl_eval_step")
def test_a_head_with_one_output_trains_a_regression(tl_backend: BackendUnderTest) -> None:
    tl_backend.seed(0)
    model = tl_backend.build(num_classes=1)
    tl_backend.freeze(model, policy="none")
    x, labels = separable(32)
    y = labels.astype(np.float32).reshape(-1, 1)
    assert tl_backend.logits(model, x).shape == (32, 1)
    before = mean_squared_error(tl_backend.logits(model, x), y)
    optimizer = tl_backend.optimizer(model, optimizer="adamw", lr=1e-2)
    for _ in range(30):
        tl_backend.step(model, optimizer, x, y, loss="mse")
    # Better than halving the start, and than predicting the mean (0.25 on balanced 0/1).
    assert mean_squared_error(tl_backend.logits(model, x), y) < min(before / 2, 0.2)


@hooks("tl_seed", "tl_attach_head")
def test_seed_makes_initialisation_repeatable(tl_backend: BackendUnderTest) -> None:
    def head_weights(seed: int) -> dict[str, np.ndarray]:
        tl_backend.seed(seed)
        return head_part(tl_backend.weights(tl_backend.build()))

    first = head_weights(7)
    assert first, "no head weights: name them head<separator>..."
    again, other = head_weights(7), head_weights(8)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not all(np.array_equal(first[k], other[k]) for k in first)
