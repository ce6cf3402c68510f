"""First-layer maps (N06) and ResNet-20 kernels (N07)."""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

from . import plots
from .store import (
    DENSITIES,
    FC,
    KERNEL_SEEDS,
    MAP_SEED,
    METHODS,
    RESNET,
    MissingRuns,
    Store,
    pooled,
    seeds_phrase,
)
from .style import method_style, percent, style


# ----------------------------------------------------------------------------- N06 first-layer maps
def first_layer_map_figure(store: Store, method: str, density: float, seed: int = MAP_SEED):
    """``gem-fm-fc-50`` etc.: masked first-layer weights summed over units, as a 28×28 image."""
    from utils.analysis import first_layer_map
    store.require([(FC, method, density, seed)])
    image = first_layer_map(store.units(FC, method, density, seed)[0])
    return plots.first_layer_map_plot(image, f"{store.label(method)}, {percent(density)}% density, seed {seed}",
                                      cbar_label="Sum of masked weights per pixel")


# ----------------------------------------------------------------------------- N07 kernels
def kernel_figure(store: Store, method: str, density: float = 0.1, seed: int | None = None):
    """``gem-kernel-10`` etc.: the 20 most frequent binary 3×3 kernels of one ResNet-20."""
    from utils.analysis import common_kernels
    seed = KERNEL_SEEDS[method] if seed is None else seed
    store.require([(RESNET, method, density, seed)])
    top = common_kernels(store.units(RESNET, method, density, seed), top=20)
    return plots.kernel_grid(top, f"{store.label(method)} {percent(density)}% seed {seed}: the 20 most frequent "
                                  "binary 3×3 kernels (black = kept weight; count above each)")


def resnet_clusters(store: Store, density: float = 0.05):
    """``resnet_clusters``: per-filter cluster ratio over the 20 layers, one row per method."""
    from utils.analysis import model_cluster_ratios
    seeds = store.complete_seeds(RESNET, densities=[density])
    panels = {}
    for method in METHODS:
        per_seed = [model_cluster_ratios(store.units(RESNET, method, density, s), dense="last",
                                         connectivity="4", thesis=store.thesis) for s in seeds]
        panels[store.label(method)] = pooled(per_seed)
    return plots.cluster_ratio_violins(
        panels, title=f"ResNet-20, {percent(density)}% density: per-filter cluster ratio "
                      f"(4-neighbour kernels; fc rows 1-D; {seeds_phrase(seeds)}, pooled)")



