"""The progress display: tqdm's live bar on a terminal (a real pseudo-terminal, and a stream
that says it is one), plain per-epoch lines elsewhere, warnings only when quiet, and tqdm
imported only when a bar starts."""

from __future__ import annotations

import io
import json
import os
import re
import select
import subprocess
import sys
import time

import numpy as np
import pytest

from tlcore.progress import Progress

# tqdm's "elapsed<remaining" pair, e.g. "[00:00<00:01".
TIME_LEFT = re.compile(r"\[\d\d:\d\d<\d\d:\d\d")
SUMMARY = re.compile(
    r"^head 1/2: loss 0\.2500 accuracy 0\.7500 lr 0\.0010 \(\d+\.\ds, (\d+) samples/s\)$"
)


class Terminal(io.StringIO):
    """A stream that says it is a terminal, as a console's stderr does."""

    def isatty(self) -> bool:
        return True


def _epoch(progress: Progress, batches: int = 4, size: int = 8, pause: float = 0.12) -> float:
    """One epoch of ``batches`` batches of ``size`` samples, ``pause`` seconds each, with a
    message in the middle; returns the seconds it took."""
    start = time.perf_counter()
    progress.start_epoch("head 1/2")
    for b in range(batches):
        time.sleep(pause)  # longer than tqdm's 0.1 s between redraws: every batch is drawn
        progress.batch(b + 1, batches, {"loss": 1.0 / (b + 1)}, samples=(b + 1) * size)
        if b == 1:
            progress.message("cached features")
    progress.end_epoch({"loss": 0.25, "accuracy": 0.75, "lr": 1e-3})
    return time.perf_counter() - start


def test_a_terminal_gets_a_live_bar_with_throughput_time_left_and_a_summary():
    stream = Terminal()
    progress = Progress(stream=stream)
    assert progress.live
    seconds = _epoch(progress)
    out = stream.getvalue()
    frames = out.split("\r")
    drawn = [f for f in frames if "head 1/2" in f and "|" in f]
    counts = {int(m) for f in drawn for m in re.findall(r"\| (\d)/4 \[", f)}
    assert 1 in counts and len(counts) >= 3, out  # redrawn as batches end, from the first
    assert TIME_LEFT.search(out), out
    # The throughput on the bar: samples over the time since the epoch started.
    rates = [int(m) for m in re.findall(r"(\d+) samples/s, loss", out)]
    assert rates and max(rates) <= 8 / 0.12 + 1, out
    assert "loss 0.2500" in out  # the running loss of batch 4: 1/4
    lines = out.replace("\r", "\n").splitlines()
    assert "cached features" in lines  # a message gets a line of its own above the bar
    summary = [line for line in lines if SUMMARY.match(line)]
    assert len(summary) == 1, out
    rate = int(SUMMARY.match(summary[0]).group(1))
    assert abs(rate - 32 / seconds) <= 0.2 * 32 / seconds + 1
    assert out.endswith(summary[0] + "\n")  # the bar was cleared before it


def test_a_run_that_ends_inside_an_epoch_clears_its_bar():
    """An error or Ctrl-C in the middle of an epoch: the trainer closes the progress, so the
    error's message starts on a line of its own, not after the bar."""
    stream = Terminal()
    progress = Progress(stream=stream)
    progress.start_epoch("head 1/2")
    progress.batch(1, 4, {"loss": 1.0}, samples=8)
    assert "| 1/4 [" in stream.getvalue()
    progress.close()
    progress.close()  # once is enough; again does nothing
    print("error: interrupted", file=stream)
    # The bar's line was cleared: the message is all that follows the last carriage return.
    assert stream.getvalue().split("\r")[-1] == "error: interrupted\n", stream.getvalue()


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
@pytest.mark.parametrize("columns", [0, 60])
def test_a_real_pseudo_terminal_gets_the_bar(columns):
    """A sized terminal's width is kept; one that says 0 columns (a pseudo-terminal nobody
    sized, where tqdm alone draws nothing) still gets the bar."""
    import fcntl
    import struct
    import termios

    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    try:
        with os.fdopen(follower, "w", encoding="utf-8", closefd=True) as tty:
            _epoch(Progress(stream=tty), batches=3, pause=0.11)
        received = b""
        while select.select([leader], [], [], 2)[0]:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the other side is closed and everything was read
                break
            if not chunk:
                break
            received += chunk
    finally:
        os.close(leader)
    out = received.decode("utf-8").replace("\r\n", "\n")
    # A batch after the first one drawn (tqdm redraws at most every 0.1 s, and the last
    # frame may be skipped: the summary line replaces it).
    assert re.search(r"[123]/3 \[", out) and TIME_LEFT.search(out), out
    assert "samples/s, loss" in out, out
    frames = [f for f in out.replace("\n", "\r").split("\r") if "|" in f]
    assert max(len(f) for f in frames) <= (columns or 100), frames
    assert re.search(r"head 1/2: loss 0\.2500 accuracy 0\.7500 lr 0\.0010 "
                     r"\(\d+\.\ds, \d+ samples/s\)", out), out


