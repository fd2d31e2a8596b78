"""Faults a run must survive and data that must be what it looks like.

Property-based tests of the folder scanner on generated trees (look-alike and odd class names,
hidden files, empty folders, links back into the tree); ``kill -9`` of a real ``tl train`` at
random points, during checkpoint writing too, then ``--resume`` bit for bit; SIGTERM; a second
run on a folder in use; a run stopped before its first checkpoint started again; a resume on
changed data refused; a full file system (where one can be mounted).

The random kill points are drawn anew on every run; ``TLCORE_FAULT_SEED`` repeats a draw, and
every failure message names the seed and the points.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

import tlcore
from tlcore.data import ArrayDataset, scan_folder, split
from tlcore.data.fingerprint import check_resume_data, data_fingerprint
from tlcore.errors import DataError, TlcoreError
from tlcore.runfolder import RunFolder, read_arrays
from tlcore.train import Trainer

from .conftest import run_tl

SEED = int(os.environ.get("TLCORE_FAULT_SEED", random.SystemRandom().randrange(10**6)))

# --- the scanner, on generated trees -------------------------------------------------------

_buffer = io.BytesIO()
Image.new("RGB", (8, 8), (90, 20, 200)).save(_buffer, format="PNG")
PNG = _buffer.getvalue()

#: Class names that collide by case or Unicode form, hidden and ignored ones, and any text.
NAMES = st.sampled_from(
    ["cat", "Cat", "CAT", "dog", "\u00e9t\u00e9", unicodedata.normalize("NFD", "\u00e9t\u00e9"),
     ".hidden", "__MACOSX", "a\x1b[31mred", "x.png", os.fsdecode(b"not-utf8-\xff")]
) | st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"),
    min_size=1, max_size=8,
).filter(lambda name: name not in (".", "..") and not name.lower().startswith("zz-link"))

CLASS = st.fixed_dictionaries({
    "name": NAMES,
    "images": st.integers(0, 3),
    "nested": st.booleans(),  # an image in a sub-folder
    "hidden": st.booleans(),  # a hidden image (._x.png): not read
    "empty": st.booleans(),  # an empty sub-folder
    "other": st.booleans(),  # a file that is not an image
})

#: root: data/zz -> .   class: data/zz -> one class   other: a class's file -> another's
#: same: a class's file -> one of its own   up: a folder in a class -> ..
LINK = st.tuples(st.sampled_from(["root", "class", "other", "same", "up"]), st.integers(0, 9),
                 st.integers(0, 9))


def _ignored(name: str) -> bool:
    return name.startswith(".") or name in ("__MACOSX", "__pycache__")


def _build(root: Path, classes: list[dict], links: list[tuple[str, int, int]]) -> dict:
    """Write the tree; the classes and images a correct scan must find, and the links."""
    expected: dict[str, list[str]] = {}
    for spec in classes:
        folder = root / spec["name"]
        folder.mkdir()
        images = [f"i{j}.png" for j in range(spec["images"])]
        if spec["nested"]:
            images.append("sub/n.png")
        for image in images:
            (folder / image).parent.mkdir(exist_ok=True)
            (folder / image).write_bytes(PNG)
        if spec["hidden"]:
            (folder / "._h.png").write_bytes(PNG)
        if spec["empty"]:
            (folder / "empty").mkdir()
        if spec["other"]:
            (folder / "notes.txt").write_text("not an image")
        if not _ignored(spec["name"]):
            expected[spec["name"]] = sorted(images)
    names = [spec["name"] for spec in classes if not _ignored(spec["name"])]
    made = []
    for i, (kind, a, b) in enumerate(links):
        link = _make_link(root, names, expected, kind, a, b, f"zz-link-{i}")
        if link is not None:
            made.append(link)
    return {"classes": expected, "links": made}


def _make_link(root, names, expected, kind, a, b, name) -> str | None:
    if kind == "root":
        (root / name).symlink_to(".")
        return name
    if not names:
        return None
    here = names[a % len(names)]
    if kind == "class":
        (root / name).symlink_to(here)
        return name
    if kind == "up":
        (root / here / name).symlink_to("..")
        return name
    source = here if kind == "same" else names[b % len(names)]
    if not expected[source] or (kind == "other" and source == here):
        return None
    (root / here / f"{name}.png").symlink_to(Path("..", source, expected[source][0]))
    return f"{name}.png"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(classes=st.lists(CLASS, max_size=5, unique_by=lambda c: c["name"]),
       links=st.lists(LINK, max_size=3))
def test_the_scanner_finds_exactly_the_real_class_folders(classes, links):
    """Whatever the tree, a scan gives exactly the class folders that hold images, each with
    exactly its own images, or a DataError: never a class made by a link, never an image
    twice; every link skipped is named in a warning, and so are look-alike class names."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp, "data")
        root.mkdir()
        tree = _build(root, classes, links)
        expected = tree["classes"]
        usable = len(expected) >= 2 and all(expected.values())
        event("usable tree" if usable else "unusable tree")
        try:
            dataset = scan_folder(root)
        except DataError:
            assert not usable, f"a usable tree was refused: {expected}"
            return
        assert usable, f"an unusable tree was accepted: {expected}"
        assert dataset.class_names == tuple(sorted(expected))
        found = {name: [] for name in expected}
        for path, label in zip(dataset.paths, dataset.labels.tolist(), strict=True):
            name = dataset.class_names[label]
            found[name].append(path.relative_to(root / name).as_posix())
        assert found == expected
        text = "\n".join(dataset.warnings)
        for link in tree["links"]:
            assert link in text, (link, dataset.warnings)
        folded = [unicodedata.normalize("NFKC", n).casefold() for n in expected]
        if len(set(folded)) < len(folded):
            assert "differ only in case or Unicode form" in text


