import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# Tests train tiny nets: one intra-op thread is as fast and immune to a busy machine.
os.environ.setdefault("SPARSE_NUM_THREADS", "1")
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["SPARSE_NUM_THREADS"]))

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED_DATA = ROOT.parent / "shared" / "data"


@contextmanager
def built_once(tmp_path_factory, name: str) -> Iterator[Path]:
    """A directory ``name`` that one process of the test run builds and every other reuses.

    Alone, a fresh temporary directory.  Under pytest-xdist (``make test`` runs a worker per core), the
    workers share the run's base temporary directory: the first to take the lock builds, the
    others wait for it and then find it complete (the caller builds only what is missing)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None:
        yield tmp_path_factory.mktemp(name)
        return
    from filelock import FileLock
    shared = tmp_path_factory.getbasetemp().parent / name
    with FileLock(f"{shared}.lock"):
        shared.mkdir(exist_ok=True)
        yield shared


@pytest.fixture(scope="session")
def real_data_dir(tmp_path_factory):
    """A data directory in the official layouts, copied from ../shared/data; skips if absent.

    Honours $SPARSE_DATA_DIR when it already holds the files (no copy needed).
    """
    from utils.engine.data import dataset_files_present
    env = os.environ.get("SPARSE_DATA_DIR")
    if env and dataset_files_present("mnist", Path(env)):
        return Path(env)
    local = ROOT / "data"
    if dataset_files_present("mnist", local):
        return local
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip("no MNIST copy available (../shared/data missing)")
    dest = tmp_path_factory.mktemp("data")
    shutil.copytree(SHARED_DATA / "mnist", dest / "mnist")
    return dest


@pytest.fixture(scope="session")
def cifar_data_dir(tmp_path_factory):
    """A data directory holding cifar-10-batches-py: $SPARSE_DATA_DIR or data/ when they hold it,
    else built from ../shared/data's JPEG copy (make_cifar10.py, seconds); skips if absent."""
    import subprocess

    from utils.engine.data import dataset_files_present
    for candidate in (os.environ.get("SPARSE_DATA_DIR"), ROOT / "data"):
        if candidate and dataset_files_present("cifar10", Path(candidate)):
            return Path(candidate)
    script = SHARED_DATA / "make_cifar10.py"
    if not script.is_file():
        pytest.skip("no CIFAR-10 copy available (../shared/data missing)")
    with built_once(tmp_path_factory, "cifar") as dest:
        if not dataset_files_present("cifar10", dest):
            subprocess.run([sys.executable, str(script), str(dest)], check=True, capture_output=True)
    return dest


THESIS_ARCHIVE = SHARED_DATA / "thesis_results.tar.xz"


@pytest.fixture(scope="session")
def thesis_store(tmp_path_factory):
    """The thesis's own networks imported into a runs store: $SPARSE_THESIS_DIR or data/thesis when
    an import is complete there, else imported from ../shared/data's archive (≈1.5 min); skips if
    neither exists."""
    from utils.runs.thesis import import_thesis, is_imported, thesis_root
    if is_imported(thesis_root()):
        return thesis_root()
    if not THESIS_ARCHIVE.is_file():
        pytest.skip("no copy of the thesis results (../shared/data/thesis_results.tar.xz missing)")
    with built_once(tmp_path_factory, "thesis") as root:
        if not is_imported(root):
            import_thesis(THESIS_ARCHIVE, root, progress=False)
    return root
