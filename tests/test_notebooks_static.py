"""Static checks of the analysis notebooks (no kernel is started; fast).

- every notebook is valid nbformat and has a first code cell tagged ``parameters`` with
  ``RESULTS = "results"`` and ``FIGURES = "figures"`` (and ``DENSITY = 10`` where required);
- every code cell directly follows a markdown cell, and every figure a cell writes is named
  in that markdown cell;
- code cells only call library functions: no ``def``/``class``/``lambda``, imports only from
  ``utils`` (and ``os``, ``warnings``), every ``H.<name>`` / ``F.<name>`` exists in
  :mod:`utils.notebook_helpers` / :mod:`utils.figures`, and cells stay short;
- committed outputs hold no errors and no development paths;
- :func:`utils.notebooks.inject` puts the parameters right after the ``parameters`` cell.
"""
from __future__ import annotations

import ast
import builtins
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["plot_acc", "feature_maps_and_conv_kernels", "random_fc_analysis", "fc_analysis",
             "resnet20_analysis", "deepr_and_dnw", "thesis_vs_corrected"]
PER_DENSITY = {"fc_analysis", "resnet20_analysis", "deepr_and_dnw"}
MAX_LINES = 16
ALLOWED_IMPORTS = ("utils", "os", "warnings")
ALLOWED_CALLS = set(dir(builtins)) | {"display"}


def _load(name: str):
    return nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)


def _code_cells(nb):
    return [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]


@pytest.fixture(scope="module", params=NOTEBOOKS)
def notebook(request):
    return request.param, _load(request.param)


def test_valid_and_parametrised(notebook):
    name, nb = notebook
    nbformat.validate(nb)
    first = _code_cells(nb)[0][1]
    assert "parameters" in first.metadata.get("tags", []), f"{name}: first code cell is not tagged 'parameters'"
    assert 'RESULTS = "results"' in first.source and 'FIGURES = "figures"' in first.source, name
    if name in PER_DENSITY:
        assert re.search(r"^DENSITY = 10\b", first.source, re.M), f"{name}: DENSITY = 10 missing"
    assert not any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells), name


def _figure_names(tree: ast.AST) -> list[str]:
    """Names of the figures written by make calls, with any {…} field normalised to {}."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "make" \
                and node.args:
            arg = node.args[0]
            items = arg.elts if isinstance(arg, (ast.List, ast.Tuple)) else [arg]
            for item in items:
                if isinstance(item, ast.Constant) and isinstance(item.value, str):
                    names.append(item.value)
                elif isinstance(item, ast.JoinedStr):
                    names.append("".join(v.value if isinstance(v, ast.Constant) else "{}" for v in item.values))
    return names


def test_markdown_before_every_code_cell(notebook):
    name, nb = notebook
    for i, cell in _code_cells(nb):
        assert i > 0 and nb.cells[i - 1].cell_type == "markdown", f"{name}: code cell {i} has no markdown before it"
        md = re.sub(r"\{[^}]*\}", "{}", nb.cells[i - 1].source)
        for fig in _figure_names(ast.parse(cell.source)):
            assert fig in md, f"{name}: cell {i} writes {fig!r}, which its markdown cell does not name"


def test_only_library_calls(notebook):
    import utils.figures as F
    import utils.notebook_helpers as H
    modules = {"H": H, "F": F}
    name, nb = notebook
    assigned = set()
    for i, cell in _code_cells(nb):
        tree = ast.parse(cell.source)
        lines = [layer for layer in cell.source.splitlines() if layer.strip() and not layer.strip().startswith("#")]
        assert len(lines) <= MAX_LINES, f"{name}: cell {i} has {len(lines)} lines (thin notebooks: ≤ {MAX_LINES})"
        for node in ast.walk(tree):
            assert not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)), \
                f"{name}: cell {i} defines code; put it in utils/notebook_helpers.py"
            if isinstance(node, ast.Import):
                assert all(a.name.split(".")[0] in ALLOWED_IMPORTS for a in node.names), f"{name}: cell {i}"
            if isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] in ALLOWED_IMPORTS, f"{name}: cell {i} imports {node.module}"
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
                assert hasattr(modules[node.value.id], node.attr), \
                    f"{name}: cell {i} uses {node.value.id}.{node.attr}, which does not exist"
            if isinstance(node, (ast.Name,)) and isinstance(node.ctx, ast.Store):
                assigned.add(node.id)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id in ALLOWED_CALLS | assigned, f"{name}: cell {i} calls {node.func.id}()"


def test_outputs_clean(notebook):
    name, nb = notebook
    for i, cell in _code_cells(nb):
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", f"{name}: cell {i} has an error output"
            text = str(out.get("text", "")) + str(out.get("data", {}).get("text/plain", ""))
            assert "/tmp/" not in text, f"{name}: cell {i} output comes from a development store"


def test_inject_after_parameters():
    from utils.notebooks import inject
    nb = _load("fc_analysis")
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    n = len(nb.cells)
    inject(nb, {"DENSITY": 2, "RESULTS": "r"})
    inject(nb, {"DENSITY": 5})  # re-injection replaces the earlier cell
    assert len(nb.cells) == n + 1
    cell = nb.cells[index + 1]
    assert cell.metadata["tags"] == ["injected-parameters"]
    assert "DENSITY = 5" in cell.source and "RESULTS" not in cell.source
    with pytest.raises(ValueError):
        inject(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]), {"DENSITY": 2})
