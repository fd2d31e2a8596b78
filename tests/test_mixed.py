"""Both backends in one process, and each backend alone without the other's framework.

Two fresh Python processes (a framework, once imported, stays for good) fine-tune
``builtin:simple_cnn`` on a small two-class task, one with torch then Keras, the other with
Keras then torch, with the default export formats (the native file and a verified
``model.onnx``). Each reports every run's history and which frameworks were imported by the
end of it, so:

- after its first run, each process has used one backend only: it must not have imported the
  other framework (training and the ONNX export included);
- each backend's second-place run must repeat its first-place run in the other process: using
  the other framework first changed nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tlcore.plugins import backends

FRAMEWORKS = {"torch": ("torch",), "keras": ("tensorflow", "keras")}

SCRIPT = """
import json, sys, tempfile

import numpy as np

import tlcore

rng = np.random.default_rng(0)
y = np.arange(64) % 2
low = rng.integers(0, 110, (64, 32, 32, 3))
x = np.where(y[:, None, None, None] == 1, 255 - low, low).astype(np.uint8)
frameworks = ("torch", "tensorflow", "keras")
report = []
with tempfile.TemporaryDirectory() as tmp:
    for i, backend in enumerate(sys.argv[1:]):
        recipe = {
            "backend": backend,
            "backbone": {"source": "builtin:simple_cnn", "weights": "none"},
            "train": {"batch_size": 16, "seed": 2, "stages": [
                {"name": "all", "epochs": 1, "lr": 3e-3, "freeze": {"policy": "none"}},
            ]},
            "data": {"val_split": 0.2},
        }
        result = tlcore.fit((x, y), recipe=recipe, out=f"{tmp}/run{i}")
        info = json.loads(open(f"{tmp}/run{i}/tlcore.json").read())
        loaded = sorted(
            f for f in frameworks if any(m == f or m.startswith(f + ".") for m in sys.modules)
        )
        report.append({
            "backend": backend,
            "history": result.history,
            "parity": info["onnx"]["parity"],
            "loaded": loaded,
        })
print(json.dumps(report))
"""

ORDERS = [("torch", "keras"), ("keras", "torch")]


def _installed(name: str) -> bool:
    try:
        for package in backends()[name].packages:
            __import__(package)
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def runs() -> dict[tuple[str, ...], list[dict]]:
    """Both orders of :data:`ORDERS`, each in its own process, started at once."""
    if not all(_installed(name) for name in FRAMEWORKS):
        pytest.skip("needs both backends installed")
    procs = {
        order: subprocess.Popen(
            [sys.executable, "-c", SCRIPT, *order],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for order in ORDERS
    }
    out = {}
    for order, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{order}:\n{stderr[-4000:]}"
        out[order] = json.loads(stdout.strip().splitlines()[-1])
    return out


@pytest.mark.parametrize("order", ORDERS, ids="-then-".join)
def test_a_process_using_one_backend_never_imports_the_other_framework(runs, order):
    """Training and the ONNX export with one backend load that framework only."""
    first = runs[order][0]
    assert first["backend"] == order[0]
    assert first["loaded"] == sorted(FRAMEWORKS[order[0]])
    assert first["history"][-1]["val_accuracy"] >= 0.9, first
    assert first["parity"]["top1_agreement"] == 1.0


@pytest.mark.parametrize("order", ORDERS, ids="-then-".join)
def test_the_second_backend_in_a_process_trains_as_if_alone(runs, order):
    """A backend used after the other one trains, exports and scores exactly as it does when it
    is the first (and only) one in its process."""
    second = runs[order][1]
    (alone,) = [first for first, _ in runs.values() if first["backend"] == second["backend"]]
    assert second["loaded"] == sorted({*FRAMEWORKS["torch"], *FRAMEWORKS["keras"]})
    assert second["history"][-1]["val_accuracy"] >= 0.9, second
    assert second["parity"]["top1_agreement"] == 1.0
    assert second["parity"]["max_abs_diff"] <= second["parity"]["tolerance"]
    for got, expected in zip(second["history"], alone["history"], strict=True):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert got[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-7), key
