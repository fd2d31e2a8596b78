"""The Keras backend's devices, precision and ``tf.distribute``: real TensorFlow, real worker
processes joined by ``TF_CONFIG``, a real ``MirroredStrategy`` over two logical CPUs.

Tolerance of "trains as one process": the distributed step does the arithmetic of one
process on the whole batch except that the gradient is the sum of per-replica partial sums
(each already weighted by its share) instead of one mean, and the forward runs on smaller
batches. float32 addition in another order differs by ~1e-7 relative per operation; over
the few SGD/AdamW steps here, weights of order 0.01 to 1 stay within 1e-6 of each other
(``rtol=1e-4, atol=2e-5`` leaves room for other CPUs' kernels), while one wrong share (a
replica's loss weighted 1/2 instead of 3/5, the L2 penalty counted twice) moves them by
1e-3 or more. Ranks, which apply the same summed gradients, must agree exactly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tlcore.errors import TlcoreError
from tlcore.interfaces import Batch
from tlcore.parallel import Placement
from tlcore.testing import BackendUnderTest, images
from tlcore.testing.workers import finish_all, free_ports

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")
ort = pytest.importorskip("onnxruntime")

from tlcore_keras.collective import KerasCollective  # noqa: E402
from tlcore_keras.placement import setup  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
KERAS = BackendUnderTest("keras")
TOLERANCE = {"rtol": 1e-4, "atol": 2e-5}
SIZE = 32


def build(num_classes: int = 3, **head):
    """``builtin:simple_cnn`` at 32x32 with a new head."""
    from tlcore.recipe import HeadSpec

    return KERAS.build(num_classes, HeadSpec(**head), source="builtin:simple_cnn",
                       input_size=SIZE)


def onnx_logits(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


# --- one process on this CPU ------------------------------------------------------------


def test_setup_on_this_cpu_is_one_float32_process():
    result = setup(Placement("auto", "32"))
    c = result.collective
    assert (result.device, result.precision, result.engine) == ("cpu", "32", "")
    assert (c.rank, c.world_size, c.strategy) == (0, 1, None)
    assert result.peak_memory() > 100e6  # the process's peak on the CPU: TensorFlow alone is more
    value = np.array([1.5, -2.0], np.float32)
    assert np.array_equal(c.all_reduce(value, "max"), value)
    assert c.all_gather(value).shape == (1, 2)
    json.dumps(result.describe())
    with c.scope():
        model = build()
    assert model.policy == "float32" and model.strategy is None


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_is_refused_naming_what_tensorflow_sees(device):
    with pytest.raises(TlcoreError) as info:
        setup(Placement(device))
    assert "finds none" in info.value.message and "CPU:0" in info.value.message
    assert "train.device: auto or cpu" in info.value.hint


def test_mps_and_16_mixed_on_a_cpu_are_refused_with_the_reason():
    with pytest.raises(TlcoreError, match="TensorFlow has no 'mps' device"):
        setup(Placement("mps"))
    with pytest.raises(TlcoreError) as info:
        setup(Placement("cpu", "16-mixed"))
    assert "loss scaling are for GPUs" in info.value.message and "bf16" in info.value.hint


def test_bf16_trains_in_bfloat16_and_evaluates_and_exports_in_float32(tmp_path):
    """This CPU's TensorFlow computes bfloat16 (setup probes it): the layers compute in it,
    the weights stay float32, and evaluation, ONNX and the native file are float32."""
    result = setup(Placement("cpu", "bf16"))
    with result.collective.scope():
        model = build()
    assert keras.config.dtype_policy().name == "float32"  # the scope restored it
    assert model.policy == "mixed_bfloat16"
    assert model.full(images(2), training=False).dtype == tf.bfloat16
    KERAS.freeze(model, policy="none", batchnorm="frozen")
    with result.collective.scope():
        opt = KERAS.optimizer(model, optimizer="adamw", lr=1e-2)
    x, y = images(8, size=SIZE), np.arange(8) % 3
    out = KERAS.step(model, opt, x, y)
    assert np.isfinite(out["loss"]) and out["outputs"].dtype == np.float32
    assert all(v.dtype == np.float32 for v in KERAS.weights(model).values())

    logits = KERAS.logits(model, x)
    bf16 = np.asarray(tf.cast(model.full(x, training=False), tf.float32))
    assert not np.allclose(logits, bf16, rtol=1e-5, atol=1e-5)  # eval is not bfloat16
    path = KERAS.export(model, "onnx", tmp_path / "onnx", example=x)
    np.testing.assert_allclose(onnx_logits(path, x), logits, rtol=1e-5, atol=1e-5)
    import onnx

    graph = onnx.load(str(path)).graph
    low = {onnx.TensorProto.BFLOAT16, onnx.TensorProto.FLOAT16}
    assert not [t.name for t in graph.initializer if t.data_type in low]
    native = KERAS.export(model, "native", tmp_path / "native")
    loaded = keras.saving.load_model(native, safe_mode=True, compile=False)
    np.testing.assert_allclose(loaded(x, training=False).numpy(), logits, rtol=1e-5, atol=1e-5)
    assert model.full(x[:1], training=False).dtype == tf.bfloat16  # policies restored


def test_loss_scaling_step_on_float16_layers():
    """The ``16-mixed`` step (refused on CPUs by setup, run here on this CPU's float16
    kernels): a LossScaleOptimizer whose state travels like any other."""
    with KerasCollective(policy="mixed_float16").scope():
        model = build()
    KERAS.freeze(model, policy="last_n", n=1, batchnorm="frozen")
    opt = KERAS.optimizer(model, optimizer="sgd", lr=0.05, weight_decay=1e-3)
    assert isinstance(opt.optimizer, keras.optimizers.LossScaleOptimizer)
    before = KERAS.weights(model)
    x, y = images(6, size=SIZE), np.arange(6) % 3
    for _ in range(2):
        assert np.isfinite(KERAS.step(model, opt, x, y)["loss"])
    after = KERAS.weights(model)
    assert any(not np.array_equal(before[k], after[k]) for k in before)
    state = KERAS.optimizer_state(opt)
    assert {"counter", "scale", "iteration"} <= {k.split(".", 1)[1] for k in state}
    KERAS.set_optimizer_state(opt, state)
    assert KERAS.logits(model, x).dtype == np.float32


def test_a_model_pinned_to_a_device_trains_and_evaluates_there():
    """What a CPU run gets when TensorFlow had already started on GPUs it can no longer hide
    (``/cpu:0`` then): the model's variables and compiled functions stay on the device.
    Evaluation turns TensorFloat-32 off only while it runs."""
    with KerasCollective(device="/cpu:0").scope():
        model = build()
    assert model.device.endswith("CPU:0")
    assert all(v.value.device.endswith("CPU:0") for v in model.full.weights)
    KERAS.freeze(model, policy="none", batchnorm="frozen")
    opt = KERAS.optimizer(model, optimizer="sgd", lr=0.05)
    x, y = images(4, size=SIZE), np.arange(4) % 3
    assert np.isfinite(KERAS.step(model, opt, x, y)["loss"])
    tf32 = tf.config.experimental.tensor_float_32_execution_enabled()
    np.testing.assert_allclose(KERAS.logits(model, x), model(x), rtol=1e-6)
    assert tf.config.experimental.tensor_float_32_execution_enabled() == tf32


# --- processes: two TF_CONFIG workers, two logical CPUs ----------------------------------

WORKER = '''
import json, os, sys, contextlib
from pathlib import Path
mode, out = sys.argv[1], Path(sys.argv[2])
import numpy as np
if mode == "mirrored":  # before TensorFlow starts: two logical CPUs, one strategy over them
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from tlcore_keras.collective import KerasCollective
    c = KerasCollective(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    engine = "MirroredStrategy"
else:
    from tlcore.errors import TlcoreError
    from tlcore.parallel import Placement
    from tlcore.plugins.calls import BackendCalls
    try:
        setup = BackendCalls("keras").setup(Placement("auto", "32"))
    except TlcoreError as exc:  # mode "alone": the other worker never comes
        out.with_suffix(".json").write_text(json.dumps({"error": str(exc)}))
        sys.exit(0)
    c, engine = setup.collective, setup.engine
from tlcore.errors import TlcoreError
from tlcore.recipe import HeadSpec
from tlcore.testing import BackendUnderTest, images
from tlcore.testing.workers import finish_all, free_ports
K = BackendUnderTest("keras")
rank, world = c.rank, c.world_size
result = {"rank": np.array(rank), "world": np.array(world)}
info = {"engine": engine}

if mode == "die":
    c.barrier()
    if rank == 1:
        os._exit(0)
    try:
        c.all_reduce(np.ones(3, np.float32))
    except TlcoreError as exc:
        info["error"] = str(exc)
    out.with_suffix(".json").write_text(json.dumps(info))
    sys.exit(0)

if world > 1:
    value = np.array([rank + 1.0, -10.0 * (rank + 1)], np.float32)
    c.barrier()
    result.update({
        "sum": c.all_reduce(value), "max": c.all_reduce(value, "max"),
        "min": c.all_reduce(value, "min"), "int_sum": c.all_reduce(np.array([2**40 + rank])),
        "bool_max": c.all_reduce(np.array([rank == 1, False]), "max"),
        "gather": c.all_gather(np.full((2, 3), rank, np.int64)),
        "gather16": c.all_gather(np.full(2, rank + 0.5, np.float16)),
        "broadcast": c.broadcast(np.full(4, rank + 5, np.int32), src=1),
        "broadcast_f": c.broadcast(np.array([np.pi * (rank + 1), -0.0, np.inf]), src=0),
    })

x, y = images(11, size=32), np.arange(11) % 3
BATCHES = (np.arange(0, 5), np.arange(5, 9))  # 5 = 3 + 2, then 4 = 2 + 2

def build(scope):
    with scope:
        return K.build(3, HeadSpec(), source="builtin:simple_cnn", input_size=32)

def run(kind, freeze, stage):
    dist, ref = build(c.scope()), build(contextlib.nullcontext())
    start = {k: c.broadcast(v) for k, v in K.weights(dist).items()}  # rank 0's
    K.set_weights(dist, start); K.set_weights(ref, start)
    for model in (dist, ref):
        K.freeze(model, **freeze)
    with c.scope():
        opt = K.optimizer(dist, **stage)
    ref_opt = K.optimizer(ref, **stage)
    features = freeze["policy"] == "all"
    inputs = K.features(dist, x) if features else x
    for i, batch in enumerate(BATCHES):
        mine = np.array_split(batch, world)[rank]
        got = K.step(dist, opt, inputs[mine], y[mine], lr=stage["lr"], features=features,
                     share=len(mine) / len(batch))
        want = K.step(ref, ref_opt, inputs[batch], y[batch], lr=stage["lr"], features=features)
        rows = np.isin(batch, mine)
        result[f"{kind}/logits{i}"] = got["outputs"] - want["outputs"][rows]
        total = c.all_reduce(np.array([got["loss"] * len(mine) / len(batch)]))[0]
        result[f"{kind}/loss{i}"] = np.array([total, want["loss"]])
    for name, value in K.weights(dist).items():
        result[f"{kind}/dist/{name}"] = value
        result[f"{kind}/ref/{name}"] = K.weights(ref)[name]
    return dist, ref

run("features", {"policy": "all"}, {"optimizer": "adamw", "lr": 1e-2, "weight_decay": 1e-2})
dist, ref = run("images", {"policy": "none", "batchnorm": "frozen"},
                {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-2})
bn, _ = run("bn", {"policy": "none", "batchnorm": "train"},
            {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0})
stats = [v for v in bn.full.weights if "moving_" in v.path]
copies = [[np.asarray(t) for t in v.value.values] for v in stats]
result["bn/replicas_agree"] = np.array(all(np.array_equal(p[0], q) for p in copies for q in p))

# Rank 0 evaluates and exports alone while the others wait: no collective in either.
if rank == 0:
    result["eval"] = K.logits(dist, x) - K.logits(ref, x)
    path = K.export(dist, "onnx", out.parent / f"onnx-{mode}", example=x[:2])
    import onnxruntime as ort
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    result["onnx"] = s.run(None, {s.get_inputs()[0].name: x})[0] - K.logits(dist, x)
c.barrier()

if mode == "mirrored":  # loss scaling's replicas agree on skipping (float16 on this CPU)
    scaled = KerasCollective(c.strategy, "mixed_float16")
    with scaled.scope():
        model = K.build(3, HeadSpec(), source="builtin:simple_cnn", input_size=32)
    K.freeze(model, policy="none", batchnorm="frozen")
    opt = K.optimizer(model, optimizer="sgd", lr=0.05)
    result["scaled_loss"] = np.array([K.step(model, opt, x[:5], y[:5])["loss"]])
c.close()
np.savez(out, **result)
out.with_suffix(".json").write_text(json.dumps(info))
'''


def _launch(
    tmp_path: Path, mode: str, workers: int, timeout: float = 30, cluster_size: int = 0
) -> list[Path]:
    """``workers`` processes of :data:`WORKER`, with ``TF_CONFIG`` for a cluster of
    ``cluster_size`` (``workers`` by default) when it is more than one; their result files."""
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER))
    size = cluster_size or workers
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(size)]}
    processes, outs = [], []
    for rank in range(workers):
        env = {**os.environ, "TLCORE_DIST_TIMEOUT": str(timeout), "TF_CPP_MIN_LOG_LEVEL": "2"}
        env.pop("TF_CONFIG", None)
        if size > 1:
            task = {"type": "worker", "index": rank}
            env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": task})
        out = tmp_path / f"{mode}{rank}.npz"
        command = [sys.executable, str(script), mode, str(out)]
        processes.append(subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True))
        outs.append(out)
    finish_all(processes, 240, f"{mode} worker:")
    return outs


def _load(out: Path) -> dict[str, np.ndarray]:
    with np.load(out) as npz:
        return {name: npz[name] for name in npz.files}


def _check_training(r: dict[str, np.ndarray]) -> None:
    """The distributed run's weights, losses and logits against one process's."""
    for kind in ("features", "images"):
        names = [k.split("/", 2)[2] for k in r if k.startswith(f"{kind}/dist/")]
        assert names
        for name in names:
            np.testing.assert_allclose(
                r[f"{kind}/dist/{name}"], r[f"{kind}/ref/{name}"], **TOLERANCE,
                err_msg=f"{kind} {name}",
            )
        for i in range(2):
            total, single = r[f"{kind}/loss{i}"]
            assert total == pytest.approx(single, rel=1e-5)
            np.testing.assert_allclose(r[f"{kind}/logits{i}"], 0, atol=1e-5)
    assert bool(r["bn/replicas_agree"])


def test_two_tf_config_workers_agree_and_train_as_one_process(tmp_path):
    r0, r1 = (_load(out) for out in _launch(tmp_path, "mwms", 2))
    assert json.loads((tmp_path / "mwms0.json").read_text())["engine"] == (
        "MultiWorkerMirroredStrategy (RING)"
    )
    assert [int(r["rank"]) for r in (r0, r1)] == [0, 1]
    assert [int(r["world"]) for r in (r0, r1)] == [2, 2]
    for r in (r0, r1):
        np.testing.assert_array_equal(r["sum"], [3.0, -30.0])
        np.testing.assert_array_equal(r["max"], [2.0, -10.0])
        np.testing.assert_array_equal(r["min"], [1.0, -20.0])
        assert r["int_sum"].tolist() == [2**41 + 1]
        assert r["bool_max"].tolist() == [True, False]
        assert r["gather"].shape == (2, 2, 3) and r["gather"][:, 0, 0].tolist() == [0, 1]
        assert r["gather16"].dtype == np.float16 and r["gather16"][:, 0].tolist() == [0.5, 1.5]
        np.testing.assert_array_equal(r["broadcast"], [6] * 4)
        np.testing.assert_array_equal(r["broadcast_f"], [np.pi, 0.0, np.inf])
        _check_training(r)
    for name in r0:  # the ranks apply the same summed gradients: one model, bit for bit
        if "/dist/" in name:
            np.testing.assert_array_equal(r0[name], r1[name], err_msg=name)
    np.testing.assert_allclose(r0["eval"], 0, **TOLERANCE)
    np.testing.assert_allclose(r0["onnx"], 0, atol=1e-4)


def test_a_dead_worker_ends_the_others_with_an_error_naming_it(tmp_path):
    _launch(tmp_path, "die", 2, timeout=4)
    error = json.loads((tmp_path / "die0.json").read_text()).get("error", "")
    assert "rank 1 (127.0.0.1:" in error and "no longer answer" in error, error


def test_a_worker_that_never_comes_ends_the_join_with_an_error_naming_it(tmp_path):
    _launch(tmp_path, "alone", 1, timeout=3, cluster_size=2)
    error = json.loads((tmp_path / "alone0.json").read_text())["error"]
    assert "did not all come within 3 s: rank 1 (127.0.0.1:" in error, error


def test_mirrored_strategy_over_two_logical_cpus_trains_as_one_device(tmp_path):
    (out,) = _launch(tmp_path, "mirrored", 1)
    r = _load(out)
    assert (int(r["rank"]), int(r["world"])) == (0, 1)
    _check_training(r)
    np.testing.assert_allclose(r["eval"], 0, **TOLERANCE)
    np.testing.assert_allclose(r["onnx"], 0, atol=1e-4)
    assert np.isfinite(r["scaled_loss"]).all()


def test_eval_step_is_float32_on_a_model_built_outside_any_setup():
    model = build()
    x = images(3, size=SIZE)
    out = KERAS.calls.eval_step(model, Batch(x, np.zeros(3)))
    assert out.dtype == np.float32 and model.policy == "float32"
