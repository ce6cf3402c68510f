"""Helpers of the analysis notebooks in ``notebooks/`` (thin notebooks, logic here).

Everything reads a runs store through :class:`utils.figures.Store` and draws with
:mod:`utils.plots` conventions.  Builders take the store first and raise
:class:`utils.figures.MissingRuns` when runs are missing; :func:`make` (figures) and
:func:`show` (tables) turn that into one printed line, so a notebook runs top to
bottom on a partial store.

>>> store = F.Store("results")
>>> make("fc_d10_nnstd_ordered", "figures", distance_heatmap, store, F.FC, 10, "nnstd", matched=True)

The analyses are many small matrix products, for which extra BLAS/OpenMP threads only add
contention (FC correlation matrix on a busy 2-core machine: 12 s → 0.4 s with one thread).
The notebooks therefore set ``OMP/OPENBLAS/MKL_NUM_THREADS=1`` before importing ``utils`` (numpy
reads them once, at import); this module sets them too (effective only if it is imported
before numpy) and sets torch's intra-op threads accordingly.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import sys  # noqa: E402
from collections.abc import Callable, Iterable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from . import figures as F  # noqa: E402
from . import plots  # noqa: E402
from .figures import DENSITIES, FC, METHODS, RESNET, SEEDS, MissingRuns, Store  # noqa: E402

if os.environ["OMP_NUM_THREADS"].isdigit():
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

EXTENSIONS = ("magnitude", "deepr", "soft-deepr", "dnw")
ALL_METHODS = METHODS + EXTENSIONS
GEM_VARIANTS = ("gem-miner", "gem-miner-reinit", "gem-miner-shuffle")
SHORT = {**F.TAGS, "magnitude": "mag", "deepr": "deepr", "soft-deepr": "sdeepr", "dnw": "dnw",
         "gem-miner-reinit": "gemR", "gem-miner-shuffle": "gemS", "random-fc": "rfc", "dense": "dense"}
VARIANT_COLORS = {"gem-miner-reinit": "#386cb0", "gem-miner-shuffle": "#bf5b17"}
MARKERS = {**plots.METHOD_MARKERS, "gem-miner-reinit": "v", "gem-miner-shuffle": "D", "magnitude": "P",
           "deepr": "X", "soft-deepr": "x", "dnw": "*"}
METRIC_LABELS = {"nnstd": "NNSTD", "sasd": "SaSD", "maed": "MAED"}
#: probe images used for activations (ResNet activations are per spatial position, so fewer)
N_IMAGES = {FC: 600, RESNET: 100}
#: receptive field (input pixels) of ResNet-20's 11 activation layers (stem, 9 blocks, logits)
RESNET_RF = (3, 7, 11, 15, 21, 29, 37, 49, 65, 81, 32)

LOG: dict[str, list] = {"written": [], "skipped": []}


# ----------------------------------------------------------------------------- plumbing
def _cache(store) -> dict:
    return store.__dict__.setdefault("_notebook_cache", {})


def _in_notebook() -> bool:
    return "ipykernel" in sys.modules


def make(name: str, figures_dir: str | os.PathLike, builder: Callable, *args, **kwargs) -> bool:
    """Build ``builder(*args, **kwargs)``, save it as ``<figures_dir>/<name>.pdf/.png``, show it.

    Missing runs (:class:`MissingRuns`) print one line ``skipped <name>: ...`` instead.
    Returns whether the figure was written.
    """
    try:
        fig = builder(*args, **kwargs)
    except MissingRuns as exc:
        print(f"skipped {name}: {exc}")
        LOG["skipped"].append((name, str(exc)))
        return False
    plots.save(fig, name, figures_dir)
    if _in_notebook():
        from IPython.display import display
        display(fig)
    plt.close(fig)
    LOG["written"].append(name)
    print(f"wrote {Path(figures_dir) / name}.pdf/.png")
    return True


def show(builder: Callable, *args, **kwargs):
    """``builder(*args, **kwargs)`` (usually a table), or ``None`` with one line if runs are missing."""
    try:
        return builder(*args, **kwargs)
    except MissingRuns as exc:
        print(f"skipped {getattr(builder, '__name__', 'table')}: {exc}")
        LOG["skipped"].append((getattr(builder, "__name__", "table"), str(exc)))
        return None


def report() -> str:
    """Figures written and skipped so far in this kernel."""
    lines = [f"{len(LOG['written'])} figure(s) written"]
    if LOG["skipped"]:
        lines.append(f"{len(LOG['skipped'])} skipped:")
        lines += [f"  {n}: {why}" for n, why in LOG["skipped"]]
    return "\n".join(lines)


def available(store: Store, experiment: str, methods: Sequence[str] = ALL_METHODS,
              densities: Iterable[float] = DENSITIES, seeds: Sequence[int] = SEEDS) -> list[str]:
    """Methods with every (density, seed) stored; prints one line naming the missing runs."""
    densities = list(densities)
    present, missing = [], []
    for m in methods:
        keys = [(experiment, m, d, s) for d in densities for s in seeds]
        absent = [k for k in keys if not store.has(*k)]
        (missing.extend(absent) if absent else present.append(m))
    if missing:
        print(f"not stored (left out): {F.summarise(missing)}")
    return present


def run_tag(method: str, seed: int) -> str:
    """Short run tag: ``gem_21``, ``mag_42``, ``sdeepr_63``."""
    return f"{SHORT.get(method, method)}_{seed}"


def _label(store: Store, method: str) -> str:
    return store.label(method) if method in plots.METHOD_LABELS else {
        "gem-miner-reinit": "Gem-Miner weight-reinit",
        "gem-miner-shuffle": "Gem-Miner mask-shuffle"}.get(method, method)


def _color(method: str) -> str:
    return plots.METHOD_COLORS.get(method) or VARIANT_COLORS.get(method, "#444444")


def _runs_table(store: Store, experiment: str) -> pd.DataFrame:
    from .results import runs
    key = ("runs",)
    if key not in _cache(store):
        _cache(store)[key] = runs(store.root)
    table = _cache(store)[key]
    table = store.current(table, experiment)
    return table.assign(label=(table["density"] * 100).round(6))


def _require_methods(store: Store, experiment: str, methods, densities, seeds=SEEDS) -> None:
    store.require([(experiment, m, d, s) for m in methods for d in densities for s in seeds])
    if not methods:
        raise MissingRuns([], store.root, f"none of the requested methods is stored for {experiment}")


# ----------------------------------------------------------------------------- accuracy
def final_curve(history: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(epoch, top-1) of the training that produced the final weights.

    :func:`utils.figures.accuracy_curve`, except that for IMP (phases ``imp_r<k>``) only the
    last round is used.
    """
    rounds = sorted({p for p in history["phase"] if str(p).startswith("imp_r")},
                    key=lambda p: int(str(p)[5:]))
    if rounds:
        history = history[history["phase"] == rounds[-1]]
    return F.accuracy_curve(history)


