"""The thesis figures (SPEC §10), computed from a runs store and drawn with :mod:`utils.plots`.

Each figure has a name (the file stem of SPEC §10) and a builder that reads only the
runs store (``results/`` by default; probe images from ``results/probe/``), computes the
analysis and returns a figure.  Builders first check that every run they need is
stored and raise :class:`MissingRuns` otherwise, so :func:`make` can skip the figure
with one clear line instead of failing.

>>> store = Store("results", mask_mode="effective", compat=None)
>>> make(["fc_acc", "50_sparse_layers"], store, "figures")   # writes figures/fc_acc.{pdf,png}, ...

Options of :class:`Store`:

- ``mask_mode="effective"`` (default) analyses Gem-Miner's effective mask (the weights
  the network actually uses); ``"flag"`` analyses its flags, as the thesis did.
- ``compat="thesis"`` switches every analysis to the thesis's own computation
  (``thesis=True`` statistics, flattened-layer distances without propagation, linearised
  activations); ``None`` is the corrected default.
- ``fast=True`` uses 200 instead of 600 probe images for the correlation matrix.
"""
from __future__ import annotations

import os
import sys
import textwrap
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import plots
from .results import DEFAULT_ROOT, Run, is_complete, load_probe, load_run, read_record, run_dir, runs
from .thesis import THESIS_OF

FC, RESNET = "fc_mnist", "resnet20_cifar10"
METHODS = ("gem-miner", "synflow", "random")
TAGS = {"gem-miner": "gem", "synflow": "syn", "random": "rnd"}
SEEDS = (21, 42, 63)
DENSITIES = (2, 5, 10, 20, 50)
RANDOM_FC = ("random-fc", 7)
ARCH = {FC: "FC 784-100×5-10 / MNIST", RESNET: "ResNet-20 / CIFAR-10"}
#: seeds shown by the single-run figures (the thesis's titles were wrong; we show the true seed)
MAP_SEED = 42
KERNEL_SEEDS = {"gem-miner": 21, "synflow": 42, "random": 42}


class MissingRuns(LookupError):
    """Some runs a figure needs are not stored; ``str()`` summarises them on one line."""

    def __init__(self, missing: Sequence[tuple[str, str, float, int]], root: Path, detail: str | None = None):
        self.missing = list(missing)
        self.root = root
        super().__init__(detail or f"{len(self.missing)} run(s) missing under {root}: "
                                   f"{summarise(self.missing)}")


def summarise(keys: Iterable[tuple[str, str, float, int]]) -> str:
    """``[(experiment, method, density %, seed), ...]`` → ``"fc_mnist/synflow d2,5 × s21,42,63; ..."``."""
    by_density = defaultdict(list)
    for exp, method, d, s in keys:
        by_density[(exp, method, d)].append(s)
    grouped = defaultdict(list)
    for (exp, method, d), seeds in by_density.items():
        grouped[(exp, method, tuple(sorted(seeds)))].append(d)
    parts = []
    for (exp, method, seeds), dens in grouped.items():
        parts.append(f"{exp}/{method} d{','.join(f'{d:g}' for d in sorted(dens))} × "
                     f"s{','.join(map(str, seeds))}")
    return "; ".join(parts)


def tag(method: str, seed: int) -> str:
    """Run tag of a heatmap tick: ``gem_21``, ``syn_42``, ``rnd_63``."""
    return f"{TAGS.get(method, method)}_{seed}"


