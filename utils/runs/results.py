"""The runs store: one directory per run, compact, checksummed, never unpickled.

Layout: ``<root>/<experiment>/<method>/d<density %>/s<seed>/`` holding

- ``run.json``: config, versions, target and achieved density (overall and per
  layer), wall time, the storage format, the sha256 of every other file, and a
  digest of its own content;
- ``history.csv``: one row per epoch;
- ``init.safetensors`` / ``final.safetensors``: the weights with masks as training
  started and ended.  Per prunable layer ``<layer>.mask`` (``np.packbits`` of the
  flattened bool mask, uint8), optionally ``<layer>.support`` (packed positions whose
  values are kept, a superset of the mask; default the mask) and ``<layer>.values``
  (float32 values at the support positions, row-major).  Every other state entry
  (biases, BatchNorm) is stored dense under its state-dict key.  In ``init`` the
  entries the run's seed regenerates bit for bit are left out (:mod:`.init_file`);
- ``extras.safetensors`` (optional): method extras (Gem-Miner flags and scores, DEEPR
  signs); bool tensors and ±1 sign tensors bit-packed like masks.

A run directory is written under a temporary name and renamed into place, so it
either exists complete or not at all.  Densities in this API are fractions; the
directory names use percent (``d5`` = 5 %).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn

from models import build_model
from utils.errors import RunStoreError, UserError, check_density
from utils.files import write_atomic  # noqa: F401  (results.write_atomic: used across the package)
from utils.runs import init_file, report
from utils.runs.encoding import (  # noqa: F401  (results.pack_bool etc.: the store's public API)
    decode_extras,
    decode_into,
    encode_extras,
    encode_model,
    pack_bool,
    unpack_bool,
)

FORMAT = "sparse-network-analysis/run"
FORMAT_VERSION = 1
DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "results"
STORAGE = ("safetensors; per prunable layer: <layer>.mask = np.packbits of the flattened bool "
           "mask (uint8, C order), optional <layer>.support (packed, superset of mask), "
           "<layer>.values = float32 values at support positions; other state entries dense")


# ----------------------------------------------------------------------------- paths
def density_label(density: float) -> str:
    """Fraction -> percent label used in paths: 0.05 -> "5", 0.001 -> "0.1"."""
    return f"{round(density * 100, 6):g}"


def default_root(experiment: str | None = None) -> Path:
    """The runs store an experiment lives in: ``results/`` for ours, the git-ignored import
    store (:func:`utils.runs.thesis_source.thesis_root`) for the thesis's own networks (``thesis_*``)."""
    if experiment and experiment.startswith("thesis_"):
        from utils.runs.thesis_source import thesis_root
        return thesis_root()
    return DEFAULT_ROOT


def run_dir(experiment: str, method: str, density: float, seed: int,
            root: str | os.PathLike | None = None) -> Path:
    """Directory of one run (density as a fraction); ``root`` defaults to :func:`default_root`."""
    return Path(root or default_root(experiment)) / experiment / method / f"d{density_label(density)}" / f"s{seed}"


def is_complete(path: Path) -> bool:
    """A run directory counts once its ``run.json`` exists (directories appear atomically)."""
    return (path / "run.json").is_file()


# ----------------------------------------------------------------------------- writing
def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _digest(record: dict, leave_out: tuple[str, ...] = ("digest",)) -> str:
    body = {k: v for k, v in record.items() if k not in leave_out}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


#: run.json fields that say when, how fast and with which software a run was written, not what it holds
WRITE_FIELDS = ("digest", "created", "wall_time_s", "versions")


def content_digest(record: dict) -> str:
    """SHA-256 of what a run holds: its ``run.json`` (settings, results and its files' checksums)
    without :data:`WRITE_FIELDS`.  A run written again with the same files and settings keeps it
    (e.g. the thesis's networks imported anew on another machine), where ``record["digest"]``,
    which covers the ``created`` time stamp, changes.

    Example::

        >>> content_digest({"seed": 21, "created": "2026-12-05T12:46:04Z"}) == content_digest({"seed": 21})
        True
    """
    return _digest(record, WRITE_FIELDS)


def versions() -> dict[str, str]:
    import importlib.metadata as md
    try:
        project = md.version("sparse-network-analysis")
    except md.PackageNotFoundError:
        project = "unknown"
    return {"project": project, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "format_version": str(FORMAT_VERSION)}


