"""Structure of the masks: density per layer (N02), 1-D row statistics (N03), empty units, graph
statistics, mask images, and Gem-Miner's flags against its effective mask.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from . import plots
from .store import (
    ARCH,
    DENSITIES,
    FC,
    METHODS,
    RANDOM_FC,
    SEEDS,
    MissingRuns,
    Store,
    grid,
    layer_densities,
    pooled,
    seeds_phrase,
)
from .style import MAX_WIDTH, SEED_STYLES, method_style, percent, style


# ----------------------------------------------------------------------------- N02 density per layer
def sparse_layers(store: Store, experiment: str, density: float):
    """``50_sparse_layers`` etc.: :func:`density_lines` of the thesis's three methods over the seeds
    complete at ``density`` (named in the title)."""
    return density_lines(store, experiment, density, METHODS,
                         seeds=store.complete_seeds(experiment, densities=[density]))


def random_fc_sparse(store: Store):
    """``rnd_7_sparse``: Random-FC density per layer, one line per seed."""
    method, d = RANDOM_FC
    store.require([(FC, method, d, s) for s in SEEDS])
    lines = {f"seed {s}": layer_densities(store.masks(FC, method, d, s)) for s in SEEDS}
    styles = {f"seed {s}": SEED_STYLES[s] for s in SEEDS}
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
        panels[store.label(method)] = pooled([[stat(layer) for layer in store.units(FC, method, density, s)]
                                               for s in SEEDS])
    colors = {store.label(m): method_style(m).color for m in METHODS}
    return plots.violins_per_layer(panels, ylabel, title=title, ylim=ylim, colors=colors, counts=counts,
                                   note=note)


GAP_NOTE = ("Under each layer: the units shown and, below them (−n), the units left out because they keep "
            "fewer than 2 weights and so have no gap. \"k>100\": k units with a mean gap above 100, not drawn.")
GAP_NOTE_THESIS = ("Under each layer: units shown (the thesis counted a unit with 1 weight as gap 0 and an empty "
                   "unit as 0). \"k>100\": k units with a mean gap above 100, not drawn.")


def _gaps(layer, thesis: bool) -> np.ndarray:
    """Per-unit mean gaps with one NaN per unit left out (fewer than 2 weights), so the violins
    can count them."""
    from utils.analysis import weight_distances
    values, left_out = weight_distances(layer, thesis=thesis, return_excluded=True)
    return np.concatenate([values, np.full(left_out, np.nan)])


def weight_dist(store: Store, density: float = 0.05):
    """``weight_dist_5``: per-unit mean gap between consecutive kept inputs, per layer, seeds pooled."""
    return _fc_violins(store, density, lambda layer: _gaps(layer, store.thesis),
                       "Mean gap between kept inputs", f"FC, {percent(density)}% density: distance between "
                       "a unit's neighbouring weights (3 seeds pooled)", (0, 100), counts=True,
                       note=GAP_NOTE if not store.thesis else GAP_NOTE_THESIS)


def number_clusters(store: Store, density: float = 0.2):
    """``number_clusters_20``: clusters (runs of consecutive inputs) per unit, per layer."""
    from utils.analysis import layer_clusters
    return _fc_violins(store, density, lambda layer: layer_clusters(layer, thesis=store.thesis),
                       "Clusters per unit", f"FC, {percent(density)}% density: number of clusters per unit "
                       "(3 seeds pooled)", (0, 225))


def sign_ratio_clusters(store: Store, density: float = 0.2):
    """``sign_ratio_clusters_20``: share of positive weights in each cluster of ≥ 2 weights."""
    from utils.analysis import sign_ratios
    return _fc_violins(store, density, lambda layer: sign_ratios(layer, thesis=store.thesis),
                       "Share of positive weights per cluster", f"FC, {percent(density)}% density: sign ratio "
                       "of clusters with ≥ 2 weights (3 seeds pooled)", (0, 1.02))


def dists_random_fc(store: Store):
    """``dists_rnd_7``: Random-FC gaps, clusters, sign ratios (layers 1–5) and relative positions."""
    from utils.analysis import layer_clusters, sign_ratios, weight_positions
    method, d = RANDOM_FC
    store.require([(FC, method, d, s) for s in SEEDS])
    units = [store.units(FC, method, d, s) for s in SEEDS]
    th = store.thesis
    panels = {
        "Gaps": pooled([[_gaps(layer, th) for layer in u] for u in units]),
        "Clusters": pooled([[layer_clusters(layer, thesis=th) for layer in u] for u in units]),
        "Sign ratios (layers 1–5)": pooled([[sign_ratios(layer, thesis=th) for layer in u[:5]] for u in units]),
        "Positions / in_features": pooled([[weight_positions(layer, relative=True) for layer in u] for u in units]),
    }
    color = method_style("random-fc").color
    return plots.violins_per_layer(
        panels, ["Mean gap between kept inputs", "Clusters per unit", "Share of positive weights",
                 "Position / in_features"],
        title="Random-FC: 1-D statistics per layer (3 seeds pooled)",
        ylim=[None, None, (0, 1.02), (0, 1.02)], layout=(2, 2), figsize=(MAX_WIDTH, 6.4),
        counts=[True, False, False, False], note=GAP_NOTE if not th else GAP_NOTE_THESIS,
        colors={k: color for k in panels}, sharey=False)


# ----------------------------------------------------------------------------- structure
def density_lines(store: Store, experiment: str, density: float, methods: Sequence[str] = METHODS,
                  seeds: Sequence[int] | None = None):
    """Seed-mean density per analysis layer, one line per method (error bars: std over seeds).

    ``seeds``: the seeds to average, named in the title; default every seed (all must be stored).
    """
    if seeds is None:
        store.require_methods(experiment, methods, [density])
    lines, errors, colors, markers = {}, {}, {}, {}
    for method in methods:
        values = np.vstack([layer_densities(store.masks(experiment, method, density, s)) for s in seeds or SEEDS])
        label = store.label(method)
        lines[label], errors[label] = values.mean(0), values.std(0)
        colors[label], markers[label] = method_style(method).color, method_style(method).marker or "D"
    title = f"{ARCH[experiment]}: density per layer at {percent(density)}% target density"
    if seeds is not None:
        title += f" ({seeds_phrase(seeds)})"
    return plots.layer_density_lines(lines, title=title, errors=errors, colors=colors, markers=markers)


def empty_units(store: Store, experiment: str, density: float, methods: Sequence[str] = METHODS) -> pd.DataFrame:
    """Units (rows/filters) left without any weight, per layer, mean over seeds."""
    from utils.analysis import masked_units
    store.require_methods(experiment, methods, [density])
    rows = {store.label(m): np.mean([masked_units(store.units(experiment, m, density, s)) for s in SEEDS], 0)
            for m in methods}
    df = pd.DataFrame(rows).T
    df.columns = [f"L{i + 1}" for i in range(df.shape[1])]
    df.columns.name = "empty units per layer"
    return df.round(1)


def graph_table(store: Store, experiment: str, density: float, methods: Sequence[str] = METHODS) -> pd.DataFrame:
    """Graph view of each method's nets (mean over seeds): edges, log10 input→output paths,
    dead hidden units (no path from an input or to an output), isolated units."""
    return graph_compare(store, experiment, [(m, density) for m in methods])


def graph_compare(store: Store, experiment: str, entries: Sequence[tuple[str, float]]) -> pd.DataFrame:
    """:func:`graph_table` for arbitrary ``(method, density)`` entries, one row each (density in % in the index)."""
    from utils.toolkits.graphs import components, count_paths, dead_units, to_networkx
    store.require([(experiment, m, d, s) for m, d in entries for s in SEEDS])
    rows = []
    for m, d in entries:
        stats = []
        for s in SEEDS:
            graph = to_networkx(store.model(experiment, m, d, s))
            hidden = {n for n, a in graph.nodes(data=True) if a.get("role") == "hidden"}
            stats.append({"edges": graph.number_of_edges(), "log10_paths": count_paths(graph, log10=True),
                          "dead_hidden": len(dead_units(graph)["dead"] & hidden), "hidden": len(hidden),
                          "n_isolated": components(graph)["n_isolated"]})
        rows.append({"method": store.label(m), "density %": percent(d), **pd.DataFrame(stats).mean().to_dict()})
    return pd.DataFrame(rows).set_index(["method", "density %"]).round(2)


_STATS = {"gaps": ("weight_distances", "Mean gap between kept inputs", (0, 100)),
          "clusters": ("layer_clusters", "Clusters per unit", None),
          "signs": ("sign_ratios", "Share of positive weights per cluster", (0, 1.02))}


def stat_violins(store: Store, experiment: str, density: float, methods: Sequence[str], stat: str = "clusters"):
    """Per-layer violins of a 1-D row statistic (``"gaps"``, ``"clusters"``, ``"signs"``), seeds pooled."""
    from utils import analysis
    store.require_methods(experiment, methods, [density])
    fname, ylabel, ylim = _STATS[stat]
    fn = getattr(analysis, fname)
    panels = {store.label(m): pooled([[fn(layer, thesis=store.thesis) for layer in
                                            store.units(experiment, m, density, s)] for s in SEEDS])
              for m in methods}
    cols = min(len(panels), 4)
    rows = -(-len(panels) // cols)
    return plots.violins_per_layer(panels, ylabel, ylim=ylim, layout=(rows, cols), figsize=(4.2 * cols, 3.6 * rows),
                                   colors={store.label(m): method_style(m).color for m in methods},
                                   title=f"{ARCH[experiment]}, {percent(density)}% density: {ylabel.lower()} "
                                         "(3 seeds pooled)")


def mask_images(store: Store, experiment: str, method: str, density: float, seed: int):
    """The (out, in) masks of every layer as black/white images (kept = black)."""
    store.require([(experiment, method, density, seed)])
    masks = store.masks(experiment, method, density, seed)
    n = len(masks)
    with style():
        fig, axes = plt.subplots(1, n, figsize=(2.6 * n + 1, 3.2),
                                 gridspec_kw={"width_ratios": [2.2] + [1] * (n - 1)} if n == 6 else None)
        for i, (ax, m) in enumerate(zip(np.atleast_1d(axes), masks.values())):
            m = m.reshape(m.shape[0], -1).numpy()
            ax.imshow(m, cmap="Greys", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
            ax.set_title(f"layer {i + 1}: {100 * m.mean():.1f}%", fontsize=10)
            ax.set_xlabel(f"input (of {m.shape[1]})")
            if i == 0:
                ax.set_ylabel("unit")
        fig.suptitle(f"{store.label(method)} seed {seed}: masks (rows = units, black = kept)")
        fig.tight_layout()
    return fig



def flag_vs_effective(store_eff: Store, store_flag: Store, experiment: str = FC,
                      densities: Sequence[float] = DENSITIES):
    """Gem-Miner density per layer from the effective mask (solid) and from the flags (dashed),
    one panel per target density, mean over seeds."""
    ds = [d for d in densities if all(store_eff.has(experiment, "gem-miner", d, s) for s in SEEDS)]
    if not ds:
        raise MissingRuns([(experiment, "gem-miner", d, s) for d in densities for s in SEEDS], store_eff.root)
    with style():
        cols = min(len(ds), 3)
        rows = -(-len(ds) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), sharey=True, squeeze=False)
        for ax in axes.ravel()[len(ds):]:
            ax.axis("off")
        for ax, d in zip(axes.ravel(), ds):
            for st, ls, label in ((store_eff, "-", "effective mask"), (store_flag, "--", "flags (thesis)")):
                v = np.vstack([layer_densities(st.masks(experiment, "gem-miner", d, s)) for s in SEEDS])
                ax.errorbar(np.arange(1, v.shape[1] + 1), v.mean(0), yerr=v.std(0), ls=ls, marker="o", ms=4,
                            color=method_style("gem-miner").color, mfc="white" if ls == "--" else None,
                            label=label, capsize=2)
            ax.axhline(100 * d, color="0.5", lw=0.8, ls=":")
            ax.set_yscale("log")
            ax.set_yticks([0.1, 1, 2, 5, 10, 20, 50, 100])
            ax.set_yticklabels(["0.1", "1", "2", "5", "10", "20", "50", "100"])
            ax.set(title=f"target {percent(d)}%", xlabel="Layer")
            ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
        for ax in axes[:, 0]:
            ax.set_ylabel("Density (% remaining, log)")
        axes[0, 0].legend(frameon=False, fontsize=10)
        fig.suptitle(f"{ARCH[experiment]}: Gem-Miner density per layer, effective mask vs flags "
                     "(dotted: target)")
        fig.tight_layout()
    return fig


def flag_table(store_eff: Store, store_flag: Store, experiment: str = FC) -> pd.DataFrame:
    """Gem-Miner overall density (% of analysis-layer weights) per target: effective vs flags."""
    rows = {}
    for d in DENSITIES:
        if not all(store_eff.has(experiment, "gem-miner", d, s) for s in SEEDS):
            continue
        row = {}
        for st, label in ((store_eff, "effective %"), (store_flag, "flags %")):
            vals = []
            for s in SEEDS:
                masks = st.masks(experiment, "gem-miner", d, s)
                vals.append(100 * sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values()))
            row[label] = np.mean(vals)
        rows[f"{percent(d)}"] = row
    if not rows:
        raise MissingRuns([(experiment, "gem-miner", d, s) for d in DENSITIES for s in SEEDS], store_eff.root)
    df = pd.DataFrame(rows).T.round(2)
    df.index.name = "target %"
    return df

