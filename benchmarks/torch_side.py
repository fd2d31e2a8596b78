"""The PyTorch side: the backbones both sides load, and the hand-written PyTorch code.

Backbones are Hugging Face ``transformers`` models (``MobileNetV2Model``, ``ResNetModel`` with
the default ``ResNetConfig``, i.e. ResNet-50), randomly initialised once with a fixed seed and
written with ``save_pretrained``: tlcore loads the folder as ``hf:<folder>``, the hand-written
code with ``from_pretrained`` (``load_state_dict`` under the hood), so both start from the
same weights. No weights are downloaded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.config import Mode

BACKEND = "torch"
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
CALIBRATION_IMAGES = 100
PRETRAIN_LR = 1e-3


def set_threads(threads: int) -> None:
    """Intra-op threads of torch (the worker sets OMP_NUM_THREADS before import too)."""
    torch.set_num_threads(threads)


def backbone_files(model: str, size: int, work: Path, mode: Mode) -> dict[str, str]:
    """Write the backbone once (MobileNetV2 pretrained on digits, ResNet-50 random with
    calibrated BatchNorm); the recipe fields that load it."""
    folder = work / f"hf-{model}-{size}"
    if not (folder / "config.json").is_file():
        import transformers

        if model == "mobilenet_v2":
            network = transformers.MobileNetV2Model(transformers.MobileNetV2Config(image_size=size))
            network.load_state_dict(pretrained_mobilenet(work, mode))
        else:
            torch.manual_seed(0)
            network = transformers.ResNetModel(transformers.ResNetConfig())
            calibrate_batchnorm(network, size)
        network.eval().save_pretrained(folder)
    return {"source": f"hf:{folder}", "weights": "pretrained", "folder": str(folder)}


def pretrained_mobilenet(work: Path, mode: Mode) -> dict[str, torch.Tensor]:
    """The state dict of a MobileNetV2 trained on :func:`~benchmarks.data.pretraining_digits`
    (written once; the weights do not depend on the input size).

    A stand-in for the ImageNet weights that cannot be downloaded here: a frozen random
    backbone's features are so poor that a linear head reaches 15–40 %, and two heads then
    differ by chance, so item 2's accuracy comparison would mean nothing.
    """
    path = work / "mobilenet_v2-pretrained.pt"
    if not path.is_file():
        import transformers

        from benchmarks.data import PRETRAIN_SIZE, pretraining_digits

        torch.manual_seed(0)
        config = transformers.MobileNetV2Config(image_size=PRETRAIN_SIZE)
        network = transformers.MobileNetV2Model(config)
        head = nn.Linear(1280, 10)  # MobileNetV2's last width
        images, labels = pretraining_digits(mode.pretrain_per_class)
        x, y = to_tensor(images), torch.from_numpy(labels)
        params = [*network.parameters(), *head.parameters()]
        optimizer = torch.optim.Adam(params, lr=PRETRAIN_LR)
        network.train()
        for _ in range(mode.pretrain_epochs):
            for idx in torch.randperm(len(x)).split(32):
                pooled = network(pixel_values=x[idx]).last_hidden_state.mean(dim=(2, 3))
                loss = F.cross_entropy(head(pooled), y[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        torch.save(network.state_dict(), path)
    return torch.load(path, weights_only=True)


def calibrate_batchnorm(network: nn.Module, size: int) -> None:
    """Give a random network's BatchNorm layers the statistics of real images.

    Freshly initialised BatchNorm layers hold mean 0 and variance 1, so in inference mode
    (frozen) the activations of a deep random network vanish or explode and its features
    carry nothing: a head trained on them stays at chance. One pass over digits in training
    mode, with cumulative averages, makes them random but informative features, as the
    weights of a pretrained backbone would be.
    """
    from benchmarks.data import digits

    images, _ = digits(CALIBRATION_IMAGES, size)
    norms = [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative moving average over the calibration batches
    network.train()
    with torch.no_grad():
        x = to_tensor(images)
        for start in range(0, len(x), 32):
            network(pixel_values=x[start : start + 32])
    for norm in norms:
        norm.momentum = 0.1
    network.eval()


class HandNet(nn.Module):
    """What a PyTorch user writes: a pretrained backbone, global average pooling, a Linear."""

    def __init__(self, folder: str, classes: int) -> None:
        super().__init__()
        import transformers

        self.backbone = transformers.AutoModel.from_pretrained(folder)
        with torch.no_grad():
            width = self._features(torch.zeros(1, 3, 64, 64)).shape[1]
        self.head = nn.Linear(width, classes)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(pixel_values=x).last_hidden_state.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a normalised float NCHW batch."""
        return self.head(self._features(x))


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC images → normalised float32 NCHW, done once up front as users do."""
    x = (images.astype(np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> float:
    model.eval()
    hits = 0
    with torch.no_grad():
        for start in range(0, len(x), batch):
            logits = model(x[start : start + batch])
            hits += int((logits.argmax(1) == y[start : start + batch]).sum())
    return hits / max(len(x), 1)


def _train(
    model: nn.Module, data: tuple, epochs: int, batch: int, lr: float, frozen: bool, seed: int = 0
) -> tuple[list[float], float]:
    """The classic loop; returns seconds per epoch (training and validation) and the final
    validation accuracy."""
    (x, y), (xv, yv) = data
    if frozen:
        for p in model.backbone.parameters():
            p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    seconds, accuracy = [], 0.0
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        if frozen:
            model.backbone.eval()  # frozen BatchNorm statistics, as tlcore's default
        order = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x), batch):
            idx = order[i : i + batch]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        accuracy = _accuracy(model, xv, yv, batch)
        seconds.append(time.perf_counter() - start)
    return seconds, accuracy


def _tensors(train: tuple, val: tuple) -> tuple:
    return (
        (to_tensor(train[0]), torch.from_numpy(np.array(train[1]))),
        (to_tensor(val[0]), torch.from_numpy(np.array(val[1]))),
    )


def finetune(
    files: dict, train: tuple, val: tuple, epochs: int, batch: int, lr: float
) -> list[float]:
    """Hand-written full fine-tune (everything trains, BatchNorm in training mode)."""
    model = HandNet(files["folder"], 10)
    return _train(model, _tensors(train, val), epochs, batch, lr, frozen=False)[0]


def frozen(
    files: dict, train: tuple, val: tuple, epochs: int, batch: int, lr: float, seed: int = 0
) -> tuple[float, float, list[float]]:
    """Hand-written frozen-backbone training, the whole job, seeded (head initialisation and
    shuffling); returns the final validation accuracy, the ``perf_counter`` time at which the
    network was built, and the seconds of each epoch."""
    torch.manual_seed(seed)
    model = HandNet(files["folder"], 10)
    built = time.perf_counter()
    data = _tensors(train, val)
    seconds, accuracy = _train(model, data, epochs, batch, lr, frozen=True, seed=seed)
    return accuracy, built, seconds


def predictor(files: dict, images: np.ndarray) -> Callable[[], object]:
    """``model(x)`` under ``no_grad`` on a fixed batch (eval mode), ready to time."""
    model = HandNet(files["folder"], 10).eval()
    x = to_tensor(images)

    def run() -> object:
        with torch.no_grad():
            return model(x)

    return run
