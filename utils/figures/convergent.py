"""Convergent learning (N05): activation correlations of matched units between runs, on the stored
probe images.
"""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from . import plots
from .pairs import group_style, pair_group, runs_by_tag, square
from .store import (
    ARCH,
    FC,
    METHODS,
    RESNET,
    SEEDS,
    MissingRuns,
    Store,
    grid,
)
from .style import method_style, percent, style, tag

#: probe images used for activations (ResNet activations are per spatial position, so fewer)
N_IMAGES = {FC: 600, RESNET: 100}
#: receptive field (input pixels) of ResNet-20's 11 activation layers (stem, 9 blocks, logits)
RESNET_RF = (3, 7, 11, 15, 21, 29, 37, 49, 65, 81, 32)


# ----------------------------------------------------------------------------- N05, the thesis figure
def probe_images(store: Store, dataset: str = "mnist") -> torch.Tensor:
    """The stored probe images of ``dataset``, normalised (fewer in fast mode)."""
    from utils.engine.data import DATASETS, normalize
    from utils.runs.results import load_probe
    images, _ = load_probe(dataset, store.probe_root)
    if store.fast:
        images = images[:200]
    return normalize(images, DATASETS[dataset])


def correlation_figure(store: Store, density: float = 0.1):
    """``fc-cor-matrix-10``: convergent-learning similarity (mean matched correlation) of 9 FC runs."""
    from utils.analysis import similarity_matrix
    from utils.runs.results import probe_path
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
            f"{method_style(m).tag} " + "/".join(str(dead[tag(m, s)]) for s in SEEDS) for m in METHODS))
    return plots.matrix_heatmap(
        df, f"Correlation Matrix\nFC, {percent(density)}% density, {len(images)} test images ({how}){note}",
        cbar_label="Mean matched correlation")


