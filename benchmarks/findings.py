"""Why a target is missed: the explanation and evidence written next to the figures.

Each entry was written from a profile taken on this machine (commands in
``benchmarks/README.md``); it is reported only when its item misses its target in the run at
hand, so a fixed cause disappears from the results by itself.
"""

from __future__ import annotations

from typing import Any

EXPLANATIONS: dict[str, str] = {
    "1": (
        "tlcore's epoch is measured between two tl_on_epoch_end events, so it includes what "
        "the hand-written loop does not do: a checkpoint every epoch (weights, optimiser "
        "state and best weights, about 30 MB for MobileNetV2, written atomically) and two "
        "copies of the weights. On this shared 2-core machine one pair of runs swings by "
        "±40 %, so a single quick-mode pair is not conclusive; the full mode repeats it. "
        "Keras additionally traces its train, evaluation and feature functions separately "
        "(tlcore_keras.training) where model.fit traces one train and one test function"
    ),
    "2": (
        "speed: cProfile of the torch frozen job (quick size, 4.6 s in all): feature "
        "extraction 1.0 s (the work the cache needs), checkpoints 1.0 s (10 of them, each "
        "with the whole frozen backbone), the history plot 0.8 s (matplotlib), model "
        "building 0.5 s, the final uncached validation pass 0.2 s, the 10 head epochs 0.7 s. "
        "These fixed costs of Trainer (tlcore/train.py, not changed here) cap the speed-up "
        "on small jobs; it passes 5× once the hand-written job is long enough (torch, full "
        "mode). Keras adds a trace and graph optimisation of every compiled function "
        "(features, head step, head evaluation, full model), seconds each here, against two "
        "for model.fit. Suggested fix: while the backbone is frozen, checkpoint only the "
        "weights that train, and draw the history plot only when asked. Accuracy: no "
        "pretrained weights can be downloaded, so the backbones are random (BatchNorm "
        "statistics set from digits); a linear head on such features reaches only 15–30 % "
        "and has not converged in 10 epochs, so the two sides' different head "
        "initialisation and shuffling leave gaps of a few points (tlcore was the higher in "
        "every pair); the hand-written runs themselves differ by 1.7–2.5 points between "
        "rounds. The 1-point criterion needs pretrained features to be meaningful"
    ),
    "3": (
        "Keras ResNet50 at batch 1 is compute-bound: onnxruntime takes about 83 ms, which is "
        "8.2 GFLOP at the machine's measured matmul peak (item 8: ResNet50 runs at "
        "~100 % of it). model.predict adds a fixed ~100 ms (see MobileNetV2: 136 ms against "
        "11 ms) to TensorFlow's own ~100 ms, so 5× would need onnxruntime to beat the "
        "hardware's limit. The target holds for MobileNetV2 (13×), where the fixed cost "
        "dominates"
    ),
    "5": (
        "onnxruntime's profiler (`python -m benchmarks.profiles BUNDLE --model "
        "model.int8.onnx`) on the quick MobileNetV2 bundle, batch 1, 1 thread: the float "
        "model spends 82 % of node time in Conv and 18 % in the Sub and Div of the input "
        "normalisation; in the int8 model QLinearConv takes 43 %, but 19 % is still float "
        "Conv (nodes onnxruntime did not fuse into QLinearConv), 11 % DequantizeLinear, 6 % "
        "Transpose (QLinearConv runs NHWC, the graph is NCHW) and the same 18 % of "
        "normalisation. The int8 convolutions are about 1.8× faster than the float ones, "
        "but the fixed and added costs leave the whole model about as fast as float on this "
        "AVX-512 VNNI CPU. Accuracy: on these random-weight models (float accuracy about "
        "25 %, on 40–200 validation digits) static MinMax int8 lost 0–7.5 points between "
        "runs; tlcore's guard then kept model.onnx as the default model, as designed"
    ),
    "6": (
        "`import tlcore` now loads only tlcore.errors (pluggy and the recipe are imported on "
        "first use): `python -X importtime -c 'import tlcore'` reports about 15 ms for "
        "tlcore itself; the rest is the interpreter (`python -c pass` in the notes). On a "
        "machine with a load average above its core count, every process start takes "
        "about twice as long"
    ),
    "7": (
        "peak memory grows with the batch run through onnxruntime, not with the number of "
        "images: a float MobileNetV2 at 224 px needs about 10 MB of activations per image "
        "(tl predict on 60 and on 1,000 images at batch 32 peaked at 206 and 292 MB). "
        "`tl predict` therefore runs 8 images at a time by default"
    ),
}


def findings(rows: list[dict[str, Any]]) -> list[str]:
    """One line per missed item that has an explanation."""
    missed = sorted({r["item"] for r in rows if not r["met"]}, key=int)
    return [f"item {item}: {EXPLANATIONS[item]}" for item in missed if item in EXPLANATIONS]
