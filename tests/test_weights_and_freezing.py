"""The framework-free decisions every backend shares: which weights load, which ones train."""

from __future__ import annotations

import numpy as np
import pytest

from tlcore.errors import TlcoreError
from tlcore.freezing import batchnorm_in_inference, block_of, plan_freeze
from tlcore.recipe import FreezeSpec
from tlcore.weights import align_names, match_weights


def arrays(**shapes):
    return {name.replace("__", "."): np.zeros(shape) for name, shape in shapes.items()}


def test_partial_load_by_name_and_shape():
    current = arrays(hidden__weight=(16, 4), hidden__bias=(16,), out__weight=(2, 16), extra=(3,))
    incoming = arrays(hidden__weight=(16, 4), hidden__bias=(16,), out__weight=(10, 16), old=(1,))
    to_load, report = match_weights(current, incoming)
    assert sorted(to_load) == ["hidden.bias", "hidden.weight"]
    assert to_load["hidden.weight"] is incoming["hidden.weight"]
    assert report.loaded == ("hidden.weight", "hidden.bias")
    assert report.mismatched == ("out.weight",)
    assert report.missing == ("extra",)
    assert report.unexpected == ("old",)


def test_strict_load_names_every_problem():
    current = arrays(a=(2,), b=(3,))
    to_load, report = match_weights(current, arrays(a=(2,), b=(3,)), strict=True)
    assert sorted(to_load) == ["a", "b"] and report.mismatched == ()
    with pytest.raises(TlcoreError) as info:
        match_weights(current, arrays(a=(5,), c=(1,)), strict=True)
    message = str(info.value)
    assert "a (2,) vs (5,)" in message and "missing: b" in message and "unexpected: c" in message


def test_prefixes_are_aligned_only_when_they_help():
    backbone = ["conv.weight", "bn.weight"]
    full_model = ["backbone.conv.weight", "backbone.bn.weight", "head.0.weight"]
    assert align_names(backbone, full_model) == {
        "conv.weight": "backbone.conv.weight",
        "bn.weight": "backbone.bn.weight",
    }
    assert align_names(full_model, backbone) == {
        "backbone.conv.weight": "conv.weight",
        "backbone.bn.weight": "bn.weight",
    }
    wrapped = ["model.encoder.w", "model.embed.w"]
    assert align_names(wrapped, ["resnet.encoder.w", "resnet.embed.w"]) == {
        "model.encoder.w": "resnet.encoder.w",
        "model.embed.w": "resnet.embed.w",
    }
    assert align_names(["a.w", "b.w"], ["a.w", "x.b.w"]) == {"a.w": "a.w"}
    # One layer's weights never go into another layer that only shares their leaf names.
    assert align_names(["head.weight", "head.bias"], ["fc.weight", "fc.bias"]) == {}
    assert align_names(["weight", "bias"], ["backbone.weight", "backbone.bias"]) == {
        "weight": "backbone.weight",
        "bias": "backbone.bias",
    }
    _, report = match_weights(arrays(a__w=(1,)), arrays(module__a__w=(1,)), strict=False)
    assert report.loaded == ("a.w",) and report.unexpected == ()
    with pytest.raises(TlcoreError):
        match_weights(arrays(a__w=(1,)), arrays(module__a__w=(1,)), strict=True)


NAMES = ["stem.w", "blocks.0.w", "blocks.0.b", "blocks.1.w", "blocks.10.w", "norm.w"]
BLOCKS = ["blocks.0", "blocks.1", "blocks.10"]


def test_block_membership_needs_a_separator():
    assert block_of("blocks.10.w", BLOCKS) == "blocks.10"
    assert block_of("blocks.1.w", BLOCKS) == "blocks.1"
    assert block_of("block_1/kernel", ["block_1"]) == "block_1"
    assert block_of("block_10/kernel", ["block_1"]) is None


@pytest.mark.parametrize(
    ("spec", "trainable", "blocks"),
    [
        (FreezeSpec(policy="all"), [], ()),
        (FreezeSpec(policy="none"), NAMES, tuple(BLOCKS)),
        (FreezeSpec(policy="last_n", n=0), [], ()),
        (FreezeSpec(policy="last_n", n=1), ["blocks.10.w", "norm.w"], ("blocks.10",)),
        (
            FreezeSpec(policy="last_n", n=2),
            ["blocks.1.w", "blocks.10.w", "norm.w"],
            ("blocks.1", "blocks.10"),
        ),
        (FreezeSpec(policy="last_n", n=9), NAMES[1:], tuple(BLOCKS)),
        (
            FreezeSpec(policy="pattern", pattern=r"^stem|blocks\.0\."),
            NAMES[3:],
            ("blocks.1", "blocks.10"),
        ),
    ],
)
def test_freeze_plans(spec, trainable, blocks):
    plan = plan_freeze(NAMES, BLOCKS, spec)
    assert list(plan.trainable) == trainable
    assert list(plan.frozen) == [n for n in NAMES if n not in trainable]
    assert plan.trainable_blocks == blocks


def test_freeze_errors():
    with pytest.raises(TlcoreError, match="blocks"):
        plan_freeze(NAMES, [], FreezeSpec(policy="last_n", n=1))
    # A FreezeSpec built directly skips the recipe's validation; the plan still checks.
    with pytest.raises(TlcoreError, match="regular expression"):
        plan_freeze(NAMES, BLOCKS, FreezeSpec(policy="pattern", pattern="("))
    with pytest.raises(TlcoreError, match="matches no backbone weight") as info:
        plan_freeze(NAMES, BLOCKS, FreezeSpec(policy="pattern", pattern="^backbone"))
    assert "stem.w" in info.value.hint
    with pytest.raises(TlcoreError, match="needs a pattern"):
        plan_freeze(NAMES, BLOCKS, FreezeSpec(policy="pattern"))


@pytest.mark.parametrize(
    ("mode", "trainable", "inference"),
    [
        ("frozen", True, True),
        ("frozen", False, True),
        ("follow", True, False),
        ("follow", False, True),
        ("train", True, False),
        ("train", False, False),
    ],
)
def test_batchnorm_modes(mode, trainable, inference):
    assert batchnorm_in_inference(trainable, mode) is inference
