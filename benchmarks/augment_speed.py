"""How fast the core's augmentations run, and what the decoded-image cache saves.

1. Images per second of each built-in augmentation (``tlcore.data.augment``; ``mixup`` and
   ``cutmix`` through ``mix``) on batches of 64 uint8 images of 224 x 224, the median of
   ``--repeats`` timed batches after one warm-up batch, one process, numpy's own threads.
2. Augmented training cannot use cached backbone features; what it still caches is the
   decoded, resized images (``Dataset.images`` keeps them in memory): images per second of
   reading a folder of 640 x 480 JPEGs at 224 x 224 the first time (decoding) and the second
   (from the cache).

Run: ``python -m benchmarks.augment_speed`` (writes ``benchmarks/results/augment_speed.json``
and ``.md``). The numbers depend on the machine and on what else runs on it: the results
record the CPU and the load average at the start.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmarks.machine import describe
from benchmarks.results import write_json

RESULTS = Path(__file__).parent / "results"
BATCH = 64
SIZE = 224


def photo_batch(count: int, size: int, seed: int = 0) -> np.ndarray:
    """Smooth random colour images (upsampled noise), like photographs to the ops."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (count, size // 16, size // 16, 3), dtype=np.uint8)
    return np.stack([
        np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))
        for image in small
    ])


def time_ops(repeats: int) -> list[dict[str, Any]]:
    """Images per second of each augmentation on a ``BATCH`` x ``SIZE`` batch."""
    from tlcore.data.augment import AUGMENTATIONS, MIXING, augment, mix

    images = photo_batch(BATCH, SIZE)
    labels = np.arange(BATCH) % 10
    rows = []
    for name in AUGMENTATIONS:
        rng = np.random.default_rng(0)

        def once(name: str = name, rng: np.random.Generator = rng) -> None:
            if name in MIXING:
                mix(images, labels, [name], rng, 10)
            else:
                augment(images, [name], rng)

        once()  # warm-up: first-touch allocations
        seconds = []
        for _ in range(repeats):
            started = time.perf_counter()
            once()
            seconds.append(time.perf_counter() - started)
        median = statistics.median(seconds)
        rows.append({
            "op": name,
            "median_batch_seconds": round(median, 5),
            "images_per_second": round(BATCH / median, 1),
            "batch_seconds": [round(s, 5) for s in seconds],
        })
    return rows


def time_cache(count: int) -> dict[str, Any]:
    """Images per second of ``Dataset.images`` at ``SIZE`` on ``count`` JPEG files, decoded
    (first epoch) and from the in-memory cache (second epoch)."""
    from tlcore.data import scan_folder

    with tempfile.TemporaryDirectory() as folder:
        photos = photo_batch(count, 480, seed=1)
        for i, photo in enumerate(photos):
            cls = Path(folder) / f"class{i % 2}"
            cls.mkdir(exist_ok=True)
            Image.fromarray(photo).resize((640, 480)).save(cls / f"{i}.jpg", quality=90)
        dataset = scan_folder(folder, verify=False)
        order = np.arange(len(dataset))
        epochs = []
        for _ in range(2):
            started = time.perf_counter()
            for start in range(0, len(order), BATCH):
                dataset.images(order[start : start + BATCH], (SIZE, SIZE))
            epochs.append(time.perf_counter() - started)
    decode, cached = epochs
    return {
        "images": count,
        "file": "640x480 JPEG, quality 90",
        "decoded_images_per_second": round(count / decode, 1),
        "cached_images_per_second": round(count / cached, 1),
        "speedup": round(decode / cached, 1),
    }


def markdown(results: dict[str, Any]) -> str:
    """The results as a short Markdown page."""
    machine = results["machine"]
    load = (machine["load_average_at_start"] or [0.0])[0]
    shared = (": the machine was shared with other work, so these are lower bounds"
              if load > 0.5 else "")
    lines = [
        "# Augmentation speed",
        "",
        f"Batches of {BATCH} uint8 images of {SIZE} x {SIZE}, median of "
        f"{results['repeats']} batches, one process, on {machine['cpu']} ({machine['cores']} "
        f"cores, load average {machine['load_average_at_start']} at the start{shared}).",
        "",
        "| op | images/s | batch (s) |",
        "|---|---:|---:|",
    ]
    for row in results["ops"]:
        lines.append(f"| {row['op']} | {row['images_per_second']:.0f} | "
                     f"{row['median_batch_seconds']:.3f} |")
    cache = results["cache"]
    lines += [
        "",
        "Augmented training recomputes the backbone's features every step; what stays cached "
        "is the decoded, resized images. Reading "
        f"{cache['images']} {cache['file']} files at {SIZE} x {SIZE}: "
        f"{cache['decoded_images_per_second']:.0f} images/s decoding (first epoch), "
        f"{cache['cached_images_per_second']:.0f} images/s from the cache (later epochs), "
        f"{cache['speedup']}x.",
        "",
        f"Command: `{machine['command']}`",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure, write ``augment_speed.json`` and ``.md`` under ``--out``, return the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cache-images", type=int, default=256)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    command = [Path(sys.executable).name, "-m", "benchmarks.augment_speed", *(argv or [])]
    results = {
        "machine": describe(command, threads=0),
        "batch": BATCH,
        "size": SIZE,
        "repeats": args.repeats,
        "ops": time_ops(args.repeats),
        "cache": time_cache(args.cache_images),
    }
    write_json(args.out / "augment_speed.json", results)
    (args.out / "augment_speed.md").write_text(markdown(results), encoding="utf-8")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
