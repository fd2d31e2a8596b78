"""Where the time goes: onnxruntime's profiler per operator type, for the findings.

    python -m benchmarks.profiles BUNDLE [--model model.int8.onnx] [--runs 20]

prints the share of node time per operator type at batch 1 (the evidence behind item 5's
explanation in ``findings.py``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np


def op_times(model: Path, size: int, runs: int, threads: int) -> dict[str, float]:
    """Milliseconds per run spent in each operator type (onnxruntime profiler, batch 1)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    with tempfile.TemporaryDirectory() as folder:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "profile")
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        image = np.zeros((1, size, size, 3), dtype=np.uint8)
        for _ in range(runs + 1):
            session.run(None, {session.get_inputs()[0].name: image})
        events = json.loads(Path(session.end_profiling()).read_text())
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            totals[event["args"]["op_name"]] += event["dur"] / 1e3 / (runs + 1)
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def main() -> None:
    """Print the per-operator table of a bundle's model."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profiles")
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--model", default="model.onnx")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    info = json.loads((args.bundle / "tlcore.json").read_text())
    times = op_times(args.bundle / args.model, info["input"]["size"][0], args.runs, args.threads)
    total = sum(times.values())
    print(f"{args.model}: {total:.2f} ms of node time per image")
    for op, ms in times.items():
        print(f"  {op:<24} {ms:7.2f} ms  {100 * ms / total:5.1f} %")


if __name__ == "__main__":
    main()
