"""A distributed run is the same run: two CPU processes (torchrun with gloo; two ``TF_CONFIG``
workers) against one process with the same global batch, through the real ``tl`` command.

Both stages are covered: the head on cached features (each rank extracts its shard, the
features are gathered) and fine-tuning the last block on images. The data is chosen so that
the global batches split unevenly (10 = 5 + 5, then 7 = 4 + 3), which checks the loss shares.

Tolerance: the two runs do the same arithmetic except that each gradient is the sum of two
partial sums (one per rank) instead of one sum over the batch, and the features and losses
of a batch are computed in two smaller batches. float32 addition in another order differs by
about 1e-7 relative per operation; over the 24 Adam steps here that stays far below 1e-4 on
weights of order 0.1 to 1, while one wrong share (a rank's loss weighted 1/2 instead of 4/7,
a missing batch) moves weights by ~1e-3 or more: ``atol=2e-5, rtol=1e-4`` tells them apart.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.conftest import TL, run_tl
from tlcore.testing.workers import free_ports

TOLERANCE = {"atol": 2e-5, "rtol": 1e-4}


def _folder(root: Path, classes=("a", "b", "c"), count: int = 12) -> Path:
    """Three classes of 16x16 images that differ in brightness and colour: learnable."""
    rng = np.random.default_rng(7)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for j in range(count):
            pixels = rng.integers(0, 80, (16, 16, 3)) + 60 * c
            pixels[..., c] += 40
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(root / name / f"{j}.png")
    return root


def _recipe(tmp_path: Path, backend: str, weights: Path, epochs=(2, 2)) -> Path:
    recipe = {
        "backend": backend,
        "backbone": {"source": "builtin:simple_cnn", "weights": str(weights), "input_size": 16},
        "train": {"batch_size": 10, "seed": 3, "device": "cpu", "stages": [
            {"name": "head", "epochs": epochs[0], "lr": 1e-2, "freeze": {"policy": "all"}},
            {"name": "tune", "epochs": epochs[1], "lr": 1e-3,
             "freeze": {"policy": "last_n", "n": 1, "batchnorm": "frozen"}},
        ]},
        "data": {"val_split": 0.25},
        "export": {"formats": ["native", "onnx"]},
    }
    path = tmp_path / f"{backend}-{'-'.join(map(str, epochs))}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    """The data, and for each backend backbone weights to start from (a short run from
    random weights), so that the default fine-tuning rules apply: pretrained backbone,
    BatchNorm frozen."""
    root = tmp_path_factory.mktemp("dist")
    data = _folder(root / "data")
    starts: dict[str, Path] = {}

    def weights(backend: str) -> Path:
        if backend not in starts:
            start = root / f"start-{backend}"
            recipe = {
                "backend": backend,
                "backbone": {"source": "builtin:simple_cnn", "weights": "none",
                             "input_size": 16},
                "train": {"stages": [{"name": "all", "epochs": 1,
                                      "freeze": {"policy": "none"}}]},
                "export": {"formats": ["native"]},
            }
            run_tl("train", data, "--set", f"backend={backend}", "--recipe",
                   _write(root / f"start-{backend}.yaml", recipe), "--out", start, "-q")
            starts[backend] = start / "native" / "weights.npz"
        return starts[backend]

    return root, data, weights


def _write(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe))
    return path


def _weights(run: Path) -> dict[str, np.ndarray]:
    with np.load(run / "native" / "weights.npz") as npz:
        return {name: npz[name] for name in npz.files}


def _assert_same_run(one: Path, two: Path) -> None:
    a, b = _weights(one), _weights(two)
    assert a.keys() == b.keys()
    moved = 0
    for name in a:
        np.testing.assert_allclose(b[name], a[name], err_msg=name, **TOLERANCE)
        moved += not np.array_equal(a[name], b[name])
    assert moved, "the two runs wrote identical bits: did the second one really split?"
    history_one = json.loads((one / "history.json").read_text())
    history_two = json.loads((two / "history.json").read_text())
    assert [r["epoch"] for r in history_one] == [r["epoch"] for r in history_two]
    for row_one, row_two in zip(history_one, history_two, strict=True):
        for key in ("loss", "val_loss", "val_accuracy", "accuracy"):
            assert row_two[key] == pytest.approx(row_one[key], rel=1e-4, abs=1e-5), key


@pytest.fixture(scope="module")
def torch_two(setting):
    """One uninterrupted two-process torch run: what the other runs are compared with."""
    root, data, weights = setting
    recipe = _recipe(root, "torch", weights("torch"), epochs=(3, 5))
    two = root / "torch-two"
    result = run_tl("train", data, "--recipe", recipe, "--out", two, "--nproc", "2")
    return recipe, two, result


def test_torchrun_on_two_processes_trains_the_run_one_process_trains(setting, torch_two):
    root, data, _ = setting
    recipe, two, result = torch_two
    one = root / "torch-one"
    run_tl("train", data, "--recipe", recipe, "--out", one, "-q")
    assert "torch on cpu, 2 processes (torch.distributed (gloo))" in result.stderr, result.stderr
    assert result.stdout.count("done:") == 1  # rank 0 speaks for the run
    _assert_same_run(one, two)
    info = json.loads((two / "tlcore.json").read_text())
    assert info["compute"]["world_size"] == 2 and info["compute"]["device"] == "cpu"
    assert info["compute"]["peak_memory_bytes"] > 50e6  # rank 0's peak: torch alone is more
    assert info["onnx"]["parity"]["max_abs_diff"] <= 1e-4  # rank 0 wrote a checked bundle
    # The last stage trained on images, the first on cached features: both stages ran split.
    assert {row["stage"] for row in json.loads((two / "history.json").read_text())} == {
        "head", "tune"}


def _workers(command: list[str]) -> list[int]:
    """The worker processes torchrun started for ``command`` (its children), by rank."""
    found: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        env = dict(item.split(b"=", 1) for item in environ if b"=" in item)
        if b"TORCHELASTIC_RUN_ID" in env and command[-1].encode() in cmdline:
            found[int(env[b"RANK"])] = int(entry.name)
    return [found[r] for r in sorted(found)]


def test_a_killed_rank_ends_the_run_and_the_resume_matches_an_uninterrupted_one(
    setting, torch_two
):
    root, data, _ = setting
    recipe, whole, _ = torch_two
    killed = root / "torch-killed"
    command = [*TL, "train", str(data), "--recipe", str(recipe), "--nproc", "2",
               "--out", str(killed)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    latest = killed / "checkpoints" / "latest"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (
        latest.is_file() and latest.read_text().strip() >= "000003"
    ):
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    ranks = _workers(command)
    assert len(ranks) == 2, ranks
    os.kill(ranks[1], signal.SIGKILL)
    _, stderr = process.communicate(timeout=120)  # never a hang
    assert process.returncode != 0
    assert "rank: 1" in stderr and "Signal 9 (SIGKILL)" in stderr, stderr[-3000:]
    # One process cannot continue what two trained: each rank's share would differ.
    refused = run_tl("train", "--resume", killed, check=False)
    assert refused.returncode == 2 and "trained by 2 process(es)" in refused.stderr
    run_tl("train", "--resume", killed, "--nproc", "2", "-q")
    a, b = _weights(whole), _weights(killed)
    for name in a:
        np.testing.assert_array_equal(b[name], a[name], err_msg=name)


def test_tl_train_nproc_is_refused_for_keras_with_the_way_to_do_it(tmp_path):
    refused = run_tl("train", tmp_path, "--backend", "keras", "--nproc", "2", check=False)
    assert refused.returncode == 2
    assert "TF_CONFIG" in refused.stderr, refused.stderr


def test_python_m_tlcore_is_the_tl_command():
    result = subprocess.run([sys.executable, "-m", "tlcore", "--help"], capture_output=True,
                            text=True, check=True)
    assert "train" in result.stdout


def test_two_tf_config_workers_train_the_run_one_process_trains(setting):
    """Keras under MultiWorkerMirroredStrategy: one ``tl train`` per worker, as users start
    them (no launcher), each with its own ``TF_CONFIG``."""
    root, data, weights = setting
    recipe = _recipe(root, "keras", weights("keras"))
    one, two = root / "keras-one", root / "keras-two"
    run_tl("train", data, "--recipe", recipe, "--out", one, "-q")
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    workers = []
    for index in range(2):
        config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(config)}
        workers.append(subprocess.Popen(
            [*TL, "train", str(data), "--recipe", str(recipe), "--out", str(two)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    outputs = [worker.communicate(timeout=600) for worker in workers]
    for worker, (_, stderr) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, stderr[-3000:]
    assert "2 processes (MultiWorkerMirroredStrategy" in outputs[0][1], outputs[0][1][-2000:]
    assert outputs[1][0].count("done:") == 0 and outputs[0][0].count("done:") == 1
    _assert_same_run(one, two)
    assert json.loads((two / "tlcore.json").read_text())["compute"]["world_size"] == 2


def test_batches_decoded_ahead_are_the_batches_decoded_in_turn():
    """What a GPU run prefetches (the next batch, augmented, in a background thread) equals
    what a CPU run makes one after the other: the generator is drawn in the same order."""
    from tlcore.data import augment
    from tlcore.train.prefetch import prefetched

    images = np.random.default_rng(0).integers(0, 255, (12, 16, 16, 3), dtype=np.uint8)

    def batches(ahead: bool) -> list[np.ndarray]:
        rng = np.random.default_rng(5)
        make = lambda b: augment(images[b * 3 : b * 3 + 3], ("hflip", "shift"), rng)  # noqa: E731
        return list(prefetched(make, 4, ahead))

    for one, other in zip(batches(True), batches(False), strict=True):
        np.testing.assert_array_equal(one, other)

    def failing(b: int) -> int:
        if b == 2:
            raise ValueError("image 7 is unreadable")
        return b

    made = prefetched(failing, 4, True)
    assert [next(made), next(made)] == [0, 1]
    with pytest.raises(ValueError, match="image 7"):
        next(made)


def test_a_backend_launched_the_other_way_is_refused_not_run_twice(setting):
    """Keras started by torchrun: its tl_setup joins no one (it reads TF_CONFIG), so every
    process would train the whole run into one folder; the run stops with the way to launch."""
    root, data, _ = setting
    refused = run_tl("train", data, "--backend", "keras", "--backbone", "builtin:simple_cnn",
                     "--weights", "none", "--out", root / "twice",
                     env={"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}, check=False)
    assert refused.returncode == 2, refused.stderr
    assert "2 processes were launched, but backend 'keras' joined none" in refused.stderr
    assert "one process per TF_CONFIG worker" in refused.stderr


def test_which_gpu_each_process_takes():
    """The core's choice of GPU, with the counts a GPU machine reports (no GPU needed)."""
    from tlcore.errors import TlcoreError
    from tlcore.parallel import choose_gpu

    def pick(word, count, local_rank=0, here=1):
        return choose_gpu(word, count, local_rank, here, "none found", "use cpu")

    assert [pick("auto", 0), pick("cpu", 4), pick("auto", 4), pick("cuda", 4)] == [
        None, None, 0, 0]
    assert [pick("auto", 4, 3, 4), pick("cuda", 4, 2, 4), pick("cuda:3", 4)] == [3, 2, 3]
    for word, count, rank, here, message in (
        ("cuda", 0, 0, 1, "needs a CUDA GPU, but none found"),
        ("cuda:4", 4, 0, 1, "asks for GPU 4, but 4 GPU"),
        ("auto", 2, 2, 3, "local rank 2's GPU"),
        ("cuda:1", 4, 0, 2, "every process of this machine on one GPU"),
    ):
        with pytest.raises(TlcoreError, match=message):
            pick(word, count, rank, here)
