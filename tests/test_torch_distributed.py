"""The torch backend's ``tl_setup``: devices, precisions and processes, with real torch.

On this CPU: what ``auto`` resolves to, what is refused and why, bf16 autocast really
happening in training while evaluation stays float32, the 16-mixed path (loss scaling) and
checkpoints across precisions. Then two real processes under ``torchrun`` (gloo): the
collective's answers, and ``DistributedDataParallel`` steps on each rank's share of every
batch ending where one process ends on the whole batches.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from tlcore.errors import TlcoreError
from tlcore.interfaces import Batch, StepState
from tlcore.parallel import Collective, Placement
from tlcore.recipe import HeadSpec
from tlcore.testing import BackendUnderTest, images, separable
from tlcore_torch.collective import TorchCollective
from tlcore_torch.placement import TorchSetup

ROOT = Path(__file__).resolve().parents[1]
TORCH = BackendUnderTest("torch")
HAS_CUDA = torch.cuda.is_available()
HAS_MPS = torch.backends.mps.is_available()
_LAUNCH_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR")


@pytest.fixture(autouse=True)
def one_process(monkeypatch):
    """Each test here is one process, whatever launched pytest."""
    for name in _LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def setup(device: str = "auto", precision: str = "32") -> TorchSetup:
    return TORCH.calls.setup(Placement(device, precision))


# --- the steps both sides of the two-process test take ---------------------------------------


def run_steps(model, optimizer, collective, x, y, sizes, features=False, lr=0.1):
    """One train step per global batch of ``sizes`` images (or feature rows), on this rank's
    ``np.array_split`` part with its share, as the core's loop hands them out."""
    start = 0
    for step, size in enumerate(sizes):
        index = np.arange(start, start + size)
        start += size
        part = np.array_split(index, collective.world_size)[collective.rank]
        state = StepState(optimizer, lr=lr, step=step, share=len(part) / size)
        TORCH.calls.train_step(model, Batch(x[part], y[part], features=features), state)


def two_stages(collective, sizes=(4, 5, 5)):
    """The two stages of a run on one model: the head alone on cached features (AdamW, a
    hidden layer), then the whole network on images (SGD with momentum; BatchNorm in
    inference mode, so that its output does not depend on how a batch is split). Each
    stage's optimiser trains through a wrapper of its own. Returns the model and its weights
    after the first stage."""
    TORCH.seed(0)
    with collective.scope():
        model = TORCH.build(num_classes=2, head=HeadSpec(hidden=(8,)))
    x, y = separable(sum(sizes), seed=1)
    TORCH.freeze(model, policy="all")
    with collective.scope():
        optimizer = TORCH.optimizer(model, optimizer="adamw", lr=0.05, weight_decay=0.01)
    features = TORCH.features(model, x)
    run_steps(model, optimizer, collective, features, y, sizes, features=True, lr=0.05)
    after_head = TORCH.weights(model)
    TORCH.freeze(model, policy="none", batchnorm="frozen")
    with collective.scope():
        optimizer = TORCH.optimizer(model, optimizer="sgd", lr=0.1, momentum=0.9)
    run_steps(model, optimizer, collective, x, y, sizes)
    return model, after_head


def check_collective(c: Collective) -> None:
    """The collective's answers on rank ``c.rank`` of two."""
    r = c.rank
    assert (c.world_size, c.engine) == (2, "torch.distributed (gloo)")
    v = np.array([r + 1.0, -r], np.float32)
    for op, want in (("sum", [3, -1]), ("max", [2, 0]), ("min", [1, -1])):
        got = c.all_reduce(v, op)
        assert got.dtype == np.float32 and got.tolist() == want, (op, got)
    assert c.all_reduce(np.array([r + 1], np.int64)).tolist() == [3]
    flags = c.all_reduce(np.array([r == 1, False]))
    assert flags.dtype == np.bool_ and flags.tolist() == [True, False]
    assert c.all_reduce(np.array([r == 1, True]), "min").tolist() == [False, True]
    half = c.all_reduce(np.array([0.5 + r], np.float16))
    assert half.dtype == np.float16 and half.tolist() == [2.0]
    gathered = c.all_gather(np.full((2, 3), r, np.int32))
    assert gathered.shape == (2, 2, 3) and gathered.dtype == np.int32
    assert [int(g.min()) for g in gathered] == [int(g.max()) for g in gathered] == [0, 1]
    assert c.all_gather(np.array(r * 1.5)).tolist() == [0.0, 1.5]
    assert c.broadcast(np.arange(3.0) * (r + 1), src=1).tolist() == [0.0, 2.0, 4.0]
    c.barrier()
    with pytest.raises(TypeError):  # refused alike on every rank, before any exchange
        c.all_reduce(np.array([1], np.uint64))


# --- one process on this CPU --------------------------------------------------------------


