"""Helpers of ``notebooks/graphs_and_sparse_inference.ipynb``: sparse FC nets as graphs,
degree distributions, dense vs CSR memory/latency, DNW "static" and a Watts–Strogatz net.

Small functions, thin notebook.  Loaders return what is stored and name what is missing
(:func:`collect_runs`, :func:`missing_line`) so the notebook runs on a partial store;
plot functions take computed data and return a ``Figure`` (save it with
:func:`utils.plots.save`).  Conventions of :mod:`utils.plots`: density = % of prunable
weights *remaining*, method names/colours from :data:`utils.plots.METHOD_LABELS`.

>>> runs, missing = collect_runs("fc_mnist", ["synflow"], [0.02], [21])
>>> fig = graph_figure(to_networkx(runs[("synflow", 0.02, 21)].model))
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import matplotlib.pyplot as plt
import networkx as nx
import numpy as np
import pandas as pd
import torch
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator
from torch import nn

from . import plots
from .graphs import dead_units
from .sparse import latency_ms, plain_dense

__all__ = ["collect_runs", "missing_line", "layered_layout", "draw_layered", "graph_figure",
           "degree_frame", "zero_degree_table", "degree_plot", "inference_table",
           "memory_latency_plot", "accuracy_vs_density_plot", "gap_summary", "sparse_init",
           "ws_network", "random_fc_like", "small_mnist", "train_compare", "accuracy_bars",
           "count_weights", "inference_summary", "density_bin", "gap_conclusion", "ws_summary", "graph_legend"]

POS_COLOR, NEG_COLOR, OFF_COLOR, DEAD_COLOR = "#c0392b", "#2471a3", "#bbbbbb", "#d9d9d9"


def _label(method: str) -> str:
    return plots.METHOD_LABELS.get(method, method)


#: colours for methods without an entry in utils.plots.METHOD_COLORS (none close to those)
EXTRA_COLORS = ("#17becf", "#1f77b4", "#9467bd", "#bcbd22", "#8c564b", "#000080")


def _color(method: str, i: int = 0, n: int = 1):
    return plots.METHOD_COLORS.get(method, EXTRA_COLORS[i % len(EXTRA_COLORS)])


def _pct(density: float) -> str:
    return f"{100 * density:g} %"


# ----------------------------------------------------------------------------- runs store
def collect_runs(experiment: str, methods: Iterable[str], densities: Iterable[float],
                 seeds: Iterable[int], root=None) -> tuple[dict, list[str]]:
    """Load every stored ``(method, density, seed)`` run of ``experiment``.

    Returns ``(runs, missing)``: ``runs[(method, density, seed)]`` is a
    :class:`utils.results.Run`; ``missing`` lists ``"method d<pct> s<seed>"`` of the
    combinations not stored (or unreadable).
    """
    from .results import RunStoreError, load_run
    found, missing = {}, []
    for method in methods:
        for d in densities:
            for s in seeds:
                try:
                    found[(method, d, s)] = load_run(experiment, method, d, s, root)
                except RunStoreError:
                    missing.append(f"{method} d{100 * d:g} s{s}")
    return found, missing


def missing_line(what: str, missing: Sequence[str], limit: int = 12) -> str:
    """One line naming the missing runs: ``"<what>: missing 3 run(s): a, b, c"`` ('' if none)."""
    if not missing:
        return ""
    shown = ", ".join(missing[:limit]) + (f", … (+{len(missing) - limit})" if len(missing) > limit else "")
    return f"{what}: missing {len(missing)} run(s): {shown}"


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
    """Draw a layered unit graph (:func:`utils.graphs.to_networkx` of an FC) on ``ax``.

    Edges on an input -> output path are red (w > 0) / blue (w < 0); edges off every such
    path are light grey.  Units with a path from an input and to an output are black,
    the others ("dead", see :func:`utils.graphs.dead_units`) light grey.  Under each layer
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
    with plots.style():
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


# ----------------------------------------------------------------------------- degrees
def degree_frame(graphs: Mapping[str, nx.DiGraph]) -> pd.DataFrame:
    """Long table of unit degrees per weight layer: one row per (network, layer, side, unit).

    For the weight matrix ``layers.k`` (columns ``layer``), ``side="fan-out"`` is the
    out-degree of each of its input units and ``side="fan-in"`` the in-degree of each of its
    output units, so one layer's two rows are the two marginals of its mask.
    """
    rows = []
    for key, g in graphs.items():
        layer = _layers(g)
        names = {lv: g.nodes[n].get("name", str(lv)) for n, lv in layer.items()}
        top = max(layer.values())
        for n, lv in layer.items():
            if lv < top:  # fan-out into the next weight layer
                rows.append((key, names[lv + 1], lv, "fan-out", g.out_degree(n)))
            if lv > 0:
                rows.append((key, names[lv], lv - 1, "fan-in", g.in_degree(n)))
    return pd.DataFrame(rows, columns=["network", "layer", "index", "side", "degree"])


