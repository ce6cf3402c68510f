"""The package layout keeps its promises: no module over 600 lines, and no two modules that
import each other (also through imports deferred into functions)."""
import ast
from pathlib import Path

import pytest
from conftest import ROOT

PACKAGES = ("utils", "pruners", "models")


def modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Project modules ``name`` imports anywhere in its body (``from pkg import mod`` → pkg.mod)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            out |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return {m for m in out if m in known and m != name}


def test_imported_resolves_relative_and_submodule_imports(tmp_path):
    known = {"utils.runs": Path(), "utils.runs.results": Path(), "utils.errors": Path(), "utils.runs.thesis": Path()}
    source = tmp_path / "thesis.py"
    source.write_text("from utils.runs import results\nfrom ..errors import UserError\nimport numpy\n"
                      "def f():\n    from .results import x\n")
    assert imported("utils.runs.thesis", source, known) == {"utils.runs.results", "utils.errors"}


def test_no_module_over_600_lines():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > 600}
    assert not long


def test_no_two_modules_import_each_other():
    known = modules()
    graph = {name: imported(name, path, known) for name, path in known.items()}
    # a package may import its own submodules and they may import the package's siblings through it
    related = lambda a, b: a.startswith(b + ".") or b.startswith(a + ".")  # noqa: E731
    cycles = sorted((a, b) for a in graph for b in graph[a] if a < b and a in graph[b] and not related(a, b))
    assert not cycles


@pytest.mark.parametrize("package", PACKAGES)
def test_importing_a_package_starts_nothing(package):
    import subprocess
    import sys
    code = (f"import threading, torch; n = torch.get_num_threads(); import {package}; "
            "assert threading.active_count() == 1, threading.enumerate(); assert torch.get_num_threads() == n")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
