"""Tasks: multi-label and regression end to end on both backends, from an image folder and a
CSV label file, through the ONNX bundle, ``tl predict`` and ``tl eval``; the tasks' metrics
and thresholds against values worked out by hand; the label file's errors.

The images are made so that their labels are a function of the pixels, which a small network
learns in a few epochs: each colour channel is bright or dark (multi-label: the bright
channels), and the regression target is the mean brightness.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from PIL import Image

import tlcore
from tlcore.bundle.export import quantize_run
from tlcore.bundle.graph import finish_graph
from tlcore.bundle.layout import META_INPUT, META_TASK
from tlcore.cli import cli
from tlcore.data import LabelFileDataset, load_datasets
from tlcore.errors import DataError, RecipeError
from tlcore.interfaces import Preprocessing
from tlcore.recipe import DataSpec, build_recipe
from tlcore.runtime import Predictor
from tlcore.tasks import choose_thresholds, get_task
from tlcore.tasks.multilabel import f1_scores
from tlcore.tasks.regression import value_metrics

COLOURS = ("red", "green", "blue")
IMAGES = 96
RECIPE = {
    "backbone": {"source": "builtin:simple_cnn", "weights": "none", "input_size": 32},
    "train": {"batch_size": 16, "seed": 0, "stages": [
        {"name": "all", "epochs": 8, "lr": 3e-3, "freeze": {"policy": "none"}},
    ]},
    "data": {"val_split": 0.25},
}
LABEL_FILES = {"multilabel": "tags.csv", "regression": "values.csv"}


def write_task_data(root: Path, n: int = IMAGES, seed: int = 0) -> Path:
    """``root/img/*.png`` with ``tags.csv`` (the bright channels, ``path,labels`` header) and
    ``values.csv`` (mean brightness in [0, 1], no header)."""
    (root / "img").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    tags, values = [("path", "labels")], []
    for i in range(n):
        bright = rng.random(3) > 0.5
        bright[rng.integers(3)] |= not bright.any()
        level = np.where(bright, rng.uniform(150, 250, 3), rng.uniform(0, 90, 3))
        pixels = np.clip(level + rng.normal(0, 12, (32, 32, 3)), 0, 255).astype(np.uint8)
        name = f"img/{i:03d}.png"
        Image.fromarray(pixels).save(root / name)
        tags.append((name, ";".join(c for c, on in zip(COLOURS, bright, strict=True) if on)))
        values.append((name, f"{pixels.mean() / 255:.6f}"))
    for file, rows in (("tags.csv", tags), ("values.csv", values)):
        with open(root / file, "w", newline="") as fh:
            csv.writer(fh).writerows(rows)
    return root


@pytest.fixture(scope="module")
def task_data(tmp_path_factory) -> Path:
    return write_task_data(tmp_path_factory.mktemp("tasks") / "data")


@pytest.fixture(scope="module")
def trained(task_data, tmp_path_factory):
    """Train once per (backend, task): the multi-label runs through ``tl train``'s flags, the
    regression runs through ``tlcore.fit``'s keywords."""
    runs: dict[tuple[str, str], Path] = {}
    recipe_file = tmp_path_factory.mktemp("recipe") / "recipe.json"
    recipe_file.write_text(json.dumps(RECIPE))

    def get(backend: str, task: str) -> Path:
        if (backend, task) not in runs:
            out = tmp_path_factory.mktemp("runs") / f"{backend}-{task}"
            labels = task_data / LABEL_FILES[task]
            if task == "multilabel":
                result = CliRunner().invoke(cli, [
                    "train", str(task_data), "--recipe", str(recipe_file), "--backend", backend,
                    "--task", task, "--labels", str(labels), "--out", str(out), "--quiet",
                ])
                assert result.exit_code == 0, result.output
                assert "val_f1_micro" in result.output
            else:
                tlcore.fit(task_data, recipe=RECIPE, out=out, backend=backend, task=task,
                           labels=labels)
            runs[backend, task] = out
        return runs[backend, task]

    return get


def _info(run: Path) -> dict:
    return json.loads((run / "tlcore.json").read_text())


def _validation(run: Path):
    """The run's own validation images and targets, as the run split them."""
    recipe = build_recipe(_info(run)["recipe"])
    _, val = load_datasets(recipe.data, recipe.train.seed, task=recipe.task)
    return val


# --- end to end on both backends ---------------------------------------------------------------


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_multilabel_end_to_end(backend, trained, task_data):
    run = trained(backend, "multilabel")
    info = _info(run)
    assert info["task"]["name"] == "multilabel" and info["labels"] == ["blue", "green", "red"]
    assert info["metrics"]["val_f1_micro"] >= 0.9, info["metrics"]
    parity = info["onnx"]["parity"]
    assert parity["agreement"] == 1.0 and parity["agreement_on"] == "labels over threshold"
    assert parity["max_abs_diff"] <= parity["tolerance"] and parity["top1_agreement"] is None
    model = onnx.load(str(run / "model.onnx"))
    assert [o.name for o in model.graph.output] == ["probabilities", "logits", "embeddings"]
    assert any(node.op_type == "Sigmoid" for node in model.graph.node)
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta[META_TASK]) == info["task"]

    # The thresholds are the ones that maximise F1 on the run's own validation images.
    predictor = Predictor(run)
    val = _validation(run)
    assert len(val) == IMAGES // 4
    probabilities = predictor.outputs(val.images(np.arange(len(val)), predictor.size))
    chosen = choose_thresholds(probabilities, val.labels > 0.5)
    np.testing.assert_allclose(info["task"]["thresholds"], chosen, atol=1e-4)

    # tl predict prints every label at or over its threshold, most probable first.
    files = [str(task_data / f"img/{i:03d}.png") for i in range(12)]
    printed = CliRunner().invoke(cli, ["predict", str(run), *files])
    assert printed.exit_code == 0, printed.output
    rows = [line.split("\t") for line in printed.output.strip().splitlines()]
    cut = np.array(info["task"]["thresholds"])
    truth = LabelFileDataset(task_data / "tags.csv", get_task("multilabel"))
    right = 0
    for (source, shown), p, target in zip(rows, predictor.predict(files), truth.labels[:12],
                                          strict=True):
        assert source.endswith(Path(p.source).name)
        over = {name for name, score, t in zip(info["labels"], dict(p.scores).values(), cut,
                                               strict=True) if score >= t}
        assert ({item.split(" ")[0] for item in shown.split(", ")} if shown != "(none)"
                else set()) == over
        right += over == {name for name, on in zip(info["labels"], target, strict=True) if on}
    assert right >= 11

    # tl eval reports the multi-label metrics, per label too.
    report_dir = run / "eval-test"
    done = CliRunner().invoke(cli, ["eval", str(run), str(task_data), "--labels",
                                    str(task_data / "tags.csv"), "--json", "--out",
                                    str(report_dir)])
    assert done.exit_code == 0, done.output
    report = json.loads((report_dir / "report.json").read_text())
    assert report["task"] == "multilabel" and report["count"] == IMAGES
    assert set(report["per_label"]) == set(info["labels"])
    assert report["per_label"]["red"]["threshold"] == pytest.approx(cut[2])
    assert report["f1_micro"] >= 0.9 and 0 <= report["subset_accuracy"] <= 1
    assert not (report_dir / "confusion.png").exists()


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_regression_end_to_end(backend, trained, task_data):
    run = trained(backend, "regression")
    info = _info(run)
    task = info["task"]
    train, _ = load_datasets(
        DataSpec(path=str(task_data), labels=str(task_data / "values.csv"), val_split=0.25), 0,
        task="regression",
    )
    assert task["name"] == "regression" and info["labels"] == ["value"]
    assert task["mean"] == pytest.approx(train.labels.mean())
    assert task["std"] == pytest.approx(train.labels.std())
    assert info["metrics"]["val_r2"] >= 0.8, info["metrics"]
    parity = info["onnx"]["parity"]
    assert parity["output"] == "values" and parity["agreement"] is None
    assert parity["max_abs_diff"] <= parity["tolerance"]
    model = onnx.load(str(run / "model.onnx"))
    assert [o.name for o in model.graph.output] == ["values", "logits", "embeddings"]

    # The graph undoes the target scaling: values = logits * std + mean.
    predictor = Predictor(run)
    val = _validation(run)
    images = val.images(np.arange(len(val)), predictor.size)
    values, logits = predictor.session.run(["values", "logits"], {"images": images})
    np.testing.assert_allclose(values, logits * task["std"] + task["mean"], rtol=1e-5, atol=1e-6)
    mae = np.abs(values[:, 0] - val.labels).mean()
    assert mae == pytest.approx(info["metrics"]["val_mae"], rel=1e-3, abs=1e-5)
    assert mae < 0.05  # the targets spread over about 0.15 (their standard deviation)

    # tl predict prints the value.
    files = [str(task_data / f"img/{i:03d}.png") for i in range(4)]
    printed = CliRunner().invoke(cli, ["predict", str(run), *files, "--csv"])
    assert printed.exit_code == 0, printed.output
    lines = printed.output.strip().splitlines()
    assert lines[0] == "source,label,value"
    truth = LabelFileDataset(task_data / "values.csv", get_task("regression")).labels[:4]
    for line, p, target in zip(lines[1:], predictor.predict(files), truth, strict=True):
        assert line.split(",")[1:] == ["value", f"{p.value:.6g}"]
        assert abs(p.value - target) < 0.1
    plain = CliRunner().invoke(cli, ["predict", str(run), files[0]])
    assert plain.output.strip().endswith(f"value {predictor.predict(files[0])[0].value:.6g}")

    # tl eval on the CSV file alone reports MAE, RMSE and R².
    done = CliRunner().invoke(cli, ["eval", str(run), str(task_data / "values.csv"), "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads((run / "eval" / "values" / "report.json").read_text())
    everything = LabelFileDataset(task_data / "values.csv", get_task("regression"))
    predicted = np.array([p.value for p in predictor.predict(list(everything.paths))])
    expected = value_metrics(predicted, everything.labels)
    assert report["task"] == "regression" and report["count"] == IMAGES
    for key in ("mae", "rmse", "r2"):
        assert report[key] == pytest.approx(expected[key], rel=1e-4), key


def test_quantisation_checks_the_task_metric_or_refuses(trained, tmp_path):
    multilabel = shutil.copytree(trained("torch", "multilabel"), tmp_path / "multilabel")
    result = quantize_run(multilabel, "dynamic")
    section = _info(multilabel)["quantized"]["accuracy"]
    assert result.metric == section["metric"] == "f1_micro"
    assert section["float"] == pytest.approx(_info(multilabel)["metrics"]["val_f1_micro"])
    regression = shutil.copytree(trained("torch", "regression"), tmp_path / "regression")
    with pytest.raises(RecipeError, match=r"export\.quantize"):
        quantize_run(regression, "dynamic")
    with pytest.raises(RecipeError, match="cannot be quantised"):
        tlcore.fit(tmp_path, recipe=RECIPE, task="regression", quantize="static",
                   labels="x.csv", out=tmp_path / "never")


# --- the tasks' arithmetic, by hand ------------------------------------------------------------


def test_thresholds_maximise_f1_per_label():
    probabilities = np.array([[0.9, 0.2, 0.6], [0.8, 0.3, 0.6], [0.3, 0.4, 0.1], [0.2, 0.1, 0.1]])
    truth = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 0], [0, 0, 0]], dtype=bool)
    # Label 0, cuts after 0.9 / 0.8 / 0.3 / 0.2: F1 2/3, 1/2, 4/5, 2/3 -> midpoint (0.3 + 0.2) / 2.
    # Label 1 has no positive: 0.5. Label 2: the cut below the tie at 0.6 has F1 1 -> 0.35.
    np.testing.assert_allclose(choose_thresholds(probabilities, truth), [0.25, 0.5, 0.35])
    # Every image positive: the best cut is below the lowest score, at half of it.
    assert choose_thresholds(np.array([[0.9], [0.2]]), np.array([[1], [1]], bool))[0] == 0.1
    # F1 2/3 at 0.75, 0.8 at 0.2: the F1 decides.
    best = choose_thresholds(np.array([[0.9], [0.6], [0.4]]), np.array([[1], [0], [1]], bool))
    assert best[0] == pytest.approx(0.2)
    # F1 2/3 both at 0.8 (after 0.9) and at 0.05 (after 0.1): the one nearer 0.5 wins ...
    scores, truth = np.array([[0.9], [0.7], [0.3], [0.1]]), np.array([[1], [0], [0], [1]], bool)
    assert choose_thresholds(scores, truth)[0] == pytest.approx(0.8)
    # ... also when it is the lower one: 2/3 at 0.945 and at 0.225.
    scores = np.array([[0.99], [0.9], [0.8], [0.45]])
    assert choose_thresholds(scores, truth)[0] == pytest.approx(0.225)


def test_multilabel_metrics_by_hand():
    task = get_task("multilabel")
    logits = np.log(np.array([[0.9, 0.4], [0.6, 0.7], [0.2, 0.2]]) /
                    (1 - np.array([[0.9, 0.4], [0.6, 0.7], [0.2, 0.2]])))
    targets = np.array([[1, 0], [0, 1], [0, 1]], dtype=np.float32)
    at_half = task.metrics(logits, targets, {})
    # predicted at 0.5: [[1,0],[1,1],[0,0]]; label 0: tp 1 fp 1 -> 2/3; label 1: tp 1 fn 1 -> 2/3
    assert at_half["f1_micro"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert at_half["f1_macro"] == pytest.approx(2 / 3)
    assert at_half["subset_accuracy"] == pytest.approx(1 / 3)
    p = np.array([[0.9, 0.4], [0.6, 0.7], [0.2, 0.2]])
    bce = -(targets * np.log(p) + (1 - targets) * np.log(1 - p)).mean()
    assert at_half["loss"] == pytest.approx(bce)
    # Thresholds 0.7 and 0.1: predicted [[1,1],[0,1],[0,1]] -> label 0 F1 1, label 1 F1 4/5.
    tuned = task.metrics(logits, targets, {"thresholds": [0.7, 0.1]})
    assert tuned["f1_macro"] == pytest.approx((1 + 0.8) / 2)
    assert tuned["f1_micro"] == pytest.approx(2 * 3 / (2 * 3 + 1))
    assert f1_scores(np.zeros((2, 1), bool), np.zeros((2, 1), bool))["f1_micro"] == 1.0


def test_regression_metrics_and_scaling_by_hand():
    task = get_task("regression")
    truth = np.array([1.0, 3.0, 5.0, 7.0])
    info = task.prepare(truth)
    assert info == {"mean": 4.0, "std": pytest.approx(math.sqrt(5))}
    np.testing.assert_allclose(task.train_targets(truth, info)[:, 0], (truth - 4) / math.sqrt(5),
                               rtol=1e-6)
    values = np.array([2.0, 3.0, 4.0, 7.0])
    outputs = ((values - 4) / info["std"]).reshape(-1, 1)
    found = task.metrics(outputs, truth, info)
    assert found["mae"] == pytest.approx(0.5)
    assert found["rmse"] == pytest.approx(math.sqrt(2 / 4))
    assert found["r2"] == pytest.approx(1 - 2 / 20)
    assert found["loss"] == pytest.approx(0.5 / 5)  # the squared error of standardised targets
    assert value_metrics(np.array([2.0, 2.0]), np.array([2.0, 2.0]))["r2"] == 1.0
    assert task.higher_is_better("val_r2") and not task.higher_is_better("val_mae")
    assert task.baseline_loss(truth, 1, info) == (pytest.approx(1.0), 0.0)


@pytest.mark.parametrize("name", ["classification", "multilabel", "regression"])
def test_final_node_matches_activate_in_onnxruntime(name, tmp_path):
    """The ONNX node a task appends computes what its numpy ``activate`` says, and a bundle
    with that node predicts as the task decodes."""
    from onnx import TensorProto, helper

    task = get_task(name)
    width = 1 if name == "regression" else 3
    raw = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
         helper.make_node("ReduceMean", ["xf", "axes"], ["mean"], keepdims=0),
         helper.make_node("Mul", ["mean", "scale"], ["scaled"]),
         helper.make_node("Sub", ["scaled", "centre"], ["raw"]),
         helper.make_node("ReduceMean" if width == 1 else "Identity",
                          ["raw", "last"] if width == 1 else ["raw"], ["out"],
                          **({"keepdims": 1} if width == 1 else {}))],
        "raw",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [None, 4, 4, 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, width])],
        [helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2]),
         helper.make_tensor("scale", TensorProto.FLOAT, [], [1 / 64]),
         helper.make_tensor("centre", TensorProto.FLOAT, [], [2.0]),
         helper.make_tensor("last", TensorProto.INT64, [1], [1])],
    )
    proto = helper.make_model(raw, opset_imports=[helper.make_opsetid("", 18)])
    labels = ["value"] if width == 1 else ["a", "b", "c"]
    info = {"regression": {"mean": 3.0, "std": 2.0}, "multilabel": {"thresholds": [0.4, 0.5, 0.9]},
            "classification": {}}[name]
    finish_graph(proto, labels, Preprocessing((4, 4)), task, info)
    onnx.checker.check_model(proto)
    path = tmp_path / "model.onnx"
    onnx.save(proto, str(path))
    x = np.random.default_rng(0).integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
    predictor = Predictor(path)
    assert predictor.task.name == name and predictor.task_info == info
    final, logits = predictor.session.run([task.output, "logits"], {"images": x})
    np.testing.assert_allclose(final, task.activate(logits, info), rtol=1e-5, atol=1e-6)
    first = predictor.predict(x[:1], top_k=2)[0]
    if name == "multilabel":
        assert first.labels == tuple(
            labels[i] for i in np.argsort(-final[0]) if final[0, i] >= info["thresholds"][i]
        )
    elif name == "regression":
        assert first.value == pytest.approx(float(final[0, 0]))
    else:
        assert first.label == labels[int(final[0].argmax())] and len(first.top) == 2


def test_a_bundle_without_a_task_is_a_classifier(tmp_path):
    """tlcore 0.1 wrote no task: such a model opens as a classifier in ``tl predict``."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
         helper.make_node("ReduceMean", ["xf", "axes"], ["out"], keepdims=0)],
        "raw",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [None, 4, 4, 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    finish_graph(proto, ["r", "g", "b"], Preprocessing((4, 4)))
    # As 0.1 wrote it: no task, and the input as the image preprocessing alone (no modality).
    kept = [p for p in proto.metadata_props if p.key not in (META_TASK, META_INPUT)]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    old_input = json.dumps(Preprocessing((4, 4)).to_dict())
    proto.metadata_props.add(key=META_INPUT, value=old_input)
    onnx.save(proto, str(tmp_path / "old.onnx"))
    image = np.zeros((4, 4, 3), np.uint8)
    image[..., 1] = 200
    Image.fromarray(image).save(tmp_path / "green.png")
    printed = CliRunner().invoke(cli, ["predict", str(tmp_path / "old.onnx"),
                                       str(tmp_path / "green.png"), "--top-k", "2"])
    assert printed.exit_code == 0, printed.output
    assert printed.output.split("\t")[1].startswith("g ")
    assert Predictor(tmp_path / "old.onnx").task.name == "classification"


# --- recipes and label files -------------------------------------------------------------------


def test_recipe_task_labels_and_monitor():
    recipe = build_recipe({"task": "multilabel"}, labels="tags.csv")
    assert recipe.task == "multilabel" and recipe.data.labels == "tags.csv"
    assert recipe.train.stages[0].monitor == "auto"
    with pytest.raises(RecipeError, match="multilabel"):
        build_recipe({"task": "multi-label"})
    from tlcore.train.epoch import check_monitors, monitored

    stages = build_recipe({"train": {"stages": [{"monitor": "val_mae"}]}}).train.stages
    assert monitored(stages[0], get_task("regression")) == "val_mae"
    with pytest.raises(RecipeError, match=r"train\.stages\.0\.monitor"):
        check_monitors(stages, get_task("classification"))
    assert monitored(recipe.train.stages[0], get_task("multilabel")) == "val_f1_micro"


def _csv(tmp_path: Path, text: str, name: str = "labels.csv") -> Path:
    (tmp_path / "img").mkdir(exist_ok=True)
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / f"img/{i}.png")
    path = tmp_path / name
    path.write_text(text)
    return path


def test_label_files_read_paths_headers_and_tasks(tmp_path):
    multilabel, regression = get_task("multilabel"), get_task("regression")
    tags = _csv(tmp_path, "file,tags\nimg/0.png,cat\n\nimg/1.png, dog ; cat \nimg/2.png,emu\n")
    data = LabelFileDataset(tags, multilabel)
    assert data.class_names == ("cat", "dog", "emu")
    np.testing.assert_array_equal(data.labels, [[1, 0, 0], [1, 1, 0], [0, 0, 1]])
    assert data.describe() == "3 images, 3 labels: cat 2, dog 1, emu 1"
    sub = tmp_path / "lists"
    sub.mkdir()
    (sub / "v.csv").write_text("0.png,1.5\n1.png,-2\n")  # relative to the image folder given
    values = LabelFileDataset(sub / "v.csv", regression, images=tmp_path / "img")
    np.testing.assert_array_equal(values.labels, [1.5, -2.0])
    assert values.class_names == ("value",)
    classes = LabelFileDataset(_csv(tmp_path, "img/0.png,a\nimg/1.png,b\n", "c.csv"),
                               get_task("classification"))
    assert classes.class_names == ("a", "b") and classes.labels.tolist() == [0, 1]


@pytest.mark.parametrize(("task", "text", "message"), [
    ("multilabel", "img/0.png,cat\nimg/1.png,\n", "line 2: bad label '': the label set is empty"),
    ("multilabel", "img/0.png,cat;;dog\n", "line 1: bad label 'cat;;dog': an empty label name"),
    ("regression", "img/0.png,1\nimg/1.png,big\n", "line 2: bad label 'big': 'big' is not a"),
    ("regression", "img/0.png,nan\n", "line 1: bad label 'nan': 'nan' is not a finite number"),
    ("regression", "img/0.png,inf\n", "not a finite number"),
    ("regression", "img/0.png,1,2\n", "line 1: expected 2 columns (path,label), got 3"),
    ("regression", "img/9.png,1\n", "line 1: image not found: img/9.png"),
    ("regression", "img/0.png,1\nimg/0.png,2\n", "line 2: img/0.png is listed twice (first on"),
    ("regression", "path,value\n", "lists no images"),
])
def test_label_file_errors_name_the_file_and_line(tmp_path, task, text, message):
    path = _csv(tmp_path, text)
    with pytest.raises(DataError) as info:
        LabelFileDataset(path, get_task(task))
    assert message in info.value.message
    assert str(path) in info.value.message
    if "line" in message:
        assert get_task(task).label_example in info.value.hint


def test_multilabel_and_regression_need_their_labels(tmp_path, task_data):
    with pytest.raises(DataError, match=r"data\.labels") as info:
        load_datasets(DataSpec(path=str(task_data)), 0, task="multilabel")
    assert "--labels" in info.value.hint
    with pytest.raises(DataError, match="label file not found"):
        load_datasets(DataSpec(path=str(task_data), labels=str(tmp_path / "no.csv")), 0,
                      task="regression")
    images = np.zeros((4, 8, 8, 3), np.uint8)
    with pytest.raises(DataError, match="NaN or infinite"):
        load_datasets(DataSpec(), 0, (images, np.array([1, 2, np.nan, 3])), task="regression")
    with pytest.raises(DataError, match="only 0 and 1"):
        load_datasets(DataSpec(), 0, (images, np.full((4, 2), 0.5)), task="multilabel")
    train, val = load_datasets(DataSpec(val_split=0.5), 0, (images, [[1, 0]] * 4),
                               task="multilabel")
    assert train.labels.shape == (2, 2) and len(val) == 2 and train.class_names == ("0", "1")
