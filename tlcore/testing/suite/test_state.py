"""State: weights and optimiser state round-trip exactly, and what does not fit is an error."""

from __future__ import annotations

import numpy as np
import pytest

from tlcore.errors import TlcoreError
from tlcore.testing import simple_cnn as cnn
from tlcore.testing.backend import BackendUnderTest, changed
from tlcore.testing.data import separable
from tlcore.testing.marks import SUITE_MARKS, hooks

pytestmark = SUITE_MARKS


def assert_same(expected: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> None:
    """The same names, values and dtypes."""
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
        assert got[name].dtype == value.dtype, name


@hooks("tl_get_weights", "tl_set_weights")
def test_weights_round_trip_and_strictness(tl_backend: BackendUnderTest) -> None:
    tl_backend.seed(0)
    source = tl_backend.build(num_classes=3)
    fresh = tl_backend.weights(source)
    tl_backend.freeze(source, policy="none", batchnorm="train")
    tl_backend.step(source, tl_backend.optimizer(source), *separable(8))
    saved = tl_backend.weights(source)
    assert all(isinstance(v, np.ndarray) for v in saved.values())
    statistics = cnn.batchnorm(saved, 0)  # scale, shift, mean and variance all moved
    assert changed({n: fresh[n] for n in statistics}, saved) == set(statistics)
    copies = {k: v.copy() for k, v in saved.items()}
    tl_backend.step(source, tl_backend.optimizer(source), *separable(8))
    assert_same(copies, saved)  # what tl_get_weights returned is a copy, not a view

    target = tl_backend.build(num_classes=3)
    report = tl_backend.set_weights(target, saved, strict=True)
    assert len(report.loaded) == len(saved)
    assert_same(saved, tl_backend.weights(target))

    other = tl_backend.build(num_classes=5)
    classifier = {n for n, v in tl_backend.weights(other).items() if v.shape != saved[n].shape}
    assert len(classifier) == 2, classifier  # the classifier's kernel and bias
    with pytest.raises(TlcoreError) as info:
        tl_backend.set_weights(other, saved, strict=True)
    assert any(name in str(info.value) for name in classifier), "the error names the weight"
    report = tl_backend.set_weights(other, saved, strict=False)
    assert set(report.mismatched) == classifier
    assert len(report.loaded) == len(saved) - 2


@pytest.mark.parametrize("name", ["adamw", "sgd", "rmsprop"])
@hooks("tl_get_optimizer_state", "tl_set_optimizer_state", "tl_set_weights")
def test_optimizer_state_round_trip_repeats_the_next_step(
    tl_backend: BackendUnderTest, name: str
) -> None:
    """Resuming from saved weights and optimiser state takes exactly the step the original
    would have taken next."""
    x, y = separable(8)

    def fresh(seed: int):
        tl_backend.seed(seed)
        model = tl_backend.build(num_classes=2)
        tl_backend.freeze(model, policy="last_n", n=1)
        return model, tl_backend.optimizer(model, optimizer=name, lr=1e-2)

    model, optimizer = fresh(0)
    for _ in range(3):
        tl_backend.step(model, optimizer, x, y)
    saved = tl_backend.weights(model)
    state = tl_backend.optimizer_state(optimizer)
    assert state and all(isinstance(v, np.ndarray) for v in state.values())
    tl_backend.step(model, optimizer, x, y)
    expected = tl_backend.weights(model)

    resumed, resumed_optimizer = fresh(1)
    tl_backend.set_weights(resumed, saved, strict=True)
    assert tl_backend.set_optimizer_state(resumed_optimizer, state) is True
    tl_backend.step(resumed, resumed_optimizer, x, y)
    assert_same(expected, tl_backend.weights(resumed))


@hooks("tl_get_optimizer_state", "tl_set_optimizer_state")
def test_optimizer_state_that_does_not_fit(tl_backend: BackendUnderTest) -> None:
    """Another model's optimiser state is a clear error, not a silent partial resume."""
    x, y = separable(8)

    def stepped(num_classes: int):
        model = tl_backend.build(num_classes=num_classes)
        tl_backend.freeze(model, policy="all")
        optimizer = tl_backend.optimizer(model)
        tl_backend.step(model, optimizer, x, y)
        return optimizer

    optimizer = stepped(3)
    with pytest.raises(TlcoreError, match="no such entry"):
        tl_backend.set_optimizer_state(optimizer, {"no such entry": np.zeros(3)})
    with pytest.raises(TlcoreError, match="shape"):  # a 5-class head's state
        tl_backend.set_optimizer_state(optimizer, tl_backend.optimizer_state(stepped(5)))
