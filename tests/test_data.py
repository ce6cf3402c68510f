"""Data parsing on tiny fixtures written here, bad files, augmentation, batch order."""
import datetime
import gzip
import pickle

import numpy as np
import pytest
import torch

from utils.engine import data as D
from utils.errors import DataError


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_tiny_mnist(root, n_train=20, n_test=10, gz=True):
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    (root / "mnist").mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        raw = _idx(array)
        if gz:
            (root / "mnist" / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (root / "mnist" / stem).write_bytes(raw)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_tiny_mnist_parses_exactly(tmp_path, gz):
    arrays = write_tiny_mnist(tmp_path, gz=gz)
    ds = D.load_mnist(tmp_path, download=False, verify=False)
    assert ds.train_x.dtype == torch.uint8 and ds.train_x.shape == (20, 1, 28, 28)
    assert np.array_equal(ds.train_x[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert np.array_equal(ds.test_y.numpy(), arrays["t10k-labels-idx1-ubyte"])


def test_mnist_checksum_rejects_wrong_files(tmp_path):
    write_tiny_mnist(tmp_path)
    with pytest.raises(DataError, match="md5"):
        D.load_mnist(tmp_path, download=False)


def test_truncated_mnist_is_a_clear_error(tmp_path):
    write_tiny_mnist(tmp_path, gz=False)
    path = tmp_path / "mnist" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.*truncated"):
        D.load_mnist(tmp_path, download=False, verify=False)


def test_missing_files_offline_names_expected_files(tmp_path, monkeypatch):
    def offline(url, dest):
        raise OSError("network unreachable")
    monkeypatch.setattr(D, "_download", offline)
    with pytest.raises(DataError) as err:
        D.load_mnist(tmp_path)
    message = str(err.value)
    assert "train-images-idx3-ubyte.gz" in message and str(tmp_path / "mnist") in message
    assert "\n" not in message
    with pytest.raises(DataError, match="data_batch_1"):
        D.load_cifar10(tmp_path)
    assert not list(tmp_path.rglob("*.part"))


def write_tiny_cifar(root, n=4):
    out = root / "cifar-10-batches-py"
    out.mkdir(parents=True)
    rng = np.random.default_rng(1)
    batches = {}
    for name in D.CIFAR10_FILES:
        batch = {b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
                 b"labels": rng.integers(0, 10, n).tolist(), b"filenames": [b"x"] * n}
        (out / name).write_bytes(pickle.dumps(batch, protocol=2))
        batches[name] = batch
    return batches


def test_tiny_cifar_parses_in_chw_order(tmp_path):
    batches = write_tiny_cifar(tmp_path)
    ds = D.load_cifar10(tmp_path, download=False)
    assert ds.train_x.shape == (20, 3, 32, 32) and ds.test_x.shape == (4, 3, 32, 32)
    first = batches["data_batch_1"][b"data"][0]
    assert np.array_equal(ds.train_x[0].numpy().reshape(-1), first)
    assert ds.train_y[:4].tolist() == batches["data_batch_1"][b"labels"]


def test_cifar_loader_refuses_arbitrary_pickled_objects(tmp_path):
    write_tiny_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({b"data": datetime.date(2020, 1, 1)}))
    with pytest.raises(DataError, match="test_batch.*refusing"):
        D.load_cifar10(tmp_path, download=False)


def test_data_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("SPARSE_DATA_DIR", raising=False)
    assert D.resolve_data_dir(None) == D.Path("data")
    monkeypatch.setenv("SPARSE_DATA_DIR", str(tmp_path))
    assert D.resolve_data_dir(None) == tmp_path
    assert D.resolve_data_dir("elsewhere") == D.Path("elsewhere")


def test_augment_is_a_padded_crop_with_optional_flip():
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    out = D.augment(x, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(64):
        found = any(torch.equal(out[i], cand) or torch.equal(out[i], cand.flip(-1))
                    for dy in range(9) for dx in range(9)
                    for cand in [padded[i, :, dy:dy + 32, dx:dx + 32]])
        assert found


def test_batches_are_deterministic_and_normalised():
    info = D.DATASETS["mnist"]
    x = torch.randint(0, 256, (100, 1, 28, 28), dtype=torch.uint8)
    y = torch.arange(100)
    run = lambda: [yb.tolist() for _, yb in D.batches(x, y, 32, info, shuffle=True,
                                                       generator=torch.Generator().manual_seed(5))]
    assert run() == run()
    assert sorted(sum(run(), [])) == list(range(100))
    xb, _ = next(D.batches(x, y, 100, info))
    expected = (x.float() / 255 - 0.1307) / 0.3081
    assert torch.allclose(xb, expected)


def test_validation_split_is_seeded_and_disjoint():
    info = D.DATASETS["mnist"]
    ds = D.Dataset(info, torch.zeros(50, 1, 28, 28, dtype=torch.uint8), torch.arange(50),
                   torch.zeros(5, 1, 28, 28, dtype=torch.uint8), torch.arange(5))
    a, b = D.split_validation(ds, 10, seed=3), D.split_validation(ds, 10, seed=3)
    assert torch.equal(a.val_indices, b.val_indices) and len(a.train_y) == 40
    assert set(a.val_y.tolist()).isdisjoint(a.train_y.tolist())


@pytest.mark.slow
def test_real_mnist(real_data_dir):
    ds = D.load_mnist(real_data_dir, download=False)
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert torch.bincount(ds.test_y).tolist()[0] == 980


def _cifar_like(n: int = 6, seed: int = 0) -> D.Dataset:
    g = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=32, mode="bilinear")
    x = (255 * smooth).to(torch.uint8)
    return D.Dataset(D.DATASETS["cifar10"], x, torch.arange(n), x.flip(0), torch.arange(n).flip(0), copy="jpeg-q75")


def test_psnr_is_ten_log10_of_peak_squared_over_mse():
    zeros = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    assert D.psnr(zeros, zeros + 1) == pytest.approx(48.13080360867909, abs=1e-12)    # MSE 1
    assert D.psnr(zeros, zeros) == float("inf")


def test_reencoded_copy_is_deterministic_named_and_recorded():
    data = _cifar_like()
    low, again, high = data.reencoded(20), data.reencoded(20), data.reencoded(90)
    assert torch.equal(low.train_x, again.train_x) and torch.equal(low.test_x, again.test_x)
    assert low.train_x.dtype == torch.uint8 and low.train_x.shape == data.train_x.shape
    assert torch.equal(low.train_y, data.train_y) and torch.equal(low.test_y, data.test_y)
    assert not torch.equal(low.train_x, data.train_x)
    record = low.provenance()
    assert record["copy"] == "jpeg-q75 re-encoded at q20"
    assert record["reencoding"]["quality"] == 20 and record["reencoding"]["source_copy"] == "jpeg-q75"
    assert record["reencoding"]["psnr_db"] == round(D.psnr(data.train_x, low.train_x), 3)
    # a coarser quality loses more
    assert high.reencoding["psnr_db"] > record["reencoding"]["psnr_db"] + 3
    assert "reencoding" not in data.provenance()


def test_reencoding_a_flat_image_is_lossless_and_a_bad_quality_is_refused():
    flat = torch.full((1, 3, 32, 32), 128, dtype=torch.uint8)
    data = D.Dataset(D.DATASETS["cifar10"], flat, torch.zeros(1), flat, torch.zeros(1))
    assert torch.equal(data.reencoded(10).train_x, flat)                      # DC only: exact in JPEG
    assert data.reencoded(10).reencoding["psnr_db"] == float("inf")
    for quality in (0, 96):
        with pytest.raises(DataError, match=r"JPEG quality must be in \[1, 95\]"):
            data.reencoded(quality)
