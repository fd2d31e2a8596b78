"""The core driver on the backend: the default recipe end to end, and an exact resume."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest

import tlcore
from tlcore.runfolder import read_arrays
from tlcore.testing.backend import BackendUnderTest
from tlcore.testing.data import separable
from tlcore.testing.marks import SUITE_MARKS, hooks
from tlcore.testing.run import DefaultRuns

pytestmark = SUITE_MARKS


@hooks("tl_get_weights")
def test_default_recipe_trains_the_head_then_fine_tunes(
    tl_backend: BackendUnderTest, tl_default_run: DefaultRuns
) -> None:
    run = tl_default_run(tl_backend.name)
    history = run.result.history
    assert [r["stage"] for r in history] == ["head", "fine_tune"]
    assert history[1]["lr"] < history[0]["lr"]
    assert all(np.isfinite(r["loss"]) and 0 <= r["val_accuracy"] <= 1 for r in history)
    classes = sorted(p.name for p in tl_default_run.data.iterdir() if p.is_dir())
    assert run.info["labels"] == classes
    assert run.info["input"]["size"] == [32, 32] and run.info["input"]["dtype"] == "uint8"
    versions = run.info["framework_versions"]
    for package in tl_backend.info().packages:
        module = importlib.import_module(package)
        assert versions[package] == getattr(module, "__version__", versions[package]), package
    assert all(versions.values()), versions
    assert tl_backend.weights(run.result.model)  # the backend's own model comes back
    native = {p.name for p in (run.path / "native").iterdir()}
    assert "weights.npz" in native and len(native) >= 2, native  # and tl_export's native file
    with pytest.raises(tlcore.TlcoreError, match="already exists"):
        tlcore.fit(tl_default_run.data, recipe=tl_default_run.recipe(tl_backend.name), out=run.path)


class StopAfter:
    """An observer plugin that interrupts the run after its N-th checkpoint, like Ctrl-C."""

    def __init__(self, count: int) -> None:
        self.count = count

    @tlcore.hookimpl
    def tl_on_checkpoint(self, run: object, path: Path) -> None:
        self.count -= 1
        if self.count == 0:
            raise KeyboardInterrupt


@hooks("tl_on_checkpoint", "tl_get_optimizer_state", "tl_set_optimizer_state", "tl_seed")
def test_resume_ends_where_an_uninterrupted_run_ends(
    tl_backend: BackendUnderTest, tl_plugin, tmp_path
) -> None:
    """Interrupted in the middle (dropout in the head, a fine-tuned block), then resumed: the
    same losses, metrics and final weights as a run that was never interrupted."""
    x, y = separable(32)
    recipe = {
        "backend": tl_backend.name,
        "backbone": {"source": "builtin:simple_cnn", "weights": "none"},
        "head": {"hidden": [16], "dropout": 0.5},
        "train": {
            "batch_size": 16,
            "seed": 1,
            "stages": [
                {"name": "head", "epochs": 2, "lr": 3e-3, "freeze": {"policy": "all"}},
                {"name": "tune", "epochs": 2, "lr": 1e-3, "freeze": {"policy": "last_n", "n": 1}},
            ],
        },
        "data": {"val_split": 0.2},  # few images: the adaptive default would hold none out
        "export": {"formats": ["native"]},
    }
    whole = tlcore.fit((x, y), recipe=recipe, out=tmp_path / "whole")
    tl_plugin(StopAfter(3), "stopper")
    with pytest.raises(KeyboardInterrupt):
        tlcore.fit((x, y), recipe=recipe, out=tmp_path / "cut")
    assert not (tmp_path / "cut" / "native").exists()
    resumed = tlcore.fit((x, y), out=tmp_path / "cut", resume=True)
    assert [(r["stage"], r["epoch"]) for r in resumed.history] == [
        ("head", 1), ("head", 2), ("tune", 1), ("tune", 2),
    ]  # fmt: skip
    for key in ("loss", "val_loss", "val_accuracy"):
        assert [r[key] for r in resumed.history] == [r[key] for r in whole.history], key
    final = read_arrays(tmp_path / "whole" / "native" / "weights.npz")
    again = read_arrays(tmp_path / "cut" / "native" / "weights.npz")
    assert final.keys() == again.keys()
    for name, value in final.items():
        np.testing.assert_array_equal(again[name], value, err_msg=name)
