"""The notebooks run top to bottom in CI: the thesis notebook on the stored results (every
figure whose runs are stored is written, the rest are skipped with a line naming the missing
runs), the quickstart and the train-grid notebook with tiny budgets."""
import re

import pytest

from conftest import ROOT
from utils.notebooks import execute


def outputs_text(nb) -> str:
    chunks = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            chunks.append(out.get("text", "") if isinstance(out.get("text", ""), str) else "".join(out["text"]))
    return "\n".join(chunks)


def test_thesis_notebook_writes_every_figure_it_has_runs_for(tmp_path):
    from utils.figures import FIGURE_NAMES
    nb, _ = execute(ROOT / "thesis_notebook.ipynb", {"FIGURES": str(tmp_path)}, output=tmp_path / "out.ipynb")
    text = outputs_text(nb)
    skipped = set(re.findall(r"^skipped (\S+):", text, flags=re.M))
    for name in FIGURE_NAMES:
        if name in skipped:
            continue
        for ext in ("pdf", "png"):
            file = tmp_path / f"{name}.{ext}"
            assert file.is_file() and file.stat().st_size > 1000, f"{file.name} missing or empty"
    assert len(skipped) < len(FIGURE_NAMES)


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
