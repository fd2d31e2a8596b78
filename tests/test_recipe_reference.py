"""The recipe reference committed in the repository (``docs/recipe-reference.md``): complete,
and what ``docs/_reference.py`` generates from the code now."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "docs" / "recipe-reference.md"


def _reference() -> Any:
    spec = importlib.util.spec_from_file_location("tlcore_docs_reference", ROOT / "docs" /
                                                  "_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _leaf_paths(data: Any, prefix: str = "") -> list[str]:
    """Every field of a recipe's dict form as the reference spells it (``stages.N``)."""
    if isinstance(data, dict):
        return [p for key, value in data.items()
                for p in _leaf_paths(value, f"{prefix}.{key}" if prefix else key)]  # fmt: skip
    if isinstance(data, list) and data and all(isinstance(item, dict) for item in data):
        return [f"{prefix}.N.{p}" for p in _leaf_paths(data[0])] + [prefix]
    return [prefix]


def test_the_committed_recipe_reference_is_up_to_date():
    expected = _reference().recipe_file_text()
    committed = COMMITTED.read_text(encoding="utf-8") if COMMITTED.is_file() else ""
    assert committed == expected, (
        "docs/recipe-reference.md is out of date with the recipe's dataclasses: regenerate it "
        "with `python docs/_reference.py` and commit it"
    )


def test_it_names_every_field_of_the_recipe_with_its_default():
    from tlcore.recipe import Recipe

    text = _reference().recipe_file_text()
    recipe = Recipe().to_dict()
    paths = _leaf_paths(recipe)
    assert {"backend", "task", "train.stages.N.freeze.batchnorm"} <= set(paths)
    for section in {path.rsplit(".", 1)[0] for path in paths if "." in path}:
        assert f"## `{section}`" in text, section
    for path in paths:
        assert f"| `{path}` |" in text, path
    assert "| `export.tolerance` | float | `0.0001` | 0.0 to 1.0 |" in text
    assert "| `task` | str | `\"classification\"` | `classification`, `multilabel`" in text


def test_check_mode_says_how_to_regenerate(tmp_path):
    """``python docs/_reference.py --check`` is what CI or a pre-commit hook can run."""
    result = subprocess.run([sys.executable, str(ROOT / "docs" / "_reference.py"), "--check"],
                            capture_output=True, text=True, cwd=tmp_path)
    up_to_date = COMMITTED.read_text(encoding="utf-8") == _reference().recipe_file_text()
    assert result.returncode == (0 if up_to_date else 1), result.stderr
    if not up_to_date:
        assert "run python docs/_reference.py" in result.stdout
