"""A bundle that vouches for itself: ``model.onnx`` is the source of its labels, input and task,
``tlcore.json`` must agree with it and with its checksum, and ``tl export`` writes a bundle
that passes every check or fails.

Every bundle here is a real run trained for one epoch on tiny images, copied and then tampered
with by the test itself; every check goes through the real onnxruntime and the real ``tl``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

import tlcore
from tlcore.bundle.layout import META_INPUT, META_LABELS, META_TASK, file_sha256
from tlcore.cli import cli
from tlcore.errors import TlcoreError
from tlcore.interfaces import Preprocessing
from tlcore.report.evaluate import write_report
from tlcore.runtime import Predictor

from .test_tasks import write_task_data

DIGITS = [str(d) for d in range(10)]
TINY = {
    "backbone": {"source": "builtin:simple_cnn", "weights": "none", "input_size": 16},
    "train": {"batch_size": 16, "seed": 0, "stages": [
        {"name": "all", "epochs": 1, "lr": 3e-3, "freeze": {"policy": "none"}},
    ]},
    "data": {"val_split": 0.25},
}


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    """Eight 16-pixel digits a class."""
    from tlcore.demo import write_demo

    return write_demo(tmp_path_factory.mktemp("trust") / "digits", size=16, per_class=8)


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory) -> Path:
    """A classifier, trained once for the module."""
    out = tmp_path_factory.mktemp("trust-run") / "run"
    return tlcore.fit(digits, recipe=TINY, out=out, quiet=True).path


@pytest.fixture(scope="module")
def tagged(tmp_path_factory) -> Path:
    """A multi-label model (its thresholds are in the bundle), trained once for the module."""
    data = write_task_data(tmp_path_factory.mktemp("trust-tags") / "data", n=24)
    out = tmp_path_factory.mktemp("trust-tags-run") / "run"
    return tlcore.fit(data, recipe=TINY, out=out, task="multilabel", labels=data / "tags.csv",
                      quiet=True).path


@pytest.fixture
def bundle(trained, tmp_path) -> Path:
    """A private copy of the classifier's run folder, free to tamper with."""
    return shutil.copytree(trained, tmp_path / "bundle")


def _info(folder: Path) -> dict:
    return json.loads((folder / "tlcore.json").read_text())


def _edit_info(folder: Path, change) -> None:
    info = _info(folder)
    change(info)
    (folder / "tlcore.json").write_text(json.dumps(info))


def _rewrite_model(model_file: Path, change, info_folder: Path | None = None) -> None:
    """Change ``model_file``'s metadata (a dict of strings); with ``info_folder``, record the
    new file's sha256 there, as someone who edits both files consistently would."""
    proto = onnx.load(str(model_file))
    meta = {p.key: p.value for p in proto.metadata_props}
    change(meta)
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, meta)
    onnx.save(proto, str(model_file))
    if info_folder is not None:
        _edit_info(info_folder, lambda info: info["onnx"].update(sha256=file_sha256(model_file)))


def _refused(path: Path, *match: str, hint: str = "") -> TlcoreError:
    """``Predictor(path)`` and ``tl predict`` both refuse ``path``, naming every ``match``;
    the command with one error and hint, exit code 2, no traceback."""
    with pytest.raises(TlcoreError) as caught:
        Predictor(path)
    for text in match:
        assert text in caught.value.message, caught.value.message
    assert hint in caught.value.hint
    # The bundle is refused before any image is looked at: the image need not exist.
    printed = CliRunner().invoke(cli, ["predict", str(path), "image.png"])
    assert printed.exit_code == 2, printed.output
    assert printed.output.startswith("error: ") and "Traceback" not in printed.output
    assert "\nhint: " in printed.output
    return caught.value


def _an_image(digits: Path) -> Path:
    return sorted((digits / "3").glob("*.png"))[0]


