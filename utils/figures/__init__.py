"""Every figure of the project: one registry of named thesis figures, one :func:`make`, one
:func:`report`, one :class:`Store`, one table of method styles.

Layout::

    store.py          Store (cached, verified read access to a runs store), MissingRuns, grid constants
    style.py          STYLE, the method style table (label, tag, colour, marker), save
    plots.py          drawing primitives (curves, violins, heatmaps, maps, kernels)
    illustrations.py  the thesis's hand-drawn figures, generated (N08)
    registry.py       REGISTRY of the thesis figures, make, show, report, the thesis-network views
    accuracy.py, structure.py, pairs.py, distances.py, convergent.py, comparisons.py, maps.py, graphs.py
                      builders by topic (each takes the Store first, densities as fractions)
    notebooks.py      the nbclient runner of ``make figures`` (``python -m utils.figures.notebooks``)

>>> from utils import figures as F
>>> store = F.Store("results")
>>> F.make("fc_acc", store, "figures")                                         # a thesis figure
>>> F.make("fc_d10_nnstd_ordered", store, "figures", F.distance_heatmap, F.FC, 0.1, "nnstd")
>>> print(F.report(store))

Importing draws nothing and changes no setting; notebooks call :func:`utils.setup` first.
"""
from . import plots
from .accuracy import (
                       accuracy,
                       accuracy_curve,
                       accuracy_panels,
                       accuracy_table,
                       accuracy_vs_density,
                       final_curve,
                       gem_mining,
                       ours_vs_thesis,
                       random_fc_accuracy,
                       seed_note,
                       thesis_comparison_summary,
                       thesis_mining_settings,
)
from .comparisons import block_heatmap, compare_conclusions, conclusions, pair_summary, structure_vs_function
from .convergent import (
                       compare_similarities,
                       correlation_figure,
                       correlation_matching,
                       pair_similarities,
                       probe,
                       probe_images,
                       similarity_heatmap,
                       similarity_layers,
                       top_activating,
                       top_patches,
)
from .distances import compare_distances, distance_figure, distance_heatmap, distance_layers, pair_distances
from .graphs import (
                       accuracy_bars,
                       accuracy_vs_density_plot,
                       degree_figure,
                       degree_plot,
                       dnw_static_figure,
                       dnw_static_gaps,
                       draw_layered,
                       gap_conclusion,
                       gap_summary,
                       graph_figure,
                       graph_legend,
                       inference_timing,
                       layered_layout,
                       memory_latency,
                       memory_latency_plot,
                       run_graph,
                       run_graph_layers,
                       timing_summary,
                       training_bars,
                       zero_degrees,
)
from .illustrations import KERNEL_EXAMPLE, channel_order, kernel_to_graph, one_dim_weights
from .maps import first_layer_map_figure, kernel_figure, kernel_nnz, kernel_rows, map_grid, resnet_clusters
from .pairs import METRIC_LABELS, block_means, square
from .registry import (
                       CODE_FIGURES,
                       CORRECTIONS,
                       FIGURE_NAMES,
                       REGISTRY,
                       THESIS_VIEWS,
                       build,
                       figure_experiment,
                       make,
                       make_thesis_figures,
                       report,
                       show,
                       thesis_store,
)
from .store import (
                       ALL_METHODS,
                       ARCH,
                       DENSITIES,
                       EXTENSIONS,
                       FC,
                       GEM_VARIANTS,
                       KERNEL_SEEDS,
                       MAP_SEED,
                       METHODS,
                       RANDOM_FC,
                       RESNET,
                       SEEDS,
                       MissingRuns,
                       Store,
                       grid,
                       layer_densities,
                       pooled,
                       seeds_phrase,
                       summarise,
)
from .structure import (
                       density_lines,
                       dists_random_fc,
                       empty_units,
                       flag_table,
                       flag_vs_effective,
                       graph_compare,
                       graph_table,
                       mask_images,
                       number_clusters,
                       random_fc_sparse,
                       sign_ratio_clusters,
                       sparse_layers,
                       stat_violins,
                       weight_dist,
)
from .style import STYLE, MethodStyle, method_style, percent, save, style, tag

__all__ = ["plots", "accuracy", "style", "accuracy_curve", "accuracy_panels", "accuracy_table",
           "accuracy_vs_density", "final_curve",
           "gem_mining", "ours_vs_thesis", "random_fc_accuracy", "seed_note", "thesis_comparison_summary",
           "thesis_mining_settings",
           "block_heatmap",
           "compare_conclusions", "conclusions", "pair_summary", "structure_vs_function", "compare_similarities",
           "correlation_figure", "correlation_matching", "pair_similarities", "probe", "probe_images",
           "similarity_heatmap", "similarity_layers", "top_activating", "top_patches", "compare_distances",
           "distance_figure", "distance_heatmap", "distance_layers", "pair_distances", "accuracy_bars",
           "accuracy_vs_density_plot", "degree_figure", "degree_plot", "dnw_static_figure", "dnw_static_gaps",
           "draw_layered", "gap_conclusion", "gap_summary", "graph_figure", "graph_legend", "inference_timing",
           "layered_layout", "memory_latency", "memory_latency_plot", "run_graph", "run_graph_layers",
           "timing_summary", "training_bars", "zero_degrees", "KERNEL_EXAMPLE", "channel_order", "kernel_to_graph",
           "one_dim_weights", "first_layer_map_figure", "kernel_figure", "kernel_nnz", "kernel_rows", "map_grid",
           "resnet_clusters", "METRIC_LABELS", "block_means", "square", "CODE_FIGURES", "CORRECTIONS",
           "FIGURE_NAMES", "REGISTRY", "THESIS_VIEWS", "build", "figure_experiment", "make", "make_thesis_figures",
           "report", "show", "thesis_store", "ALL_METHODS", "ARCH", "DENSITIES", "EXTENSIONS", "FC", "GEM_VARIANTS",
           "KERNEL_SEEDS", "MAP_SEED", "METHODS", "RANDOM_FC", "RESNET", "SEEDS", "MissingRuns", "Store", "grid",
           "layer_densities", "pooled", "seeds_phrase", "summarise", "density_lines", "dists_random_fc",
           "empty_units", "flag_table", "flag_vs_effective", "graph_compare", "graph_table", "mask_images",
           "number_clusters", "random_fc_sparse", "sign_ratio_clusters", "sparse_layers", "stat_violins",
           "weight_dist", "STYLE", "MethodStyle", "method_style", "percent", "save", "tag"]
