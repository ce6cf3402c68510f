"""Execute the notebooks with nbclient: ``python -m utils.notebooks [--fast] [NOTEBOOKS]``.

Each notebook runs top to bottom with the repository root as its working directory and
is written back in place, so committed notebooks carry real outputs.  The per-density
analysis notebooks (``fc_analysis``, ``resnet20_analysis``) then run once per density,
papermill-style (``DENSITY = D`` injected after the cell tagged ``parameters``), into
``notebooks/executed/<stem>_d<D>.ipynb``.  A failing cell stops the run with the
notebook's name and the cell's number.  ``--fast`` runs the reduced set used in CI.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: notebooks in execution order
NOTEBOOKS = ["thesis_notebook.ipynb", "notebooks/quickstart.ipynb", "notebooks/plot_acc.ipynb",
             "notebooks/feature_maps_and_conv_kernels.ipynb", "notebooks/random_fc_analysis.ipynb",
             "notebooks/fc_analysis.ipynb", "notebooks/resnet20_analysis.ipynb",
             "notebooks/deepr_and_dnw.ipynb", "notebooks/thesis_vs_corrected.ipynb",
             "notebooks/graphs_and_sparse_inference.ipynb", "notebooks/train_grid.ipynb"]
FAST = ["thesis_notebook.ipynb", "notebooks/plot_acc.ipynb", "notebooks/fc_analysis.ipynb"]
DENSITY_NOTEBOOKS = ["notebooks/fc_analysis.ipynb", "notebooks/resnet20_analysis.ipynb"]
DENSITIES = (2, 5, 10, 20, 50)
EXECUTED_DIR = ROOT / "notebooks" / "executed"
#: the analyses are many small matrix products: one BLAS/OpenMP thread per kernel avoids contention
THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


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
    source = "# Parameters injected by utils.notebooks\n" + "\n".join(f"{k} = {v!r}" for k, v in parameters.items())
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))
    return nb


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
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    for key, value in THREAD_ENV.items():
        os.environ.setdefault(key, value)  # inherited by the kernel
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    if parameters:
        inject(nb, parameters)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}})
    start = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as exc:
        index = next((i for i, c in enumerate(nb.cells) if c.get("cell_type") == "code"
                      and any(o.get("output_type") == "error" for o in c.get("outputs", []))), "?")
        raise RuntimeError(f"{path.name}{' with ' + str(parameters) if parameters else ''}: cell {index} "
                           f"failed: {str(exc).strip().splitlines()[-1]}") from None
    finally:
        output = Path(output or path)
        output.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, output)
    return nb, time.perf_counter() - start


def run_densities(notebooks=DENSITY_NOTEBOOKS, densities=DENSITIES, out_dir=EXECUTED_DIR) -> list[Path]:
    """Execute each per-density notebook at every density into ``<out_dir>/<stem>_d<D>.ipynb``."""
    written = []
    for name in notebooks:
        path = ROOT / name
        for d in densities:
            out = Path(out_dir) / f"{path.stem}_d{d:g}.ipynb"
            print(f"  {name} at {d:g} % ...", flush=True)
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
    try:
        for i, name in enumerate(names, 1):
            print(f"[{i}/{len(names)}] {name} ...", flush=True)
            _, seconds = execute(ROOT / name)
            print(f"[{i}/{len(names)}] {name} done in {seconds:.0f} s", flush=True)
        if not args.names and not args.fast:
            print("per-density analysis notebooks:", flush=True)
            run_densities()
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
