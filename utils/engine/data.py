"""Datasets as in-memory uint8 tensors, with batched normalisation and augmentation.

MNIST is read from the official IDX files (``.gz`` or raw) and CIFAR-10 from the
official ``cifar-10-batches-py`` layout, under a data directory chosen by
``--data-dir``, else ``$SPARSE_DATA_DIR``, else ``data/``.  Missing files are
downloaded from the official hosts with a progress bar and checked against their
known checksums; offline, a :class:`~utils.errors.DataError` names the files
expected and where to put them.

Images stay uint8 (N, C, H, W) in memory; :func:`batches` normalises (and for
CIFAR-10 pad-4 random-crops and flips) whole batches at once.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import tarfile
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from utils.errors import DataError
from utils.progress import tqdm


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool
    train_size: int
    num_classes: int = 10


DATASETS = {
    "mnist": DatasetInfo("mnist", (1, 28, 28), (0.1307,), (0.3081,), augment=False,
                         train_size=60_000),
    "cifar10": DatasetInfo("cifar10", (3, 32, 32), (0.491, 0.482, 0.447), (0.247, 0.243, 0.262),
                           augment=True, train_size=50_000),
}

# md5 of the *uncompressed* IDX content, so re-gzipped copies verify too.
MNIST_FILES = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "http://yann.lecun.com/exdb/mnist/")
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
#: md5 of the official archive's batch files (as torchvision lists them): a data directory whose
#: files all match holds the original images.
CIFAR10_FILE_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f", "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751", "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb", "test_batch": "40351d587109b95175f43aff81a1287e",
}
#: Known copies by :meth:`Dataset.digest` (train, test).  The JPEG copy is a public re-encoding of
#: CIFAR-10 at JPEG quality 75 (written in the official layout by ``make_cifar10.py``): lossy,
#: so networks trained on the original images lose about 12 points on it.
KNOWN_COPIES = {
    ("cifar10", "8b18eb326be92880", "bae2d1320b491690"): "jpeg-q75",
}


@dataclass
class Dataset:
    """In-memory dataset. Images uint8 (N, C, H, W); labels int64 (N,).

    ``val_*`` is a held-out split of the training set (empty unless requested);
    ``val_indices`` are its indices into the original training set.
    """
    info: DatasetInfo
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    val_x: Tensor | None = None
    val_y: Tensor | None = None
    val_indices: Tensor | None = None
    #: which copy of the dataset the files are: ``"official"`` (the official files, checked by
    #: md5), a name from :data:`KNOWN_COPIES` (e.g. ``"jpeg-q75"``) or ``"unknown"``.
    copy: str = "unknown"
    #: set by :meth:`reencoded`: ``{"quality", "source_copy", "psnr_db"}`` (PSNR of the new
    #: training images against the source's, in dB).
    reencoding: dict | None = None

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> Dataset:
        """The first ``n_train`` / ``n_test`` images (for smoke runs)."""
        return replace(self, train_x=self.train_x[:n_train], train_y=self.train_y[:n_train],
                       test_x=self.test_x[:n_test], test_y=self.test_y[:n_test])

    def holdout(self, n: int) -> Dataset:
        """Train on all but the last ``n`` training images and evaluate on those ``n`` instead of
        the test set: the split for choosing hyperparameters without looking at the test set."""
        if not 0 < n < len(self.train_y):
            raise DataError(f"validation size must be in (0, {len(self.train_y)}), got {n}")
        return replace(self, train_x=self.train_x[:-n], train_y=self.train_y[:-n],
                       test_x=self.train_x[-n:], test_y=self.train_y[-n:],
                       val_x=None, val_y=None, val_indices=None)

    def reencoded(self, quality: int) -> Dataset:
        """Every image (training and test) re-encoded as JPEG at ``quality`` (4:2:0 chroma, as the
        JPEG CIFAR-10 copy) and decoded again: a further-compressed copy, for measuring how much
        image quality costs a recipe.  Deterministic (libjpeg through Pillow).

        >>> data = Dataset(DATASETS["cifar10"], *(torch.full((1, 3, 32, 32), 128, dtype=torch.uint8),
        ...                torch.zeros(1, dtype=torch.int64)) * 2, copy="jpeg-q75")
        >>> data.reencoded(50).copy
        'jpeg-q75 re-encoded at q50'
        """
        if not 1 <= quality <= 95:
            raise DataError(f"JPEG quality must be in [1, 95], got {quality}")
        from PIL import Image  # only this experiment needs Pillow

        def jpeg(x: Tensor) -> Tensor:
            out = torch.empty_like(x)
            gray = x.shape[1] == 1
            for i, img in enumerate(x.permute(0, 2, 3, 1).numpy()):
                buf = io.BytesIO()
                Image.fromarray(img[..., 0] if gray else img).save(buf, "JPEG", quality=quality, subsampling=2)
                decoded = np.array(Image.open(buf))  # a writable copy for torch.from_numpy
                out[i] = torch.from_numpy(decoded[None] if gray else decoded.transpose(2, 0, 1))
            return out

        source = self.provenance()["copy"]
        train_x = jpeg(self.train_x)
        reencoding = {"quality": quality, "source_copy": source,
                      "psnr_db": round(psnr(self.train_x, train_x), 3)}
        val_x = None if self.val_x is None else jpeg(self.val_x)
        return replace(self, train_x=train_x, test_x=jpeg(self.test_x), val_x=val_x,
                       copy=f"{source} re-encoded at q{quality}", reencoding=reencoding)

    def digest(self, splits: tuple[str, ...] = ("train", "test")) -> dict[str, str]:
        """sha256 (first 16 hex digits) of the training and the test arrays (or only the ``splits``
        named), images and labels: what a run trained and was tested on, whichever files they came from.

        >>> Dataset(DATASETS["mnist"], *(torch.zeros(1, 1, 28, 28, dtype=torch.uint8),
        ...         torch.zeros(1, dtype=torch.int64)) * 2).digest()["train"]
        '52f033ec34066343'
        """
        def sha(x: Tensor, y: Tensor) -> str:
            h = hashlib.sha256(x.contiguous().numpy().tobytes())
            h.update(y.to(torch.int64).contiguous().numpy().tobytes())
            return h.hexdigest()[:16]
        arrays = {"train": (self.train_x, self.train_y), "test": (self.test_x, self.test_y)}
        return {split: sha(*arrays[split]) for split in splits}

    def provenance(self) -> dict:
        """``{"dataset", "copy", "train_sha256", "test_sha256", "train_size", "test_size"}`` (and
        ``"reencoding"`` for a :meth:`reencoded` copy) for ``run.json``; ``copy`` falls back to
        :data:`KNOWN_COPIES` when the files were not recognised by their checksums."""
        digest = self.digest()
        copy = self.copy
        if copy == "unknown":
            copy = KNOWN_COPIES.get((self.info.name, digest["train"], digest["test"]), "unknown")
        record = {"dataset": self.info.name, "copy": copy, "train_sha256": digest["train"],
                  "test_sha256": digest["test"], "train_size": len(self.train_y),
                  "test_size": len(self.test_y)}
        if self.reencoding:
            record["reencoding"] = self.reencoding
        return record


def psnr(reference: Tensor, images: Tensor) -> float:
    """Peak signal-to-noise ratio (dB) of uint8 ``images`` against ``reference`` (same shape), over
    every pixel: 10·log10(255² / MSE); ``inf`` when they are equal.

    >>> psnr(torch.zeros(1, 1, 2, 2, dtype=torch.uint8), torch.full((1, 1, 2, 2), 255, dtype=torch.uint8))
    0.0
    """
    diff = reference.to(torch.int32) - images.to(torch.int32)      # exact, a quarter of float64's memory
    mse = diff.square().sum().item() / diff.numel()
    return float("inf") if mse == 0 else 10 * float(np.log10(255.0 ** 2 / mse))


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir`` if given, else ``$SPARSE_DATA_DIR``, else ``data/``."""
    return Path(data_dir or os.environ.get("SPARSE_DATA_DIR") or "data")


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _mnist_path(root: Path, stem: str) -> Path | None:
    for candidate in (root / "mnist" / f"{stem}.gz", root / "mnist" / stem,
                      root / f"{stem}.gz", root / stem,
                      root / "MNIST" / "raw" / f"{stem}.gz", root / "MNIST" / "raw" / stem):
        if candidate.is_file():
            return candidate
    return None