def test_a_stream_that_is_not_a_terminal_gets_only_plain_lines():
    stream = io.StringIO()
    progress = Progress(stream=stream)
    assert not progress.live
    _epoch(progress, pause=0.0)
    progress.warn("few images")
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert len(lines) == 3, lines
    assert lines[0] == "cached features"
    assert SUMMARY.match(lines[1]), lines
    assert lines[2] == "warning: few images"


def test_without_the_trainer_counting_samples_the_bar_counts_batches():
    stream = Terminal()
    progress = Progress(stream=stream)
    progress.start_epoch("head 1/2")
    for b in range(3):
        time.sleep(0.11)
        progress.batch(b + 1, 3, {"loss": 0.5})
    progress.end_epoch({"loss": 0.5})
    out = stream.getvalue()
    assert "batch/s" in out and "samples/s" not in out, out
    assert out.endswith("\n") and re.search(r"head 1/2: loss 0\.5000 \(\d+\.\ds\)\n$", out)


def test_quiet_shows_only_warnings_and_silent_nothing():
    for quiet, silent, expected in ((True, False, "warning: odd\n"), (False, True, "")):
        stream = Terminal()
        progress = Progress(quiet=quiet, stream=stream, silent=silent)
        assert not progress.live  # a terminal, but no bar
        _epoch(progress, pause=0.0)
        progress.warn("odd")
        assert stream.getvalue() == expected


def test_a_label_cannot_send_escape_sequences_to_the_terminal():
    stream = Terminal()
    progress = Progress(stream=stream)
    progress.start_epoch("head\x1b[2J 1/1")
    progress.batch(1, 1, {"loss": 0.5}, samples=4)
    progress.end_epoch({"loss": 0.5})
    assert "\x1b" not in stream.getvalue()
    assert "head\\x1b[2J 1/1: loss 0.5000" in stream.getvalue()


def test_tqdm_is_imported_only_when_a_bar_starts():
    probe = (
        "import io, sys, json\n"
        "import tlcore, tlcore.cli, tlcore.progress\n"
        "from tlcore.progress import Progress\n"
        "seen = ['tqdm' in sys.modules]\n"
        "plain = Progress(stream=io.StringIO())\n"
        "plain.start_epoch('a'); plain.batch(1, 2, {'loss': 1.0}, samples=4)\n"
        "plain.end_epoch({'loss': 1.0})\n"
        "seen.append('tqdm' in sys.modules)\n"
        "class T(io.StringIO):\n"
        "    def isatty(self): return True\n"
        "live = Progress(stream=T())\n"
        "live.start_epoch('a')\n"
        "seen.append('tqdm' in sys.modules)\n"
        "live.batch(1, 2, {'loss': 1.0}, samples=4)\n"
        "seen.append('tqdm' in sys.modules)\n"
        "print(json.dumps(seen))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [False, False, False, True]


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_tl_train_on_a_terminal_draws_the_bar_inside_each_epoch(tmp_path):
    """The real ``tl train`` (an MLP on 96 vectors, torch) with its stderr on a
    pseudo-terminal: the trainer's epochs get the bar, then their summary lines."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 32)
    x = (rng.normal(size=(3, 16))[y] * 2 + rng.normal(size=(96, 16))).astype(np.float32)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    (tmp_path / "recipe.yaml").write_text(
        "backbone: {widths: [16]}\ndata: {val_split: 0.25}\ntrain:\n  batch_size: 8\n"
        "  stages: [{name: all, epochs: 2, lr: 0.003, freeze: {policy: none}}]\n"
    )
    leader, follower = os.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "tlcore.cli", "train", str(tmp_path / "data.npz"),
             "--recipe", str(tmp_path / "recipe.yaml"), "--backend", "torch",
             "--out", str(tmp_path / "run")],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=follower,
        )
        os.close(follower)
        received = b""
        while True:  # read as it comes: a full pseudo-terminal would block the trainer
            if select.select([leader], [], [], 0.2)[0]:
                try:
                    received += os.read(leader, 65536)
                except OSError:
                    break
            elif process.poll() is not None:
                break
        process.communicate(timeout=60)
    finally:
        os.close(leader)
    out = received.decode("utf-8", "replace").replace("\r\n", "\n")
    assert process.returncode == 0, out
    frames = [f for f in out.replace("\n", "\r").split("\r") if "%|" in f]
    assert max(len(f) for f in frames) <= 100, frames  # the width of an unsized terminal
    assert re.search(r"all 1/2 +\d+%\|", out) and TIME_LEFT.search(out), out
    assert re.search(r"(batch|samples)/s", out), out
    for epoch in ("1/2", "2/2"):
        assert re.search(rf"^all {epoch}: loss \d\.\d{{4}} accuracy", out.replace("\r", "\n"),
                         re.MULTILINE), out
