"""The PyTorch backend through the real plugin manager: real torch, real transformers models.

What every backend does alike (the builtin, freezing, heads, state, export, the driver) is the
conformance suite (``test_conformance.py``); this file keeps what is torch's own.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys

import pytest
import torch
from torch import nn

import tlcore_torch
from tlcore.errors import TlcoreError
from tlcore.files import write_json
from tlcore.interfaces import Backbone
from tlcore.plugins import hook
from tlcore.recipe import BackboneSpec, FreezeSpec, HeadSpec
from tlcore.testing import BackendUnderTest, images, separable
from tlcore.testing.simple_cnn import BLOCK_PARAMS, WIDTHS
from tlcore_torch.blocks import find_blocks

from .adapters import TorchAdapter

torch.set_num_threads(2)
# TorchScript is what file: sources load; torch 2.13 marks it deprecated in favour of export.
pytestmark = pytest.mark.filterwarnings(
    r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning"
)

W2 = WIDTHS[-1]
TINY_RESNET = {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "num_channels": 3}
TINY_VIT = {
    "image_size": 32,
    "patch_size": 8,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}


TORCH = BackendUnderTest("torch")
load, build, freeze, optimizer, step = (
    TORCH.load, TORCH.build, TORCH.freeze, TORCH.optimizer, TORCH.step
)


def backbone_state(model):
    return {k: v.detach().clone() for k, v in model.backbone.state_dict().items()}


def assert_same(before, after, names=None):
    for name in names or before:
        assert torch.equal(before[name], after[name]), name


def save_hf(tmp_path, kind, preprocessor=None):
    import transformers

    torch.manual_seed(0)
    config = (
        transformers.ResNetConfig(**TINY_RESNET)
        if kind == "resnet"
        else transformers.ViTConfig(**TINY_VIT)
    )
    folder = tmp_path / kind
    transformers.AutoModel.from_config(config).save_pretrained(folder)
    if preprocessor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return folder


# --- the plugin as a plugin ---------------------------------------------------------------


def test_importing_the_plugin_imports_no_framework():
    code = (
        "import sys, tlcore_torch\n"
        "from tlcore.plugins import backends, backbones, hook\n"
        "hook().tl_seed(backend='keras', seed=1)\n"
        "hook().tl_load_backbone(backend='other', spec=None)\n"
        "assert backends()['torch'].default_backbone == 'builtin:efficientnet_lite0'\n"
        "assert backbones('torch')\n"
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_registered_backbones():
    infos = {}
    hook().tl_register_backbones(backend="torch", register=lambda i: infos.setdefault(i.source, i))
    assert "hf:<dir or hub id>" in infos and "file:<torchscript.pt>" in infos
    for kind in ("torchvision", "timm"):
        info = infos[f"{kind}:<name>"]
        try:
            __import__(kind)
        except ImportError:
            assert "not installed" in info.description
    other = []
    tlcore_torch.backend.tl_register_backbones(backend="keras", register=other.append)
    assert other == []


def test_hooks_answer_none_for_other_backends_and_objects():
    model = build()
    plugin = tlcore_torch.backend
    assert plugin.tl_freeze(backend="keras", model=model, policy=FreezeSpec()) is None
    assert plugin.tl_freeze(backend="torch", model=object(), policy=FreezeSpec()) is None
    assert plugin.tl_get_weights(backend="keras", model=model) is None
    assert (
        plugin.tl_export(
            backend="torch", model=model, fmt="tflite", path=".", example=images(1), opset=17
        )
        is None
    )
    for spec in (BackboneSpec("keras:mobilenet_v2"), BackboneSpec(model=object())):
        assert hook().tl_load_backbone(backend="torch", spec=spec) is None


# --- loading backbones -------------------------------------------------------------------


def test_hf_resnet_folder(tmp_path):
    prep = {
        "image_mean": [0.1, 0.2, 0.3],
        "image_std": [0.4, 0.5, 0.6],
        "size": {"height": 40, "width": 40},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
    }
    folder = save_hf(tmp_path, "resnet", prep)
    backbone = load(source=f"hf:{folder}")
    assert backbone.preprocessing.mean == (0.1, 0.2, 0.3)
    assert backbone.preprocessing.std == (0.4, 0.5, 0.6)
    assert backbone.preprocessing.size == (40, 40)
    assert backbone.extra["blocks"] == [
        "model.encoder.stages.0.layers.0",
        "model.encoder.stages.1.layers.0",
    ]
    out = backbone.network(torch.zeros(2, 3, 32, 32))
    assert out.shape == (2, 16, 4, 4)

    from safetensors.torch import load_file

    saved = load_file(str(folder / "model.safetensors"))
    loaded = backbone.network.model.state_dict()
    name = "embedder.embedder.convolution.weight"
    assert torch.equal(loaded[name], saved[name])
    fresh = load(source=f"hf:{folder}", weights="none", input_size=32).network.model.state_dict()
    assert not torch.equal(fresh[name], saved[name])


def test_hf_vit_folder_uses_config_image_size(tmp_path):
    folder = save_hf(tmp_path, "vit")
    backbone = load(source=f"hf:{folder}")
    assert backbone.preprocessing.size == (32, 32)
    assert backbone.preprocessing.mean == (0.485, 0.456, 0.406)
    assert backbone.extra["blocks"] == ["model.layers.0", "model.layers.1"]
    tokens = backbone.network(torch.zeros(2, 3, 32, 32))
    assert tokens.shape == (2, 17, 32)
    assert not any("pooler" in n for n, _ in backbone.network.named_parameters())
    bigger = build(source=f"hf:{folder}", input_size=48)
    assert bigger(torch.zeros(1, 48, 48, 3, dtype=torch.uint8)).shape == (1, 3)


def test_hf_missing_folder_is_a_tlcore_error(tmp_path):
    with pytest.raises(TlcoreError, match="not found"):
        load(source=f"hf:{tmp_path / 'nope'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TlcoreError, match="cannot load Hugging Face model"):
        load(source=f"hf:{tmp_path / 'empty'}")


def scripted_cnn(tmp_path):
    from tlcore_torch.builtin import SimpleCNN

    torch.manual_seed(0)
    path = tmp_path / "cnn.pt"
    torch.jit.save(torch.jit.script(SimpleCNN()), str(path))
    return path


def test_torchscript_file(tmp_path):
    path = scripted_cnn(tmp_path)
    with pytest.raises(TlcoreError, match="input_size"):
        load(source=f"file:{path}")
    backbone = load(source=f"file:{path}", input_size=32)
    assert backbone.extra["blocks"] == ["blocks.0", "blocks.1", "blocks.2"]
    assert backbone.network(torch.zeros(1, 3, 32, 32)).shape == (1, W2, 4, 4)

    model = build(source=f"file:{path}", input_size=32)
    report = freeze(model, policy="last_n", n=1)
    assert report.backbone_trainable == BLOCK_PARAMS[2]
    before = backbone_state(model)
    opt = optimizer(model)
    x, y = separable(8)
    step(model, opt, x, y)
    after = backbone_state(model)
    assert_same(before, after, [n for n in before if "running" in n or n.startswith("blocks.0")])
    assert not torch.equal(before["blocks.2.0.weight"], after["blocks.2.0.weight"])


def test_file_errors(tmp_path):
    with pytest.raises(TlcoreError, match="not found"):
        load(source=f"file:{tmp_path / 'missing.pt'}", input_size=32)
    plain = tmp_path / "state.pt"
    torch.save(TorchAdapter().user_network(2).state_dict(), plain)
    with pytest.raises(TlcoreError, match="not a TorchScript file") as info:
        load(source=f"file:{plain}", input_size=32)
    assert "weights" in info.value.hint


def test_safetensors_weights_file(tmp_path):
    """A backbone's safetensors file loads like a state dict (native and .npz files are
    covered for every backend in the conformance suite)."""
    from safetensors.torch import save_file

    source = build()
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.backbone.state_dict().items()}, str(path))
    network = load(source="builtin:simple_cnn", weights=str(path)).network
    assert_same(source.backbone.state_dict(), network.state_dict())


@pytest.mark.parametrize("kind", ["torchvision", "timm"])
def test_missing_optional_package_is_a_tlcore_error(kind):
    try:
        __import__(kind)
    except ImportError:
        pass
    else:
        pytest.skip(f"{kind} is installed here")
    with pytest.raises(TlcoreError, match=f"{kind} package") as info:
        load(source=f"{kind}:resnet18")
    assert f"pip install {kind}" in info.value.hint


# --- blocks ------------------------------------------------------------------------------


class Bottleneck(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x))) + x


class TorchvisionLike(nn.Module):
    """Stages as sibling attributes, like torchvision's ResNet."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.layer1 = nn.Sequential(Bottleneck(8), Bottleneck(8))
        self.layer2 = nn.Sequential(Bottleneck(8), Bottleneck(8), Bottleneck(8))
        self.norm = nn.BatchNorm2d(8)

    def forward(self, x):
        return self.norm(self.layer2(self.layer1(self.stem(x))))