def accuracy_panels(store: Store, experiment: str, methods: Sequence[str]):
    """Seed-mean test top-1 per epoch, one panel per stored method, one line per density."""
    panels = {}
    for method in methods:
        lines = {}
        for d in DENSITIES:
            if all(store.has(experiment, method, d, s) for s in SEEDS):
                lines[f"{d}%"] = F._stack([final_curve(store.history(experiment, method, d, s)) for s in SEEDS])
        if lines:
            panels[_label(store, method)] = lines
    if not panels:
        raise MissingRuns([], store.root, f"no complete density of {', '.join(methods)} in {experiment}")
    return plots.accuracy_curves(panels, figsize=(4.7 * len(panels), 4),
                                 legend_title=f"{F.ARCH[experiment]} ({store.recipe_note(experiment)})\n"
                                              "line: seed mean, band: ±1 sd over seeds; target density (% remaining)")


def seed_note(part: pd.DataFrame, full: int) -> str:
    """Legend suffix for a method whose points pool fewer than ``full`` seeds.

    ``part``: runs-table rows of one method (columns ``label``, ``seed``).  Returns ``""`` when
    every point has ``full`` seeds, ``" (seed 21 only)"`` when one seed is stored, else the
    range of seeds per point, so a partly trained method is never read as a 3-seed mean.
    """
    per_point = part.groupby("label")["seed"].nunique()
    if per_point.min() >= full:
        return ""
    seeds = sorted(part["seed"].unique())
    if len(seeds) == 1:
        return f" ({F.seeds_phrase(seeds)})"
    low, high = per_point.min(), per_point.max()
    return f" ({low} seed{'s' if low > 1 else ''} per point)" if low == high else f" ({low}-{high} seeds per point)"


def accuracy_vs_density(store: Store, experiment: str, methods: Sequence[str] = ALL_METHODS,
                        value: str = "final_top1"):
    """Final test top-1 against the *achieved* density (log x), mean ± std over seeds; dense as a band."""
    table = _runs_table(store, experiment)
    table = table[table["method"].isin(list(methods) + ["dense"])]
    sparse = table[table["method"] != "dense"]
    if sparse.empty:
        raise MissingRuns([], store.root, f"no runs of {', '.join(methods)} in {experiment}")
    full = sparse.groupby(["method", "label"])["seed"].nunique().max()
    with plots.style():
        fig, ax = plt.subplots(figsize=(7.5, 4.6))
        for method in methods:
            part = table[table["method"] == method]
            if part.empty:
                continue
            g = part.groupby("label").agg(x=("density_achieved", "mean"), y=(value, "mean"),
                                          e=(value, "std"), n=(value, "size"))
            ax.errorbar(100 * g["x"], g["y"], yerr=g["e"].fillna(0),
                        label=_label(store, method) + seed_note(part, full),
                        color=_color(method), marker=MARKERS.get(method, "o"), lw=1.6, capsize=3)
        dense = table[table["method"] == "dense"][value]
        if len(dense):
            ax.axhspan(dense.mean() - dense.std(ddof=1) if len(dense) > 1 else dense.mean(),
                       dense.mean() + (dense.std(ddof=1) if len(dense) > 1 else 0), color="0.8", alpha=0.6)
            ax.axhline(dense.mean(), color="0.4", ls="--", lw=1.2, label="Dense")
        ax.set_xscale("log")
        ax.set_xticks([1, 2, 5, 10, 20, 50, 100])
        ax.set_xticklabels(["1", "2", "5", "10", "20", "50", "100"])
        ax.set(xlabel="Achieved density (% remaining, log scale)",
               ylabel=f"{'Final' if value == 'final_top1' else 'Best'} test top-1 (%)", ylim=(0, 100),
               title=f"{F.ARCH[experiment]}: accuracy vs achieved density (mean ± std over seeds)\n"
                     f"{store.recipe_note(experiment)}")
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))
        fig.tight_layout()
    return fig


def accuracy_table(store: Store, experiment: str, value: str = "final_top1") -> pd.DataFrame:
    """Method × target density (%): final top-1 as "mean ± std (n)" over seeds."""
    from .results import accuracy_table as table_of
    table = _runs_table(store, experiment)
    if table.empty:
        raise MissingRuns([], store.root, f"no runs of {experiment}")
    return table_of(table, value)


