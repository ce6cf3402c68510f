"""Sparse FC nets as graphs, dense vs CSR inference, DNW "static" and a Watts–Strogatz net:
the drawings and the store-reading builders of ``notebooks/graphs_and_sparse_inference.ipynb``.

The drawing functions take computed data (graphs, tables) and return a ``Figure``; the builders
take the :class:`~utils.figures.store.Store` first, name the runs that are missing on one line,
and raise :class:`~utils.figures.store.MissingRuns` when nothing is left to draw.

>>> make("graphs_synflow_d2", store, "figures", run_graph, FC, "synflow", 0.02, 21)
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import networkx as nx
import numpy as np
import pandas as pd
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

from utils.toolkits.graphs import dead_units
from utils.toolkits.inference import density_bin

from .plots import legend_entries
from .store import ARCH, DENSITIES, FC, SEEDS, MissingRuns, Store, summarise
from .style import DENSITY_LABEL, method_style, percent, style

POS_COLOR, NEG_COLOR, OFF_COLOR, DEAD_COLOR = "#c0392b", "#2471a3", "#bbbbbb", "#d9d9d9"


def _label(method: str) -> str:
    return method_style(method).label


def _color(method: str) -> str:
    return method_style(method).color


# ----------------------------------------------------------------------------- layered drawing
def _layers(graph: nx.DiGraph) -> dict:
    return {n: int(d["layer"]) for n, d in graph.nodes(data=True)}


def layered_layout(graph: nx.DiGraph, inputs: str = "connected") -> dict:
    """Positions ``{node: (x, y)}`` with x = layer index and y in [0, 1].

    ``inputs``: ``"connected"`` keeps only input units with at least one outgoing edge
    (ordered by pixel index, so y follows the image rows top to bottom), ``"all"`` keeps
    every input, ``"none"`` drops them.  Units of later layers are ordered by the mean y
    of their placed predecessors (one barycentre sweep, fewer crossings); units without
    placed predecessors go to the bottom, in unit order.
    """
    if inputs not in ("connected", "all", "none"):
        raise ValueError("inputs must be 'connected', 'all' or 'none'")
    layer = _layers(graph)
    pos: dict = {}
    for lv in sorted(set(layer.values())):
        nodes = [n for n in graph if layer[n] == lv]
        if lv == 0:
            if inputs == "none":
                continue
            if inputs == "connected":
                nodes = [n for n in nodes if graph.out_degree(n) > 0]
            nodes.sort(key=lambda n: graph.nodes[n].get("unit", 0))
        else:
            def key(n):
                ys = [pos[p][1] for p in graph.predecessors(n) if p in pos]
                return (0, -float(np.mean(ys)), 0) if ys else (1, 0, graph.nodes[n].get("unit", 0))
            nodes.sort(key=key)
        for i, n in enumerate(nodes):
            pos[n] = (float(lv), 1.0 - (i + 0.5) / len(nodes))
    return pos


def _on_path_edges(graph: nx.DiGraph) -> set:
    """Edges on at least one input -> output path."""
    dead = dead_units(graph)
    return {(u, v) for u, v in graph.edges
            if u not in dead["no_input_path"] and v not in dead["no_output_path"]}


def draw_layered(graph: nx.DiGraph, ax=None, inputs: str = "connected", linewidth: float = 0.35,
                 node_size: float = 6.0, layer_labels: bool = True):
    """Draw a layered unit graph (:func:`utils.toolkits.graphs.to_networkx` of an FC) on ``ax``.

    Edges on an input -> output path are red (w > 0) / blue (w < 0); edges off every such
    path are light grey.  Units with a path from an input and to an output are black,
    the others ("dead", see :func:`utils.toolkits.graphs.dead_units`) light grey.  Under each layer
    a label gives its name and ``alive/units``.  Returns the axes.
    """
    ax = ax or plt.figure(figsize=(10, 6)).add_subplot()
    pos = layered_layout(graph, inputs)
    on_path = _on_path_edges(graph)
    segs = {"off": [], "pos": [], "neg": []}
    for u, v, d in graph.edges(data=True):
        if u in pos and v in pos:
            kind = "off" if (u, v) not in on_path else ("pos" if d.get("weight", 1.0) >= 0 else "neg")
            segs[kind].append((pos[u], pos[v]))
    styles = {"off": (OFF_COLOR, 0.35), "pos": (POS_COLOR, 0.55), "neg": (NEG_COLOR, 0.55)}
    for kind in ("off", "pos", "neg"):
        if segs[kind]:
            color, alpha = styles[kind]
            ax.add_collection(LineCollection(segs[kind], colors=color, linewidths=linewidth,
                                             alpha=alpha, zorder=1 if kind == "off" else 2))
    dead = dead_units(graph)["dead"]
    alive = [n for n in pos if n not in dead]
    gone = [n for n in pos if n in dead]
    for nodes, color, z in ((gone, DEAD_COLOR, 3), (alive, "black", 4)):
        if nodes:
            xy = np.array([pos[n] for n in nodes])
            ax.scatter(xy[:, 0], xy[:, 1], s=node_size, c=color, zorder=z, linewidths=0)
    layer = _layers(graph)
    levels = sorted({layer[n] for n in pos})
    if layer_labels:
        for lv in levels:
            units = [n for n in graph if layer[n] == lv]
            name = graph.nodes[units[0]].get("name", str(lv))
            n_alive = sum(n not in dead for n in units)
            if lv == 0:
                shown = sum(1 for n in units if n in pos)
                text = f"input\n{shown}/{len(units)} connected\n{n_alive} on a path"
            else:
                text = f"{name}\n{n_alive}/{len(units)} alive"
            ax.text(lv, -0.03, text, ha="center", va="top", fontsize=9)
    ax.set_xlim(min(levels) - 0.55, max(levels) + 0.3)
    ax.set_ylim(-0.17, 1.02)
    ax.axis("off")
    return ax


def graph_legend(ax, loc="upper center", ncol: int = 5) -> None:
    """Legend of :func:`draw_layered`'s colours, placed above ``ax``."""
    handles = [Line2D([], [], color=POS_COLOR, lw=2, label="weight > 0 (on a path)"),
               Line2D([], [], color=NEG_COLOR, lw=2, label="weight < 0 (on a path)"),
               Line2D([], [], color=OFF_COLOR, lw=2, label="edge off every path"),
               Line2D([], [], marker="o", ls="", color="black", label="alive unit"),
               Line2D([], [], marker="o", ls="", color=DEAD_COLOR, label="dead unit")]
    ax.legend(handles=handles, loc=loc, ncol=ncol, frameon=False, bbox_to_anchor=(0.5, 1.08),
              fontsize=9)


