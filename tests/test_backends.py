"""Both built-in backends side by side. What each backend must do on its own is the
conformance suite (``tests/test_conformance.py``, from :mod:`tlcore.testing.suite`)."""

from __future__ import annotations

import json

import pytest

from tlcore.plugins import backends

BACKENDS = ("torch", "keras")


def test_demo_recipe_reaches_the_same_accuracy_on_both_backends(demo_run):
    """``tl demo``, then ``tl train --recipe recipe.yaml`` with each backend: both learn the
    digits from 16 scans of each (the pretrained backbone's features do the work), and to
    within ten points of each other (40 validation images: one image is 2.5 points)."""
    for name in BACKENDS:
        for package in backends()[name].packages:
            pytest.importorskip(package)
    accuracy = {
        name: json.loads((demo_run(name) / "tlcore.json").read_text())["metrics"]["val_accuracy"]
        for name in BACKENDS
    }
    assert all(a >= 0.8 for a in accuracy.values()), accuracy
    assert abs(accuracy["torch"] - accuracy["keras"]) <= 0.1, accuracy


@pytest.mark.parametrize("name", BACKENDS)
def test_the_demo_shows_what_the_imagenet_weights_buy(demo_run, name):
    """The README's first command: ``--compare-random`` trains the same recipe from random
    weights and prints both; on 20 scans per digit the ImageNet weights win by far."""
    for package in backends()[name].packages:
        pytest.importorskip(package)
    ours = json.loads((demo_run(name) / "tlcore.json").read_text())["metrics"]["val_accuracy"]
    baseline = demo_run.root / f"run-{name}-random"
    theirs = json.loads((baseline / "tlcore.json").read_text())["metrics"]["val_accuracy"]
    assert ours - theirs >= 0.3, (ours, theirs)
    line = demo_run.stdout[name].splitlines()[-1]
    assert line.startswith("from random weights, same data and epochs: val_accuracy"), line
    assert f"add {(ours - theirs) * 100:.1f} points" in line, line
