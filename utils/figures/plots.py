"""Drawing primitives of the figures: small functions that take computed data and draw.

Every function takes already computed data (numbers, arrays, DataFrames) and returns a
``matplotlib.figure.Figure``; nothing here reads the runs store.  Conventions:

- "density" is the % of prunable weights *remaining*; axes say so;
- epoch axes say "Epoch" (the thesis's "Layers" on the Random-FC accuracy plot meant epochs);
- fonts are ≥ 10 pt (:data:`~utils.figures.style.STYLE`) and figures at most
  :data:`~utils.figures.style.MAX_WIDTH` inches wide, so text stays ≥ 8 pt when a figure is
  scaled to a 6.5-inch column; heatmaps are viridis with a colour bar and the run tags
  ``gem_21 … rnd_63`` as ticks, x tick labels rotated 90°.

>>> fig = accuracy_curves({"Gem-Miner": {"2%": (x, y2), "50%": (x, y50)}, "SynFlow": ..., "Random": ...})
>>> save(fig, "fc_acc", "figures")
"""
from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .style import DENSITY_LABEL, MAX_WIDTH, SEED_STYLES, line_color, method_of_label, style


# ----------------------------------------------------------------------------- legends
def legend_entries(axes, order: Sequence[str] | None = None) -> tuple[list, list[str]]:
    """(handles, labels) of a figure legend: every label drawn in any of ``axes``, once each,
    in first-drawn order, or in ``order`` (labels not in it last).  Not only the first panel's:
    with a partly trained grid a label may be missing there.

    >>> h, l = legend_entries(axes.ravel(), order=["Gem-Miner", "SynFlow", "Random"])
    """
    entries: dict[str, object] = {}
    for ax in np.ravel(axes):
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    labels = list(entries)
    if order is not None:
        rank: dict[str, int] = {}
        for label in order:
            rank.setdefault(label, len(rank))
        labels.sort(key=lambda label: rank.get(label, len(rank)))
    return [entries[label] for label in labels], labels


# ----------------------------------------------------------------------------- curves
def _mean_band(y) -> tuple[np.ndarray, np.ndarray | None]:
    y = np.asarray(y, dtype=float)
    if y.ndim == 1:
        return y, None
    return np.nanmean(y, axis=0), (np.nanstd(y, axis=0) if y.shape[0] > 1 else None)


def accuracy_curves(panels: Mapping[str, Mapping[str, tuple]], title: str | None = None,
                    xlabel: str = "Epoch", ylabel: str = "Test top-1 accuracy (%)",
                    legend_title: str = DENSITY_LABEL, ylim=(0, 100), figsize=(MAX_WIDTH, 3.4),
                    band: bool = True) -> Figure:
    """Accuracy per epoch: one panel per method (thesis: G/S/R), one line per density.

    Args:
        panels: ``{panel title: {line label: (x, y)}}``; ``y`` is 1-D, or 2-D (one row per
            seed: the mean is drawn and, with ``band``, ±1 std shaded).  The line labels
            of the first panel make the legend (same labels in every panel).
        title: optional suptitle.
        xlabel, ylabel: axis labels ("Epoch", "Test top-1 accuracy (%)").
        legend_title: legend heading.
        ylim: y range (0–100 %).
        figsize: :data:`MAX_WIDTH` × 3.4 in for three panels.
        band: shade ±1 std over seeds.

    Returns:
        The figure; the legend sits above the panels.
    """
    with style():
        n = len(panels)
        fig, axes = plt.subplots(1, n, figsize=figsize, sharey=True, squeeze=False, layout="constrained")
        axes = axes[0]
        for ax, (panel, lines) in zip(axes, panels.items()):
            for i, (label, (x, y)) in enumerate(lines.items()):
                mean, std = _mean_band(y)
                color = line_color(label, i, len(lines))
                ax.plot(x, mean, label=label, color=color, lw=1.8)
                if band and std is not None:
                    ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, lw=0)
            ax.set_title(panel)
            ax.set_xlabel(xlabel)
            ax.set_ylim(*ylim)
            ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
            ax.grid(alpha=0.3)
        axes[0].set_ylabel(ylabel)
        first = next(iter(panels.values()), {})
        if first:
            # the fullest panel's order first (densities ascending), then labels only others have
            fullest = sorted(panels.values(), key=len, reverse=True)
            handles, labels = legend_entries(axes, order=[label for lines in fullest for label in lines])
            fig.legend(handles, labels, title=legend_title, loc="outside upper center", ncol=len(labels),
                       frameon=False)
        if title:
            fig.suptitle(title)
    return fig