def test_links_back_into_the_tree_are_skipped_and_named(tmp_path):
    """``ln -s . data/zz`` and a class linked under another name make no class; a link to a
    folder outside the data folder (an image store) is a class like any other."""
    root = tmp_path / "data"
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for j in range(2):
            (root / name / f"{j}.png").write_bytes(PNG)
    store = tmp_path / "store" / "bird"
    store.mkdir(parents=True)
    (store / "b.png").write_bytes(PNG)
    (root / "zz").symlink_to(".")
    (root / "kitty").symlink_to("cat")
    (root / "bird").symlink_to(store)
    (root / "cat" / "twice.png").symlink_to("0.png")
    dataset = scan_folder(root)
    assert dataset.class_names == ("bird", "cat", "dog")
    assert dataset.describe() == "5 images, 3 classes: bird 1, cat 2, dog 2"
    (warning,) = dataset.warnings
    assert "zz (leads back to the data folder itself)" in warning
    assert "kitty (leads to cat, elsewhere in the data folder)" in warning
    assert "cat/twice.png (the same file as 0.png)" in warning


def test_one_file_in_two_classes_is_refused(tmp_path):
    root = tmp_path / "data"
    outside = tmp_path / "x.png"
    outside.write_bytes(PNG)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        (root / name / "own.png").write_bytes(PNG)
        (root / name / "shared.png").symlink_to(outside)
    with pytest.raises(DataError, match="in two classes at once") as info:
        scan_folder(root)
    assert "cat/shared.png and dog/shared.png" in info.value.message


def test_a_class_too_small_to_validate_is_named(tmp_path):
    root = tmp_path / "data"
    for name, count in (("big", 6), ("tiny", 1)):
        (root / name).mkdir(parents=True)
        for j in range(count):
            (root / name / f"{j}.png").write_bytes(PNG)
    train, val = split(scan_folder(root), 0.3, seed=0)
    assert val.describe().endswith("big 2, tiny 0")
    assert any("'tiny' (1 image)" in text for text in train.warnings)


def test_a_resume_on_other_arrays_is_refused():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (6, 8, 8, 3), dtype=np.uint8)
    labels = np.array([0, 1] * 3)
    before = data_fingerprint(*split(ArrayDataset(images, labels), 0.0, 0))
    same = data_fingerprint(*split(ArrayDataset(images.copy(), labels), 0.0, 0))
    assert check_resume_data(before, same, changed_ok=False, run=Path("run")) == []
    images[0, 0, 0, 0] ^= 1
    after = data_fingerprint(*split(ArrayDataset(images, labels), 0.0, 0))
    with pytest.raises(DataError, match="other images or labels"):
        check_resume_data(before, after, changed_ok=False, run=Path("run"))


# --- resuming on changed data; a run stopped before its first checkpoint; the lock -----------