def graph_figure(graph: nx.DiGraph, title: str | None = None, image_shape=(28, 28),
                 inputs: str = "connected", figsize=(15, 6.5)) -> Figure:
    """Two panels: the input pixels' out-degree as an image (which pixels the first layer
    reads, and with how many edges), and the layered drawing (:func:`draw_layered`)."""
    with style():
        fig = plt.figure(figsize=figsize)
        grid = fig.add_gridspec(1, 2, width_ratios=[1.15, 4], wspace=0.04)
        ax_img, ax = fig.add_subplot(grid[0]), fig.add_subplot(grid[1])
        layer = _layers(graph)
        ins = sorted((n for n in graph if layer[n] == 0), key=lambda n: graph.nodes[n].get("unit", 0))
        deg = np.array([graph.out_degree(n) for n in ins], dtype=float)
        if deg.size == math.prod(image_shape):
            img = np.ma.masked_equal(deg.reshape(image_shape), 0)
            cmap = plt.get_cmap("viridis").with_extremes(bad="#eeeeee")
            im = ax_img.imshow(img, cmap=cmap)
            ax_img.set_anchor("C")
            cbar = fig.colorbar(im, ax=ax_img, location="bottom", fraction=0.05, pad=0.03, shrink=0.9)
            cbar.set_label("out-degree of the pixel\n(grey: not connected)", fontsize=9)
            ax_img.set_title(f"input pixels\n{int((deg > 0).sum())} of {deg.size} connected", fontsize=11)
        ax_img.set_xticks([])
        ax_img.set_yticks([])
        draw_layered(graph, ax, inputs=inputs)
        graph_legend(ax)
        if title:
            fig.suptitle(title, y=1.02)
    return fig