def _json_default(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def save_run(path: str | os.PathLike, *, model: nn.Module, init_model: nn.Module | None,
             history: pd.DataFrame, model_spec: dict, record: dict,
             extras: dict[str, Tensor] | None = None, support: dict[str, Tensor] | None = None,
             init_support: dict[str, Tensor] | None = None, tables: dict[str, pd.DataFrame] | None = None,
             init_seed: dict | None = None, overwrite: bool = False) -> Path:
    """Store one run atomically at ``path`` and return it.

    Args:
        path: the run directory (see :func:`run_dir`).
        model, init_model: trained model and the model as training started.
        history: per-epoch history DataFrame.
        model_spec: ``{"name": ..., "kwargs": {...}}`` for :func:`models.build_model`.
        record: extra ``run.json`` content (experiment, method, density_target, seed, config, ...).
        extras: method tensors (bool tensors are bit-packed).
        support: per layer, positions whose weights are kept beyond the mask.
        init_support: the same for ``init_model``.
        tables: further CSV files, ``{file name: DataFrame}`` (e.g. the curves of runs whose
            networks were not kept); read back with :meth:`Run.table`.
        init_seed: ``{"seed", "thesis_train_size"}`` the init was built from
            (:func:`utils.engine.seeding.seed_init`): the init values that seed regenerates are
            not stored (:mod:`utils.runs.init_file`); None stores them all.
        overwrite: replace an existing complete run (otherwise it is an error).
    """
    from models.masks import density, layer_densities
    path = Path(path)
    if is_complete(path) and not overwrite:
        raise RunStoreError(f"{path} already holds a complete run (use overwrite/--force)")
    path.parent.mkdir(parents=True, exist_ok=True)
    with staged(path) as tmp:
        files = {}
        for label, m in (("final", model), ("init", init_model)):
            if m is None:
                continue
            tensors, shapes = encode_model(m, support if label == "final" else init_support)
            if label == "init" and init_seed is not None:
                tensors = init_file.compact(tensors, shapes, model_spec, **init_seed)
            (tmp / f"{label}.safetensors").write_bytes(st_save(tensors, metadata={"shapes": json.dumps(shapes)}))
            files[f"{label}.safetensors"] = None
        extras_meta = None
        if extras:
            tensors, extras_meta = encode_extras(extras)
            (tmp / "extras.safetensors").write_bytes(st_save(tensors))
            files["extras.safetensors"] = None
        history.to_csv(tmp / "history.csv", index=False)
        files["history.csv"] = None
        for name, table in (tables or {}).items():
            if not name.endswith(".csv") or "/" in name or name in files:
                raise ValueError(f"bad table name {name!r}: a new file name ending in .csv")
            table.to_csv(tmp / name, index=False)
            files[name] = None
        files = {name: _sha256(tmp / name) for name in files}
        full = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "storage": STORAGE,
            **record,
            "model": model_spec,
            "density_achieved": density(model),
            "layer_densities": layer_densities(model),
            "extras": extras_meta,
            "versions": versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": files,
        }
        full["digest"] = _digest(json.loads(json.dumps(full, default=_json_default)))
        (tmp / "run.json").write_text(json.dumps(full, indent=1, default=_json_default))
    return path


@contextmanager
def staged(path: Path) -> Iterator[Path]:
    """A temporary directory beside the run directory ``path`` to build the run in.  On success
    it replaces ``path`` by renames (a reader sees the old run or the new one, never a mix); on
    any failure it is removed and ``path`` is left as it was."""
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        yield tmp
        if path.exists():
            trash = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, trash)
            os.replace(tmp, path)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def compact_init(path: str | os.PathLike) -> int:
    """Rewrite a stored run's ``init.safetensors`` in the compact form of :mod:`.init_file` (and
    its ``run.json`` checksums), atomically: the directory is rebuilt beside it and swapped in.
    Returns the bytes saved (0: already compact, no init, or nothing the seed regenerates)."""
    from utils.engine.data import DATASETS
    path = Path(path)
    record = read_record(path)
    file = path / "init.safetensors"
    if "init.safetensors" not in record["files"]:
        return 0
    tensors, metadata = _read_tensors(file)
    if init_file.KEY in tensors:
        return 0
    info = DATASETS.get(record.get("dataset"))
    stored = init_file.compact(tensors, json.loads(metadata["shapes"]), record["model"], seed=record["seed"],
                               thesis_train_size=info.train_size if info else None)
    if init_file.KEY not in stored:
        return 0
    data = st_save(stored, metadata=metadata)
    before = file.stat().st_size
    with staged(path) as tmp:
        shutil.copytree(path, tmp, dirs_exist_ok=True)
        (tmp / "init.safetensors").write_bytes(data)
        record["files"]["init.safetensors"] = _sha256(tmp / "init.safetensors")
        record["digest"] = _digest(record)
        (tmp / "run.json").write_text(json.dumps(record, indent=1))
    return before - len(data)


