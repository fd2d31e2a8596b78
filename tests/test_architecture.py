"""The import rules of docs/architecture.md, checked on the source: layers, no cycles, sizes."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tlcore"
FRAMEWORKS = ("torch", "tensorflow", "keras", "transformers")

#: What the runtime side may import: the bundle's layout and reader, input decoding, errors,
#: interfaces, and the tasks (which decode a model's output). Each name allows the module and
#: the modules under it, except ``tlcore`` itself (the package, for its version).
RUNTIME_SIDE = ("tlcore.runtime", "tlcore.inputs", "tlcore.bundle.layout", "tlcore.bundle.read")
RUNTIME_MAY_IMPORT = (
    "tlcore",
    "tlcore.errors",
    "tlcore.interfaces",
    "tlcore.inputs",
    "tlcore.tasks",
    "tlcore.bundle",
    "tlcore.bundle.layout",
    "tlcore.bundle.read",
)

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60  # code lines: a docstring does not count
#: Modules allowed to be longer, and why.
LONG_MODULES = {
    "tlcore/hookspecs.py": "the backend contract's manual: every hook with its full documentation",
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _top_level_imports(path: Path) -> set[str]:
    """Modules imported when ``path`` is imported: module-level statements only (not inside
    functions, not under ``if TYPE_CHECKING``), ``from x import y`` counted as ``x`` and,
    when ``x.y`` is a module, ``x.y``."""
    modules = _modules()
    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in tree.body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], base]).strip(".")
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules)
    return found


def _imports_with_parents(name: str) -> set[str]:
    """A module's imports plus the packages Python imports on the way (``a`` for ``a.b``),
    leaving out the module's own enclosing packages, which are imported before it anyway."""
    parts = name.split(".")
    enclosing = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    result = set()
    for imported in _top_level_imports(_modules()[name]):
        pieces = imported.split(".")
        result.update(".".join(pieces[:i]) for i in range(1, len(pieces) + 1))
    return {m for m in result if m in _modules() and m not in enclosing}


def test_import_tlcore_runtime_imports_neither_recipe_nor_trainer():
    code = (
        "import sys, tlcore.runtime\n"
        "print(','.join(sorted(m for m in sys.modules if m.startswith('tlcore'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.strip().split(","))
    forbidden_modules = ("tlcore.recipe", "tlcore.train", "tlcore.data", "tlcore.plugins")
    for forbidden in (*forbidden_modules, "tlcore.build"):
        assert forbidden not in loaded, f"import tlcore.runtime loads {forbidden}"
    assert not {m for m in loaded if m.split(".")[0] in FRAMEWORKS}


@pytest.mark.parametrize("name", [m for m in _modules() if m.startswith(RUNTIME_SIDE)])
def test_runtime_side_imports_only_layout_decoding_errors_interfaces(name):
    tlcore_imports = {m for m in _imports_with_parents(name) if m.startswith("tlcore")}
    allowed = {m for m in tlcore_imports if m in RUNTIME_MAY_IMPORT or m.startswith(
        tuple(f"{prefix}." for prefix in RUNTIME_MAY_IMPORT if prefix != "tlcore"))}
    # the runtime side may import itself (tlcore.inputs.image), nothing else of the core
    assert tlcore_imports - allowed - set(_modules_under("tlcore.inputs")) == set()


def _modules_under(prefix: str) -> list[str]:
    return [m for m in _modules() if m == prefix or m.startswith(prefix + ".")]


def test_there_is_no_import_cycle_in_tlcore():
    graph = {name: _imports_with_parents(name) for name in _modules()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


@pytest.mark.parametrize("name", sorted(_modules()))
def test_the_core_imports_no_framework_at_module_level(name):
    imported = {m.split(".")[0] for m in _top_level_imports(_modules()[name])}
    assert not imported & set(FRAMEWORKS), f"{name} imports {imported & set(FRAMEWORKS)}"


def test_no_module_or_function_is_too_long():
    """One concept per module, one thought per function (docs/architecture.md)."""
    too_long = []
    for root in (PACKAGE, ROOT / "plugins"):
        for path in sorted(root.rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            lines = len(text.splitlines())
            where = path.relative_to(ROOT).as_posix()
            if lines > MAX_MODULE_LINES and where not in LONG_MODULES:
                too_long.append(f"{where}: {lines} lines")
            for node in ast.walk(ast.parse(text)):
                function = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                if function and (length := _code_lines(node)) > MAX_FUNCTION_LINES:
                    too_long.append(f"{where}:{node.lineno} {node.name}: {length}")
    assert not too_long, "\n".join(too_long)


def _code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """A function's length in lines, its docstring left out."""
    length = node.end_lineno - node.lineno + 1
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
        length -= first.end_lineno - first.lineno + 1
    return length


def test_the_architecture_page_names_every_package_and_module():
    """docs/architecture.md stays the map of the code: a new package or flat module is on it."""
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    packages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    flat = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__"))
    missing = [f"{name}/" for name in packages if f"{name}/" not in page and name != "testing"]
    named = [re.search(rf"`{name}`|{name}\.py|tlcore\.{name}\b", page) for name in flat]
    missing += [name for name, found in zip(flat, named, strict=True) if not found]
    assert not missing, f"docs/architecture.md does not mention: {missing}"


def test_every_package_ships_in_the_wheel():
    """pyproject.toml lists packages by hand (the plugins live under plugins/): none missing."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(project["tool"]["setuptools"]["packages"])
    on_disk = {_module_name(p.parent / "__init__.py") for p in PACKAGE.rglob("__init__.py")}
    assert on_disk <= listed, f"add to [tool.setuptools] packages: {sorted(on_disk - listed)}"


def test_the_fault_page_counts_the_tests_there_are():
    """docs/faults.md's table gives the number of tests of each fault-suite file: keep it true."""
    page = (ROOT / "docs" / "faults.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(tests/test_\w+\.py)` \| (\d+) \|", page, flags=re.M)
    assert len(rows) == 4
    for name, count in rows:
        tree = ast.parse((ROOT / name).read_text(encoding="utf-8"))
        tests = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
        found = sum(1 for n in tests if n.name.startswith("test"))
        assert found == int(count), f"{name} has {found} tests; docs/faults.md says {count}"
