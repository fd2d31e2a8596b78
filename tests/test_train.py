"""The training driver on real data with the real PyTorch backend.

The default two-stage recipe, resuming and the ONNX bundle's parity are tested on every backend
in ``test_backends.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tlcore
from tlcore.plugins import plugin_registered
from tlcore.runfolder import read_arrays

SMALL = {
    "backbone": {"source": "builtin:simple_cnn", "weights": "none"},
    "train": {"batch_size": 32, "seed": 3},
    "data": {"val_split": 0.2},  # 40 images a class: the adaptive default would hold none out
}


def _stages(*stages):
    return {**SMALL, "train": {**SMALL["train"], "stages": list(stages)}}


def test_feature_cache_matches_the_uncached_path(small_digits, tmp_path):
    recipe = _stages({"name": "head", "epochs": 2, "lr": 3e-3, "freeze": {"policy": "all"}})
    cached = tlcore.fit(small_digits, recipe=recipe, out=tmp_path / "cached")
    plain = tlcore.fit(small_digits, recipe=recipe, out=tmp_path / "plain", cache_features=False)
    for a, b in zip(cached.history, plain.history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-5)
        assert a["val_accuracy"] == pytest.approx(b["val_accuracy"], abs=1e-9)
    wa = read_arrays(tmp_path / "cached" / "native" / "weights.npz")
    wb = read_arrays(tmp_path / "plain" / "native" / "weights.npz")
    assert wa.keys() == wb.keys()
    for key in wa:
        np.testing.assert_allclose(wa[key], wb[key], rtol=1e-4, atol=1e-5, err_msg=key)


def test_same_seed_same_run_other_seed_other_run(small_digits, tmp_path):
    recipe = _stages({"name": "all", "epochs": 1, "lr": 3e-3, "freeze": {"policy": "none"}})
    a = tlcore.fit(small_digits, recipe=recipe, out=tmp_path / "a")
    b = tlcore.fit(small_digits, recipe=recipe, out=tmp_path / "b")
    c = tlcore.fit(small_digits, recipe=recipe, out=tmp_path / "c", seed=4)
    assert a.history[0]["loss"] == b.history[0]["loss"]
    assert a.history[0]["loss"] != c.history[0]["loss"]


def test_restore_best_keeps_the_best_epoch(small_digits, tmp_path):
    recipe = _stages(
        {"name": "noisy", "epochs": 4, "lr": 0.3, "optimizer": "sgd", "schedule": "constant",
         "freeze": {"policy": "none"}, "restore_best": True}
    )
    result = tlcore.fit(small_digits, recipe=recipe, out=tmp_path / "run")
    best = max(row["val_accuracy"] for row in result.history)
    assert result.metrics["val_accuracy"] == pytest.approx(best)
    tied = [row["val_loss"] for row in result.history if row["val_accuracy"] == best]
    assert result.metrics["val_loss"] == pytest.approx(min(tied))  # ties go to the lower loss
    saved = json.loads((tmp_path / "run" / "history.json").read_text())
    assert saved == result.history


def test_a_tie_on_the_monitored_metric_goes_to_the_lower_validation_loss():
    from tlcore.train.epoch import improves

    first = {"val_accuracy": 0.9, "val_loss": 0.40}
    assert improves(0.9, first, None, {})
    assert improves(0.9, {"val_accuracy": 0.9, "val_loss": 0.20}, 0.9, first)
    assert not improves(0.9, {"val_accuracy": 0.9, "val_loss": 0.50}, 0.9, first)
    assert not improves(0.8, {"val_accuracy": 0.8, "val_loss": 0.01}, 0.9, first)
    assert improves(0.95, {"val_accuracy": 0.95, "val_loss": 0.90}, 0.9, first)
    assert not improves(0.9, {"val_accuracy": 0.9}, 0.9, first)  # nothing to break it with


def test_early_stopping_stops_the_stage(small_digits, tmp_path):
    recipe = _stages(
        {"name": "flat", "epochs": 6, "lr": 1e-9, "freeze": {"policy": "all"}, "patience": 2,
         "monitor": "val_loss"}
    )
    result = tlcore.fit(small_digits, recipe=recipe, out=tmp_path / "run")
    assert len(result.history) < 6


def test_weights_from_another_task_load_where_they_fit(tmp_path, capfd):
    """The seed recipe: a 10-class source net's state dict into a 2-class target."""
    import torch
    from torch import nn

    def net(outputs: int) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 32), nn.ReLU(),
                             nn.Linear(32, outputs))

    source = net(10)
    torch.save(source.state_dict(), tmp_path / "source.pt")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(40, 16, 16, 3), dtype=np.uint8)
    labels = np.array([0, 1] * 20)
    result = tlcore.fit(
        (images, labels), backbone=net(2), weights=str(tmp_path / "source.pt"), input_size=16,
        out=tmp_path / "run", quiet=False,
        recipe={"train": {"stages": [{"name": "head", "epochs": 1, "freeze": {"policy": "all"}}]}},
    )
    err = capfd.readouterr().err
    assert "re-initialised" in err and "3.weight" in err
    # The backbone stayed frozen: its first layer must be the source's, exactly.
    assert torch.equal(result.model.backbone[1].weight.detach(), source[1].weight.detach())


