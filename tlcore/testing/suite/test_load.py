"""Loading: the shared ``builtin:simple_cnn``, a user's own network, weights from elsewhere."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tlcore.builtins import SIMPLE_CNN_PREPROCESSING
from tlcore.errors import TlcoreError
from tlcore.interfaces import LoadReport
from tlcore.recipe import HeadSpec
from tlcore.testing import simple_cnn as cnn
from tlcore.testing.adapter import BackendAdapter
from tlcore.testing.backend import BackendUnderTest, backbone_part, head_part
from tlcore.testing.data import images
from tlcore.testing.marks import SUITE_MARKS, hooks

pytestmark = SUITE_MARKS


def needs(adapter: BackendAdapter, *methods: str) -> None:
    """Skip unless the backend's adapter provides ``methods``."""
    missing = [m for m in methods if not adapter.supports(m)]
    if missing:
        pytest.skip(
            f"needs a BackendAdapter with {', '.join(missing)}: override the tl_adapter fixture, "
            "or pass --adapter module:object to python -m tlcore.testing"
        )


@hooks("tl_register_backends", "tl_register_backbones", "tl_load_backbone", "tl_attach_head")
def test_builtin_simple_cnn_is_the_shared_spec(tl_backend: BackendUnderTest) -> None:
    """``builtin:simple_cnn`` is listed, and built, as :mod:`tlcore.builtins` defines it."""
    info = tl_backend.backbones()[cnn.SOURCE]
    assert (info.input_size, info.params) == (32, cnn.PARAMS)
    backbone = tl_backend.load(source=cnn.SOURCE, weights="pretrained")
    assert backbone.preprocessing == SIMPLE_CNN_PREPROCESSING
    model = tl_backend.attach(backbone, head=HeadSpec(pooling="flatten"))
    assert tl_backend.features(model, images(2)).shape == (2, int(np.prod(cnn.FEATURE_MAP)))
    report = tl_backend.freeze(model, policy="none")
    assert report.backbone_trainable == cnn.PARAMS
    assert len(set(report.trainable_blocks)) == len(cnn.WIDTHS), report.trainable_blocks
    bigger = tl_backend.load(source=cnn.SOURCE, input_size=64)
    assert bigger.preprocessing.size == (64, 64)
    default = tl_backend.load(source=None, weights="none", input_size=32)
    assert default.name == tl_backend.info().default_backbone


@hooks("tl_load_backbone")
def test_unknown_builtin_name_is_a_tlcore_error(tl_backend: BackendUnderTest) -> None:
    with pytest.raises(TlcoreError, match="simple_cn") as info:
        tl_backend.load(source="builtin:simple_cn")
    assert "simple_cnn" in info.value.hint


@hooks("tl_load_backbone", "tl_attach_head", "tl_freeze", "tl_eval_step")
def test_a_users_own_network_as_the_backbone(
    tl_backend: BackendUnderTest, tl_adapter: BackendAdapter
) -> None:
    """A network the user wrote is the backbone itself; its layers are the blocks."""
    needs(tl_adapter, "user_network")
    net = tl_adapter.user_network(2)
    try:
        backbone = tl_backend.load(source=None, model=net)
    except TlcoreError as exc:  # a network that does not say its input size
        assert "input_size" in str(exc)
        backbone = tl_backend.load(source=None, model=net, input_size=8)
    assert backbone.network is net
    assert backbone.preprocessing.size == (8, 8)
    model = tl_backend.attach(backbone, num_classes=4)
    assert tl_backend.freeze(model, policy="none").trainable_blocks == ("hidden", "out")
    x = np.zeros((3, 8, 8, 3), np.uint8)
    assert tl_backend.features(model, x).shape == (3, 2)
    assert tl_backend.logits(model, x).shape == (3, 4)
    with pytest.raises(TlcoreError):  # it cannot run at 32x32: an error, not a traceback
        tl_backend.build(source=None, model=tl_adapter.user_network(2), input_size=32)


@hooks("tl_load_backbone", "tl_seed", "tl_get_weights")
def test_weights_from_another_task_load_partially(
    tl_backend: BackendUnderTest, tl_adapter: BackendAdapter, tmp_path
) -> None:
    """The seed example: a 10-class network's weights into a 2-class one of the same design."""
    needs(tl_adapter, "user_network", "save_weights")

    def named(net, *weights: str):  # the network's weights, as tl_get_weights names them
        spec = {"weights": weights[0]} if weights else {}
        backbone = tl_backend.load(source=None, model=net, input_size=8, **spec)
        return backbone, tl_backend.weights(tl_backend.attach(backbone))

    tl_backend.seed(1)
    trained = tl_adapter.user_network(10)
    path = tl_adapter.save_weights(trained, tmp_path)
    tl_backend.seed(2)
    target = tl_adapter.user_network(2)
    _, initial = named(target)
    backbone, loaded = named(target, str(path))
    report = backbone.extra["weights_report"]
    assert isinstance(report, LoadReport)
    assert len(report.loaded) == 2 and all(re.search(r"\bhidden\b", n) for n in report.loaded)
    assert len(report.mismatched) == 2 and all(re.search(r"\bout\b", n) for n in report.mismatched)
    assert report.missing == () and report.unexpected == ()
    _, source = named(trained)
    for name in backbone_part(loaded):
        expected = source if re.search(r"\bhidden\b", name) else initial
        np.testing.assert_array_equal(loaded[name], expected[name], err_msg=name)

    with pytest.raises(TlcoreError):  # nothing of it fits simple_cnn: an error, not an empty load
        tl_backend.load(source=cnn.SOURCE, weights=str(path))
    with pytest.raises(TlcoreError, match="missing"):
        tl_backend.load(source=cnn.SOURCE, weights=str(tmp_path / "missing" / path.name))
    npz = tmp_path / "cnn.npz"
    np.savez(npz, **tl_backend.weights(tl_backend.build()))
    with pytest.raises(TlcoreError):
        net = tl_adapter.user_network(2)
        tl_backend.load(source=None, model=net, input_size=8, weights=str(npz))


@hooks("tl_export", "tl_load_backbone", "tl_get_weights")
def test_a_full_model_export_loads_into_a_bare_backbone(
    tl_backend: BackendUnderTest, tmp_path
) -> None:
    """Train on one task, export, start the next task's backbone from it (native and .npz)."""
    source = tl_backend.build(num_classes=5)
    exported = tl_backend.export(source, "native", tmp_path)
    full = tl_backend.weights(source)
    npz = tmp_path / "weights.npz"
    np.savez(npz, **full)
    expected = backbone_part(full)
    for path in (exported, npz):
        backbone = tl_backend.load(source=cnn.SOURCE, weights=str(path))
        report = backbone.extra["weights_report"]
        assert len(report.loaded) == len(expected), path
        assert report.mismatched == () and report.missing == ()
        assert len(report.unexpected) == 2, report.unexpected  # the head's, in the file's names
        if path == npz:
            assert set(report.unexpected) == set(head_part(full)), report.unexpected
        loaded = backbone_part(tl_backend.weights(tl_backend.attach(backbone)))
        assert loaded.keys() == expected.keys()
        for name, value in expected.items():
            np.testing.assert_array_equal(loaded[name], value, err_msg=name)