def seed_curves(curves: Mapping, title: str, xlabel: str = "Epoch",
                ylabel: str = "Test top-1 accuracy (%)", ylim=(0, 100), figsize=(6.5, 4)) -> Figure:
    """One line per seed in a single panel (e.g. Random-FC accuracy per epoch).

    Args:
        curves: ``{seed or label: (x, y)}``.
        title, xlabel, ylabel, ylim, figsize: as usual.
    """
    with style():
        fig, ax = plt.subplots(figsize=figsize)
        for i, (label, (x, y)) in enumerate(curves.items()):
            style_ = {k: v for k, v in SEED_STYLES.get(label, {}).items() if k != "marker"}
            ax.plot(x, y, label=f"seed {label}" if isinstance(label, (int, np.integer)) else str(label),
                    **({"color": line_color(label, i, len(curves))} | style_), lw=1.8)
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel, ylim=ylim)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(frameon=False)
        fig.tight_layout()
    return fig


def layer_density_lines(lines: Mapping[str, Sequence[float]], title: str,
                        ylabel: str = "Mean density per layer (% remaining)", xlabel: str = "Layer",
                        ylim=(0, 100), marker: str = "o", figsize=None,
                        errors: Mapping[str, Sequence[float]] | None = None,
                        colors: Mapping[str, str] | None = None,
                        markers: Mapping[str, str] | None = None,
                        linestyles: Mapping[str, str] | None = None) -> Figure:
    """Density of each layer (1-based), one line per method or seed.

    Args:
        lines: ``{label: densities in % for layers 1..L}``.
        title: e.g. "FC: density per layer at 50% target density".
        ylabel, xlabel: axis labels ("density (% remaining)" wording, "Layer").
        ylim: y range (0–100 %).
        marker: line marker ("o").
        figsize: default 6.5×3.8 in (6 layers) or :data:`MAX_WIDTH`×3.6 in (> 10 layers).
        errors: optional ``{label: std per layer}`` drawn as error bars (seed spread).
        colors: optional ``{label: colour}``.
        markers: optional ``{label: marker}`` (overrides ``marker``; keeps coinciding lines apart).
        linestyles: optional ``{label: line style}`` (e.g. one per seed).
    """
    with style():
        n_layers = max((len(v) for v in lines.values()), default=0)
        fig, ax = plt.subplots(figsize=figsize or ((MAX_WIDTH, 3.6) if n_layers > 10 else (6.5, 3.8)))
        for i, (label, values) in enumerate(lines.items()):
            x = np.arange(1, len(values) + 1)
            color = (colors or {}).get(label) or line_color(label, i, len(lines))
            err = None if errors is None else errors.get(label)
            ax.errorbar(x, values, yerr=err, label=str(label), marker=(markers or {}).get(label, marker),
                        color=color, lw=1.6, ms=6, mfc="none" if i % 2 else color,
                        ls=(linestyles or {}).get(label, "-"), capsize=3 if err is not None else 0)
        ax.set_xticks(np.arange(1, n_layers + 1))
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel, ylim=ylim)
        ax.grid(alpha=0.3)
        ax.legend(frameon=False)
        fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- violins
def violins(ax, data: Sequence, color=None, ylim=None, positions=None, width: float = 0.8,
            counts: bool = False) -> None:
    """Violins (``showmeans``, no extrema) of ``data`` (one array per position) into ``ax``.

    Empty arrays leave their position blank, marked "none".  With ``ylim``, values outside the range are
    not drawn and their count is written at the top of the column ("k>100": k values above 100).
    ``counts`` writes under each tick how many values the violin shows, and how many NaN values
    (e.g. units with fewer than 2 weights, which have no gap) were left out: "49", "−251".
    """
    positions = np.arange(1, len(data) + 1) if positions is None else np.asarray(positions)
    arrays = [np.asarray(d, dtype=float).ravel() for d in data]
    dropped = [int((~np.isfinite(a)).sum()) for a in arrays]
    arrays = [a[np.isfinite(a)] for a in arrays]
    keep = [i for i, a in enumerate(arrays) if a.size]
    if keep:
        parts = ax.violinplot([arrays[i] for i in keep], positions=positions[keep], widths=width,
                              showmeans=True, showextrema=False)
        for body in parts["bodies"]:
            if color is not None:
                body.set_facecolor(color)
            body.set_edgecolor("black")
            body.set_linewidth(0.6)
            body.set_alpha(0.7)
        parts["cmeans"].set_color("black")
        parts["cmeans"].set_linewidth(1.2)
    for pos, a in zip(positions, arrays):
        if not a.size:
            ax.annotate("none", (pos, 0), xytext=(0, 3), textcoords="offset points", xycoords=("data", "axes fraction"),
                        ha="center", va="bottom", fontsize=10, color="dimgray")
    if ylim is not None:
        ax.set_ylim(*ylim)
        for pos, a in zip(positions, arrays):
            above = int((a > ylim[1]).sum())
            if above:
                ax.annotate(f"{above}>{ylim[1]:g}", (pos, ylim[1]), xytext=(0, 2),
                            textcoords="offset points", ha="center", va="bottom", fontsize=10,
                            color="dimgray", annotation_clip=False)
    ax.set_xticks(positions)
    if counts:
        ax.set_xticklabels([f"{pos}\n{a.size}" + (f"\n−{d}" if d else "")
                            for pos, a, d in zip(positions, arrays, dropped)])
    ax.set_xlim(positions[0] - 0.6, positions[-1] + 0.6)


