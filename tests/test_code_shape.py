"""The shape of the code: layers, no import cycles, short functions, lint and types (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "src" / "tinylm"
MAX_FUNCTION_LINES = 60
RECIPES = ("tinylm.pretrain", "tinylm.finetune")


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """The absolute module names a file imports, at the top or inside functions (`from M import x` gives M
    and M.x: x may be a submodule)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return out


def imports() -> dict[str, set[str]]:
    """Every tinylm module -> the tinylm modules it imports (at the top or inside functions)."""
    modules = {module_name(p): p for p in PKG.rglob("*.py")}
    return {
        name: {t for t in imported_modules(path) if t in modules and t != name}
        for name, path in modules.items()
    }


def test_no_import_cycles() -> None:
    graph = imports()
    state: dict[str, int] = {}

    def visit(n: str, path: list[str]) -> None:
        state[n] = 1
        for d in sorted(graph[n]):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(d) :] + [d]))
            if d not in state:
                visit(d, path + [d])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])


def is_cli(module: str) -> bool:
    return module == "tinylm.cli" or module == "tinylm.commands" or module.startswith("tinylm.commands.")


def offenders(imported: Callable[[str], bool], allowed: Callable[[str], bool]) -> list[str]:
    """`module imports dep` for every import of a module matching `imported` by one not `allowed` to."""
    return [
        f"{m} imports {d}"
        for m, deps in imports().items()
        if not imported(m) and not allowed(m)
        for d in deps
        if imported(d)
    ]


def test_only_the_cli_imports_the_paper_wing() -> None:
    found = offenders(lambda m: m.startswith("tinylm.paper"), is_cli)
    assert not found, found


def test_nothing_imports_the_cli() -> None:
    found = offenders(is_cli, lambda m: m == "tinylm.__main__")
    assert not found, found


def test_only_the_cli_and_the_gpu_check_import_benchmarks() -> None:
    found = offenders(lambda m: m.startswith("tinylm.bench"), lambda m: is_cli(m) or m == "tinylm.gpu_check")
    assert not found, found


def test_recipes_are_imported_from_above_only() -> None:
    """pretrain and finetune sit on the core; only the CLI, the paper wing, benchmarks and the GPU check
    call them."""
    above = ("tinylm.paper", "tinylm.bench", "tinylm.gpu_check")
    found = offenders(lambda m: m in RECIPES, lambda m: is_cli(m) or m.startswith(above))
    assert not found, found


def test_the_data_layer_imports_only_itself_and_the_base() -> None:
    base = {"tinylm.errors", "tinylm.fileio", "tinylm.registry", "tinylm.config"}
    found = [
        f"{m} imports {d}"
        for m, deps in imports().items()
        if m.startswith("tinylm.data")
        for d in deps
        if not d.startswith("tinylm.data") and d not in base
    ]
    assert not found, found


def test_functions_are_short() -> None:
    long = []
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, long


def test_fmt_skip_only_for_tables() -> None:
    """`# fmt: skip` is kept only where a hand-aligned table reads better (the registry's tables)."""
    found = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in PKG.rglob("*.py")
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if "fmt: skip" in line and p.name != "registry.py"
    ]
    assert not found, found


def _tool(name: str) -> str:
    exe = Path(sys.executable).parent / name
    return str(exe) if exe.exists() else (shutil.which(name) or name)


def test_ruff_is_clean() -> None:
    proc = subprocess.run([_tool("ruff"), "check", "src", "tests"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_types_check() -> None:
    """mypy over src/ (strict on the paper wing, the registry and the predictor: see pyproject.toml)."""
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def third_party_modules() -> set[str]:
    """Top-level names of the non-standard-library modules src/tinylm imports (at the top or in functions)."""
    found = {m.split(".")[0] for path in PKG.rglob("*.py") for m in imported_modules(path)}
    return {m for m in found if m not in sys.stdlib_module_names and m != "tinylm"}


def test_the_main_jobs_install_provides_every_module_tinylm_imports() -> None:
    """The README's main job installs `.[hf,onnx]`: every third-party module src/tinylm imports comes with
    the core dependencies or those two extras, except `ray` (its own extra, for the Ray grid only). scipy,
    which the report's statistics import, was once only in `dev`: `reproduce --preset quick` then trained
    for 50 minutes on a fresh install and failed writing its report."""
    import re
    import tomllib
    from importlib.metadata import packages_distributions

    assert "pip install -q -e '.[hf,onnx]' && TINYLM_DATA_DIR" in (ROOT / "README.md").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]

    def dist(requirement: str) -> str:
        return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")

    installed = {dist(r) for r in project["dependencies"] + extras["hf"] + extras["onnx"]}
    owners = packages_distributions()
    modules = third_party_modules()
    assert {"torch", "numpy", "scipy", "yaml"} <= modules  # the scan sees imports inside functions too
    missing = {
        m: sorted(owners.get(m, [m]))
        for m in modules - {"ray"}
        if not {dist(d) for d in owners.get(m, [m])} & installed
    }
    assert not missing, f"imported by tinylm but not installed by the README's main job: {missing}"
