"""The logger's hooks called directly, then a real run with the plugin installed."""

import json

import tlcore
import tlcore_jsonl_logger
from tlcore.interfaces import RunInfo
from tlcore.plugins import plugin_table


def lines(folder):
    text = (folder / tlcore_jsonl_logger.FILE_NAME).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def test_each_event_appends_one_line(tmp_path):
    run = RunInfo(tmp_path, "torch", ("cat", "dog"), {})
    tlcore_jsonl_logger.tl_on_epoch_end(run, "head", 1, {"loss": 0.5, "val_accuracy": 0.75})
    tlcore_jsonl_logger.tl_on_stage_end(run, "head", {"val_accuracy": 0.75})
    tlcore_jsonl_logger.tl_on_export(run, "onnx", tmp_path / "model.onnx")
    first, stage, export = lines(tmp_path)
    assert first["event"] == "epoch" and first["epoch"] == 1 and first["val_accuracy"] == 0.75
    assert stage == {**stage, "event": "stage", "stage": "head", "backend": "torch"}
    assert export["format"] == "onnx" and export["file"].endswith("model.onnx")


def test_the_installed_entry_point_is_loaded():
    rows = {row["name"]: row for row in plugin_table()}
    hooks = ["tl_on_epoch_end", "tl_on_export", "tl_on_stage_end"]
    assert rows["jsonl_logger"]["hooks"] == hooks


def test_a_run_logs_every_epoch_stage_and_export(tl_image_folder, tmp_path):
    recipe = {
        "backbone": {"source": "builtin:simple_cnn", "weights": "none"},
        "train": {"stages": [{"name": "all", "epochs": 2, "freeze": {"policy": "none"}}]},
        "data": {"val_split": 0.2},  # few images: without it no validation set, no val_accuracy
    }
    tlcore.fit(tl_image_folder, recipe=recipe, out=tmp_path / "run")
    events = lines(tmp_path / "run")
    assert [e["event"] for e in events] == ["epoch", "epoch", "stage", "export", "export"]
    assert [e["epoch"] for e in events[:2]] == [1, 2]
    assert "val_accuracy" in events[1] and "val_accuracy" in events[2]
    assert [e["format"] for e in events[3:]] == ["native", "onnx"]
