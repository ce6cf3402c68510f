"""The named thesis figures (SPEC §10) and the one way to make any figure: :func:`make`, :func:`show`, :func:`report`.

Each thesis figure has a name (the file stem of SPEC §10) in :data:`REGISTRY` and a builder that
reads only the runs store.  Builders first check that every run they need is stored and raise
:class:`~utils.figures.store.MissingRuns` otherwise, so :func:`make` skips the figure with one
clear line instead of failing, and a notebook runs top to bottom on a partial store.

>>> store = Store("results")
>>> make(["fc_acc", "50_sparse_layers"], store, "figures")        # registered: figures/fc_acc.{pdf,png}, ...
>>> make("fc_d10_nnstd_ordered", store, "figures", distance_heatmap, FC, 0.1, "nnstd")   # any builder
>>> print(report(store))
"""
from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from .accuracy import accuracy, random_fc_accuracy
from .convergent import correlation_figure
from .distances import distance_figure
from .illustrations import channel_order, kernel_to_graph, one_dim_weights
from .maps import first_layer_map_figure, kernel_figure, resnet_clusters
from .store import FC, METHODS, RESNET, MissingRuns, Store, summarise
from .structure import (
    dists_random_fc,
    number_clusters,
    random_fc_sparse,
    sign_ratio_clusters,
    sparse_layers,
    weight_dist,
)
from .style import method_style, percent, save

#: the figures generated from no data (the thesis's hand drawings)
ILLUSTRATIONS = ("one-dim-weights", "kernel-to-graph", "channel_order")


def _registry() -> dict[str, tuple[Callable, dict]]:
    reg: dict[str, tuple[Callable, dict]] = {
        # N01
        "fc_acc": (accuracy, dict(experiment=FC)),
        "resnet_acc": (accuracy, dict(experiment=RESNET)),
        "rnd_7_acc": (random_fc_accuracy, {}),
        # N02
        "50_sparse_layers": (sparse_layers, dict(experiment=FC, density=0.5)),
        "2_sparse_layers": (sparse_layers, dict(experiment=FC, density=0.02)),
        "resnet-50_sparse_layers": (sparse_layers, dict(experiment=RESNET, density=0.5)),
        "resnet-2_sparse_layers": (sparse_layers, dict(experiment=RESNET, density=0.02)),
        "rnd_7_sparse": (random_fc_sparse, {}),
        # N03
        "weight_dist_5": (weight_dist, dict(density=0.05)),
        "number_clusters_20": (number_clusters, dict(density=0.2)),
        "sign_ratio_clusters_20": (sign_ratio_clusters, dict(density=0.2)),
        "dists_rnd_7": (dists_random_fc, {}),
    }
    # N04
    for density in (0.5, 0.02):
        for metric, stem in (("maed", "MAED"), ("sasd", "SaSD"), ("nnstd", "NNSTD")):
            reg[f"{stem}-{percent(density)}"] = (distance_figure, dict(metric=metric, density=density))
    reg["fc-NNSTD-10"] = (distance_figure, dict(metric="nnstd", density=0.1,
                                                title="Distance Matrix based on NNSTD"))
    # N05
    reg["fc-cor-matrix-10"] = (correlation_figure, dict(density=0.1))
    # N06
    for density in (0.5, 0.02):
        for method in METHODS:
            reg[f"{method_style(method).tag}-fm-fc-{percent(density)}"] = (
                first_layer_map_figure, dict(method=method, density=density))
    # N07
    for method in METHODS:
        reg[f"{method_style(method).tag}-kernel-10"] = (kernel_figure, dict(method=method, density=0.1))
    reg["resnet_clusters"] = (resnet_clusters, dict(density=0.05))
    # N08
    reg["one-dim-weights"] = (one_dim_weights, {})
    reg["kernel-to-graph"] = (kernel_to_graph, {})
    reg["channel_order"] = (channel_order, {})
    return reg


#: figure name → (builder, keyword arguments), in the thesis's order (SPEC §10, N01…N08)
REGISTRY = _registry()
FIGURE_NAMES = list(REGISTRY)
#: the figures the thesis drew from data (all but the N08 illustrations)
CODE_FIGURES = [n for n in FIGURE_NAMES if n not in ILLUSTRATIONS]