TINY = {
    "backbone": {"source": "builtin:simple_cnn", "weights": "none", "input_size": 16},
    "train": {"batch_size": 8, "seed": 1, "stages": [
        {"name": "all", "epochs": 1, "lr": 1e-3, "freeze": {"policy": "none"}}]},
    "data": {"val_split": 0.25},
    "export": {"formats": ["native"]},
}


def _tiny_folder(root: Path, classes=("a", "b"), count: int = 8) -> Path:
    rng = np.random.default_rng(len(classes))
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for j in range(count):
            pixels = rng.integers(0, 100, (16, 16, 3)) + 100 * c
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{j}.png")
    return root


def test_a_resume_on_changed_data_is_refused_with_the_difference(tmp_path):
    data = _tiny_folder(tmp_path / "data")
    (data / "a" / "._mac.png").write_bytes(PNG)
    run = tmp_path / "run"
    result = tlcore.fit(data, recipe=TINY, out=run)
    hidden = [text for text in result.warnings if "a/._mac.png" in text]
    assert hidden, result.warnings  # said by name, and kept in tlcore.json
    assert hidden[0] in json.loads((run / "tlcore.json").read_text())["warnings"]

    shutil.copy(data / "a" / "0.png", data / "a" / "new.png")
    refused = run_tl("train", "--resume", run, check=False)
    assert refused.returncode == 2, refused.stderr
    error, hint = refused.stderr.strip().splitlines()[-2:]
    assert error.endswith("changed since the run started: training data: 1 file(s) added: "
                          "'a/new.png'"), refused.stderr
    assert f"tl train --resume {run} --data-changed-ok" in hint
    _tiny_folder(data, ("c",))
    with pytest.raises(DataError, match=r"class\(es\) added: 'c'") as info:
        tlcore.fit(out=run, resume=True, data_changed_ok=True)  # the outputs cannot change
    assert "cannot change the classes" in info.value.hint
    shutil.rmtree(data / "c")
    run_tl("train", "--resume", run, "--data-changed-ok", "--quiet")
    warnings = json.loads((run / "tlcore.json").read_text())["warnings"]
    assert any("resumed on data that changed" in text and "a/new.png" in text
               for text in warnings), warnings
    alone = run_tl("train", data, "--data-changed-ok", check=False)
    assert alone.returncode == 2 and "goes with --resume" in alone.stderr


def test_a_run_stopped_before_its_first_checkpoint_starts_again_in_place(tmp_path):
    data = _tiny_folder(tmp_path / "data")
    run = tmp_path / "run"
    trainer = Trainer(tlcore.make_recipe(TINY, data=str(data)), run)
    (data / "b" / "3.png").rename(tmp_path / "away.png")  # read in the first epoch: it fails
    with pytest.raises(DataError, match="image file not found"):
        trainer.run()
    assert (run / "run.json").is_file() and RunFolder(run).latest_checkpoint() is None
    (tmp_path / "away.png").rename(data / "b" / "3.png")
    again = tlcore.fit(out=run, resume=True)  # its own recipe, from the beginning
    assert [row["epoch"] for row in again.history] == [1]
    # A new run with --out in such a folder replaces it; a finished run is never replaced.
    folder = RunFolder(tmp_path / "stranded")
    assert folder.start({"n": 1}, resume=False) == "new"
    folder.release()
    (folder.path / "checkpoints" / ".000001.x").mkdir(parents=True)
    assert folder.start({"n": 2}, resume=False) == "again"
    assert json.loads(folder.run_file.read_text()) == {"n": 2}
    assert not (folder.path / "checkpoints").exists()
    folder.release()
    with pytest.raises(TlcoreError, match="already exists and is not empty"):
        RunFolder(run).start({}, resume=False)


def test_a_folder_in_use_is_refused_and_released_after_the_run(tmp_path):
    data = _tiny_folder(tmp_path / "data")
    holder = RunFolder(tmp_path / "run")
    holder.lock()
    with pytest.raises(TlcoreError, match=rf"in use by another run \(process {os.getpid()}\)"):
        tlcore.fit(data, recipe=TINY, out=holder.path)
    holder.release()
    tlcore.fit(data, recipe=TINY, out=holder.path)
    RunFolder(holder.path).check_free()  # the run let go of it


