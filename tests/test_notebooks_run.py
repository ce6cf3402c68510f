"""The notebooks run top to bottom in CI: the thesis notebook on the stored results (the grid
is complete, so every thesis figure is written), the quickstart and the train-grid notebook
with tiny budgets."""
import re

from conftest import ROOT

from utils.notebooks import execute


def outputs_text(nb) -> str:
    chunks = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            chunks.append(out.get("text", "") if isinstance(out.get("text", ""), str) else "".join(out["text"]))
    return "\n".join(chunks)


def test_thesis_notebook_writes_every_figure(tmp_path):
    from utils.figures import FIGURE_NAMES
    nb, _ = execute(ROOT / "thesis_notebook.ipynb", {"FIGURES": str(tmp_path)}, output=tmp_path / "out.ipynb")
    text = outputs_text(nb)
    # the committed grid is complete, so no figure may be skipped for missing runs
    skipped = re.findall(r"^skipped (\S+):.*$", text, flags=re.M)
    assert not skipped, f"figures skipped: {skipped}"
    for name in FIGURE_NAMES:
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
    from utils import results
    table = results.runs(store)
    assert sorted(table["method"]) == ["random", "synflow"] and (table["epochs"] == 1).all()
