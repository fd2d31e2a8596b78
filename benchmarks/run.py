"""Run the benchmark suite: ``python -m benchmarks.run [--quick | --tiny]``.

Starts one worker process per job (``torch``, ``keras``, ``runtime``, ``startup``), each with
the same thread count, then writes ``<mode>.json``, ``<mode>.md`` and ``<mode>.png`` into the
results folder (``benchmarks/results`` by default).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import machine
from benchmarks.config import BACKENDS, MODES
from benchmarks.findings import findings
from benchmarks.results import markdown, plot, write_json

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
ITEM_ORDER = [str(i) for i in range(1, 9)]


def worker_env(threads: int) -> dict[str, str]:
    """The environment of a worker: every thread pool at ``threads``, quiet TensorFlow."""
    env = dict(os.environ)
    for name in (
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "TF_NUM_INTRAOP_THREADS",
    ):
        env[name] = str(threads)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def run_job(
    job: str, mode: str, threads: int, work: Path, bundles: Path | None, quiet: bool
) -> dict[str, Any]:
    """Run one worker; its rows, bundles and errors."""
    import json

    out = work / f"{job}.json"
    command = [
        sys.executable,
        "-m",
        "benchmarks.worker",
        job,
        "--mode",
        mode,
        "--threads",
        str(threads),
        "--work",
        str(work),
        "--out",
        str(out),
    ]
    if bundles is not None:
        command += ["--bundles", str(bundles)]
    started = time.perf_counter()
    done = subprocess.run(
        command,
        cwd=ROOT,
        env=worker_env(threads),
        stdout=subprocess.DEVNULL if quiet else None,
        stderr=subprocess.DEVNULL if quiet else None,
        check=False,
    )
    seconds = time.perf_counter() - started
    print(f"[benchmarks] {job}: {seconds:.0f} s (exit {done.returncode})", file=sys.stderr)
    if not out.is_file():
        return {
            "rows": [],
            "bundles": [],
            "errors": [f"{job}: worker exited with {done.returncode} and wrote nothing"],
        }
    result = json.loads(out.read_text())
    result["seconds"] = seconds
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the suite and write the results; exit code 1 when a job reported an error."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        action="store_const",
        dest="mode",
        const="quick",
        help="smaller workloads, under 5 minutes on 2 cores",
    )
    size.add_argument(
        "--tiny",
        action="store_const",
        dest="mode",
        const="tiny",
        help="the smoke test's toy sizes (figures mean nothing)",
    )
    parser.add_argument(
        "--backends", default=",".join(BACKENDS), help="comma-separated: torch,keras (default both)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="threads of every side (default 1: see benchmarks/README.md)",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="where to write results")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--verbose", action="store_true", help="show the workers' output")
    args = parser.parse_args(argv)
    mode = args.mode or "full"
    backends = [b for b in args.backends.split(",") if b]
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backends {sorted(unknown)}; choose from {', '.join(BACKENDS)}")
    started = time.perf_counter()
    info = machine.describe(
        ["python", "-m", "benchmarks.run", *(argv or sys.argv[1:])], args.threads
    )
    work = args.work or Path(tempfile.mkdtemp(prefix="tlcore-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    bundles: list[dict[str, Any]] = []
    jobs: dict[str, float] = {}
    items: dict[str, dict[str, float]] = {}
    try:
        for job in backends:
            result = run_job(job, mode, args.threads, work, None, not args.verbose)
            rows += result["rows"]
            errors += result["errors"]
            bundles += result["bundles"]
            jobs[job] = result.get("seconds", 0.0)
            items[job] = result.get("item_seconds", {})
        bundle_file = work / "bundles.json"
        write_json(bundle_file, bundles)
        for job in ("runtime", "startup"):
            result = run_job(job, mode, args.threads, work, bundle_file, not args.verbose)
            rows += result["rows"]
            errors += result["errors"]
            jobs[job] = result.get("seconds", 0.0)
            items[job] = result.get("item_seconds", {})
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    rows.sort(key=lambda r: ITEM_ORDER.index(r["item"]))
    results = {
        "mode": mode,
        "config": MODES[mode].to_dict(),
        "machine": info,
        "seconds": time.perf_counter() - started,
        "job_seconds": jobs,
        "item_seconds": items,
        "bundles": [{k: v for k, v in b.items() if k not in ("path", "files")} for b in bundles],
        "rows": rows,
        "findings": findings(rows),
        "errors": errors,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    write_json(args.results / f"{mode}.json", results)
    (args.results / f"{mode}.md").write_text(markdown(results), encoding="utf-8")
    plot(results, args.results / f"{mode}.png")
    print(
        f"[benchmarks] wrote {args.results / mode}.json/.md/.png in {results['seconds']:.0f} s",
        file=sys.stderr,
    )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
