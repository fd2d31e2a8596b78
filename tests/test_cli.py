"""The ``tl`` command as a user meets it: help, the demo, training, evaluation, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import run_tl

FRAMEWORKS = ("torch", "tensorflow", "keras", "transformers")


def _loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys\nprint([m for m in {FRAMEWORKS!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1].replace("'", '"'))


def test_import_tlcore_loads_no_framework():
    assert _loaded_after("import tlcore, tlcore.cli, tlcore.plugins") == []


@pytest.mark.parametrize("command", [[], ["train"], ["eval"], ["plugins"], ["backbones"], ["demo"]])
def test_help_loads_no_framework_and_shows_an_example(command):
    code = (
        "import sys\nfrom tlcore.cli import cli\n"
        f"try:\n    cli.main(args={[*command, '--help']!r}, prog_name='tl')\n"
        "except SystemExit:\n    pass"
    )
    assert _loaded_after(code) == []
    out = run_tl(*command, "--help").stdout
    assert "Example" in out


def test_demo_train_eval_end_to_end(demo_run):
    """``tl demo``, ``tl train`` with its recipe (shared with ``test_backends``), ``tl eval``."""
    data, run = demo_run.data, demo_run("torch")
    accuracy = float(demo_run.stdout["torch"].split("val_accuracy ")[1].split(")")[0])
    assert accuracy >= 0.8
    history = json.loads((run / "history.json").read_text())
    assert history and all("val_accuracy" in row for row in history)
    report = json.loads(run_tl("eval", run, data, "--json").stdout)
    assert report["count"] == 200  # tl demo: 20 scans of each digit
    assert report["accuracy"] >= 0.9
    assert len(report["confusion"]) == 10
    assert "precision" in run_tl("eval", run, data).stdout


def test_predict_into_a_reader_that_stops_early_is_not_an_error(demo_run):
    """``tl predict RUN FOLDER | head -1``: the closed pipe ends the command quietly."""
    predict = subprocess.Popen(
        [sys.executable, "-m", "tlcore.cli", "predict", str(demo_run("torch")), str(demo_run.data)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert predict.stdout.readline().count("\t") == 1
    predict.stdout.close()  # as head does after its first line
    assert predict.wait(timeout=300) == 0
    assert predict.stderr.read() == ""


@pytest.mark.parametrize(
    ("args", "message", "hint"),
    [
        (["train", "no/such/folder"], "no/such/folder", "hint:"),
        (["train", "{data}", "--backend", "jax"], "unknown backend 'jax'", "installed backends"),
        (["train", "{data}", "--backbone", "nope:thing"], "nope:thing", "tl backbones"),
        (["train", "{data}", "--set", "head.pooling=median"], "head.pooling",
         "avg, max, flatten, mean, cls"),
        (["train", "{data}", "--lr", "-1"], "'lr'", ">= 1e-12"),
        (["train", "--resume", "{tmp}"], "not a tlcore run folder", "hint:"),
        (["eval", "{tmp}", "{data}"], "not a tlcore run folder", "hint:"),
        (["backbones", "--backend", "jax"], "unknown backend", "hint:"),
    ],
)
def test_bad_input_is_one_line_and_a_hint(args, message, hint, digits_folder, tmp_path):
    args = [a.format(data=digits_folder, tmp=tmp_path) for a in args]
    result = run_tl(*args, "--out", tmp_path / "o", check=False) if args[0] == "train" and \
        "--resume" not in args else run_tl(*args, check=False)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("error:") and message in lines[0]
    assert lines[1].startswith("hint:") and hint in lines[1]
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback(tmp_path):
    result = run_tl("--debug", "train", tmp_path / "missing", check=False)
    assert result.returncode == 2
    assert "Traceback" in result.stderr


def test_backbones_lists_sources_with_sizes():
    rows = json.loads(run_tl("backbones", "--backend", "torch", "--json").stdout)
    sources = {row["source"]: row for row in rows}
    assert sources["builtin:simple_cnn"]["input_size"] == 32
    assert any(s.startswith("hf:") for s in sources)


def test_ctrl_c_then_resume_finishes_like_an_uninterrupted_run(small_digits, tmp_path):
    site = tmp_path / "site"  # a plugin that sends the SIGINT after the first checkpoint
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", str(site), str(Path(__file__).parent / "plugin_packages" / "tl_interrupt")],
        check=True, capture_output=True,
    )
    args = ["train", small_digits, "--backbone", "builtin:simple_cnn", "--weights", "none",
            "--epochs", "3", "--seed", "5", "--val-split", "0.2"]
    run_tl(*args, "--out", tmp_path / "whole", "--quiet")
    cut = tmp_path / "cut"
    err = run_tl(*args, "--out", cut, check=False, env={
        "PYTHONPATH": str(site), "TL_INTERRUPT_AFTER_CHECKPOINT": "1"})
    assert err.returncode == 130, err.stderr
    assert f"tl train --resume {cut}" in err.stderr
    assert len(json.loads((cut / "history.json").read_text())) == 1  # stopped after epoch 1
    run_tl("train", "--resume", cut, "--quiet")
    whole = json.loads((tmp_path / "whole" / "history.json").read_text())
    resumed = json.loads((cut / "history.json").read_text())
    assert [(r["stage"], r["epoch"]) for r in resumed] == [(r["stage"], r["epoch"]) for r in whole]
    for a, b in zip(whole, resumed, strict=True):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)


def test_tl_recipe_writes_the_default_recipe_commented(tmp_path):
    """``tl recipe``: YAML that reads back to the default recipe, each field with what it
    may hold; --out refuses to replace a file without --force."""
    import yaml

    from tlcore.recipe import Recipe, build_recipe

    printed = run_tl("recipe").stdout
    assert build_recipe(yaml.safe_load(printed)).to_dict() == Recipe().to_dict()
    assert "lr: 0.001  # 1e-12 to 10" in printed
    assert 'classifier: "new"  # one of: new, replace, keep' in printed
    out = tmp_path / "recipe.yaml"
    assert run_tl("recipe", "--out", out).stdout == f"wrote {out}\n"
    assert out.read_text() == printed
    refused = run_tl("recipe", "--out", out, check=False)
    assert refused.returncode != 0 and "--force" in refused.stderr
    out.write_text("edited")
    run_tl("recipe", "--out", out, "--force")
    assert out.read_text() == printed


def test_tl_train_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    """The resolved recipe, the data, and per stage the trainable and frozen parameters,
    epochs and steps; no run folder, nothing trained."""
    import yaml

    from tlcore.recipe import build_recipe

    run_tl("demo", tmp_path / "data", cwd=tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    out = run_tl("train", tmp_path / "data", "--recipe", tmp_path / "data" / "recipe.yaml",
                 "--dry-run", "--out", tmp_path / "run", cwd=tmp_path).stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no run folder
    recipe_text, plan = out.split("# the plan\n")
    recipe = build_recipe(yaml.safe_load(recipe_text))
    assert recipe.backbone.source == "builtin:efficientnet_lite0"
    assert "training data: 160 images, 10 classes" in plan
    assert "5 steps per epoch (batch size 32)" in plan
    # The head alone trains first: EfficientNet-Lite0's 1280 features to 10 classes.
    head = next(line for line in plan.splitlines() if line.startswith("stage head:"))
    assert head.startswith(f"stage head: {1280 * 10 + 10:,} trainable / ")
    assert "60 epochs, 300 steps" in head  # min_steps 300 at 5 steps an epoch
    totals = {
        sum(int(n.replace(",", "")) for n in line.split(":")[1].split("parameters")[0]
            .replace("trainable /", "").replace("frozen", "").split())
        for line in plan.splitlines() if line.startswith("stage ")
    }
    assert len(totals) == 1  # every stage counts the same network