# ----------------------------------------------------------------------------- store
class Store:
    """Cached read access to a runs store with the analysis options of the notebook.

    Args:
        root: runs store root (``"results"``; for ``source="thesis"`` the import store).
        mask_mode: ``"effective"`` or ``"flag"`` (Gem-Miner flags, the thesis's view).
        compat: ``None`` (corrected analyses) or ``"thesis"``.
        fast: fewer probe images for the correlation matrix.
        source: ``"ours"`` or ``"thesis"``: the thesis's own networks (``import-thesis``), read
            under the experiments ``thesis_fc_mnist`` / ``thesis_resnet20_cifar10``.
        probe_root: where the probe images are (default ``results/``).
        caption: a line drawn above every figure of this store (which networks, which analysis).

    Runs stored under an older version of their recipe (``run.json`` → ``recipe.version``
    differs from the config's profile) count as missing, so a figure never mixes recipes.
    """

    def __init__(self, root: str | os.PathLike = "results", mask_mode: str = "effective",
                 compat: str | None = None, fast: bool = False, source: str = "ours",
                 probe_root: str | os.PathLike | None = None, caption: str | None = None):
        if mask_mode not in ("effective", "flag"):
            raise ValueError(f"mask_mode must be 'effective' or 'flag', got {mask_mode!r}")
        if compat not in (None, "thesis"):
            raise ValueError(f"compat must be None or 'thesis', got {compat!r}")
        if source not in ("ours", "thesis"):
            raise ValueError(f"source must be 'ours' or 'thesis', got {source!r}")
        self.root = Path(root)
        self.source = source
        self.caption = caption
        self.probe_root = Path(probe_root) if probe_root is not None else DEFAULT_ROOT
        self._versions: dict[str, int | None] = {}
        self.mask_mode = mask_mode
        self.compat = compat
        self.fast = fast
        self._runs: dict[tuple, Run] = {}
        self._units: dict[tuple, list[np.ndarray]] = {}
        self._records: dict[tuple, dict] = {}
        self.written: list[str] = []
        self.skipped: dict[str, str] = {}
        self.partial: dict[str, str] = {}
        self._unused: list[tuple] = []   # missing runs of the figure being built (see complete_seeds)

    @property
    def thesis(self) -> bool:
        return self.compat == "thesis"

    def experiment(self, experiment: str) -> str:
        """The store's name of an experiment (``thesis_fc_mnist`` for ``fc_mnist`` in the thesis store)."""
        return THESIS_OF.get(experiment, experiment) if self.source == "thesis" else experiment

    def _path(self, experiment: str, method: str, density: float, seed: int) -> Path:
        return run_dir(self.experiment(experiment), method, density / 100, seed, self.root)

    def recipe_version(self, experiment: str) -> int | None:
        """The current recipe version of our experiment's default profile (``None``: unversioned)."""
        if self.source == "thesis":
            return None
        if experiment not in self._versions:
            from .experiment import load_config, profile_of
            try:
                self._versions[experiment] = profile_of(load_config(experiment), None)[1].get("version")
            except Exception:   # an experiment without a config (e.g. a test store) is unversioned
                self._versions[experiment] = None
        return self._versions[experiment]

    def current(self, table: pd.DataFrame, experiment: str) -> pd.DataFrame:
        """The rows of a :func:`utils.results.runs` table that belong to ``experiment`` under its
        current recipe (stale runs dropped)."""
        table = table[table["experiment"] == self.experiment(experiment)]
        version = self.recipe_version(experiment)
        return table if version is None else table[table["recipe_version"] == version]

    def recipe_note(self, experiment: str) -> str:
        """How the experiment's runs were trained, for the titles of accuracy figures, e.g.
        ``"cpu profile v2, 30 epochs; trained and tested on the jpeg-q75 CIFAR-10 copy"``."""
        table = self.current(runs(self.root), experiment)
        if table.empty:
            return ""
        record = read_record(self.root / table["path"].iloc[0], verify=False)
        if record.get("profile") == "thesis-original":
            # the thesis's Gem-Miner configs name no train phase, so take the epochs from any run that has one
            trains = (((read_record(self.root / path, verify=False).get("config") or {}).get("train"))
                      for path in table["path"])
            epochs = next((train["epochs"] for train in trains if train and "epochs" in train), None)
            return f"the thesis's recipe ({f'{epochs} epochs, ' if epochs else ''}official images)"
        epochs = record["config"]["train"]["epochs"]
        version = (record.get("recipe") or {}).get("version")
        note = f"{record['profile']} profile{f' v{version}' if version else ''}, {epochs} epochs"
        copies = sorted(set(table["data_copy"].dropna()))
        if record.get("dataset") == "cifar10" and copies:
            note += f"; CIFAR-10 copy: {', '.join(copies)}"
        return note

    def has(self, experiment: str, method: str, density: float, seed: int) -> bool:
        """Whether the run (density in %) is stored under the current recipe."""
        path = self._path(experiment, method, density, seed)
        if not is_complete(path):
            return False
        version = self.recipe_version(experiment)
        if version is None:
            return True
        return (read_record(path, verify=False).get("recipe") or {}).get("version") == version

    def require(self, keys: Iterable[tuple[str, str, float, int]]) -> None:
        """Raise :class:`MissingRuns` unless every ``(experiment, method, density %, seed)`` is stored."""
        missing = [k for k in keys if not self.has(*k)]
        if missing:
            raise MissingRuns(missing, self.root)

    def complete_seeds(self, experiment: str, methods=METHODS, densities=DENSITIES,
                       seeds=SEEDS) -> tuple[int, ...]:
        """The seeds whose runs are stored for every (method, density).

        Figures that average or pool over seeds use these, so that every line and every
        violin rests on the same seeds.  While a grid is still being trained this draws
        the figure from the complete seeds (its title names them) and keeps the missing
        runs for the report; raises :class:`MissingRuns` if no seed is complete.
        """
        keys = grid(experiment, methods, densities, seeds)
        missing = [k for k in keys if not self.has(*k)]
        complete = tuple(s for s in seeds if not any(k[3] == s for k in missing))
        if not complete:
            raise MissingRuns(missing, self.root)
        self._unused += missing
        return complete

    def run(self, experiment: str, method: str, density: float, seed: int) -> Run:
        """The stored run (density in %), loaded once and verified."""
        key = (experiment, method, density, seed)
        if key not in self._runs:
            self._runs[key] = load_run(self.experiment(experiment), method, density / 100, seed, self.root)
        return self._runs[key]

    def history(self, experiment: str, method: str, density: float, seed: int) -> pd.DataFrame:
        """The run's ``history.csv`` (checksums verified; the weights are not decoded)."""
        key = (experiment, method, density, seed)
        if key in self._runs:
            return self._runs[key].history
        self.record(experiment, method, density, seed)
        return pd.read_csv(self._path(experiment, method, density, seed) / "history.csv")

    def record(self, experiment: str, method: str, density: float, seed: int) -> dict:
        """The run's ``run.json`` (verified)."""
        key = (experiment, method, density, seed)
        if key in self._runs:
            return self._runs[key].info
        if key not in self._records:
            if not self.has(*key):
                raise MissingRuns([key], self.root)
            self._records[key] = read_record(self._path(experiment, method, density, seed))
        return self._records[key]

    def masks(self, experiment: str, method: str, density: float, seed: int) -> dict[str, torch.Tensor]:
        """Bool masks of the analysis layers under the store's mask mode."""
        from models import analysis_layers
        run = self.run(experiment, method, density, seed)
        masks = run.masks(self.mask_mode)
        return {name: masks[name] for name in analysis_layers(run.model)}

    def units(self, experiment: str, method: str, density: float, seed: int) -> list[np.ndarray]:
        """W⊙mask per analysis layer (float64), under the store's mask mode."""
        from .analysis import get_units
        key = (experiment, method, density, seed)
        if key not in self._units:
            run = self.run(*key)
            override = self.masks(*key) if self.mask_mode == "flag" else None
            self._units[key] = get_units(run.model, override)
        return self._units[key]

    def model(self, experiment: str, method: str, density: float, seed: int) -> torch.nn.Module:
        """The trained model; in flag mode a copy whose masks are the Gem-Miner flags."""
        import copy

        from models import set_masks
        run = self.run(experiment, method, density, seed)
        if self.mask_mode == "effective" or not any(k.startswith("flag.") for k in run.extras()):
            return run.model
        model = copy.deepcopy(run.model)
        set_masks(model, run.masks("flag"), zero_pruned=False)
        return model.eval()

    def label(self, method: str) -> str:
        """Display name; Gem-Miner is marked "(flags)" in flag mode."""
        name = plots.METHOD_LABELS.get(method, method)
        return f"{name} (flags)" if method == "gem-miner" and self.mask_mode == "flag" else name

    def inventory(self) -> pd.DataFrame:
        """Seeds stored per experiment, method and density (%): a quick view of the store."""
        from .results import runs
        table = runs(self.root)
        if table.empty:
            return table
        table = table.assign(density_pct=(table["density"] * 100).round(6))
        return table.pivot_table(index=["experiment", "method"], columns="density_pct", values="seed",
                                 aggfunc="count", fill_value=0)


    def achieved(self, experiment: str, methods=METHODS) -> pd.DataFrame:
        """Achieved (effective-mask) density in % per method × target density, mean over stored seeds."""
        from .results import runs
        table = self.current(runs(self.root), experiment)
        table = table[table["method"].isin(methods)]
        if table.empty:
            return pd.DataFrame()
        table = table.assign(target=(table["density"] * 100).round(6), achieved=table["density_achieved"] * 100)
        return table.pivot_table(index="method", columns="target", values="achieved", aggfunc="mean").round(2)