def gem_mining(store: Store, experiment: str = FC):
    """Gem-Miner mining phase per target density: test top-1, effective density, flag density."""
    ds = [d for d in DENSITIES if all(store.has(experiment, "gem-miner", d, s) for s in SEEDS)]
    if not ds:
        raise MissingRuns([(experiment, "gem-miner", d, s) for d in DENSITIES for s in SEEDS], store.root)
    cols = (("top1", "Test top-1 (%)", False), ("density_effective", "Effective density (%)", True),
            ("density_flag", "Flag density (%)", True))
    with plots.style():
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
        for i, d in enumerate(ds):
            color = plt.cm.viridis(0.9 * i / max(len(ds) - 1, 1))
            hs = [store.history(experiment, "gem-miner", d, s) for s in SEEDS]
            hs = [h[h["phase"] == "mining"] for h in hs]
            n = min(len(h) for h in hs)
            for ax, (col, _, log) in zip(axes, cols):
                if col not in hs[0]:
                    continue
                y = np.vstack([h[col].to_numpy(float)[:n] for h in hs]) * (1 if col == "top1" else 100)
                ax.plot(np.arange(n), y.mean(0), color=color, lw=1.8, marker="o", ms=3, label=f"{d}%")
                if log:
                    ax.axhline(d, color=color, ls=":", lw=1)
        for ax, (_, ylabel, log) in zip(axes, cols):
            ax.set(xlabel="Mining epoch", ylabel=ylabel)
            if log:
                ax.set_yscale("log")
                ax.set_yticks([1, 2, 5, 10, 20, 50, 100])
                ax.set_yticklabels(["1", "2", "5", "10", "20", "50", "100"])
            else:
                ax.set_ylim(0, 100)
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, title="target density (dotted lines)", frameon=False, ncol=len(ds),
                   loc="upper center", bbox_to_anchor=(0.5, 0.93))
        fig.suptitle(f"{F.ARCH[experiment]}: Gem-Miner mining phase, mean over seeds")
        fig.tight_layout(rect=(0, 0, 1, 0.86))
    return fig


# ----------------------------------------------------------------------------- structure
def density_lines(store: Store, experiment: str, density: float, methods: Sequence[str] = METHODS):
    """Seed-mean density per analysis layer, one line per method (error bars: std over seeds)."""
    _require_methods(store, experiment, methods, [density])
    lines, errors, colors, markers = {}, {}, {}, {}
    for method in methods:
        values = np.vstack([F._layer_density(store.masks(experiment, method, density, s)) for s in SEEDS])
        label = _label(store, method)
        lines[label], errors[label] = values.mean(0), values.std(0)
        colors[label], markers[label] = _color(method), MARKERS.get(method, "D")
    return plots.layer_density_lines(lines, title=f"{F.ARCH[experiment]}: density per layer at {density:g}% "
                                     "target density", errors=errors, colors=colors, markers=markers)