@pytest.mark.skipif(HAS_CUDA or HAS_MPS, reason="auto is the CPU only without a GPU")
def test_auto_is_this_cpu():
    found = setup()
    assert isinstance(found, TorchSetup) and isinstance(found.collective, TorchCollective)
    assert (found.device, found.precision, found.engine) == ("cpu", "32", "")
    assert found.device_name and found.device_memory is None
    assert found.peak_memory() > 50e6  # the process's peak on the CPU: torch alone is more
    assert (found.collective.rank, found.collective.world_size) == (0, 1)
    assert found.describe()["world_size"] == 1
    with found.collective.scope():
        inside = TORCH.build()
    assert inside.setup is found
    assert "setup" not in vars(TORCH.build())  # outside any scope: as before tl_setup


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a CUDA GPU")
@pytest.mark.parametrize("device", ["cuda", "cuda:3"])
def test_cuda_without_a_gpu_is_refused(device):
    with pytest.raises(TlcoreError, match="no CUDA GPU was found") as caught:
        setup(device)
    assert device in caught.value.message and "cpu" in caught.value.hint


@pytest.mark.skipif(HAS_MPS, reason="this machine has Apple's GPU")
def test_mps_without_apples_gpu_is_refused():
    with pytest.raises(TlcoreError, match=r"mps.*Apple"):
        setup("mps")


def test_16_mixed_on_a_cpu_is_refused_with_the_reason():
    with pytest.raises(TlcoreError) as caught:
        setup("cpu", "16-mixed")
    assert "float16 autocast and loss scaling are for GPUs; on a CPU use bf16 or 32" in str(
        caught.value
    )


def _record_dtypes(model) -> list[torch.dtype]:
    """The dtype of every output of the model's first convolution and of its classifier."""
    seen: list[torch.dtype] = []
    conv = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    for module in (conv, model.head[-1]):
        module.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    return seen


def test_bf16_on_a_cpu_trains_in_bfloat16_and_evaluates_in_float32():
    found = setup("cpu", "bf16")
    with found.collective.scope():
        model = TORCH.build(num_classes=2)
        optimizer = TORCH.optimizer(model, optimizer="adamw")
    seen = _record_dtypes(model)
    x, y = separable(4)
    out = TORCH.step(model, optimizer, x, y)
    assert seen == [torch.bfloat16, torch.bfloat16]  # conv and classifier under autocast
    assert out["outputs"].dtype == np.float32 and np.isfinite(out["loss"])
    assert all(p.dtype == torch.float32 for p in model.parameters())  # float32 master weights
    seen.clear()
    assert TORCH.features(model, x).dtype == np.float32
    assert seen == [torch.bfloat16]  # extraction runs in the training precision
    seen.clear()
    logits = TORCH.logits(model, x)
    assert seen == [torch.float32, torch.float32] and logits.dtype == np.float32


def _snapshot(model, optimizer):
    return TORCH.weights(model), TORCH.optimizer_state(optimizer)


def _resumed(found, snapshot, optimizer="adamw"):
    """A fresh model and optimiser (in ``found``'s scope, or outside any) loaded from a
    checkpoint's arrays."""
    scope = found.collective.scope() if found else Collective().scope()
    with scope:
        model = TORCH.build(num_classes=2)
        new = TORCH.optimizer(model, optimizer=optimizer)
    TORCH.set_weights(model, snapshot[0])
    TORCH.set_optimizer_state(new, snapshot[1])
    return model, new


def _continue(model, optimizer, steps=3):
    x, y = separable(8, seed=3)
    for step in range(steps):
        TORCH.step(model, optimizer, x[step * 2 : step * 2 + 4], y[step * 2 : step * 2 + 4])
    return TORCH.weights(model)


def _assert_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_a_bf16_checkpoint_loads_into_a_float32_cpu_model_and_continues_identically():
    """The checkpoint of a bf16 run is float32 host numpy; a fresh float32 CPU model takes
    it exactly, and two such resumptions, built with a ``32`` setup and with none, continue
    step for step alike; a resumption in bf16 continues exactly as the run itself."""
    bf16 = setup("cpu", "bf16")
    with bf16.collective.scope():
        model = TORCH.build(num_classes=2)
        optimizer = TORCH.optimizer(model, optimizer="adamw")
    _continue(model, optimizer)
    snapshot = _snapshot(model, optimizer)
    assert all(a.dtype in (np.float32, np.int64) for a in snapshot[0].values())
    plain, plain_opt = _resumed(None, snapshot)
    assert plain.__dict__.get("setup") is None
    _assert_equal(_snapshot(plain, plain_opt)[0], snapshot[0])
    _assert_equal(_snapshot(plain, plain_opt)[1], snapshot[1])
    scoped = _resumed(setup("cpu", "32"), snapshot)
    _assert_equal(_continue(plain, plain_opt), _continue(*scoped))
    again = _resumed(bf16, snapshot)
    _assert_equal(_continue(model, optimizer), _continue(*again))


def _16_mixed_on_cpu() -> TorchSetup:
    """The 16-mixed path (float16 autocast, a GradScaler) on the CPU, which ``tl_setup``
    refuses for speed's sake but torch computes: built by hand to test loss scaling here."""
    collective = TorchCollective(torch.device("cpu"), owns_group=False)
    found = TorchSetup(device="cpu", precision="16-mixed", collective=collective)
    collective.setup = found
    return found


