"""What the results were measured on: CPU, cores, load, library versions, the command."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from typing import Any

PACKAGES = (
    "tlcore",
    "numpy",
    "onnx",
    "onnxruntime",
    "torch",
    "transformers",
    "tensorflow-cpu",
    "keras",
    "tf2onnx",
    "pillow",
)


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    """The SIMD features that decide which kernels run (AVX2, AVX-512, VNNI, ...)."""
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [flag for flag in wanted if flag in have]
    except OSError:
        pass
    return []


def versions() -> dict[str, str | None]:
    """Installed versions of the libraries that matter here."""
    found: dict[str, str | None] = {}
    for package in PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    return found


def describe(command: list[str], threads: int) -> dict[str, Any]:
    """The machine section of the results."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in load] if load else None,
        "threads_per_side": threads,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": versions(),
        "command": " ".join(command),
    }
