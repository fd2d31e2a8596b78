"""The model a backend builds: preprocessing inside it, pooling, the head, cached features."""

from __future__ import annotations

import numpy as np

from tlcore.interfaces import Backbone, Preprocessing
from tlcore.recipe import HeadSpec
from tlcore.testing import simple_cnn as cnn
from tlcore.testing.backend import (
    BackendUnderTest,
    backbone_part,
    changed,
    head_part,
    is_backbone,
    is_head,
)
from tlcore.testing.data import images
from tlcore.testing.marks import SUITE_MARKS, hooks
from tlcore.testing.reference import cross_entropy, reference_head

pytestmark = SUITE_MARKS


@hooks("tl_attach_head", "tl_eval_step", "tl_set_weights")
def test_preprocessing_is_inside_the_model(tl_backend: BackendUnderTest) -> None:
    """The model takes uint8 RGB and applies ``(x[..., order] * scale - mean) / std`` itself.

    Two models on one backbone see the same normalised input when the second one's
    preprocessing (BGR, another scale and per-channel means) undoes a change of the images.
    """
    network = tl_backend.load(source=cnn.SOURCE).network
    rgb = Preprocessing((32, 32), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 1 / 255, "RGB")
    scale, offsets = 2 / 127.5, np.array([0, 20, 40])
    means = tuple(float(2 + scale * o) for o in offsets)
    bgr = Preprocessing((32, 32), means, (2.0, 2.0, 2.0), scale, "BGR")
    first = tl_backend.attach(Backbone(network, rgb, "rgb"), num_classes=2)
    second = tl_backend.attach(Backbone(network, bgr, "bgr"), num_classes=2)
    weights = tl_backend.weights(first)
    # Normalisation constants are not weights: every weight is the backbone's or the head's.
    assert all(is_backbone(k) or is_head(k) for k in weights), sorted(weights)
    assert tl_backend.weights(second).keys() == weights.keys()
    tl_backend.set_weights(second, weights, strict=True)

    x = images(4) // 2
    shifted = (x + offsets.astype(np.uint8))[..., ::-1].copy()
    expected = tl_backend.logits(first, x)
    np.testing.assert_allclose(tl_backend.logits(second, shifted), expected, rtol=1e-4, atol=1e-4)
    assert not np.allclose(tl_backend.logits(second, x), expected, rtol=1e-4, atol=1e-4)


@hooks("tl_attach_head", "tl_extract_features")
def test_pooling_of_the_feature_map(tl_backend: BackendUnderTest) -> None:
    """``flatten`` is the backbone's feature map flattened in its own layout (channels last or
    first); ``avg`` and ``max`` pool that same map over space."""
    backbone = tl_backend.load(source=cnn.SOURCE)
    x = images(4)
    pooled = {}
    for pooling in ("avg", "max", "flatten"):
        model = tl_backend.attach(backbone, num_classes=5, head=HeadSpec(pooling=pooling))
        pooled[pooling] = tl_backend.features(model, x)
        assert tl_backend.logits(model, x).shape == (4, 5)
    height, width, channels = cnn.FEATURE_MAP
    assert pooled["avg"].shape == pooled["max"].shape == (4, channels)
    assert pooled["flatten"].shape == (4, height * width * channels)
    flat = pooled["flatten"]
    layouts = {
        "channels last": flat.reshape(4, height, width, channels),
        "channels first": flat.reshape(4, channels, height, width).transpose(0, 2, 3, 1),
    }
    matching = [
        name
        for name, fmap in layouts.items()
        if np.allclose(fmap.mean((1, 2)), pooled["avg"], rtol=1e-5, atol=1e-5)
        and np.allclose(fmap.max((1, 2)), pooled["max"], rtol=1e-5, atol=1e-5)
    ]
    assert len(matching) == 1, "avg and max pooling do not pool the flattened feature map"


@hooks("tl_attach_head", "tl_get_weights", "tl_train_step")
def test_hidden_layers_activation_and_dropout(tl_backend: BackendUnderTest) -> None:
    """The head is [dense, activation, dropout] per hidden width, then a linear classifier,
    as a numpy forward pass over its own weights computes it; dropout only while training."""
    backbone = tl_backend.load(source=cnn.SOURCE)
    x = images(3)
    hidden = cnn.FEATURES * 16 + 16 + 16 * 8 + 8 + 8 * 4 + 4
    cases = {
        HeadSpec(): cnn.FEATURES * 4 + 4,
        HeadSpec(hidden=(16, 8), dropout=0.25): hidden,
        HeadSpec(hidden=(16, 8), activation="gelu"): hidden,
    }
    for head, params in cases.items():
        model = tl_backend.attach(backbone, num_classes=4, head=head)
        own = head_part(tl_backend.weights(model))
        assert sum(v.size for v in own.values()) == params, head
        expected = reference_head(tl_backend.features(model, x), own, head.activation)
        np.testing.assert_allclose(tl_backend.logits(model, x), expected, rtol=1e-4, atol=1e-5)

    model = tl_backend.attach(backbone, num_classes=2, head=HeadSpec(hidden=(16,), dropout=0.5))
    tl_backend.freeze(model, policy="all")
    feats, y = tl_backend.features(model, images(16)), np.arange(16) % 2
    optimizer = tl_backend.optimizer(model, lr=0.0)
    loss = tl_backend.step(model, optimizer, feats, y, lr=0.0, features=True)["loss"]
    assert abs(loss - cross_entropy(tl_backend.logits(model, feats, features=True), y)) > 1e-4


@hooks("tl_extract_features", "tl_eval_step", "tl_train_step")
def test_features_then_head_equals_the_full_model(tl_backend: BackendUnderTest) -> None:
    """Training the head on cached features is training the model: the same logits."""
    model = tl_backend.build(num_classes=3, head=HeadSpec(hidden=(8,)))
    x = images(6)
    feats = tl_backend.features(model, x)
    assert feats.dtype == np.float32 and feats.shape == (6, cnn.FEATURES)
    from_features = tl_backend.logits(model, feats, features=True)
    np.testing.assert_allclose(from_features, tl_backend.logits(model, x), rtol=1e-5, atol=1e-5)
    assert tl_backend.features(model, images(0)).shape == (0, cnn.FEATURES)

    tl_backend.freeze(model, policy="all")
    optimizer = tl_backend.optimizer(model)
    before = tl_backend.weights(model)
    result = tl_backend.step(model, optimizer, feats, np.array([0, 1, 2, 0, 1, 2]), features=True)
    assert np.isfinite(result["loss"])
    after = tl_backend.weights(model)
    assert not changed(backbone_part(before), backbone_part(after))
    assert changed(head_part(before), head_part(after))
