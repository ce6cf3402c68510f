"""Network distances between runs (N04): 9×9 matrices of NNSTD, SaSD and MAED, ordered (units matched)
and unordered, per layer, and under two analysis settings side by side.
"""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from . import plots
from .pairs import METRIC_LABELS, group_style, pair_group, runs_by_tag, square
from .store import (
    ARCH,
    FC,
    METHODS,
    SEEDS,
    Store,
    grid,
)
from .style import percent, style, tag

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
    from utils.analysis import distance_matrix
    units, names = _nine(store, FC, density)
    df = distance_matrix(units, metric, names=names, compat=store.compat)
    how = "thesis computation" if store.thesis else "matched units, permutations propagated"
    return plots.matrix_heatmap(
        df, f"{title or DISTANCE_TITLES[metric]}\nFC, {percent(density)}% density ({how})",
        cbar_label=f"{metric.upper() if metric != 'sasd' else 'SaSD'} (mean over layers)", vmin=0)


def pair_distances(store: Store, experiment: str, density: float, metric: str = "nnstd", matched: bool = True,
                   methods: Sequence[str] = METHODS) -> pd.DataFrame:
    """Per-layer distance of every pair of runs (long format, cached on the store).

    ``matched``: units matched layer by layer (the store's ``compat``: default = optimal matching
    with propagated permutations, mean of both directions; ``"thesis"`` = flattened layers, no
    propagation).  Unmatched ("unordered"): unit i is compared with unit i (per-unit mean of the
    cost-matrix diagonal; thesis: the flattened layers as they are).

    Columns: model_a, model_b, method_a, method_b, layer (1-based), metric, matched, value.
    """
    from utils.analysis import cost_matrix, flat_distance, network_distance
    key = ("dist", experiment, density, metric, matched, tuple(methods))
    if key in store.cache:
        return store.cache[key]
    nets = runs_by_tag(store, experiment, density, methods)
    names = list(nets)
    units = {n: store.units(experiment, nets[n][0], density, nets[n][1]) for n in names}
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if matched:
                r = network_distance(units[a], units[b], metric, compat=store.compat,
                                     both_directions=not store.thesis)
                layers = r.layers if r.layers_ba is None else 0.5 * (r.layers + r.layers_ba)
            elif store.thesis:
                layers = [flat_distance(x, y, metric) for x, y in zip(units[a], units[b])]
            else:
                layers = [float(np.diag(cost_matrix(x, y, metric)).mean()) for x, y in zip(units[a], units[b])]
            rows += [(a, b, nets[a][0], nets[b][0], layer + 1, metric, matched, float(v))
                     for layer, v in enumerate(layers)]
    df = pd.DataFrame(rows, columns=["model_a", "model_b", "method_a", "method_b", "layer", "metric", "matched",
                                     "value"])
    df.attrs["names"] = names
    store.cache[key] = df
    return df



def _how(store: Store, matched: bool) -> str:
    if store.thesis:
        return "thesis: flattened layers, " + ("matched without propagation" if matched else "not matched")
    return "units matched, permutations propagated" if matched else "units NOT matched (unit i vs unit i)"


def distance_heatmap(store: Store, experiment: str, density: float, metric: str = "nnstd", matched: bool = True,
                     methods: Sequence[str] = METHODS):
    """9×9 (runs × runs) distance matrix with ("ordered") or without ("unordered") unit matching.

    Both versions share one colour scale (0 to the larger maximum), so they can be compared.
    """
    both = [square(pair_distances(store, experiment, density, metric, m, methods)) for m in (True, False)]
    df = both[0] if matched else both[1]
    vmax = max(float(np.nanmax(x.to_numpy())) for x in both)
    label = METRIC_LABELS[metric]
    fig = plots.matrix_heatmap(df, f"{label}, {'ordered' if matched else 'unordered'}: {ARCH[experiment]}, "
                                     f"{percent(density)}%\n({_how(store, matched)})",
                                 cbar_label=f"{label} (mean over layers)", vmin=0, vmax=vmax,
                                 figsize=(6.8, 5.8) if len(df) <= 9 else (9, 8))
    return fig



def distance_layers(store: Store, experiment: str, density: float, metrics: Sequence[str] = ("nnstd", "sasd", "maed"),
                    methods: Sequence[str] = METHODS):
    """Per-layer distance, mean over the pairs of each method pair (same method solid, cross-method
    dashed); top row matched, bottom row unmatched."""
    data = {(m, matched): pair_distances(store, experiment, density, m, matched, methods)
            for m in metrics for matched in (True, False)}
    with style():
        n_layers = int(next(iter(data.values()))["layer"].max())
        fig, axes = plt.subplots(2, len(metrics), figsize=(4.8 * len(metrics) * (1.25 if n_layers > 10 else 1), 7.5),
                                 sharex=True, squeeze=False)
        for c, metric in enumerate(metrics):
            for r, matched in enumerate((True, False)):
                ax = axes[r, c]
                df = data[(metric, matched)].assign(
                    group=lambda d: [pair_group(a, b) for a, b in zip(d["method_a"], d["method_b"])])
                for group, part in df.groupby("group", sort=False):
                    mean = part.groupby("layer")["value"].mean()
                    ax.plot(mean.index, mean.values, label=group, lw=1.6, ms=4, **group_style(group, methods))
                ax.set_title(f"{METRIC_LABELS[metric]}, {'matched' if matched else 'not matched'}")
                ax.set_ylim(0, 1.02)
                ax.grid(alpha=0.3)
                ax.set_xticks(range(1, n_layers + 1))
                if c == 0:
                    ax.set_ylabel("Distance (mean over pairs)")
                if r == 1:
                    ax.set_xlabel("Layer")
        handles, labels = plots.legend_entries(axes)
        fig.legend(handles, labels, title="method pair (3 seeds each; same method = other seeds)",
                   loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=min(len(labels), 6), frameon=False)
        fig.suptitle(f"{ARCH[experiment]}, {percent(density)}%: distance per layer", y=1.1)
        fig.tight_layout()
    return fig



def compare_distances(stores: dict[str, Store], experiment: str, density: float, metric: str = "nnstd"):
    """The same 9×9 matched distance matrix under two settings (e.g. corrected vs thesis), side by side."""
    dfs = {label: square(pair_distances(s, experiment, density, metric, True)) for label, s in stores.items()}
    return plots.matrix_heatmaps(dfs, f"{METRIC_LABELS[metric]}: {ARCH[experiment]}, {percent(density)}%",
                    f"{METRIC_LABELS[metric]} (mean over layers)", vmin=0)


