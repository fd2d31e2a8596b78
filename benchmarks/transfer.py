"""Transfer quality: what ImageNet weights buy, and whether tlcore's defaults are good enough.

    .venv/bin/python -m benchmarks.transfer                       # both backends, 3 seeds
    .venv/bin/python -m benchmarks.transfer --backends torch --seeds 0 --shots 5 20

Data: Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (28 px grayscale
photos of clothes, 10 classes; ``apt-get install dataset-fashion-mnist``). For each seed,
``shots`` images per class are drawn from its training set; every run is scored on one fixed,
balanced test set drawn from its test set (``--test`` images), through the run's own
``model.onnx`` on onnxruntime. Images are enlarged to ``--size`` pixels (64 by default, to
keep the whole table near half an hour on two CPU cores; 224 is EfficientNet-Lite0's own).

For each backend, shot count and seed, three models on the same training images:

- ``tlcore``: ``tlcore.fit((images, labels), backend=..., input_size=..., seed=...)`` and
  nothing else: the default backbone (EfficientNet-Lite0, ImageNet weights), the default
  stages, the adaptive validation split and step counts.
- ``random``: the same call with ``weights="none"``: the same network from random weights,
  which tlcore trains whole with BatchNorm in training mode, for the same epochs.
- ``logreg``: scikit-learn's ``LogisticRegression`` (lbfgs, C=1, standardised features) on
  the frozen ImageNet features of the same backbone, trained on all training images: the
  feature-extraction baseline the defaults must match or beat.

Results: ``benchmarks/results/transfer.json`` (every run) and ``transfer.md`` (the table:
mean and standard deviation over seeds, and the gap to the logistic regression).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

FASHION = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Boot")
RESULTS = Path(__file__).parent / "results"
METHODS = ("tlcore", "random", "logreg")


def fashion_mnist(part: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)`` of the ``train`` or ``t10k`` part: uint8 ``(N, 28, 28)``, int64."""
    prefix = FASHION / part
    images_file, labels_file = Path(f"{prefix}-images-idx3-ubyte.gz"), Path(
        f"{prefix}-labels-idx1-ubyte.gz"
    )
    if not images_file.is_file():
        sys.exit(f"{images_file} not found: apt-get install dataset-fashion-mnist")
    with gzip.open(images_file) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(labels_file) as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    return images, labels


def sample(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Indices of ``per_class`` images of each class, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(10)]
    )


def to_rgb(gray: np.ndarray, size: int) -> np.ndarray:
    """Grayscale ``(N, h, w)`` to uint8 RGB ``(N, size, size, 3)``, bilinear."""
    out = np.empty((len(gray), size, size, 3), np.uint8)
    for i, image in enumerate(gray):
        out[i] = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))[..., None]
    return out


