"""The TensorBoard logger: every epoch's metrics as scalars in ``RUN/tensorboard/``.

On whenever the ``tensorboard`` package is installed (``pip install 'tlcore[tensorboard]'``):
it writes only inside the run folder, so ``tensorboard --logdir runs/`` shows every run. The
scalars are the keys of ``history.json`` (``loss``, ``accuracy``, ``lr``, ``val_loss``,
``val_accuracy``, ...), at the epoch's step across the whole run; the resolved recipe is
shown as text (tag ``recipe``) at the first epoch.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import tlcore
from tlcore.interfaces import RunInfo
from tlcore_tracking.common import Guard, run_step

FOLDER = "tensorboard"
"""The event files' folder inside the run folder."""


class TensorBoardLogger:
    """The ``tensorboard`` plugin: one event file per run and process, appended to per epoch."""

    def __init__(self) -> None:
        self.files: dict[Path, Path] = {}  # run folder -> this process's event file
        self.guard = Guard(
            "tensorboard", "check that the run folder is writable and 'tensorboard' imports"
        )

    @tlcore.hookimpl
    def tl_on_epoch_end(
        self, run: RunInfo, stage: str, epoch: int, metrics: dict[str, float]
    ) -> None:
        """Append the epoch's metrics, as scalars at its run-wide step."""
        if importlib.util.find_spec("tensorboard") is None:
            return  # not installed: nothing to do, nothing to say
        self.guard(run, lambda: self._write(run, stage, epoch, metrics))

    def _write(self, run: RunInfo, stage: str, epoch: int, metrics: dict[str, float]) -> None:
        from tlcore_tracking import events  # imports tensorboard: only once there is a run

        step = run_step(run, stage, epoch)
        records = []
        path = self.files.get(Path(run.path))
        # A run's first epoch starts a file, even where this process wrote an earlier run.
        if path is None or step == 1 or not path.is_file():
            path = events.new_file(Path(run.path) / FOLDER)
            self.files[Path(run.path)] = path
            records.append(events.text("recipe", _recipe_markdown(run), step))
        records.append(events.scalars(metrics, step))
        events.append(path, records)


def _recipe_markdown(run: RunInfo) -> str:
    """The run's recipe as YAML in a Markdown code block, and its backend and classes."""
    import yaml

    body = yaml.safe_dump(run.recipe, sort_keys=False)
    indented = "\n".join("    " + line for line in body.splitlines())
    classes = ", ".join(run.class_names)
    return f"backend **{run.backend}**, classes: {classes}\n\n{indented}\n"


plugin = TensorBoardLogger()
"""The instance the ``tensorboard`` entry point registers."""
