"""Files written atomically: a temporary file beside the target, renamed onto it on success.

Every file tlcore writes (run folders, bundles, a backend's native checkpoint) goes through
:func:`atomic_path`, so an interrupted write never leaves a half-written file behind and every
file gets the same permissions (``0666`` minus the umask; ``mkstemp`` alone gives ``0600``).
"""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tlcore.errors import DiskFullError, TlcoreError, reason

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.chmod(0o666 & ~_UMASK)  # mkstemp makes files owner-only; keep the usual mode
    try:
        yield tmp_path
        fsync(tmp_path)  # the content on disk before the name points at it (a power cut)
        os.replace(tmp_path, path)
        fsync(path.parent)  # and the rename itself
    except OSError as exc:
        if DiskFullError.matches(exc):  # the writer's OSError names no file: name the target
            raise DiskFullError(path) from None
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


def fsync(path: Path) -> None:
    """Flush a file, or a folder's entries, to the disk; where the system cannot (a folder
    on Windows, a file system without ``fsync``), nothing is done."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except (IsADirectoryError, PermissionError):  # Windows opens no folder
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented, strict JSON, atomically.

    Strict: NaN and infinity, which Python's ``json`` would write as the bare words ``NaN``
    and ``Infinity`` that no other JSON reader accepts, are refused before anything is written.

    Raises:
        TlcoreError: a number in ``data`` is NaN or infinite; names the file and where.
    """
    try:
        text = json.dumps(data, indent=2, default=_jsonable, allow_nan=False)
    except ValueError as exc:
        if "JSON compliant" not in str(exc):  # "Out of range float values are not JSON ..."
            raise
        where, value = _non_finite(data, "")
        raise TlcoreError(
            f"cannot write {path}: {where or 'the value'} is {value}, and JSON has no NaN or "
            "infinity",
            "a non-finite number reached a file; report it as a bug, with how it was made",
        ) from None
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")


def read_json(path: Path) -> Any:
    """Read a JSON file written by :func:`write_json`."""
    return json.loads(path.read_text(encoding="utf-8"))


def write_arrays(path: Path, arrays: dict[str, Any]) -> None:
    """Write numpy arrays as an uncompressed ``.npz`` (no pickle), atomically."""
    import numpy as np

    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()})


def read_arrays(path: Path) -> dict[str, Any]:
    """Read an ``.npz`` written by :func:`write_arrays`; pickled objects are refused.

    Raises:
        TlcoreError: the file is missing, damaged (truncated, not a zip), or holds anything but
            plain arrays (pickled objects, members that are not ``.npy``); names the file.
    """
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except MemoryError:
        raise
    except Exception as exc:  # numpy and zipfile raise many types for a damaged file
        pickled = isinstance(exc, ValueError) and "pickle" in str(exc)
        why = "it holds pickled objects, which tlcore never loads" if pickled else reason(exc)
        raise TlcoreError(f"cannot read {path}: {type(exc).__name__}: {why}", _DAMAGED) from None
    for name, value in arrays.items():
        if not isinstance(value, np.ndarray):  # numpy hands back the raw bytes of a non-.npy
            raise TlcoreError(f"cannot read {path}: member {name!r} is not an array", _DAMAGED)
    return arrays


_DAMAGED = (
    "the file is damaged or was not written by tlcore: restore it from a copy, or write it "
    "again (a run's checkpoint or native weights: train the run again)"
)


def _non_finite(data: Any, where: str) -> tuple[str, Any]:
    """The path (``metrics.val_loss``, ``history.3.loss``) and value of the first NaN or
    infinity in ``data``; ``("", None)`` when there is none."""
    if isinstance(data, dict):
        items: Any = data.items()
    elif isinstance(data, list | tuple):
        items = enumerate(data)
    else:
        number = data.item() if hasattr(data, "item") and getattr(data, "size", 1) == 1 else data
        if isinstance(number, float) and not math.isfinite(number):
            return where, number
        return "", None
    for key, value in items:
        found = _non_finite(value, f"{where}.{key}" if where else str(key))
        if found[0]:
            return found
    return "", None


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | set):
        return list(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