def onnx_accuracy(run: Path, images: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of the run's ``model.onnx`` (onnxruntime) on ``images``."""
    from tlcore.runtime import Predictor

    predictor = Predictor(run)
    probabilities = np.concatenate(
        [predictor.probabilities(images[i : i + 256]) for i in range(0, len(images), 256)]
    )
    return float(np.mean(probabilities.argmax(axis=1) == labels))


def logreg_accuracy(
    backend: str,
    size: int,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
) -> float:
    """Logistic regression on the frozen ImageNet features of the default backbone."""
    from sklearn.linear_model import LogisticRegression

    from tlcore.build import build_model
    from tlcore.plugins.calls import BackendCalls
    from tlcore.recipe import build_recipe

    model, _ = build_model(build_recipe(backend=backend, input_size=size), 10)

    def features(images: np.ndarray) -> np.ndarray:
        return BackendCalls(backend).extract_features(model, images)  # batched by the backend

    x_train, x_test = features(train[0]), features(test[0])
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
    classifier = LogisticRegression(max_iter=3000, C=1.0)
    classifier.fit((x_train - mean) / std, train[1])
    return float(classifier.score((x_test - mean) / std, test[1]))


def one_row(backend: str, shots: int, seed: int, size: int, test: tuple, work: Path) -> dict:
    """The three methods on one draw of ``shots`` images per class."""
    import tlcore

    images, labels = fashion_mnist("train")
    chosen = sample(labels, shots, 1000 + seed)
    train = (to_rgb(images[chosen], size), labels[chosen])
    row: dict[str, Any] = {"backend": backend, "shots": shots, "seed": seed}
    for method in METHODS:
        started = time.perf_counter()
        if method == "logreg":
            row[method] = logreg_accuracy(backend, size, train, test)
        else:
            weights = "pretrained" if method == "tlcore" else "none"
            out = work / f"{backend}-{shots}-{seed}-{method}"
            result = tlcore.fit(train, backend=backend, input_size=size, seed=seed,
                                weights=weights, out=out)
            row[method] = onnx_accuracy(out, *test)
            row[f"{method}_epochs"] = len(result.history)
            row[f"{method}_warnings"] = list(getattr(result, "warnings", []))
        row[f"{method}_seconds"] = round(time.perf_counter() - started, 1)
        print(f"{backend} {shots:>3}/class seed {seed} {method:>6}: {row[method]:.3f} "
              f"({row[f'{method}_seconds']} s)", flush=True)
    return row


def table(rows: list[dict]) -> str:
    """The Markdown table: mean ± std over seeds per backend and shot count."""
    lines = [
        "| backend | images/class | tlcore defaults | random init, same budget "
        "| logistic regression | tlcore − logreg |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    keys = sorted({(r["backend"], r["shots"]) for r in rows})
    for backend, shots in keys:
        group = [r for r in rows if (r["backend"], r["shots"]) == (backend, shots)]
        cells = []
        for method in METHODS:
            values = np.array([r[method] for r in group])
            cells.append(f"{values.mean():.3f} ± {values.std():.3f}")
        gap = np.mean([r["tlcore"] - r["logreg"] for r in group])
        lines.append(f"| {backend} | {shots} | " + " | ".join(cells) + f" | {gap:+.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run the table and write ``transfer.json`` / ``transfer.md``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["torch", "keras"])
    parser.add_argument("--shots", nargs="+", type=int, default=[5, 10, 20, 50, 100])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--test", type=int, default=1000, help="test images (balanced)")
    parser.add_argument("--name", default="transfer", help="results file name")
    parser.add_argument("--results", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--combine", nargs="+", type=Path, metavar="JSON",
                        help="only merge the rows of earlier results (say, one run per backend)")
    args = parser.parse_args(argv)
    if args.combine:
        write(args.results, args.name, combine(args.combine))
        return
    started = time.perf_counter()
    test_images, test_labels = fashion_mnist("t10k")
    chosen = sample(test_labels, math.ceil(args.test / 10), 7)
    test = (to_rgb(test_images[chosen], args.size), test_labels[chosen])
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for backend in args.backends:
            for shots in args.shots:
                for seed in args.seeds:
                    rows.append(one_row(backend, shots, seed, args.size, test, Path(work)))
    summary = {
        "command": "python -m benchmarks.transfer "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "data": "Fashion-MNIST (Debian dataset-fashion-mnist)",
        "input_size": args.size,
        "test_images": len(test[1]),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, "
        f"{len(__import__('os').sched_getaffinity(0))} cores",
        "seconds": round(time.perf_counter() - started, 1),
        "rows": rows,
    }
    write(args.results, args.name, summary)


def combine(files: list[Path]) -> dict[str, Any]:
    """One summary from several results of the same data, size and test set: their rows
    together, each command kept."""
    parts = [json.loads(path.read_text()) for path in files]
    same = {(p["data"], p["input_size"], p["test_images"]) for p in parts}
    if len(same) != 1:
        sys.exit(f"these results were not measured alike: {sorted(same)}")
    return {
        **parts[0],
        "command": " + ".join(p["command"] for p in parts),
        "seconds": round(sum(p["seconds"] for p in parts), 1),
        "rows": [row for p in parts for row in p["rows"]],
    }


def write(folder: Path, name: str, summary: dict[str, Any]) -> None:
    """``<name>.json`` (every run) and ``<name>.md`` (the table) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(summary, indent=1) + "\n")
    markdown = (
        f"# Transfer quality\n\n`{summary['command']}`: {summary['data']}, "
        f"{summary['input_size']} px, {summary['test_images']} test images, "
        f"{summary['seconds']} s on {summary['machine']}.\n\n{table(summary['rows'])}\n"
    )
    (folder / f"{name}.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
