"""The plugin's hooks called directly, then a real run through tlcore with the plugin installed."""

import json

import pytest
import torch

import tlcore
import tlcore_convmixer
from tlcore.errors import TlcoreError
from tlcore.plugins import plugin_table
from tlcore.recipe import BackboneSpec


def test_other_sources_and_backends_are_not_ours():
    assert tlcore_convmixer.tl_load_backbone("torch", BackboneSpec("hf:some/model")) is None
    spec = BackboneSpec("convmixer:8/1", weights="none")
    assert tlcore_convmixer.tl_load_backbone("keras", spec) is None


def test_builds_the_width_and_depth_asked_for():
    spec = BackboneSpec("convmixer:8/2", weights="none")
    backbone = tlcore_convmixer.tl_load_backbone("torch", spec)
    assert backbone.network(torch.zeros(1, 3, 32, 32)).shape == (1, 8, 8, 8)
    assert len(backbone.network) == 3  # the patch embedding and two blocks


def test_mistakes_are_clear_errors():
    with pytest.raises(TlcoreError, match="cannot read"):
        tlcore_convmixer.tl_load_backbone("torch", BackboneSpec("convmixer:wide", weights="none"))
    with pytest.raises(TlcoreError, match="no published weights"):
        tlcore_convmixer.tl_load_backbone("torch", BackboneSpec("convmixer:8/1"))


def test_the_installed_entry_point_is_loaded():
    rows = {row["name"]: row for row in plugin_table()}
    assert rows["convmixer"]["hooks"] == ["tl_load_backbone", "tl_register_backbones"]


def test_tlcore_trains_and_exports_it(tl_image_folder, tmp_path):
    result = tlcore.fit(
        tl_image_folder, backbone="convmixer:8/1", weights="none", epochs=1, out=tmp_path / "run"
    )
    info = json.loads((result.path / "tlcore.json").read_text())
    assert info["recipe"]["backbone"]["source"] == "convmixer:8/1"
    assert info["onnx"]["parity"]["top1_agreement"] == 1.0