class CheckpointWatch:
    """Notes each checkpoint's files as it is written (inode and array names per file), and
    interrupts the run like Ctrl-C after checkpoint ``stop_after``."""

    def __init__(self, stop_after: int = 0) -> None:
        self.stop_after = stop_after
        self.seen: list[dict[str, tuple[int, set[str]]]] = []

    @tlcore.hookimpl
    def tl_on_checkpoint(self, run: object, path: Path) -> None:
        files = sorted(path.glob("*.npz"))
        self.seen.append({f.name: (f.stat().st_ino, set(read_arrays(f))) for f in files})
        if len(self.seen) == self.stop_after:
            raise KeyboardInterrupt


def test_frozen_backbone_checkpoints_share_its_weights_and_resume_exactly(small_digits, tmp_path):
    """While the backbone is frozen, a checkpoint writes only what trains (and the best of it)
    and links one file of frozen weights; a run stopped there resumes to the same weights."""
    recipe = _stages(
        {"name": "head", "epochs": 3, "lr": 3e-3, "freeze": {"policy": "all"},
         "restore_best": True},
        {"name": "all", "epochs": 1, "lr": 1e-3, "freeze": {"policy": "none"}},
    )
    watch = CheckpointWatch()
    with plugin_registered(watch, "checkpoint-watch"):
        tlcore.fit(small_digits, recipe=recipe, out=tmp_path / "whole")
    final = read_arrays(tmp_path / "whole" / "native" / "weights.npz")
    head = watch.seen[:3]
    inode, frozen = head[0]["frozen.npz"]
    trained = head[0]["weights.npz"][1]
    assert frozen and trained and not frozen & trained
    assert frozen | trained == set(final)
    assert len(trained) < len(frozen)  # the head, against the whole backbone
    for checkpoint in head:
        assert checkpoint["frozen.npz"] == (inode, frozen)  # linked, never written again
        assert checkpoint["weights.npz"][1] == checkpoint["best.npz"][1] == trained
    tuned = watch.seen[3]  # everything trains: the frozen file is not the head stage's
    assert tuned.get("frozen.npz", (None,))[0] != inode
    assert tuned["weights.npz"][1] | tuned.get("frozen.npz", (0, set()))[1] == set(final)

    with plugin_registered(CheckpointWatch(stop_after=2), "stopper"), pytest.raises(
        KeyboardInterrupt
    ):
        tlcore.fit(small_digits, recipe=recipe, out=tmp_path / "cut")
    tlcore.fit(small_digits, out=tmp_path / "cut", resume=True)
    again = read_arrays(tmp_path / "cut" / "native" / "weights.npz")
    assert again.keys() == final.keys()
    for name, value in final.items():
        np.testing.assert_array_equal(again[name], value, err_msg=name)


def test_the_logistic_head_breaks_accuracy_ties_by_log_loss():
    """Two well separated clusters: every C is right on every fold, and the weakest
    regularisation that still fits calibrates best; the strongest (C=0.001), first among the
    ties, left logits near zero."""
    from tlcore.train.logistic import C_GRID, _fit

    rng = np.random.default_rng(0)
    features = np.concatenate([rng.normal(-3, 1, (20, 4)), rng.normal(3, 1, (20, 4))])
    labels = np.repeat([0, 1], 20)
    weight, bias, chosen = _fit(features.astype(np.float32), labels, 2, seed=0)
    assert chosen > C_GRID[0]
    logits = features @ weight.T + bias
    assert (logits.argmax(1) == labels).all() and np.abs(logits).max() > 2


@pytest.mark.parametrize("total", [1, 3, 10, 37, 100])
@pytest.mark.parametrize("warmup", [0.0, 0.3, 0.45])
def test_onecycle_is_torchs_one_cycle_step_for_step(total, warmup):
    """The peak at OneCycleLR's step (not one later) and its floor, lr / 25 / 1e4, at the
    last step (not 4.95e-3 for lr 0.1 over 10 steps)."""
    import torch

    from tlcore.recipe import StageSpec
    from tlcore.schedule import learning_rate

    stage = StageSpec(lr=0.1, schedule="onecycle", warmup=warmup)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    torch_schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=0.1, total_steps=total, pct_start=max(warmup, 0.3),
        anneal_strategy="cos", cycle_momentum=False, div_factor=25, final_div_factor=1e4,
    )
    ours, theirs = [], []
    for step in range(total):
        ours.append(learning_rate(stage, step, total))
        theirs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if step < total - 1:  # OneCycleLR refuses a step past its total
            torch_schedule.step()
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=0)
