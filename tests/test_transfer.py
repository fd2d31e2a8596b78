"""Transfer learning works on real data: a backbone pretrained on digits 0-4 helps on 5-9."""

from __future__ import annotations

import json

import numpy as np
import pytest

import tlcore
from tlcore.data import ArrayDataset
from tlcore.demo import digits_arrays

SHOTS = 5
SEEDS = (0, 1, 2)
EPOCHS = 30
MEAN = STD = (0.5, 0.5, 0.5)


def _pretrain_hf_resnet(images: np.ndarray, labels: np.ndarray, folder) -> None:
    """The user's side: train a small Hugging Face ResNet on digits 0-4 and save_pretrained."""
    import torch
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    config = ResNetConfig(
        num_channels=3, embedding_size=16, hidden_sizes=[16, 32, 64], depths=[1, 1, 1],
        num_labels=5,
    )
    model = ResNetForImageClassification(config)
    x = torch.tensor(images).permute(0, 3, 1, 2).float() / 255
    x = (x - 0.5) / 0.5
    y = torch.tensor(labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(8):
        for idx in torch.randperm(len(x)).split(64):
            loss = torch.nn.functional.cross_entropy(model(pixel_values=x[idx]).logits, y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": list(MEAN), "image_std": list(STD),
                    "size": {"height": 32, "width": 32}})
    )


@pytest.fixture(scope="module")
def transfer_task(tmp_path_factory):
    images, labels = digits_arrays(size=32)
    source = labels < 5
    folder = tmp_path_factory.mktemp("pretrained") / "resnet-digits-0-4"
    _pretrain_hf_resnet(images[source], labels[source], folder)
    return folder, images[~source], labels[~source] - 5


def _few_shot(images, labels, seed):
    rng = np.random.default_rng(seed)
    picked = np.concatenate(
        [rng.choice(np.flatnonzero(labels == c), SHOTS, replace=False) for c in range(5)]
    )
    held_out = np.setdiff1d(np.arange(len(labels)), picked)
    names = [str(c + 5) for c in range(5)]
    train = ArrayDataset(images[picked], labels[picked], class_names=names)
    return train, images[held_out], labels[held_out]


def _accuracy(result, images, labels) -> float:
    from tlcore.interfaces import Batch
    from tlcore.plugins import hook

    logits = hook().tl_eval_step(backend="torch", model=result.model, batch=Batch(images, labels))
    return float(np.mean(logits.argmax(axis=1) == labels))


def test_transfer_beats_training_from_scratch(transfer_task, tmp_path):
    folder, images, labels = transfer_task
    transferred, scratch = [], []
    for seed in SEEDS:
        train, test_x, test_y = _few_shot(images, labels, seed)
        common = {"data": {"val_split": 0.0}, "train": {"seed": seed}}
        tuned = tlcore.fit(
            train, recipe=common, backbone=f"hf:{folder}", epochs=EPOCHS,
            out=tmp_path / f"transfer-{seed}",
        )
        plain = tlcore.fit(
            train, backbone=f"hf:{folder}", weights="none", out=tmp_path / f"scratch-{seed}",
            recipe={**common, "train": {"seed": seed, "stages": [
                {"name": "scratch", "epochs": 2 * EPOCHS, "lr": 1e-3,
                 "freeze": {"policy": "none"}}]}},
        )
        transferred.append(_accuracy(tuned, test_x, test_y))
        scratch.append(_accuracy(plain, test_x, test_y))
    gain = np.mean(transferred) - np.mean(scratch)
    print(f"transfer {np.mean(transferred):.3f} vs scratch {np.mean(scratch):.3f}")
    assert gain >= 0.15, (transferred, scratch)
