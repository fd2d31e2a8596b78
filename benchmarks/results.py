"""Result rows, and the files they are written to: JSON, a Markdown table and a plot."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.timing import Stat

OPERATORS = {"<=": lambda x, t: x <= t, ">=": lambda x, t: x >= t}


def row(
    item: str,
    what: str,
    backend: str,
    model: str,
    workload: str,
    a_name: str,
    a_values: Sequence[float],
    b_name: str,
    b_values: Sequence[float],
    unit: str,
    ratio_values: Sequence[float] | None,
    ratio_name: str,
    op: str,
    target: float,
) -> dict[str, Any]:
    """One comparison: both sides' figures, their pairwise ratio and the verdict.

    The verdict is the median ratio against ``target`` with ``op`` (``<=`` or ``>=``).
    ``ratio_values`` ``None`` means the figure judged is ``a_values`` itself.
    """
    judged = Stat.of(ratio_values if ratio_values is not None else a_values)
    return {
        "item": item,
        "what": what,
        "backend": backend,
        "model": model,
        "workload": workload,
        "unit": unit,
        "a": {"name": a_name, **Stat.of(a_values).to_dict(), "values": list(a_values)},
        "b": {"name": b_name, **Stat.of(b_values).to_dict(), "values": list(b_values)}
        if b_values
        else None,
        "ratio": {"name": ratio_name, **judged.to_dict()},
        "target": {"op": op, "value": target},
        "met": bool(OPERATORS[op](judged.median, target)),
    }


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")
    os.chmod(tmp, 0o644)  # mkstemp makes it private; results are meant to be read
    os.replace(tmp, path)


def _num(value: float) -> str:
    if value == 0 or 0.01 <= abs(value) < 10_000:
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return f"{value:.3g}"


def _side(side: dict[str, Any] | None, unit: str) -> str:
    if not side:
        return "–"
    return (
        f"{side['name']}: {_num(side['median'])} {unit} ({_num(side['min'])}–{_num(side['max'])})"
    )


def markdown(results: dict[str, Any]) -> str:
    """The results as a Markdown page: machine, then one table row per comparison."""
    machine = results["machine"]
    lines = [
        f"# tlcore benchmarks ({results['mode']})",
        "",
        f"- command: `{machine['command']}`",
        f"- machine: {machine['cpu']}, {machine['cores']} cores "
        f"({', '.join(machine['cpu_flags'])}); load average at start "
        f"{machine['load_average_at_start']}",
        f"- threads per side: {machine['threads_per_side']}; "
        f"finished in {results['seconds']:.0f} s",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v),
        "",
        "Figures are medians with (min–max) over interleaved repeats; the ratio is taken pair "
        "by pair, A and B measured next to each other. Targets are judged on the median ratio.",
        "",
        "| # | comparison | backend | model | A | B | ratio (median, min–max) | target | met |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results["rows"]:
        ratio = r["ratio"]
        lines.append(
            f"| {r['item']} | {r['what']} | {r['backend']} | {r['model']} | "
            f"{_side(r['a'], r['unit'])} | {_side(r['b'], r['unit'])} | "
            f"{ratio['name']}: **{_num(ratio['median'])}** "
            f"({_num(ratio['min'])}–{_num(ratio['max'])}) | "
            f"{r['target']['op']} {r['target']['value']:g} | {'yes' if r['met'] else '**no**'} |"
        )
    lines += ["", "## Workloads and notes", ""]
    for r in results["rows"]:
        note = f"- **{r['item']} {r['what']} ({r['backend']}, {r['model']})**: {r['workload']}"
        if r.get("accuracy") and "tlcore" in r["accuracy"]:
            acc = r["accuracy"]
            def listed(values: list[float]) -> str:
                return ", ".join(f"{v:.3f}" for v in values)

            note += (
                f". Final validation accuracy, seeds {acc['seeds']}: tlcore "
                f"{listed(acc['tlcore'])}, hand-written {listed(acc['hand_written'])}; the "
                f"means differ by {acc['mean_gap_points']} points "
                f"(target ≤ {acc['target_gap_points']})"
            )
        if r.get("note"):
            note += f". {r['note']}"
        lines.append(note)
    if results.get("findings"):
        lines += ["", "## Findings", ""]
        lines += [f"- {finding}" for finding in results["findings"]]
    if results.get("errors"):
        lines += ["", "## Errors", ""]
        lines += [f"- {error}" for error in results["errors"]]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> bool:
    """A bar chart of every comparison's median ratio against its target (matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = results["rows"]
    if not rows:
        return False
    labels = [
        f"{r['item']} {r['backend']} {r['model']}\n{r['ratio']['name']}"
        if r["backend"] != "-"
        else f"{r['item']} {r['what']}\n{r['ratio']['name']}"
        for r in rows
    ]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.5))
    y = range(len(rows))
    medians = [r["ratio"]["median"] for r in rows]
    low = [r["ratio"]["median"] - r["ratio"]["min"] for r in rows]
    high = [r["ratio"]["max"] - r["ratio"]["median"] for r in rows]
    colours = ["tab:green" if r["met"] else "tab:red" for r in rows]
    ax.barh(list(y), medians, xerr=[low, high], color=colours, alpha=0.8)
    ax.scatter(
        [r["target"]["value"] for r in rows],
        list(y),
        marker="|",
        s=300,
        color="black",
        label="target",
        zorder=3,
    )
    ax.set_yticks(list(y), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("ratio (median, min–max); green: target met")
    ax.set_title(f"tlcore benchmarks ({results['mode']})")
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
