"""Where the thesis's files come from, and how they are read safely.

A source is a clone of the thesis repository, an archive of it (``.tar.xz``, ``.tar.gz``,
``.zip``), or a download of the pinned commit (:func:`open_source`).  Checkpoints are read with
``torch.load(weights_only=True)`` (:func:`read_state`), the pandas pickles through
:class:`FrameUnpickler` (:func:`read_frame`), which admits only the names that rebuild a plain
DataFrame.  :mod:`utils.runs.thesis` turns what is read into runs.

>>> FrameUnpickler.ALLOWED >= {("pandas.core.frame", "DataFrame")}
True
"""
from __future__ import annotations

import io
import json
import os
import pickle
import re
import shutil
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor

from utils.errors import DataError, UserError
from utils.progress import tqdm

REPOSITORY = "tjayada/sparse_network_analysis"
COMMIT = "7548f2c6a4aeb158a36cb2455f75c3e3151b0090"
ARCHIVE_URL = f"https://github.com/{REPOSITORY}/archive/{COMMIT}.tar.gz"
ARCHIVE_NAME = f"sparse_network_analysis-{COMMIT}.tar.gz"
MANIFEST_FILE = Path(__file__).with_name("thesis_manifest.json")


def thesis_root() -> Path:
    """Where imported thesis runs live: ``$SPARSE_THESIS_DIR``, else ``data/thesis`` in the
    repository (git-ignored, like the datasets)."""
    env = os.environ.get("SPARSE_THESIS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "data" / "thesis"


def is_imported(root: str | os.PathLike | None = None) -> bool:
    """Whether an import is complete under ``root`` (its marker file is written last)."""
    return (Path(root or thesis_root()) / "IMPORTED.json").is_file()


# ----------------------------------------------------------------------------- safe reading
class FrameUnpickler(pickle.Unpickler):
    """Reads the thesis's pickled DataFrames and nothing else.

    Only the names pandas and numpy use to rebuild a DataFrame of numbers and strings are
    admitted (``numpy.core`` is read as ``numpy._core``); any other global is refused with
    :class:`pickle.UnpicklingError`, so a pickle cannot run code.
    """

    ALLOWED = {
        ("pandas.core.frame", "DataFrame"),
        ("pandas.core.internals.managers", "BlockManager"),
        ("pandas._libs.internals", "_unpickle_block"),
        ("pandas.core.indexes.base", "_new_Index"),
        ("pandas.core.indexes.base", "Index"),
        ("pandas.core.indexes.range", "RangeIndex"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("builtins", "slice"),
    }

    def find_class(self, module: str, name: str):
        module = re.sub(r"^numpy\.core\b", "numpy._core", module)
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not a DataFrame rebuild name")
        return super().find_class(module, name)


def read_frame(path: str | os.PathLike) -> pd.DataFrame:
    """A pickled DataFrame through :class:`FrameUnpickler` (never plain ``pickle.load``)."""
    frame = FrameUnpickler(io.BytesIO(Path(path).read_bytes())).load()
    if not isinstance(frame, pd.DataFrame):
        raise pickle.UnpicklingError(f"{path} does not hold a DataFrame")
    return frame


def read_state(path: str | os.PathLike) -> dict[str, Tensor]:
    """A thesis checkpoint (saved on a GPU) as a CPU state dict, tensors only."""
    return torch.load(path, weights_only=True, map_location="cpu")


def manifest() -> dict[str, str]:
    """``{path under the repository: sha256}`` of every thesis file the import reads."""
    return json.loads(MANIFEST_FILE.read_text())


# ----------------------------------------------------------------------------- sources
def _results_dir(tree: Path) -> Path | None:
    """The repository root holding ``All_Results/`` at or up to two levels below ``tree``."""
    for candidate in [tree, *tree.glob("*"), *tree.glob("*/*")]:
        if (candidate / "All_Results").is_dir():
            return candidate
    return None


def _extract(archive: Path, dest: Path, progress: bool = True) -> Path:
    """Extract the parts of the repository the import reads (All_Results, Figures, Configs)."""
    wanted = re.compile(r"(^|/)(All_Results|Figures|Configs)/")
    name = archive.name
    if name.endswith(".zip"):
        with zipfile.ZipFile(archive) as z:
            members = [m for m in z.namelist() if wanted.search(m)]
            for member in tqdm(members, desc=f"extract {name}", unit="file", disable=not progress):
                z.extract(member, dest)
    elif name.endswith((".tar.xz", ".tar.gz", ".tgz", ".tar")):
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and wanted.search(m.name)]
            for member in tqdm(members, desc=f"extract {name}", unit="file", disable=not progress):
                tar.extract(member, dest, filter="data")
    else:
        raise UserError(f"{archive}: not a clone, .zip, .tar.gz or .tar.xz of {REPOSITORY}")
    root = _results_dir(dest)
    if root is None:
        raise UserError(f"{archive} holds no All_Results/ folder: is it an archive of {REPOSITORY}?")
    return root


def _download(dest_dir: Path) -> Path:
    from utils.engine.data import _download as download_file
    archive = dest_dir / ARCHIVE_NAME
    if not archive.is_file():
        try:
            download_file(ARCHIVE_URL, archive)
        except OSError as exc:
            raise DataError(
                f"the thesis results are not here and could not be downloaded ({exc}). Download "
                f"{ARCHIVE_URL} and run: python -m utils.cli import-thesis {archive}") from None
    return archive


@dataclass
class Source:
    """A readable copy of the thesis repository; ``cleanup`` removes a temporary extraction."""
    root: Path
    temporary: Path | None = None

    def cleanup(self) -> None:
        if self.temporary is not None:
            shutil.rmtree(self.temporary, ignore_errors=True)


def open_source(source: str | os.PathLike | None, download_dir: str | os.PathLike | None = None,
                progress: bool = True) -> Source:
    """A clone (directory), an archive (.tar.xz/.tar.gz/.zip) or ``None``: download the pinned
    commit's archive into ``download_dir`` (default ``data/``) first."""
    if source is None:
        source = _download(Path(download_dir or thesis_root().parent))
    path = Path(source)
    if not path.exists():
        raise UserError(f"{path} does not exist: give a clone or an archive of {REPOSITORY}")
    if path.is_dir():
        root = _results_dir(path)
        if root is None:
            raise UserError(f"{path} holds no All_Results/ folder: is it a clone of {REPOSITORY}?")
        return Source(root)
    tmp = Path(tempfile.mkdtemp(prefix="thesis-import-"))
    try:
        return Source(_extract(path, tmp, progress), tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
