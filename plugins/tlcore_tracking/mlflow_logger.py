"""The MLflow logger: one MLflow run per tlcore run, when ``MLFLOW_TRACKING_URI`` is set.

Off unless the variable names a tracking store (MLflow's own convention), so installing
``tlcore[mlflow]`` never writes an ``mlruns/`` folder by surprise. The experiment is
``MLFLOW_EXPERIMENT_ID``'s, else the one named ``MLFLOW_EXPERIMENT_NAME``, else ``tlcore``
(created when missing). What it logs:

- at the first epoch: a new run named after the run folder, tagged ``tlcore.run_path``,
  ``tlcore.backend``, ``tlcore.classes``, with the resolved recipe as parameters
  (``train.stages.0.lr``, ...);
- per epoch: every metric of ``history.json`` at the epoch's step across the run;
- per stage: the metrics of the epoch it kept, as ``best/STAGE/METRIC``; the end of the
  last stage marks the run ``FINISHED``;
- per export: ``model.onnx`` and ``tlcore.json`` as artifacts (``onnx``), the path written
  as the tag ``tlcore.export.FORMAT`` (every format); the run is then ``FINISHED``.

A resumed run, or ``tl export`` on a finished one, finds its MLflow run again by the
``tlcore.run_path`` tag (the latest such run).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import tlcore
from tlcore.interfaces import RunInfo
from tlcore_tracking.common import Guard, flat_recipe, is_last_stage, run_step

URI_VARIABLE = "MLFLOW_TRACKING_URI"
EXPERIMENT = "tlcore"
"""The experiment of runs when neither ``MLFLOW_EXPERIMENT_ID`` nor ``_NAME`` is set."""
PATH_TAG = "tlcore.run_path"
_BATCH = 100  # MLflow takes at most 100 parameters per log_batch call
_MAX_VALUE = 500  # parameter values are cut to this length (MLflow's own limit is higher)


class MlflowLogger:
    """The ``mlflow`` plugin: a client per tracking URI, an MLflow run per tlcore run."""

    def __init__(self) -> None:
        # (tracking URI, run folder) -> MLflow run id, in this process
        self.runs: dict[tuple[str, Path], str] = {}
        self.guard = Guard(
            "mlflow", f"check {URI_VARIABLE} and that the tracking store is reachable"
        )

    @tlcore.hookimpl
    def tl_on_epoch_end(
        self, run: RunInfo, stage: str, epoch: int, metrics: dict[str, float]
    ) -> None:
        """Log the epoch's metrics at its run-wide step; the first epoch starts the run."""
        if os.environ.get(URI_VARIABLE):
            self.guard(run, lambda: self._epoch(run, stage, epoch, metrics))

    @tlcore.hookimpl
    def tl_on_stage_end(self, run: RunInfo, stage: str, metrics: dict[str, float]) -> None:
        """Log the kept epoch's metrics; the last stage's end finishes the MLflow run."""
        if os.environ.get(URI_VARIABLE):
            self.guard(run, lambda: self._stage(run, stage, metrics))

    @tlcore.hookimpl
    def tl_on_export(self, run: RunInfo, fmt: str, path: Path) -> None:
        """Attach the bundle's files to the run."""
        if os.environ.get(URI_VARIABLE):
            self.guard(run, lambda: self._export(run, fmt, Path(path)))

    # --- the work, once MLflow is wanted ---

    def _epoch(self, run: RunInfo, stage: str, epoch: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        client = _client()
        step = run_step(run, stage, epoch)
        # The first epoch of a run always starts a new MLflow run, even in a folder path an
        # earlier (deleted) run used; later epochs continue the run, resumed or not.
        run_id = self._run_id(client, run, new=step == 1, reopen=True)
        now = _milliseconds()
        client.log_batch(
            run_id, metrics=[Metric(_key(k), float(v), now, step) for k, v in metrics.items()]
        )

    def _stage(self, run: RunInfo, stage: str, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        client = _client()
        run_id = self._run_id(client, run)
        now = _milliseconds()
        best = [Metric(_key(f"best/{stage}/{k}"), float(v), now, 0) for k, v in metrics.items()]
        if best:
            client.log_batch(run_id, metrics=best)
        if is_last_stage(run, stage):
            client.set_terminated(run_id, "FINISHED")

    def _export(self, run: RunInfo, fmt: str, path: Path) -> None:
        client = _client()
        run_id = self._run_id(client, run)
        client.set_tag(run_id, f"tlcore.export.{_key(fmt)}", str(path))
        if fmt == "onnx":
            client.log_artifact(run_id, str(path))
            info = Path(run.path) / "tlcore.json"
            if info.is_file():
                client.log_artifact(run_id, str(info))
        # Exports follow the end of training; ``tl export`` may have opened a new run.
        if client.get_run(run_id).info.status != "FINISHED":
            client.set_terminated(run_id, "FINISHED")

    def _run_id(self, client: Any, run: RunInfo, new: bool = False, reopen: bool = False) -> str:
        """The MLflow run of ``run``: this process's, else the latest tagged with its folder
        (marked running again when ``reopen``: a resumed run trains), else (or when ``new``)
        a new one."""
        folder = Path(run.path).resolve()
        key = (os.environ[URI_VARIABLE], folder)
        if not new and key in self.runs:
            return self.runs[key]
        experiment = _experiment(client)
        found = None if new else _latest(client, experiment, str(folder))
        if found is not None:
            if reopen and found.info.status != "RUNNING":
                client.update_run(found.info.run_id, status="RUNNING")
            run_id = found.info.run_id
        else:
            run_id = _start(client, experiment, run, folder)
        self.runs[key] = run_id
        return run_id


def _client() -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=os.environ[URI_VARIABLE])


def _experiment(client: Any) -> str:
    """The experiment's id: ``MLFLOW_EXPERIMENT_ID``, else ``MLFLOW_EXPERIMENT_NAME``'s or
    :data:`EXPERIMENT`'s, created when it does not exist."""
    if experiment_id := os.environ.get("MLFLOW_EXPERIMENT_ID"):
        return experiment_id
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found is not None else client.create_experiment(name)


def _latest(client: Any, experiment: str, path: str) -> Any:
    """The latest MLflow run tagged with the run folder ``path``, or ``None``."""
    if '"' in path:
        return None  # cannot be quoted in a filter: a new MLflow run instead
    runs = client.search_runs(
        [experiment],
        filter_string=f'tags.`{PATH_TAG}` = "{path}"',
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def _start(client: Any, experiment: str, run: RunInfo, path: Path) -> str:
    """A new MLflow run for ``run``, tagged and with the recipe as its parameters."""
    from mlflow.entities import Param

    tags = {
        "mlflow.runName": path.name,
        PATH_TAG: str(path),
        "tlcore.backend": run.backend,
        "tlcore.classes": ", ".join(run.class_names)[:_MAX_VALUE],
    }
    run_id = client.create_run(experiment, tags=tags).info.run_id
    params = [Param(_key(k), v[:_MAX_VALUE]) for k, v in flat_recipe(run.recipe).items()]
    for start in range(0, len(params), _BATCH):
        client.log_batch(run_id, params=params[start : start + _BATCH])
    return run_id


def _key(name: str) -> str:
    """``name`` as MLflow accepts a key: letters, digits and ``_-. /``; others become ``_``."""
    return re.sub(r"[^\w\-. /]", "_", name)


def _milliseconds() -> int:
    return int(time.time() * 1000)


plugin = MlflowLogger()
"""The instance the ``mlflow`` entry point registers."""
