"""Opening the run folder for a run: its lock, its record, and what a resume must find."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tlcore.data.fingerprint import check_resume_data, data_fingerprint

if TYPE_CHECKING:
    from tlcore.train.trainer import Trainer


def start_run(t: Trainer) -> None:
    """Say what reading the data found, lock ``t``'s run folder and record the run
    (``run.json``, ``data.json``); a resume checks first that the data is still the data
    the run started with.

    A resume of a run that stopped before its first checkpoint, and a new run in its folder,
    start it again from the beginning: ``t.resume`` is then false.

    Raises:
        TlcoreError: the folder is in use or holds something else
            (:meth:`tlcore.runfolder.RunFolder.start`).
        DataError: the data changed since the run started and ``t.data_changed_ok`` is not
            set, or its classes changed.
    """
    for text in (*t.train_set.warnings, *t.val_set.warnings):
        t.warn(text)
    current = data_fingerprint(t.train_set, t.val_set)
    how = t.folder.start(t.run_info(), resume=t.resume, data=current)
    t.resume = how == "resume"
    if t.resume:
        recorded = t.folder.recorded_data()
        run = t.folder.path
        for text in check_resume_data(recorded, current, changed_ok=t.data_changed_ok, run=run):
            t.warn(text)
    elif how == "again":
        t.progress.message(
            f"{t.folder.path} holds a run that stopped before its first checkpoint: "
            "starting it again from the beginning"
        )
