"""The example plugins under ``examples/``: installed as real distributions, used by real ``tl``.

Each example is pip-installed (``--target``, no dependencies) into a throw-away folder put on
``PYTHONPATH``, the way a user's ``pip install`` makes its entry point visible. Then the real
``tl`` command lists and uses them, and each example's own tests run against the installed
package, as its author would run them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import run_tl

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PACKAGES = {
    "tlcore-convmixer": ("convmixer", ["tl_load_backbone", "tl_register_backbones"]),
    "tlcore-jsonl-logger": ("jsonl_logger", ["tl_on_epoch_end", "tl_on_export", "tl_on_stage_end"]),
}

JUNK = ("build", "dist", "*.egg-info", "__pycache__")

RECIPE = """\
backbone: {source: "convmixer:16/1", weights: none, input_size: 16}
train:
  batch_size: 16
  stages:
    - {name: scratch, epochs: 2, lr: 0.003, freeze: {policy: none, batchnorm: train}}
data: {val_split: 0.2}
"""


@pytest.fixture(scope="module")
def example_site(tmp_path_factory) -> Path:
    """A folder with both example plugins pip-installed into it."""
    site = tmp_path_factory.mktemp("example-site")
    sources = tmp_path_factory.mktemp("example-sources")
    for name in PACKAGES:  # pip builds in the source folder: keep the repository clean
        shutil.copytree(EXAMPLES / name, sources / name, ignore=shutil.ignore_patterns(*JUNK))
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    targets = [str(sources / name) for name in PACKAGES]
    subprocess.run([*pip, "--target", str(site), *targets], check=True, capture_output=True)
    return site


def _env(site: Path) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}


def test_each_example_is_a_package_whose_modules_fit_on_one_screen():
    for name in PACKAGES:
        modules = list((EXAMPLES / name).glob("tlcore_*/*.py"))
        assert modules and (EXAMPLES / name / "tests").is_dir()
        for module in modules:
            assert len(module.read_text(encoding="utf-8").splitlines()) <= 40, module


def test_tl_plugins_lists_both_with_version_and_hooks(example_site):
    listed = run_tl("plugins", "--json", env=_env(example_site)).stdout
    rows = {row["name"]: row for row in json.loads(listed)}
    for package, (entry_point, hooks) in PACKAGES.items():
        assert rows[entry_point]["package"] == package
        assert rows[entry_point]["version"] == "0.1.0"
        assert rows[entry_point]["hooks"] == hooks
        assert rows[entry_point]["error"] is None
    listing = run_tl("backbones", "--backend", "torch", env=_env(example_site)).stdout
    assert "convmixer:<width>/<depth>" in listing


def test_tl_train_uses_the_backbone_and_the_logger_records_the_run(example_site, tmp_path):
    from tlcore.testing import write_image_folder

    images = write_image_folder(tmp_path / "images")
    (tmp_path / "recipe.yaml").write_text(RECIPE, encoding="utf-8")
    out = tmp_path / "run"
    result = run_tl(
        "train",
        images,
        "--recipe",
        tmp_path / "recipe.yaml",
        "--out",
        out,
        "--quiet",
        env=_env(example_site),
    )
    assert "done:" in result.stdout
    info = json.loads((out / "tlcore.json").read_text())
    assert info["recipe"]["backbone"]["source"] == "convmixer:16/1"
    assert info["onnx"]["parity"]["top1_agreement"] == 1.0
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["epoch", "epoch", "stage", "export", "export"]
    assert events[2]["stage"] == "scratch" and "val_accuracy" in events[2]
    assert Path(events[4]["file"]) == out / "model.onnx"


def test_the_examples_own_tests_pass_against_the_installed_packages(example_site):
    tests = [str(EXAMPLES / name / "tests") for name in PACKAGES]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        cwd=EXAMPLES,
        env={**os.environ, **_env(example_site), "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "8 passed" in result.stdout