def clean_partial(root: str | os.PathLike | None = None) -> int:
    """Remove half-written run directories (``.s<seed>.tmp-*``) left by a killed run, but not
    those of a run a live process has claimed (it is writing them), and the killed run's claim
    files. Returns the count of directories removed."""
    from utils.runs.claims import is_claimed, release_stale
    root = Path(root or DEFAULT_ROOT)
    count = 0
    if root.is_dir():
        for tmp in root.rglob(".*.tmp-*"):
            if tmp.is_dir() and not is_claimed(tmp.parent / tmp.name[1:].split(".tmp-")[0]):
                shutil.rmtree(tmp, ignore_errors=True)
                count += 1
        release_stale(root)
    return count


# ----------------------------------------------------------------------------- reading
def read_record(path: str | os.PathLike, verify: bool = True) -> dict:
    """``run.json`` of a run directory, with its format, digest and file checksums verified."""
    path = Path(path)
    file = path / "run.json"
    if not file.is_file():
        raise RunStoreError(f"no stored run at {path} (run.json missing)")
    try:
        record = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunStoreError(f"{file} is corrupt ({exc.__class__.__name__})") from None
    if record.get("format") != FORMAT:
        raise RunStoreError(f"{file} is not a run of this project")
    if record.get("format_version") != FORMAT_VERSION:
        raise RunStoreError(f"{path} has format version {record.get('format_version')}, "
                            f"this version reads {FORMAT_VERSION}; retrain or use a matching release")
    if verify:
        if record.get("digest") != _digest(record):
            raise RunStoreError(f"{file} was modified after it was written (digest mismatch)")
        for name, sha in record["files"].items():
            if not (path / name).is_file():
                raise RunStoreError(f"{path / name} is missing")
            if _sha256(path / name) != sha:
                raise RunStoreError(f"{path / name} fails its sha256 check (corrupt or tampered)")
    return record