def empty_units(store: Store, experiment: str, density: float, methods: Sequence[str] = METHODS) -> pd.DataFrame:
    """Units (rows/filters) left without any weight, per layer, mean over seeds."""
    from .analysis import masked_units
    _require_methods(store, experiment, methods, [density])
    rows = {_label(store, m): np.mean([masked_units(store.units(experiment, m, density, s)) for s in SEEDS], 0)
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
    """:func:`graph_table` for arbitrary ``(method, density %)`` entries, one row each."""
    from .graphs import components, count_paths, dead_units, to_networkx
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
        rows.append({"method": _label(store, m), "density %": d, **pd.DataFrame(stats).mean().to_dict()})
    return pd.DataFrame(rows).set_index(["method", "density %"]).round(2)


_STATS = {"gaps": ("weight_distances", "Mean gap between kept inputs", (0, 100)),
          "clusters": ("layer_clusters", "Clusters per unit", None),
          "signs": ("sign_ratios", "Share of positive weights per cluster", (0, 1.02))}


def stat_violins(store: Store, experiment: str, density: float, methods: Sequence[str], stat: str = "clusters"):
    """Per-layer violins of a 1-D row statistic (``"gaps"``, ``"clusters"``, ``"signs"``), seeds pooled."""
    from . import analysis
    _require_methods(store, experiment, methods, [density])
    fname, ylabel, ylim = _STATS[stat]
    fn = getattr(analysis, fname)
    panels = {_label(store, m): F._pooled([[fn(layer, thesis=store.thesis) for layer in
                                            store.units(experiment, m, density, s)] for s in SEEDS])
              for m in methods}
    cols = min(len(panels), 4)
    rows = -(-len(panels) // cols)
    return plots.violins_per_layer(panels, ylabel, ylim=ylim, layout=(rows, cols), figsize=(4.2 * cols, 3.6 * rows),
                                   colors={_label(store, m): _color(m) for m in methods},
                                   title=f"{F.ARCH[experiment]}, {density:g}% density: {ylabel.lower()} "
                                         "(3 seeds pooled)")


# ----------------------------------------------------------------------------- distances
def _nets(store: Store, experiment: str, density: float, methods: Sequence[str]) -> dict[str, tuple[str, int]]:
    _require_methods(store, experiment, methods, [density])
    return {run_tag(m, s): (m, s) for m in methods for s in SEEDS}


def pair_distances(store: Store, experiment: str, density: float, metric: str = "nnstd", matched: bool = True,
                   methods: Sequence[str] = METHODS) -> pd.DataFrame:
    """Per-layer distance of every pair of runs (long format, cached on the store).

    ``matched``: units matched layer by layer (the store's ``compat``: default = optimal matching
    with propagated permutations, mean of both directions; ``"thesis"`` = flattened layers, no
    propagation).  Unmatched ("unordered"): unit i is compared with unit i (per-unit mean of the
    cost-matrix diagonal; thesis: the flattened layers as they are).

    Columns: model_a, model_b, method_a, method_b, layer (1-based), metric, matched, value.
    """
    from .analysis import cost_matrix, flat_distance, network_distance
    key = ("dist", experiment, density, metric, matched, tuple(methods))
    if key in _cache(store):
        return _cache(store)[key]
    nets = _nets(store, experiment, density, methods)
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
    _cache(store)[key] = df
    return df


def square(long: pd.DataFrame, diagonal: float = 0.0) -> pd.DataFrame:
    """Long pair table → symmetric n×n DataFrame of the mean over layers (``diagonal`` on the diagonal)."""
    names = long.attrs["names"]
    means = long.groupby(["model_a", "model_b"], sort=False)["value"].mean()
    df = pd.DataFrame(np.full((len(names), len(names)), diagonal), index=names, columns=names)
    for (a, b), v in means.items():
        df.loc[a, b] = df.loc[b, a] = v
    if "diag" in long.attrs:
        for n, v in long.attrs["diag"].items():
            df.loc[n, n] = v
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
    fig = plots.distance_heatmap(df, f"{label}, {'ordered' if matched else 'unordered'}: {F.ARCH[experiment]}, "
                                     f"{density:g}%\n({_how(store, matched)})",
                                 cbar_label=f"{label} (mean over layers)", vmin=0, vmax=vmax,
                                 figsize=(6.8, 5.8) if len(df) <= 9 else (9, 8))
    return fig


def _group(a: str, b: str) -> str:
    a, b = sorted([a, b], key=lambda m: ALL_METHODS.index(m) if m in ALL_METHODS else 99)
    return f"{SHORT.get(a, a)}–{SHORT.get(b, b)}"


def _group_style(group: str, methods: Sequence[str]) -> dict:
    a, b = group.split("–")
    inverse = {v: k for k, v in SHORT.items()}
    if a == b:
        return dict(color=_color(inverse.get(a, a)), ls="-", marker="o")
    others = ["#444444", "#e7298a", "#66a61e", "#a6761d", "#e6ab02", "#1f78b4"]
    pairs = [_group(x, y) for i, x in enumerate(methods) for y in methods[i + 1:]]
    return dict(color=others[pairs.index(group) % len(others)] if group in pairs else "#444444", ls="--",
                marker="s")


def distance_layers(store: Store, experiment: str, density: float, metrics: Sequence[str] = ("nnstd", "sasd", "maed"),
                    methods: Sequence[str] = METHODS):
    """Per-layer distance, mean over the pairs of each method pair (same method solid, cross-method
    dashed); top row matched, bottom row unmatched."""
    data = {(m, matched): pair_distances(store, experiment, density, m, matched, methods)
            for m in metrics for matched in (True, False)}
    with plots.style():
        n_layers = int(next(iter(data.values()))["layer"].max())
        fig, axes = plt.subplots(2, len(metrics), figsize=(4.8 * len(metrics) * (1.25 if n_layers > 10 else 1), 7.5),
                                 sharex=True, squeeze=False)
        for c, metric in enumerate(metrics):
            for r, matched in enumerate((True, False)):
                ax = axes[r, c]
                df = data[(metric, matched)].assign(
                    group=lambda d: [_group(a, b) for a, b in zip(d["method_a"], d["method_b"])])
                for group, part in df.groupby("group", sort=False):
                    mean = part.groupby("layer")["value"].mean()
                    ax.plot(mean.index, mean.values, label=group, lw=1.6, ms=4, **_group_style(group, methods))
                ax.set_title(f"{METRIC_LABELS[metric]}, {'matched' if matched else 'not matched'}")
                ax.set_ylim(0, 1.02)
                ax.grid(alpha=0.3)
                ax.set_xticks(range(1, n_layers + 1))
                if c == 0:
                    ax.set_ylabel("Distance (mean over pairs)")
                if r == 1:
                    ax.set_xlabel("Layer")
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, title="method pair (3 seeds each; same method = other seeds)",
                   loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=min(len(labels), 6), frameon=False)
        fig.suptitle(f"{F.ARCH[experiment]}, {density:g}%: distance per layer", y=1.1)
        fig.tight_layout()
    return fig


def block_means(df: pd.DataFrame) -> pd.DataFrame:
    """Method × method mean of a runs × runs matrix (off-diagonal entries only; tags ``gem_21``...)."""
    methods = [str(n).rsplit("_", 1)[0] for n in df.index]
    values = df.to_numpy(float).copy()
    np.fill_diagonal(values, np.nan)
    order = list(dict.fromkeys(methods))
    out = pd.DataFrame(index=order, columns=order, dtype=float)
    for a in order:
        for b in order:
            ia = [i for i, m in enumerate(methods) if m == a]
            ib = [i for i, m in enumerate(methods) if m == b]
            out.loc[a, b] = np.nanmean(values[np.ix_(ia, ib)])
    return out.round(3)


def block_heatmap(store: Store, experiment: str, density: float, kind: str = "nnstd",
                  methods: Sequence[str] = ALL_METHODS):
    """Method × method mean of the runs × runs matrix (``kind``: a metric, matched, or
    ``"similarity"``); the diagonal is the mean between seeds of the same method."""
    if kind == "similarity":
        df = square(pair_similarities(store, experiment, density, methods), diagonal=1.0)
        label = "Mean matched correlation"
    else:
        df, label = square(pair_distances(store, experiment, density, kind, True, methods)), METRIC_LABELS[kind]
    df = block_means(df)
    inverse = {v: k for k, v in SHORT.items()}
    df.index = df.columns = [_label(store, inverse.get(n, n)) for n in df.index]
    what = "correlation matrix" if kind == "similarity" else f"{label} (matched)"
    return plots.distance_heatmap(df, f"Between methods, {what}: {F.ARCH[experiment]}, {density:g}%\n"
                                      "(mean over seed pairs; diagonal = between seeds of one method)",
                                  cbar_label=label if kind == "similarity" else f"{label} (mean over layers)",
                                  vmin=None if kind == "similarity" else 0)


def pair_summary(store: Store, experiment: str, density: float, metrics: Sequence[str] = ("nnstd", "sasd", "maed"),
                 similarity: bool = True, methods: Sequence[str] = METHODS) -> pd.DataFrame:
    """Mean over the run pairs of each method pair (rows; same method = between seeds) of every
    distance, ordered (matched) and unordered, and of the convergent-learning similarity."""
    cols = {}
    for metric in metrics:
        for matched in (True, False):
            df = pair_distances(store, experiment, density, metric, matched, methods)
            cols[f"{METRIC_LABELS[metric]} {'ordered' if matched else 'unordered'}"] = _by_group(df)
    if similarity:
        cols["similarity"] = _by_group(pair_similarities(store, experiment, density, methods))
    table = pd.DataFrame(cols)
    table.index.name = "method pair"
    return table.round(3)


def _by_group(long: pd.DataFrame) -> pd.Series:
    per_pair = long.groupby(["model_a", "model_b", "method_a", "method_b"], sort=False)["value"].mean().reset_index()
    groups = [_group(a, b) for a, b in zip(per_pair["method_a"], per_pair["method_b"])]
    return per_pair.groupby(pd.Series(groups, name="group"), sort=False)["value"].mean()


# ----------------------------------------------------------------------------- convergent learning
def probe(store: Store, experiment: str, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(normalised images, raw uint8 images) of the stored probe set of the experiment's dataset."""
    from .results import load_probe, probe_path
    dataset = "mnist" if experiment == FC else "cifar10"
    if not probe_path(dataset, store.probe_root).is_file():
        raise MissingRuns([], store.probe_root, f"no {dataset} probe images at {probe_path(dataset, store.probe_root)}")
    n = n or N_IMAGES[experiment]
    raw, _ = load_probe(dataset, store.probe_root)
    fast, store.fast = store.fast, False
    try:
        images = F.probe_images(store, dataset)
    finally:
        store.fast = fast
    return images[:n], raw[:n]


def _zscores(store: Store, experiment: str, density: float, method: str, seed: int,
             images: torch.Tensor) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Standardised activations per layer of one run (dead units → 0) and its dead-unit masks (cached)."""
    from .analysis import activations, standardised
    key = ("z", experiment, density, method, seed, len(images))
    if key not in _cache(store):
        acts = activations(store.model(experiment, method, density, seed), images,
                           "linearised" if store.thesis else "real")
        _cache(store)[key] = standardised(acts)
    return _cache(store)[key]


def pair_similarities(store: Store, experiment: str, density: float, methods: Sequence[str] = METHODS,
                      n_images: int | None = None) -> pd.DataFrame:
    """Per-layer convergent-learning similarity of every pair of runs (long format, cached).

    The quantity of :func:`utils.analysis.similarity_matrix` (Pearson correlation on the probe
    images, one-to-one max matching, output units paired by identity; real activations, or the
    thesis's linearised ones with every layer matched under ``compat="thesis"``), kept per layer;
    each run's activations are computed once.  ``attrs["diag"]`` holds each run's
    self-similarity (below 1 only with dead units), ``attrs["dead"]`` its dead units.
    """
    from .analysis import matched_correlation
    key = ("sim", experiment, density, tuple(methods), n_images)
    if key in _cache(store):
        return _cache(store)[key]
    nets = _nets(store, experiment, density, methods)
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
    _cache(store)[key] = df
    return df


def similarity_heatmap(store: Store, experiment: str, density: float, methods: Sequence[str] = METHODS):
    """Runs × runs mean matched activation correlation (convergent learning)."""
    long = pair_similarities(store, experiment, density, methods)
    df = square(long, diagonal=1.0)
    if any(long.attrs["dead"].values()):
        print("dead units (σ = 0 on the probe images), summed over layers: "
              + ", ".join(f"{n} {d}" for n, d in long.attrs["dead"].items() if d))
    how = "linearised activations, thesis" if store.thesis else "real activations"
    return plots.distance_heatmap(df, f"Correlation matrix: {F.ARCH[experiment]}, {density:g}%\n"
                                      f"({long.attrs['n_images']} probe images, {how})",
                                  cbar_label="Mean matched correlation", vmin=min(0, float(df.min().min())), vmax=1,
                                  figsize=(6.8, 5.8) if len(df) <= 9 else (9, 8))


def similarity_layers(store: Store, experiment: str, density: float, methods: Sequence[str] = METHODS):
    """Mean matched correlation per activation layer, averaged over the pairs of each method pair."""
    df = pair_similarities(store, experiment, density, methods)
    df = df.assign(group=[_group(a, b) for a, b in zip(df["method_a"], df["method_b"])])
    with plots.style():
        n = int(df["layer"].max())
        fig, ax = plt.subplots(figsize=(7.5 if n <= 8 else 10, 4.2))
        for group, part in df.groupby("group", sort=False):
            mean = part.groupby("layer")["value"].mean()
            ax.plot(mean.index, mean.values, label=group, lw=1.6, ms=5, **_group_style(group, methods))
        ticks = list(range(1, n + 1))
        ax.set_xticks(ticks)
        if experiment == RESNET:
            ax.set_xticklabels(["stem"] + [f"b{i}" for i in range(n - 2)] + ["logits"])
        else:
            ax.set_xticklabels([str(t) for t in ticks[:-1]] + ["logits"])
        ax.set(xlabel="Activation layer", ylabel="Mean matched correlation", ylim=(0, 1.02),
               title=f"{F.ARCH[experiment]}, {density:g}%: similarity per layer\n(logits paired by class, "
                     "hidden units by max matching)")
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5), title="method pair")
        fig.tight_layout()
    return fig


def structure_vs_function(store: Store, experiment: str, density: float, metric: str = "nnstd",
                          methods: Sequence[str] = METHODS):
    """Each pair of runs: matched structural distance (x) vs convergent-learning similarity (y)."""
    from scipy.stats import spearmanr
    d = pair_distances(store, experiment, density, metric, True, methods)
    s = pair_similarities(store, experiment, density, methods)
    key = ["model_a", "model_b", "method_a", "method_b"]
    both = d.groupby(key)["value"].mean().rename("x").to_frame().join(s.groupby(key)["value"].mean().rename("y"))
    both = both.reset_index()
    both["group"] = [_group(a, b) for a, b in zip(both["method_a"], both["method_b"])]
    rho = spearmanr(both["x"], both["y"]).statistic
    with plots.style():
        fig, ax = plt.subplots(figsize=(7.5, 4.6))
        for group, part in both.groupby("group", sort=False):
            style = _group_style(group, methods)
            ax.scatter(part["x"], part["y"], label=group, color=style["color"], marker=style["marker"],
                       s=45, alpha=0.85, facecolors=style["color"] if style["ls"] == "-" else "none")
        ax.set(xlabel=f"{METRIC_LABELS[metric]} (matched, mean over layers)", ylabel="Mean matched correlation",
               title=f"{F.ARCH[experiment]}, {density:g}%: structure vs function (Spearman ρ = {rho:.2f})")
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5), title="method pair")
        fig.tight_layout()
    return fig


def _unit_pair(store: Store, experiment: str, density: float, a: tuple[str, int], b: tuple[str, int]) -> dict:
    """Activations, per-layer correlations and matchings of two runs on the probe images (cached)."""
    from .analysis import activations, correlation, dead_units, max_matching, semi_matching
    key = ("pair", experiment, density, tuple(a), tuple(b))
    if key in _cache(store):
        return _cache(store)[key]
    store.require([(experiment, a[0], density, a[1]), (experiment, b[0], density, b[1])])
    images, raw = probe(store, experiment)
    mode = "linearised" if store.thesis else "real"
    acts = [activations(store.model(experiment, m, density, s), images, mode) for m, s in (a, b)]
    corrs = [correlation(x, y) for x, y in zip(*acts)]
    out = dict(acts=acts, corrs=corrs, raw=raw, n=len(images),
               max=[max_matching(c) for c in corrs], semi=[semi_matching(c) for c in corrs],
               dead=[[x.max(0) == x.min(0) for x in side] for side in acts],
               n_dead=[[dead_units(x) for x in side] for side in acts])
    _cache(store)[key] = out
    return out


def correlation_matching(store: Store, experiment: str, density: float, a: tuple[str, int], b: tuple[str, int],
                         layer: int = 2):
    """Correlation matrix of one layer before / after max matching, and the mean correlation of
    identity pairing, semi-matching and max-matching in every layer."""
    p = _unit_pair(store, experiment, density, a, b)
    C = p["corrs"][layer - 1]
    order = p["max"][layer - 1]
    ta, tb = run_tag(*a), run_tag(*b)
    with plots.style():
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
        fig.suptitle(f"{F.ARCH[experiment]}, {density:g}%: correlation of unit activations on {p['n']} probe images "
                     f"({n} units in layer {layer})")
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
    ta, tb = run_tag(*a), run_tag(*b)
    gray = p["raw"].shape[1] == 1
    with plots.style():
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
        fig.suptitle(f"{F.ARCH[experiment]}, {density:g}%, layer {layer}: top-{top} {what} of matched units "
                     f"({ta} left, {tb} right;\nbest pairs, last row in red = median pair; "
                     "number under each = activation)",
                     fontsize=11)
        fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- maps and kernels
def map_grid(store: Store, methods: Sequence[str] = METHODS, densities: Sequence[float] = DENSITIES,
             seed: int = F.MAP_SEED, kind: str = "weights"):
    """First-layer maps (FC): rows methods, columns densities; each panel its own colour bar.

    ``kind="weights"``: masked first-layer weights summed over the 100 units (rainbow, as the thesis);
    ``"count"``: kept connections per pixel.  Runs that are not stored leave a labelled blank.
    """
    from .analysis import first_layer_map
    keys = [(FC, m, d, seed) for m in methods for d in densities]
    if not any(store.has(*k) for k in keys):
        raise MissingRuns(keys, store.root)
    single = len(densities) == 1
    wrap = min(len(methods), 4)
    shape = (-(-len(methods) // wrap), wrap) if single else (len(methods), len(densities))
    with plots.style():
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
                    ax.set_title(_label(store, m))
                else:
                    if r == 0:
                        ax.set_title(f"{d:g}%")
                    if c == 0:
                        ax.set_ylabel(_label(store, m))
        what = "sum of masked weights" if kind == "weights" else "kept connections"
        cols = f"{densities[0]:g}% density" if single else "columns: density % remaining"
        fig.suptitle(f"FC first layer: {what} per input pixel (seed {seed}; {cols})")
        fig.tight_layout()
    return fig


def kernel_rows(store: Store, density: float, methods: Sequence[str] = METHODS, top: int = 12):
    """ResNet-20: the ``top`` most frequent binary 3×3 kernels per method (rows), count above each,
    seeds as in the thesis figure (Gem-Miner 21, SynFlow/random 42; others 42)."""
    from .analysis import common_kernels
    seeds = {m: F.KERNEL_SEEDS.get(m, 42) for m in methods}
    have = [m for m in methods if store.has(RESNET, m, density, seeds[m])]
    if not have:
        raise MissingRuns([(RESNET, m, density, seeds[m]) for m in methods], store.root)
    with plots.style():
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
                    ax.set_ylabel(f"{_label(store, m)}\ns{seeds[m]}", fontsize=10)
        fig.suptitle(f"ResNet-20, {density:g}%: most frequent binary 3×3 kernels (black = kept; share of the "
                     f"29,744 kernels above each)", fontsize=11)
        fig.tight_layout()
    return fig


def kernel_nnz(store: Store, methods: Sequence[str] = METHODS, densities: Sequence[float] = DENSITIES):
    """ResNet-20: share of 3×3 kernels with k kept weights (bars) vs the share if each layer's kept
    weights were spread uniformly at random (binomial, markers). Excess at 0 and at large k means
    weights are concentrated in few kernels."""
    from scipy.stats import binom

    from .analysis import common_kernels
    ds = [d for d in densities if any(store.has(RESNET, m, d, F.KERNEL_SEEDS.get(m, 42)) for m in methods)]
    if not ds:
        raise MissingRuns([(RESNET, m, d, F.KERNEL_SEEDS.get(m, 42)) for m in methods for d in densities], store.root)
    k = np.arange(10)
    width = 0.8 / len(methods)
    with plots.style():
        cols = min(len(ds), 3)
        rows = -(-(len(ds) + 1) // cols) if len(ds) > 1 else 1
        fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.6 * rows), sharey=True, squeeze=False)
        flat = axes.ravel()
        for ax, d in zip(flat, ds):
            for i, m in enumerate(methods):
                seed = F.KERNEL_SEEDS.get(m, 42)
                if not store.has(RESNET, m, d, seed):
                    continue
                units = store.units(RESNET, m, d, seed)
                hist = np.zeros(10)
                for pattern, count in common_kernels(units, top=None):
                    hist[int(pattern.sum())] += count
                convs = [u for u in units if u.ndim == 4 and u.shape[2:] == (3, 3)]
                expect = sum(u.shape[0] * u.shape[1] * binom.pmf(k, 9, float((u != 0).mean())) for u in convs)
                x = k + (i - (len(methods) - 1) / 2) * width
                ax.bar(x, hist / hist.sum(), width=width, color=_color(m), label=_label(store, m))
                ax.plot(x, expect / expect.sum(), "k_", ms=7, mew=1.5)
            ax.set_yscale("log")
            ax.set_ylim(1e-4, 1.2)
            ax.set_xticks(k)
            ax.set(title=f"{d:g}%", xlabel="Kept weights per 3×3 kernel")
            ax.grid(axis="y", alpha=0.3)
        for ax in axes[:, 0]:
            ax.set_ylabel("Share of kernels (log)")
        handles, labels = flat[0].get_legend_handles_labels()
        for ax in flat[len(ds):]:
            ax.axis("off")
        (flat[len(ds)] if len(flat) > len(ds) else flat[-1]).legend(
            handles, labels, frameon=False, loc="center", title="bars; black ticks = uniform placement")
        fig.suptitle("ResNet-20: kept weights per 3×3 kernel vs uniform random placement per layer")
        fig.tight_layout()
    return fig


def mask_images(store: Store, experiment: str, method: str, density: float, seed: int):
    """The (out, in) masks of every layer as black/white images (kept = black)."""
    store.require([(experiment, method, density, seed)])
    masks = store.masks(experiment, method, density, seed)
    n = len(masks)
    with plots.style():
        fig, axes = plt.subplots(1, n, figsize=(2.6 * n + 1, 3.2),
                                 gridspec_kw={"width_ratios": [2.2] + [1] * (n - 1)} if n == 6 else None)
        for i, (ax, m) in enumerate(zip(np.atleast_1d(axes), masks.values())):
            m = m.reshape(m.shape[0], -1).numpy()
            ax.imshow(m, cmap="Greys", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
            ax.set_title(f"layer {i + 1}: {100 * m.mean():.1f}%", fontsize=10)
            ax.set_xlabel(f"input (of {m.shape[1]})")
            if i == 0:
                ax.set_ylabel("unit")
        fig.suptitle(f"{_label(store, method)} seed {seed}: masks (rows = units, black = kept)")
        fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- thesis vs corrected
def heatmaps(dfs: dict[str, pd.DataFrame], suptitle: str, cbar_label: str, vmin=None, vmax=None):
    """Matrices side by side with one shared colour scale (values written in the cells)."""
    values = np.concatenate([d.to_numpy(float).ravel() for d in dfs.values()])
    vmin = np.nanmin(values) if vmin is None else vmin
    vmax = np.nanmax(values) if vmax is None else vmax
    with plots.style():
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


def compare_distances(stores: dict[str, Store], experiment: str, density: float, metric: str = "nnstd"):
    """The same 9×9 matched distance matrix under two settings (e.g. corrected vs thesis), side by side."""
    dfs = {label: square(pair_distances(s, experiment, density, metric, True)) for label, s in stores.items()}
    return heatmaps(dfs, f"{METRIC_LABELS[metric]}: {F.ARCH[experiment]}, {density:g}%",
                    f"{METRIC_LABELS[metric]} (mean over layers)", vmin=0)


def compare_similarities(stores: dict[str, Store], experiment: str, density: float):
    """The 9×9 convergent-learning similarity under two settings, side by side."""
    dfs = {label: square(pair_similarities(s, experiment, density), diagonal=1.0) for label, s in stores.items()}
    return heatmaps(dfs, f"Correlation matrix: {F.ARCH[experiment]}, {density:g}%", "Mean matched correlation")


def conclusions(dfs: dict[str, pd.DataFrame], higher_is_closer: bool = False) -> pd.DataFrame:
    """The statements read off a runs × runs matrix (tags ``gem_21``...), under each setting.

    Rows: same-method pairs closer than cross-method pairs; the most / least self-consistent method;
    the closest and farthest method pair; same-seed SynFlow–random pairs closer than other S–R pairs
    (shared init); and the Spearman correlation of the off-diagonal entries with the first setting.
    The ``changes`` column is ``True`` where the statement differs from the first setting.
    """
    from scipy.stats import spearmanr
    sign = -1 if higher_is_closer else 1
    out = {}
    first = None
    for label, df in dfs.items():
        blocks = block_means(df)
        names = list(blocks.index)
        within = {m: blocks.loc[m, m] for m in names}
        across = [blocks.loc[a, b] for i, a in enumerate(names) for b in names[i + 1:]]
        pairs = {f"{a}–{b}": blocks.loc[a, b] for i, a in enumerate(names) for b in names[i + 1:]}
        close = (lambda d: min(d, key=lambda k: sign * d[k]))
        far = (lambda d: max(d, key=lambda k: sign * d[k]))
        res = {
            "same-method pairs closer than cross-method": bool(sign * np.mean(list(within.values()))
                                                               < sign * np.mean(across)),
            "most self-consistent method": close(within),
            "least self-consistent method": far(within),
            "closest method pair": close(pairs),
            "farthest method pair": far(pairs),
        }
        syn = [n for n in df.index if n.startswith("syn_")]
        rnd = [n for n in df.index if n.startswith("rnd_")]
        if syn and rnd:
            same = [df.loc[s, "rnd_" + s.split("_")[1]] for s in syn if "rnd_" + s.split("_")[1] in df.columns]
            other = [df.loc[s, r] for s in syn for r in rnd if s.split("_")[1] != r.split("_")[1]]
            res["same-seed syn–rnd closer (shared init)"] = bool(sign * np.mean(same) < sign * np.mean(other))
        tri = np.triu_indices(len(df), 1)
        vec = df.to_numpy(float)[tri]
        first = vec if first is None else first
        res["Spearman ρ with first setting"] = round(float(spearmanr(first, vec).statistic), 3)
        out[label] = res
    table = pd.DataFrame(out)
    ref = table.columns[0]
    table["changes"] = [False if i.startswith("Spearman") else any(table.loc[i, c] != table.loc[i, ref]
                                                                   for c in table.columns[1:]) for i in table.index]
    return table


def compare_conclusions(stores: dict[str, Store], experiment: str, density: float,
                        kind: str = "nnstd") -> pd.DataFrame:
    """:func:`conclusions` of the 9×9 matrix (``kind``: a metric or ``"similarity"``) under each
    store's setting; prints one line listing the statements that change."""
    if kind == "similarity":
        dfs = {k: square(pair_similarities(s, experiment, density), diagonal=1.0) for k, s in stores.items()}
    else:
        dfs = {k: square(pair_distances(s, experiment, density, kind, True)) for k, s in stores.items()}
    table = conclusions(dfs, higher_is_closer=kind == "similarity")
    changed = [f"{i} ({' → '.join(str(v) for v in table.loc[i, list(dfs)])})" for i in table.index
               if table.loc[i, "changes"]]
    what = "similarity" if kind == "similarity" else METRIC_LABELS[kind]
    print(f"{F.ARCH[experiment]}, {density:g}%, {what}: "
          + ("conclusions that change: " + "; ".join(changed) if changed else "no listed conclusion changes"))
    return table


def flag_vs_effective(store_eff: Store, store_flag: Store, experiment: str = FC,
                      densities: Sequence[float] = DENSITIES):
    """Gem-Miner density per layer from the effective mask (solid) and from the flags (dashed),
    one panel per target density, mean over seeds."""
    ds = [d for d in densities if all(store_eff.has(experiment, "gem-miner", d, s) for s in SEEDS)]
    if not ds:
        raise MissingRuns([(experiment, "gem-miner", d, s) for d in densities for s in SEEDS], store_eff.root)
    with plots.style():
        cols = min(len(ds), 3)
        rows = -(-len(ds) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), sharey=True, squeeze=False)
        for ax in axes.ravel()[len(ds):]:
            ax.axis("off")
        for ax, d in zip(axes.ravel(), ds):
            for st, ls, label in ((store_eff, "-", "effective mask"), (store_flag, "--", "flags (thesis)")):
                v = np.vstack([F._layer_density(st.masks(experiment, "gem-miner", d, s)) for s in SEEDS])
                ax.errorbar(np.arange(1, v.shape[1] + 1), v.mean(0), yerr=v.std(0), ls=ls, marker="o", ms=4,
                            color=plots.METHOD_COLORS["gem-miner"], mfc="white" if ls == "--" else None,
                            label=label, capsize=2)
            ax.axhline(d, color="0.5", lw=0.8, ls=":")
            ax.set_yscale("log")
            ax.set_yticks([0.1, 1, 2, 5, 10, 20, 50, 100])
            ax.set_yticklabels(["0.1", "1", "2", "5", "10", "20", "50", "100"])
            ax.set(title=f"target {d:g}%", xlabel="Layer")
            ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
        for ax in axes[:, 0]:
            ax.set_ylabel("Density (% remaining, log)")
        axes[0, 0].legend(frameon=False, fontsize=10)
        fig.suptitle(f"{F.ARCH[experiment]}: Gem-Miner density per layer, effective mask vs flags "
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
        rows[f"{d:g}"] = row
    if not rows:
        raise MissingRuns([(experiment, "gem-miner", d, s) for d in DENSITIES for s in SEEDS], store_eff.root)
    df = pd.DataFrame(rows).T.round(2)
    df.index.name = "target %"
    return df


def thesis_comparison_summary(path: str | os.PathLike = "results/thesis_comparison.csv") -> pd.DataFrame:
    """Per experiment × method summary of our networks against the thesis's (``compare-thesis``)."""
    from .thesis_compare import summary
    path = Path(path)
    if not path.is_file():
        raise MissingRuns([], path.parent, f"no {path}: run python -m utils.cli compare-thesis")
    return summary(pd.read_csv(path))