def violins_per_layer(panels: Mapping[str, Sequence], ylabel, title: str | None = None,
                      ylim=None, xlabel: str = "Layer", layout: tuple[int, int] | None = None,
                      figsize=None, colors: Mapping[str, str] | None = None,
                      xticklabels: Sequence | None = None, sharey: bool = True, counts: bool | list = False,
                      note: str | None = None) -> Figure:
    """Per-layer violins (``showmeans``, no extrema), one panel per method.

    Args:
        panels: ``{panel title: [values of layer 1, values of layer 2, ...]}``.
        ylabel: y label, or one per panel.
        title: suptitle.
        ylim: y range (tuple) for all panels, or a list with one per panel (``None``: automatic).
        xlabel: "Layer" (or one per panel).
        layout: (rows, cols); default one row.
        figsize: default :data:`MAX_WIDTH` wide (2.7 in per panel up to that), 3.2 in per row.
        colors: ``{panel title: colour}``; method names map to the method colours.
        xticklabels: tick labels (default 1..L).
        sharey: share the y axis between panels when ``ylim`` is common.
        counts: write the number of values under each violin (see :func:`violins`); a list: per panel.
        note: a line under the figure (e.g. what the counts mean).
    """
    n = len(panels)
    rows, cols = layout or (1, n)
    with style():
        fig, axes = plt.subplots(rows, cols, figsize=figsize or (min(MAX_WIDTH, 2.7 * cols), 3.2 * rows),
                                 squeeze=False, sharey=sharey and (ylim is None or isinstance(ylim, tuple)))
        axes = axes.ravel()
        for i, (ax, (panel, data)) in enumerate(zip(axes, panels.items())):
            color = (colors or {}).get(panel) or line_color(method_of_label(panel), i, n)
            panel_ylim = ylim[i] if isinstance(ylim, list) else ylim
            violins(ax, data, color=color, ylim=panel_ylim, counts=counts[i] if isinstance(counts, list) else counts)
            if xticklabels is not None:
                ax.set_xticklabels(xticklabels)
            ax.set_title(panel)
            ax.set_xlabel(xlabel[i] if isinstance(xlabel, (list, tuple)) else xlabel)
            ax.set_ylabel(ylabel[i] if isinstance(ylabel, (list, tuple)) else ylabel)
            if sharey and not isinstance(ylim, list) and i % cols:
                ax.set_ylabel("")
            ax.grid(axis="y", alpha=0.3)
        for ax in axes[n:]:
            ax.set_visible(False)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        if note:
            fig.text(0.5, 0.0, "\n".join(textwrap.wrap(note, int(fig.get_figwidth() * 12.2))), ha="center",
                     va="top", fontsize=10)
    return fig



def cluster_ratio_violins(panels: Mapping[str, Sequence[np.ndarray]], title: str | None = None,
                          ylabel: str = "Cluster ratio", xlabel: str = "Layer",
                          figsize=(MAX_WIDTH, 7.5)) -> Figure:
    """Per-filter cluster ratios over the layers, one row per method (3×1), y 0–1.

    Args:
        panels: ``{method title: [ratios of layer 1, ..., layer L]}``.
        title: suptitle.
        ylabel, xlabel: axis labels.
        figsize: :data:`MAX_WIDTH` × 7.5 in for three rows.
    """
    return violins_per_layer(panels, ylabel, title=title, ylim=(0, 1.05), xlabel=xlabel,
                             layout=(len(panels), 1), figsize=figsize, sharey=True)


