"""Generated versions of the thesis's hand-drawn illustrations (N08).

>>> save(one_dim_weights(), "one-dim-weights")
"""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import patches
from matplotlib.figure import Figure

from .style import MAX_WIDTH, style

#: the 8×8 mask of ``kernel-to-graph``
KERNEL_EXAMPLE = np.array([
    [1, 1, 0, 0, 0, 0, 0, 1],
    [0, 1, 0, 0, 1, 0, 0, 0],
    [0, 0, 1, 0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 1, 1, 0],
    [1, 0, 0, 0, 0, 0, 1, 0],
    [0, 0, 0, 1, 0, 0, 0, 0],
    [0, 0, 0, 0, 1, 0, 0, 1],
    [1, 0, 0, 0, 0, 0, 0, 1]], dtype=bool)


def one_dim_weights_plot(positions: Sequence[int] = (6, 7, 8, 10, 13), length: int = 16,
                         figsize=(MAX_WIDTH, 2.4)) -> Figure:
    """One unit's row as a strip of cells: kept weights filled, gaps between neighbours labelled.

    The default reproduces the thesis's hand-drawn example: nonzeros 6, 7, 8, 10, 13 →
    gaps 1, 1, 2, 3 (mean gap 1.75), three clusters (runs of consecutive indices).
    """
    p = np.asarray(sorted(positions))
    gaps = np.diff(p)
    runs = len(np.split(p, np.flatnonzero(gaps != 1) + 1)) if p.size else 0
    with style():
        fig, ax = plt.subplots(figsize=figsize)
        for i in range(length):
            on = i in set(p.tolist())
            ax.add_patch(patches.Rectangle((i, 0), 1, 1, facecolor="#1b9e77" if on else "white",
                                           edgecolor="0.3", lw=1))
            ax.text(i + 0.5, -0.35, str(i), ha="center", va="center", fontsize=10)
        for a, b, g in zip(p[:-1], p[1:], gaps):
            ax.annotate("", xy=(b + 0.5, 1.15), xytext=(a + 0.5, 1.15),
                        arrowprops=dict(arrowstyle="<->", color="0.2", lw=1.2,
                                        connectionstyle="arc3,rad=-0.5" if g == 1 else "arc3,rad=-0.3"))
            ax.text((a + b) / 2 + 0.5, 1.75 if g == 1 else 1.95, str(g), ha="center", va="center", fontsize=11)
        ax.set_xlim(-0.2, length + 0.2)
        ax.set_ylim(-0.7, 2.4)
        ax.axis("off")
        mean = f"{gaps.mean():.2f}" if gaps.size else "n/a"
        ax.set_title(f"Nonzero positions {', '.join(map(str, p))}: gaps {', '.join(map(str, gaps))} "
                     f"(mean {mean}), {runs} clusters")
        fig.tight_layout()
    return fig


def kernel_to_graph_plot(mask: np.ndarray, connectivity: str = "4", figsize=(MAX_WIDTH, 3.8)) -> Figure:
    """A binary mask (left) and its kernel graph (right): nodes are the nonzero entries,
    edges join neighbours (``"8"``: Chebyshev distance 1, i.e. diagonal edges included;
    ``"4"``: Manhattan distance 1).  Components with ≥ 2 nodes are coloured, singletons grey.
    """
    import networkx as nx
    mask = np.asarray(mask).astype(bool)
    nodes = list(zip(*np.nonzero(mask)))
    graph = nx.Graph()
    graph.add_nodes_from(nodes)
    for (r1, c1) in nodes:
        for (r2, c2) in nodes:
            d_r, d_c = abs(r1 - r2), abs(c1 - c2)
            near = (d_r + d_c == 1) if connectivity == "4" else (max(d_r, d_c) == 1)
            if (r1, c1) < (r2, c2) and near:
                graph.add_edge((r1, c1), (r2, c2))
    comps = sorted(nx.connected_components(graph), key=lambda c: (-len(c), min(c)))
    big = [c for c in comps if len(c) >= 2]
    palette = plt.cm.tab10(np.arange(10))
    node_color = {}
    for i, comp in enumerate(big):
        for node in comp:
            node_color[node] = palette[i % 10]
    ratio = (len(big) / len(comps)) if len(comps) > 1 else float(len(big) == 1)
    with style():
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=figsize)
        ax1.imshow(mask, cmap="Greys", vmin=0, vmax=1)
        ax1.set_xticks(np.arange(mask.shape[1]))
        ax1.set_yticks(np.arange(mask.shape[0]))
        ax1.set_xticks(np.arange(-0.5, mask.shape[1]), minor=True)
        ax1.set_yticks(np.arange(-0.5, mask.shape[0]), minor=True)
        ax1.grid(which="minor", color="0.6", lw=0.6)
        ax1.tick_params(which="minor", length=0)
        ax1.set_title(f"{mask.shape[0]}×{mask.shape[1]} mask ({len(nodes)} nonzeros)")
        pos = {n: (n[1], -n[0]) for n in nodes}
        nx.draw_networkx_edges(graph, pos, ax=ax2, width=1.6, edge_color="0.3")
        nx.draw_networkx_nodes(graph, pos, ax=ax2, node_size=170,
                               node_color=[node_color.get(n, (0.75, 0.75, 0.75, 1)) for n in nodes],
                               edgecolors="black", linewidths=0.8)
        ax2.set_xlim(-0.7, mask.shape[1] - 0.3)
        ax2.set_ylim(-mask.shape[0] + 0.3, 0.7)
        ax2.set_aspect("equal")
        ax2.axis("off")
        ax2.set_title(f"Graph ({'diagonal edges included' if connectivity == '8' else '4-neighbour edges'}): "
                      f"{len(comps)} components, cluster ratio {ratio:.2f}", fontsize=11)
        fig.tight_layout()
    return fig


