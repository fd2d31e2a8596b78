"""Every failure a user can cause ends in one tlcore error with its cause and a fix.

Out of memory, a full disk, damaged and hostile files (checkpoints, weights, Hugging Face
configs), decompression bombs, class names holding terminal escape sequences, weights files
that match nothing but BatchNorm counters, TorchScript backbones that run code. Everything is
real: torch's own allocator failing, a real full file system where the machine can mount one,
files made here, the real ``tl`` command.
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tlcore
from tlcore.errors import DiskFullError, TlcoreError
from tlcore.files import atomic_path
from tlcore.plugins.calls import is_out_of_memory
from tlcore.runfolder import RunFolder

from .conftest import TL, run_tl

ESCAPE_CLASS = "red\x1b[2J\x1b]0;pwned\x07"
"""A class folder named with escape sequences: clear the screen, set the terminal's title."""

TINY = ("--backbone", "builtin:simple_cnn", "--weights", "none", "--input-size", "16",
        "--epochs", "1")


def _write_images(folder: Path, count: int, seed: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        pixels = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Two classes of six 16-pixel images; one class folder's name is escape sequences."""
    root = tmp_path_factory.mktemp("errors") / "data"
    _write_images(root / ESCAPE_CLASS, 6, seed=0)
    _write_images(root / "plain", 6, seed=1)
    return root


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A tiny run trained by the real ``tl train``, and what it printed."""
    run = tmp_path_factory.mktemp("errors-run") / "run"
    return run, run_tl("train", data, *TINY, "--out", run)


class _Payload:
    """An object whose unpickling creates ``marker``: what a hostile file holds."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _marker_pickle(marker: Path) -> bytes:
    """A pickled state dict that creates ``marker`` when unpickled."""
    return pickle.dumps({"fc.weight": _Payload(marker)})


# --- names printed safely -------------------------------------------------------------------


def test_class_names_reach_the_terminal_escaped(trained, data):
    run, training = trained
    assert "\x1b" not in training.stdout + training.stderr
    text = run_tl("predict", run, data)
    as_csv = run_tl("predict", run, data, "--csv")
    for output in (text.stdout, text.stderr, as_csv.stdout):
        assert "\x1b" not in output and "\x07" not in output
    assert "red\\x1b[2J\\x1b]0;pwned\\x07" in text.stdout  # the file paths, escaped
    # Escaping is for the terminal only: the model's labels keep the folder's real name.
    assert ESCAPE_CLASS in json.loads((run / "tlcore.json").read_text())["labels"]


# --- decompression bombs ----------------------------------------------------------------------


def _png_header(path: Path, width: int, height: int) -> Path:
    """A small valid PNG that declares ``width`` x ``height`` pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def test_decompression_bombs_are_one_error_naming_the_file(trained, tmp_path):
    run, _ = trained
    # Over tlcore's limit but under twice it (Pillow's own warning zone), and far over it.
    warned = _png_header(tmp_path / "warned.png", 20_000, 20_000)
    bomb = _png_header(tmp_path / "bomb.png", 100_000, 100_000)
    stopped = run_tl("predict", run, warned, check=False)
    assert stopped.returncode == 2
    assert stopped.stderr.count("error:") == 1 and str(warned) in stopped.stderr
    assert "268,435,456 pixels" in stopped.stderr
    skipped = run_tl("predict", run, warned, bomb, "--skip-bad")
    lines = skipped.stderr.splitlines()
    assert [line.split(":")[0] for line in lines] == ["warning", "warning"], lines
    assert str(warned) in lines[0] and str(bomb) in lines[1]
    assert "DecompressionBomb" not in stopped.stderr + skipped.stderr


def test_a_decompression_bomb_in_the_data_is_named_when_the_folder_is_scanned(data, tmp_path):
    from tlcore.data import scan_folder

    root = tmp_path / "data"
    shutil.copytree(data, root)
    _png_header(root / "plain" / "bomb.png", 100_000, 100_000)
    with pytest.raises(tlcore.DataError, match=r"bomb\.png: image is too large"):
        scan_folder(root)


# --- out of memory ----------------------------------------------------------------------------


@pytest.mark.parametrize("cached", [True, False], ids=["extracting", "training"])
def test_running_out_of_memory_names_the_batch_and_the_input_size(tmp_path, cached):
    """A network whose memory grows with the batch, as every network's does: torch's real
    allocator refuses a petabyte once a batch holds more than two images."""
    import torch
    from torch import nn

    class Greedy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[0] > 2:
                torch.empty(2**48)  # 1 PiB of float32
            return self.conv(x).mean(dim=(2, 3))

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (12, 16, 16, 3), dtype=np.uint8)
    with pytest.raises(TlcoreError) as caught:
        tlcore.fit((images, np.array([0, 1] * 6)), backbone=Greedy(), input_size=16, epochs=1,
                   batch_size=4, cache_features=cached, out=tmp_path / "run")
    error = caught.value
    hook = "tl_extract_features" if cached else "tl_train_step"
    assert error.message.startswith(f"out of memory in {hook} (backend 'torch') on a batch of ")
    assert "images of 16x16 pixels" in error.message and "can't allocate memory" in error.message
    assert "train.batch_size" in error.hint and "input_size (--input-size, now 16x16)" in error.hint


def test_out_of_memory_is_told_from_other_framework_errors():
    import torch

    with pytest.raises(RuntimeError) as torch_oom:
        torch.empty(2**48)
    with pytest.raises(MemoryError) as numpy_oom:
        np.empty(2**50)  # 8 PiB of float64
    with pytest.raises(RuntimeError) as shapes:
        torch.zeros(2, 3) @ torch.zeros(2, 3)
    assert is_out_of_memory(torch_oom.value) and is_out_of_memory(numpy_oom.value)
    assert not is_out_of_memory(shapes.value)


# --- a full disk ------------------------------------------------------------------------------


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
def test_a_full_disk_while_writing_names_the_file(tmp_path):
    """/dev/full answers every write with ENOSPC, as a full disk does."""
    target, full_disk = tmp_path / "weights.npz", "/dev/full"
    with pytest.raises(DiskFullError) as caught, atomic_path(target), open(full_disk, "wb") as full:
        full.write(b"weights")
        full.flush()
    assert str(target) in caught.value.message and "--resume" in caught.value.hint
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def _can_mount_tmpfs() -> bool:
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs none /mnt"],
                           capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(
    not _can_mount_tmpfs(),
    reason="cannot mount a small tmpfs here: 'unshare -rm' (an unprivileged user and mount "
    "namespace) is not allowed on this machine, and tests do not run as root",
)
def test_tl_train_on_a_full_disk_says_where_and_how_to_continue(data, tmp_path):
    mount = tmp_path / "small-disk"
    mount.mkdir()
    script = 'mount -t tmpfs -o size=64k none "$1" && shift && exec "$@"'
    result = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, "sh", str(mount),
         *TL, "train", str(data), *TINY, "--out", str(mount / "run"), "--quiet"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2, result.stderr
    error, hint = result.stderr.strip().splitlines()[-2:]
    assert error.startswith(f"error: no space left on the device to write {mount / 'run'}/")
    assert hint == f"hint: free space on that disk, then continue with: tl train --resume " \
                   f"{mount / 'run'}"


# --- damaged and hostile files ------------------------------------------------------------------


def test_a_damaged_checkpoint_is_named_and_no_unsafe_advice_is_given(trained, tmp_path):
    run, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    folder = RunFolder(copy)
    weights = folder.latest_checkpoint() / "weights.npz"
    weights.write_bytes(weights.read_bytes()[:100])  # cut short, as by a failing disk
    with pytest.raises(TlcoreError, match=r"cannot read .*weights\.npz: BadZipFile"):
        folder.load_checkpoint()
    marker = tmp_path / "marker"
    with weights.open("wb") as fh:  # an object array whose unpickling would create the marker
        np.savez(fh, w=np.array([_Payload(marker)], dtype=object))
    with pytest.raises(TlcoreError) as caught:
        folder.load_checkpoint()
    assert caught.value.message == (
        f"cannot read {weights}: ValueError: it holds pickled objects, which tlcore never loads"
    )
    assert "allow_pickle" not in str(caught.value) and not marker.exists()


def test_tl_export_names_a_native_weights_file_holding_a_pickle(trained, tmp_path):
    run, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    marker = tmp_path / "marker"
    weights = copy / "native" / "weights.npz"
    with zipfile.ZipFile(weights, "w") as archive:  # a member that is a pickle, not an array
        archive.writestr("fc.weight.npy", _marker_pickle(marker))
    result = run_tl("export", copy, check=False)
    assert result.returncode == 2
    assert f"error: cannot read {weights}" in result.stderr
    assert "Traceback" not in result.stderr and not marker.exists()


@pytest.mark.parametrize("content", ["random", "pickle"])
def test_a_bad_pt_weights_file_is_named_without_relaying_unsafe_advice(data, tmp_path, content):
    marker = tmp_path / "marker"
    weights = tmp_path / "weights.pt"
    rng = np.random.default_rng(0)
    weights.write_bytes(rng.bytes(2000) if content == "random" else _marker_pickle(marker))
    result = run_tl("train", data, *TINY, "--weights", weights, "--out", tmp_path / "run",
                    check=False)
    assert result.returncode == 2
    assert f"error: cannot read weights file {weights}" in result.stderr
    assert "weights_only" not in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists()


@pytest.mark.parametrize("config", ["{not json", '{"model_type": "no_such_model"}', "[]"])
def test_a_malformed_hf_config_is_named(data, tmp_path, config):
    pytest.importorskip("transformers")
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(config)
    with pytest.raises(TlcoreError) as caught:
        tlcore.fit(data, backbone=f"hf:{folder}", weights="none", input_size=16, epochs=1,
                   out=tmp_path / "run")
    assert f"{folder / 'config.json'} is not a usable config" in caught.value.message
    assert "save_pretrained" in caught.value.hint


# --- weights that match nothing that matters -------------------------------------------------


def test_a_weights_file_matching_only_batchnorm_counters_is_refused(data, tmp_path):
    import torch

    from tlcore_torch.builtin import SimpleCNN

    counters = {k: v for k, v in SimpleCNN().state_dict().items() if "num_batches" in k}
    assert len(counters) == 3
    torch.save(counters, tmp_path / "counters.pt")
    with pytest.raises(TlcoreError, match=r"matches the backbone .*only 3 BatchNorm counters"):
        tlcore.fit(data, backbone="builtin:simple_cnn", weights=str(tmp_path / "counters.pt"),
                   input_size=16, epochs=1, out=tmp_path / "run")


# --- TorchScript runs code ------------------------------------------------------------------------


# TorchScript is what file: sources load; torch 2.13 marks it deprecated in favour of export.
@pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")
def test_loading_a_torchscript_backbone_warns_that_it_runs_code(tmp_path):
    import torch
    from torch import nn

    from tlcore.build import build_model
    from tlcore.progress import Progress

    path = tmp_path / "net.pt"
    torch.jit.save(torch.jit.script(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())), str(path))
    stream = io.StringIO()
    build_model(tlcore.make_recipe(backbone=f"file:{path}", input_size=16), 2, Progress(
        quiet=True, stream=stream))
    assert stream.getvalue().count("runs the code inside it") == 1, stream.getvalue()
    assert f"warning: {path} is TorchScript" in stream.getvalue()