def test_checkpoint_files_and_folders_are_fsynced_before_they_are_renamed(tmp_path, monkeypatch):
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc/self/fd to name the descriptors fsync is given")
    synced: list[str] = []
    fsync = os.fsync

    def recording(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recording)
    folder = RunFolder(tmp_path / "run")
    weights = {"w": np.ones(3, np.float32)}
    final = folder.save_checkpoint({"counter": 1}, weights, weights, weights, True)
    names = [Path(path).name for path in synced]
    checkpoints = str(tmp_path / "run" / "checkpoints")
    for written in ("weights.npz", "optimizer.npz", "best.npz", "state.json", "latest"):
        assert any(name.startswith(f".{written}.") for name in names), (written, names)
    assert any(name.startswith(".000001.") for name in names), names  # before its rename
    assert checkpoints in synced  # and the rename itself
    assert sorted(p.name for p in final.iterdir()) == [
        "best.npz", "optimizer.npz", "state.json", "weights.npz"]


# --- kill -9, SIGTERM and a second run, on the real tl command ------------------------------

#: Runs ``tl train`` with ``os.replace`` watched inside the run folder (``TLF_RUN``): every
#: file and checkpoint becomes visible through it. ``TLF_LOG`` lists what it renames;
#: ``TLF_KILL=before:N`` / ``after:N`` sends SIGKILL around the N-th rename, ``after-latest:K``
#: right after checkpoint K; ``TLF_PAUSE=FILE`` waits after the first checkpoint, FILE
#: written, until a signal comes.
CHILD = r"""
import os, signal, sys, time
run = os.path.realpath(os.environ["TLF_RUN"])
kill, log, pause = (os.environ.get(k, "") for k in ("TLF_KILL", "TLF_LOG", "TLF_PAUSE"))
real_replace, counts = os.replace, {"all": 0, "latest": 0}
def replace(src, dst, *args, **kwargs):
    target = os.path.realpath(dst)
    if not target.startswith(run + os.sep):
        return real_replace(src, dst, *args, **kwargs)
    name = os.path.relpath(target, run)
    counts["all"] += 1
    if log:
        with open(log, "a") as fh:
            fh.write(name + "\n")
    if kill == f"before:{counts['all']}":
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst, *args, **kwargs)
    counts["latest"] += name == os.path.join("checkpoints", "latest")
    if kill == f"after:{counts['all']}" or kill == f"after-latest:{counts['latest']}":
        os.kill(os.getpid(), signal.SIGKILL)
    if pause and counts["latest"] == 1 and name.endswith("latest"):
        open(pause, "w").close()
        while True:
            time.sleep(0.02)
os.replace = replace
from tlcore.cli import main
main(sys.argv[1:])
"""

ARGS = ["--backbone", "builtin:simple_cnn", "--weights", "none", "--input-size", "16",
        "--epochs", "2", "--batch-size", "8", "--seed", "7", "--val-split", "0.25",
        "--set", "export.formats=native", "--quiet"]


def _tl(run: Path, *args, env: dict[str, str] | None = None, wait: bool = True):
    command = [sys.executable, "-c", CHILD, "train", *map(str, args)]
    full = {**os.environ, "TLF_RUN": str(run), **(env or {})}
    if not wait:
        return subprocess.Popen(command, env=full, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, env=full, capture_output=True, text=True, timeout=300)


def _same_weights(run: Path, reference: Path, why: str) -> None:
    got = read_arrays(run / "native" / "weights.npz")
    want = read_arrays(reference / "native" / "weights.npz")
    assert got.keys() == want.keys(), why
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value, err_msg=f"{name}: {why}")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """A tiny data folder and one uninterrupted run on it, with the list of what the run
    renamed into its folder (where kills can land)."""
    root = tmp_path_factory.mktemp("faults")
    data = _tiny_folder(root / "data", count=12)
    run, log = root / "reference", root / "renames.txt"
    done = _tl(run, data, *ARGS, "--out", run, env={"TLF_LOG": str(log)})
    assert done.returncode == 0, done.stderr
    return {"data": data, "run": run, "renames": log.read_text().splitlines(), "root": root}


