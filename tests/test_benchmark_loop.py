"""``benchmarks/loop.py`` at its smallest (``--quick``: torch, 5 images per class, one seed,
32 px, the default recipe), its imbalanced draw, and the paired table and merge its results
pages are built from.

The committed tables (``benchmarks/results/loop*.md``) come from the full commands; this keeps
the command and the arithmetic behind their "vs default" column right. It needs Fashion-MNIST
from the Debian package ``dataset-fashion-mnist``, which ``.ci/run`` installs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.loop import imbalanced_sample, merge, table

ROOT = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist")  # as benchmarks/transfer.py reads it


@pytest.mark.skipif(
    not (FASHION / "train-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)",
)
def test_the_quick_loop_run_trains_exports_and_scores(tmp_path):
    command = [sys.executable, "-m", "benchmarks.loop", "--quick", "--variants", "default",
               "--results", str(tmp_path), "--name", "smoke"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "smoke.json").read_text())
    (row,) = result["rows"]
    assert (row["backend"], row["shots"], row["variant"]) == ("torch", 5, "default")
    assert result["test_images"] == 100 and row["accuracy"] > 0.3  # 10 classes: chance 0.1
    assert row["stage_lrs"] == {"head": 1e-3, "fine_tune": 1e-4}
    assert set(row["stage_seconds"]) == {"head", "fine_tune"}
    assert 0 < sum(row["stage_seconds"].values()) < row["seconds"]
    assert f"| torch | 5 | default | {row['accuracy']:.3f} ± 0.000 |" in (
        tmp_path / "smoke.md").read_text()


def test_the_imbalanced_draw_falls_from_shots_to_shots_over_the_ratio():
    labels = np.repeat(np.arange(10), 100)
    drawn = imbalanced_sample(labels, 50, 10.0, seed=3)
    counts = np.bincount(labels[drawn], minlength=10)
    assert counts[0] == 50 and counts[-1] == 5 and list(counts) == sorted(counts, reverse=True)
    assert len(set(drawn.tolist())) == len(drawn)  # without replacement


def summary(variant: str, accuracies: dict[int, float]) -> dict:
    return {"data": "d", "input_size": 64, "command": variant, "seconds": 1.0,
            "variants": {variant: {}},
            "rows": [{"backend": "torch", "shots": 5, "seed": seed, "variant": variant,
                      "accuracy": value, "seconds": 1.0} for seed, value in accuracies.items()]}


def test_merged_files_pair_each_seed_with_its_own_default():
    merged = merge([summary("default", {0: 0.5, 1: 0.7}), summary("ema", {0: 0.6, 1: 0.7})])
    lines = table(merged["rows"]).splitlines()
    assert lines[-1] == "| torch | 5 | ema | 0.650 ± 0.050 | +0.050 ± 0.050 | 1 |"
    with pytest.raises(SystemExit):
        merge([summary("default", {0: 0.5}), {**summary("ema", {0: 0.5}), "input_size": 32}])