def _corrections() -> dict[str, str]:
    gem = "Gem-Miner's effective mask flag·[score>0.5]"
    out = {}
    for n in ("50_sparse_layers", "2_sparse_layers", "resnet-50_sparse_layers", "resnet-2_sparse_layers"):
        out[n] = gem
    for n in ("weight_dist_5", "dists_rnd_7"):
        out[n] = "units with < 2 kept weights left out (the thesis counted them as gap 0)" + (
            "; " + gem if n == "weight_dist_5" else "")
    out["number_clusters_20"] = "clusters = runs of consecutive inputs, singletons included; " + gem
    out["sign_ratio_clusters_20"] = "every cluster's sign ratio (the thesis dropped each unit's last); " + gem
    for d in (50, 2):
        for m in ("MAED", "SaSD", "NNSTD"):
            out[f"{m}-{d}"] = f"{gem}; per-unit distances, permutations propagated, output fixed" + (
                "; MAED(empty, empty) = 0" if m == "MAED" else "")
    out["fc-NNSTD-10"] = out["NNSTD-50"]
    out["fc-cor-matrix-10"] = (f"{gem}; real activations, dead units left out, logits paired by class, "
                               "diagonal computed")
    for m in ("gem", "syn", "rnd"):
        for d in (50, 2):
            out[f"{m}-fm-fc-{d}"] = ("the true seed, 21, in the title (the published title says 42)"
                                     + ("; " + gem if m == "gem" else ""))
    out["gem-kernel-10"] = gem
    out["resnet_clusters"] = "empty kernels count as 0 as in the thesis; " + gem
    return out


#: for each thesis figure, what the corrected default changes (drawn as a caption, so a corrected
#: figure under a thesis file name is never read as the published one)
CORRECTIONS = _corrections()


def figure_experiment(name: str) -> str | None:
    """The experiment a registered figure reads (``None`` for the generated illustrations)."""
    builder, kwargs = REGISTRY[name]
    if "experiment" in kwargs:
        return kwargs["experiment"]
    if builder in (kernel_figure, resnet_clusters):
        return RESNET
    if name in ILLUSTRATIONS:
        return None
    return FC


def build(name: str, store: Store):
    """The registered figure ``name`` (SPEC §10) built from ``store`` (raises :class:`MissingRuns`)."""
    if name not in REGISTRY:
        raise KeyError(f"unknown figure {name!r}; known: {', '.join(FIGURE_NAMES)}")
    builder, kwargs = REGISTRY[name]
    return builder(store, **kwargs)


def _in_notebook() -> bool:
    return "ipykernel" in sys.modules


def _stores(store: Store | Mapping[str, Store]) -> list[Store]:
    """The stores a figure's outcome is recorded on: the store, or every store of a comparison."""
    return list(store.values()) if isinstance(store, Mapping) else [store]


def _caption(name: str, store: Store) -> str | None:
    """The line drawn above a figure: the store's caption, or what a corrected thesis figure changes."""
    if store.caption is None and not store.thesis and store.mask_mode == "effective" and name in CORRECTIONS:
        return f"Corrected analysis, not the published figure: {CORRECTIONS[name]}"
    return store.caption


def _add_caption(fig, caption: str) -> None:
    """Write ``caption`` above everything the figure draws.

    Legends and suptitles placed outside the axes may reach the figure's top edge, so the
    caption goes above the drawn extent.  The saved file's tight bounding box then reaches above
    the figure, and a figure legend anchored to the figure's box (``loc="outside upper …"``)
    would follow that box's new top into the caption.  So the figure is laid out first and its
    layout kept (no layout engine), and such legends are anchored to the figure's own area
    (figure fraction 0-1), where they were drawn.
    """
    fig.draw_without_rendering()                         # lay out (e.g. constrained layout)
    fig.set_layout_engine("none")
    for legend in fig.legends:
        if tuple(legend.get_bbox_to_anchor().bounds) == tuple(fig.bbox.bounds):
            legend.set_bbox_to_anchor((0, 0, 1, 1), transform=fig.transFigure)
    top = max(1.0, fig.get_tightbbox().y1 / fig.get_figheight())
    width = fig.get_figwidth() * 72 / 10 * 1.7          # characters of 10-pt text per line
    fig.text(0.5, top + 0.01, "\n".join(textwrap.wrap(caption, int(width))), ha="center", va="bottom",
             fontsize=10, style="italic")


def _build_one(name: str, store, builder: Callable | None, args: tuple, kwargs: dict):
    """The figure, or ``None`` after printing and recording why it was skipped."""
    stores = _stores(store)
    for s in stores:
        s._unused = []
    try:
        fig = build(name, store) if builder is None else builder(store, *args, **kwargs)
    except MissingRuns as exc:
        for s in stores:
            s.skipped[name] = str(exc)
        print(f"skipped {name}: {exc}")
        return None
    unused = [key for s in stores for key in s._unused]
    for s in stores:
        if unused:
            s.partial[name] = f"{len(unused)} run(s) missing: {summarise(unused)}"
        else:
            s.partial.pop(name, None)
    if unused:
        print(f"{name} drawn from the complete seeds; {stores[0].partial[name]}")
    return fig