def test_blocks_of_sibling_stages_and_plain_sequentials():
    assert find_blocks(TorchvisionLike()) == [
        "layer1.0",
        "layer1.1",
        "layer2.0",
        "layer2.1",
        "layer2.2",
    ]
    seq = nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    assert find_blocks(seq) == ["1", "3"]
    declared = TorchvisionLike()
    declared.tlcore_blocks = ["layer1", "layer2"]
    assert find_blocks(declared) == ["layer1", "layer2"]


def test_last_n_trains_params_after_the_blocks_but_not_the_stem():
    backbone = Backbone(TorchvisionLike(), load(source="builtin:simple_cnn").preprocessing, "x")
    model = hook().tl_attach_head(
        backend="torch", backbone=backbone, head=HeadSpec(), num_classes=2
    )
    report = freeze(model, policy="last_n", n=2)
    assert report.trainable_blocks == ("layer2.1", "layer2.2")
    trainable = {n for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert trainable == {
        f"{block}.{leaf}"
        for block in ("layer2.1", "layer2.2", "norm")
        for leaf in (
            ("weight", "bias")
            if block == "norm"
            else ("conv.weight", "conv.bias", "bn.weight", "bn.bias")
        )
    }


# --- head --------------------------------------------------------------------------------


@pytest.mark.parametrize(("pooling", "width"), [("avg", 32), ("max", 32), ("flatten", 17 * 32)])
def test_pooling_widths_on_tokens(tmp_path, pooling, width):
    folder = save_hf(tmp_path, "vit")
    model = build(source=f"hf:{folder}", head=HeadSpec(pooling=pooling), num_classes=3)
    assert model.num_features == width
    assert model(torch.from_numpy(images(2))).shape == (2, 3)


# --- freezing ----------------------------------------------------------------------------


@pytest.mark.parametrize("batchnorm", ["frozen", "follow", "train"])
def test_a_plain_train_call_does_not_undo_the_batchnorm_policy(batchnorm):
    """torch's own ``model.train()`` (a user's, between steps) keeps the modules the policy
    froze in inference mode; the modes themselves are tested in the conformance suite."""
    model = build(num_classes=2)
    freeze(model, policy="last_n", n=1, batchnorm=batchnorm)
    before = backbone_state(model)
    opt = optimizer(model, optimizer="sgd")
    x, y = separable(16)
    step(model, opt, x, y)
    model.train()
    assert model.training
    for block in range(3):
        changes = batchnorm == "train" or (batchnorm == "follow" and block == 2)
        assert model.backbone.blocks[block][1].training == changes, (batchnorm, block)
    step(model, opt, x, y)
    after = backbone_state(model)
    for block in range(3):
        stats = f"blocks.{block}.1.running_mean"
        changes = batchnorm == "train" or (batchnorm == "follow" and block == 2)
        assert torch.equal(before[stats], after[stats]) != changes, (batchnorm, stats)


def test_a_frozen_backbone_stays_in_eval_mode_while_the_head_trains():
    model = build(num_classes=2, head=HeadSpec(dropout=0.5))
    freeze(model, policy="all")
    step(model, optimizer(model), *separable(8))
    model.train()
    assert model.training and model.head.training and not model.backbone.training


def test_freeze_on_hf_models(tmp_path):
    resnet = build(source=f"hf:{save_hf(tmp_path, 'resnet')}", input_size=32)
    report = freeze(resnet, policy="last_n", n=1)
    stage1 = resnet.backbone.model.encoder.stages[1]
    assert report.backbone_trainable == sum(p.numel() for p in stage1.parameters())
    assert report.trainable_blocks == ("model.encoder.stages.1.layers.0",)

    vit = build(source=f"hf:{save_hf(tmp_path, 'vit')}")
    report = freeze(vit, policy="last_n", n=1)
    layer1 = vit.backbone.model.layers[1]
    final_norm = vit.backbone.model.layernorm
    expected = sum(p.numel() for m in (layer1, final_norm) for p in m.parameters())
    assert report.backbone_trainable == expected
    report = freeze(vit, policy="pattern", pattern=r"^model\.embeddings\.")
    embeddings = sum(p.numel() for p in vit.backbone.model.embeddings.parameters())
    assert report.frozen == embeddings


# --- training ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd", "rmsprop"])
def test_optimizers_cover_only_trainable_parameters(name):
    model = build()
    freeze(model, policy="last_n", n=1)
    opt = optimizer(model, optimizer=name, lr=0.5, weight_decay=0.01, momentum=0.8)
    params = [p for g in opt.param_groups for p in g["params"]]
    assert sum(p.numel() for p in params) == BLOCK_PARAMS[2] + W2 * 3 + 3
    group = opt.param_groups[0]
    assert group["weight_decay"] == 0.01
    if name in ("sgd", "rmsprop"):
        assert group["momentum"] == 0.8
    if name == "sgd":
        assert group["nesterov"] is False
    step(model, opt, *separable(4), lr=0.125)
    assert all(g["lr"] == 0.125 for g in opt.param_groups)


# --- state -------------------------------------------------------------------------------


def test_native_export_is_an_atomic_safe_state_dict(tmp_path):
    model = build()
    path = hook().tl_export(
        backend="torch", model=model, fmt="native", path=tmp_path, example=images(2), opset=17
    )
    assert path == tmp_path / "model.pt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert state.keys() == model.state_dict().keys()
    assert_same(model.state_dict(), state)


def test_exported_files_get_the_mode_of_the_core_files(tmp_path):
    """Written through ``tlcore.files.atomic_path`` like the core's own files: readable by
    others as the umask allows, not the owner-only mode of a bare temporary file."""
    model = build()
    core = tmp_path / "tlcore.json"
    write_json(core, {})
    for fmt in ("native", "onnx"):
        path = TORCH.export(model, fmt, tmp_path / fmt)
        assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(core.stat().st_mode), fmt
        assert [p.name for p in path.parent.iterdir()] == [path.name], fmt  # no leftovers


@pytest.mark.parametrize("name", ["adamw", "rmsprop"])
def test_optimizer_state_is_named_by_parameter_index_and_key(name):
    """``{"<parameter index>.<torch's state key>": array}``, the step count included."""
    model = build(num_classes=2)
    freeze(model, policy="all")
    opt = optimizer(model, optimizer=name)
    for _ in range(3):
        step(model, opt, *separable(8))
    state = TORCH.optimizer_state(opt)
    assert state["0.step"] == 3
    if name == "adamw":
        assert {k.split(".", 1)[1] for k in state} == {"step", "exp_avg", "exp_avg_sq"}


def test_an_inference_mode_batchnorm_is_folded_and_follows_its_weights():
    """EfficientNet-Lite's conv → BatchNorm → ReLU6 with BatchNorm in inference mode (a frozen
    block, evaluation) runs as one convolution with the BatchNorm folded in: the same
    numbers as the two steps, refolded after an in-place step or a load, differentiable for
    a convolution that trains, and usable in grad mode after an inference-mode call."""
    from torch.nn import functional as F

    from tlcore_torch.efficientnet_lite import ConvBN

    torch.manual_seed(0)
    block, other = ConvBN(8, 16, 3, stride=2), ConvBN(8, 16, 3, stride=2)
    with torch.no_grad():  # statistics and scales a trained network has
        for module in (block, other):
            module.bn.running_mean.uniform_(-1, 1)
            module.bn.running_var.uniform_(0.5, 2.0)
            module.bn.weight.uniform_(0.5, 2.0)
            module.bn.bias.uniform_(-1, 1)
    block.eval()
    x = torch.randn(4, 8, 9, 9)

    def two_steps(inputs: torch.Tensor) -> torch.Tensor:
        bn = block.bn
        out = F.batch_norm(block.conv(inputs), bn.running_mean, bn.running_var, bn.weight,
                           bn.bias, False, 0.0, bn.eps)
        return block.act(out)

    with torch.inference_mode():
        torch.testing.assert_close(block(x), two_steps(x))
    with torch.no_grad():
        block.conv.weight.mul_(2.0)  # what an optimiser step does
        torch.testing.assert_close(block(x), two_steps(x))
        block.load_state_dict(other.state_dict())
        torch.testing.assert_close(block(x), two_steps(x))
    for param in block.parameters():
        param.requires_grad_(False)
    frozen = block(x)  # grad mode, nothing trainable: the inference-mode fold is reused
    assert not frozen.requires_grad
    torch.testing.assert_close(frozen, two_steps(x))
    block.conv.weight.requires_grad_(True)  # a trainable convolution before a frozen BatchNorm
    block(x).square().sum().backward()
    folded_grad = block.conv.weight.grad.clone()
    block.conv.weight.grad = None
    two_steps(x).square().sum().backward()
    torch.testing.assert_close(folded_grad, block.conv.weight.grad, rtol=1e-4, atol=1e-4)
