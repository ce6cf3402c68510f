"""Analyses of sparse networks (SPEC §9).

Units are float64 W⊙mask arrays per analysis layer in PyTorch orientation
(out, in[, kh, kw]); every function taking units also accepts a model. Defaults are
the correct behaviour; ``thesis=True`` / ``compat="thesis"`` reproduce the thesis.

>>> units = get_units(model)                       # 6 (FC) or 20 (ResNet-20) arrays
>>> network_distance(model_a, model_b, "nnstd").value
>>> distance_matrix(models, "sasd", names=tags)    # n×n DataFrame
>>> similarity_matrix(models, images)              # convergent learning
"""
from .convergent import (
                         CoMoments,
                         Similarity,
                         activations,
                         correlation,
                         dead_units,
                         matched_correlation,
                         max_matching,
                         reorder,
                         semi_matching,
                         similarity,
                         similarity_matrix,
                         standardised,
)
from .distances import (
                         METRICS,
                         cost_matrix,
                         flat_distance,
                         maed,
                         maed_matrix,
                         ned,
                         ned_matrix,
                         sasd,
                         sasd_matrix,
                         sets_to_matrix,
)
from .kernels import common_kernels, kernel_cluster_ratio, kernel_ratios, model_cluster_ratios
from .matching import NetworkDistance, distance_matrix, match_units, network_distance, nnstd, permute_inputs
from .structure import (
                         cluster_size,
                         cluster_sizes,
                         count_clusters,
                         first_layer_map,
                         layer_clusters,
                         sign_ratios,
                         weight_distance,
                         weight_distances,
                         weight_positions,
)
from .units import as_units, get_units, layer_density, masked_units

__all__ = [
    # units
    "get_units", "as_units", "layer_density", "masked_units",
    # structure
    "weight_distance", "weight_distances", "weight_positions", "count_clusters", "layer_clusters",
    "cluster_size", "cluster_sizes", "sign_ratios", "first_layer_map",
    # kernels
    "kernel_cluster_ratio", "kernel_ratios", "model_cluster_ratios", "common_kernels",
    # distances
    "METRICS", "ned", "sasd", "maed", "ned_matrix", "sasd_matrix", "maed_matrix", "cost_matrix",
    "flat_distance", "sets_to_matrix",
    # matching
    "match_units", "permute_inputs", "network_distance", "NetworkDistance", "nnstd", "distance_matrix",
    # convergent learning
    "activations", "correlation", "dead_units", "CoMoments", "semi_matching", "max_matching", "reorder",
    "matched_correlation", "standardised",
    "similarity", "Similarity", "similarity_matrix",
]