def dataset_files_present(name: str, data_dir: Path) -> bool:
    """Whether the official files of ``name`` exist under ``data_dir`` (not verified)."""
    if name == "mnist":
        return all(_mnist_path(data_dir, stem) for stem in MNIST_FILES)
    return all((data_dir / "cifar-10-batches-py" / f).is_file() for f in CIFAR10_FILES)


def _missing_message(name: str, root: Path, detail: str) -> str:
    if name == "mnist":
        expected = ", ".join(f"{s}.gz" for s in MNIST_FILES)
        where = f"{root / 'mnist'}/"
    else:
        expected = ", ".join(CIFAR10_FILES)
        where = f"{root / 'cifar-10-batches-py'}/"
    return (f"{name}: {detail}. Expected {expected} in {where} "
            f"(set --data-dir or $SPARSE_DATA_DIR to the directory that holds them)")


def parse_idx(raw: bytes) -> np.ndarray:
    """Parse an IDX file (uint8 payload) into an array shaped by its header."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError("not an uint8 IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    count = int(np.prod(dims))
    if len(raw) != offset + count:
        raise ValueError(f"truncated IDX file: header says {count} values, found {len(raw) - offset}")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def _read_maybe_gz(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError) as exc:
            raise ValueError(f"corrupt gzip ({exc})") from None
    return data


def _download(url: str, dest: Path) -> None:
    """Download ``url`` to ``dest`` atomically, with a progress bar."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(url, timeout=30) as response:
        total = int(response.headers.get("Content-Length") or 0)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, tqdm(total=total or None, unit="B", unit_scale=True,
                                                  desc=f"download {dest.name}") as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _download_mnist(root: Path) -> None:
    for stem in MNIST_FILES:
        if _mnist_path(root, stem):
            continue
        errors = []
        for mirror in MNIST_MIRRORS:
            try:
                _download(mirror + stem + ".gz", root / "mnist" / f"{stem}.gz")
                break
            except OSError as exc:
                errors.append(str(exc))
        else:
            raise DataError(_missing_message("mnist", root, f"{stem}.gz is missing and could not be "
                                             f"downloaded ({errors[-1]})"))