def zero_degree_table(frame: pd.DataFrame) -> pd.DataFrame:
    """% of units with degree 0, per network (rows) and ``layer``/side (columns)."""
    t = frame.assign(zero=frame["degree"].eq(0) * 100.0)
    t = t.pivot_table(index="network", columns=["layer", "side"], values="zero", aggfunc="mean", sort=False)
    layers = list(dict.fromkeys(frame.sort_values("index")["layer"]))
    cols = [(name, side) for name in layers for side in ("fan-out", "fan-in") if (name, side) in t.columns]
    return t[cols].round(1)


def degree_plot(frame: pd.DataFrame, title: str | None = None, figsize=None) -> Figure:
    """Grid of box plots: columns = weight layers, rows = fan-out (top) and fan-in (bottom),
    one box per network (``network`` values are method names) with the units as dots."""
    layers = list(dict.fromkeys(frame.sort_values("index")["layer"]))
    nets = list(dict.fromkeys(frame["network"]))
    palette = {m: _color(m, i, len(nets)) for i, m in enumerate(nets)}
    with plots.style():
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


# ----------------------------------------------------------------------------- memory / latency
def inference_table(models: Mapping[tuple, nn.Module], batches: Sequence[int] = (1, 256),
                    repeats: int = 5, input_shape=(1, 28, 28), budget_s: float = 1.0,
                    rounds: int = 3) -> pd.DataFrame:
    """Weight memory and forward latency of each model, dense vs CSR.

    ``models`` maps ``(method, density_label)`` to a masked model.  For each, the plain
    dense copy and ``utils.sparse.convert_model(model, nn.Linear, "csr")`` are timed
    (median of ``repeats`` after a warm-up; the smallest median of ``rounds`` interleaved
    dense/CSR rounds, which filters the spikes of a busy machine) at every batch size; memory comes from
    :func:`utils.sparse.memory_report` (weights only).  Columns: method, density (label),
    density_achieved, batch, dense_kB, masked_kB, csr_kB, dense_ms, csr_ms, csr_vs_dense,
    max_abs_diff (CSR vs dense outputs).
    """
    from .sparse import convert_model, memory_report
    rows = []
    for (method, label), model in models.items():
        model = model.eval()
        mem = memory_report(model).iloc[-1]
        dense, csr = plain_dense(model).eval(), convert_model(model, nn.Linear, "csr").eval()
        for b in batches:
            x = torch.randn(b, *input_shape, generator=torch.Generator().manual_seed(1))
            with torch.inference_mode():
                err = (csr(x) - dense(x)).abs().max().item()
            t_dense, t_csr = math.inf, math.inf
            for _ in range(rounds):
                t_dense = min(t_dense, latency_ms(dense, x, repeats, budget_s))
                t_csr = min(t_csr, latency_ms(csr, x, repeats, budget_s))
            rows.append(dict(method=method, density=label, density_achieved=float(mem["density"]),
                             batch=b, dense_kB=mem["dense_bytes"] / 1e3,
                             masked_kB=mem["masked_bytes"] / 1e3, csr_kB=mem["csr_bytes"] / 1e3,
                             dense_ms=t_dense, csr_ms=t_csr, csr_vs_dense=t_csr / t_dense,
                             max_abs_diff=err))
    return pd.DataFrame(rows)


