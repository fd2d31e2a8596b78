"""The GPU benchmark's other side and its busy meter: the hand-written PyTorch fine-tuning loop
:mod:`benchmarks.gpu` compares tlcore with, and the ``nvidia-smi`` sampler that measures how
busy the GPU is while an epoch runs.
"""

from __future__ import annotations

import subprocess
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from benchmarks.gpu import Context

LR, WEIGHT_DECAY = 1e-3, 1e-4
"""AdamW on both sides, at a constant rate: tlcore's recipe in :mod:`benchmarks.gpu` uses these."""


def hand_model(source: str, classes: int) -> Any:
    """What a PyTorch user writes: the same backbone class without its classifier (as tlcore
    drops it), average pooling, a Linear; uint8 NHWC batches, normalised on the device."""
    import torch
    from torch import nn

    kind, _, name = source.partition(":")
    if kind == "torchvision":
        import torchvision

        backbone = torchvision.models.get_model(name, weights=None)
        attr = next(a for a in ("fc", "classifier") if hasattr(backbone, a))
        setattr(backbone, attr, nn.Identity())
    else:
        from tlcore_torch.builtin import BUILDERS

        backbone = BUILDERS[name](False)

    class HandNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone
            self.register_buffer("mean", 255 * torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1))
            self.register_buffer("std", 255 * torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1))
            with torch.no_grad():  # the pooled width, as tlcore probes it
                width = self.eval().pooled(torch.zeros(1, 64, 64, 3, dtype=torch.uint8)).shape[1]
            self.head = nn.Linear(width, classes)

        def pooled(self, images: torch.Tensor) -> torch.Tensor:
            features = self.backbone((images.permute(0, 3, 1, 2).float() - self.mean) / self.std)
            return features.mean(dim=(2, 3)) if features.dim() == 4 else features

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.head(self.pooled(images))

    return HandNet()


def hand_run(ctx: Context, source: str, precision: str, x: np.ndarray,
             y: np.ndarray) -> dict[str, Any]:
    """The hand-written loop: pinned uint8 batches copied without blocking, autocast,
    GradScaler for 16-mixed, AdamW; the host waits for the GPU only at an epoch's end."""
    import torch
    from torch.nn import functional as F

    device = ctx.torch_device
    torch.manual_seed(0)
    model = hand_model(source, 10).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    dtype = {"bf16": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device.type) if precision == "16-mixed" else None
    images, labels, order = torch.from_numpy(x), torch.from_numpy(y), torch.Generator()
    spans, cuda = [], device.type == "cuda"
    for _ in range(ctx.size["epochs"]):
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for index in torch.randperm(len(images), generator=order).split(ctx.size["batch"]):
            xb, yb = images[index], labels[index]
            xb, yb = (xb.pin_memory(), yb.pin_memory()) if cuda else (xb, yb)
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = F.cross_entropy(model(xb).float(), yb)
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
        if cuda:
            torch.cuda.synchronize(device)
        spans.append((start, time.perf_counter()))
    seconds = [round(end - start, 3) for start, end in spans]
    return {"epoch_s": seconds[-1], "epochs_s": seconds, "device": str(device),
            "peak_memory_bytes": torch.cuda.max_memory_allocated(device) if cuda else None,
            **busy_share(ctx, *spans[-1])}


class Sampler:
    """``nvidia-smi -lms 100`` in a subprocess: the GPU's utilisation as ``(perf_counter,
    percent)`` pairs, stamped as they arrive."""

    def __init__(self, device: Any) -> None:
        import torch

        uuid = str(getattr(torch.cuda.get_device_properties(device), "uuid", "") or "")
        which = f"GPU-{uuid}".replace("GPU-GPU-", "GPU-") if uuid else str(device.index or 0)
        self.command = ["nvidia-smi", f"--id={which}", "--query-gpu=utilization.gpu",
                        "--format=csv,noheader,nounits", "-lms", "100"]
        self.samples: list[tuple[float, float]] = []
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.process.stdout or ():
            if line.strip().isdigit():
                self.samples.append((time.perf_counter(), float(line)))

    def stop(self) -> str:
        """End the sampling; what nvidia-smi said on stderr."""
        self.process.terminate()
        _, errors = self.process.communicate(timeout=10)
        self.thread.join(timeout=5)
        return errors.strip()


def busy_share(ctx: Context, begin: float, end: float) -> dict[str, Any]:
    """The mean GPU utilisation sampled between ``begin`` and ``end`` (perf_counter)."""
    if ctx.sampler is None:
        return {}
    inside = [percent for t, percent in list(ctx.sampler.samples) if begin <= t <= end]
    mean = round(sum(inside) / len(inside), 1) if inside else None
    return {"busy_percent": mean, "busy_samples": len(inside)}


