"""Accuracy figures and tables: the thesis's curves (N01) and accuracy against achieved density.

>>> make("fc_acc", store)                                              # registered thesis figure
>>> make("acc_fc_vs_density", store, "figures", accuracy_vs_density, FC)
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from . import plots
from .store import (
    ALL_METHODS,
    ARCH,
    DENSITIES,
    FC,
    METHODS,
    RANDOM_FC,
    SEEDS,
    MissingRuns,
    Store,
    seeds_phrase,
)
from .style import method_style, percent, style


# ----------------------------------------------------------------------------- helpers
def accuracy_curve(history: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(epoch, top-1) of the training that produced the final weights.

    Gem-Miner: the post-rounding row plus finetuning (x starts at 0), S/R/Random-FC: the
    evaluation before training plus every epoch.
    """
    phases = set(history["phase"])
    if "rounded" in phases:
        h = history[history["phase"].isin(["rounded", "finetune"])]
    else:
        h = history[history["phase"] != "mining"]
    x = h["epoch"].to_numpy() - h["epoch"].iloc[0]
    return x, h["top1"].to_numpy(dtype=float)


def _stack(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    n = min(len(x) for x, _ in curves)
    return curves[0][0][:n], np.vstack([y[:n] for _, y in curves])



# ----------------------------------------------------------------------------- N01 accuracy
def accuracy(store: Store, experiment: str):
    """``fc_acc`` / ``resnet_acc``: seed-mean test top-1 per epoch, panels G/S/R, a line per density."""
    seeds = store.complete_seeds(experiment)
    panels = {}
    for method in METHODS:
        lines = {}
        for d in DENSITIES:
            lines[f"{percent(d)}%"] = _stack([accuracy_curve(store.history(experiment, method, d, s))
                                     for s in seeds])
        title = f"{store.label(method)}" + (" (finetuning after rounding)" if method == "gem-miner" else "")
        panels[title] = lines
    note = store.recipe_note(experiment, runs=[(m, d, s) for m in METHODS for d in DENSITIES for s in seeds])
    return plots.accuracy_curves(panels, legend_title=f"{ARCH[experiment]}; {note}\n"
                                                      f"line: mean over {seeds_phrase(seeds)}, band: ±1 sd over "
                                                      f"seeds; target density (% remaining)")


def random_fc_accuracy(store: Store):
    """``rnd_7_acc``: Random-FC test top-1 per epoch, one line per seed (x is epochs)."""
    method, d = RANDOM_FC
    store.require([(FC, method, d, s) for s in SEEDS])
    curves = {s: accuracy_curve(store.history(FC, method, d, s)) for s in SEEDS}
    achieved = np.mean([store.record(FC, method, d, s)["density_achieved"] for s in SEEDS]) * 100
    return plots.seed_curves(curves, title=f"Random-FC ({achieved:.1f}% density): test accuracy")


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
    return accuracy_curve(history)


def accuracy_panels(store: Store, experiment: str, methods: Sequence[str]):
    """Seed-mean test top-1 per epoch, one panel per stored method, one line per density."""
    panels, drawn = {}, []
    for method in methods:
        lines = {}
        for d in DENSITIES:
            if all(store.has(experiment, method, d, s) for s in SEEDS):
                lines[f"{percent(d)}%"] = _stack([final_curve(store.history(experiment, method, d, s)) for s in SEEDS])
                drawn += [(method, d, s) for s in SEEDS]
        if lines:
            panels[store.label(method)] = lines
    if not panels:
        raise MissingRuns([], store.root, f"no complete density of {', '.join(methods)} in {experiment}")
    return plots.accuracy_curves(panels, figsize=(4.7 * len(panels), 4),
                                 legend_title=f"{ARCH[experiment]} ({store.recipe_note(experiment, runs=drawn)})\n"
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
        return f" ({seeds_phrase(seeds)})"
    low, high = per_point.min(), per_point.max()
    return f" ({low} seed{'s' if low > 1 else ''} per point)" if low == high else f" ({low}-{high} seeds per point)"


def accuracy_vs_density(store: Store, experiment: str, methods: Sequence[str] = ALL_METHODS,
                        value: str = "final_top1"):
    """Final test top-1 against the *achieved* density (log x), mean ± std over seeds; dense as a band."""
    table = store.runs_table(experiment)
    table = table[table["method"].isin(list(methods) + ["dense"])]
    sparse = table[table["method"] != "dense"]
    if sparse.empty:
        raise MissingRuns([], store.root, f"no runs of {', '.join(methods)} in {experiment}")
    full = sparse.groupby(["method", "label"])["seed"].nunique().max()
    with style():
        fig, ax = plt.subplots(figsize=(7.5, 4.6))
        for method in methods:
            part = table[table["method"] == method]
            if part.empty:
                continue
            g = part.groupby("label").agg(x=("density_achieved", "mean"), y=(value, "mean"),
                                          e=(value, "std"), n=(value, "size"))
            ax.errorbar(100 * g["x"], g["y"], yerr=g["e"].fillna(0),
                        label=store.label(method) + seed_note(part, full),
                        color=method_style(method).color, marker=method_style(method).marker or "o", lw=1.6, capsize=3)
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
               title=f"{ARCH[experiment]}: accuracy vs achieved density (mean ± std over seeds)\n"
                     f"{store.recipe_note(experiment, table['method'].unique())}")
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))
        fig.tight_layout()
    return fig