def degree_plot(frame: pd.DataFrame, title: str | None = None, figsize=None) -> Figure:
    """Grid of box plots: columns = weight layers, rows = fan-out (top) and fan-in (bottom),
    one box per network (``network`` values are method names) with the units as dots."""
    layers = list(dict.fromkeys(frame.sort_values("index")["layer"]))
    nets = list(dict.fromkeys(frame["network"]))
    palette = {m: _color(m) for m in nets}
    with style():
        fig, axes = plt.subplots(2, len(layers), figsize=figsize or (2.5 * len(layers), 6.8),
                                 squeeze=False)
        for r, side in enumerate(("fan-out", "fan-in")):
            for c, name in enumerate(layers):
                ax = axes[r, c]
                part = frame[(frame["layer"] == name) & (frame["side"] == side)]
                rng = np.random.default_rng(c + 10 * r)
                values = [part.loc[part["network"] == m, "degree"].to_numpy() for m in nets]
                box = ax.boxplot(values, positions=range(len(nets)), widths=0.6, patch_artist=True,
                                 showfliers=False, medianprops=dict(color="black"))
                for patch, m in zip(box["boxes"], nets):
                    patch.set(facecolor=palette[m], alpha=0.45)
                for i, (m, v) in enumerate(zip(nets, values)):
                    ax.scatter(i + rng.uniform(-0.25, 0.25, len(v)), v, s=2.5, color=palette[m],
                               alpha=0.5, linewidths=0, zorder=3)
                ax.set_xlabel("")
                ax.set_ylabel(("out-degree of input units\n(fan-out)" if side == "fan-out"
                               else "in-degree of output units\n(fan-in)") if c == 0 else "")
                ax.set_ylim(bottom=-0.5)
                if r == 0:
                    ax.set_title(name)
                    ax.set_xticks(range(len(nets)), [])
                else:
                    ax.set_xticks(range(len(nets)), [_label(m) for m in nets], rotation=90)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
    return fig



def _density_axis(ax, values) -> None:
    """Log x axis in % with a tick at every density in ``values`` (fractions)."""
    ax.set_xscale("log")
    lo, hi = 100 * min(values), 100 * max(values)
    ticks = [t for t in (0.5, 1, 2, 5, 10, 20, 50, 100) if lo / 1.3 <= t <= hi * 1.3] or [round(lo, 1)]
    ax.set_xlim(min(lo, ticks[0]) / 1.25, max(hi, ticks[-1]) * 1.25)
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel(DENSITY_LABEL)



def memory_latency_plot(table: pd.DataFrame, title: str | None = None, figsize=(15, 4.6)) -> Figure:
    """Three panels vs achieved density (log axis): weight memory and forward latency at the
    two batch sizes of :func:`inference_table`.  Grey: dense (squares; dashed: the masked
    format, dense + bool mask), black line: median CSR over the networks of each
    :func:`density_bin`, dots: CSR of single networks coloured by method.  One legend below."""
    batches = sorted(table["batch"].unique())
    methods = list(dict.fromkeys(table["method"]))
    table = table.assign(bin=density_bin(table["density_achieved"]))
    panels = [("memory", "weight memory (kB)", table[table["batch"] == batches[0]], "dense_kB", "csr_kB")]
    panels += [(f"latency, batch {b}", "forward time (ms, median)", table[table["batch"] == b], "dense_ms", "csr_ms")
               for b in batches]
    with style():
        fig, axes = plt.subplots(1, len(panels), figsize=figsize)
        for ax, (name, ylabel, part, dense_col, csr_col) in zip(axes, panels):
            med = part.groupby("bin").agg(d=("density_achieved", "median"), dense=(dense_col, "median"),
                                          csr=(csr_col, "median"), masked=("masked_kB", "median"))
            ax.plot(100 * med["d"], med["dense"], color="0.45", marker="s", ms=4, label="dense")
            if name == "memory":
                ax.plot(100 * med["d"], med["masked"], color="0.45", ls="--", label="masked (dense + bool mask)")
            ax.plot(100 * med["d"], med["csr"], color="black", label="CSR (median per density)")
            for m in methods:
                pm = part[part["method"] == m]
                ax.scatter(100 * pm["density_achieved"], pm[csr_col], color=_color(m),
                           s=24, zorder=3, label=f"CSR, {_label(m)}")
            if name == "memory":
                ax.set_yscale("log")
                ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
                ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.yaxis.set_minor_locator(NullLocator())
            else:
                ax.set_ylim(0, 1.08 * max(part[csr_col].max(), part[dense_col].max()))
            ax.set_ylabel(ylabel)
            ax.set_title(name)
            _density_axis(ax, part["density_achieved"])
        handles, labels = legend_entries(axes)
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), frameon=False,
                   bbox_to_anchor=(0.5, 0.0))
        if title:
            fig.suptitle(title)
        rows = math.ceil(len(labels) / 5)
        fig.tight_layout(rect=(0, 0.06 + 0.05 * rows, 1, 1))
    return fig


