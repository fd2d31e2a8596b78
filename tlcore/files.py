"""Files written atomically: a temporary file beside the target, renamed onto it on success.

Every file tlcore writes (run folders, bundles, a backend's native checkpoint) goes through
:func:`atomic_path`, so an interrupted write never leaves a half-written file behind and every
file gets the same permissions (``0666`` minus the umask; ``mkstemp`` alone gives ``0600``).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n", encoding="utf-8")


def read_json(path: Path) -> Any:
    """Read a JSON file written by :func:`write_json`."""
    return json.loads(path.read_text(encoding="utf-8"))


def write_arrays(path: Path, arrays: dict[str, Any]) -> None:
    """Write numpy arrays as an uncompressed ``.npz`` (no pickle), atomically."""
    import numpy as np

    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()})


def read_arrays(path: Path) -> dict[str, Any]:
    """Read an ``.npz`` written by :func:`write_arrays`; pickled objects are refused."""
    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | set):
        return list(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