def _read_tensors(file: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    data = file.read_bytes()
    try:
        tensors = st_load(data)
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise RunStoreError(f"{file} is unreadable ({exc})") from None
    header_len = int.from_bytes(data[:8], "little")
    metadata = json.loads(data[8:8 + header_len]).get("__metadata__", {})
    return tensors, metadata


def build_from_record(record: dict) -> nn.Module:
    """The run's architecture, freshly built (its init is overwritten by the stored weights;
    the caller's global RNG is left as it was)."""
    spec = record["model"]
    with torch.random.fork_rng(devices=[]):
        return build_model(spec["name"], **spec.get("kwargs", {}))


def load_weights(path: str | os.PathLike, which: str = "final", record: dict | None = None) -> nn.Module:
    """The model stored in a run directory: ``which`` is ``"final"`` or ``"init"``."""
    path = Path(path)
    record = record or read_record(path)
    tensors, metadata = _read_tensors(path / f"{which}.safetensors")
    shapes = json.loads(metadata["shapes"])
    tensors = init_file.expand(tensors, shapes, record["model"], where=str(path))
    return decode_into(build_from_record(record), tensors, shapes)


class Run(NamedTuple):
    """A stored run: ``model, history, info, path = load_run(...)``."""
    model: nn.Module
    history: pd.DataFrame
    info: dict
    path: Path

    def init_model(self) -> nn.Module:
        """The model as training started (init weights and initial masks)."""
        return load_weights(self.path, "init", self.info)

    def extras(self) -> dict[str, Tensor]:
        """Method extras (Gem-Miner ``flag.<layer>``/``scores.<layer>``, DEEPR ``signs.<layer>``)."""
        file = self.path / "extras.safetensors"
        if not file.is_file():
            return {}
        tensors, _ = _read_tensors(file)
        return decode_extras(tensors, self.info["extras"])

    def table(self, name: str) -> pd.DataFrame:
        """A further CSV table stored with the run (``tables`` of :func:`save_run`), checksum verified."""
        if name not in self.info["files"] or not name.endswith(".csv") or name == "history.csv":
            tables = [f for f in self.info["files"] if f.endswith(".csv") and f != "history.csv"]
            raise RunStoreError(f"{self.path} has no table {name!r} (it has: {', '.join(tables) or 'none'})")
        return pd.read_csv(self.path / name)

    def precision(self) -> tuple[bool, bool]:
        """``(bf16, channels_last)`` as the run trained, to evaluate it as training did.  Runs
        stored before ``compute`` recorded them trained with the then defaults: both on for
        conv nets on CPU, both off otherwise."""
        compute = self.info.get("compute", {})
        if "bf16" in compute:
            return compute["bf16"], compute["channels_last"]
        from utils.engine.train import has_conv
        legacy = compute.get("device") == "cpu" and has_conv(self.model)
        return legacy, legacy

    def masks(self, mode: str = "effective") -> dict[str, Tensor]:
        """Per-layer masks: ``"effective"`` (default) or ``"flag"`` (Gem-Miner's flags, the thesis's view)."""
        from models.masks import get_masks
        if mode == "effective":
            return get_masks(self.model)
        if mode == "flag":
            flags = {k.removeprefix("flag."): v for k, v in self.extras().items() if k.startswith("flag.")}
            return flags or get_masks(self.model)
        raise UserError(f"unknown mask mode {mode!r}; choose 'effective' or 'flag'")


def load_run_dir(path: str | os.PathLike) -> Run:
    """Load a run from its directory (checksums verified)."""
    path = Path(path)
    record = read_record(path)
    model = load_weights(path, "final", record)
    model.eval()
    history = pd.read_csv(path / "history.csv")
    return Run(model, history, record, path)


def load_run(experiment: str, method: str, density: float, seed: int,
             root: str | os.PathLike | None = None) -> Run:
    """Load one stored run: ``model, history, info, path = load_run("fc_mnist", "synflow", 0.05, 21)``.

    Args:
        experiment: e.g. ``"fc_mnist"``, ``"resnet20_cifar10"``; ``"thesis_fc_mnist"``,
            ``"thesis_resnet20_cifar10"`` for the thesis's own networks (after ``import-thesis``).
        method: e.g. ``"synflow"``, ``"gem-miner"``, ``"random"``.
        density: the grid density as a fraction (0.05 for the "5 %" runs; run.json holds the
            exact target, e.g. 10^-1.3 for the thesis's SynFlow/random "5 %").
        seed: 21, 42 or 63 in the stored grid.
        root: runs store root (default the repository's ``results/``).

    Returns:
        :class:`Run` with the trained model (eval mode), its history, the ``run.json``
        record and the directory.
    """
    check_density(density)
    path = run_dir(experiment, method, density, seed, root)
    if not is_complete(path):
        store = Path(root or default_root(experiment))
        if experiment.startswith("thesis_") and root is None and not (store / experiment).is_dir():
            hint = " (import the thesis's networks first: python -m utils.cli import-thesis)"
        else:
            hint = _stored_beside(store, experiment, method)
        raise RunStoreError(f"no stored run {experiment}/{method}/d{density_label(density)}/s{seed} "
                            f"under {store}{hint}")
    return load_run_dir(path)


def _stored_beside(store: Path, experiment: str, method: str) -> str:
    """What the store holds at the first level where a missing run's key parts out: its experiments,
    the experiment's methods, or the method's densities (%) and seeds, for the error message."""
    def names(path: Path) -> list[str]:
        return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")) \
            if path.is_dir() else []
    if not (store / experiment).is_dir():
        experiments = [n for n in names(store) if next((store / n).glob("*/d*/s*/run.json"), None)]
        return f"; stored experiments: {', '.join(experiments) or 'none'}"
    if not (store / experiment / method).is_dir():
        return f"; stored methods of {experiment}: {', '.join(names(store / experiment)) or 'none'}"
    cells = [p.parent for p in (store / experiment / method).glob("d*/s*/run.json")]
    densities = sorted({float(c.parent.name[1:]) for c in cells})
    seeds = sorted({int(c.name[1:]) for c in cells})
    return (f"; stored for {experiment}/{method}: densities {', '.join(f'{d:g}' for d in densities)} %, "
            f"seeds {', '.join(map(str, seeds))}") if cells else f"; nothing stored for {experiment}/{method}"


def gain_last_fifth(history: pd.DataFrame) -> float:
    """Top-1 gained over the last fifth of a training phase's epochs (points): the last epoch's
    top-1 minus the top-1 ⌊E/5⌋ epochs before it (at least one epoch); NaN for fewer epochs.
    The recipes' convergence measure (below 0.3 = converged; ``configs/resnet20_cifar10.yaml``).

    Example: ``gain_last_fifth(pd.DataFrame({"train_loss": [None, 1, 1, 1, 1, 1],
    "top1": [10, 50, 60, 70, 80, 81]}))`` is 1.0 (5 epochs: the last one's gain)."""
    curve = history.loc[history["train_loss"].notna(), "top1"].to_numpy(dtype=float)
    back = max(1, len(curve) // 5)
    return float(curve[-1] - curve[-1 - back]) if len(curve) > back else math.nan


def run_files(root: str | os.PathLike | None = None) -> list[Path]:
    """The ``run.json`` of every run stored under ``root`` (``<experiment>/<method>/d*/s*``), sorted."""
    return sorted(Path(root or DEFAULT_ROOT).glob("*/*/d*/s*/run.json"))


def _precision(record: dict) -> str | None:
    """"bf16" or "fp32" as ``record`` says the run trained; None for runs stored before it was recorded."""
    bf16 = (record.get("compute") or {}).get("bf16")
    return None if bf16 is None else ("bf16" if bf16 else "fp32")


def runs(root: str | os.PathLike | None = None) -> pd.DataFrame:
    """Everything stored under ``root``: one row per run, read from ``run.json`` and ``history.csv``.

    Columns: experiment, method, density (the grid label as a fraction, as in the path), seed,
    density_target (the fraction pruned to), density_achieved,
    final_top1, best_top1, epochs (of the last phase), gain_last_fifth (:func:`gain_last_fifth` of the
    last phase's test curve), wall_time_s, profile, recipe_version, data_copy (which copy of the
    dataset it trained on), precision ("bf16" autocast or "fp32"; empty where not recorded), path.
    Checksums are not verified here (use :func:`load_run` or :func:`read_record`).
    """
    root = Path(root or DEFAULT_ROOT)
    rows = []
    for file in run_files(root):
        record = read_record(file.parent, verify=False)
        history = pd.read_csv(file.parent / "history.csv")
        final_phase = history[history["phase"] == history["phase"].iloc[-1]]
        rows.append({
            "experiment": record["experiment"], "method": record["method"],
            "density": record.get("density_label", record["density_target"]), "seed": record["seed"],
            "density_target": record["density_target"],
            "density_achieved": record["density_achieved"],
            "final_top1": float(history["top1"].iloc[-1]), "best_top1": float(final_phase["top1"].max()),
            "epochs": int(final_phase["train_loss"].notna().sum()),
            "gain_last_fifth": gain_last_fifth(final_phase),
            "wall_time_s": record.get("wall_time_s"), "profile": record.get("profile"),
            "recipe_version": (record.get("recipe") or {}).get("version"),
            "data_copy": (record.get("data") or {}).get("copy"),
            "precision": _precision(record),
            "path": str(file.parent.relative_to(root)),
        })
    columns = ["experiment", "method", "density", "seed", "density_target", "density_achieved", "final_top1",
               "best_top1", "epochs", "gain_last_fifth", "wall_time_s", "profile", "recipe_version", "data_copy",
               "precision", "path"]
    return pd.DataFrame(rows, columns=columns)


# ----------------------------------------------------------------------------- probe set
def probe_path(dataset: str, root: str | os.PathLike | None = None) -> Path:
    return Path(root or DEFAULT_ROOT) / "probe" / f"{dataset}.safetensors"


def save_probe(dataset: str, images: Tensor, labels: Tensor, root: str | os.PathLike | None = None) -> Path:
    """Store the fixed probe images (uint8 (N, C, H, W)) and labels of a dataset."""
    path = probe_path(dataset, root)
    write_atomic(path, st_save({"images": images.contiguous(), "labels": labels.contiguous()}))
    return path


def load_probe(dataset: str, root: str | os.PathLike | None = None) -> tuple[Tensor, Tensor]:
    """The stored probe set: uint8 images (N, C, H, W) and int64 labels (N,)."""
    path = probe_path(dataset, root)
    if not path.is_file():
        raise RunStoreError(f"no probe set for {dataset} at {path}; run a training of that dataset first")
    tensors, _ = _read_tensors(path)
    return tensors["images"], tensors["labels"]


# ----------------------------------------------------------------------------- summary
def accuracy_table(table: pd.DataFrame, value: str = "final_top1") -> pd.DataFrame:
    """Method × density (%) table of ``value`` as "mean ± std (n)" over seeds (:func:`report.mean_sd`)."""
    table = table.assign(density_pct=(table["density"] * 100).round(6))
    pivot = table.pivot_table(index="method", columns="density_pct", values=value, aggfunc=report.mean_sd)
    return pivot.rename(columns=lambda d: f"{d:g} %")


def _mean_by_cell(table: pd.DataFrame, values: pd.Series, digits: int) -> str:
    """Markdown table of ``values`` (one per row of ``table``) averaged per method × density."""
    cells = table.assign(density_pct=(table["density"] * 100).round(6), value=values)
    pivot = cells.pivot_table(index="method", columns="density_pct", values="value", aggfunc="mean", dropna=False)
    pivot = pivot.round(digits).rename(columns=lambda d: f"{d:g} %")
    # A cell without a value (no run there, or none with a last fifth) is left blank, not "nan":
    # tabulate leaves only None out, so NaN becomes None first.
    return pivot.astype(object).where(pivot.notna(), None).to_markdown(missingval="")


def write_summary(root: str | os.PathLike | None = None) -> pd.DataFrame:
    """Rewrite ``summary.csv`` and the tables of ``README.md`` under ``root``. Returns the summary."""
    root = Path(root or DEFAULT_ROOT)
    table = runs(root)
    write_atomic(root / "summary.csv", table.to_csv(index=False).encode())
    lines = ["# Stored runs", "",
             "Generated by `python -m utils.cli summary` from the runs below; do not edit by hand.",
             "Each cell: final test top-1 (%) as mean ± std over seeds (number of seeds); a single seed "
             "shows its value alone.",
             "Densities are % of prunable weights remaining (target); `summary.csv` has the "
             "achieved densities, best accuracies and wall times of every run.", ""]
    # one section per recipe version, the newest first, so runs of two recipes are never averaged
    # together while a grid is being retrained under a new one
    versions = pd.to_numeric(table["recipe_version"])     # None (unversioned) -> NaN
    newest_first, latest = -versions.fillna(-1), versions.groupby(table["experiment"]).max()
    for (experiment, _), part in table.groupby([table["experiment"], newest_first]):
        profiles = ", ".join(sorted(part["profile"].dropna().unique()))
        version = part["recipe_version"].iloc[0]
        recipe = "" if pd.isna(version) else f" v{int(version)}"
        copies = ", ".join(sorted(part["data_copy"].dropna().unique())) or "not recorded"
        counts = part["precision"].fillna("not recorded").value_counts().sort_index()
        precisions = ", ".join(f"{p} ×{n}" for p, n in counts.items())
        lines += [f"## {experiment} (profile: {profiles}{recipe}; precision: {precisions}; "
                  f"trained and tested on: {copies})", ""]
        if recipe and version < latest[experiment]:
            lines += ["Runs of an earlier recipe version, kept until the newer one replaces them: "
                      "figures leave them out and `sweep` retrains them.", ""]
        lines += [accuracy_table(part).fillna("").to_markdown(), ""]
        lines += ["Achieved density (% remaining, mean over seeds):", "",
                  _mean_by_cell(part, part["density_achieved"] * 100, 2), "",
                  "Convergence: test top-1 gained over the last fifth of the final phase's epochs (points, "
                  "mean over seeds; the recipes were chosen on validation data, this only reports):", "",
                  _mean_by_cell(part, part["gain_last_fifth"], 2), "",
                  "Training time per run (minutes of wall time, mean over seeds; a run trained in a batch of K "
                  "counts its batch's time / K; with the machine's other work at the time):", "",
                  _mean_by_cell(part, part["wall_time_s"] / 60, 1), ""]
    lines += report.sections(root)
    write_atomic(root / "README.md", "\n".join(lines).encode())
    return table