def inference_summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per :func:`density_bin` (achieved density, %; mean over its networks): weight kB
    dense/masked/CSR, CSR/dense memory ratio, and per batch size dense and CSR ms and
    their ratio (``csr_vs_dense``, mean of the per-network ratios)."""
    t = table.assign(density=density_bin(table["density_achieved"]))
    mem = t[t["batch"] == t["batch"].min()].groupby("density")[["dense_kB", "masked_kB", "csr_kB"]].mean()
    mem["csr/dense mem"] = mem["csr_kB"] / mem["dense_kB"]
    lat = t.groupby(["density", "batch"])[["dense_ms", "csr_ms", "csr_vs_dense"]].mean().unstack("batch")
    lat.columns = [f"{c} b{b}" for c, b in lat.columns]
    out = mem.join(lat)
    out["networks"] = t[t["batch"] == t["batch"].min()].groupby("density").size()
    out.index.name = "density % (achieved, binned)"
    return out.round(3)


def _density_axis(ax, values) -> None:
    """Log x axis in % with a tick at every density in ``values`` (fractions)."""
    ax.set_xscale("log")
    lo, hi = 100 * min(values), 100 * max(values)
    ticks = [t for t in (0.5, 1, 2, 5, 10, 20, 50, 100) if lo / 1.3 <= t <= hi * 1.3] or [round(lo, 1)]
    ax.set_xlim(min(lo, ticks[0]) / 1.25, max(hi, ticks[-1]) * 1.25)
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel(plots.DENSITY_LABEL)


def density_bin(achieved, grid: Sequence[float] = (1, 2, 5, 10, 20, 50, 100)) -> np.ndarray:
    """Nearest grid density (%, in log space) of each achieved density (fraction): groups
    networks of about the same size whatever their label (Gem-Miner's effective density
    can be far below its target)."""
    logs = np.log(np.asarray(grid, dtype=float))
    a = np.log(100 * np.atleast_1d(np.asarray(achieved, dtype=float)))
    return np.asarray(grid, dtype=float)[np.abs(a[:, None] - logs[None, :]).argmin(1)]


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
    with plots.style():
        fig, axes = plt.subplots(1, len(panels), figsize=figsize)
        for ax, (name, ylabel, part, dense_col, csr_col) in zip(axes, panels):
            med = part.groupby("bin").agg(d=("density_achieved", "median"), dense=(dense_col, "median"),
                                          csr=(csr_col, "median"), masked=("masked_kB", "median"))
            ax.plot(100 * med["d"], med["dense"], color="0.45", marker="s", ms=4, label="dense")
            if name == "memory":
                ax.plot(100 * med["d"], med["masked"], color="0.45", ls="--", label="masked (dense + bool mask)")
            ax.plot(100 * med["d"], med["csr"], color="black", label="CSR (median per density)")
            for i, m in enumerate(methods):
                pm = part[part["method"] == m]
                ax.scatter(100 * pm["density_achieved"], pm[csr_col], color=_color(m, i, len(methods)),
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
        handles, labels = axes[0].get_legend_handles_labels()
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
    """Final test accuracy vs density (log axis) from a :func:`utils.results.runs` table:
    one line per method (mean over seeds), dots = single seeds."""
    labels = labels or {}
    with plots.style():
        fig, ax = plt.subplots(figsize=figsize)
        for i, m in enumerate(methods):
            part = table[table["method"] == m]
            if part.empty:
                continue
            mean = part.groupby("density")[value].mean()
            ax.plot(100 * mean.index, mean.values, marker="o", color=_color(m, i, len(methods)),
                    label=labels.get(m, _label(m)))
            ax.scatter(100 * part["density"], part[value], color=_color(m, i, len(methods)), s=12, alpha=0.6)
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


# ----------------------------------------------------------------------------- WS net vs random FC
def count_weights(model: nn.Module) -> int:
    """Active (mask = True) weights over the prunable layers."""
    from models.masks import get_masks
    return int(sum(int(m.sum()) for m in get_masks(model).values()))


@torch.no_grad()
def sparse_init(model: nn.Module, seed: int = 0) -> nn.Module:
    """Kaiming-normal init w.r.t. each unit's *active* fan-in: w ~ N(0, 2 / fan_in_active),
    biases 0 (masked entries stay 0).  Keeps the signal scale of a sparse deep net, which the
    dense default init (scaled by the full fan-in) shrinks layer after layer."""
    from models.masks import mask_of, prunable_layers, raw_weight
    gen = torch.Generator().manual_seed(seed)
    for layer in prunable_layers(model).values():
        m = mask_of(layer).float()
        fan = m.reshape(m.shape[0], -1).sum(1).clamp(min=1).view(-1, *[1] * (m.dim() - 1))
        raw_weight(layer).copy_(torch.randn(m.shape, generator=gen) * (2.0 / fan).sqrt() * m)
        if layer.bias is not None:
            layer.bias.zero_()
    return model


def ws_network(n: int = 200, k: int = 6, p: float = 0.2, seed: int = 0, input_size: int = 784,
               output_size: int = 10, init_seed: int | None = None, **kwargs):
    """A :class:`utils.graphs.DAGNet` on a Watts–Strogatz graph: ``nx.watts_strogatz_graph(n, k, p)``,
    oriented by a seeded random node order (:func:`utils.graphs.layered_dag`; a BFS or
    node-label order leaves a single source, i.e. a one-unit input bottleneck) and built
    by :func:`utils.graphs.from_networkx` (inputs projected densely onto the sources,
    sinks densely onto the outputs).  ``seed`` fixes the graph and its order,
    ``init_seed`` (default ``seed``) the weights.  Returns ``(model, dag)``."""
    from .graphs import from_networkx, layered_dag
    und = nx.watts_strogatz_graph(n, k, p, seed=seed)
    order = [int(v) for v in np.random.default_rng(seed).permutation(n)]
    dag = layered_dag(und, order=order)
    torch.manual_seed(seed if init_seed is None else init_seed)
    return from_networkx(dag, input_size, output_size, **kwargs), dag


def ws_summary(model: nn.Module, dag: nx.DiGraph) -> pd.DataFrame:
    """Per Linear of a :class:`~utils.graphs.DAGNet`: what it reads (feature blocks), its
    shape and active weights; plus the graph's sources/sinks in the index name."""
    from .sparse import memory_report
    rep = memory_report(model)
    rep = rep[rep["layer"] != "total"][["layer", "shape", "nnz"]].reset_index(drop=True)
    rep["reads blocks"] = [", ".join("input" if b == 0 else f"h{b}" for b in r) for r in model.reads]
    rep["role"] = ["input projection" if i == 0 else "output projection" if i == len(model.reads) - 1
                   else "graph edges" for i in range(len(model.reads))]
    return rep


