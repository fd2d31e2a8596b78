"""A tlcore plugin: every run's metrics, one JSON object per line, in ``RUN/metrics.jsonl``."""

import json
import time
from pathlib import Path

import tlcore
from tlcore.interfaces import RunInfo

FILE_NAME = "metrics.jsonl"


def write_event(run: RunInfo, event: str, **fields: object) -> None:
    """Append one line to the run's ``metrics.jsonl``."""
    line = {"time": round(time.time(), 3), "event": event, "backend": run.backend, **fields}
    with open(Path(run.path) / FILE_NAME, "a", encoding="utf-8") as file:
        file.write(json.dumps(line, default=str) + "\n")


@tlcore.hookimpl
def tl_on_epoch_end(run: RunInfo, stage: str, epoch: int, metrics: dict[str, float]) -> None:
    """One line per epoch, with its training and validation metrics."""
    write_event(run, "epoch", stage=stage, epoch=epoch, **metrics)


@tlcore.hookimpl
def tl_on_stage_end(run: RunInfo, stage: str, metrics: dict[str, float]) -> None:
    """One line per stage, with the metrics of the epoch the stage kept."""
    write_event(run, "stage", stage=stage, **metrics)


@tlcore.hookimpl
def tl_on_export(run: RunInfo, fmt: str, path: Path) -> None:
    """One line per exported file."""
    write_event(run, "export", format=fmt, file=str(path))
