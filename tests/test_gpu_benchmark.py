"""The GPU benchmark script (``benchmarks/gpu.py``) runs end to end in its tiny CPU mode, so
that a session lent a GPU machine spends its minutes measuring, not debugging.

On a CPU the GPU-only items are skipped with their reason; the others are measured with toy
sizes. Timings are not judged, only that they are there, finite and positive.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_the_tiny_cpu_run_records_every_item(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu", "--tiny", "--device", "cpu", "--out", str(out),
         "--work", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "gpu.json").read_text())
    items = {item["id"]: item for item in report["items"]}
    assert list(items) == ["1", "2", "3", "4", "5", "6"]
    for item in items.values():  # measured, or skipped with the reason; never failed
        assert item["status"] in ("measured", "skipped"), item
        assert item["status"] == "measured" or item["reason"], item
    assert [i for i in ("1", "2", "3") if items[i]["status"] == "measured"] == ["1", "2", "3"]
    assert items["1"]["device"] == "cpu" and items["1"]["torch"]

    for precision, run in items["2"]["runs"].items():  # the demo: 32 and bf16 on the CPU
        assert run["status"] == "measured", (precision, run)
        assert run["compute"]["device"] == "cpu" and run["compute"]["precision"] == precision
        assert 0 <= run["val_accuracy"] <= 1
        assert all(_positive(seconds) for _, _, seconds in run["epoch_s"])
        assert math.isfinite(run["parity_max"]) and run["parity_max"] <= 1e-4

    runs = {(r["precision"], r["side"]): r for r in items["3"]["runs"]}
    assert {r["model"] for r in runs.values()} == {"builtin:simple_cnn"}
    for key in (("32", "tlcore"), ("32", "hand"), ("bf16", "tlcore"), ("bf16", "hand")):
        assert runs[key]["status"] == "measured", runs[key]
        assert _positive(runs[key]["epoch_s"]), runs[key]
    assert _positive(runs["32", "tlcore"]["with_checkpoint_s"])
    for side in ("tlcore", "hand"):  # float16 autocast is refused on a CPU, with the reason
        assert runs["16-mixed", side]["status"] == "skipped"
        assert "16-mixed" in runs["16-mixed", side]["reason"]
    ratios = {(r["figure"], r["precision"]): r for r in items["3"]["ratios"]}
    assert _positive(ratios["tlcore / hand", "32"]["value"])
    assert _positive(ratios["tlcore / hand", "bf16"]["value"])

    for number in ("4", "6"):  # GPU-only: utilisation, two GPUs
        assert items[number]["status"] == "skipped" and items[number]["reason"]
    assert "| 3 | fine-tuning" in (out / "gpu.md").read_text()