def _download_cifar10(root: Path) -> None:
    archive = root / "cifar-10-python.tar.gz"
    try:
        if not archive.is_file():
            _download(CIFAR10_URL, archive)
    except OSError as exc:
        raise DataError(_missing_message("cifar10", root, f"files are missing and could not be "
                                         f"downloaded ({exc})")) from None
    if _md5(archive.read_bytes()) != CIFAR10_MD5:
        archive.unlink()
        raise DataError(_missing_message("cifar10", root, "the downloaded archive failed its md5 check"))
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")


def load_mnist(data_dir: str | os.PathLike | None = None, download: bool = True,
               verify: bool = True) -> Dataset:
    """MNIST as uint8 (N, 1, 28, 28) tensors: 60k train, 10k test.

    Raises:
        DataError: a file is missing (and cannot be downloaded), truncated or fails its md5.
    """
    root = resolve_data_dir(data_dir)
    if download and not dataset_files_present("mnist", root):
        _download_mnist(root)
    arrays = {}
    for stem, md5 in MNIST_FILES.items():
        path = _mnist_path(root, stem)
        if path is None:
            raise DataError(_missing_message("mnist", root, f"{stem}(.gz) is missing"))
        try:
            raw = _read_maybe_gz(path)
            arrays[stem] = parse_idx(raw)
        except ValueError as exc:
            raise DataError(_missing_message("mnist", root, f"{path.name} is unreadable: {exc}")) from None
        if verify and _md5(raw) != md5:
            raise DataError(_missing_message("mnist", root, f"{path.name} fails its md5 check"))
    as_images = lambda a: torch.from_numpy(a.copy()).unsqueeze(1)
    as_labels = lambda a: torch.from_numpy(a.astype(np.int64))
    return Dataset(DATASETS["mnist"],
                   as_images(arrays["train-images-idx3-ubyte"]), as_labels(arrays["train-labels-idx1-ubyte"]),
                   as_images(arrays["t10k-images-idx3-ubyte"]), as_labels(arrays["t10k-labels-idx1-ubyte"]),
                   copy="official" if verify else "unknown")


