"""A run's data, fingerprinted when it starts and compared when it resumes.

``--resume`` continues a run on the data it started with: the same files make the same
train/validation split and the same classes. :func:`data_fingerprint` records the sources a
run reads (:meth:`Dataset.fingerprint`: the file list with sizes and modification times, or
a hash of in-memory arrays) and :func:`check_resume_data` refuses a resume whose data changed,
naming the difference, unless told to go on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tlcore.data.dataset import Dataset
from tlcore.errors import DataError
from tlcore.inputs.image import _listing


def data_fingerprint(train: Dataset, val: Dataset) -> dict[str, Any]:
    """``{"train": ..., "val": ...}``: the fingerprint of each source a run reads; ``val`` is
    ``None`` when the validation images are held out of the training source."""
    # A split's two parts share their source's labels: one source, fingerprinted once.
    shared = getattr(val, "_source_labels", None) is getattr(train, "_source_labels", ())
    return {"train": train.fingerprint(), "val": None if shared else val.fingerprint()}


def data_changes(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between two :func:`data_fingerprint` results, one line per difference
    (``"training data: 1 file(s) added: cat/new.jpg"``); empty when nothing does."""
    lines = []
    for part, title in (("train", "training data"), ("val", "validation data")):
        old, new = recorded.get(part), current.get(part)
        if old is None and new is None:
            continue
        if old is None or new is None:
            lines.append(f"{title}: now {'a separate folder' if new else 'held out of it'}")
        elif old.get("digest") != new.get("digest"):
            lines.extend(f"{title}: {text}" for text in _differences(old, new))
    return lines


def check_resume_data(
    recorded: dict[str, Any] | None,
    current: dict[str, Any],
    *,
    changed_ok: bool,
    run: Path,
) -> list[str]:
    """Refuse to resume ``run`` on data other than it started with.

    Args:
        recorded: the fingerprint the run recorded; ``None`` (a run from before fingerprints)
            checks nothing.
        current: the data's fingerprint now.
        changed_ok: go on when only files changed (the user said so); other classes are
            always refused, since they are the model's outputs.
        run: the run folder, for the message.

    Returns:
        The warning to keep when the data changed and ``changed_ok``; else nothing.

    Raises:
        DataError: the data changed (names the files and classes added, removed, changed).
    """
    if recorded is None:
        return []
    lines = data_changes(recorded, current)
    if not lines:
        return []
    what = "; ".join(lines)
    parts = [p for p in ("train", "val") if recorded.get(p) and current.get(p)]
    if any(recorded[p].get("classes") != current[p].get("classes") for p in parts):
        raise DataError(
            f"the data of {run} changed since the run started: {what}",
            "a resume cannot change the classes (the model's outputs): put the data back as "
            "it was, or start a new run with another --out",
        )
    if not changed_ok:
        raise DataError(
            f"the data of {run} changed since the run started: {what}",
            f"put it back as it was; or go on with the data as it is now: tl train --resume "
            f"{run} --data-changed-ok (Python: data_changed_ok=True), which also draws the "
            "validation images again from it",
        )
    return [f"resumed on data that changed since the run started: {what}"]


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    lines = []
    old_classes, new_classes = old.get("classes", []), new.get("classes", [])
    added = [name for name in new_classes if name not in old_classes]
    removed = [name for name in old_classes if name not in new_classes]
    if added:
        lines.append(f"class(es) added: {_listing([repr(name) for name in added])}")
    if removed:
        lines.append(f"class(es) removed: {_listing([repr(name) for name in removed])}")
    if not added and not removed and old_classes != new_classes:
        lines.append("the classes are in another order")
    old_files, new_files = old.get("files", {}), new.get("files", {})
    for verb, names in (
        ("added", sorted(new_files.keys() - old_files.keys())),
        ("removed", sorted(old_files.keys() - new_files.keys())),
        ("changed (size or modification time)",
         sorted(k for k in old_files.keys() & new_files.keys() if old_files[k] != new_files[k])),
    ):
        if names:
            lines.append(f"{len(names)} file(s) {verb}: {_listing([repr(n) for n in names])}")
    if not lines:
        # Same names, sizes and times, or no files at all (arrays): the content or labels.
        lines.append(
            f"other images or labels ({old.get('count')} before, {new.get('count')} now)"
        )
    return lines
