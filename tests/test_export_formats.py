"""Export formats: every ``export.formats`` entry is known before training starts (built in, or
registered by a plugin as a ``format`` choice), ``tl plugins`` lists them, and ``tl export RUN
--format X`` writes a format for a finished run, recording its files' sha256 in ``tlcore.json``.

A real plugin package (``tests/plugin_packages/tl_npzformat``) pip-installed into a folder and
used through the real ``tl`` command; the real PyTorch backend.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import tlcore
from tlcore.bundle.layout import file_sha256
from tlcore.errors import RecipeError
from tlcore.plugins import plugin_registered
from tlcore.runfolder import read_arrays
from tlcore.testing import separable, write_image_folder

from .conftest import HERE, run_tl

FORMAT, FILE = "npzweights", "model_weights.npz"
TRAIN = ["--backbone", "builtin:simple_cnn", "--weights", "none", "--epochs", "1",
         "--input-size", "16", "--quiet"]  # fmt: skip


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The plugin package pip-installed into a folder of its own (put on PYTHONPATH)."""
    folder = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", str(folder), str(HERE / "plugin_packages" / "tl_npzformat")],
        check=True, capture_output=True,
    )
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("data") / "images", per_class=6, size=16)


def env(site) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path}


@pytest.fixture(scope="module")
def run(site, images, tmp_path_factory):
    """A run that wrote the native format and the plugin's."""
    out = tmp_path_factory.mktemp("runs") / "run"
    run_tl("train", images, *TRAIN, "--set", f"export.formats=native,{FORMAT}", "--out", out,
           env=env(site))
    return out


def exports(run) -> dict[str, dict[str, str]]:
    return json.loads((run / "tlcore.json").read_text())["exports"]


def test_tl_plugins_lists_the_formats(site):
    human = run_tl("plugins", env=env(site)).stdout
    assert f"choice: format {FORMAT}  every weight in one .npz file" in human
    assert f"export formats: native, onnx (built in); {FORMAT} (npzformat)" in human


def test_a_plugin_format_is_written_and_recorded_at_the_end_of_training(run):
    recorded = exports(run)
    assert recorded[FORMAT] == {FILE: file_sha256(run / FILE)}
    assert set(recorded["native"]) == {"native/model.pt", "native/weights.npz"}
    written, native = read_arrays(run / FILE), read_arrays(run / "native" / "weights.npz")
    assert written.keys() == native.keys()
    for key in native:
        np.testing.assert_array_equal(written[key], native[key], err_msg=key)


def test_a_misspelt_format_is_refused_before_anything_runs(site, images, tmp_path):
    out = tmp_path / "run"
    result = run_tl("train", images, *TRAIN, "--set", "export.formats=native,npzweight",
                    "--out", out, env=env(site), check=False)
    assert result.returncode != 0
    assert "export.formats.1" in result.stderr
    assert f"{FORMAT} (npzformat)" in result.stderr and f"did you mean '{FORMAT}'" in result.stderr
    assert not out.exists()  # no run folder: nothing was read, built or trained


class Epochs:
    """Counts the epochs a run finishes."""

    def __init__(self) -> None:
        self.count = 0

    @tlcore.hookimpl
    def tl_on_epoch_end(self, run, stage, epoch, metrics):
        self.count += 1


def test_no_epoch_runs_when_a_format_is_unknown(tmp_path):
    epochs = Epochs()
    recipe = {"backbone": {"source": "builtin:simple_cnn", "weights": "none", "input_size": 16},
              "train": {"stages": [{"name": "all", "epochs": 1}]}}
    with plugin_registered(epochs, "epochs"):
        with pytest.raises(RecipeError, match=r"export\.formats\.1") as info:
            tlcore.fit(separable(16, 16), recipe=recipe, out=tmp_path / "bad",
                       export="native,onx", backend="torch")
        assert "did you mean 'onnx'" in info.value.hint
        assert epochs.count == 0 and not (tmp_path / "bad").exists()
        # The same recipe with the format spelt right trains: the counter does count.
        tlcore.fit(separable(16, 16), recipe=recipe, out=tmp_path / "good",
                   export="native", backend="torch")
    assert epochs.count == 1


def test_tl_export_writes_a_plugin_format_and_native_for_a_finished_run(run, site):
    (run / FILE).unlink()
    before = exports(run)
    out = run_tl("export", run, "--format", FORMAT, env=env(site)).stdout
    assert f"format {FORMAT}" in out
    assert exports(run)[FORMAT] == {FILE: file_sha256(run / FILE)} == before[FORMAT]

    import torch

    trained = torch.load(run / "native" / "model.pt", weights_only=True)
    (run / "native" / "model.pt").unlink()
    run_tl("export", run, "--format", "native", env=env(site))
    recorded = exports(run)["native"]
    assert recorded["native/model.pt"] == file_sha256(run / "native" / "model.pt")
    assert recorded["native/weights.npz"] == before["native"]["native/weights.npz"]
    again = torch.load(run / "native" / "model.pt", weights_only=True)
    assert again.keys() == trained.keys()
    for key in trained:  # the same weights, written again
        assert torch.equal(again[key], trained[key]), key


def test_tl_export_refuses_an_unknown_format_with_the_known_ones(run, site):
    result = run_tl("export", run, "--format", "tflite", env=env(site), check=False)
    assert result.returncode != 0
    assert "unknown export format 'tflite'" in result.stderr
    assert f"native, onnx; from plugins: {FORMAT} (npzformat)" in result.stderr
