"""Training steps: the loss goes down, label smoothing is the textbook one, seeds repeat."""

from __future__ import annotations

import numpy as np
import pytest

from tlcore.testing.backend import BackendUnderTest, head_part
from tlcore.testing.data import images, separable
from tlcore.testing.marks import SUITE_MARKS, hooks
from tlcore.testing.reference import cross_entropy

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
    assert all(set(r) == {"loss", "accuracy"} for r in results)
    assert all(type(v) is float for r in results for v in r.values())
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