# ----------------------------------------------------------------------------- maps and kernels
def map_grid(store: Store, methods: Sequence[str] = METHODS, densities: Sequence[float] = DENSITIES,
             seed: int = MAP_SEED, kind: str = "weights"):
    """First-layer maps (FC): rows methods, columns densities; each panel its own colour bar.

    ``kind="weights"``: masked first-layer weights summed over the 100 units (rainbow, as the thesis);
    ``"count"``: kept connections per pixel.  Runs that are not stored leave a labelled blank.
    """
    from utils.analysis import first_layer_map
    keys = [(FC, m, d, seed) for m in methods for d in densities]
    if not any(store.has(*k) for k in keys):
        raise MissingRuns(keys, store.root)
    single = len(densities) == 1
    wrap = min(len(methods), 4)
    shape = (-(-len(methods) // wrap), wrap) if single else (len(methods), len(densities))
    with style():
        fig, axes = plt.subplots(*shape, figsize=(2.9 * shape[1], 2.55 * shape[0] + (0.4 if single else 0)),
                                 squeeze=False)
        for ax in axes.ravel()[len(methods) if single else axes.size:]:
            ax.axis("off")
        for r, m in enumerate(methods):
            for c, d in enumerate(densities):
                ax = axes.ravel()[r] if single else axes[r, c]
                ax.set_xticks([]), ax.set_yticks([])
                if store.has(FC, m, d, seed):
                    image = first_layer_map(store.units(FC, m, d, seed)[0], kind=kind)
                    if np.any(image):
                        im = ax.imshow(image, cmap="rainbow" if kind == "weights" else "viridis")
                        cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
                        cb.ax.tick_params(labelsize=8)
                    else:   # a colour bar of an all-zero image would only show a meaningless scale
                        ax.text(0.5, 0.5, "layer 1 empty", ha="center", va="center", transform=ax.transAxes)
                else:
                    ax.text(0.5, 0.5, "not stored", ha="center", va="center", transform=ax.transAxes, color="0.4")
                if single:
                    ax.set_title(store.label(m))
                else:
                    if r == 0:
                        ax.set_title(f"{percent(d)}%")
                    if c == 0:
                        ax.set_ylabel(store.label(m))
        what = "sum of masked weights" if kind == "weights" else "kept connections"
        cols = f"{percent(densities[0])}% density" if single else "columns: density % remaining"
        fig.suptitle(f"FC first layer: {what} per input pixel (seed {seed}; {cols})")
        fig.tight_layout()
    return fig


def kernel_rows(store: Store, density: float, methods: Sequence[str] = METHODS, top: int = 12):
    """ResNet-20: the ``top`` most frequent binary 3×3 kernels per method (rows), count above each,
    seeds as in the thesis figure (Gem-Miner 21, SynFlow/random 42; others 42)."""
    from utils.analysis import common_kernels
    seeds = {m: KERNEL_SEEDS.get(m, 21) for m in methods}
    have = [m for m in methods if store.has(RESNET, m, density, seeds[m])]
    if not have:
        raise MissingRuns([(RESNET, m, density, seeds[m]) for m in methods], store.root)
    with style():
        fig, axes = plt.subplots(len(have), top, figsize=(1.15 * top + 1.5, 1.45 * len(have) + 0.5), squeeze=False)
        for r, m in enumerate(have):
            kernels = common_kernels(store.units(RESNET, m, density, seeds[m]), top=top)
            total = 29744
            for c in range(top):
                ax = axes[r, c]
                ax.set_xticks([]), ax.set_yticks([])
                if c >= len(kernels):
                    ax.axis("off")
                    continue
                pattern, count = kernels[c]
                ax.imshow(pattern.astype(float), cmap="Greys", vmin=0, vmax=1)
                for k in (0.5, 1.5):
                    ax.axhline(k, color="0.6", lw=0.5), ax.axvline(k, color="0.6", lw=0.5)
                ax.set_title(f"{100 * count / total:.1f}%", fontsize=10)
                if c == 0:
                    ax.set_ylabel(f"{store.label(m)}\ns{seeds[m]}", fontsize=10)
        fig.suptitle(f"ResNet-20, {percent(density)}%: most frequent binary 3×3 kernels (black = kept; share of the "
                     f"29,744 kernels above each)", fontsize=11)
        fig.tight_layout()
    return fig


def kernel_nnz(store: Store, methods: Sequence[str] = METHODS, densities: Sequence[float] = DENSITIES):
    """ResNet-20: share of 3×3 kernels with k kept weights (bars) vs the share if each layer's kept
    weights were spread uniformly at random (binomial, markers). Excess at 0 and at large k means
    weights are concentrated in few kernels."""
    from scipy.stats import binom

    from utils.analysis import common_kernels
    ds = [d for d in densities if any(store.has(RESNET, m, d, KERNEL_SEEDS.get(m, 21)) for m in methods)]
    if not ds:
        raise MissingRuns([(RESNET, m, d, KERNEL_SEEDS.get(m, 21)) for m in methods for d in densities], store.root)
    k = np.arange(10)
    width = 0.8 / len(methods)
    with style():
        cols = min(len(ds), 3)
        rows = -(-len(ds) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.6 * rows + 0.8), sharey=True, squeeze=False,
                                 layout="constrained")
        flat = axes.ravel()
        for ax, d in zip(flat, ds):
            for i, m in enumerate(methods):
                seed = KERNEL_SEEDS.get(m, 21)
                if not store.has(RESNET, m, d, seed):
                    continue
                units = store.units(RESNET, m, d, seed)
                hist = np.zeros(10)
                for pattern, count in common_kernels(units, top=None):
                    hist[int(pattern.sum())] += count
                convs = [u for u in units if u.ndim == 4 and u.shape[2:] == (3, 3)]
                expect = sum(u.shape[0] * u.shape[1] * binom.pmf(k, 9, float((u != 0).mean())) for u in convs)
                x = k + (i - (len(methods) - 1) / 2) * width
                ax.bar(x, hist / hist.sum(), width=width, color=method_style(m).color, label=store.label(m))
                ax.plot(x, expect / expect.sum(), "k_", ms=7, mew=1.5)
            ax.set_yscale("log")
            ax.set_ylim(1e-4, 1.2)
            ax.set_xticks(k)
            ax.set(title=f"{percent(d)}%", xlabel="Kept weights per 3×3 kernel")
            ax.grid(axis="y", alpha=0.3)
        for ax in axes[:, 0]:
            ax.set_ylabel("Share of kernels (log)")
        for ax in flat[len(ds):]:
            ax.axis("off")
        handles, labels = plots.legend_entries(flat, order=[store.label(m) for m in methods])
        fig.legend(handles, labels, frameon=False, loc="outside lower center", ncol=len(labels),
                   title=f"bars: seed {'/'.join(str(s) for s in sorted({KERNEL_SEEDS.get(m, 21) for m in methods}))}; "
                         f"black ticks = uniform placement")
        fig.suptitle("ResNet-20: kept weights per 3×3 kernel vs uniform random placement per layer")
    return fig


