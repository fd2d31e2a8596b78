"""Two-process scaling on this CPU: the same run in one process and in two (``tl train --nproc
2``: torchrun, gloo), phase by phase (issue 14).

    .venv/bin/python -m benchmarks.scaling            # writes benchmarks/results/scaling.*
    .venv/bin/python -m benchmarks.scaling --tiny     # toy sizes, seconds: the smoke test

The run: scikit-learn's digits as an image folder (64 px, 60 per class: 600 images, 480 to
train), the default backbone (EfficientNet-Lite0 with its ImageNet weights) at 96 px, the
default two stages shortened to 2 epochs of the head on cached features and 1 epoch of
fine-tuning, global batch 32, validation 20 %. Three ways to use the two cores, run one after
the other on the idle machine:

- ``1 process x 1 thread``: the baseline;
- ``2 processes x 1 thread``: what ``--nproc 2`` buys;
- ``1 process x 2 threads``: the other way to use the second core.

Each way runs three times (``--repeats``) and the median of each figure is kept. Per phase
(feature extraction, head epochs on cached features, fine-tuning epochs; from the
run's ``tlcore.json`` and ``history.json``), the scaling efficiency is ``T(1 process) / (2 x
T(2 processes))``: 1.0 is perfect, 0.5 is no gain.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tlcore.parallel import cpu_name

RESULTS = Path(__file__).parent / "results"
WAYS = (("1 process x 1 thread", 1, 1), ("2 processes x 1 thread", 2, 1),
        ("1 process x 2 threads", 1, 2))


def _recipe(tiny: bool) -> dict[str, Any]:
    backbone = (
        {"source": "builtin:simple_cnn", "weights": "none", "input_size": 32}
        if tiny else {"source": "builtin:efficientnet_lite0", "input_size": 96}
    )
    return {
        "backend": "torch",
        "backbone": backbone,
        "train": {"batch_size": 32, "seed": 0, "device": "cpu", "stages": [
            {"name": "head", "epochs": 2, "lr": 1e-3, "freeze": {"policy": "all"}},
            {"name": "tune", "epochs": 1, "lr": 1e-4,
             "freeze": {"policy": "last_n", "n": 2, "batchnorm": "frozen"}},
        ]},
        "data": {"val_split": 0.2},
        "export": {"formats": ["native"]},
    }


def _run(data: Path, recipe: Path, out: Path, processes: int, threads: int) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "tlcore", "train", str(data), "--recipe", str(recipe),
               "--out", str(out), "-q"]
    if processes > 1:
        command += ["--nproc", str(processes)]
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - started
    info = json.loads((out / "tlcore.json").read_text())
    history = json.loads((out / "history.json").read_text())
    return {
        "wall_seconds": round(wall, 2),
        "features_seconds": info["timing"]["feature_extraction_seconds"],
        "head_seconds": round(sum(r["seconds"] for r in history if r["stage"] == "head"), 3),
        "tune_seconds": round(sum(r["seconds"] for r in history if r["stage"] == "tune"), 3),
        "val_accuracy": info["metrics"].get("val_accuracy"),
        "world_size": info["compute"]["world_size"],
    }


def measure(tiny: bool, work: Path, repeats: int = 3) -> dict[str, Any]:
    """Every way ``repeats`` times, in order; the median figures and the efficiencies."""
    from tlcore.demo import write_demo

    data = write_demo(work / "digits", size=32 if tiny else 64, per_class=20 if tiny else 60)
    recipe = work / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(_recipe(tiny)))
    runs = {}
    for name, p, t in WAYS:
        # Repeated, the median per figure: one run of a few seconds moves with the machine.
        tries = [_run(data, recipe, work / f"run-{p}x{t}-{i}", p, t) for i in range(repeats)]
        runs[name] = {
            key: (float(np.median([r[key] for r in tries])) if key.endswith("seconds")
                  else tries[0][key])
            for key in tries[0]
        }
        runs[name]["repeats"] = repeats
    one, two = runs[WAYS[0][0]], runs[WAYS[1][0]]
    efficiency = {
        phase: round(one[f"{phase}_seconds"] / (2 * two[f"{phase}_seconds"]), 3)
        for phase in ("features", "head", "tune")
        if two[f"{phase}_seconds"] > 0
    }
    efficiency["wall"] = round(one["wall_seconds"] / (2 * two["wall_seconds"]), 3)
    return {
        "machine": {"cpu": cpu_name(),
                    "cores": os.cpu_count(), "python": platform.python_version()},
        "tiny": tiny,
        "runs": runs,
        "efficiency_two_processes": efficiency,
    }


def table(result: dict[str, Any]) -> str:
    """The Markdown table of ``result``."""
    lines = [
        "| way | features s | head epochs s | fine-tune epoch s | wall s | val acc |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in result["runs"].items():
        lines.append(f"| {name} | {r['features_seconds']} | {r['head_seconds']} | "
                     f"{r['tune_seconds']} | {r['wall_seconds']} | {r['val_accuracy']} |")
    eff = result["efficiency_two_processes"]
    lines += ["", "Two-process scaling efficiency, T(1 process) / (2 x T(2 processes)): "
              + ", ".join(f"{k} {v}" for k, v in eff.items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Measure and write ``benchmarks/results/scaling[-tiny].{json,md}``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="toy sizes (the smoke test)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--repeats", type=int, default=3, help="runs per way (median)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        result = measure(args.tiny, Path(work), 1 if args.tiny else args.repeats)
    stem = "scaling-tiny" if args.tiny else "scaling"
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.results / f"{stem}.md").write_text(table(result))
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
