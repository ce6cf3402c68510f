"""Read access to a runs store for the figures: :class:`Store`, the grid constants and :class:`MissingRuns`.

Densities are fractions everywhere in this package (``0.1``, not ``10``); percent appears only
in labels and file names (:func:`~utils.figures.style.percent`).

>>> store = Store("results", mask_mode="effective", compat=None)
>>> store.units(FC, "synflow", 0.1, 21)          # W⊙mask per analysis layer

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
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from utils.runs.results import DEFAULT_ROOT, Run, is_complete, load_run, read_record, run_dir, runs
from utils.runs.thesis import THESIS_OF

from .style import method_style, percent

FC, RESNET = "fc_mnist", "resnet20_cifar10"
METHODS = ("gem-miner", "synflow", "random")
EXTENSIONS = ("magnitude", "deepr", "soft-deepr", "dnw")
ALL_METHODS = METHODS + EXTENSIONS
GEM_VARIANTS = ("gem-miner", "gem-miner-reinit", "gem-miner-shuffle")
SEEDS = (21, 42, 63)
DENSITIES = (0.02, 0.05, 0.1, 0.2, 0.5)
RANDOM_FC = ("random-fc", 0.07)
ARCH = {FC: "FC 784-100×5-10 / MNIST", RESNET: "ResNet-20 / CIFAR-10"}
#: seeds shown by the single-run figures: the thesis drew every first-layer map and every kernel
#: figure from seed 21 (measured on its own networks: the published colour-bar ranges and kernel
#: counts are those of seed 21 exactly), although its map titles say "Seed 42"
MAP_SEED = 21
KERNEL_SEEDS = {"gem-miner": 21, "synflow": 21, "random": 21}

RunKey = tuple[str, str, float, int]   # (experiment, method, density fraction, seed)


class MissingRuns(LookupError):
    """Some runs a figure needs are not stored; ``str()`` summarises them on one line."""

    def __init__(self, missing: Sequence[RunKey], root: Path, detail: str | None = None):
        self.missing = list(missing)
        self.root = root
        super().__init__(detail or f"{len(self.missing)} run(s) missing under {root}: "
                                   f"{summarise(self.missing)}")


def summarise(keys: Iterable[RunKey]) -> str:
    """``[(experiment, method, density, seed), ...]`` → ``"fc_mnist/synflow d2,5 × s21,42,63; ..."``."""
    by_density = defaultdict(list)
    for exp, method, d, s in keys:
        by_density[(exp, method, d)].append(s)
    grouped = defaultdict(list)
    for (exp, method, d), seeds in by_density.items():
        grouped[(exp, method, tuple(sorted(seeds)))].append(d)
    parts = []
    for (exp, method, seeds), dens in grouped.items():
        parts.append(f"{exp}/{method} d{','.join(percent(d) for d in sorted(dens))} × "
                     f"s{','.join(map(str, seeds))}")
    return "; ".join(parts)


def grid(experiment: str, methods=METHODS, densities=DENSITIES, seeds=SEEDS) -> list[RunKey]:
    """Every ``(experiment, method, density, seed)`` of a grid."""
    return [(experiment, m, d, s) for m in methods for d in densities for s in seeds]


def seeds_phrase(seeds: Sequence[int]) -> str:
    """``"3 seeds"`` for the full set, else ``"seed 21 only"`` / ``"seeds 21, 42 only"``."""
    if tuple(seeds) == SEEDS:
        return f"{len(SEEDS)} seeds"
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))} only"


def layer_densities(masks: dict[str, torch.Tensor]) -> np.ndarray:
    """Density of each mask in % (for the density-per-layer axes)."""
    return np.array([100.0 * float(m.float().mean()) for m in masks.values()])


def pooled(per_seed: list[list[np.ndarray]]) -> list[np.ndarray]:
    """[[layer arrays of seed 1], [of seed 2], ...] → per layer, the seeds concatenated."""
    return [np.concatenate([np.asarray(s[i], dtype=float).ravel() for s in per_seed])
            for i in range(len(per_seed[0]))]


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
        # outcome of every figure and table made from this store (see utils.figures.registry.report)
        self.written: list[str] = []
        self.skipped: dict[str, str] = {}
        self.partial: dict[str, str] = {}
        self._unused: list[tuple] = []   # missing runs of the figure being built (see complete_seeds)
        #: computed analyses shared by the figures of a notebook (pair tables, activations, ...)
        self.cache: dict[tuple, object] = {}

    @property
    def thesis(self) -> bool:
        return self.compat == "thesis"

    def experiment(self, experiment: str) -> str:
        """The store's name of an experiment (``thesis_fc_mnist`` for ``fc_mnist`` in the thesis store)."""
        return THESIS_OF.get(experiment, experiment) if self.source == "thesis" else experiment

    def _path(self, experiment: str, method: str, density: float, seed: int) -> Path:
        return run_dir(self.experiment(experiment), method, density, seed, self.root)

    def recipe_version(self, experiment: str) -> int | None:
        """The current recipe version of our experiment's default profile (``None``: unversioned)."""
        if self.source == "thesis":
            return None
        if experiment not in self._versions:
            from utils.runs.experiment import load_config, profile_of
            try:
                self._versions[experiment] = profile_of(load_config(experiment), None)[1].get("version")
            except Exception:   # an experiment without a config (e.g. a test store) is unversioned
                self._versions[experiment] = None
        return self._versions[experiment]

    def current(self, table: pd.DataFrame, experiment: str) -> pd.DataFrame:
        """The rows of a :func:`utils.runs.results.runs` table that belong to ``experiment`` under its
        current recipe (stale runs dropped)."""
        table = table[table["experiment"] == self.experiment(experiment)]
        version = self.recipe_version(experiment)
        return table if version is None else table[table["recipe_version"] == version]

    def recipe_note(self, experiment: str, methods: Iterable[str] | None = None,
                    runs: Iterable[tuple[str, float, int]] | None = None) -> str:
        """How the experiment's runs were trained, for the titles of accuracy figures, e.g.
        ``"cpu profile v2, 30 epochs, bf16 autocast; CIFAR-10 copy: jpeg-q75"``.  The precision is
        named where any run trained in bf16 autocast (a CPU without native bf16 trains the same
        recipe in fp32), with counts when the runs mix both.  ``methods`` (e.g. the methods a figure
        shows) restricts the counts to their runs, and ``runs`` to the (method, density as a
        fraction, seed) a figure draws, so a title never counts runs it does not draw.

        Example::

            store.recipe_note("resnet20_cifar10", runs=[("gem-miner", 0.1, s) for s in (21, 42, 63)])
        """
        table = self.runs_table(experiment)
        if methods is not None:
            table = table[table["method"].isin(list(methods))]
        if runs is not None:
            drawn = {(method, round(density, 6), seed) for method, density, seed in runs}
            keys = zip(table["method"], table["density"].round(6), table["seed"])
            table = table[[key in drawn for key in keys]]
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
        precisions = table["precision"].value_counts().sort_index()
        if "bf16" in precisions:
            label = {"bf16": "bf16 autocast", "fp32": "fp32"}
            note += ", " + (label["bf16"] if len(precisions) == 1 else
                            " + ".join(f"{label.get(p, p)} ({n} run{'s' * (n != 1)})" for p, n in precisions.items()))
        copies = sorted(set(table["data_copy"].dropna()))
        if record.get("dataset") == "cifar10" and copies:
            note += f"; CIFAR-10 copy: {', '.join(copies)}"
        return note

    def has(self, experiment: str, method: str, density: float, seed: int) -> bool:
        """Whether the run (density as a fraction) is stored under the current recipe."""
        path = self._path(experiment, method, density, seed)
        if not is_complete(path):
            return False
        version = self.recipe_version(experiment)
        if version is None:
            return True
        return (read_record(path, verify=False).get("recipe") or {}).get("version") == version

    def require(self, keys: Iterable[tuple[str, str, float, int]]) -> None:
        """Raise :class:`MissingRuns` unless every ``(experiment, method, density, seed)`` is stored."""
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
        """The stored run (density as a fraction), loaded once and verified."""
        key = (experiment, method, density, seed)
        if key not in self._runs:
            self._runs[key] = load_run(self.experiment(experiment), method, density, seed, self.root)
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
        from utils.analysis import get_units
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
        """Display name (:func:`~utils.figures.style.method_style`); Gem-Miner is marked "(flags)" in flag mode."""
        name = method_style(method).label
        return f"{name} (flags)" if method == "gem-miner" and self.mask_mode == "flag" else name

    def inventory(self) -> pd.DataFrame:
        """Seeds stored per experiment, method and density (%): a quick view of the store."""
        table = self.all_runs()
        if table.empty:
            return table
        table = table.assign(density_pct=(table["density"] * 100).round(6))
        return table.pivot_table(index=["experiment", "method"], columns="density_pct", values="seed",
                                 aggfunc="count", fill_value=0)

    def achieved(self, experiment: str, methods=METHODS) -> pd.DataFrame:
        """Achieved (effective-mask) density in % per method × target density, mean over stored seeds."""
        table = self.runs_table(experiment)
        table = table[table["method"].isin(methods)]
        if table.empty:
            return pd.DataFrame()
        table = table.assign(target=(table["density"] * 100).round(6), achieved=table["density_achieved"] * 100)
        return table.pivot_table(index="method", columns="target", values="achieved", aggfunc="mean").round(2)

    def all_runs(self) -> pd.DataFrame:
        """:func:`utils.runs.results.runs` of the store (every experiment and recipe), read once per store."""
        if ("runs",) not in self.cache:
            self.cache[("runs",)] = runs(self.root)
        return self.cache[("runs",)]

    def runs_table(self, experiment: str) -> pd.DataFrame:
        """The store's runs of ``experiment`` under the current recipe (:func:`utils.runs.results.runs`,
        read once per store), with ``label``: the target density in % (the seed-grouping key)."""
        table = self.current(self.all_runs(), experiment)
        return table.assign(label=(table["density"] * 100).round(6))

    def require_methods(self, experiment: str, methods: Sequence[str], densities: Iterable[float],
                        seeds: Sequence[int] = SEEDS) -> None:
        """:meth:`require` every run of ``methods`` × ``densities`` × ``seeds``; an empty ``methods``
        raises :class:`MissingRuns` too."""
        self.require([(experiment, m, d, s) for m in methods for d in densities for s in seeds])
        if not methods:
            raise MissingRuns([], self.root, f"none of the requested methods is stored for {experiment}")

    def available(self, experiment: str, methods: Sequence[str] = ALL_METHODS,
                  densities: Iterable[float] = DENSITIES, seeds: Sequence[int] = SEEDS) -> list[str]:
        """Methods with every (density, seed) stored; prints one line naming the missing runs."""
        densities = list(densities)
        present, missing = [], []
        for m in methods:
            absent = [k for k in grid(experiment, [m], densities, seeds) if not self.has(*k)]
            (missing.extend(absent) if absent else present.append(m))
        if missing:
            print(f"not stored (left out): {summarise(missing)}")
        return present
