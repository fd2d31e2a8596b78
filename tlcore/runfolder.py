"""The run folder: checkpoints, and reading a run back.

Layout::

    RUN/
      .lock             held (flock) by the process writing the run; holds its PID
      run.json          the resolved recipe, the class names, the backend (written first)
      data.json         the data's fingerprint: files, sizes, times (or an array hash)
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
killed at any moment can be resumed from its last whole checkpoint. Files and folders are
``fsync``ed before they are renamed into place, so this holds after a power cut too.

One process writes a run folder at a time: it holds an exclusive ``flock`` on ``.lock`` (the
operating system releases it when the process ends, however it ends), and a second run on
the folder is refused at once, with the first one's PID. A run that stopped before its first
checkpoint (only ``run.json`` written) can be started again in place: by ``--resume``, with
its own recipe, or by a new run with ``--out``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tlcore.bundle.layout import RUN_FILE
from tlcore.errors import TlcoreError

if TYPE_CHECKING:
    import numpy as np

from tlcore.files import atomic_path, fsync, read_arrays, read_json, write_arrays, write_json

try:
    import fcntl
except ImportError:  # Windows: no flock; runs go unlocked there
    fcntl = None  # type: ignore[assignment]

__all__ = ["RunFolder", "atomic_path", "read_arrays", "read_json", "write_arrays", "write_json"]

DATA_FILE = "data.json"
LOCK_FILE = ".lock"
CHECKPOINTS = "checkpoints"
FROZEN_FILE = "frozen.npz"

#: What a run writes before its first checkpoint: a folder holding only these (and temporary
#: files) never trained, and is started again in place.
_BEFORE_FIRST_CHECKPOINT = frozenset(
    {RUN_FILE, DATA_FILE, LOCK_FILE, CHECKPOINTS, "history.json", "history.png"}
)


class RunFolder:
    """One run's folder: where the driver writes, and where ``--resume`` reads."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._frozen: tuple[Path, dict[str, Any]] | None = None  # the last frozen.npz written
        self._lock: int | None = None  # the descriptor holding the folder's lock

    @property
    def run_file(self) -> Path:
        """``run.json``: the resolved recipe and class names."""
        return self.path / RUN_FILE

    def start(
        self, info: dict[str, Any], *, resume: bool, data: dict[str, Any] | None = None
    ) -> Literal["new", "again", "resume"]:
        """Lock the folder, then create it for a new run or check it for a resumed one.

        Args:
            info: what ``run.json`` records.
            resume: continue the run in the folder.
            data: the data's fingerprint, for ``data.json``.

        Returns:
            ``"resume"`` when there is a checkpoint to continue from; ``"again"`` when the
            folder held a run that stopped before its first checkpoint, which starts again
            from the beginning (its files replaced); ``"new"`` for a new folder.

        Raises:
            TlcoreError: another process is writing the folder (names its PID); resuming a
                folder that is not a run; a new run in a folder holding anything else than a
                run that never reached its first checkpoint.
        """
        if resume and not self.run_file.is_file():
            raise TlcoreError(
                f"{self.path} is not a tlcore run folder (no {RUN_FILE})",
                "pass the folder a previous 'tl train --out' wrote",
            )
        self.lock()  # first: what is checked below cannot change under this process
        try:
            return self._open(info, resume, data)
        except BaseException:
            self.release()
            raise

    def _open(
        self, info: dict[str, Any], resume: bool, data: dict[str, Any] | None
    ) -> Literal["new", "again", "resume"]:
        again = self._stopped_before_first_checkpoint()
        if resume and self.latest_checkpoint() is not None:
            return "resume"
        if resume and not again:
            raise TlcoreError(
                f"{self.path} has no checkpoint to resume from (checkpoints/ was deleted?)",
                "start a new run with another --out",
            )
        if not resume and not again and self._entries():
            hint = "choose another --out, or add --resume to continue it"
            if not self.run_file.is_file():
                hint = "choose an empty or new folder for --out"
            raise TlcoreError(f"run folder {self.path} already exists and is not empty", hint)
        if again:
            self._clear_before_first_checkpoint()
        write_json(self.run_file, info)
        if data is not None:
            write_json(self.path / DATA_FILE, data)
        return "again" if again else "new"

    def recorded_data(self) -> dict[str, Any] | None:
        """The data fingerprint :meth:`start` recorded (``None`` for a run from before)."""
        path = self.path / DATA_FILE
        return _read_record(path) if path.is_file() else None

    def lock(self) -> None:
        """Hold the folder's lock until :meth:`release` or the end of the process.

        Raises:
            TlcoreError: another process holds it; names its PID.
        """
        if self.path.exists() and not self.path.is_dir():
            raise TlcoreError(f"run folder {self.path} is a file", "choose a folder for --out")
        self.path.mkdir(parents=True, exist_ok=True)
        if self._lock is not None or fcntl is None:
            return
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode("ascii", "replace").strip()
            os.close(fd)
            raise self._in_use(holder) from None
        except OSError:  # a file system without locks (some network ones): go on unlocked
            os.close(fd)
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._lock = fd

    def check_free(self) -> None:
        """Refuse at once, before any data is read, a folder another process is writing.

        Raises:
            TlcoreError: another process holds the folder's lock; names its PID.
        """
        if self._lock is None and (self.path / LOCK_FILE).is_file():
            self.lock()
            self.release()

    def release(self) -> None:
        """Let go of the folder's lock (the lock file stays: removing it would race)."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def _in_use(self, holder: str) -> TlcoreError:
        pid = f" (process {holder})" if holder.isdigit() else ""
        stop = f"kill -TERM {holder}" if holder.isdigit() else "stop it"
        return TlcoreError(
            f"run folder {self.path} is in use by another run{pid}",
            f"wait for it to end, or choose another --out; to take it over, {stop} (it stops "
            f"at its last checkpoint) and continue with: tl train --resume {self.path}",
        )

    def _entries(self) -> list[Path]:
        return [p for p in self.path.iterdir() if p.name != LOCK_FILE]

    def _stopped_before_first_checkpoint(self) -> bool:
        """The folder holds a run that never wrote a checkpoint, nor anything else."""
        entries = self._entries()
        return (
            bool(entries)
            and not (self.path / CHECKPOINTS / "latest").exists()  # not even a damaged one
            and all(p.name in _BEFORE_FIRST_CHECKPOINT or _temporary(p) for p in entries)
        )

    def _clear_before_first_checkpoint(self) -> None:
        for path in self._entries():
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()

    def info(self) -> dict[str, Any]:
        """What :meth:`start` recorded."""
        if not self.run_file.is_file():
            raise TlcoreError(
                f"{self.path} is not a tlcore run folder (no {RUN_FILE})",
                "pass a folder that 'tl train --out' wrote",
            )
        info = _read_record(self.run_file)
        if not isinstance(info.get("recipe"), dict):
            raise TlcoreError(
                f"{self.run_file} records no recipe: it is damaged or not tlcore's",
                "start the run again into a new folder (tl train DATA --out NEW)",
            )
        return info

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
        try:
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
        except BaseException:  # a full disk, Ctrl-C: give the half-written space back now
            shutil.rmtree(staging, ignore_errors=True)
            raise
        final = root / name
        if final.exists():
            shutil.rmtree(final)
        fsync(staging)  # its entries (linked files too) on disk before it becomes the checkpoint
        os.replace(staging, final)
        fsync(root)
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


def _read_record(path: Path) -> dict[str, Any]:
    """A JSON object the run wrote, or a TlcoreError naming the file."""
    try:
        record = read_json(path)
    except (OSError, ValueError) as exc:  # unreadable, or not JSON (UnicodeError included)
        raise TlcoreError.caused_by(
            f"cannot read {path}", exc, "the run folder is damaged: start the run again into "
            "a new folder (tl train DATA --out NEW)"
        ) from None
    if not isinstance(record, dict):
        raise TlcoreError(f"{path} is not a JSON object: it is damaged or not tlcore's",
                          "start the run again into a new folder (tl train DATA --out NEW)")
    return record


def _temporary(path: Path) -> bool:
    """A file :func:`atomic_path` was writing when the process stopped."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


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