def test_the_untouched_bundle_predicts_from_the_models_own_description(bundle, digits):
    predictor = Predictor(bundle)
    assert predictor.labels == tuple(DIGITS) == tuple(_info(bundle)["labels"])
    assert predictor.task.name == "classification" and predictor.size == (16, 16)
    expected = predictor.predict(_an_image(digits), top_k=3)[0].top
    # The model file named alone is checked against the tlcore.json beside it, and a copy
    # of it taken out of the run is used on its own (complete) metadata.
    assert Predictor(bundle / "model.onnx").predict(_an_image(digits), top_k=3)[0].top == expected
    alone = shutil.copy(bundle / "model.onnx", bundle.parent / "alone.onnx")
    assert Predictor(alone).predict(_an_image(digits), top_k=3)[0].top == expected


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda i: i.update(labels=[*i["labels"][1:2], i["labels"][0], *i["labels"][2:]]),
         ["label 0 is '1' in tlcore.json, '0' in model.onnx"]),
        (lambda i: i.update(labels=["cat"]),
         ["tlcore.json has 1 label ('cat')", "model.onnx 10 labels"]),
        (lambda i: i.update(labels=i["labels"][:-1]), ["tlcore.json has 9 labels"]),
        (lambda i: i.pop("labels"), ["records no labels"]),
        (lambda i: i.update(labels="0123456789"), ["not a list of distinct names"]),
        (lambda i: i["input"].update(size=[32, 32], shape=[32, 32, 3]),
         ["input shape is [32, 32, 3] in tlcore.json, [16, 16, 3] in model.onnx"]),
        (lambda i: i["input"].update(mean=[0.0, 0.0, 0.0]), ["input mean"]),
        (lambda i: i.update(task={"name": "multilabel"}),
         ['task name is "multilabel" in tlcore.json, "classification" in model.onnx']),
    ],
    ids=["renamed", "one-label", "one-too-few", "no-labels", "not-a-list", "input-size",
         "normalisation", "task"],
)
def test_a_tlcore_json_that_disagrees_with_the_model_is_refused(bundle, change, match):
    _edit_info(bundle, change)
    error = _refused(bundle, *match, hint="tl export")
    assert str(bundle / "tlcore.json") in error.message


def test_a_run_folder_without_its_tlcore_json_is_refused(bundle, digits):
    alone = shutil.copy(bundle / "model.onnx", bundle.parent / "alone.onnx")
    (bundle / "tlcore.json").unlink()
    _refused(bundle, "run folder without its tlcore.json", hint="tl train --resume")
    _refused(bundle / "model.onnx", "run folder without its tlcore.json")
    assert Predictor(alone).labels == tuple(DIGITS)  # the same file outside a run: usable


def test_a_swapped_model_is_refused_even_with_its_checksum_recorded(bundle, tagged):
    shutil.copy(tagged / "model.onnx", bundle / "model.onnx")
    _refused(bundle, "model.onnx does not match the sha256 recorded", hint="tl export")
    _edit_info(bundle, lambda i: i["onnx"].update(sha256=file_sha256(bundle / "model.onnx")))
    # The checksum is no signature: the agreement of the two files is what catches this one.
    _refused(bundle, "does not agree with", "tlcore.json has 10 labels", "model.onnx 3 labels",
             'task name is "classification" in tlcore.json, "multilabel" in model.onnx')


def test_a_model_without_its_metadata_is_refused(bundle):
    _rewrite_model(bundle / "model.onnx", lambda meta: meta.clear(), info_folder=bundle)
    _refused(bundle, "is not a tlcore model", "tlcore.labels / tlcore.input")
    bare = shutil.copy(bundle / "model.onnx", bundle.parent / "bare.onnx")
    _refused(Path(bare), "is not a tlcore model")


