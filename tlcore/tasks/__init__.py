"""Tasks: what depends on the kind of head (labels, loss, metrics, final node, predictions).

- :mod:`~tlcore.tasks.base`: the :class:`Task` interface and :class:`Prediction`;
- :mod:`~tlcore.tasks.classification`: one class per image (the default);
- :mod:`~tlcore.tasks.multilabel`: any number of labels per image, thresholds per label;
- :mod:`~tlcore.tasks.regression`: one number per image.
- :mod:`~tlcore.tasks.thresholds`: a multi-label model's thresholds, chosen on validation.

A plugin adds a task by registering ``Choice(kind="task", name=..., value=MyTask())`` in
``tl_register_choices``. Nothing here imports the recipe, the data layer or a framework.
"""

from __future__ import annotations

from typing import Any

from tlcore.errors import RecipeError, TlcoreError
from tlcore.tasks.base import LOSSES, Prediction, Task
from tlcore.tasks.classification import ClassificationTask
from tlcore.tasks.multilabel import MultiLabelTask
from tlcore.tasks.regression import RegressionTask
from tlcore.tasks.thresholds import choose_thresholds

#: The tasks tlcore itself provides, by name.
BUILTIN_TASKS: dict[str, Task] = {
    task.name: task for task in (ClassificationTask(), MultiLabelTask(), RegressionTask())
}

#: The task of a bundle that records none (tlcore 0.1 wrote classifiers only).
DEFAULT_TASK = "classification"


def get_task(name: str) -> Task:
    """The task called ``name``: a built-in one, else one a plugin registered.

    Raises:
        RecipeError: no task has that name; lists the known ones.
    """
    if name in BUILTIN_TASKS:
        return BUILTIN_TASKS[name]
    from tlcore.plugins.manager import choices  # plugins only for names tlcore lacks

    registered = choices("task")
    choice = registered.get(name)
    if choice is None:
        known = ", ".join([*BUILTIN_TASKS, *registered])
        raise RecipeError("task", name, f"one of {known}")
    if not isinstance(choice.value, Task):
        raise TlcoreError(
            f"the plugin task {name!r} registered {choice.value!r}, not a tlcore.tasks.Task",
            "register Choice(kind='task', name=..., value=YourTask())",
        )
    return choice.value


def task_from_bundle(section: dict[str, Any] | None) -> tuple[Task, dict[str, Any]]:
    """The task of a bundle and what it stored, from the ``task`` section of ``tlcore.json``
    (or the ONNX metadata); a bundle without one is a classifier."""
    section = dict(section or {})
    task = get_task(section.pop("name", DEFAULT_TASK))
    return task, section


__all__ = [
    "BUILTIN_TASKS",
    "DEFAULT_TASK",
    "LOSSES",
    "ClassificationTask",
    "MultiLabelTask",
    "Prediction",
    "RegressionTask",
    "Task",
    "choose_thresholds",
    "get_task",
    "task_from_bundle",
]