def test_the_loss_scale_travels_with_the_optimizer_state():
    mixed = _16_mixed_on_cpu()
    with mixed.collective.scope():
        model = TORCH.build(num_classes=2)
        optimizer = TORCH.optimizer(model, optimizer="adamw")
    seen = _record_dtypes(model)
    _continue(model, optimizer, steps=2)
    assert seen[:2] == [torch.float16, torch.float16]
    snapshot = _snapshot(model, optimizer)
    assert snapshot[1]["scaler.scale"] == 65536.0 and snapshot[1]["scaler.growth_tracker"] == 2
    again = _resumed(mixed, snapshot)
    assert TORCH.optimizer_state(again[1])["scaler.growth_tracker"] == 2
    _assert_equal(_continue(model, optimizer), _continue(*again))
    plain = _resumed(None, snapshot)  # a float32 resumption needs no scale: ignored
    assert not any(k.startswith("scaler.") for k in TORCH.optimizer_state(plain[1]))


def test_a_reduced_precision_model_exports_float32_and_stays_as_it_was(tmp_path):
    """Export takes a float32 CPU copy; the live model keeps its dtype and its setup."""
    import onnxruntime

    found = setup("cpu", "bf16")
    with found.collective.scope():
        model = TORCH.build(num_classes=2)
    model.to(torch.bfloat16)  # what a model trained in half precision may hold
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = images(3)
    path = TORCH.export(model, "onnx", tmp_path / "onnx", example=x)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_logits = session.run(["logits"], {"images": x})[0]
    assert onnx_logits.dtype == np.float32 and np.isfinite(onnx_logits).all()
    native = torch.load(TORCH.export(model, "native", tmp_path / "native"), weights_only=True)
    assert {v.dtype for v in native.values()} <= {torch.float32, torch.int64}
    assert model.setup is found
    for name, value in model.state_dict().items():
        assert value.dtype == before[name].dtype and torch.equal(value, before[name]), name


# --- two processes -------------------------------------------------------------------------

SCRIPT = """
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, {root!r})
from tests.test_torch_distributed import TORCH, check_collective, two_stages
from tlcore.errors import TlcoreError
from tlcore.parallel import Placement
from tlcore.testing import images

torch.set_num_threads(1)
out = Path(sys.argv[1])
collective = TORCH.calls.setup(Placement("auto", "32")).collective
check_collective(collective)
tuned, after_head = two_stages(collective)
arrays = {{"head/" + k: v for k, v in after_head.items()}}
arrays.update({{"final/" + k: v for k, v in TORCH.weights(tuned).items()}})
if collective.rank == 0:  # alone, while rank 1 waits: these must not be collective
    arrays["logits"] = TORCH.logits(tuned, images(3))
    TORCH.features(tuned, images(2))
    TORCH.export(tuned, "onnx", out / "onnx")
collective.barrier()
np.savez(out / f"rank{{collective.rank}}.npz", **arrays)
collective.barrier()
if collective.rank == 1:
    sys.exit(0)  # a peer gone: rank 0's next exchange must fail, not hang
try:
    collective.all_reduce(np.ones(1, np.float32))
except TlcoreError as exc:
    (out / "dead_peer.txt").write_text(exc.message)
collective.close()
"""


def test_two_processes_train_like_one(tmp_path):
    """Two gloo processes under torchrun: the collective answers right, and DDP steps on each
    rank's part of every batch (4 = 2 + 2, and uneven 5 = 3 + 2 with shares 3/5 and 2/5),
    on cached features (the head wrapped) then on images (the whole model wrapped anew),
    end where one process ends on the whole batches. Rank 0 alone evaluates and exports;
    a rank gone makes the other's next exchange fail.

    Tolerance 1e-6: the only difference is float32 rounding in where the sums happen (each
    rank's partial mean scaled by its share, then the all-reduce, against one mean): a few
    ulps per gradient, which these six steps leave at about 3e-7 on weights the steps move by
    2e-2; a wrong share, or a gradient reduced twice, moves them by 1e-3 or more.
    """
    script = tmp_path / "ranks.py"
    script.write_text(textwrap.dedent(SCRIPT.format(root=str(ROOT))), encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TLCORE_DIST_TIMEOUT": "60"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               "--standalone", str(script), str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=180)
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = [dict(np.load(tmp_path / f"rank{r}.npz")) for r in (0, 1)]
    model, after_head = two_stages(Collective())
    expected = {f"head/{k}": v for k, v in after_head.items()}
    expected.update({f"final/{k}": v for k, v in TORCH.weights(model).items()})
    for rank, got in enumerate(ranks):
        for name, want in expected.items():
            np.testing.assert_allclose(got[name], want, rtol=1e-6, atol=1e-6,
                                       err_msg=f"rank {rank}: {name}")
    assert (tmp_path / "onnx" / "model.onnx").is_file()
    assert np.isfinite(ranks[0]["logits"]).all()
    dead_peer = (tmp_path / "dead_peer.txt").read_text()
    assert "all_reduce across the run's processes failed" in dead_peer