@pytest.mark.parametrize(
    ("labels", "match"),
    [(["only"], "gives 10 probabilities per sample, but its metadata names 1 label ('only')"),
     (DIGITS[:-1], "names 9 labels"),
     (["a"] * 10, "not a list of distinct names")],
    ids=["one-label", "one-too-few", "duplicates"],
)
def test_model_metadata_that_does_not_fit_its_graph_is_refused(bundle, labels, match):
    """A bare model has no tlcore.json to agree with: its metadata must fit its own graph."""
    bare = shutil.copy(bundle / "model.onnx", bundle.parent / "bare.onnx")
    _rewrite_model(Path(bare), lambda meta: meta.update({META_LABELS: json.dumps(labels)}))
    _refused(Path(bare), match)


def test_an_unreadable_tlcore_json_is_one_error_naming_it(bundle):
    info_file = bundle / "tlcore.json"
    info_file.write_text(info_file.read_text()[:-20])
    error = _refused(bundle, f"cannot read the bundle description {info_file}", "JSONDecodeError")
    assert "restore it" in error.hint
    info_file.write_text("[1, 2]")
    _refused(bundle, "is not a JSON object")
    info_file.write_bytes(b"\xff\xfe{")
    _refused(bundle, "cannot read the bundle description")


def test_a_checksum_mismatch_is_refused(bundle):
    data = bytearray((bundle / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (bundle / "model.onnx").write_bytes(bytes(data))
    _refused(bundle, "model.onnx does not match the sha256 recorded in tlcore.json")
    _edit_info(bundle, lambda i: i["onnx"].pop("sha256"))
    _refused(bundle, "records no sha256 of model.onnx")


def test_edited_thresholds_are_refused(tagged, tmp_path):
    bundle = shutil.copytree(tagged, tmp_path / "tags")
    thresholds = _info(bundle)["task"]["thresholds"]
    assert len(thresholds) == 3 and Predictor(bundle).task_info["thresholds"] == thresholds
    _edit_info(bundle, lambda i: i["task"].update(thresholds=[0.01, 0.01, 0.01]))
    _refused(bundle, "task thresholds is [0.01, 0.01, 0.01] in tlcore.json")
    bare = shutil.copy(tagged / "model.onnx", tmp_path / "bare.onnx")
    task = json.dumps({"name": "multilabel", "thresholds": [0.5]})
    _rewrite_model(Path(bare), lambda meta: meta.update({META_TASK: task}))
    _refused(Path(bare), "thresholds in the metadata", "not 3 finite numbers")


def test_a_bundle_folder_of_tlcore_0_1_still_opens(bundle, digits):
    """0.1 wrote no task, the input as the preprocessing alone, schema version 1."""
    model = bundle / "model.onnx"
    current = json.loads({p.key: p.value for p in onnx.load(str(model)).metadata_props}[META_INPUT])
    old_input = {key: current[key] for key in Preprocessing().to_dict()}  # the keys 0.1 wrote
    assert "modality" not in old_input

    def as_0_1(meta):
        meta.pop(META_TASK)
        meta[META_INPUT] = json.dumps(old_input)

    _rewrite_model(model, as_0_1, info_folder=bundle)
    _edit_info(bundle, lambda i: (i.pop("task"), i.update(input=old_input, schema_version=1)))
    predictor = Predictor(bundle)
    assert predictor.task.name == "classification" and predictor.labels == tuple(DIGITS)
    assert predictor.predict(_an_image(digits))[0].label in DIGITS


def test_tl_export_writes_a_bundle_that_passes_or_fails(bundle, digits):
    """A tlcore.json that lost its labels and task is written again from the run, said in
    a warning, and the result passes every check; it is not left broken behind a success."""
    expected = Predictor(bundle).predict(_an_image(digits), top_k=2)[0].top
    _edit_info(bundle, lambda i: (i.pop("labels"), i.pop("task")))
    _refused(bundle, "records no labels")
    printed = CliRunner().invoke(cli, ["export", str(bundle)])
    assert printed.exit_code == 0, printed.output
    assert "warning: " in printed.output and "records no labels" in printed.output
    assert _info(bundle)["labels"] == DIGITS
    assert _info(bundle)["task"] == {"name": "classification"}
    again = Predictor(bundle).predict(_an_image(digits), top_k=2)[0].top
    assert [label for label, _ in again] == [label for label, _ in expected]
    assert [p for _, p in again] == pytest.approx([p for _, p in expected], abs=1e-6)


def test_tl_export_refuses_an_unknown_opset_before_exporting(bundle):
    before = file_sha256(bundle / "model.onnx")
    newest = onnx.defs.onnx_opset_version()
    for opset in ("99", "9999", str(newest + 1)):
        printed = CliRunner().invoke(cli, ["export", str(bundle), "--opset", opset])
        assert printed.exit_code == 2, printed.output
        assert printed.output.splitlines() == [
            f"error: ONNX opset {opset} cannot be exported: the installed onnx writes opsets "
            f"9 to {newest}",
            f"hint: choose an opset from 9 to {newest} (--opset, or the recipe's export.opset; "
            "default 17)",
        ]
    assert file_sha256(bundle / "model.onnx") == before
    Predictor(bundle)


def test_a_backend_that_writes_another_opset_than_asked_is_an_error(bundle, digits, tmp_path):
    from tlcore.build import load_run
    from tlcore.bundle.graph import export_onnx
    from tlcore.data import scan_folder
    from tlcore.plugins import plugin_registered
    from tlcore_torch.export import export_onnx as torch_export_onnx

    class Stubborn:
        """Exports at opset 13 whatever it is asked."""

        @tlcore.hookimpl(tryfirst=True)
        def tl_export(self, backend, model, fmt, path, example, opset):
            if fmt != "onnx":
                return None
            return torch_export_onnx(model, path, example, 13, exporters=("torchscript",))

    _, classes, model, prep = load_run(bundle)
    samples = scan_folder(digits).images([0, 8], prep.size)
    with plugin_registered(Stubborn(), "stubborn"), pytest.raises(TlcoreError) as caught:
        export_onnx("torch", model, tmp_path, samples, classes, prep, opset=15)
    assert "wrote ONNX opset 13 when asked for opset 15" in caught.value.message
    assert "ask for opset 13" in caught.value.hint
    assert not (tmp_path / "model.onnx").exists()


def test_tl_eval_will_not_write_into_the_data(bundle, digits):
    before = sorted(p.relative_to(digits) for p in digits.rglob("*"))
    for out in (digits, digits / "reports", digits / "3"):
        printed = CliRunner().invoke(cli, ["eval", str(bundle), str(digits), "--out", str(out)])
        assert printed.exit_code == 2, printed.output
        assert f"error: the report folder {out} is inside the data {digits}" in printed.output
        assert "hint: choose a folder outside" in printed.output
    with pytest.raises(TlcoreError, match="is inside the data"):  # the Python API too
        write_report({"data": str(digits), "count": 0}, digits / "7" / "report")
    assert sorted(p.relative_to(digits) for p in digits.rglob("*")) == before
    printed = CliRunner().invoke(cli, ["eval", str(bundle), str(digits), "--json"])
    assert printed.exit_code == 0, printed.output
    assert (bundle / "eval" / "digits" / "report.json").is_file()


def test_tl_train_refuses_an_opset_onnx_cannot_write_before_it_trains(tmp_path):
    """The recipe's range is wider than any one onnx release: the run checks the installed
    one first, instead of failing at export after training."""
    opset = onnx.defs.onnx_opset_version() + 1
    data = tmp_path / "data"
    data.mkdir()
    printed = CliRunner().invoke(
        cli, ["train", str(data), "--out", str(tmp_path / "run"), "--set", f"export.opset={opset}"]
    )
    assert printed.exit_code == 2, printed.output
    assert f"ONNX opset {opset} cannot be exported" in printed.output
    assert not (tmp_path / "run" / "checkpoints").exists()
