"""What both loggers share: the run-wide step of an epoch, the flattened recipe, and the guard
that keeps a failing logger from stopping a run."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tlcore.errors import reason
from tlcore.interfaces import RunInfo

HISTORY_FILE = "history.json"
RUN_FILE = "run.json"


class TrackingWarning(UserWarning):
    """A logger stopped logging a run (the run itself goes on)."""


class Guard:
    """Runs a logger's work for a run; the first failure warns once, with the cause and a fix,
    and turns the logger off for the rest of that run.

    A logger is an observer: a full disk, a tracking server that is down or a library of the
    wrong version must cost the run its charts, never its training. ``KeyboardInterrupt``
    still goes through (it is how a user stops a run).

    A run is its folder as its ``run.json`` was last written: a new run in the same folder
    (a new ``run.json``) gets the logger back; a new process starts afresh anyway.

    Args:
        name: the logger's name, as the warning shows it.
        hint: what to do about a failure.
    """

    def __init__(self, name: str, hint: str) -> None:
        self.name = name
        self.hint = hint
        self.stopped: set[tuple[Path, int | None]] = set()

    def __call__(self, run: RunInfo, work: Callable[[], None]) -> None:
        """Do ``work`` for ``run``, unless an earlier failure turned the logger off for it."""
        folder = Path(run.path)
        key = (folder, _written(folder / RUN_FILE))
        if key in self.stopped:
            return
        try:
            work()
        except Exception as exc:  # an observer never breaks the run it observes
            self.stopped.add(key)
            warnings.warn(
                f"{self.name}: stopped logging {folder} after {type(exc).__name__}: "
                f"{reason(exc)} "
                f"(the run goes on without it; {self.hint})",
                TrackingWarning,
                stacklevel=2,
            )


def _written(path: Path) -> int | None:
    """When ``path`` was last written (nanoseconds), ``None`` when it does not exist."""
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def run_step(run: RunInfo, stage: str, epoch: int) -> int:
    """The epoch's number across the whole run, from 1, over every stage: its row in the run's
    ``history.json``, which the trainer writes before it announces the epoch.

    Counting rows, not events, is what lets a resumed run (a new process) continue the same
    curve at the right step.

    Raises:
        LookupError: the epoch is not in ``history.json`` (not written by a tlcore run).
    """
    rows = json.loads((Path(run.path) / HISTORY_FILE).read_text(encoding="utf-8"))
    for index in range(len(rows) - 1, -1, -1):
        if rows[index].get("stage") == stage and rows[index].get("epoch") == epoch:
            return index + 1
    raise LookupError(f"epoch {epoch} of stage {stage!r} is not in {HISTORY_FILE}")


def is_last_stage(run: RunInfo, stage: str) -> bool:
    """Whether ``stage`` is the recipe's last stage: its end is the end of training."""
    stages = run.recipe.get("train", {}).get("stages", [])
    return bool(stages) and stages[-1].get("name") == stage


def flat_recipe(recipe: dict[str, Any]) -> dict[str, str]:
    """The recipe as dotted paths and text values, as ``tl train --set`` names them
    (``train.stages.1.lr`` → ``"0.0001"``): what a tracker shows as a run's parameters.

    Strings stay as they are; other values are JSON (``null``, ``true``, ``[64, 32]``).

    Example:
        >>> flat_recipe({"backend": "torch", "train": {"stages": [{"lr": 0.001}]}})
        {'backend': 'torch', 'train.stages.0.lr': '0.001'}
    """
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        elif isinstance(value, list | tuple) and any(isinstance(v, dict) for v in value):
            for index, item in enumerate(value):
                walk(f"{prefix}.{index}", item)
        else:
            flat[prefix] = value if isinstance(value, str) else json.dumps(value, default=str)

    walk("", recipe)
    return flat
