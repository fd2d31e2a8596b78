"""The loggers shipped with tlcore (``plugins/tlcore_tracking``), against the real libraries:
TensorBoard event files read back with TensorBoard's own reader, a local MLflow store read
back through ``MlflowClient``, both compared with the run's ``history.json``."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import types
import warnings
from pathlib import Path

import numpy as np
import pytest

import tlcore
from tlcore.plugins import get_manager, plugin_registered
from tlcore.testing import separable

pytest.importorskip("torch")
pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")

from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import (
    EventAccumulator,
)

from tlcore_tracking.common import TrackingWarning, flat_recipe

# TensorBoard reads event files through TensorFlow when it can import it (17 s here, and
# TensorFlow in a torch test's process); a module named tensorboard.compat.notf is its own
# switch to the reader it uses without TensorFlow, as in a tlcore[torch,tensorboard] install.
sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))

RECIPE = {
    "backend": "torch",
    "backbone": {"source": "builtin:simple_cnn", "weights": "none"},
    "train": {"batch_size": 16, "stages": [
        {"name": "head", "epochs": 2, "lr": 3e-3, "freeze": {"policy": "all"}},
        {"name": "tune", "epochs": 1, "lr": 1e-3, "freeze": {"policy": "none"}},
    ]},
    "data": {"val_split": 0.25},
    "export": {"formats": ["onnx"]},
}  # fmt: skip
NOT_METRICS = ("stage", "epoch", "seconds")


def _history(run: Path) -> list[dict]:
    return json.loads((run / "history.json").read_text())


def _metric_names(rows: list[dict]) -> set[str]:
    return {key for row in rows for key in row if key not in NOT_METRICS}


def _scalars(run: Path) -> EventAccumulator:
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return events


def _mlflow_env(monkeypatch: pytest.MonkeyPatch, store: Path) -> str:
    """Log into a local file store (MLflow 3 asks for MLFLOW_ALLOW_FILE_STORE to use one)."""
    uri = store.as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    for name in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    return uri


def _only_run(uri: str) -> object:
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tlcore")
    (run,) = client.search_runs([experiment.experiment_id])
    return run


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One tiny real run (two stages, an ONNX export) logged by both loggers; the run folder
    and the MLflow store's URI."""
    root = tmp_path_factory.mktemp("tracked")
    with pytest.MonkeyPatch.context() as monkeypatch:
        uri = _mlflow_env(monkeypatch, root / "mlruns")
        monkeypatch.chdir(root)
        with warnings.catch_warnings():
            warnings.simplefilter("error", TrackingWarning)  # no logger may fail here
            tlcore.fit(separable(32), recipe=RECIPE, out=root / "run")
    return root / "run", uri


def test_tensorboard_holds_every_epoch_of_history_json_and_the_recipe(tracked):
    run, _ = tracked
    rows = _history(run)
    assert [(r["stage"], r["epoch"]) for r in rows] == [("head", 1), ("head", 2), ("tune", 1)]
    events = _scalars(run)
    assert set(events.Tags()["scalars"]) == _metric_names(rows) >= {"loss", "lr", "val_loss"}
    for name in _metric_names(rows):
        written = [(e.step, e.value) for e in events.Scalars(name)]
        # TensorBoard keeps float32: the history's values, rounded the same way
        assert written == [(i, float(np.float32(r[name]))) for i, r in enumerate(rows, 1)], name
    text = EventAccumulator(str(run / "tensorboard"), size_guidance={"tensors": 0})
    text.Reload()
    (recipe,) = text.Tensors("recipe")
    markdown = recipe.tensor_proto.string_val[0].decode()
    header, _, body = markdown.partition("\n\n")
    assert header == "backend **torch**, classes: 0, 1"
    import yaml

    recorded = json.loads((run / "run.json").read_text())["recipe"]
    assert yaml.safe_load(textwrap.dedent(body)) == recorded


