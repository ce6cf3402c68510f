"""The small public API re-exported by ``utils``: train, save and load in one call each.

>>> import models, pruners, utils
>>> model = pruners.synflow(models.fc(), density=0.05)
>>> history = utils.train(model, "mnist", epochs=2)
>>> utils.save_run("runs/syn5", model, history)
>>> model, history, info, path = utils.load_run("runs/syn5")
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import pandas as pd
from torch import nn

from utils.engine.data import DATASETS, Dataset, load_dataset
from utils.engine.train import TrainConfig
from utils.engine.train import train as _train_engine
from utils.runs import results

from .errors import DataError, UserError


def probe_dataset(name: str, root: str | os.PathLike | None = None, n_test: int = 100) -> Dataset:
    """A tiny dataset from the stored probe set (600 test images): the first 500 to train, the rest to test."""
    images, labels = results.load_probe(name, root)
    cut = len(labels) - n_test
    return Dataset(DATASETS[name], images[:cut], labels[:cut], images[cut:], labels[cut:])


def small_dataset(name: str = "mnist", n_train: int = 5000, n_test: int = 10000,
                  data_dir: str | os.PathLike | None = None,
                  probe_root: str | os.PathLike | None = None) -> tuple[Dataset, str]:
    """``(dataset, source)``: the first ``n_train``/``n_test`` images of a dataset already on disk
    (nothing is downloaded), else the stored probe set split 500/100 (:func:`probe_dataset`);
    ``source`` says which, in words."""
    try:
        data = load_dataset(name, data_dir, download=False)
    except DataError:
        data = probe_dataset(name, probe_root)
        return data, (f"{name.upper()} not found: stored probe set ({len(data.train_y)} train / "
                      f"{len(data.test_y)} test images)")
    return (data.subset(n_train, n_test),
            f"{name.upper()} ({n_train} train / {min(n_test, len(data.test_y))} test images)")


def resolve_data(data: str | Dataset, data_dir: str | os.PathLike | None = None,
                 fallback_to_probe: bool = True) -> Dataset:
    """A :class:`~utils.engine.data.Dataset` from a name (``"mnist"``, ``"cifar10"``) or a dataset.

    Reads (or downloads) the real dataset from ``data_dir``; if that fails and
    ``fallback_to_probe``, warns and uses the stored 600-image probe set instead.
    """
    if isinstance(data, Dataset):
        return data
    try:
        return load_dataset(data, data_dir)
    except DataError as exc:
        if not fallback_to_probe or data not in DATASETS:
            raise
        warnings.warn(f"{exc}; training on the stored 600-image probe set instead", stacklevel=2)
        return probe_dataset(data)


def train(model: nn.Module, data: str | Dataset, epochs: int, *, lr: float = 0.1, batch_size: int = 64,
          momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0,
          schedule: str = "constant", seed: int = 0, data_dir: str | os.PathLike | None = None,
          train_subset: int | None = None, progress: bool = True, **options) -> pd.DataFrame:
    """Train ``model`` in place and return its history (one row per epoch, row 0 before training).

    Args:
        model: a (masked) model; masked weights stay zero.
        data: ``"mnist"``, ``"cifar10"`` or a :class:`~utils.engine.data.Dataset`.
        epochs: number of epochs.
        lr, batch_size, momentum, nesterov, weight_decay, schedule: SGD settings
            (defaults: the thesis's FC protocol).
        seed: fixes the batch order and augmentation.
        data_dir: dataset directory (default ``$SPARSE_DATA_DIR`` or ``data/``).
        train_subset: use only the first N training images.
        progress: show a tqdm bar.
        **options: further :class:`~utils.engine.train.TrainConfig` fields (``milestones``, ``bf16``, ...).

    Returns:
        DataFrame ``epoch, phase, train_loss, test_loss, top1, top5, density, seconds``
        (accuracies in %, density a fraction).
    """
    dataset = resolve_data(data, data_dir)
    if train_subset:
        dataset = dataset.subset(train_subset)
    cfg = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, momentum=momentum, nesterov=nesterov,
                      weight_decay=weight_decay, schedule=schedule, **options)
    return _train_engine(model, dataset, cfg, seed=seed, progress=progress)


def save_run(path: str | os.PathLike, model: nn.Module, history: pd.DataFrame, *,
             init_model: nn.Module | None = None, overwrite: bool = False, **record) -> Path:
    """Store a trained model and its history in a run directory (atomic, checksummed).

    Args:
        path: the run directory to create.
        model: the trained model (``models.fc()`` / ``models.resnet20()`` family).
        history: its per-epoch history.
        init_model: optionally the model as training started.
        overwrite: replace an existing run at ``path``.
        **record: extra JSON facts for ``run.json`` (e.g. ``method="synflow"``, ``density_target=0.05``).

    Returns:
        the run directory, loadable with :func:`load_run`.
    """
    spec = getattr(model, "spec", None)
    if spec is None:
        raise UserError("save_run needs a model built by models.fc()/models.resnet20() (it has no .spec)")
    record = {"experiment": "custom", "method": "custom", "density_target": None, "seed": None, **record}
    return results.save_run(path, model=model, init_model=init_model, history=history, model_spec=spec,
                            record=record, overwrite=overwrite)


def load_run(experiment_or_path: str | os.PathLike, method: str | None = None,
             density: float | None = None, seed: int | None = None,
             root: str | os.PathLike | None = None) -> results.Run:
    """Load a stored run by directory (``load_run("runs/syn5")``) or by grid key
    (``load_run("fc_mnist", "synflow", 0.05, 21)``; density as a fraction).

    Returns:
        ``Run(model, history, info, path)``; checksums are verified, nothing is unpickled.
    """
    if method is None:
        return results.load_run_dir(experiment_or_path)
    return results.load_run(str(experiment_or_path), method, density, seed, root)


def scratch_dir(prefix: str = "sparse-runs-") -> Path:
    """A new empty temporary directory, for runs that are not kept (quickstart, smoke sweeps)."""
    import tempfile
    return Path(tempfile.mkdtemp(prefix=prefix))


def train_grid(config: dict, specs: list, root: str | os.PathLike, *, epochs: int | None = None,
               train_subset: int | None = None, max_runs: int | None = None, jobs: int = 1) -> list:
    """Train the runs of ``specs`` not stored under ``root`` yet (:func:`utils.runs.sweep.sweep`,
    resumable), optionally with fewer epochs or training images; returns the specs trained.

    Without the dataset (offline, not on disk) it prints one line saying so and trains nothing.
    """
    from utils.runs.experiment import Overrides
    from utils.runs.sweep import sweep
    overrides = Overrides(epochs=epochs, train_subset=train_subset)
    try:
        done = sweep(config, specs, root=root, overrides=overrides, max_runs=max_runs, jobs=jobs)
    except DataError as error:
        print(f"no dataset available, nothing trained: {error}")
        return []
    print(f"trained {len(done)} run(s)")
    return done