def grid(experiment: str, methods=METHODS, densities=DENSITIES, seeds=SEEDS) -> list[tuple]:
    return [(experiment, m, d, s) for m in methods for d in densities for s in seeds]


def seeds_phrase(seeds: Sequence[int]) -> str:
    """``"3 seeds"`` for the full set, else ``"seed 21 only"`` / ``"seeds 21, 42 only"``."""
    if tuple(seeds) == SEEDS:
        return f"{len(SEEDS)} seeds"
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))} only"


# ----------------------------------------------------------------------------- helpers
def accuracy_curve(history: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(epoch, top-1) of the training that produced the final weights.

    Gem-Miner: the post-rounding row plus finetuning (x starts at 0), S/R/Random-FC: the
    evaluation before training plus every epoch.
    """
    phases = set(history["phase"])
    if "rounded" in phases:
        h = history[history["phase"].isin(["rounded", "finetune"])]
    else:
        h = history[history["phase"] != "mining"]
    x = h["epoch"].to_numpy() - h["epoch"].iloc[0]
    return x, h["top1"].to_numpy(dtype=float)


def _stack(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    n = min(len(x) for x, _ in curves)
    return curves[0][0][:n], np.vstack([y[:n] for _, y in curves])


def _layer_density(masks: dict[str, torch.Tensor]) -> np.ndarray:
    return np.array([100.0 * float(m.float().mean()) for m in masks.values()])


def _pooled(per_seed: list[list[np.ndarray]]) -> list[np.ndarray]:
    """[[layer arrays of seed 1], [of seed 2], ...] → per layer, the seeds concatenated."""
    return [np.concatenate([np.asarray(s[i], dtype=float).ravel() for s in per_seed])
            for i in range(len(per_seed[0]))]


# ----------------------------------------------------------------------------- N01 accuracy
def accuracy(store: Store, experiment: str):
    """``fc_acc`` / ``resnet_acc``: seed-mean test top-1 per epoch, panels G/S/R, a line per density."""
    seeds = store.complete_seeds(experiment)
    panels = {}
    for method in METHODS:
        lines = {}
        for d in DENSITIES:
            lines[f"{d}%"] = _stack([accuracy_curve(store.history(experiment, method, d, s))
                                     for s in seeds])
        title = f"{store.label(method)}" + (" (finetuning after rounding)" if method == "gem-miner" else "")
        panels[title] = lines
    return plots.accuracy_curves(panels, legend_title=f"{ARCH[experiment]}; {store.recipe_note(experiment)}\n"
                                                      f"line: mean over {seeds_phrase(seeds)}, band: ±1 sd over "
                                                      f"seeds; target density (% remaining)")


def random_fc_accuracy(store: Store):
    """``rnd_7_acc``: Random-FC test top-1 per epoch, one line per seed (x is epochs)."""
    method, d = RANDOM_FC
    store.require([(FC, method, d, s) for s in SEEDS])
    curves = {s: accuracy_curve(store.history(FC, method, d, s)) for s in SEEDS}
    achieved = np.mean([store.record(FC, method, d, s)["density_achieved"] for s in SEEDS]) * 100
    return plots.seed_curves(curves, title=f"Random-FC ({achieved:.1f}% density): test accuracy")


# ----------------------------------------------------------------------------- N02 density per layer
def sparse_layers(store: Store, experiment: str, density: float):
    """``50_sparse_layers`` etc.: seed-mean density per analysis layer, a line per method."""
    seeds = store.complete_seeds(experiment, densities=[density])
    lines, errors, colors, markers = {}, {}, {}, {}
    for method in METHODS:
        values = np.vstack([_layer_density(store.masks(experiment, method, density, s)) for s in seeds])
        label = store.label(method)
        lines[label], errors[label] = values.mean(0), values.std(0)
        colors[label] = plots.METHOD_COLORS[method]
        markers[label] = plots.METHOD_MARKERS[method]
    return plots.layer_density_lines(
        lines, title=f"{ARCH[experiment]}: density per layer at {density:g}% target density "
                     f"({seeds_phrase(seeds)})",
        errors=errors, colors=colors, markers=markers)


def random_fc_sparse(store: Store):
    """``rnd_7_sparse``: Random-FC density per layer, one line per seed."""
    method, d = RANDOM_FC
    store.require([(FC, method, d, s) for s in SEEDS])
    lines = {f"seed {s}": _layer_density(store.masks(FC, method, d, s)) for s in SEEDS}
    styles = {f"seed {s}": plots.SEED_STYLES[s] for s in SEEDS}
    return plots.layer_density_lines(lines, title="Random-FC: density per layer",
                                     ylabel="Density per layer (% remaining)",
                                     colors={k: v["color"] for k, v in styles.items()},
                                     markers={k: v["marker"] for k, v in styles.items()},
                                     linestyles={k: v["ls"] for k, v in styles.items()})


# ----------------------------------------------------------------------------- N03 1-D statistics
def _fc_violins(store: Store, density: float, stat: Callable[[np.ndarray], np.ndarray], ylabel: str,
                title: str, ylim, counts: bool = False, note: str | None = None):
    store.require(grid(FC, densities=[density]))
    panels = {}
    for method in METHODS:
        panels[store.label(method)] = _pooled([[stat(layer) for layer in store.units(FC, method, density, s)]
                                               for s in SEEDS])
    colors = {store.label(m): plots.METHOD_COLORS[m] for m in METHODS}
    return plots.violins_per_layer(panels, ylabel, title=title, ylim=ylim, colors=colors, counts=counts,
                                   note=note)


GAP_NOTE = ("Under each layer: the units shown and, below them (−n), the units left out because they keep "
            "fewer than 2 weights and so have no gap. \"k>100\": k units with a mean gap above 100, not drawn.")
GAP_NOTE_THESIS = ("Under each layer: units shown (the thesis counted a unit with 1 weight as gap 0 and an empty "
                   "unit as 0). \"k>100\": k units with a mean gap above 100, not drawn.")


def _gaps(layer, thesis: bool) -> np.ndarray:
    """Per-unit mean gaps with one NaN per unit left out (fewer than 2 weights), so the violins
    can count them."""
    from .analysis import weight_distances
    values, left_out = weight_distances(layer, thesis=thesis, return_excluded=True)
    return np.concatenate([values, np.full(left_out, np.nan)])


def weight_dist(store: Store, density: float = 5):
    """``weight_dist_5``: per-unit mean gap between consecutive kept inputs, per layer, seeds pooled."""
    return _fc_violins(store, density, lambda layer: _gaps(layer, store.thesis),
                       "Mean gap between kept inputs", f"FC, {density:g}% density: distance between "
                       "a unit's neighbouring weights (3 seeds pooled)", (0, 100), counts=True,
                       note=GAP_NOTE if not store.thesis else GAP_NOTE_THESIS)


def number_clusters(store: Store, density: float = 20):
    """``number_clusters_20``: clusters (runs of consecutive inputs) per unit, per layer."""
    from .analysis import layer_clusters
    return _fc_violins(store, density, lambda layer: layer_clusters(layer, thesis=store.thesis),
                       "Clusters per unit", f"FC, {density:g}% density: number of clusters per unit "
                       "(3 seeds pooled)", (0, 225))


def sign_ratio_clusters(store: Store, density: float = 20):
    """``sign_ratio_clusters_20``: share of positive weights in each cluster of ≥ 2 weights."""
    from .analysis import sign_ratios
    return _fc_violins(store, density, lambda layer: sign_ratios(layer, thesis=store.thesis),
                       "Share of positive weights per cluster", f"FC, {density:g}% density: sign ratio "
                       "of clusters with ≥ 2 weights (3 seeds pooled)", (0, 1.02))


def dists_random_fc(store: Store):
    """``dists_rnd_7``: Random-FC gaps, clusters, sign ratios (layers 1–5) and relative positions."""
    from .analysis import layer_clusters, sign_ratios, weight_positions
    method, d = RANDOM_FC
    store.require([(FC, method, d, s) for s in SEEDS])
    units = [store.units(FC, method, d, s) for s in SEEDS]
    th = store.thesis
    panels = {
        "Gaps": _pooled([[_gaps(layer, th) for layer in u] for u in units]),
        "Clusters": _pooled([[layer_clusters(layer, thesis=th) for layer in u] for u in units]),
        "Sign ratios (layers 1–5)": _pooled([[sign_ratios(layer, thesis=th) for layer in u[:5]] for u in units]),
        "Positions / in_features": _pooled([[weight_positions(layer, relative=True) for layer in u] for u in units]),
    }
    color = plots.METHOD_COLORS["random-fc"]
    return plots.violins_per_layer(
        panels, ["Mean gap between kept inputs", "Clusters per unit", "Share of positive weights",
                 "Position / in_features"],
        title="Random-FC: 1-D statistics per layer (3 seeds pooled)",
        ylim=[None, None, (0, 1.02), (0, 1.02)], layout=(2, 2), figsize=(plots.MAX_WIDTH, 6.4),
        counts=[True, False, False, False], note=GAP_NOTE if not th else GAP_NOTE_THESIS,
        colors={k: color for k in panels}, sharey=False)


# ----------------------------------------------------------------------------- N04 distances
DISTANCE_TITLES = {"maed": "Distances based on Mean Error",
                   "sasd": "Distances based on Structure and Sign Distance",
                   "nnstd": "Distances based on Edit Distance"}


def _nine(store: Store, experiment: str, density: float) -> tuple[list, list[str]]:
    store.require(grid(experiment, densities=[density]))
    units = [store.units(experiment, m, density, s) for m in METHODS for s in SEEDS]
    return units, [tag(m, s) for m in METHODS for s in SEEDS]


def distance_figure(store: Store, metric: str, density: float, title: str | None = None):
    """``MAED-50``, ``SaSD-2``, ``fc-NNSTD-10`` ...: 9×9 matched network distances of the FC runs."""
    from .analysis import distance_matrix
    units, names = _nine(store, FC, density)
    df = distance_matrix(units, metric, names=names, compat=store.compat)
    how = "thesis computation" if store.thesis else "matched units, permutations propagated"
    return plots.distance_heatmap(
        df, f"{title or DISTANCE_TITLES[metric]}\nFC, {density:g}% density ({how})",
        cbar_label=f"{metric.upper() if metric != 'sasd' else 'SaSD'} (mean over layers)", vmin=0)


# ----------------------------------------------------------------------------- N05 convergent learning
def probe_images(store: Store, dataset: str = "mnist") -> torch.Tensor:
    """The stored probe images of ``dataset``, normalised (fewer in fast mode)."""
    with warnings.catch_warnings():  # utils.data imports tqdm.auto, which warns in a kernel without ipywidgets
        warnings.filterwarnings("ignore", message="IProgress not found")
        from .data import DATASETS, normalize
    images, _ = load_probe(dataset, store.probe_root)
    if store.fast:
        images = images[:200]
    return normalize(images, DATASETS[dataset])


def correlation_figure(store: Store, density: float = 10):
    """``fc-cor-matrix-10``: convergent-learning similarity (mean matched correlation) of 9 FC runs."""
    from .analysis import similarity_matrix
    from .results import probe_path
    store.require(grid(FC, densities=[density]))
    if not probe_path("mnist", store.probe_root).is_file():
        raise MissingRuns([], store.root, f"no MNIST probe images at {probe_path('mnist', store.probe_root)}")
    images = probe_images(store)
    models = [store.model(FC, m, density, s) for m in METHODS for s in SEEDS]
    names = [tag(m, s) for m in METHODS for s in SEEDS]
    df = similarity_matrix(models, images, names=names, compat=store.compat)
    dead = {n: sum(d) for n, d in df.attrs.get("dead", {}).items()}
    if store.thesis:
        how = "linearised activations, thesis: dead units count as 0, diagonal set to 1"
    else:
        how = "real activations; units that never fire are left out"
    note = ""
    if any(dead.values()):
        note = ("\nunits that never fire (all layers, seeds " + "/".join(map(str, SEEDS)) + "): " + ", ".join(
            f"{TAGS[m]} " + "/".join(str(dead[tag(m, s)]) for s in SEEDS) for m in METHODS))
    return plots.distance_heatmap(
        df, f"Correlation Matrix\nFC, {density:g}% density, {len(images)} test images ({how}){note}",
        cbar_label="Mean matched correlation")


# ----------------------------------------------------------------------------- N06 first-layer maps
def first_layer_map_figure(store: Store, method: str, density: float, seed: int = MAP_SEED):
    """``gem-fm-fc-50`` etc.: masked first-layer weights summed over units, as a 28×28 image."""
    from .analysis import first_layer_map
    store.require([(FC, method, density, seed)])
    image = first_layer_map(store.units(FC, method, density, seed)[0])
    return plots.first_layer_map_plot(image, f"{store.label(method)}, {density:g}% density, seed {seed}",
                                      cbar_label="Sum of masked weights per pixel")


# ----------------------------------------------------------------------------- N07 kernels
def kernel_figure(store: Store, method: str, density: float = 10, seed: int | None = None):
    """``gem-kernel-10`` etc.: the 20 most frequent binary 3×3 kernels of one ResNet-20."""
    from .analysis import common_kernels
    seed = KERNEL_SEEDS[method] if seed is None else seed
    store.require([(RESNET, method, density, seed)])
    top = common_kernels(store.units(RESNET, method, density, seed), top=20)
    return plots.kernel_grid(top, f"{store.label(method)} {density:g}% seed {seed}: the 20 most frequent "
                                  "binary 3×3 kernels (black = kept weight; count above each)")


def resnet_clusters(store: Store, density: float = 5):
    """``resnet_clusters``: per-filter cluster ratio over the 20 layers, one row per method."""
    from .analysis import model_cluster_ratios
    seeds = store.complete_seeds(RESNET, densities=[density])
    panels = {}
    for method in METHODS:
        per_seed = [model_cluster_ratios(store.units(RESNET, method, density, s), dense="last",
                                         connectivity="4", thesis=store.thesis) for s in seeds]
        panels[store.label(method)] = _pooled(per_seed)
    return plots.cluster_ratio_violins(
        panels, title=f"ResNet-20, {density:g}% density: per-filter cluster ratio "
                      f"(4-neighbour kernels; fc rows 1-D; {seeds_phrase(seeds)}, pooled)")


# ----------------------------------------------------------------------------- N08 illustrations
KERNEL_EXAMPLE = np.array([
    [1, 1, 0, 0, 0, 0, 0, 1],
    [0, 1, 0, 0, 1, 0, 0, 0],
    [0, 0, 1, 0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 1, 1, 0],
    [1, 0, 0, 0, 0, 0, 1, 0],
    [0, 0, 0, 1, 0, 0, 0, 0],
    [0, 0, 0, 0, 1, 0, 0, 1],
    [1, 0, 0, 0, 0, 0, 0, 1]], dtype=bool)


def one_dim_weights(store: Store | None = None):
    """``one-dim-weights``: nonzeros 6, 7, 8, 10, 13 → gaps 1, 1, 2, 3."""
    return plots.one_dim_weights_plot((6, 7, 8, 10, 13))


def kernel_to_graph(store: Store | None = None):
    """``kernel-to-graph``: an 8×8 mask and its graph under the 4-neighbour rule that
    ``resnet_clusters`` counts with (the thesis's hand drawing had diagonal edges too)."""
    return plots.kernel_to_graph_plot(KERNEL_EXAMPLE, connectivity="4")


def channel_order(store: Store | None = None):
    """``channel_order``: permuting Conv-1 filters permutes Conv-2 in-channels."""
    return plots.channel_order_plot((2, 0, 3, 1))


# ----------------------------------------------------------------------------- registry
def _registry() -> dict[str, tuple[Callable, dict]]:
    reg: dict[str, tuple[Callable, dict]] = {
        # N01
        "fc_acc": (accuracy, dict(experiment=FC)),
        "resnet_acc": (accuracy, dict(experiment=RESNET)),
        "rnd_7_acc": (random_fc_accuracy, {}),
        # N02
        "50_sparse_layers": (sparse_layers, dict(experiment=FC, density=50)),
        "2_sparse_layers": (sparse_layers, dict(experiment=FC, density=2)),
        "resnet-50_sparse_layers": (sparse_layers, dict(experiment=RESNET, density=50)),
        "resnet-2_sparse_layers": (sparse_layers, dict(experiment=RESNET, density=2)),
        "rnd_7_sparse": (random_fc_sparse, {}),
        # N03
        "weight_dist_5": (weight_dist, dict(density=5)),
        "number_clusters_20": (number_clusters, dict(density=20)),
        "sign_ratio_clusters_20": (sign_ratio_clusters, dict(density=20)),
        "dists_rnd_7": (dists_random_fc, {}),
    }
    # N04
    for density in (50, 2):
        for metric, stem in (("maed", "MAED"), ("sasd", "SaSD"), ("nnstd", "NNSTD")):
            reg[f"{stem}-{density}"] = (distance_figure, dict(metric=metric, density=density))
    reg["fc-NNSTD-10"] = (distance_figure, dict(metric="nnstd", density=10,
                                                title="Distance Matrix based on NNSTD"))
    # N05
    reg["fc-cor-matrix-10"] = (correlation_figure, dict(density=10))
    # N06
    for density in (50, 2):
        for method in METHODS:
            reg[f"{TAGS[method]}-fm-fc-{density}"] = (first_layer_map_figure,
                                                      dict(method=method, density=density))
    # N07
    for method in METHODS:
        reg[f"{TAGS[method]}-kernel-10"] = (kernel_figure, dict(method=method, density=10))
    reg["resnet_clusters"] = (resnet_clusters, dict(density=5))
    # N08
    reg["one-dim-weights"] = (one_dim_weights, {})
    reg["kernel-to-graph"] = (kernel_to_graph, {})
    reg["channel_order"] = (channel_order, {})
    return reg


#: figure name → (builder, keyword arguments), in the thesis's order (SPEC §10, N01…N08)
REGISTRY = _registry()
FIGURE_NAMES = list(REGISTRY)


def _in_notebook() -> bool:
    return "ipykernel" in sys.modules


def figure_experiment(name: str) -> str | None:
    """The experiment a registered figure reads (``None`` for the generated illustrations)."""
    builder, kwargs = REGISTRY[name]
    if "experiment" in kwargs:
        return kwargs["experiment"]
    if builder in (kernel_figure, resnet_clusters):
        return RESNET
    if builder in (one_dim_weights, kernel_to_graph, channel_order):
        return None
    return FC


def build(name: str, store: Store):
    """The figure ``name`` (SPEC §10) built from ``store`` (raises :class:`MissingRuns`)."""
    if name not in REGISTRY:
        raise KeyError(f"unknown figure {name!r}; known: {', '.join(FIGURE_NAMES)}")
    builder, kwargs = REGISTRY[name]
    return builder(store, **kwargs)


def make(names: str | Sequence[str], store: Store, figures_dir: str | os.PathLike = "figures",
         show: bool | None = None) -> list[str]:
    """Build, save (PDF + PNG) and show figures; skip those whose runs are missing.

    Args:
        names: one figure name or several (see :data:`FIGURE_NAMES`).
        store: the :class:`Store` to read.
        figures_dir: output directory.
        show: display inline (default: when running in a notebook). Figures are closed
            after saving either way.

    Returns:
        The names written. A skipped figure prints one line saying which runs are
        missing and is recorded in ``store.skipped``; a figure drawn from fewer seeds
        than the grid's (:meth:`Store.complete_seeds`) is recorded in ``store.partial``.
    """
    import matplotlib.pyplot as plt
    names = [names] if isinstance(names, str) else list(names)
    show = _in_notebook() if show is None else show
    written = []
    for name in names:
        store._unused = []
        try:
            fig = build(name, store)
        except MissingRuns as exc:
            store.skipped[name] = str(exc)
            print(f"skipped {name}: {exc}")
            continue
        if store._unused:
            store.partial[name] = f"{len(store._unused)} run(s) missing: {summarise(store._unused)}"
            print(f"{name} drawn from the complete seeds; {store.partial[name]}")
        else:
            store.partial.pop(name, None)
        caption = store.caption
        if caption is None and not store.thesis and store.mask_mode == "effective" and name in CORRECTIONS:
            caption = f"Corrected analysis, not the published figure: {CORRECTIONS[name]}"
        if caption:
            width = fig.get_figwidth() * 72 / 10 * 1.7      # characters of 10-pt text per line
            fig.text(0.5, 1.0, "\n".join(textwrap.wrap(caption, int(width))), ha="center", va="bottom",
                     fontsize=10, style="italic")
        plots.save(fig, name, figures_dir)
        if show:
            from IPython.display import display
            display(fig)
        plt.close(fig)
        store.skipped.pop(name, None)
        store.written.append(name)
        written.append(name)
        print(f"wrote {Path(figures_dir) / name}.pdf/.png")
    return written


def _corrections() -> dict[str, str]:
    gem = "Gem-Miner's effective mask flag·[score>0.5]"
    out = {}
    for n in ("50_sparse_layers", "2_sparse_layers", "resnet-50_sparse_layers", "resnet-2_sparse_layers"):
        out[n] = gem
    for n in ("weight_dist_5", "dists_rnd_7"):
        out[n] = "units with < 2 kept weights left out (the thesis counted them as gap 0)" + (
            "; " + gem if n == "weight_dist_5" else "")
    out["number_clusters_20"] = "clusters = runs of consecutive inputs, singletons included; " + gem
    out["sign_ratio_clusters_20"] = "every cluster's sign ratio (the thesis dropped each unit's last); " + gem
    for d in (50, 2):
        for m in ("MAED", "SaSD", "NNSTD"):
            out[f"{m}-{d}"] = f"{gem}; per-unit distances, permutations propagated, output fixed" + (
                "; MAED(empty, empty) = 0" if m == "MAED" else "")
    out["fc-NNSTD-10"] = out["NNSTD-50"]
    out["fc-cor-matrix-10"] = (f"{gem}; real activations, dead units left out, logits paired by class, "
                               "diagonal computed")
    for m in ("gem", "syn", "rnd"):
        for d in (50, 2):
            out[f"{m}-fm-fc-{d}"] = "the true seed" + ("; " + gem if m == "gem" else "")
        out[f"{m}-kernel-10"] = "the true seed in the title" + ("; " + gem if m == "gem" else "")
    out["resnet_clusters"] = "empty kernels count as 0 as in the thesis; " + gem
    return out


#: for each thesis figure, what the corrected default changes (drawn as a caption, so a corrected
#: figure under a thesis file name is never read as the published one)
CORRECTIONS = _corrections()

#: the figures the thesis drew from data (all but the N08 illustrations)
CODE_FIGURES = [n for n in FIGURE_NAMES if n not in ("one-dim-weights", "kernel-to-graph", "channel_order")]

#: the two views of the thesis's own networks: its analysis as published, and the corrected one
THESIS_VIEWS = {
    "thesis-networks": dict(
        mask_mode="flag", compat="thesis",
        caption="The thesis's own networks, the thesis's analysis (Gem-Miner flags, flattened unpropagated "
                "distances, linearised activations): as published"),
    "thesis-networks-corrected": dict(
        mask_mode="effective", compat=None,
        caption="The thesis's own networks, corrected analysis (effective Gem-Miner mask, permutations "
                "propagated, real activations)"),
}


def thesis_store(view: str = "thesis-networks", root: str | os.PathLike | None = None, fast: bool = False) -> Store:
    """A :class:`Store` over the imported thesis networks (:data:`THESIS_VIEWS` names the analysis)."""
    from .thesis import thesis_root
    return Store(root or thesis_root(), source="thesis", fast=fast, **THESIS_VIEWS[view])


def make_thesis_figures(names: Sequence[str] = CODE_FIGURES, figures_root: str | os.PathLike = "figures",
                        root: str | os.PathLike | None = None, views: Sequence[str] = tuple(THESIS_VIEWS),
                        fast: bool = False, show: bool | None = None) -> dict[str, Store]:
    """Draw ``names`` from the thesis's own networks into ``<figures_root>/<view>/`` for each view.

    Without an import (``python -m utils.cli import-thesis``) this prints one line saying how to
    get it and returns ``{}``.
    """
    from .thesis import is_imported, thesis_root
    if not is_imported(root or thesis_root()):
        print(f"thesis networks not imported ({root or thesis_root()}): run `python -m utils.cli "
              f"import-thesis [SOURCE]` to draw figures/thesis-networks/")
        return {}
    stores = {}
    for view in views:
        stores[view] = thesis_store(view, root, fast)
        make(names, stores[view], Path(figures_root) / view, show=show)
    return stores


def report(store: Store) -> str:
    """One line per outcome: figures written and figures skipped (with the missing runs)."""
    lines = [f"{len(set(store.written))} figure(s) written: {', '.join(dict.fromkeys(store.written))}"]
    if store.partial:
        lines.append(f"{len(store.partial)} figure(s) drawn from the seeds stored so far:")
        lines += [f"  {name}: {why}" for name, why in store.partial.items()]
    if store.skipped:
        lines.append(f"{len(store.skipped)} figure(s) skipped:")
        lines += [f"  {name}: {why}" for name, why in store.skipped.items()]
    return "\n".join(lines)
