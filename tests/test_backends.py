"""Both built-in backends side by side. What each backend must do on its own is the
conformance suite (``tests/test_conformance.py``, from :mod:`tlcore.testing.suite`)."""

from __future__ import annotations

import json

import pytest

from tlcore.plugins import backends

BACKENDS = ("torch", "keras")


def test_demo_recipe_reaches_the_same_accuracy_on_both_backends(demo_run):
    """``tl demo``, then ``tl train --recipe recipe.yaml`` with each backend: both learn the
    digits, and to within five points of each other."""
    for name in BACKENDS:
        for package in backends()[name].packages:
            pytest.importorskip(package)
    accuracy = {
        name: json.loads((demo_run(name) / "tlcore.json").read_text())["metrics"]["val_accuracy"]
        for name in BACKENDS
    }
    assert all(a >= 0.85 for a in accuracy.values()), accuracy
    assert abs(accuracy["torch"] - accuracy["keras"]) <= 0.05, accuracy