# ----------------------------------------------------------------------------- pairs of runs
def probe(store: Store, experiment: str, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(normalised images, raw uint8 images) of the stored probe set of the experiment's dataset."""
    from utils.runs.results import load_probe, probe_path
    dataset = "mnist" if experiment == FC else "cifar10"
    if not probe_path(dataset, store.probe_root).is_file():
        raise MissingRuns([], store.probe_root, f"no {dataset} probe images at {probe_path(dataset, store.probe_root)}")
    n = n or N_IMAGES[experiment]
    raw, _ = load_probe(dataset, store.probe_root)
    fast, store.fast = store.fast, False
    try:
        images = probe_images(store, dataset)
    finally:
        store.fast = fast
    return images[:n], raw[:n]


def _zscores(store: Store, experiment: str, density: float, method: str, seed: int,
             images: torch.Tensor) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Standardised activations per layer of one run (dead units → 0) and its dead-unit masks (cached)."""
    from utils.analysis import activations, standardised
    key = ("z", experiment, density, method, seed, len(images))
    if key not in store.cache:
        acts = activations(store.model(experiment, method, density, seed), images,
                           "linearised" if store.thesis else "real")
        store.cache[key] = standardised(acts)
    return store.cache[key]


def pair_similarities(store: Store, experiment: str, density: float, methods: Sequence[str] = METHODS,
                      n_images: int | None = None) -> pd.DataFrame:
    """Per-layer convergent-learning similarity of every pair of runs (long format, cached).

    The quantity of :func:`utils.analysis.similarity_matrix` (Pearson correlation on the probe
    images, one-to-one max matching, output units paired by identity; real activations, or the
    thesis's linearised ones with every layer matched under ``compat="thesis"``), kept per layer;
    each run's activations are computed once.  ``attrs["diag"]`` holds each run's
    self-similarity (below 1 only with dead units), ``attrs["dead"]`` its dead units.
    """
    from utils.analysis import matched_correlation
    key = ("sim", experiment, density, tuple(methods), n_images)
    if key in store.cache:
        return store.cache[key]
    nets = runs_by_tag(store, experiment, density, methods)
    images, _ = probe(store, experiment, n_images)
    names = list(nets)
    z = {n: _zscores(store, experiment, density, *nets[n], images) for n in names}
    rows, diag = [], {}
    for i, a in enumerate(names):
        for b in names[i:]:
            values = []
            for layer, (za, zb) in enumerate(zip(z[a][0], z[b][0])):
                C = np.clip(za.T @ zb / za.shape[0], -1.0, 1.0)
                identity = layer == len(z[a][0]) - 1 and not store.thesis
                values.append(matched_correlation(C, z[a][1][layer], z[b][1][layer], identity=identity,
                                                  exclude_dead=not store.thesis)[0])
            if a == b:
                diag[a] = float(np.mean(values))
                continue
            rows += [(a, b, nets[a][0], nets[b][0], layer + 1, "similarity", True, v) for layer, v in enumerate(values)]
    df = pd.DataFrame(rows, columns=["model_a", "model_b", "method_a", "method_b", "layer", "metric", "matched",
                                     "value"])
    df.attrs.update(names=names, diag=diag, dead={n: int(sum(d.sum() for d in z[n][1])) for n in names},
                    n_images=len(images))
    store.cache[key] = df
    return df


def similarity_heatmap(store: Store, experiment: str, density: float, methods: Sequence[str] = METHODS):
    """Runs × runs mean matched activation correlation (convergent learning)."""
    long = pair_similarities(store, experiment, density, methods)
    df = square(long, diagonal=1.0)
    if any(long.attrs["dead"].values()):
        print("dead units (σ = 0 on the probe images), summed over layers: "
              + ", ".join(f"{n} {d}" for n, d in long.attrs["dead"].items() if d))
    how = "linearised activations, thesis" if store.thesis else "real activations"
    return plots.matrix_heatmap(df, f"Correlation matrix: {ARCH[experiment]}, {percent(density)}%\n"
                                      f"({long.attrs['n_images']} probe images, {how})",
                                  cbar_label="Mean matched correlation", vmin=min(0, float(df.min().min())), vmax=1,
                                  figsize=(6.8, 5.8) if len(df) <= 9 else (9, 8))


def similarity_layers(store: Store, experiment: str, density: float, methods: Sequence[str] = METHODS):
    """Mean matched correlation per activation layer, averaged over the pairs of each method pair."""
    df = pair_similarities(store, experiment, density, methods)
    df = df.assign(group=[pair_group(a, b) for a, b in zip(df["method_a"], df["method_b"])])
    with style():
        n = int(df["layer"].max())
        fig, ax = plt.subplots(figsize=(7.5 if n <= 8 else 10, 4.2))
        for group, part in df.groupby("group", sort=False):
            mean = part.groupby("layer")["value"].mean()
            ax.plot(mean.index, mean.values, label=group, lw=1.6, ms=5, **group_style(group, methods))
        ticks = list(range(1, n + 1))
        ax.set_xticks(ticks)
        if experiment == RESNET:
            ax.set_xticklabels(["stem"] + [f"b{i}" for i in range(n - 2)] + ["logits"])
        else:
            ax.set_xticklabels([str(t) for t in ticks[:-1]] + ["logits"])
        ax.set(xlabel="Activation layer", ylabel="Mean matched correlation", ylim=(0, 1.02),
               title=f"{ARCH[experiment]}, {percent(density)}%: similarity per layer\n(logits paired by class, "
                     "hidden units by max matching)")
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5), title="method pair")
        fig.tight_layout()
    return fig



def _unit_pair(store: Store, experiment: str, density: float, a: tuple[str, int], b: tuple[str, int]) -> dict:
    """Activations, per-layer correlations and matchings of two runs on the probe images (cached)."""
    from utils.analysis import activations, correlation, dead_units, max_matching, semi_matching
    key = ("pair", experiment, density, tuple(a), tuple(b))
    if key in store.cache:
        return store.cache[key]
    store.require([(experiment, a[0], density, a[1]), (experiment, b[0], density, b[1])])
    images, raw = probe(store, experiment)
    mode = "linearised" if store.thesis else "real"
    acts = [activations(store.model(experiment, m, density, s), images, mode) for m, s in (a, b)]
    corrs = [correlation(x, y) for x, y in zip(*acts)]
    out = dict(acts=acts, corrs=corrs, raw=raw, n=len(images),
               max=[max_matching(c) for c in corrs], semi=[semi_matching(c) for c in corrs],
               dead=[[x.max(0) == x.min(0) for x in side] for side in acts],
               n_dead=[[dead_units(x) for x in side] for side in acts])
    store.cache[key] = out
    return out


def correlation_matching(store: Store, experiment: str, density: float, a: tuple[str, int], b: tuple[str, int],
                         layer: int = 2):
    """Correlation matrix of one layer before / after max matching, and the mean correlation of
    identity pairing, semi-matching and max-matching in every layer."""
    p = _unit_pair(store, experiment, density, a, b)
    C = p["corrs"][layer - 1]
    order = p["max"][layer - 1]
    ta, tb = tag(*a), tag(*b)
    with style():
        fig = plt.figure(figsize=(17, 5))
        gs = fig.add_gridspec(1, 5, width_ratios=[1, 1, 0.05, 0.12, 1.35], wspace=0.25)
        axes = [fig.add_subplot(gs[0, i]) for i in (0, 1, 4)]
        panels = ((C, "unordered (unit i vs unit i)"), (C[:, order], "ordered (max matching)"))
        for ax, (M, title) in zip(axes[:2], panels):
            im = ax.imshow(M, cmap="viridis", vmin=-1, vmax=1, interpolation="nearest")
            ax.set(title=f"Layer {layer} {title}", xlabel=f"{tb} unit", ylabel=f"{ta} unit")
            ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
            ax.yaxis.set_major_locator(plt.MaxNLocator(integer=True))
        fig.colorbar(im, cax=fig.add_subplot(gs[0, 2]), label="Correlation")
        ax = axes[2]
        n = len(C)
        x = np.arange(1, len(p["corrs"]) + 1)
        for off, (name, key, color) in enumerate((("identity (no matching)", None, "0.6"),
                                                  ("semi-matching (argmax)", "semi", "#7570b3"),
                                                  ("max matching (one-to-one)", "max", "#1b9e77"))):
            vals = [c[np.arange(len(c)), np.arange(len(c)) if key is None else p[key][li]].mean()
                    for li, c in enumerate(p["corrs"])]
            ax.bar(x + (off - 1) * 0.27, vals, width=0.27, color=color, label=name)
        ax.set_xticks(x)
        ax.set_xticklabels([str(i) for i in x[:-1]] + ["logits"])
        ax.set(xlabel="Activation layer", ylabel="Mean correlation of paired units", ylim=(min(0, ax.get_ylim()[0]), 1),
               title=f"{ta} vs {tb}: pairing units by activation")
        ax.legend(frameon=False, fontsize=10, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
        ax.grid(axis="y", alpha=0.3)
        fig.suptitle(f"{ARCH[experiment]}, {percent(density)}%: correlation of unit activations on {p['n']} "
                     f"probe images ({n} units in layer {layer})")
    return fig


def _patch(img: np.ndarray, cy: float, cx: float, size: int) -> np.ndarray:
    """A size×size crop of an (H, W, C) image centred at (cy, cx), zero-padded at the border."""
    h, w = img.shape[:2]
    size = min(size, max(h, w))
    pad = size
    padded = np.zeros((h + 2 * pad, w + 2 * pad, img.shape[2]), dtype=img.dtype)
    padded[pad:pad + h, pad:pad + w] = img
    y0 = int(round(cy - size / 2)) + pad
    x0 = int(round(cx - size / 2)) + pad
    return padded[y0:y0 + size, x0:x0 + size]


def top_activating(store: Store, experiment: str, density: float, side: int, unit: int, layer: int,
                   a: tuple[str, int], b: tuple[str, int], top: int = 6) -> list[tuple[np.ndarray, float]]:
    """The ``top`` probe images (FC) or receptive-field patches (ResNet) that activate a unit most.

    ``side`` 0 = run ``a``, 1 = run ``b``; ``layer`` is the 1-based activation layer.
    Returns ``[(image (H, W, C) uint8, activation), ...]`` — at most one patch per image.
    """
    p = _unit_pair(store, experiment, density, a, b)
    x = p["acts"][side][layer - 1][:, unit]
    n = p["n"]
    raw = p["raw"].permute(0, 2, 3, 1).numpy()
    hw = x.size // n
    per_image = x.reshape(n, hw)
    best_pos = per_image.argmax(1)
    best = per_image[np.arange(n), best_pos]
    out = []
    for img in np.argsort(-best, kind="stable")[:top]:
        if hw == 1:
            out.append((raw[img], float(best[img])))
            continue
        side_len = int(round(np.sqrt(hw)))
        scale = raw.shape[1] / side_len
        y, xx = divmod(int(best_pos[img]), side_len)
        size = RESNET_RF[layer - 1] if experiment == RESNET else raw.shape[1]
        out.append((_patch(raw[img], (y + 0.5) * scale, (xx + 0.5) * scale, size), float(best[img])))
    return out


def top_patches(store: Store, experiment: str, density: float, a: tuple[str, int], b: tuple[str, int],
                layer: int = 2, pairs: int = 4, top: int = 5):
    """For matched unit pairs of one layer (the best ``pairs − 1`` and the median live pair), the probe
    images (FC) or receptive-field patches (ResNet) that activate each unit most."""
    p = _unit_pair(store, experiment, density, a, b)
    C, order = p["corrs"][layer - 1], p["max"][layer - 1]
    alive = ~p["dead"][0][layer - 1] & ~p["dead"][1][layer - 1][order]
    r = C[np.arange(len(order)), order]
    ranked = [i for i in np.argsort(-r, kind="stable") if alive[i]]
    if not ranked:
        raise MissingRuns([], store.root, f"layer {layer}: every matched pair has a dead unit")
    chosen = ranked[:pairs - 1] + ([ranked[len(ranked) // 2]] if len(ranked) >= 2 * pairs else [])
    ta, tb = tag(*a), tag(*b)
    gray = p["raw"].shape[1] == 1
    with style():
        fig, axes = plt.subplots(len(chosen), 2 * top + 1, figsize=(1.25 * (2 * top + 1), 1.4 * len(chosen) + 0.8),
                                 gridspec_kw={"width_ratios": [1] * top + [0.25] + [1] * top}, squeeze=False)
        for row, i in enumerate(chosen):
            for side, unit, offset in ((0, i, 0), (1, int(order[i]), top + 1)):
                best = top_activating(store, experiment, density, side, unit, layer, a, b, top)
                for k, (img, act) in enumerate(best):
                    ax = axes[row, offset + k]
                    ax.imshow(img[..., 0] if gray else img, cmap="gray" if gray else None, interpolation="nearest")
                    ax.set_xticks([]), ax.set_yticks([])
                    ax.set_xlabel(f"{act:.2g}", fontsize=10, labelpad=1)
                    if k == 0:
                        ax.set_ylabel(f"{(ta, tb)[side]}\nunit {unit}", fontsize=10)
            axes[row, top].axis("off")
            axes[row, top].text(0.5, 0.5, f"r = {r[i]:.2f}", rotation=90, ha="center", va="center", fontsize=10,
                                transform=axes[row, top].transAxes, color="#b30000" if row == len(chosen) - 1
                                and len(chosen) == pairs else "black")
        rf = RESNET_RF[layer - 1]
        what = "probe images" if experiment == FC else f"{rf}×{rf} receptive-field patches"
        fig.suptitle(f"{ARCH[experiment]}, {percent(density)}%, layer {layer}: top-{top} {what} of matched units "
                     f"({ta} left, {tb} right;\nbest pairs, last row in red = median pair; "
                     "number under each = activation)",
                     fontsize=11)
        fig.tight_layout()
    return fig



def compare_similarities(stores: dict[str, Store], experiment: str, density: float):
    """The 9×9 convergent-learning similarity under two settings, side by side."""
    dfs = {label: square(pair_similarities(s, experiment, density), diagonal=1.0) for label, s in stores.items()}
    return plots.matrix_heatmaps(dfs, f"Correlation matrix: {ARCH[experiment]}, {percent(density)}%",
                                 "Mean matched correlation")


