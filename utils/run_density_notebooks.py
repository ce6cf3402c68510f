"""Execute the per-density analysis notebooks once per density, papermill-style.

``python -m utils.run_density_notebooks [--densities 2 5 10 20 50] [--results R] [--figures F] [NOTEBOOKS]``

For each notebook (default ``notebooks/fc_analysis.ipynb`` and ``notebooks/resnet20_analysis.ipynb``)
and density D, a cell tagged ``injected-parameters`` setting ``DENSITY = D`` (and ``RESULTS`` /
``FIGURES`` when given) is inserted right after the cell tagged ``parameters``; the notebook is
executed with nbclient from the repository root and written to
``notebooks/executed/<stem>_d<D>.ipynb``.  The source notebooks are not modified.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ("notebooks/fc_analysis.ipynb", "notebooks/resnet20_analysis.ipynb")
DENSITIES = (2, 5, 10, 20, 50)
OUT_DIR = ROOT / "notebooks" / "executed"
#: the analyses are many small matrix products; one BLAS/OpenMP thread avoids contention
THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def inject(nb, params: dict):
    """Insert a cell tagged ``injected-parameters`` assigning ``params`` after the ``parameters`` cell.

    Raises ``ValueError`` if the notebook has no cell tagged ``parameters``.
    """
    import nbformat
    index = next((i for i, c in enumerate(nb.cells)
                  if c.cell_type == "code" and "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if index is None:
        raise ValueError("notebook has no cell tagged 'parameters'")
    source = "# Parameters\n" + "\n".join(f"{k} = {v!r}" for k, v in params.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    nb.cells.insert(index + 1, cell)
    return nb


def execute(path: str | os.PathLike, params: dict, out: str | os.PathLike, timeout: int = 1800) -> float:
    """Run the notebook ``path`` with ``params`` injected and write the executed copy to ``out``.

    Returns the wall time in seconds; raises ``RuntimeError`` naming the failing cell.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    for key, value in THREAD_ENV.items():
        os.environ.setdefault(key, value)  # inherited by the kernel
    nb = inject(nbformat.read(path, as_version=4), params)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}})
    start = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as exc:
        index = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"
                      and any(o.get("output_type") == "error" for o in c.get("outputs", []))), "?")
        raise RuntimeError(f"{path} with {params}: cell {index} failed: "
                           f"{str(exc).strip().splitlines()[-1]}") from None
    finally:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out)
    return time.perf_counter() - start


def run(notebooks=NOTEBOOKS, densities=DENSITIES, results: str | None = None, figures: str | None = None,
        out_dir: str | os.PathLike = OUT_DIR) -> list[Path]:
    """Execute every notebook at every density; returns the executed copies
    (``<out_dir>/<stem>_d<D>.ipynb``)."""
    written = []
    for name in notebooks:
        path = Path(name) if Path(name).is_absolute() else ROOT / name
        for d in densities:
            params = {"DENSITY": d}
            if results is not None:
                params["RESULTS"] = results
            if figures is not None:
                params["FIGURES"] = figures
            out = Path(out_dir) / f"{path.stem}_d{d:g}.ipynb"
            print(f"{path.relative_to(ROOT)} at {d}% ...", flush=True)
            seconds = execute(path, params, out)
            print(f"  wrote {out} in {seconds:.0f} s", flush=True)
            written.append(out)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", default=list(NOTEBOOKS), help="notebooks (default: FC and ResNet-20)")
    parser.add_argument("--densities", nargs="+", type=float, default=list(DENSITIES),
                        help="densities in %% remaining (default 2 5 10 20 50)")
    parser.add_argument("--results", help="runs store root (default: the notebook's RESULTS)")
    parser.add_argument("--figures", help="figures directory (default: the notebook's FIGURES)")
    parser.add_argument("--out-dir", default=str(OUT_DIR), help="where executed copies go")
    args = parser.parse_args(argv)
    densities = [int(d) if float(d).is_integer() else d for d in args.densities]
    try:
        run(args.notebooks, densities, args.results, args.figures, args.out_dir)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
