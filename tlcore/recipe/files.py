"""Reading a recipe file (YAML with ``safe_load``, TOML or JSON) into a plain dict."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from tlcore.errors import TlcoreError


def load_recipe_file(path: str | Path) -> dict[str, Any]:
    """Read a recipe file (``.yaml``/``.yml``, ``.toml`` or ``.json``) into a plain dict."""
    p = Path(path)
    if not p.is_file():
        raise TlcoreError(f"recipe file not found: {p}", "give the path of a .yaml or .toml file")
    import yaml

    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        elif p.suffix == ".toml":
            data = tomllib.loads(text)
        elif p.suffix == ".json":
            data = json.loads(text)
        else:
            raise TlcoreError(
                f"unknown recipe file type: {p.name}", "use .yaml, .yml, .toml or .json"
            )
    except (ValueError, yaml.YAMLError) as exc:  # TOMLDecodeError is a ValueError
        raise TlcoreError(f"cannot parse recipe {p}: {exc}", "check the file's syntax") from exc
    if not isinstance(data, dict):
        raise TlcoreError(f"recipe {p} is not a mapping", "the top level holds keys like 'train:'")
    return data
