"""Freezing: what each policy trains, and BatchNorm statistics untouched while frozen.

What a model trains is found by training it: one AdamW step with weight decay moves every
weight the optimiser holds, and nothing else (BatchNorm statistics move only in training mode).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from tlcore.errors import TlcoreError
from tlcore.interfaces import FreezeReport
from tlcore.testing import simple_cnn as cnn
from tlcore.testing.backend import (
    BackendUnderTest,
    backbone_part,
    changed,
    head_part,
    is_backbone,
    within_backbone,
)
from tlcore.testing.data import separable
from tlcore.testing.marks import SUITE_MARKS, hooks

pytestmark = SUITE_MARKS


@hooks("tl_freeze", "tl_make_optimizer", "tl_train_step")
def test_freeze_policy_counts(tl_backend: BackendUnderTest) -> None:
    """Each policy's report matches what then trains, BatchNorm scales and shifts included."""
    model = tl_backend.build(num_classes=3)
    head, total = cnn.FEATURES * 3 + 3, cnn.PARAMS
    x, y = separable(8)
    weights = tl_backend.weights(model)
    sizes = {k: v.size for k, v in weights.items()}
    report = tl_backend.freeze(model, policy="none")
    blocks = report.trainable_blocks
    assert len(blocks) == len(cnn.WIDTHS), blocks
    trained = tl_backend.trains(model, x, y)
    bn_params = [set(cnn.batchnorm(weights, b)) & trained for b in range(len(cnn.WIDTHS))]
    assert [len(p) for p in bn_params] == [2, 2, 2], "BatchNorm: scale and shift train"
    all_bn = set().union(*bn_params)
    pattern = "|".join(re.escape(within_backbone(n)) + "$" for n in sorted(all_bn))
    cases = {
        "none": ({}, total, blocks, set()),
        "all": ({}, 0, (), all_bn),
        "last_n": ({"n": 2}, cnn.BLOCK_PARAMS[1] + cnn.BLOCK_PARAMS[2], blocks[1:], bn_params[0]),
        "pattern": ({"pattern": pattern}, total - 2 * sum(cnn.WIDTHS), blocks, all_bn),
    }
    for policy, (extra, backbone, trainable_blocks, frozen_bn) in cases.items():
        if policy != "none":  # "none" was frozen and trained above
            report = tl_backend.freeze(model, policy=policy, **extra)
            trained = tl_backend.trains(model, x, y)
        expected = FreezeReport(head + backbone, total - backbone, backbone, trainable_blocks)
        assert report == expected, policy
        assert sum(sizes[n] for n in trained if is_backbone(n)) == backbone, policy
        assert sum(sizes[n] for n in trained) == head + backbone, policy
        assert all_bn - trained == frozen_bn, policy
    assert tl_backend.freeze(model, policy="last_n", n=0).backbone_frozen
    assert tl_backend.freeze(model, policy="last_n", n=10).backbone_trainable == total
    with pytest.raises(TlcoreError, match="nothing_like_this"):
        tl_backend.freeze(model, policy="pattern", pattern="nothing_like_this")


@hooks("tl_freeze", "tl_train_step", "tl_get_weights")
def test_frozen_backbone_is_bit_identical_after_training_steps(
    tl_backend: BackendUnderTest,
) -> None:
    """Every backbone weight, BatchNorm statistics included, is unchanged by training the head."""
    model = tl_backend.build(num_classes=2)
    assert tl_backend.freeze(model, policy="all").backbone_frozen
    before = tl_backend.weights(model)
    floats = [v for v in backbone_part(before).values() if v.dtype.kind == "f"]
    assert sum(v.size for v in floats) == cnn.PARAMS + cnn.STATISTICS, "statistics are weights"
    optimizer = tl_backend.optimizer(model, optimizer="adamw", weight_decay=0.1)
    x, y = separable(16)
    for _ in range(3):
        tl_backend.step(model, optimizer, x, y)
    after = tl_backend.weights(model)
    assert backbone_part(after).keys() == backbone_part(before).keys()
    assert not changed(backbone_part(before), backbone_part(after))
    assert changed(head_part(before), head_part(after))


@pytest.mark.parametrize("batchnorm", ["frozen", "follow", "train"])
@hooks("tl_freeze", "tl_train_step")
def test_batchnorm_modes_with_a_partly_trainable_backbone(
    tl_backend: BackendUnderTest, batchnorm: str
) -> None:
    """``last_n`` 1: only block 2's conv trains; of each block's four BatchNorm arrays, the
    scale and shift move where the block trains, the statistics where BatchNorm runs in
    training mode (``frozen``: nowhere, ``follow``: in trained blocks, ``train``: everywhere)."""
    model = tl_backend.build(num_classes=2)
    tl_backend.freeze(model, policy="last_n", n=1, batchnorm=batchnorm)
    before = tl_backend.weights(model)
    optimizer = tl_backend.optimizer(model, optimizer="sgd")
    x, y = separable(16)
    for _ in range(2):
        tl_backend.step(model, optimizer, x, y)
    moved = changed(before, tl_backend.weights(model))
    expected = {"frozen": (0, 0, 2), "follow": (0, 0, 4), "train": (2, 2, 4)}[batchnorm]
    for block in range(len(cnn.WIDTHS)):
        arrays = set(cnn.batchnorm(before, block))
        assert len(arrays & moved) == expected[block], (batchnorm, block, sorted(arrays & moved))
        kernel = cnn.conv_kernel(before, block)
        assert (kernel in moved) == (block == 2), kernel
    assert np.isfinite(tl_backend.step(model, optimizer, x, y)["loss"])
