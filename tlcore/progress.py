"""Progress on stderr: a live bar on a terminal (tqdm), one line per epoch elsewhere, nothing
but warnings if quiet."""

from __future__ import annotations

import os
import re
import sys
import time
from typing import Any, TextIO

_WIDTH, _ROWS = 100, 24  # the size of a terminal that does not say its own

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

    On a terminal each epoch gets a live bar (tqdm's ``auto`` bar, imported when the first
    bar starts, never at ``import tlcore``): batches done of the epoch's total, throughput,
    time elapsed and left, and the running loss and metrics; it is removed when the epoch
    ends and its summary line printed. Elsewhere (a log file, a pipe, a notebook's captured
    stream) only the per-epoch summaries appear, with the epoch's throughput. ``quiet``
    silences everything but warnings; ``silent`` warnings too (the ranks other than 0 of a
    distributed run, which rank 0 speaks for).
    """

    def __init__(
        self, quiet: bool = False, stream: TextIO | None = None, silent: bool = False
    ) -> None:
        self.quiet = quiet or silent
        self.silent = silent
        self.stream = stream or sys.stderr
        self.live = not self.quiet and _isatty(self.stream)
        self._label = ""
        self._start = time.perf_counter()
        self._samples: int | None = None  # examples done in this epoch, when the trainer says
        self._bar: Any = None  # the epoch's tqdm bar while one is drawn

    def message(self, text: str) -> None:
        """One line of information (stage start, freeze report, cache)."""
        if not self.quiet:
            self._line(printable(text))

    def warn(self, text: str) -> None:
        """A warning, shown even when quiet (not when silent)."""
        if self.silent:
            return
        self._line(f"warning: {printable(text)}")

    def start_epoch(self, label: str) -> None:
        """Begin an epoch called ``label`` (e.g. ``head 2/5``)."""
        self._close_bar()
        self._label = printable(label)
        self._start = time.perf_counter()
        self._samples = None

    def batch(
        self, done: int, total: int, metrics: dict[str, float], samples: int | None = None
    ) -> None:
        """Batch ``done`` of ``total`` of the epoch is finished; ``metrics`` are the running
        ones (shown on the bar), ``samples`` the examples done so far in the epoch (for the
        throughput in samples/s; without it the bar counts batches/s)."""
        if samples is not None:
            self._samples = samples
        if not self.live:
            return
        opened = self._bar is None
        if opened:
            self._bar = self._open_bar(total, per_sample=samples is not None)
        bar = self._bar
        if bar.total != total:
            bar.total = total
        # The loss and the first metric: more would squeeze the bar out of the line (the
        # epoch's summary line has them all).
        shown = _fmt(dict(list(metrics.items())[:2]))
        if self._samples is not None:
            shown = f"{_rate(self._samples, time.perf_counter() - self._start)}, {shown}"
        bar.set_postfix_str(shown, refresh=False)
        bar.update(done - bar.n)  # redraws at most every 0.1 s (tqdm's mininterval)
        if opened:
            bar.refresh()  # the first batch is shown at once, not after the next one

    def end_epoch(self, metrics: dict[str, float]) -> None:
        """Print the epoch's summary line: its metrics, time and throughput."""
        self._close_bar()
        if self.quiet:
            return
        seconds = time.perf_counter() - self._start
        speed = f", {_rate(self._samples, seconds)}" if self._samples else ""
        print(f"{self._label}: {_fmt(metrics)} ({seconds:.1f}s{speed})", file=self.stream,
              flush=True)

    def _open_bar(self, total: int, per_sample: bool) -> Any:
        """The epoch's bar; tqdm is imported here, the first time a bar is drawn."""
        from tqdm.auto import tqdm

        # With samples the throughput in the postfix is the bar's rate; otherwise tqdm's own.
        rate = "" if per_sample else ", {rate_fmt}"
        # Follow the terminal's size; one that says 0 (a pseudo-terminal nobody sized) would
        # make tqdm draw nothing, so it gets a fixed one.
        sized = _sized(self.stream)
        bar = tqdm(
            total=total, desc=self._label, file=self.stream, leave=False, dynamic_ncols=sized,
            ncols=None if sized else _WIDTH, nrows=None if sized else _ROWS, unit="batch",
            bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
            "[{elapsed}<{remaining}" + rate + "{postfix}]",
        )
        # The bar opens after the first batch (its total is known then): its clock starts
        # with the epoch, so that elapsed time, rate and time left count that batch too.
        bar.start_t -= time.perf_counter() - self._start
        return bar

    def close(self) -> None:
        """Remove the epoch's bar, if one is drawn: the run ended (an error, Ctrl-C) before
        its epoch did, and what is printed next must not land on the bar's line."""
        self._close_bar()

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()  # leave=False: the bar's line is cleared
            self._bar = None

    def _line(self, text: str) -> None:
        """Print a line above the bar, which is redrawn below it."""
        if self._bar is not None:
            self._bar.clear()
        print(text, file=self.stream, flush=True)
        if self._bar is not None:
            self._bar.refresh()


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _sized(stream: TextIO) -> bool:
    """Whether the terminal ``stream`` writes to says its size (columns and lines)."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):  # no descriptor (io.UnsupportedOperation)
        return False
    return size.columns > 0 and size.lines > 0


def _rate(samples: int | None, seconds: float) -> str:
    """``123 samples/s``."""
    return f"{(samples or 0) / max(seconds, 1e-9):.0f} samples/s"


def _fmt(metrics: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
