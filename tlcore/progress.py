"""Progress on stderr: a live bar on a terminal, one line per epoch elsewhere, nothing if quiet."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Reports stages, batches and epochs of a run.

    On a terminal the batch line is redrawn in place (``\\r``); in a log file only the
    per-epoch summaries appear. ``quiet`` silences everything but warnings.
    """

    def __init__(self, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.live = not quiet and self.stream.isatty()
        self._label = ""
        self._start = time.perf_counter()

    def message(self, text: str) -> None:
        """One line of information (stage start, freeze report, cache)."""
        if not self.quiet:
            self._clear()
            print(text, file=self.stream, flush=True)

    def warn(self, text: str) -> None:
        """A warning, shown even when quiet."""
        self._clear()
        print(f"warning: {text}", file=self.stream, flush=True)

    def start_epoch(self, label: str) -> None:
        """Begin an epoch called ``label`` (e.g. ``head 2/5``)."""
        self._label = label
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
