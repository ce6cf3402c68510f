"""Re-evaluate stored runs: the final top-1 each run recorded against a fresh evaluation of its
stored weights on the test set it recorded, in the precision it trained in.

What ``python -m utils.cli verify --evaluate`` runs; a stored run whose numbers come back is one
whose weights, masks, data and evaluation are what its record says.

>>> data = load_dataset("cifar10", "data", download=False)
>>> check = reevaluate(results.load_run_dir("results/resnet20_cifar10/dense/d100/s21"), data)
>>> round(check.difference, 2)
0.0
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from utils.engine.data import Dataset
from utils.errors import DataError
from utils.runs.results import Run


@dataclass(frozen=True)
class Reevaluation:
    """``recorded``: the run's last ``history.csv`` top-1 (%); ``fresh``: the same evaluation now."""
    recorded: float
    fresh: float
    bf16: bool

    @property
    def difference(self) -> float:
        """fresh − recorded, in points."""
        return self.fresh - self.recorded


def recorded_test_data(run: Run, data: Dataset) -> Dataset:
    """``data`` made into the test set ``run`` was evaluated on: re-encoded as its training data
    was (the image-quality experiment) and cut to its recorded test size.  Raises
    :class:`~utils.errors.DataError` when the test arrays differ from the ones it recorded (another
    copy of the dataset, or a run tested on a validation split)."""
    record = run.info.get("data") or {}
    if run.info.get("dataset") not in (None, data.info.name):
        raise DataError(f"the run was tested on {run.info['dataset']}, the data given is {data.info.name}")
    if record.get("reencoding"):
        data = data.reencoded(record["reencoding"]["quality"])
    if record.get("test_size") is not None and record["test_size"] < len(data.test_y):
        data = data.subset(n_test=record["test_size"])
    expected = record.get("test_sha256")
    if expected is not None and (found := data.digest(("test",))["test"]) != expected:
        raise DataError(f"the run was tested on {record.get('copy', 'another copy')} (test digest {expected}); "
                        f"the data given is {data.provenance()['copy']} (test digest {found})")
    return data


def reevaluate(run: Run, data: Dataset, device: torch.device | str = "cpu", bf16: bool | None = None) -> Reevaluation:
    """Evaluate ``run``'s final network on the test set it recorded (:func:`recorded_test_data`), as
    training evaluated it (:meth:`Run.precision`; ``bf16`` overrides the autocast, e.g. fp32 on a
    CPU that only emulates bf16), with its training batch settings."""
    from utils.engine.train import TrainConfig, evaluate
    data = recorded_test_data(run, data)
    trained_bf16, channels_last = run.precision()
    bf16 = trained_bf16 if bf16 is None else bf16
    model = run.model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    batch_size = TrainConfig.from_dict(run.info["config"]["train"]).eval_batch_size if "config" in run.info else None
    with torch.no_grad():
        fresh = evaluate(model, data.test_x, data.test_y, data, batch_size, device, bf16, channels_last)
    return Reevaluation(float(run.history["top1"].iloc[-1]), fresh["top1"], bf16)
