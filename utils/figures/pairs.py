"""Tables of run pairs shared by the distance and convergent-learning figures.

A pair table is long (one row per pair of runs and layer: ``model_a, model_b, method_a, method_b,
layer, metric, matched, value``); :func:`square` turns it into a runs × runs matrix with the run
tags (``gem_21`` ...) as index, :func:`block_means` into a method × method one.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .store import ALL_METHODS, SEEDS, Store
from .style import FALLBACK_COLOR, method_of_tag, method_style, tag

METRIC_LABELS = {"nnstd": "NNSTD", "sasd": "SaSD", "maed": "MAED"}
#: colours of cross-method pairs (same-method pairs take the method's colour)
PAIR_COLORS = ("#444444", "#e7298a", "#66a61e", "#a6761d", "#e6ab02", "#1f78b4")


def runs_by_tag(store: Store, experiment: str, density: float, methods: Sequence[str]) -> dict[str, tuple[str, int]]:
    """``{run tag: (method, seed)}`` of every seed of ``methods`` at ``density`` (all must be stored)."""
    store.require_methods(experiment, methods, [density])
    return {tag(m, s): (m, s) for m in methods for s in SEEDS}


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


def pair_group(a: str, b: str) -> str:
    """The method pair of two runs' methods as short tags in table order: ``"gem–syn"``, ``"syn–syn"``."""
    a, b = sorted([a, b], key=lambda m: ALL_METHODS.index(m) if m in ALL_METHODS else 99)
    return f"{method_style(a).tag}–{method_style(b).tag}"


def group_style(group: str, methods: Sequence[str]) -> dict:
    """Line style of a method pair: same method solid in its colour, cross-method pairs dashed."""
    a, b = group.split("–")
    if a == b:
        return dict(color=method_style(method_of_tag(a)).color, ls="-", marker="o")
    pairs = [pair_group(x, y) for i, x in enumerate(methods) for y in methods[i + 1:]]
    return dict(color=PAIR_COLORS[pairs.index(group) % len(PAIR_COLORS)] if group in pairs else FALLBACK_COLOR,
                ls="--", marker="s")


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
            block = values[np.ix_(ia, ib)]
            # a method with one run has no pair with itself: NaN, without numpy's empty-slice warning
            out.loc[a, b] = np.nanmean(block) if np.isfinite(block).any() else np.nan
    return out.round(3)


def group_means(long: pd.DataFrame) -> pd.Series:
    """Mean of a long pair table per method pair (:func:`pair_group`), each run pair weighted once."""
    per_pair = long.groupby(["model_a", "model_b", "method_a", "method_b"], sort=False)["value"].mean().reset_index()
    groups = [pair_group(a, b) for a, b in zip(per_pair["method_a"], per_pair["method_b"])]
    return per_pair.groupby(pd.Series(groups, name="group"), sort=False)["value"].mean()


