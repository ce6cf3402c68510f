"""The thesis's own trained networks as runs of this project's store.

The thesis repository (``tjayada/sparse_network_analysis``) keeps every network it trained
under ``All_Results/``.  :func:`import_thesis` reads them (from a clone, an archive of one, or a
download of the pinned commit) and writes each as a run of a separate, git-ignored runs store
(:func:`thesis_root`), under the experiments ``thesis_fc_mnist`` and ``thesis_resnet20_cifar10``,
so they load with the same call as ours::

    model, history, info, path = load_run("thesis_fc_mnist", "synflow", 0.1, 21)

The repository has no licence: its files are never committed here, only read from where the
user put them.  Loading is safe: checkpoints through ``torch.load(weights_only=True)``, the
pandas pickles through :class:`FrameUnpickler`, which admits only the pandas/numpy names that
rebuild a plain DataFrame.  Every file is checked against the sha256 of the pinned commit
(``utils/runs/thesis_manifest.json``) before it is read.

What each thesis file becomes (``info["thesis"]["files"]`` lists them per run):

================================  ==========================================================
thesis file                       stored as
================================  ==========================================================
``model_before_train.pt``         ``init``: the pruned init (weights + ``weight_mask``)
``post-model.pt``                 ``final``: the trained network
``post-train(-rand).pkl``         ``history.csv`` (row 0: before training)
``compression-*.pkl``             ``info["thesis"]["compression"]``: its per-layer densities
``synflow_parser_args.json``      ``info["thesis"]["args"]``
``init_model.pth`` (Gem-Miner)    extras ``init_scores.<layer>`` (its weights equal the mined ones)
``model_before_finetune.pth``     ``init`` (signed-constant weights, mined mask, all weights kept)
                                  + extras ``mined_scores.<layer>``, ``flag.<layer>``
``model_after_finetune.pth``      ``final`` (mask flag·[score>0.5], weights kept at the flags)
                                  + extras ``scores.<layer>`` (the rounded scores)
``acc_and_sparsity.csv``          ``history.csv`` (phases mining / rounded / finetune)
``acc_and_sparsity_{weight_reinit,mask_shuffle}.csv``  tables ``history_weight_reinit.csv``,
                                  ``history_mask_shuffle.csv`` (curves only: no network kept)
================================  ==========================================================

Anomalies are found in the data and written to ``info["thesis"]["anomalies"]``, one sentence
each (e.g. a Gem-Miner run far below its target density, a run whose density belongs to
another folder, a missing or truncated sanity-check log, a stale ``expid``).
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from utils.errors import DataError, UserError
from utils.progress import tqdm
from utils.runs import results
from utils.runs.thesis_source import (  # noqa: F401  (re-exported: the import's public names)
    ARCHIVE_NAME,
    ARCHIVE_URL,
    COMMIT,
    MANIFEST_FILE,
    REPOSITORY,
    FrameUnpickler,
    Source,
    is_imported,
    manifest,
    open_source,
    read_frame,
    read_state,
    thesis_root,
)

#: experiment names of the imported runs (our experiment → the thesis's)
EXPERIMENTS = {"FC": "thesis_fc_mnist", "Resnet20": "thesis_resnet20_cifar10"}
THESIS_OF = {"fc_mnist": "thesis_fc_mnist", "resnet20_cifar10": "thesis_resnet20_cifar10"}
METHODS = {"syn": "synflow", "rnd": "random", "gem": "gem-miner"}
PROFILE = "thesis-original"
#: the thesis's folder labels (%), and SynFlow's compressions c (density 10^-c) behind them
LABELS = (2, 5, 10, 20, 50)


# ----------------------------------------------------------------------------- key mapping
def _fc_layer(index: int) -> str:
    """Thesis Sequential index (1, 3, ..., 11) → our prunable layer name."""
    return f"layers.{(index - 1) // 2}"


def _resnet_key(key: str, gem: bool) -> str:
    """A thesis ResNet-20 state key → ours (``conv``/``bn`` → ``conv1``/``bn1``;
    Gem-Miner's ``layer{s}.{b}`` → ``blocks.{3(s-1)+b}``)."""
    if gem:
        m = re.match(r"layer(\d)\.(\d)\.(.*)", key)
        if m:
            return f"blocks.{3 * (int(m.group(1)) - 1) + int(m.group(2))}.{m.group(3)}"
        return key
    return re.sub(r"^conv\.", "conv1.", re.sub(r"^bn\.", "bn1.", key))


@dataclass
class Network:
    """One thesis checkpoint in our names: prunable weights, masks, and the other state."""
    weights: dict[str, Tensor]
    masks: dict[str, Tensor]
    other: dict[str, Tensor]
    flags: dict[str, Tensor] = field(default_factory=dict)
    scores: dict[str, Tensor] = field(default_factory=dict)
    unused_ones: list[str] = field(default_factory=list)   # all-ones masks of unpruned tensors


def parse_checkpoint(state: dict[str, Tensor], arch: str, gem: bool, prunable: list[str]) -> Network:
    """Split a thesis state dict into our names.

    Args:
        state: the thesis checkpoint.
        arch: ``"FC"`` or ``"Resnet20"``.
        gem: a Gem-Miner checkpoint (``flag``/``scores`` per layer, mask = flag·[score>0.5]).
        prunable: our prunable layer names, to tell masks of pruned tensors from the all-ones
            masks the thesis kept on BN, biases and unpruned shortcuts.
    """
    net = Network({}, {}, {})
    for key, value in state.items():
        if arch == "FC":
            m = re.match(r"(?:model\.)?(\d+)\.(.*)", key)
            name, part = _fc_layer(int(m.group(1))), m.group(2)
        else:
            mapped = _resnet_key(key, gem)
            name, part = mapped.rsplit(".", 1)
        if part in ("bias_flag", "bias_scores"):
            continue                                    # Gem-Miner's unused bias scores
        if name in prunable:
            if part == "weight":
                net.weights[name] = value.float()
            elif part == "weight_mask":
                net.masks[name] = value > 0
            elif part == "flag":
                net.flags[name] = value > 0
            elif part == "scores":
                net.scores[name] = value.float()
            elif part == "bias":
                net.other[f"{name}.bias"] = value
            elif part == "bias_mask":
                _require_ones(value, key, net)
            else:
                raise DataError(f"unexpected thesis key {key}")
        elif part.endswith("_mask"):
            _require_ones(value, key, net)
        else:
            net.other[f"{name}.{part}"] = value
    if gem:
        net.masks = {n: net.flags[n] & (net.scores[n] > 0.5) for n in net.flags}
    missing = set(prunable) - set(net.weights)
    if missing:
        raise DataError(f"thesis checkpoint lacks the layers {sorted(missing)}")
    return net


def _require_ones(mask: Tensor, key: str, net: Network) -> None:
    if not bool((mask == 1).all()):
        raise DataError(f"thesis mask {key} of an unpruned tensor is not all ones")
    net.unused_ones.append(key)


@torch.no_grad()
def build_network(net: Network, model: nn.Module, support: dict[str, Tensor] | None = None) -> nn.Module:
    """Load a parsed checkpoint into ``model`` (masks set; weights outside ``support`` ∪ mask zeroed,
    as the runs store keeps them)."""
    from models.masks import prunable_layers, raw_weight, set_masks
    layers = prunable_layers(model)
    for name, module in layers.items():
        keep = net.masks[name] | (support[name] if support is not None else net.masks[name])
        raw_weight(module).copy_(torch.where(keep, net.weights[name], torch.zeros(())))
    set_masks(model, net.masks, zero_pruned=False)
    missing, unexpected = model.load_state_dict(net.other, strict=False)
    masked = tuple(f"{n}.parametrizations.weight." for n in layers)
    missing = [k for k in missing if not k.startswith(masked)]
    if missing or unexpected:
        raise DataError(f"thesis checkpoint does not fit the model: missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]}")
    return model.eval()


def model_spec(arch: str, gem: bool) -> dict:
    """The ``run.json`` model entry of a thesis network."""
    if arch == "FC":
        return {"name": "fc", "kwargs": {"hidden_bias": not gem, "output_bias": False}}
    return {"name": "resnet20", "kwargs": {"shortcut": "B", "prune_shortcuts": not gem, "fc_bias": not gem,
                                           "identity_weights": True}}


# ----------------------------------------------------------------------------- histories
def synflow_history(frame: pd.DataFrame, density: float) -> pd.DataFrame:
    """``post-train.pkl`` (row 0 before training) → our history columns."""
    return pd.DataFrame({
        "epoch": np.arange(len(frame)), "phase": "train", "train_loss": frame["train_loss"].to_numpy(),
        "test_loss": frame["test_loss"].to_numpy(), "top1": frame["top1_accuracy"].to_numpy(),
        "top5": frame["top5_accuracy"].to_numpy(), "density": density, "seconds": np.nan})


def gem_history(frame: pd.DataFrame, mining_epochs: int) -> pd.DataFrame:
    """``acc_and_sparsity*.csv`` (E mining rows, one post-rounding row, then finetune rows) →
    our history columns; ``test_acc_before_rounding`` = −1 (not logged) becomes NaN."""
    n = len(frame)
    phase = ["mining"] * mining_epochs + ["rounded"] + ["finetune"] * max(n - mining_epochs - 1, 0)
    effective = frame["model_sparsity"].to_numpy() / 100
    return pd.DataFrame({
        "epoch": frame["epoch"].to_numpy(), "phase": phase[:n], "train_loss": np.nan, "test_loss": np.nan,
        "top1": frame["test_acc"].to_numpy(), "top5": np.nan, "density": effective, "seconds": np.nan,
        "density_effective": effective, "val_acc": frame["val_acc"].to_numpy(),
        "reg_loss": frame["regularization_loss"].to_numpy(), "train_acc": frame["train_acc"].to_numpy(),
        "top1_before_rounding": frame["test_acc_before_rounding"].replace(-1.0, np.nan).to_numpy()})


# ----------------------------------------------------------------------------- the runs
@dataclass
class ThesisRun:
    """One run folder of ``All_Results/``."""
    arch: str                 # "FC" or "Resnet20"
    method: str               # ours: synflow, random, gem-miner, dense, random-fc
    label: float              # the folder's density label in % (Random-FC: 7, dense: 100)
    seed: int
    folder: Path

    @property
    def experiment(self) -> str:
        return EXPERIMENTS[self.arch]

    @property
    def key(self) -> str:
        return f"{self.experiment}/{self.method}/d{self.label:g}/s{self.seed}"


def discover(repo: Path) -> list[ThesisRun]:
    """Every run folder under ``repo/All_Results`` (FC, ResNet-20, dense FC, Random-FC)."""
    base = repo / "All_Results"
    found = []
    for arch in ("FC", "Resnet20"):
        for folder in sorted((base / arch).glob("*/*")):
            m = re.fullmatch(r"(?:(syn|rnd|gem)_(\d+)|(100))_(\d+)", folder.name)
            if not folder.is_dir() or not m:
                continue
            if m.group(3):
                found.append(ThesisRun(arch, "dense", 100, int(m.group(4)), folder))
            else:
                found.append(ThesisRun(arch, METHODS[m.group(1)], float(m.group(2)), int(m.group(4)), folder))
    for folder in sorted((base / "Random-FC").glob("rnd_*")):
        found.append(ThesisRun("FC", "random-fc", 7, int(folder.name.split("_")[1]), folder))
    return found


def _check_file(path: Path, repo: Path, known: dict[str, str], files: dict[str, str]) -> Path:
    """Verify ``path`` against the pinned commit's sha256 and note it in ``files``."""
    import hashlib
    rel = path.relative_to(repo).as_posix()
    if rel not in known:
        raise DataError(f"{rel} is not a file of {REPOSITORY} at {COMMIT[:7]}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != known[rel]:
        raise DataError(f"{rel} differs from {REPOSITORY} at {COMMIT[:7]} (sha256 mismatch)")
    files[path.name] = rel
    return path


def _one(folder: Path, pattern: str) -> Path | None:
    hits = sorted(folder.glob(pattern))
    return hits[0] if hits else None


def _model(spec: dict) -> nn.Module:
    from models import build_model
    return build_model(spec["name"], **spec["kwargs"])


def _prunable(spec: dict) -> list[str]:
    from models.masks import prunable_layers
    return list(prunable_layers(_model(spec)))


def _density(masks: dict[str, Tensor]) -> float:
    return sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())


def _nearest_label(density: float) -> float:
    return min(LABELS, key=lambda label: abs(math.log(density * 100 / label)))


def mislabelled_as(density: float, label: float) -> float | None:
    """The grid label (percent) whose runs a thesis run of achieved ``density`` (fraction) really
    is, when that is not its folder's ``label`` (within 2 % of another label: a mislabelled run,
    e.g. Resnet20/10/gem_10_42 at 4.998 %); ``None`` otherwise.  Example:
    ``mislabelled_as(0.04998, 10) == 5`` and ``mislabelled_as(0.0297, 10) is None``."""
    nearest = _nearest_label(density)
    return nearest if nearest != label and abs(density * 100 - nearest) / nearest < 0.02 else None


def _standard_levels(arch: str) -> tuple[int, int]:
    return (10, 1) if arch == "FC" else (10, 100)


def _prune_at_init_anomalies(run: ThesisRun, args: dict, achieved: float, same_masks: bool) -> list[str]:
    out = []
    c = float(args["compression_list"][0])
    if run.method in ("synflow", "random"):
        if abs(10 ** -c * 100 - run.label) / run.label > 0.05:
            out.append(f"its parser args prune to {10 ** -c * 100:.3g} % (compression {c:g}), not its "
                       f"folder's {run.label:g} %")
        levels = (args["level_list"][0], args["prune_epochs"])
        if levels != _standard_levels(run.arch):
            std = _standard_levels(run.arch)
            out.append(f"pruned with {levels[0]} level(s) × {levels[1]} iteration(s), where the other "
                       f"{run.arch} runs used {std[0]} × {std[1]}")
        if abs(achieved - 10 ** -c) > 1e-3:
            out.append(f"its masks keep {100 * achieved:.3f} %, not the {10 ** -c * 100:.3f} % of compression {c:g}")
    m_seed, m_c = re.search(r"seed_(\d+)", args.get("expid", "")), re.search(r"compr_([\d_.]+?)(?:_multi)?$",
                                                                               args.get("expid", ""))
    if m_seed and int(m_seed.group(1)) != run.seed:
        out.append(f"its expid {args['expid']!r} names seed {m_seed.group(1)}, its args seed {run.seed}")
    if m_c and run.method != "random-fc":
        named = float(m_c.group(1).replace("_", ".", 1).replace("_", ""))
        if abs(named - c) > 1e-9:
            out.append(f"its expid {args['expid']!r} names compression {m_c.group(1)}, its args {c:g}")
    if not same_masks:
        out.append("the trained network's masks differ from the pruned init's")
    return out


def _extra_entries(run: ThesisRun, expected: set[str]) -> list[str]:
    out = []
    for entry in sorted(run.folder.iterdir()):
        if entry.name in expected:
            continue
        if entry.is_dir():
            args = entry / "synflow_parser_args.json"
            what = (f"a {json.loads(args.read_text()).get('pruner')} run by its parser args"
                    if args.is_file() else "files")
            out.append(f"its folder also holds {entry.name}/ ({what}), not imported")
    return out


def _compression_table(frame: pd.DataFrame, arch: str, prunable: list[str]) -> dict[str, float]:
    """Per-layer densities the thesis recorded after pruning (``sparsity`` of each pruned weight)."""
    out = {}
    for _, row in frame.iterrows():
        if row["param"] != "weight" or not bool(row["prunable"]):
            continue
        module = str(row["module"])
        name = _fc_layer(int(module)) if arch == "FC" else _resnet_key(f"{module}.weight", False)[:-7]
        if name in prunable:
            out[name] = float(row["sparsity"])
    return out


#: resident-block limits of the GPUs the thesis pruned on, as its random masks reveal them
GPU_BLOCK_LIMITS = (288, 192, 48)


def infer_random_stream(masks: dict[str, Tensor], model: nn.Module, density: float, seed: int, levels: int,
                        iterations: int) -> dict | None:
    """Which of the thesis's GPUs drew a random run's scores: the block limit whose replayed mask
    (:class:`pruners.random.Random` with ``stream="thesis"``) agrees best with ``masks``.

    Returns ``{"max_blocks", "agreement_min_layer"}`` if some limit reproduces every layer to
    ≥ 99.9 %, else ``None`` (the run's scores are not the seed's stream).
    """
    import copy

    from models.masks import get_masks
    from pruners.random import Random
    best = None
    for limit in GPU_BLOCK_LIMITS:
        candidate = copy.deepcopy(model)
        Random(stream="thesis", levels=levels, iterations=iterations, max_blocks=limit).prune(
            candidate, density, seed=seed, data_shape=())
        replayed = get_masks(candidate)
        worst = min(float((replayed[n] == masks[n]).float().mean()) for n in masks)
        if best is None or worst > best["agreement_min_layer"]:
            best = {"max_blocks": limit, "agreement_min_layer": worst}
    return best if best["agreement_min_layer"] >= 0.999 else None


def import_prune_at_init(run: ThesisRun, repo: Path, known: dict[str, str]) -> dict:
    """The pieces of a SynFlow / random / dense / Random-FC run (see the module table)."""
    files: dict[str, str] = {}
    args = json.loads(_check_file(run.folder / "synflow_parser_args.json", repo, known, files).read_text())
    spec = model_spec(run.arch, gem=False)
    prunable = _prunable(spec)
    init = parse_checkpoint(read_state(_check_file(run.folder / "model_before_train.pt", repo, known, files)),
                            run.arch, False, prunable)
    final = parse_checkpoint(read_state(_check_file(run.folder / "post-model.pt", repo, known, files)),
                             run.arch, False, prunable)
    achieved = _density(final.masks)
    history = synflow_history(read_frame(_check_file(_one(run.folder, "post-train*.pkl"), repo, known, files)),
                              achieved)
    compression_file = _one(run.folder, "compression-*.pkl")
    compression = (_compression_table(read_frame(_check_file(compression_file, repo, known, files)), run.arch,
                                      prunable) if compression_file else None)
    same = all(torch.equal(init.masks[n], final.masks[n]) for n in prunable)
    anomalies = _prune_at_init_anomalies(run, args, achieved, same)
    anomalies += _extra_entries(run, {p.name for p in run.folder.iterdir() if p.is_file()})
    c = float(args["compression_list"][0])
    target = {"dense": 1.0, "random-fc": achieved}.get(run.method, 10 ** -c)
    stream = None
    if run.method == "random":
        stream = infer_random_stream(init.masks, _model(spec), target, run.seed, args["level_list"][0],
                                     args["prune_epochs"])
        if stream is None:
            anomalies.append("its random mask is not the seed's GPU stream on any of the thesis's GPUs "
                             "(the replay agrees only at the chance level)")
    train = {"epochs": args["post_epochs"], "batch_size": args["train_batch_size"], "lr": args["lr"],
             "optimizer": args["optimizer"], "weight_decay": args["weight_decay"],
             "milestones": args["lr_drops"], "gamma": args["lr_drop_rate"]}
    return {"spec": spec, "final": build_network(final, _model(spec)), "init": build_network(init, _model(spec)),
            "history": history, "target": target, "files": files, "anomalies": anomalies,
            "thesis": {"args": args, "compression": compression, "train": train, "random_stream": stream}}


def import_gem_miner(run: ThesisRun, repo: Path, known: dict[str, str]) -> dict:
    """The pieces of a Gem-Miner run (see the module table)."""
    files: dict[str, str] = {}
    spec = model_spec(run.arch, gem=True)
    prunable = _prunable(spec)
    load = lambda name: parse_checkpoint(read_state(_check_file(run.folder / name, repo, known, files)),
                                         run.arch, True, prunable)
    start, mined, final = load("init_model.pth"), load("model_before_finetune.pth"), load("model_after_finetune.pth")
    main = pd.read_csv(_check_file(run.folder / "acc_and_sparsity.csv", repo, known, files))
    mining_epochs = (len(main) - 1) // 2
    history = gem_history(main, mining_epochs)
    tables, anomalies = {}, []
    for check in ("weight_reinit", "mask_shuffle"):
        path = run.folder / f"acc_and_sparsity_{check}.csv"
        if not path.is_file():
            anomalies.append(f"its {check.replace('_', '-')} sanity-check log is missing")
            continue
        frame = pd.read_csv(_check_file(path, repo, known, files))
        if len(frame) != len(main):
            anomalies.append(f"its {check.replace('_', '-')} log ends after {len(frame) - mining_epochs - 1} of "
                             f"{mining_epochs} finetune epochs")
        tables[f"history_{check}.csv"] = gem_history(frame, mining_epochs)
    achieved, flagged = _density(final.masks), _density(final.flags)
    target = run.label / 100
    nearest = mislabelled_as(achieved, run.label)
    if nearest is not None:
        anomalies.append(f"its density {100 * achieved:.3f} % is that of the {nearest:g} % runs, not its "
                         f"folder's {run.label:g} % (a mislabelled run)")
    elif achieved < 0.9 * target:
        anomalies.append(f"its effective density flag·[score>0.5] is {100 * achieved:.2f} %, far below its "
                         f"target {run.label:g} % (its flags keep {100 * flagged:.2f} %): the scores sank "
                         f"below 0.5 during mining")
    if not all(torch.equal(start.weights[n], mined.weights[n]) for n in prunable):
        anomalies.append("its weights changed during mining (they should be frozen)")
    if not all(torch.equal(mined.masks[n], final.masks[n]) for n in prunable):
        anomalies.append("its mask changed during the finetune")
    anomalies += _extra_entries(run, {p.name for p in run.folder.iterdir() if p.is_file()})
    everything = {n: torch.ones_like(m) for n, m in mined.masks.items()}
    extras = {f"flag.{n}": f for n, f in final.flags.items()}
    extras.update({f"scores.{n}": final.scores[n] > 0.5 for n in prunable})
    extras.update({f"mined_scores.{n}": mined.scores[n] for n in prunable})
    extras.update({f"init_scores.{n}": start.scores[n] for n in prunable})
    info = {"mode": "thesis", "scope": "global", "target_density": target, "density": achieved,
            "density_flag": flagged, "mining_epochs": mining_epochs}
    return {"spec": spec, "final": build_network(final, _model(spec), final.flags),
            "init": build_network(mined, _model(spec), everything), "init_support": everything,
            "support": final.flags, "history": history, "tables": tables, "target": target, "files": files,
            "anomalies": anomalies, "extras": extras, "info": info, "thesis": {}}


def import_run(run: ThesisRun, repo: Path, known: dict[str, str], root: Path) -> Path:
    """Import one thesis run folder into the runs store at ``root``; returns the run directory."""
    parts = (import_gem_miner if run.method == "gem-miner" else import_prune_at_init)(run, repo, known)
    history = parts["history"]
    record = {
        "experiment": run.experiment, "method": run.method, "density_label": run.label / 100,
        "density_target": parts["target"], "seed": run.seed, "profile": PROFILE,
        "dataset": "mnist" if run.arch == "FC" else "cifar10",
        "config": {"file": None, "train": parts["thesis"].get("train"), "method_options": {}, "overrides": {}},
        "wall_time_s": None, "info": parts.get("info", {}),
        "compute": {"device": "cuda (the thesis's GPU)", "bf16": False, "channels_last": False},
        "data": {"dataset": "mnist" if run.arch == "FC" else "cifar10", "copy": "official"},
        "thesis": {"repository": REPOSITORY, "commit": COMMIT,
                   "folder": run.folder.relative_to(repo).as_posix(), "files": parts["files"],
                   "final_top1_recorded": float(history["top1"].iloc[-1]),
                   "anomalies": parts["anomalies"],
                   **{k: v for k, v in parts["thesis"].items() if k != "train"}},
    }
    path = results.run_dir(run.experiment, run.method, run.label / 100, run.seed, root)
    return results.save_run(path, model=parts["final"], init_model=parts["init"], history=history,
                            model_spec=parts["spec"], record=record, extras=parts.get("extras"),
                            support=parts.get("support"), init_support=parts.get("init_support"),
                            tables=parts.get("tables"), overwrite=True)


def import_thesis(source: str | os.PathLike | None = None, root: str | os.PathLike | None = None,
                  download_dir: str | os.PathLike | None = None, progress: bool = True) -> list[Path]:
    """Import every thesis run into the runs store at ``root`` (default :func:`thesis_root`).

    Args:
        source: a clone of the thesis repository, an archive of it (.tar.xz/.tar.gz/.zip), or
            ``None`` to download the pinned commit's archive.
        root: the runs store to write (git-ignored by default).
        download_dir: where a download goes (default the parent of :func:`thesis_root`).

    Returns:
        the run directories written.  ``root/IMPORTED.json`` is written last, with the
        commit, the run count and every anomaly found.

    Raises:
        UserError: the source is not the thesis repository, a file differs from the pinned
            commit, or the download failed (the message says what to fetch by hand).
    """
    root = Path(root or thesis_root())
    src = open_source(source, download_dir, progress)
    try:
        known = manifest()
        runs = discover(src.root)
        if not runs:
            raise UserError(f"{src.root}/All_Results holds no run folders")
        written = [import_run(run, src.root, known, root)
                   for run in tqdm(runs, desc="import thesis runs", disable=not progress)]
    finally:
        src.cleanup()
    anomalies = {}
    for path in written:
        record = results.read_record(path, verify=False)
        if record["thesis"]["anomalies"]:
            anomalies[str(path.relative_to(root))] = record["thesis"]["anomalies"]
    results.write_atomic(root / "IMPORTED.json", json.dumps(
        {"repository": REPOSITORY, "commit": COMMIT, "runs": len(written), "anomalies": anomalies},
        indent=1).encode())
    return written
