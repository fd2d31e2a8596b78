"""Items 6 and 7: what a person at a terminal waits for, and the memory ``tl predict`` takes.

6. Wall time from process start to exit of ``python -c "import tlcore"``, ``tl --help`` and
   ``tl predict BUNDLE one.png``, the three interleaved; ``python -c pass`` for reference.
7. Peak resident memory (``ru_maxrss`` of the child, from ``wait4``) of ``tl predict`` on a
   folder of ``predict_images`` JPEGs against one image.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmarks.data import digits
from benchmarks.results import row
from benchmarks.timing import Stat

PHOTO_SIZE = 256
LAUNCHER = Path(__file__).with_name("launch.py")


def tl_command() -> list[str]:
    """The ``tl`` console script of this Python environment (``python -m tlcore.cli`` when
    it is not installed as a script)."""
    script = Path(sys.executable).with_name("tl")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "tlcore.cli"]


def run_child(command: list[str]) -> tuple[float, float]:
    """Run ``command`` to the end through :mod:`benchmarks.launch`; its wall seconds (from
    spawn to exit) and its peak resident memory in MB."""
    done = subprocess.run(
        [sys.executable, str(LAUNCHER), *command], capture_output=True, text=True, check=True
    )
    figures = json.loads(done.stdout)
    if figures["exit"] != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({figures['exit']}): {figures['stderr']}")
    return figures["seconds"], figures["max_rss_mb"]


def write_photos(folder: Path, count: int) -> list[Path]:
    """``count`` JPEGs of digits at 256 px (decoded and resized by ``tl predict``)."""
    folder.mkdir(parents=True, exist_ok=True)
    existing = sorted(folder.glob("*.jpg"))
    if len(existing) == count:
        return existing
    images, _ = digits(count, PHOTO_SIZE)
    images = images[np.arange(count) % len(images)]
    paths = []
    for i, image in enumerate(images):
        path = folder / f"{i:04d}.jpg"
        Image.fromarray(image).save(path, quality=90)
        paths.append(path)
    return paths


def startup(bundle: Path, image: Path, runs: int, threads: int) -> list[dict[str, Any]]:
    """Item 6."""
    tl = tl_command()
    commands = {
        "import tlcore": ([sys.executable, "-c", "import tlcore"], 0.15),
        "tl --help": ([*tl, "--help"], 0.3),
        "tl predict, one image": (
            [*tl, "predict", str(bundle), str(image), "--threads", str(threads)],
            1.0,
        ),
    }
    baseline: list[float] = []
    times: dict[str, list[float]] = {name: [] for name in commands}
    run_child(commands["tl predict, one image"][0])  # warm the page cache, once
    for _ in range(runs):
        baseline.append(run_child([sys.executable, "-c", "pass"])[0])
        for name, (command, _) in commands.items():
            times[name].append(run_child(command)[0])
    python = Stat.of(baseline)
    rows = []
    for name, (command, target) in commands.items():
        shown = " ".join([Path(command[0]).name, *(Path(c).name for c in command[1:])])
        result = row(
            "6",
            f"start-up: {name}",
            "-",
            "-",
            f"process start to exit, `{shown}`, {runs} runs interleaved",
            "wall time",
            times[name],
            "",
            [],
            "s",
            None,
            "seconds",
            "<=",
            target,
        )
        result["note"] = (
            f"`python -c pass` takes {python.median:.3f} s "
            f"({python.min:.3f}–{python.max:.3f}) on the same runs"
        )
        rows.append(result)
    return rows


def memory(
    bundle: Path, image: Path, folder: Path, runs: int, threads: int, batch_32: bool = True
) -> dict[str, Any]:
    """Item 7; with ``batch_32`` also one run at ``--batch-size 32`` for the note (what the
    default batch of 8 is chosen against)."""
    tl = tl_command()
    predict = [*tl, "predict", str(bundle), "--threads", str(threads)]
    many: list[float] = []
    one: list[float] = []
    seconds: list[float] = []
    for _ in range(runs):
        wall, peak = run_child([*predict, str(folder)])
        many.append(peak)
        seconds.append(wall)
        one.append(run_child([*predict, str(image)])[1])
    count = len(list(folder.glob("*.jpg")))
    growth = [m - o for m, o in zip(many, one, strict=True)]
    result = row(
        "7",
        f"peak memory, tl predict of {count} images vs 1",
        "-",
        "bundle's default model",
        f"{count} JPEGs of {PHOTO_SIZE}px in one folder; peak RSS of the child process "
        f"(wait4 ru_maxrss); {runs} run(s) each",
        f"{count} images",
        many,
        "1 image",
        one,
        "MB",
        growth,
        "growth (MB)",
        "<=",
        100.0,
    )
    result["note"] = (
        f"default --batch-size ({count} images): {np.median(seconds):.1f} s end to end "
        f"({1e3 * np.median(seconds) / count:.1f} ms per image)"
    )
    if batch_32:
        big_wall, big_peak = run_child([*predict, "--batch-size", "32", str(folder)])
        result["note"] += (
            f"; with --batch-size 32: {big_wall:.1f} s ({1e3 * big_wall / count:.1f} ms per "
            f"image), peak {big_peak:.0f} MB"
        )
    return result
