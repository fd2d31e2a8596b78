"""What is installed: ``tl plugins`` and ``tl backbones``.
"""

from __future__ import annotations

import json

import click

from tlcore.cli.app import cli


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json: bool) -> None:
    """List installed plugins, their versions and hooks, the recipe choices they add (a
    freeze policy, an optimiser, ...), and any that failed to load.

    \b
    Example:
      tl plugins --json
    """
    from tlcore.plugins import plugin_table

    rows = plugin_table()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        version = f"{row['package']} {row['version']}" if row["package"] else "(registered)"
        if row["error"]:
            click.echo(f"{row['name']}  {version}  BROKEN: {row['error']}")
        else:
            click.echo(f"{row['name']}  {version}")
            click.echo(f"    hooks: {', '.join(row['hooks'])}")
        for choice in row["choices"]:
            ignored = f"  IGNORED: {choice['ignored']}" if choice["ignored"] else ""
            about = f"  {choice['description']}" if choice["description"] else ""
            click.echo(f"    choice: {choice['kind']} {choice['name']}{about}{ignored}")
    click.echo(f"export formats: {_formats(rows)}")


def _formats(rows: list[dict]) -> str:
    """What ``export.formats`` accepts: the built-in formats and those plugins register."""
    from tlcore.recipe.choices import builtin

    added = [
        f"{choice['name']} ({row['name']})" for row in rows for choice in row["choices"]
        if choice["kind"] == "format" and not choice["ignored"]
    ]
    return ", ".join(builtin("format")) + " (built in)" + ("; " + ", ".join(added) if added else "")


@cli.command()
@click.option("--backend", "-b", default=None, help="Only this backend.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def backbones(backend: str | None, as_json: bool) -> None:
    """List the backbones each backend can load, with input size and parameter count.

    \b
    Example:
      tl backbones --backend torch
    """
    from tlcore import plugins as registry

    names = [backend] if backend else sorted(registry.backends())
    if backend:
        registry.require_backend(backend)
    rows = [
        {"backend": name, **vars(info)} for name in names for info in registry.backbones(name)
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        size = f"{row['input_size']}px" if row["input_size"] else "-"
        params = f"{row['params'] / 1e6:.1f}M" if row["params"] else "-"
        click.echo(f"{row['backend']:<6} {row['source']:<32} {size:>6} {params:>7}  "
                   f"{row['description']}")
