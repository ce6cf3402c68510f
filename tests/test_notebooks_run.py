"""The notebooks run top to bottom in CI: the thesis notebook on the stored results (every
figure whose runs are stored under the current recipe is written), the quickstart and the
train-grid notebook with tiny budgets."""
import re

from conftest import ROOT

from utils.figures.notebooks import execute


def outputs_text(nb) -> str:
    chunks = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            chunks.append(out.get("text", "") if isinstance(out.get("text", ""), str) else "".join(out["text"]))
    return "\n".join(chunks)


def test_thesis_notebook_writes_every_figure(tmp_path):
    from utils.figures import FC, FIGURE_NAMES, RESNET, Store, figure_experiment, grid
    nb, _ = execute(ROOT / "thesis_notebook.ipynb", {"FIGURES": str(tmp_path)}, output=tmp_path / "out.ipynb")
    text = outputs_text(nb)
    # a figure may be skipped only for runs not stored under the current recipe: while a grid is
    # retrained (ResNet-20 under recipe v3), its figures are skipped; once it is complete, none may be
    skipped = set(re.findall(r"^skipped (\S+):.*$", text, flags=re.M))
    store = Store("results")
    incomplete = {e for e in (FC, RESNET) if any(not store.has(*key) for key in grid(e))}
    allowed = {name for name in FIGURE_NAMES if figure_experiment(name) in incomplete}
    assert skipped <= allowed, f"figures skipped although their runs are stored: {skipped - allowed}"
    for name in set(FIGURE_NAMES) - skipped:
        for ext in ("pdf", "png"):
            file = tmp_path / f"{name}.{ext}"
            assert file.is_file() and file.stat().st_size > 1000, f"{file.name} missing or empty"


def test_quickstart_runs(tmp_path, real_data_dir, monkeypatch):
    monkeypatch.setenv("SPARSE_DATA_DIR", str(real_data_dir))
    nb, seconds = execute(ROOT / "notebooks" / "quickstart.ipynb", {"TRAIN_SUBSET": 5000},
                          output=tmp_path / "quickstart.ipynb")
    assert "reloaded" in outputs_text(nb)
    assert seconds < 120


def test_train_grid_runs_two_runs(tmp_path, real_data_dir, monkeypatch):
    monkeypatch.setenv("SPARSE_DATA_DIR", str(real_data_dir))
    store = tmp_path / "store"
    execute(ROOT / "notebooks" / "train_grid.ipynb", {"RESULTS": str(store)}, output=tmp_path / "grid.ipynb")
    from utils.runs import results
    table = results.runs(store)
    assert sorted(table["method"]) == ["random", "synflow"] and (table["epochs"] == 1).all()


def test_an_interrupted_run_leaves_the_notebook_and_a_failing_cell_is_written(tmp_path, monkeypatch):
    """Killed or interrupted mid-run (e.g. SIGTERM turned into an exception, Ctrl-C): the notebook
    on disk stays as it was; a failing cell: the notebook is written with the error, then raised."""
    import nbformat
    import pytest
    from nbclient.exceptions import CellExecutionError

    from utils.figures import notebooks
    path = tmp_path / "n.ipynb"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1"), nbformat.v4.new_code_cell("2")])
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", text="kept\n")]
    nbformat.write(nb, path)
    before = path.read_bytes()

    class Client:
        def __init__(self, nb, error):
            self.nb, self.error = nb, error

        def execute(self):
            self.nb.cells[0].outputs = []                 # what a run does first: clear, then fill
            if self.error is KeyboardInterrupt:
                raise KeyboardInterrupt
            self.nb.cells[1].outputs = [nbformat.v4.new_output("error", ename="ValueError", evalue="x",
                                                               traceback=[])]
            raise CellExecutionError("tb", "ValueError", "x")

    monkeypatch.setattr(notebooks, "_client", lambda nb, timeout, socket_dir: Client(nb, KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        execute(path)
    assert path.read_bytes() == before and not list(tmp_path.glob(".*.tmp"))
    monkeypatch.setattr(notebooks, "_client", lambda nb, timeout, socket_dir: Client(nb, CellExecutionError))
    with pytest.raises(RuntimeError, match=r"n\.ipynb: cell 1 failed"):
        execute(path)
    written = nbformat.read(path, as_version=4)
    assert written.cells[0].outputs == [] and written.cells[1].outputs[0]["ename"] == "ValueError"
