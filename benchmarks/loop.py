"""What each option of the training loop buys at its default, measured on real images.

    .venv/bin/python -m benchmarks.loop                                  # every variant (hours)
    .venv/bin/python -m benchmarks.loop --variants default augment --shots 5 50 --seeds 0 1 2
    .venv/bin/python -m benchmarks.loop --imbalance 10 --variants default class_weights sampler
    .venv/bin/python -m benchmarks.loop --quick                          # smoke test: seconds
    .venv/bin/python -m benchmarks.loop --merge results/a.json results/b.json --name loop

Data: Fashion-MNIST, as :mod:`benchmarks.transfer` draws it: for each seed, ``shots`` images
per class from its training set, scored on one fixed, balanced test set from its test set
(``--test`` images) through the run's own ``model.onnx`` on onnxruntime. Images are enlarged
to ``--size`` pixels (64 by default). With ``--imbalance R`` the training draw is imbalanced:
class ``c`` gets ``shots * R ** (-c / 9)`` images (from ``shots`` down to ``shots / R``); the
test set stays balanced, so its accuracy is the balanced accuracy.

Each variant is ``tlcore.fit`` with the default recipe (EfficientNet-Lite0's ImageNet weights,
the default stages) and the dotted overrides of :data:`VARIANTS`; ``default`` has none. Every
variant of a seed trains on the same images, so the table gives each variant's mean and
standard deviation over seeds and its mean difference to ``default`` over the same seeds.

Results: ``benchmarks/results/<name>.json`` (every run) and ``<name>.md`` (the table).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import describe
from benchmarks.transfer import fashion_mnist, onnx_accuracy, sample, to_rgb

RESULTS = Path(__file__).parent / "results"

#: Each variant's dotted recipe overrides, on top of the defaults.
#: ``lr_*`` is the head stage's rate grid around the default (1e-3), against ``lr_auto`` (the
#: learning-rate finder's suggestion for the head stage) and ``lr_auto_both`` (both stages);
#: ``ft_lr_*`` is the fine-tuning stage's grid around its default (1e-4).
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    # augmentation (any of it turns feature caching off)
    "hflip": {"data.augment": ["hflip"]},
    "crop_flip": {"data.augment": ["random_resized_crop", "hflip"]},
    "trivialaugment": {"data.augment": ["hflip", "trivialaugment"]},
    "randaugment": {"data.augment": ["hflip", "randaugment"]},
    "mixup_cutmix": {"data.augment": ["hflip", "mixup", "cutmix"]},
    "hflip_tta": {"data.augment": ["hflip"], "export.tta": "hflip"},
    "hflip_tta_crops": {"data.augment": ["hflip"], "export.tta": "hflip_crops"},
    "trivialaugment_tta": {"data.augment": ["hflip", "trivialaugment"], "export.tta": "hflip"},
    # the loop
    "ema": {"train.ema": 0.99},
    "clip_norm": {"train.clip_norm": 1.0},
    "accumulate": {"train.accumulate": 4},
    # learning rates
    "lr_1e-4": {"train.stages.0.lr": 1e-4},
    "lr_3e-4": {"train.stages.0.lr": 3e-4},
    "lr_3e-3": {"train.stages.0.lr": 3e-3},
    "lr_1e-2": {"train.stages.0.lr": 1e-2},
    "lr_auto": {"train.stages.0.lr": "auto"},
    "lr_auto_both": {"train.stages.0.lr": "auto", "train.stages.1.lr": "auto"},
    # the fine-tuning stage's rate grid around its default (1e-4)
    "ft_lr_3e-5": {"train.stages.1.lr": 3e-5},
    "ft_lr_3e-4": {"train.stages.1.lr": 3e-4},
    "ft_lr_1e-3": {"train.stages.1.lr": 1e-3},
    "layer_decay": {"train.stages.1.layer_decay": 0.7},
    "gradual": {"train.stages.1.unfreeze": "gradual"},
    "restarts": {"train.stages.0.schedule": "cosine_restarts",
                 "train.stages.1.schedule": "cosine_restarts"},
    # class imbalance (with --imbalance)
    "class_weights": {"train.class_weights": "balanced"},
    "sampler": {"train.sampler": "balanced"},
}


def imbalanced_sample(labels: np.ndarray, shots: int, ratio: float, seed: int) -> np.ndarray:
    """Indices of an imbalanced draw: class ``c`` gets ``shots * ratio ** (-c / 9)`` images
    (at least one)."""
    rng = np.random.default_rng(seed)
    counts = [max(1, round(shots * ratio ** (-c / 9))) for c in range(10)]
    return np.concatenate([
        rng.choice(np.flatnonzero(labels == c), count, replace=False)
        for c, count in enumerate(counts)
    ])


def one_run(
    backend: str, variant: str, train: tuple[np.ndarray, np.ndarray], seed: int, size: int,
    test: tuple[np.ndarray, np.ndarray], work: Path,
) -> dict[str, Any]:
    """Train one variant on ``train`` and score its bundle on ``test``."""
    import tlcore

    out = work / f"{backend}-{variant}-{len(train[1])}-{seed}"
    started = time.perf_counter()
    result = tlcore.fit(train, backend=backend, input_size=size, seed=seed, out=out,
                        overrides=dict(VARIANTS[variant]))
    accuracy = onnx_accuracy(out, *test)
    row = {
        "accuracy": accuracy,
        "epochs": len(result.history),
        "seconds": round(time.perf_counter() - started, 1),
        "warnings": list(result.warnings),
        # each stage's rate as trained (lr: auto resolved to the finder's suggestion)
        "stage_lrs": {stage.name: stage.lr for stage in result.recipe.train.stages},
        # each stage's training time (its epochs' seconds): where an option's cost goes
        "stage_seconds": stage_seconds(result.history),
    }
    print(f"{backend} {variant:>16} n={len(train[1]):>5} seed {seed}: {accuracy:.3f} "
          f"({row['seconds']} s)", flush=True)
    return row


def stage_seconds(history: list[dict[str, Any]]) -> dict[str, float]:
    """Each stage's summed epoch ``seconds`` in a run's history."""
    totals: dict[str, float] = {}
    for epoch in history:
        totals[epoch["stage"]] = totals.get(epoch["stage"], 0.0) + float(epoch["seconds"])
    return {stage: round(seconds, 1) for stage, seconds in totals.items()}


def table(rows: list[dict[str, Any]]) -> str:
    """Mean ± std over seeds per backend, shots and variant, and the mean ± std of its paired
    differences to ``default`` (over the seeds both have)."""
    lines = [
        "| backend | images/class | variant | accuracy | vs default | seconds |",
        "| --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for backend, shots in sorted({(r["backend"], r["shots"]) for r in rows}):
        group = [r for r in rows if (r["backend"], r["shots"]) == (backend, shots)]
        base = {r["seed"]: r["accuracy"] for r in group if r["variant"] == "default"}
        for variant in dict.fromkeys(r["variant"] for r in group):
            runs = [r for r in group if r["variant"] == variant]
            values = np.array([r["accuracy"] for r in runs])
            paired = [r["accuracy"] - base[r["seed"]] for r in runs if r["seed"] in base]
            gap = (f"{np.mean(paired):+.3f} ± {np.std(paired):.3f}"
                   if paired and variant != "default" else "")
            seconds = np.mean([r["seconds"] for r in runs])
            lines.append(f"| {backend} | {shots} | {variant} | {values.mean():.3f} ± "
                         f"{values.std():.3f} | {gap} | {seconds:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run the chosen variants and write ``<name>.json`` / ``<name>.md``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["torch", "keras"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--shots", nargs="+", type=int, default=[5, 50, 500])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--test", type=int, default=1000, help="test images (balanced)")
    parser.add_argument("--imbalance", type=float, default=1.0,
                        help="largest / smallest class in the training draw")
    parser.add_argument("--name", default="loop", help="results file name")
    parser.add_argument("--results", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: torch, 5 per class, one seed, 32 px, 100 test images")
    parser.add_argument("--merge", nargs="+", type=Path, metavar="JSON",
                        help="write one table of earlier results files (same data) and exit")
    args = parser.parse_args(argv)
    given = sys.argv[1:] if argv is None else list(argv)
    if args.merge:
        write(args.results, args.name, merge([json.loads(f.read_text()) for f in args.merge]))
        return
    if args.quick:
        args.backends, args.shots, args.seeds, args.size, args.test = ["torch"], [5], [0], 32, 100
        args.variants = args.variants[:2]
    started = time.perf_counter()
    test_images, test_labels = fashion_mnist("t10k")
    chosen = sample(test_labels, math.ceil(args.test / 10), 7)
    test = (to_rgb(test_images[chosen], args.size), test_labels[chosen])
    images, labels = fashion_mnist("train")
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for backend in args.backends:
            for shots in args.shots:
                for seed in args.seeds:
                    drawn = (imbalanced_sample(labels, shots, args.imbalance, 1000 + seed)
                             if args.imbalance > 1 else sample(labels, shots, 1000 + seed))
                    train = (to_rgb(images[drawn], args.size), labels[drawn])
                    for variant in args.variants:
                        row = one_run(backend, variant, train, seed, args.size, test, Path(work))
                        rows.append({"backend": backend, "shots": shots, "seed": seed,
                                     "variant": variant, **row})
                        # after every run, so an interrupted benchmark keeps what it measured
                        write(args.results, args.name, summarise(args, given, rows, started),
                              echo=False)
    write(args.results, args.name, summarise(args, given, rows, started))


def summarise(
    args: argparse.Namespace, given: list[str], rows: list[dict[str, Any]], started: float
) -> dict[str, Any]:
    """The results file's content: how it was run, on what, and every run's row."""
    return {
        "command": "python -m benchmarks.loop " + " ".join(given),
        "data": "Fashion-MNIST (Debian dataset-fashion-mnist)"
        + (f", imbalanced {args.imbalance:g}:1" if args.imbalance > 1 else ""),
        "input_size": args.size,
        "test_images": args.test,
        "variants": {name: VARIANTS[name] for name in args.variants},
        "machine": describe(["python", "-m", "benchmarks.loop", *given], 0),
        "seconds": round(time.perf_counter() - started, 1),
        "rows": rows,
    }


def merge(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """One summary of several runs of this benchmark on the same data (each variant's rows
    pair with ``default``'s of the same backend, shots and seed, whichever file holds them)."""
    first = summaries[0]
    if any(s["data"] != first["data"] or s["input_size"] != first["input_size"]
           for s in summaries):
        raise SystemExit("--merge: the files measured different data or input sizes")
    return {
        **first,
        "command": " && ".join(s["command"] for s in summaries),
        "variants": {k: v for s in summaries for k, v in s["variants"].items()},
        "seconds": round(sum(s["seconds"] for s in summaries), 1),
        "rows": [row for s in summaries for row in s["rows"]],
    }


def write(folder: Path, name: str, summary: dict[str, Any], echo: bool = True) -> None:
    """``<name>.json`` (every run) and ``<name>.md`` (the table) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(summary, indent=1) + "\n")
    machine = summary["machine"]
    where = f"{machine['cpu']}, {machine['cores']} cores, load {machine['load_average_at_start']}"
    overrides = "\n".join(f"- `{v}`: {o or 'the defaults'}" for v, o in summary["variants"].items())
    markdown = (
        f"# The training loop's options\n\n`{summary['command']}`: {summary['data']}, "
        f"{summary['input_size']} px, {summary['test_images']} test images, "
        f"{summary['seconds']} s on {where}.\n\nVariants (recipe overrides):\n\n"
        f"{overrides}\n\n{table(summary['rows'])}\n"
    )
    (folder / f"{name}.md").write_text(markdown)
    if echo:
        print(markdown)


if __name__ == "__main__":
    main()