def accuracy_table(store: Store, experiment: str, value: str = "final_top1") -> pd.DataFrame:
    """Method × target density (%): final top-1 as "mean ± std (n)" over seeds."""
    from utils.runs.results import accuracy_table as table_of
    table = store.runs_table(experiment)
    if table.empty:
        raise MissingRuns([], store.root, f"no runs of {experiment}")
    return table_of(table, value)


def ours_vs_thesis(store: Store, experiment: str):
    """The store README's explanations for one experiment, as Markdown: ours next to the thesis
    cell by cell (a sentence for every cell more than 2 points away, the ranking per density),
    Gem-Miner's mined per-layer density next to the thesis's, and the JPEG experiment."""
    from IPython.display import Markdown

    from utils.runs.report import sections
    lines = sections(store.root, (experiment,))
    if not lines:
        raise MissingRuns([], store.root, f"no comparison with the thesis stored for {experiment} "
                          f"(python -m utils.cli compare-thesis)")
    return Markdown("\n".join(lines))


def gem_mining(store: Store, experiment: str = FC):
    """Gem-Miner mining phase per target density: test top-1, effective density, flag density."""
    ds = [d for d in DENSITIES if all(store.has(experiment, "gem-miner", d, s) for s in SEEDS)]
    if not ds:
        raise MissingRuns([(experiment, "gem-miner", d, s) for d in DENSITIES for s in SEEDS], store.root)
    cols = (("top1", "Test top-1 (%)", False), ("density_effective", "Effective density (%)", True),
            ("density_flag", "Flag density (%)", True))
    with style():
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
                ax.plot(np.arange(n), y.mean(0), color=color, lw=1.8, marker="o", ms=3, label=f"{percent(d)}%")
                if log:
                    ax.axhline(100 * d, color=color, ls=":", lw=1)
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
        handles, labels = plots.legend_entries(axes)
        note = store.recipe_note(experiment, runs=[("gem-miner", d, s) for d in ds for s in SEEDS])
        fig.suptitle(f"{ARCH[experiment]}: Gem-Miner mining phase, mean over seeds" + (f"\n{note}" if note else ""))
        fig.legend(handles, labels, title="target density (dotted lines)", frameon=False, ncol=len(ds),
                   loc="upper center", bbox_to_anchor=(0.5, 0.87 if note else 0.93))
        fig.tight_layout(rect=(0, 0, 1, 0.78 if note else 0.86))
    return fig



def thesis_comparison_summary(store: Store) -> pd.DataFrame:
    """Per experiment × method summary of our networks against the thesis's, from the store's
    ``thesis_comparison.csv`` (written by ``python -m utils.cli compare-thesis``)."""
    from utils.runs.thesis_compare import summary
    path = store.root / "thesis_comparison.csv"
    if not path.is_file():
        raise MissingRuns([], path.parent, f"no {path}: run python -m utils.cli compare-thesis")
    return summary(pd.read_csv(path))


def thesis_mining_settings(store: Store, root: str | os.PathLike | None = None) -> pd.DataFrame:
    """Gem-Miner's score penalty λ and mining lr per thesis target: what its config files say next
    to what its runs' logs show (:func:`utils.runs.thesis_compare.mining_as_ran`), with the seeds
    per row.  ``store`` is ours (unused but for the notebook's ``show`` call); the thesis's runs
    come from the import at ``root`` (default :func:`utils.runs.thesis.thesis_root`)."""
    from utils.runs.results import load_run_dir, runs
    from utils.runs.thesis import is_imported, thesis_root
    from utils.runs.thesis_compare import THESIS_CONFIG_MINING, mining_as_ran
    root = Path(root or thesis_root())
    if not is_imported(root):
        raise MissingRuns([], root, "thesis networks not imported: run python -m utils.cli import-thesis")
    table = runs(root)
    rows = []
    for row in table[table["method"] == "gem-miner"].itertuples():
        got = mining_as_ran(load_run_dir(root / row.path))
        model = row.experiment.removeprefix("thesis_")
        rows.append({"experiment": model, "target %": round(row.density * 100), "seed": row.seed,
                     "λ config": f"{THESIS_CONFIG_MINING[model]['score_l2']:.0e}",
                     "λ as ran": f"{got['score_l2']:.0e}",
                     "lr config": THESIS_CONFIG_MINING[model]["lr"],
                     "lr as ran": got["lr"] if got["lr"] is not None else "not in the log"})
    frame = pd.DataFrame(rows)
    keys = ["experiment", "target %", "λ config", "λ as ran", "lr config", "lr as ran"]
    return (frame.groupby(keys, sort=True)["seed"].apply(lambda s: ", ".join(map(str, sorted(s))))
            .rename("seeds").reset_index())
