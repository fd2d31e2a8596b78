"""The benchmark suite runs end to end (``--tiny``: toy sizes, PyTorch side), so it cannot rot.

Timings are not asserted: only that every item produced a well-formed row and that the JSON,
Markdown and plot files are written. ``python -m benchmarks.run --quick`` covers the Keras side.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_tiny_suite_writes_every_item(tmp_path: Path) -> None:
    results = tmp_path / "results"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--tiny",
            "--backends",
            "torch",
            "--results",
            str(results),
            "--work",
            str(tmp_path / "work"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads((results / "tiny.json").read_text())
    assert data["mode"] == "tiny" and data["errors"] == []
    assert data["machine"]["cores"] and data["machine"]["versions"]["onnxruntime"]
    assert "benchmarks.run --tiny" in data["machine"]["command"]
    assert {row["item"] for row in data["rows"]} == {str(i) for i in range(1, 9)}
    for row in data["rows"]:
        assert row["backend"] in ("torch", "-")
        for key in ("median", "min", "max", "n"):
            assert isinstance(row["ratio"][key], float | int)
        assert row["ratio"]["min"] <= row["ratio"]["median"] <= row["ratio"]["max"]
        assert row["target"]["op"] in ("<=", ">=") and isinstance(row["met"], bool)
        assert row["a"]["n"] == len(row["a"]["values"]) >= 1
    frozen = next(row for row in data["rows"] if row["item"] == "2")
    assert set(frozen["accuracy"]) >= {"tlcore", "hand_written", "mean_gap_points", "seeds"}
    table = (results / "tiny.md").read_text()
    assert "| # | comparison |" in table and table.count("\n| ") >= len(data["rows"]) + 1
    assert (results / "tiny.png").stat().st_size > 0
