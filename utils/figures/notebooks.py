"""Execute the notebooks with nbclient: ``python -m utils.figures.notebooks [--fast] [NOTEBOOKS]``.

Each notebook runs top to bottom with the repository root as its working directory and
is written back in place, so committed notebooks carry real outputs.  The per-density
analysis notebooks (``fc_analysis``, ``resnet20_analysis``) then run once per density,
papermill-style (``DENSITY = <fraction>`` injected after the cell tagged ``parameters``), into
``notebooks/executed/<stem>_d<percent>.ipynb``.  A failing cell stops the run with the
notebook's name and the cell's number.  ``--fast`` runs the reduced set used in CI.

The kernels talk to this process over IPC sockets in a private temporary directory, not TCP:
local-only, and ipykernel has no unencrypted-TCP warning to print, so ``make figures`` prints
only its progress lines and the notebooks' own outputs stay in the notebooks.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from ..files import write_atomic
from .store import DENSITIES

ROOT = Path(__file__).resolve().parents[2]
#: notebooks in execution order
NOTEBOOKS = ["thesis_notebook.ipynb", "notebooks/quickstart.ipynb", "notebooks/plot_acc.ipynb",
             "notebooks/feature_maps_and_conv_kernels.ipynb", "notebooks/random_fc_analysis.ipynb",
             "notebooks/fc_analysis.ipynb", "notebooks/resnet20_analysis.ipynb",
             "notebooks/deepr_and_dnw.ipynb", "notebooks/thesis_vs_corrected.ipynb",
             "notebooks/graphs_and_sparse_inference.ipynb", "notebooks/train_grid.ipynb"]
FAST = ["thesis_notebook.ipynb", "notebooks/plot_acc.ipynb", "notebooks/fc_analysis.ipynb"]
DENSITY_NOTEBOOKS = ["notebooks/fc_analysis.ipynb", "notebooks/resnet20_analysis.ipynb"]
EXECUTED_DIR = ROOT / "notebooks" / "executed"


def inject(nb, parameters: dict):
    """Insert a cell tagged ``injected-parameters`` assigning ``parameters`` right after the cell
    tagged ``parameters`` (as papermill), replacing an earlier injected cell. Returns ``nb``.

    Raises:
        ValueError: the notebook has no cell tagged ``parameters``.
    """
    import nbformat
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    index = next((i for i, c in enumerate(nb.cells)
                  if c.cell_type == "code" and "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if index is None:
        raise ValueError("the notebook has no cell tagged 'parameters'")
    source = ("# Parameters injected by utils.figures.notebooks\n"
              + "\n".join(f"{k} = {v!r}" for k, v in parameters.items()))
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))
    return nb


def _client(nb, timeout: int, socket_dir: str):
    """An nbclient over a python3 kernel reached by IPC sockets under ``socket_dir``."""
    from nbclient import NotebookClient
    from traitlets.config import Config
    config = Config({"KernelManager": {"transport": "ipc", "ip": os.path.join(socket_dir, "kernel")}})
    return NotebookClient(nb, timeout=timeout, kernel_name="python3", config=config,
                          resources={"metadata": {"path": str(ROOT)}})


def execute(path: str | os.PathLike, parameters: dict | None = None, output: str | os.PathLike | None = None,
            timeout: int = 1800):
    """Run one notebook top to bottom and write it to ``output`` (default: in place).

    Args:
        path: the notebook.
        parameters: values overriding its ``parameters`` cell (injected after it).
        output: where to write the executed notebook (written even when a cell fails).
        timeout: seconds per cell.

    Returns:
        (executed notebook, seconds).

    Raises:
        RuntimeError: naming the notebook and the failing cell.
    """
    import nbformat
    from nbclient.exceptions import CellExecutionError
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    if parameters:
        inject(nb, parameters)
    socket_dir = tempfile.mkdtemp(prefix="notebook-kernel-")
    start = time.perf_counter()
    failure = None
    try:
        _client(nb, timeout, socket_dir).execute()
    except CellExecutionError as exc:
        index = next((i for i, c in enumerate(nb.cells) if c.get("cell_type") == "code"
                      and any(o.get("output_type") == "error" for o in c.get("outputs", []))), "?")
        failure = RuntimeError(f"{path.name}{' with ' + str(parameters) if parameters else ''}: cell {index} "
                               f"failed: {str(exc).strip().splitlines()[-1]}")
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)
    # written when every cell ran or one failed (its error shows where); an interrupted or killed
    # run raises before this and leaves the previous notebook.  Atomic: never half a file.
    text = nbformat.writes(nb)
    write_atomic(Path(output or path), (text if text.endswith("\n") else text + "\n").encode())  # as nbformat.write
    if failure is not None:
        raise failure
    return nb, time.perf_counter() - start


def skipped_figures(nb) -> list[str]:
    """Names of the figures a notebook reported as skipped (its ``skipped <name>: why`` lines)."""
    lines = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text = out.get("text", "")
            lines += "".join(text).splitlines() if not isinstance(text, str) else text.splitlines()
    return [line.split()[1].rstrip(":") for line in lines if line.startswith("skipped ") and len(line.split()) > 1]


def run_densities(notebooks=DENSITY_NOTEBOOKS, densities=DENSITIES, out_dir=EXECUTED_DIR) -> list[Path]:
    """Execute each per-density notebook at every density (fractions) into ``<out_dir>/<stem>_d<percent>.ipynb``."""
    from .style import percent
    written = []
    for name in notebooks:
        path = ROOT / name
        for d in densities:
            out = Path(out_dir) / f"{path.stem}_d{percent(d)}.ipynb"
            print(f"  {name} at {percent(d)} % ...", flush=True)
            _, seconds = execute(path, {"DENSITY": d}, out)
            print(f"  wrote {out.relative_to(ROOT)} in {seconds:.0f} s", flush=True)
            written.append(out)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="only the reduced CI set, no per-density runs")
    parser.add_argument("names", nargs="*", help="notebook paths (default: all, then the per-density runs)")
    args = parser.parse_args(argv)
    names = args.names or (FAST if args.fast else NOTEBOOKS)
    for name in args.names:
        if not (ROOT / name).is_file() or not name.endswith(".ipynb"):
            print(f"error: {name}: no such notebook (a .ipynb path, relative to {ROOT} or absolute)", file=sys.stderr)
            return 2
    start, began, skipped, runs = time.perf_counter(), time.time(), [], 0
    try:
        for i, name in enumerate(names, 1):
            print(f"[{i}/{len(names)}] {name} ...", flush=True)
            nb, seconds = execute(ROOT / name)
            skipped += skipped_figures(nb)
            print(f"[{i}/{len(names)}] {name} done in {seconds:.0f} s", flush=True)
        if not args.names and not args.fast:
            print("per-density analysis notebooks:", flush=True)
            runs = len(run_densities())
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    figures = sum(1 for f in (ROOT / "figures").glob("*.png") if f.stat().st_mtime >= began)
    print(f"done: {len(names)} notebooks{f' + {runs} per-density runs' if runs else ''} in "
          f"{(time.perf_counter() - start) / 60:.1f} min; {figures} figures written to figures/"
          + (f"; {len(set(skipped))} skipped for runs not stored yet ({', '.join(sorted(set(skipped))[:3])}"
             f"{', …' if len(set(skipped)) > 3 else ''}: the notebooks name the missing runs)" if skipped else ""),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