# ----------------------------------------------------------------------------- accuracy vs density
def accuracy_vs_density_plot(table: pd.DataFrame, methods: Sequence[str], title: str | None = None,
                             value: str = "final_top1", labels: Mapping[str, str] | None = None,
                             figsize=(6.5, 4.3)) -> Figure:
    """Final test accuracy vs density (log axis) from a :func:`utils.runs.results.runs` table:
    one line per method (mean over seeds), dots = single seeds."""
    labels = labels or {}
    with style():
        fig, ax = plt.subplots(figsize=figsize)
        for m in methods:
            part = table[table["method"] == m]
            if part.empty:
                continue
            mean = part.groupby("density")[value].mean()
            ax.plot(100 * mean.index, mean.values, marker="o", color=_color(m),
                    label=labels.get(m, _label(m)))
            ax.scatter(100 * part["density"], part[value], color=_color(m), s=12, alpha=0.6)
        _density_axis(ax, table["density"])
        ax.set_ylabel("final test top-1 (%)")
        ax.legend(frameon=False)
        if title:
            ax.set_title(title)
        fig.tight_layout()
    return fig


def gap_summary(table: pd.DataFrame, a: str, b: str, value: str = "final_top1") -> pd.DataFrame:
    """Per density: mean ``value`` of methods ``a`` and ``b`` (over seeds) and ``b - a``."""
    piv = table.pivot_table(index="density", columns="method", values=value, aggfunc="mean")
    out = pd.DataFrame({a: piv.get(a), b: piv.get(b)})
    out["gap (pp)"] = out[b] - out[a]
    out.index = [f"{100 * d:g} %" for d in out.index]
    out.index.name = "density"
    return out.round(2)


def gap_conclusion(gaps: pd.DataFrame, a_label: str, b_label: str) -> str:
    """One-sentence reading of :func:`gap_summary`: where ``b`` beats ``a`` and by how much."""
    g = gaps["gap (pp)"].dropna()
    if g.empty:
        return f"no density has both {a_label} and {b_label} stored"
    better, worse = int((g >= 0.1).sum()), int((g <= -0.1).sum())
    tied = len(g) - better - worse
    where = ", ".join(f"{d} {v:+.1f} pp" for d, v in g.items())
    return (f"{b_label} vs {a_label}: better at {better}, within ±0.1 pp at {tied}, worse at {worse} "
            f"of {len(g)} densities ({where}); largest gap {g.abs().max():.1f} pp at {g.abs().idxmax()}")



def accuracy_bars(table: pd.DataFrame, title: str | None = None, figsize=(6.5, 4.2)) -> Figure:
    """Grouped bars of final accuracy (mean over seeds, dots = seeds): groups = init,
    one bar per network."""
    nets = list(dict.fromkeys(table["network"]))
    inits = list(dict.fromkeys(table["init"]))
    width = 0.8 / len(nets)
    colors = ["#1b9e77", "#7570b3", "#d95f02", "#e7298a"]
    with style():
        fig, ax = plt.subplots(figsize=figsize)
        for i, net in enumerate(nets):
            for j, init in enumerate(inits):
                part = table[(table["network"] == net) & (table["init"] == init)]
                x = j + (i - (len(nets) - 1) / 2) * width
                mean = part["top1"].mean()
                ax.bar(x, mean, width * 0.92, color=colors[i % len(colors)], label=net if j == 0 else None)
                ax.scatter(np.full(len(part), x), part["top1"], color="black", s=10, zorder=3)
                ax.text(x, max(mean, part["top1"].max()) + 1.5, f"{mean:.1f}", ha="center", va="bottom",
                        fontsize=9)
        ax.set_xticks(range(len(inits)), [f"{i} init" for i in inits])
        ax.set_ylabel("final test top-1 (%)")
        ax.set_ylim(0, 105)
        ax.legend(frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=len(nets))
        if title:
            ax.set_title(title)
        fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- builders of the notebook
