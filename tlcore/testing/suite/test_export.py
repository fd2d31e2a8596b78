"""Export: the raw ONNX graph runs on onnxruntime and matches the model; so do finished runs."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from tlcore.interfaces import Backbone, Preprocessing
from tlcore.recipe import HeadSpec
from tlcore.testing import simple_cnn as cnn
from tlcore.testing.backend import BackendUnderTest
from tlcore.testing.data import images
from tlcore.testing.marks import SUITE_MARKS, hooks
from tlcore.testing.run import DefaultRuns

pytestmark = SUITE_MARKS


@hooks("tl_export", "tl_eval_step")
def test_raw_onnx_export_runs_on_onnxruntime(tl_backend: BackendUnderTest, tmp_path) -> None:
    """The raw graph: uint8 NHWC in (any batch), logits out, BGR preprocessing included."""
    ort = pytest.importorskip("onnxruntime")
    bgr = Preprocessing((32, 32), (1.0, 2.0, 3.0), (2.0, 2.0, 2.0), 1.0, "BGR")
    network = tl_backend.load(source=cnn.SOURCE).network
    head = HeadSpec(hidden=(8,), dropout=0.3)
    model = tl_backend.attach(Backbone(network, bgr, "bgr"), head=head)
    path = tl_backend.export(model, "onnx", tmp_path)
    assert path == tmp_path / "model.onnx"
    session = ort.InferenceSession(str(path))
    (image_input,) = session.get_inputs()
    assert image_input.type == "tensor(uint8)" and image_input.shape[1:] == [32, 32, 3]
    for n in (1, 5):
        x = images(n)
        out = session.run(None, {image_input.name: x})[0]
        np.testing.assert_allclose(out, tl_backend.logits(model, x), rtol=1e-4, atol=1e-5)


def test_onnx_export_parity_at_batch_1_and_8(
    tl_backend: BackendUnderTest, tl_default_run: DefaultRuns
) -> None:
    """Training with the default formats writes a verified model.onnx and its parity."""
    pytest.importorskip("onnxruntime")
    run = tl_default_run(tl_backend.name)
    onnx = run.info["onnx"]
    parity = onnx["parity"]
    assert parity["samples"] == 8 and parity["batch_sizes"] == [1, 8]
    assert parity["top1_agreement"] == 1.0
    assert 0 <= parity["max_abs_diff"] <= parity["tolerance"] == 1e-4
    model_file = run.path / onnx["file"]
    assert onnx["sha256"] == hashlib.sha256(model_file.read_bytes()).hexdigest()


@hooks("tl_set_weights", "tl_eval_step")
def test_a_finished_run_rebuilds_from_its_weights(
    tl_backend: BackendUnderTest, tl_default_run: DefaultRuns
) -> None:
    from tlcore.build import load_run

    run = tl_default_run(tl_backend.name)
    _, classes, model, _ = load_run(run.path)
    assert list(classes) == run.info["labels"]
    x = images(4)
    np.testing.assert_allclose(
        tl_backend.logits(model, x),
        tl_backend.logits(run.result.model, x),
        rtol=1e-6,
        atol=1e-6,
    )