class _BatchUnpickler(pickle.Unpickler):
    """Reads the CIFAR-10 batch dicts while refusing every class but numpy's array rebuild."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_cifar_batch(raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    batch = _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.shape != (len(labels), 3072):
        raise ValueError(f"data has shape {data.shape}, expected ({len(labels)}, 3072)")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(data_dir: str | os.PathLike | None = None, download: bool = True) -> Dataset:
    """CIFAR-10 as uint8 (N, 3, 32, 32) tensors: 50k train, 10k test.

    Raises:
        DataError: a batch file is missing (and cannot be downloaded), truncated or malformed.
    """
    root = resolve_data_dir(data_dir)
    if download and not dataset_files_present("cifar10", root):
        _download_cifar10(root)
    parts, official = {}, True
    for name in CIFAR10_FILES:
        path = root / "cifar-10-batches-py" / name
        if not path.is_file():
            raise DataError(_missing_message("cifar10", root, f"{name} is missing"))
        raw = path.read_bytes()
        official &= _md5(raw) == CIFAR10_FILE_MD5[name]
        try:
            parts[name] = _read_cifar_batch(raw)
        except Exception as exc:  # any parse failure of a data file is a data error
            raise DataError(_missing_message("cifar10", root, f"{name} is unreadable: {exc}")) from None
    train_x = np.concatenate([parts[f"data_batch_{i}"][0] for i in range(1, 6)])
    train_y = np.concatenate([parts[f"data_batch_{i}"][1] for i in range(1, 6)])
    test_x, test_y = parts["test_batch"]
    return Dataset(DATASETS["cifar10"], torch.from_numpy(train_x), torch.from_numpy(train_y),
                   torch.from_numpy(test_x.copy()), torch.from_numpy(test_y),
                   copy="official" if official else "unknown")


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, download: bool = True,
                 val_size: int = 0, val_seed: int = 0) -> Dataset:
    """Load ``"mnist"`` or ``"cifar10"``, optionally holding out ``val_size`` training images.

    The validation split is a seeded random subset (``val_seed``); its indices are kept
    in ``Dataset.val_indices`` so runs can store them.
    """
    loaders = {"mnist": load_mnist, "cifar10": load_cifar10}
    if name not in loaders:
        raise DataError(f"unknown dataset {name!r}; choose from {', '.join(loaders)}")
    data = loaders[name](data_dir, download=download)
    if val_size:
        return split_validation(data, val_size, val_seed)
    return data


def split_validation(data: Dataset, val_size: int, seed: int) -> Dataset:
    """Move a seeded random ``val_size`` subset of the training set to ``val_*``."""
    perm = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(seed))
    val, train = perm[:val_size].sort().values, perm[val_size:].sort().values
    return replace(data, train_x=data.train_x[train], train_y=data.train_y[train],
                   val_x=data.train_x[val], val_y=data.train_y[val], val_indices=val)


def normalize(x: Tensor, info: DatasetInfo, dtype: torch.dtype = torch.float32) -> Tensor:
    """uint8 (B, C, H, W) -> normalised float (B, C, H, W) on ``x``'s device."""
    mean = torch.tensor(info.mean, device=x.device, dtype=dtype).view(1, -1, 1, 1)
    std = torch.tensor(info.std, device=x.device, dtype=dtype).view(1, -1, 1, 1)
    return (x.to(dtype) / 255.0 - mean) / std


def augment(x: Tensor, generator: torch.Generator, padding: int = 4) -> Tensor:
    """Pad-``padding`` random crop plus horizontal flip of a uint8 batch (B, C, H, W), per image."""
    b, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    rows = (dy.view(b, 1) + torch.arange(h).view(1, h)).to(x.device)      # (B, H)
    cols = dx.view(b, 1) + torch.arange(w).view(1, w)                      # (B, W)
    cols = torch.where(flip.view(b, 1), cols.flip(1), cols).to(x.device)
    idx_b = torch.arange(b, device=x.device).view(b, 1, 1)
    out = padded.permute(0, 2, 3, 1)[idx_b, rows.view(b, h, 1), cols.view(b, 1, w)]
    return out.permute(0, 3, 1, 2).contiguous()


def batches(x: Tensor, y: Tensor, batch_size: int, info: DatasetInfo, *, shuffle: bool = False,
            generator: torch.Generator | None = None, train_augment: bool = False,
            device: torch.device | str = "cpu", drop_last: bool = False) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield normalised (and optionally augmented) batches ``(B, C, H, W) float32, (B,) int64``.

    The order depends only on ``generator``'s state, so a seeded generator gives a
    deterministic batch order.
    """
    n = len(y)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        xb = x.index_select(0, idx)  # 7x faster than x[idx] for uint8 batches
        if train_augment and info.augment:
            xb = augment(xb, generator)
        yield normalize(xb.to(device, non_blocking=True), info), y[idx].to(device, non_blocking=True)


def probe_images(data: Dataset, n: int = 600, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` fixed test images (seeded choice, sorted indices), uint8, and their labels."""
    idx = torch.randperm(len(data.test_y), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return data.test_x[idx].clone(), data.test_y[idx].clone()