#: the FC methods compared as graphs and timed as sparse networks
GRAPH_METHODS = ("synflow", "random", "magnitude", "gem-miner", "dnw")
#: the runs the timing section expects at every seed: every method × density, the dense net, Random-FC
TIMING_EXTRAS = (("dense", 1.0), ("random-fc", 0.07))
DNW_STATIC = "fc_mnist_dnw_static"


def _stored(store: Store) -> pd.DataFrame:
    """Every run of the store (all recipes), read once per store."""
    from utils.runs.results import runs
    if ("all runs",) not in store.cache:
        store.cache[("all runs",)] = runs(store.root)
    return store.cache[("all runs",)]


def _left_out(what: str, keys: Sequence[tuple]) -> None:
    """Print one line naming the runs a section leaves out (nothing if none)."""
    if keys:
        print(f"{what}: left out, not stored: {summarise(keys)}")


def run_graph(store: Store, experiment: str, method: str, density: float, seed: int) -> Figure:
    """One stored run as a layered unit graph (:func:`graph_figure`), its achieved density and
    final accuracy in the title; prints edges, dead hidden units and input→output paths."""
    from utils.toolkits.graphs import graph_stats, to_networkx
    store.require([(experiment, method, density, seed)])
    run = store.run(experiment, method, density, seed)
    graph = to_networkx(run.model)
    stats = graph_stats(graph)
    store.cache[("graph stats", experiment, method, density, seed)] = stats
    print(f"{stats['edges']} edges, {stats['dead_hidden']}/{stats['hidden']} hidden units dead, "
          f"{stats['paths']:.3g} input→output paths (log10 {stats['log10_paths']:.1f})")
    return graph_figure(graph, title=f"{store.label(method)} FC at {100 * run.info['density_achieved']:.2f} % "
                                     f"density (seed {seed}, test top-1 {run.history['top1'].iloc[-1]:.1f} %)")


def run_graph_layers(store: Store, experiment: str, method: str, density: float, seed: int) -> pd.DataFrame:
    """Per layer of one run's unit graph: units, mean degrees, units without an input/output path."""
    from utils.toolkits.graphs import graph_stats, to_networkx
    key = ("graph stats", experiment, method, density, seed)
    if key not in store.cache:
        store.require([(experiment, method, density, seed)])
        store.cache[key] = graph_stats(to_networkx(store.model(experiment, method, density, seed)))
    return store.cache[key]["layers"][["layer", "name", "units", "edges_in", "in_degree_mean", "out_degree_mean",
                                       "no_input_path", "no_output_path", "dead"]].round(2)


def _degrees(store: Store, experiment: str, methods: Sequence[str], density: float, seed: int) -> pd.DataFrame:
    """:func:`utils.toolkits.graphs.degree_frame` of the stored runs (cached; missing ones named)."""
    from utils.toolkits.graphs import degree_frame, to_networkx
    key = ("degrees", experiment, tuple(methods), density, seed)
    if key not in store.cache:
        keys = [(experiment, m, density, seed) for m in methods]
        have = [k for k in keys if store.has(*k)]
        _left_out(f"degrees at {percent(density)} %", [k for k in keys if k not in have])
        if not have:
            raise MissingRuns(keys, store.root)
        store.cache[key] = degree_frame({k[1]: to_networkx(store.model(*k)) for k in have})
    return store.cache[key]


def degree_figure(store: Store, experiment: str, density: float, seed: int,
                  methods: Sequence[str] = GRAPH_METHODS) -> Figure:
    """Fan-out and fan-in of every weight layer, one box per method (:func:`degree_plot`)."""
    return degree_plot(_degrees(store, experiment, methods, density, seed),
                       title=f"Unit degrees per layer at {percent(density)} % density (seed {seed})")


def zero_degrees(store: Store, experiment: str, density: float, seed: int,
                 methods: Sequence[str] = GRAPH_METHODS) -> pd.DataFrame:
    """% of units with degree 0 per method and layer/side (:func:`utils.toolkits.graphs.zero_degree_table`)."""
    from utils.toolkits.graphs import zero_degree_table
    return zero_degree_table(_degrees(store, experiment, methods, density, seed))


