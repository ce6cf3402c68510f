"""utils.runs.reevaluate: the test set a stored run recorded, rebuilt from the data given."""
from types import SimpleNamespace

import pytest
import torch

from utils.engine.data import DATASETS, Dataset
from utils.errors import DataError
from utils.runs.reevaluate import recorded_test_data


def _cifar(n_test=3):
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4 + n_test, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.arange(4 + n_test) % 10
    return Dataset(DATASETS["cifar10"], images[:4], labels[:4], images[4:], labels[4:], copy="jpeg-q75")


def _run(**data):
    return SimpleNamespace(info={"dataset": "cifar10", "data": data})


def test_a_reencoded_run_is_tested_on_the_same_reencoding():
    source = _cifar()
    expected = source.reencoded(50).digest()["test"]
    rebuilt = recorded_test_data(_run(test_sha256=expected, reencoding={"quality": 50}), source)
    assert rebuilt.copy == "jpeg-q75 re-encoded at q50" and rebuilt.digest()["test"] == expected
    with pytest.raises(DataError, match="the data given is jpeg-q75 re-encoded at q30"):
        recorded_test_data(_run(test_sha256=expected, copy="jpeg-q75 re-encoded at q50", reencoding={"quality": 30}),
                     source)


def test_a_run_tested_on_fewer_images_gets_the_first_of_them():
    source = _cifar()
    expected = source.subset(n_test=2).digest()["test"]
    rebuilt = recorded_test_data(_run(test_sha256=expected, test_size=2), source)
    assert len(rebuilt.test_y) == 2 and rebuilt.digest()["test"] == expected


def test_a_run_of_another_dataset_or_without_a_data_record():
    source = _cifar()
    with pytest.raises(DataError, match="the run was tested on mnist, the data given is cifar10"):
        recorded_test_data(SimpleNamespace(info={"dataset": "mnist"}), source)
    # runs stored before the data record: nothing to check against, the data is used as given
    assert recorded_test_data(SimpleNamespace(info={"dataset": "cifar10"}), source) is source
