"""The run folder: checkpoints, and reading a run back.

Layout::

    RUN/
      run.json          the resolved recipe, the class names, the backend (written first)
      history.json      one row per epoch of every stage
      history.png       its curves (written at the end, with matplotlib)
      checkpoints/
        latest          name of the newest complete checkpoint (replaced atomically)
        0007/           weights.npz, optimizer.npz, best.npz, frozen.npz, state.json
      native/           weights.npz (framework-neutral) + the backend's own format
      model.onnx        the verified float model; model.int8.onnx when quantised
      tlcore.json       the bundle description (labels, input spec, metrics, versions,
                        checksums, default_model)
      eval/<data>/      report.json and confusion.png of ``tl eval``

Every file is written to a temporary name in the same folder and renamed into place, and a
checkpoint becomes visible only when ``latest`` points at its complete folder, so a run
killed at any moment can be resumed from its last whole checkpoint.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlcore.errors import TlcoreError

if TYPE_CHECKING:
    import numpy as np

from tlcore.files import atomic_path, read_arrays, read_json, write_arrays, write_json

__all__ = ["RunFolder", "atomic_path", "read_arrays", "read_json", "write_arrays", "write_json"]

RUN_FILE = "run.json"
CHECKPOINTS = "checkpoints"
FROZEN_FILE = "frozen.npz"


class RunFolder:
    """One run's folder: where the driver writes, and where ``--resume`` reads."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._frozen: tuple[Path, dict[str, Any]] | None = None  # the last frozen.npz written

    @property
    def run_file(self) -> Path:
        """``run.json``: the resolved recipe and class names."""
        return self.path / RUN_FILE

    def start(self, info: dict[str, Any], *, resume: bool) -> None:
        """Create the folder for a new run, or check it for a resumed one."""
        if resume:
            if not self.run_file.is_file():
                raise TlcoreError(
                    f"{self.path} is not a tlcore run folder (no {RUN_FILE})",
                    "pass the folder a previous 'tl train --out' wrote",
                )
            return
        if self.path.exists() and any(self.path.iterdir()):
            hint = "choose another --out, or add --resume to continue it"
            if not self.run_file.is_file():
                hint = "choose an empty or new folder for --out"
            raise TlcoreError(f"run folder {self.path} already exists and is not empty", hint)
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.run_file, info)

    def info(self) -> dict[str, Any]:
        """What :meth:`start` recorded."""
        if not self.run_file.is_file():
            raise TlcoreError(
                f"{self.path} is not a tlcore run folder (no {RUN_FILE})",
                "pass a folder that 'tl train --out' wrote",
            )
        return read_json(self.run_file)

    # --- checkpoints --------------------------------------------------------------------------

    def save_checkpoint(
        self,
        state: dict[str, Any],
        weights: dict[str, Any],
        optimizer: dict[str, Any],
        best: dict[str, Any] | None,
        best_changed: bool,
        frozen: dict[str, Any] | None = None,
    ) -> Path:
        """Write checkpoint number ``state["counter"]`` and point ``latest`` at it.

        ``frozen`` holds the arrays that ``weights`` and ``best`` share unchanged (a frozen
        backbone): they go to ``frozen.npz``, the rest to ``weights.npz`` and ``best.npz``.
        When the previous checkpoint of this run stored the very same ``frozen`` arrays (the
        same objects, so the same values), its file is linked instead of written again, and
        ``best.npz`` is linked too unless ``best_changed``: while a backbone is frozen a
        checkpoint costs only what trains.
        """
        frozen = frozen or {}
        root = self.path / CHECKPOINTS
        previous = self.latest_checkpoint()
        same_frozen = (
            previous is not None
            and self._frozen is not None
            and self._frozen[0] == previous
            and self._frozen[1].keys() == frozen.keys()
            and all(self._frozen[1][k] is v for k, v in frozen.items())
        )
        name = f"{state['counter']:06d}"
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=_mkdir(root)))
        if same_frozen and frozen:
            _link_or_copy(previous / FROZEN_FILE, staging / FROZEN_FILE)  # type: ignore[operator]
        elif frozen:
            write_arrays(staging / FROZEN_FILE, frozen)
        write_arrays(staging / "weights.npz", _without(weights, frozen))
        write_arrays(staging / "optimizer.npz", optimizer)
        if best is not None and same_frozen and not best_changed:
            _link_or_copy(previous / "best.npz", staging / "best.npz")  # type: ignore[operator]
        elif best is not None:
            write_arrays(staging / "best.npz", _without(best, frozen))
        write_json(staging / "state.json", state)
        final = root / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        with atomic_path(root / "latest") as tmp:
            tmp.write_text(name, encoding="utf-8")
        self._frozen = (final, dict(frozen))
        for old in root.iterdir():
            if old.is_dir() and old.name != name:
                shutil.rmtree(old, ignore_errors=True)
        return final

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint folder, or ``None``."""
        pointer = self.path / CHECKPOINTS / "latest"
        if not pointer.is_file():
            return None
        folder = self.path / CHECKPOINTS / pointer.read_text(encoding="utf-8").strip()
        return folder if (folder / "state.json").is_file() else None

    def load_checkpoint(self) -> dict[str, Any]:
        """The latest checkpoint: ``state``, ``weights``, ``optimizer`` and ``best`` (or None)."""
        folder = self.latest_checkpoint()
        if folder is None:
            raise TlcoreError(
                f"{self.path} has no checkpoint to resume from",
                "the run stopped before its first epoch ended; start it again",
            )
        best = folder / "best.npz"
        frozen_file = folder / FROZEN_FILE
        frozen = read_arrays(frozen_file) if frozen_file.is_file() else {}
        return {
            "state": read_json(folder / "state.json"),
            "weights": {**frozen, **read_arrays(folder / "weights.npz")},
            "optimizer": read_arrays(folder / "optimizer.npz"),
            "best": {**frozen, **read_arrays(best)} if best.is_file() else None,
        }


def _without(arrays: dict[str, Any], names: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in arrays.items() if k not in names}


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def unchanged(
    reference: dict[str, np.ndarray], *states: dict[str, np.ndarray] | None
) -> dict[str, np.ndarray]:
    """The arrays of ``reference`` that every one of ``states`` (``None`` skipped) holds
    unchanged, as ``reference``'s own objects: the frozen weights checkpoints can share."""
    import numpy as np

    others: list[dict[str, np.ndarray]] = []
    for state in states:
        if state is not None and all(state is not other for other in others):
            others.append(state)
    return {
        name: value
        for name, value in reference.items()
        if all(
            name in other
            and other[name].shape == value.shape
            and np.array_equal(other[name], value)
            for other in others
        )
    }
