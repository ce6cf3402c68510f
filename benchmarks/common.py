"""Shared pieces of the benchmark scripts: data, models, optimiser settings, thread setup."""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

# (model, dataset, engine TrainConfig of the thesis / cpu profile)
CASES = {
    "fc": ("mnist", dict(lr=0.1, momentum=0.0, weight_decay=0.0)),
    "resnet20": ("cifar10", dict(lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)),
}
SPARSE_DENSITY = 0.02


def load_data(name: str, data_dir: str | None, n_train: int, n_test: int, seed: int = 0):
    """(Dataset subset, "real"/"synthetic")."""
    from utils.engine.data import DATASETS, Dataset, dataset_files_present, load_dataset
    for candidate in [data_dir, os.environ.get("SPARSE_DATA_DIR"), str(ROOT / "data")]:
        if candidate and dataset_files_present(name, Path(candidate)):
            data = load_dataset(name, candidate, download=False)
            return data.subset(n_train, n_test), "real"
    info = DATASETS[name]
    g = torch.Generator().manual_seed(seed)
    make = lambda n: torch.randint(0, 256, (n, *info.shape), generator=g, dtype=torch.uint8)
    label = lambda n: torch.randint(0, 10, (n,), generator=g)
    return Dataset(info, make(n_train), label(n_train), make(n_test), label(n_test)), "synthetic"


def build(model_name: str, sparse: bool, seed: int = 21):
    from models import build_model
    from pruners import get_method
    from utils.engine.seeding import seed_init
    seed_init(seed)
    model = build_model(model_name)
    if sparse:
        shape = (1, 28, 28) if model_name == "fc" else (3, 32, 32)
        get_method("random").prune(model, SPARSE_DENSITY, seed=seed, data_shape=shape)
    return model


def use_threads(requested: int | None) -> int:
    """Set the torch thread count (default: every core the process may use) for this process
    and for the engine (``$SPARSE_NUM_THREADS``); returns it."""
    from utils.engine.train import available_cores
    threads = requested or available_cores()
    os.environ["SPARSE_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    return threads


def machine_line(threads: int) -> str:
    """One header line: torch version, threads, cores and the load average, flagged when busy.

    The 1-minute load average lags: right after another benchmark it still shows that one."""
    load = os.getloadavg()[0]
    busy = load > 0.5 * (os.cpu_count() or 1)
    from utils.engine.train import cpu_has_native_bf16
    return (f"torch {torch.__version__}, {threads} thread(s), {os.cpu_count()} CPU(s), "
            f"{torch.backends.cpu.get_cpu_capability()}, native bf16 {'yes' if cpu_has_native_bf16() else 'no'}, "
            f"load average {load:.1f}"
            f"{'  [MACHINE BUSY: timings distorted]' if busy else ''}")
