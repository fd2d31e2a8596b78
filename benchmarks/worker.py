"""One job of the suite in its own process, so each framework gets its own threads and a
process that benchmarks PyTorch never imports TensorFlow (and the other way round).

Jobs: ``torch`` / ``keras`` (items 1–4, and the bundles the other jobs use), ``runtime``
(items 5 and 8, onnxruntime only) and ``startup`` (items 6 and 7, child processes).
``run.py`` starts them; a failing item is recorded as an error and the job goes on.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.config import MODES, Mode
from benchmarks.results import write_json


class Job:
    """Collects rows, bundles and errors of one job."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.rows: list[dict[str, Any]] = []
        self.bundles: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.seconds: dict[str, float] = {}

    def attempt(self, label: str, fn: Callable[[], Any]) -> Any:
        """Run one item, timing it; on failure record the error and return ``None``."""
        started = time.perf_counter()
        try:
            return fn()
        except Exception as exc:  # one item failing must not lose the others' results
            traceback.print_exc()
            self.errors.append(f"{self.name}: {label}: {type(exc).__name__}: {exc}"[:2000])
            return None
        finally:
            self.seconds[label] = round(time.perf_counter() - started, 1)

    def to_dict(self) -> dict[str, Any]:
        """What the job writes for ``run.py``."""
        return {
            "rows": self.rows,
            "bundles": self.bundles,
            "errors": self.errors,
            "item_seconds": self.seconds,
        }


def backend_job(job: Job, backend: str, mode: Mode, threads: int, work: Path) -> None:
    """Items 1–4 for one backend, and its bundles."""
    from benchmarks import inference, training

    side = importlib.import_module(f"benchmarks.{backend}_side")
    side.set_threads(threads)
    job.attempt(
        "pretraining", lambda: side.backbone_files("mobilenet_v2", mode.train_size, work, mode)
    )
    for label, fn in (("item 1", training.finetune), ("item 2", training.frozen)):
        result = job.attempt(label, lambda fn=fn: fn(side, mode, work))
        if result:
            job.rows.append(result)
    for model in mode.models:
        bundle = job.attempt(
            f"bundle {model}", lambda model=model: inference.make_bundle(side, model, mode, work)
        )
        if bundle is None:
            continue
        job.bundles.append(bundle)
        rows = job.attempt(
            f"items 3-4 {model}", lambda b=bundle: inference.compare(side, b, mode, threads)
        )
        job.rows.extend(rows or [])


def runtime_job(job: Job, bundles: list[dict[str, Any]], mode: Mode, threads: int) -> None:
    """Items 5 and 8 on the bundles the backend jobs wrote."""
    from benchmarks import runtime_items

    for bundle in bundles:
        if (Path(bundle["path"]) / "model.int8.onnx").is_file():
            result = job.attempt(
                f"item 5 {bundle['backend']}",
                lambda b=bundle: runtime_items.int8_speed(
                    b, mode.infer_size, threads, mode.latency_calls, mode.infer_rounds
                ),
            )
            if result:
                job.rows.append(result)
    peak = job.attempt("matmul peak", lambda: runtime_items.matmul_peak(threads))
    if peak is None:
        return
    for bundle in bundles:
        result = job.attempt(
            f"item 8 {bundle['backend']} {bundle['model']}",
            lambda b=bundle: runtime_items.achieved(
                b, mode.infer_size, threads, mode.throughput_calls, peak
            ),
        )
        if result:
            job.rows.append(result)


def startup_job(
    job: Job, bundles: list[dict[str, Any]], mode: Mode, threads: int, work: Path
) -> None:
    """Items 6 and 7 with the first MobileNetV2 bundle."""
    from benchmarks import startup

    chosen = [b for b in bundles if b["model"] == "mobilenet_v2"] or bundles
    if not chosen:
        job.errors.append("startup: no bundle to predict with")
        return
    bundle = Path(chosen[0]["path"])
    photos = job.attempt(
        "photos",
        lambda: startup.write_photos(work / f"photos-{mode.predict_images}", mode.predict_images),
    )
    if not photos:
        return
    job.rows.extend(
        job.attempt(
            "item 6", lambda: startup.startup(bundle, photos[0], mode.startup_runs, threads)
        )
        or []
    )
    result = job.attempt(
        "item 7",
        lambda: startup.memory(
            bundle, photos[0], photos[0].parent, mode.memory_runs, threads, mode.name == "full"
        ),
    )
    if result:
        job.rows.append(result)


def main(argv: list[str] | None = None) -> None:
    """``python -m benchmarks.worker JOB --mode M --threads T --work DIR --out FILE``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.worker")
    parser.add_argument("job", choices=["torch", "keras", "runtime", "startup"])
    parser.add_argument("--mode", choices=sorted(MODES), required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--bundles", type=Path, help="JSON list of bundles (runtime, startup)")
    args = parser.parse_args(argv)
    mode = MODES[args.mode]
    bundles = json.loads(args.bundles.read_text()) if args.bundles else []
    job = Job(args.job)
    if args.job in ("torch", "keras"):
        backend_job(job, args.job, mode, args.threads, args.work)
    elif args.job == "runtime":
        runtime_job(job, bundles, mode, args.threads)
    else:
        startup_job(job, bundles, mode, args.threads, args.work)
    write_json(args.out, job.to_dict())


if __name__ == "__main__":
    main()
