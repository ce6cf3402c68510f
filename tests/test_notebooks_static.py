"""Static checks of the analysis notebooks (no kernel is started; fast).

- every notebook (``notebooks/*.ipynb`` and ``thesis_notebook.ipynb``) is valid nbformat and has a
  first code cell tagged ``parameters``, with ``RESULTS = "results"`` and ``FIGURES = "figures"`` where
  it reads the runs store (and ``DENSITY = 0.1``, a fraction, where required), followed by one
  short setup cell that calls ``utils.setup()``;
- every code cell directly follows a markdown cell, and every figure a cell writes is named
  in that markdown cell;
- code cells only call library functions: no ``def``/``class``/``lambda``, imports only from
  ``utils``, ``models`` and ``pruners``, every ``F.<name>`` exists in :mod:`utils.figures`, and
  cells stay short;
- committed outputs hold no errors and no development paths;
- :func:`utils.figures.notebooks.inject` puts the parameters right after the ``parameters`` cell.
"""
from __future__ import annotations

import ast
import builtins
import re
from pathlib import Path

import nbformat
import pytest

from utils.figures.notebooks import NOTEBOOKS as RUNNER_NOTEBOOKS

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb")) + ["thesis_notebook"]
#: notebooks that train instead of reading the runs store
TRAINING = {"quickstart", "train_grid"}
PER_DENSITY = {"fc_analysis", "resnet20_analysis", "deepr_and_dnw"}
MAX_LINES = 16
ALLOWED_IMPORTS = ("utils", "models", "pruners")
ALLOWED_CALLS = set(dir(builtins)) | {"display"}


def _load(name: str):
    path = ROOT / f"{name}.ipynb" if name == "thesis_notebook" else ROOT / "notebooks" / f"{name}.ipynb"
    return nbformat.read(path, as_version=4)


def test_every_notebook_is_checked():
    executed = {name.split("/")[-1].removesuffix(".ipynb") for name in RUNNER_NOTEBOOKS}
    assert executed == set(NOTEBOOKS)


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
    if name not in TRAINING:
        assert 'RESULTS = "results"' in first.source and 'FIGURES = "figures"' in first.source, name
    if name in PER_DENSITY:
        assert re.search(r"^DENSITY = 0\.1\b", first.source, re.M), f"{name}: DENSITY = 0.1 missing"
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
    modules = {"F": F}
    name, nb = notebook
    assigned = set()
    for i, cell in _code_cells(nb):
        tree = ast.parse(cell.source)
        lines = [layer for layer in cell.source.splitlines() if layer.strip() and not layer.strip().startswith("#")]
        assert len(lines) <= MAX_LINES, f"{name}: cell {i} has {len(lines)} lines (thin notebooks: ≤ {MAX_LINES})"
        for node in ast.walk(tree):
            assert not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)), \
                f"{name}: cell {i} defines code; put it in the library (utils/figures/, utils/toolkits/)"
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
            assert "Warning" not in text, f"{name}: cell {i} output holds a warning: {text[:120]!r}"


_KERNEL_IMPORT = """
import sys, types, warnings
sys.modules["ipykernel.zmqshell"] = types.ModuleType("ipykernel.zmqshell")  # what tqdm reads as a Jupyter kernel
import IPython
IPython.get_ipython = lambda: types.SimpleNamespace()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    __import__(sys.argv[1])
print(len(caught), *(str(w.message)[:20] for w in caught))
"""


def test_the_library_imports_without_a_warning_in_a_kernel_without_ipywidgets():
    """``import utils`` in a notebook kernel prints nothing: tqdm.auto alone warns "IProgress not
    found" there (the control), which every committed notebook used to show under its setup cell."""
    import subprocess
    import sys
    try:
        import ipywidgets  # noqa: F401
        pytest.skip("ipywidgets is installed: tqdm draws widgets and never warns")
    except ImportError:
        pass

    def warnings_on_import(module: str) -> str:
        return subprocess.run([sys.executable, "-c", _KERNEL_IMPORT, module], capture_output=True, text=True,
                              check=True, cwd=ROOT).stdout.strip()
    assert warnings_on_import("tqdm.auto") == "1 IProgress not found."
    assert warnings_on_import("utils") == "0"


def test_inject_after_parameters():
    from utils.figures.notebooks import inject
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


def test_setup_cell_follows_parameters(notebook):
    name, nb = notebook
    cells = _code_cells(nb)
    setup = cells[1][1].source
    assert "utils.setup()" in setup, f"{name}: the code cell after the parameters does not call utils.setup()"
    for i, cell in cells:
        assert "os.environ" not in cell.source and "os.chdir" not in cell.source, f"{name}: cell {i}"
        assert "warnings" not in cell.source, f"{name}: cell {i} handles warnings; utils.setup() does"


def test_skipped_figures_are_read_from_the_outputs():
    from utils.figures.notebooks import skipped_figures
    cell = nbformat.v4.new_code_cell("F.make(...)")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout",
                                           text="wrote fc_acc\nskipped resnet_acc: missing runs gem-miner d10 s21\n"),
                    nbformat.v4.new_output("stream", name="stdout", text=["skipped gem-kernel-10: x\n", "skipped\n"])]
    nb = nbformat.v4.new_notebook(cells=[cell, nbformat.v4.new_markdown_cell("skipped not_code")])
    assert skipped_figures(nb) == ["resnet_acc", "gem-kernel-10"]


@pytest.mark.parametrize("name", ["nope.ipynb", "README.md", "notebooks"])
def test_the_runner_refuses_what_is_not_a_notebook(capsys, name):
    from utils.figures.notebooks import main
    assert main([name]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"error: {name}: no such notebook (a .ipynb path, relative to {ROOT} or absolute)"]
