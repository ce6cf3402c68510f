"""Views that combine structure and function: method × method means, the summary of every
distance and the similarity per method pair, structure vs function, and the conclusions read off
a runs × runs matrix under different analysis settings.
"""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from . import plots
from .convergent import pair_similarities
from .distances import pair_distances
from .pairs import METRIC_LABELS, block_means, group_means, group_style, pair_group, square
from .store import (
    ALL_METHODS,
    ARCH,
    METHODS,
    Store,
)
from .style import method_of_tag, percent, style


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
    df.index = df.columns = [store.label(method_of_tag(n)) for n in df.index]
    what = "correlation matrix" if kind == "similarity" else f"{label} (matched)"
    return plots.matrix_heatmap(df, f"Between methods, {what}: {ARCH[experiment]}, {percent(density)}%\n"
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
            cols[f"{METRIC_LABELS[metric]} {'ordered' if matched else 'unordered'}"] = group_means(df)
    if similarity:
        cols["similarity"] = group_means(pair_similarities(store, experiment, density, methods))
    table = pd.DataFrame(cols)
    table.index.name = "method pair"
    return table.round(3)



def structure_vs_function(store: Store, experiment: str, density: float, metric: str = "nnstd",
                          methods: Sequence[str] = METHODS):
    """Each pair of runs: matched structural distance (x) vs convergent-learning similarity (y)."""
    from scipy.stats import spearmanr
    d = pair_distances(store, experiment, density, metric, True, methods)
    s = pair_similarities(store, experiment, density, methods)
    key = ["model_a", "model_b", "method_a", "method_b"]
    both = d.groupby(key)["value"].mean().rename("x").to_frame().join(s.groupby(key)["value"].mean().rename("y"))
    both = both.reset_index()
    both["group"] = [pair_group(a, b) for a, b in zip(both["method_a"], both["method_b"])]
    rho = spearmanr(both["x"], both["y"]).statistic
    with style():
        fig, ax = plt.subplots(figsize=(7.5, 4.6))
        for group, part in both.groupby("group", sort=False):
            look = group_style(group, methods)
            ax.scatter(part["x"], part["y"], label=group, color=look["color"], marker=look["marker"],
                       s=45, alpha=0.85, facecolors=look["color"] if look["ls"] == "-" else "none")
        ax.set(xlabel=f"{METRIC_LABELS[metric]} (matched, mean over layers)", ylabel="Mean matched correlation",
               title=f"{ARCH[experiment]}, {percent(density)}%: structure vs function (Spearman ρ = {rho:.2f})")
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5), title="method pair")
        fig.tight_layout()
    return fig



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
    print(f"{ARCH[experiment]}, {percent(density)}%, {what}: "
          + ("conclusions that change: " + "; ".join(changed) if changed else "no listed conclusion changes"))
    return table


