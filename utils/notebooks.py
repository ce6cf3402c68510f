"""Execute the notebooks in place with nbclient: ``python -m utils.notebooks [--fast] [NAMES]``.

Each notebook runs top to bottom with the repository root as its working directory,
so committed notebooks carry real outputs.  A failing cell stops the run with the
notebook's name and the cell's number.  ``--fast`` runs the reduced set used in CI.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: notebooks in execution order; FAST ones run in CI too
NOTEBOOKS = ["thesis_notebook.ipynb"]
FAST = ["thesis_notebook.ipynb"]


def discover(fast: bool = False) -> list[Path]:
    """Notebooks to run: the ordered list, then every other notebook under ``notebooks/``."""
    names = FAST if fast else NOTEBOOKS + sorted(
        str(p.relative_to(ROOT)) for p in (ROOT / "notebooks").glob("*.ipynb")
        if str(p.relative_to(ROOT)) not in NOTEBOOKS)
    return [ROOT / n for n in names if (ROOT / n).is_file()]


def inject_parameters(nb, parameters: dict) -> None:
    """Insert a cell assigning ``parameters`` right after the cell tagged ``parameters`` (as papermill)."""
    index = next((i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])),
                 None)
    if index is None:
        raise ValueError("the notebook has no cell tagged 'parameters'")
    import nbformat
    source = "# Parameters injected by utils.notebooks\n" + "\n".join(f"{k} = {v!r}" for k, v in parameters.items())
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))


def execute(path: Path, parameters: dict | None = None, output: Path | None = None,
            timeout: int = 1200):
    """Run one notebook top to bottom and write it to ``output`` (default: in place).

    Args:
        path: the notebook.
        parameters: values overriding its ``parameters`` cell (injected after it).
        output: where to write the executed notebook.
        timeout: seconds per cell.

    Returns:
        (executed notebook, seconds).

    Raises:
        RuntimeError: naming the notebook and the failing cell.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    nb = nbformat.read(path, as_version=4)
    if parameters:
        inject_parameters(nb, parameters)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}})
    start = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as exc:
        index = next((i for i, c in enumerate(nb.cells) if c.get("cell_type") == "code"
                      and any(o.get("output_type") == "error" for o in c.get("outputs", []))), "?")
        raise RuntimeError(f"{Path(path).name}: cell {index} failed: "
                           f"{str(exc).strip().splitlines()[-1]}") from None
    nbformat.write(nb, output or path)
    return nb, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="only the reduced CI set")
    parser.add_argument("names", nargs="*", help="notebook paths (default: all)")
    args = parser.parse_args(argv)
    paths = [ROOT / n for n in args.names] if args.names else discover(args.fast)
    if not paths:
        print("no notebooks to run yet: the figure notebooks land with the notebooks issue")
        return 0
    for i, path in enumerate(paths, 1):
        print(f"[{i}/{len(paths)}] {path.relative_to(ROOT)} ...", flush=True)
        try:
            _, seconds = execute(path)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"[{i}/{len(paths)}] {path.relative_to(ROOT)} done in {seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