def test_kill_9_anywhere_then_resume_ends_bit_identical(reference, tmp_path):
    """SIGKILL at a random rename of the run's checkpoints (between the files of one, or
    right before ``latest`` points at it), resume, SIGKILL right after a random checkpoint of
    the resumed run, resume again: the weights are the uninterrupted run's, bit for bit."""
    renames = reference["renames"]
    epochs = [i for i, name in enumerate(renames, 1) if name.startswith("checkpoints")]
    latest = [i for i in epochs if renames[i - 1] == os.path.join("checkpoints", "latest")]
    draw = random.Random(SEED)
    first = draw.choice([i for i in epochs if i < latest[-2]])  # a checkpoint is left to write
    done = sum(i < first for i in latest)
    then = draw.randint(1, len(latest) - done)
    why = f"TLCORE_FAULT_SEED={SEED}: killed before rename {first} ({renames[first - 1]}), " \
          f"then after checkpoint {then} of the resumed run"
    run = tmp_path / "run"
    killed = _tl(run, reference["data"], *ARGS, "--out", run, env={"TLF_KILL": f"before:{first}"})
    assert killed.returncode == -signal.SIGKILL, (why, killed.stderr)
    if done:
        assert RunFolder(run).load_checkpoint()["state"]["counter"] == done, why  # nothing lost
    killed = _tl(run, "--resume", run, env={"TLF_KILL": f"after-latest:{then}"})
    assert killed.returncode == -signal.SIGKILL, (why, killed.stderr)
    finished = _tl(run, "--resume", run)
    assert finished.returncode == 0, (why, finished.stderr)
    _same_weights(run, reference["run"], why)


def test_a_second_run_is_refused_and_sigterm_stops_the_first_resumably(reference, tmp_path):
    """While a run writes its folder, a second ``tl train --out`` or ``--resume`` on it is
    refused at once, naming the first one's PID; SIGTERM then stops the first as Ctrl-C
    does (exit 143, the resume command), and the resumed run ends as the uninterrupted one."""
    run, ready = tmp_path / "run", tmp_path / "ready"
    first = _tl(run, reference["data"], *ARGS, "--out", run, env={"TLF_PAUSE": str(ready)},
                wait=False)
    try:
        deadline = time.monotonic() + 240
        while not ready.exists():
            assert first.poll() is None, first.communicate()[1]
            assert time.monotonic() < deadline, "the first run never wrote its checkpoint"
            time.sleep(0.05)
        for args in ([reference["data"], *ARGS, "--out", run], ["--resume", run]):
            second = _tl(run, *args)
            assert second.returncode == 2, second.stderr
            assert f"in use by another run (process {first.pid})" in second.stderr
            assert f"kill -TERM {first.pid}" in second.stderr
        first.send_signal(signal.SIGTERM)
        _, stderr = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 143, stderr
    assert stderr.strip().splitlines()[-2:] == [
        "terminated (SIGTERM)", f"hint: continue with: tl train --resume {run}"]
    resumed = _tl(run, "--resume", run)
    assert resumed.returncode == 0, resumed.stderr
    _same_weights(run, reference["run"], "stopped by SIGTERM after checkpoint 1")


def test_a_full_disk_fails_cleanly_and_keeps_the_last_checkpoint(reference, tmp_path):
    """On a tiny file system that fills up while the second checkpoint is written: one error
    with a hint, the first checkpoint intact, and once there is room, the resume ends as the
    uninterrupted run."""
    mount = tmp_path / "small"
    mount.mkdir()
    ckpt = next((reference["run"] / "checkpoints").glob("0*"))
    size = sum(f.stat().st_size for f in ckpt.iterdir())
    if shutil.which("mount") is None:
        pytest.skip("no mount command to make a small file system with")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={4 * size}", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): "
                    f"{made.stderr.strip() or made.returncode}")
    try:
        # Room for the run's small files and one checkpoint and a half: the second fails.
        filler = mount / "filler"
        free = shutil.disk_usage(mount).free
        filler.write_bytes(b"\0" * max(0, free - int(1.5 * size) - 64 * 1024))
        run = mount / "run"
        full = _tl(run, reference["data"], *ARGS, "--out", run)
        assert full.returncode not in (0, 1), full.stderr  # a tlcore error, not the generic path
        lines = full.stderr.strip().splitlines()
        assert lines[-2].startswith("error:") and lines[-1].startswith("hint:"), full.stderr
        assert "Traceback" not in full.stderr
        assert RunFolder(run).load_checkpoint()["state"]["counter"] >= 1
        filler.unlink()
        resumed = _tl(run, "--resume", run)
        assert resumed.returncode == 0, resumed.stderr
        _same_weights(run, reference["run"], "the disk was full at checkpoint 2")
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
