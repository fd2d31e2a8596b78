"""Items 5 and 8, onnxruntime only: static int8 against float, and achieved GFLOP/s.

5. The bundle's ``model.int8.onnx`` (static, QDQ, per-channel, calibrated by tlcore) against
   its ``model.onnx``, batch 1, interleaved; the accuracies are the ones tlcore measured on
   the bundle's validation digits when it quantised.
8. Floating-point operations of one image (2 × the multiply-adds of every Conv, Gemm and
   MatMul, from the graph's inferred shapes) times 32, over the measured batch-32 run time,
   against the best float32 matrix multiply this machine does with the same threads
   (numpy's BLAS and onnxruntime's own MatMul, 2048 × 2048).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.inference import NAMES, THROUGHPUT_BATCH, sample_images
from benchmarks.results import row
from benchmarks.timing import call_times, interleave, ratios


def int8_speed(
    bundle: dict[str, Any], size: int, threads: int, calls: int, rounds: int
) -> dict[str, Any]:
    """Item 5 for one bundle that has ``model.int8.onnx``."""
    from tlcore.runtime import Predictor

    folder = Path(bundle["path"])
    info = json.loads((folder / "tlcore.json").read_text(encoding="utf-8"))
    quantized = info["quantized"]
    float_model = Predictor(folder, threads=threads, model="model.onnx")
    int8_model = Predictor(folder, threads=threads, model=quantized["file"])
    image = sample_images(size, 1)

    def timed(predictor: Predictor) -> float:
        return 1e3 * float(np.median(call_times(lambda: predictor.probabilities(image), calls)))

    a, b = interleave(lambda: timed(int8_model), lambda: timed(float_model), rounds)
    result = row(
        "5",
        "static int8 vs float ONNX, batch 1",
        bundle["backend"],
        NAMES[bundle["model"]],
        f"{size}px, {threads} thread(s), median of {calls} calls per side per round, "
        f"{rounds} rounds; calibrated on {(quantized.get('calibration') or {}).get('images')} "
        "training digits",
        "int8",
        a,
        "float",
        b,
        "ms",
        ratios(b, a),
        "speed-up (float / int8)",
        ">=",
        1.5,
    )
    own = quantized["accuracy"]
    checked = json.loads(
        (Path(bundle["accuracy_bundle"]) / "tlcore.json").read_text(encoding="utf-8")
    )["quantized"]["accuracy"]
    float_acc, int8_acc = checked["float"], checked["quantized"]
    drop = 100 * (float_acc - int8_acc)
    result["accuracy"] = {
        "float": float_acc,
        "int8": int8_acc,
        "images": checked["images"],
        "drop_points": round(drop, 2),
        "target_drop_points": 1.0,
        "timed_bundle": {"float": own["float"], "int8": own["quantized"]},
    }
    result["note"] = (
        f"accuracy, measured on the same MobileNetV2 at {Path(bundle['accuracy_bundle']).name} "
        f"(the size it was pretrained at, {checked['images']} validation digits, quantised "
        f"the same way): float {float_acc:.3f}, int8 {int8_acc:.3f} (drop {drop:.2f} points, "
        f"target ≤ 1). The timed 224 px bundle's head reaches only {own['float']:.3f} on "
        f"digits blown up 28× (int8 {own['quantized']:.3f}, {own['images']} digits), too "
        f"close to chance for a drop to mean anything; its default model "
        f"{info.get('default_model')}"
    )
    result["met"] = bool(result["met"] and drop <= 1.0 + 1e-9)
    return result


def graph_flops(path: Path, size: int) -> float:
    """Floating-point operations of one image: 2 × multiply-adds of Conv, Gemm and MatMul.

    Shapes come from running one image with every such node's input and output exposed:
    exported graphs often compute padding at run time (Hugging Face's TF-style "same"
    padding), which static shape inference cannot follow.
    """
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    weights = {t.name: tuple(numpy_helper.to_array(t).shape) for t in proto.graph.initializer}
    nodes = [n for n in proto.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    known = {v.name for v in proto.graph.output}
    wanted = []
    for node in nodes:
        for name in (node.input[0], node.input[1], node.output[0]):
            if name not in weights and name not in known:
                known.add(name)
                wanted.append(name)
                proto.graph.output.append(onnx.ValueInfoProto(name=name))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    image = np.zeros((1, size, size, 3), dtype=np.uint8)
    names = [o.name for o in session.get_outputs()]
    values = dict(zip(names, session.run(None, {session.get_inputs()[0].name: image}), strict=True))
    shapes = {**weights, **{k: v.shape for k, v in values.items()}}
    macs = 0
    for node in nodes:
        first, second = shapes[node.input[0]], shapes[node.input[1]]
        out = shapes[node.output[0]]
        if node.op_type == "Conv":
            macs += int(np.prod(out)) * int(np.prod(second[1:]))
        else:
            transposed = node.op_type == "Gemm" and any(
                a.name == "transA" and a.i for a in node.attribute
            )
            macs += int(np.prod(out)) * (first[-2] if transposed else first[-1])
    return 2.0 * macs


def matmul_peak(threads: int, n: int = 2048) -> dict[str, float]:
    """Best GFLOP/s of an ``n × n`` float32 matrix multiply: numpy's BLAS and onnxruntime."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    flops = 2.0 * n**3
    numpy_best = flops / min(call_times(lambda: a @ a, 5)) / 1e9
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "mm",
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in "ab"],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    ort_best = flops / min(call_times(lambda: session.run(None, {"a": a, "b": a}), 5)) / 1e9
    return {"numpy": numpy_best, "onnxruntime": ort_best, "peak": max(numpy_best, ort_best)}


def achieved(
    bundle: dict[str, Any], size: int, threads: int, calls: int, peak: dict[str, float]
) -> dict[str, Any]:
    """Item 8 for one bundle."""
    from tlcore.runtime import Predictor

    folder = Path(bundle["path"])
    predictor = Predictor(folder, threads=threads, model="model.onnx")
    images = sample_images(size, THROUGHPUT_BATCH)
    flops = graph_flops(folder / "model.onnx", size) * THROUGHPUT_BATCH
    times = call_times(lambda: predictor.probabilities(images), calls)
    gflops = [flops / t / 1e9 for t in times]
    shares = [g / peak["peak"] for g in gflops]
    result = row(
        "8",
        "achieved GFLOP/s, onnxruntime batch 32",
        bundle["backend"],
        NAMES[bundle["model"]],
        f"{size}px, {threads} thread(s), {flops / THROUGHPUT_BATCH / 1e9:.2f} GFLOP per image; "
        f"peak = best {2048}² float32 matmul: numpy {peak['numpy']:.1f}, onnxruntime "
        f"{peak['onnxruntime']:.1f} GFLOP/s",
        "onnxruntime",
        gflops,
        "matmul peak",
        [peak["peak"]],
        "GFLOP/s",
        shares,
        "share of matmul peak",
        ">=",
        0.0,
    )
    result["note"] = "reported, no target: the distance to the machine's limit"
    return result