def channel_order_plot(perm: Sequence[int] = (2, 0, 3, 1), n_out: int = 3, figsize=(MAX_WIDTH, 3.9)) -> Figure:
    """Why permutations must be propagated: permuting Conv-1's filters permutes Conv-2's
    in-channels.  Top: original order; bottom: Conv-1 filters reordered by ``perm`` and
    Conv-2's kernels (one column per in-channel) reordered the same way, so the network
    computes the same function.  Colours identify the Conv-1 filter / channel.
    """
    perm = np.asarray(perm)
    n = len(perm)
    colors = plt.cm.Set2(np.arange(n))
    with style():
        fig, axes = plt.subplots(2, 2, figsize=figsize, gridspec_kw={"width_ratios": [1, n]})
        for row, order in enumerate((np.arange(n), perm)):
            ax1, ax2 = axes[row]
            for j, f in enumerate(order):
                ax1.add_patch(patches.Rectangle((0, n - 1 - j), 1, 0.85, facecolor=colors[f], edgecolor="0.2"))
                ax1.text(0.5, n - 1 - j + 0.42, f"filter {f + 1}", ha="center", va="center", fontsize=10)
            ax1.set_xlim(-0.1, 1.1)
            ax1.set_ylim(-0.2, n)
            ax1.axis("off")
            ax1.set_title("Conv-1 filters" + (" (permuted)" if row else ""), fontsize=11)
            for o in range(n_out):
                for j, f in enumerate(order):
                    ax2.add_patch(patches.Rectangle((j, n_out - 1 - o), 0.9, 0.85, facecolor=colors[f],
                                                    edgecolor="0.2"))
                    ax2.text(j + 0.45, n_out - 1 - o + 0.42, f"W{o + 1},{f + 1}", ha="center", va="center",
                             fontsize=10)
            for j, f in enumerate(order):
                ax2.text(j + 0.45, n_out + 0.1, f"in-ch {f + 1}", ha="center", va="bottom", fontsize=10)
            ax2.set_xlim(-0.1, n)
            ax2.set_ylim(-0.2, n_out + 0.7)
            ax2.axis("off")
            ax2.set_title("Conv-2 kernels (rows: filters, columns: in-channels)"
                          + (" with in-channels permuted alike" if row else ""), fontsize=11)
        order_txt = ", ".join(str(p + 1) for p in perm)
        fig.suptitle(f"Permuting Conv-1 filters to ({order_txt}) permutes Conv-2 in-channels the same way")
        fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- registry builders
def one_dim_weights(store=None) -> Figure:
    """``one-dim-weights``: nonzeros 6, 7, 8, 10, 13 → gaps 1, 1, 2, 3 (``store`` is not read)."""
    return one_dim_weights_plot((6, 7, 8, 10, 13))


def kernel_to_graph(store=None) -> Figure:
    """``kernel-to-graph``: an 8×8 mask and its graph under the 4-neighbour rule that
    ``resnet_clusters`` counts with (the thesis's hand drawing had diagonal edges too)."""
    return kernel_to_graph_plot(KERNEL_EXAMPLE, connectivity="4")


def channel_order(store=None) -> Figure:
    """``channel_order``: permuting Conv-1 filters permutes Conv-2 in-channels."""
    return channel_order_plot((2, 0, 3, 1))