def test_mlflow_holds_the_recipe_every_epoch_the_bundle_and_the_status(tracked):
    run, uri = tracked
    rows = _history(run)
    logged = _only_run(uri)
    client = MlflowClient(tracking_uri=uri)
    assert logged.info.status == "FINISHED"
    assert logged.info.run_name == "run"
    assert logged.data.tags["tlcore.run_path"] == str(run.resolve())
    assert logged.data.tags["tlcore.backend"] == "torch"
    recipe = json.loads((run / "run.json").read_text())["recipe"]
    params = logged.data.params
    assert params == flat_recipe(recipe)
    assert (params["backend"], params["train.stages.0.lr"]) == ("torch", "0.003")
    assert (params["train.stages.1.name"], params["backbone.widths"]) == ("tune", "[]")
    for name in _metric_names(rows):
        history = client.get_metric_history(logged.info.run_id, name)
        assert [(m.step, m.value) for m in history] == [
            (i, r[name]) for i, r in enumerate(rows, 1)
        ], name
    head = [r for r in rows if r["stage"] == "head"]
    best = max(head, key=lambda r: (r["val_accuracy"], -r["val_loss"]))
    assert logged.data.metrics["best/head/val_accuracy"] == best["val_accuracy"]
    artifacts = {a.path for a in client.list_artifacts(logged.info.run_id)}
    assert artifacts == {"model.onnx", "tlcore.json"}
    assert logged.data.tags["tlcore.export.onnx"] == str(run / "model.onnx")
    copy = Path(client.download_artifacts(logged.info.run_id, "model.onnx", str(run.parent)))
    assert copy.read_bytes() == (run / "model.onnx").read_bytes()
    import onnxruntime as ort

    session = ort.InferenceSession(str(copy), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "images"


class _StopAt:
    """Stops a run like Ctrl-C after checkpoint ``n``."""

    def __init__(self, n: int) -> None:
        self.n, self.seen = n, 0

    @tlcore.hookimpl
    def tl_on_checkpoint(self, run: object, path: Path) -> None:
        self.seen += 1
        if self.seen == self.n:
            raise KeyboardInterrupt


def test_a_resumed_run_continues_the_same_curves(tl_image_folder, tmp_path, monkeypatch):
    """Stopped after its second epoch and resumed as by a new process (the loggers forget
    what they held): TensorBoard reads two event files as one curve, MLflow has one run,
    which a later ``tl export`` (another process again) completes with the bundle."""
    uri = _mlflow_env(monkeypatch, tmp_path / "mlruns")
    recipe = {**RECIPE, "export": {"formats": ["native"]}}
    with plugin_registered(_StopAt(2), "stopper"), pytest.raises(KeyboardInterrupt):
        tlcore.fit(tl_image_folder, recipe=recipe, out=tmp_path / "run")
    assert _only_run(uri).info.status == "RUNNING"
    for name, held in (("tensorboard", "files"), ("mlflow", "runs")):
        getattr(get_manager().get_plugin(name), held).clear()
    tlcore.fit(tl_image_folder, out=tmp_path / "run", resume=True)
    rows = _history(tmp_path / "run")
    assert len(rows) == 3
    assert len(list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))) == 2
    events = _scalars(tmp_path / "run")
    logged = _only_run(uri)
    assert logged.info.status == "FINISHED"
    client = MlflowClient(tracking_uri=uri)
    for name in _metric_names(rows):
        expected = [(i, r[name]) for i, r in enumerate(rows, 1)]
        assert [(e.step, e.value) for e in events.Scalars(name)] == [
            (i, float(np.float32(v))) for i, v in expected
        ], name
        history = client.get_metric_history(logged.info.run_id, name)
        assert [(m.step, m.value) for m in history] == expected, name
    assert not client.list_artifacts(logged.info.run_id)  # no ONNX export yet

    from tlcore.bundle.export import export_run

    get_manager().get_plugin("mlflow").runs.clear()
    export_run(tmp_path / "run")  # from the run's data folder, as `tl export` does
    again = _only_run(uri)
    assert (again.info.run_id, again.info.status) == (logged.info.run_id, "FINISHED")
    folder = Path(client.download_artifacts(logged.info.run_id, "", str(tmp_path / "got")))
    assert sorted(p.name for p in folder.iterdir()) == ["model.onnx", "tlcore.json"]
    for name in ("model.onnx", "tlcore.json"):
        assert (folder / name).read_bytes() == (tmp_path / "run" / name).read_bytes(), name


def test_a_failing_logger_warns_once_and_the_run_goes_on(tmp_path, monkeypatch):
    """MLflow 3 refuses a file store unless MLFLOW_ALLOW_FILE_STORE is set: the run trains,
    exports and says why nothing went to MLflow, once; TensorBoard still logs."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.warns(TrackingWarning) as caught:
        result = tlcore.fit(separable(32), recipe=RECIPE, out=tmp_path / "run")
    (warning,) = [w for w in caught if w.category is TrackingWarning]
    text = str(warning.message)
    assert text.startswith(f"mlflow: stopped logging {tmp_path / 'run'} after MlflowException")
    assert "MLFLOW_TRACKING_URI" in text and "the run goes on without it" in text
    assert (tmp_path / "run" / "model.onnx").is_file() and "val_accuracy" in result.metrics
    assert len(_scalars(tmp_path / "run").Scalars("loss")) == 3


def test_without_a_tracking_uri_mlflow_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    recipe = {**RECIPE, "train": {"batch_size": 16, "stages": [RECIPE["train"]["stages"][0]]},
              "export": {"formats": []}}  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrackingWarning)
        tlcore.fit(separable(32), recipe=recipe, out=tmp_path / "run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no mlruns/, no mlflow.db
    assert (tmp_path / "run" / "tensorboard").is_dir()


def test_tl_plugins_lists_the_loggers_and_loading_them_imports_neither_library():
    code = (
        "import json, sys\n"
        "from tlcore.plugins import plugin_table\n"
        "rows = {r['name']: r for r in plugin_table()}\n"
        "print(json.dumps({n: [rows[n]['package'], rows[n]['hooks'], rows[n]['error']]\n"
        "                  for n in ('tensorboard', 'mlflow')}))\n"
        "print(json.dumps([m for m in ('tensorboard', 'mlflow', 'torch', 'tensorflow')\n"
        "                  if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    listed, imported = (json.loads(line) for line in out.stdout.splitlines())
    assert listed == {
        "tensorboard": ["tlcore", ["tl_on_epoch_end"], None],
        "mlflow": ["tlcore", ["tl_on_epoch_end", "tl_on_export", "tl_on_stage_end"], None],
    }
    assert imported == []