def make(names: str | Sequence[str], store: Store | Mapping[str, Store], figures_dir: str | os.PathLike = "figures",
         builder: Callable | None = None, *args, show: bool | None = None, **kwargs) -> list[str]:
    """Build, save (PDF + PNG) and show figures; skip those whose runs are missing.

    Args:
        names: registered figure names (see :data:`FIGURE_NAMES`); with ``builder``, the one
            file name of the figure ``builder(store, *args, **kwargs)``.
        store: the :class:`Store` to read; for a comparison builder, ``{label: Store}``.
        figures_dir: output directory.
        builder: any figure builder taking the store first (``None``: the registry's).
        show: display inline (default: when running in a notebook). Figures are closed
            after saving either way.

    Returns:
        The names written. A skipped figure prints one line saying which runs are missing and
        is recorded in ``store.skipped``; a figure drawn from fewer seeds than the grid's
        (:meth:`Store.complete_seeds`) in ``store.partial`` (for a comparison, on every store).
    """
    import matplotlib.pyplot as plt
    names = [names] if isinstance(names, str) else list(names)
    if builder is not None and len(names) != 1:
        raise ValueError("a builder makes one figure: pass one name")
    show = _in_notebook() if show is None else show
    written = []
    for name in names:
        fig = _build_one(name, store, builder, args, kwargs)
        if fig is None:
            continue
        caption = _caption(name, store) if builder is None else None
        if caption:
            _add_caption(fig, caption)
        save(fig, name, figures_dir)
        if show:
            from IPython.display import display
            display(fig)
        plt.close(fig)
        for s in _stores(store):
            s.skipped.pop(name, None)
            s.written.append(name)
        written.append(name)
        print(f"wrote {Path(figures_dir) / name}.pdf/.png")
    return written


def show(builder: Callable, store: Store | Mapping[str, Store], *args, **kwargs):
    """``builder(store, *args, **kwargs)`` (usually a table), or ``None`` with one printed line
    (recorded in ``store.skipped``) if runs are missing."""
    try:
        return builder(store, *args, **kwargs)
    except MissingRuns as exc:
        name = getattr(builder, "__name__", "table")
        for s in _stores(store):
            s.skipped[name] = str(exc)
        print(f"skipped {name}: {exc}")
        return None


def report(store: Store) -> str:
    """One line per outcome: figures written and figures skipped (with the missing runs)."""
    lines = [f"{len(set(store.written))} figure(s) written: {', '.join(dict.fromkeys(store.written))}"]
    if store.partial:
        lines.append(f"{len(store.partial)} figure(s) drawn from the seeds stored so far:")
        lines += [f"  {name}: {why}" for name, why in store.partial.items()]
    if store.skipped:
        lines.append(f"{len(store.skipped)} figure(s) or table(s) skipped:")
        lines += [f"  {name}: {why}" for name, why in store.skipped.items()]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the thesis's own networks
#: the two views of the thesis's own networks: its analysis as published, and the corrected one
THESIS_VIEWS = {
    "thesis-networks": dict(
        mask_mode="flag", compat="thesis",
        caption="The thesis's own networks, the thesis's analysis (Gem-Miner flags, flattened unpropagated "
                "distances, linearised activations): as published"),
    "thesis-networks-corrected": dict(
        mask_mode="effective", compat=None,
        caption="The thesis's own networks, corrected analysis (effective Gem-Miner mask, permutations "
                "propagated, real activations)"),
}


def thesis_store(view: str = "thesis-networks", root: str | os.PathLike | None = None, fast: bool = False) -> Store:
    """A :class:`Store` over the imported thesis networks (:data:`THESIS_VIEWS` names the analysis)."""
    from utils.runs.thesis import thesis_root
    return Store(root or thesis_root(), source="thesis", fast=fast, **THESIS_VIEWS[view])


def make_thesis_figures(names: Sequence[str] = CODE_FIGURES, figures_root: str | os.PathLike = "figures",
                        root: str | os.PathLike | None = None, views: Sequence[str] = tuple(THESIS_VIEWS),
                        fast: bool = False, show: bool | None = None) -> dict[str, Store]:
    """Draw ``names`` from the thesis's own networks into ``<figures_root>/<view>/`` for each view.

    Without an import (``python -m utils.cli import-thesis``) this prints one line saying how to
    get it and returns ``{}``.
    """
    from utils.runs.thesis import is_imported, thesis_root
    if not is_imported(root or thesis_root()):
        print(f"thesis networks not imported ({root or thesis_root()}): run `python -m utils.cli "
              f"import-thesis [SOURCE]` to draw figures/thesis-networks/")
        return {}
    stores = {}
    for view in views:
        stores[view] = thesis_store(view, root, fast)
        make(names, stores[view], Path(figures_root) / view, show=show)
    return stores
