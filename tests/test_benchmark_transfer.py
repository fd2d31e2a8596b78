"""``benchmarks/transfer.py`` at its smallest: one backend, one shot count, one seed.

The committed table (``benchmarks/results/transfer.md``) comes from the full command; this
keeps the command working. It needs Fashion-MNIST from the Debian package
``dataset-fashion-mnist``, which ``.ci/run`` installs where apt is available.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist")  # as benchmarks/transfer.py reads it

pytestmark = pytest.mark.skipif(
    not (FASHION / "train-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)",
)


def test_the_smallest_transfer_table(tmp_path):
    command = [sys.executable, "-m", "benchmarks.transfer", "--backends", "torch", "--shots",
               "5", "--seeds", "0", "--size", "32", "--test", "100", "--results", str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "transfer.json").read_text())
    (row,) = result["rows"]
    assert (row["backend"], row["shots"], result["test_images"]) == ("torch", 5, 100)
    assert all(0.0 <= row[method] <= 1.0 for method in ("tlcore", "random", "logreg"))
    assert row["tlcore"] > 0.3  # ten classes: pretrained features learn from 5 images each
    assert "| torch | 5 |" in (tmp_path / "transfer.md").read_text()