def random_fc_like(n_weights: int, seed: int = 0, sizes=None) -> nn.Module:
    """The thesis FC (or ``FC(sizes)``) randomly pruned (global, exact count) to about
    ``n_weights`` active weights."""
    from models.fc import FC, FC_SIZES
    from pruners.api import random as random_prune
    torch.manual_seed(seed)
    model = FC(tuple(sizes or FC_SIZES))
    total = sum(a * b for a, b in zip(model_sizes(model)[:-1], model_sizes(model)[1:]))
    return random_prune(model, min(1.0, n_weights / total), seed=seed)


def model_sizes(model: nn.Module) -> list[int]:
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return [layers[0].in_features] + [m.out_features for m in layers]


def small_mnist(n_train: int = 5000, n_test: int = 10000, data_dir=None, results_root=None):
    """``(dataset, source)``: the first ``n_train``/``n_test`` MNIST images, or, if MNIST is
    not available, the stored probe set (``utils.results.load_probe``) split 5:1."""
    from .data import DATASETS, Dataset, load_dataset
    from .errors import DataError
    try:
        data = load_dataset("mnist", data_dir, download=False)
        return data.subset(n_train, n_test), f"MNIST ({n_train} train / {min(n_test, len(data.test_y))} test images)"
    except DataError:
        from .results import load_probe
        x, y = load_probe("mnist", results_root)
        cut = len(y) * 5 // 6
        return (Dataset(DATASETS["mnist"], x[:cut], y[:cut], x[cut:], y[cut:]),
                f"MNIST not found: stored probe set ({cut} train / {len(y) - cut} test images)")


def train_compare(builders: Mapping[str, Callable[[int], nn.Module]], data, cfg, seeds: Sequence[int] = (21,),
                  inits: Sequence[str] = ("default", "sparse")) -> pd.DataFrame:
    """Train every ``builders[name](seed)`` network with :func:`utils.train.train` (same
    ``cfg``, data order per seed) for each init (``"default"``: as built; ``"sparse"``:
    :func:`sparse_init`).  Returns one row per run: network, init, seed, weights, top1
    (final test accuracy, %), best_top1, seconds."""
    from .train import train
    rows = []
    for name, build in builders.items():
        for init in inits:
            for seed in seeds:
                model = build(seed)
                if init == "sparse":
                    sparse_init(model, seed)
                hist = train(model, data, cfg, seed=seed, progress=False)
                rows.append(dict(network=name, init=init, seed=seed, weights=count_weights(model),
                                 top1=float(hist["top1"].iloc[-1]), best_top1=float(hist["top1"].max()),
                                 seconds=float(hist["seconds"].sum())))
    return pd.DataFrame(rows)


def accuracy_bars(table: pd.DataFrame, title: str | None = None, figsize=(6.5, 4.2)) -> Figure:
    """Grouped bars of final accuracy (mean over seeds, dots = seeds): groups = init,
    one bar per network."""
    nets = list(dict.fromkeys(table["network"]))
    inits = list(dict.fromkeys(table["init"]))
    width = 0.8 / len(nets)
    colors = ["#1b9e77", "#7570b3", "#d95f02", "#e7298a"]
    with plots.style():
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
