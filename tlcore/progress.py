"""Progress on stderr: a live bar on a terminal, one line per epoch elsewhere, nothing if quiet."""

from __future__ import annotations

import re
import sys
import time
from typing import TextIO

# C0 controls but tab and newline, DEL, C1 controls, and the bidirectional marks and overrides
# that can make a terminal show text in another order than it is written.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    r"""``text`` safe to print on a terminal: control characters and bidirectional overrides
    are shown escaped (``\x1b``, ``\u202e``), so a class folder or file name cannot send
    escape sequences to the terminal; newlines and tabs are kept.

    Example:
        >>> printable("cat\x1b[2J")
        'cat\\x1b[2J'
    """
    return _UNPRINTABLE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class Progress:
    """Reports stages, batches and epochs of a run.

    On a terminal the batch line is redrawn in place (``\\r``); in a log file only the
    per-epoch summaries appear. ``quiet`` silences everything but warnings; ``silent``
    warnings too (the ranks other than 0 of a distributed run, which rank 0 speaks for).
    """

    def __init__(
        self, quiet: bool = False, stream: TextIO | None = None, silent: bool = False
    ) -> None:
        self.quiet = quiet or silent
        self.silent = silent
        self.stream = stream or sys.stderr
        self.live = not quiet and self.stream.isatty()
        self._label = ""
        self._start = time.perf_counter()

    def message(self, text: str) -> None:
        """One line of information (stage start, freeze report, cache)."""
        if not self.quiet:
            self._clear()
            print(printable(text), file=self.stream, flush=True)

    def warn(self, text: str) -> None:
        """A warning, shown even when quiet (not when silent)."""
        if self.silent:
            return
        self._clear()
        print(f"warning: {printable(text)}", file=self.stream, flush=True)

    def start_epoch(self, label: str) -> None:
        """Begin an epoch called ``label`` (e.g. ``head 2/5``)."""
        self._label = printable(label)
        self._start = time.perf_counter()

    def batch(self, done: int, total: int, metrics: dict[str, float]) -> None:
        """Redraw the batch bar (terminal only)."""
        if not self.live:
            return
        width = 24
        filled = int(width * done / max(total, 1))
        bar = "#" * filled + "." * (width - filled)
        text = f"{self._label} [{bar}] {done}/{total} {_fmt(metrics)}"
        print("\r" + text[:120].ljust(120), end="", file=self.stream, flush=True)

    def end_epoch(self, metrics: dict[str, float]) -> None:
        """Print the epoch's summary line."""
        if self.quiet:
            return
        self._clear()
        seconds = time.perf_counter() - self._start
        print(f"{self._label}: {_fmt(metrics)} ({seconds:.1f}s)", file=self.stream, flush=True)

    def _clear(self) -> None:
        if self.live:
            print("\r" + " " * 120 + "\r", end="", file=self.stream, flush=True)


def _fmt(metrics: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