def inference_timing(store: Store, experiment: str, seed: int, repeats: int = 7,
                     methods: Sequence[str] = GRAPH_METHODS, densities: Sequence[float] = DENSITIES) -> pd.DataFrame:
    """Dense vs CSR memory and latency (:func:`utils.toolkits.inference.inference_table`) of every stored
    network of ``seed`` (cached); names the expected runs (``methods`` × ``densities``, the dense net
    and Random-FC) that are not stored."""
    from utils.toolkits.inference import inference_table
    key = ("timing", experiment, seed, repeats)
    if key not in store.cache:
        table = _stored(store)
        here = table[(table["experiment"] == experiment) & (table["seed"] == seed)]
        have = {(m, round(d, 6)) for m, d in zip(here["method"], here["density"])}
        expected = [(m, d) for m in methods for d in densities] + list(TIMING_EXTRAS)
        _left_out("timing", [(experiment, m, d, seed) for m, d in expected if (m, round(d, 6)) not in have])
        if here.empty:
            raise MissingRuns([(experiment, m, d, seed) for m, d in expected], store.root)
        models = {(m, d): store.model(experiment, m, d, seed)
                  for m in sorted(set(here["method"])) for d in sorted(set(here["density"]))
                  if store.has(experiment, m, d, seed)}
        store.cache[key] = inference_table(models, batches=(1, 256), repeats=repeats)
    return store.cache[key]


def memory_latency(store: Store, experiment: str, seed: int, repeats: int = 7) -> Figure:
    """:func:`memory_latency_plot` of :func:`inference_timing`."""
    timing = inference_timing(store, experiment, seed, repeats)
    networks = len(timing) // timing["batch"].nunique()
    return memory_latency_plot(timing, title=f"{ARCH[experiment].split(' / ')[0]}, {networks} "
                                             f"stored networks (seed {seed}), 1 thread")


def timing_summary(store: Store, experiment: str, seed: int, repeats: int = 7) -> pd.DataFrame:
    """:func:`utils.toolkits.inference.inference_summary` of :func:`inference_timing`; prints the
    largest CSR - dense output difference."""
    from utils.toolkits.inference import inference_summary
    timing = inference_timing(store, experiment, seed, repeats)
    print(f"largest |CSR - dense| output difference: {timing['max_abs_diff'].max():.2e}")
    return inference_summary(timing)


def dnw_static_runs(store: Store, densities: Sequence[float] = DENSITIES) -> tuple[pd.DataFrame, str]:
    """Random (fixed graph) and DNW (learned wiring) runs, and where they come from.

    The experiment ``fc_mnist_dnw_static`` matches the random graph to DNW's edge count layer by
    layer; without it, ``fc_mnist``'s random and DNW runs stand in (matched only globally).  Prints
    one line naming what is missing; raises :class:`MissingRuns` without both methods.
    """
    table = _stored(store)
    static = table[(table["experiment"] == DNW_STATIC) & table["method"].isin(["random", "dnw"])]
    source = f"{DNW_STATIC}: per-layer matched edge counts"
    if static["method"].nunique() < 2:
        static = table[(table["experiment"] == FC) & table["method"].isin(["random", "dnw"])]
        source = f"{FC}: fallback: random matched to DNW globally, NOT per layer"
        absent = [(FC, m, d, s) for m in ("random", "dnw") for d in densities for s in SEEDS
                  if not ((static["method"] == m) & ((static["density"] - d).abs() < 1e-9)
                          & (static["seed"] == s)).any()]
        _left_out(f"{DNW_STATIC} not stored; fallback {FC}", absent)
    if static["method"].nunique() < 2:
        raise MissingRuns([], store.root, "random or DNW runs missing")
    return static, source


def dnw_static_figure(store: Store) -> Figure:
    """Final accuracy vs density of a fixed random graph and DNW's learned wiring."""
    static, source = dnw_static_runs(store)
    return accuracy_vs_density_plot(static, ["random", "dnw"], title=source,
                                    labels={"random": "random fixed graph", "dnw": "DNW learned wiring"})


def dnw_static_gaps(store: Store) -> pd.DataFrame:
    """Accuracy per density of random and DNW and the gap DNW − random; prints a one-line conclusion."""
    static, source = dnw_static_runs(store)
    gaps = gap_summary(static, "random", "dnw")
    print(f"[{source}] " + gap_conclusion(gaps, "random", "DNW"))
    return gaps


def training_bars(store: Store, table: pd.DataFrame, title: str) -> Figure:
    """:func:`accuracy_bars` of a training comparison run in the session (``store`` is not read)."""
    return accuracy_bars(table, title=title)