# ----------------------------------------------------------------------------- heatmaps / maps
def matrix_heatmap(df: pd.DataFrame, title: str, cbar_label: str | None = None, vmin=None, vmax=None,
                     annotate: bool = True, figsize=(6.8, 5.8), cmap: str = "viridis") -> Figure:
    """Square matrix (9×9 runs) as a viridis ``imshow`` with a colour bar.

    Args:
        df: square DataFrame; its index/columns (e.g. ``gem_21 … rnd_63``) are the ticks.
        title: e.g. "Distances based on Edit Distance".
        cbar_label: colour-bar label.
        vmin, vmax: colour range (default: data range).
        annotate: write each value (2 decimals) into its cell.
        figsize: figure size in inches.
        cmap: colour map (viridis).
    """
    values = df.to_numpy(dtype=float)
    with style():
        fig, ax = plt.subplots(figsize=figsize)
        im = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax)
        ax.set_xticks(np.arange(values.shape[1]))
        ax.set_xticklabels([str(c) for c in df.columns], rotation=90)
        ax.set_yticks(np.arange(values.shape[0]))
        ax.set_yticklabels([str(i) for i in df.index])
        for spine in ax.spines.values():
            spine.set_visible(False)
        cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        if cbar_label:
            cbar.set_label(cbar_label)
        if annotate and values.size <= 144:
            lo, hi = im.get_clim()
            mid = lo + 0.6 * (hi - lo)
            for (r, c), v in np.ndenumerate(values):
                if np.isfinite(v):
                    ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=10 if values.shape[0] <= 9 else 8,
                            color="black" if v > mid else "white")
        ax.set_title(title)
        fig.tight_layout()
    return fig


def first_layer_map_plot(image: np.ndarray, title: str, cbar_label: str = "Sum of masked weights",
                         figsize=(5.2, 4.4), cmap: str = "rainbow") -> Figure:
    """First-layer map (28×28): rainbow ``imshow`` with a colour bar and no ticks.

    Args:
        image: (28, 28) array from :func:`utils.analysis.first_layer_map`.
        title: e.g. "Gem-Miner, 50% density, seed 42".
        cbar_label: colour-bar label.
    """
    with style():
        fig, ax = plt.subplots(figsize=figsize)
        im = ax.imshow(image, cmap=cmap)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(True)
        cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        cbar.set_label(cbar_label)
        ax.set_title(title)
        fig.tight_layout()
    return fig


def kernel_grid(patterns_counts: Sequence[tuple[np.ndarray, int]], suptitle: str,
                rows: int = 2, cols: int = 10, figsize=(MAX_WIDTH, 2.6)) -> Figure:
    """The most frequent binary 3×3 kernel patterns (2×10), each titled with its count.

    Args:
        patterns_counts: ``[(3×3 bool pattern, count), ...]`` from
            :func:`utils.analysis.common_kernels` (at most rows·cols are drawn).
        suptitle: e.g. "SynFlow 10% seed 42".
        rows, cols: grid shape.
        figsize: figure size.
    """
    with style():
        fig, axes = plt.subplots(rows, cols, figsize=figsize, squeeze=False)
        for ax, item in zip(axes.ravel(), list(patterns_counts) + [None] * (rows * cols)):
            ax.set_xticks([])
            ax.set_yticks([])
            if item is None:
                ax.set_visible(False)
                continue
            pattern, count = item
            ax.imshow(np.asarray(pattern, dtype=float), cmap="Greys", vmin=0, vmax=1)
            for k in (0.5, 1.5):
                ax.axhline(k, color="0.6", lw=0.6)
                ax.axvline(k, color="0.6", lw=0.6)
            for spine in ax.spines.values():
                spine.set_visible(True)
                spine.set_color("0.3")
            ax.set_title(f"{count:,}", fontsize=10)
        fig.suptitle(suptitle)
        fig.tight_layout()
    return fig




def matrix_heatmaps(dfs: Mapping[str, pd.DataFrame], suptitle: str, cbar_label: str, vmin=None,
                    vmax=None) -> Figure:
    """Square matrices side by side (``{panel title: DataFrame}``) with one shared colour scale
    (values written in the cells when there are at most 144)."""
    values = np.concatenate([d.to_numpy(float).ravel() for d in dfs.values()])
    vmin = np.nanmin(values) if vmin is None else vmin
    vmax = np.nanmax(values) if vmax is None else vmax
    with style():
        fig, axes = plt.subplots(1, len(dfs), figsize=(6.2 * len(dfs) + 0.8, 5.6), squeeze=False)
        for ax, (title, df) in zip(axes[0], dfs.items()):
            v = df.to_numpy(float)
            im = ax.imshow(v, cmap="viridis", vmin=vmin, vmax=vmax)
            ax.set_xticks(range(v.shape[1]))
            ax.set_xticklabels([str(c) for c in df.columns], rotation=90)
            ax.set_yticks(range(v.shape[0]))
            ax.set_yticklabels([str(c) for c in df.index])
            for s in ax.spines.values():
                s.set_visible(False)
            if v.size <= 144:
                mid = vmin + 0.6 * (vmax - vmin)
                for (r, c), x in np.ndenumerate(v):
                    ax.text(c, r, f"{x:.2f}", ha="center", va="center", fontsize=9,
                            color="black" if x > mid else "white")
            ax.set_title(title)
        fig.colorbar(im, ax=axes[0].tolist(), fraction=0.02, pad=0.02, label=cbar_label)
        fig.suptitle(suptitle)
    return fig

