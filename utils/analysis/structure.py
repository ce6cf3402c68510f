"""1-D statistics on unit rows and first-layer maps (SPEC §9.2, §9.7).

For a unit (one row of an (out, in) layer, or a flattened conv filter), ``p`` is the
sorted array of its nonzero indices. In FC layer 1 the index is 28·row + col, so a
gap of 28 is a vertical neighbour. A *run* is a maximal set of consecutive indices.

Defaults are the correct statistics; ``thesis=True`` reproduces the thesis's code
exactly (SPEC §9.2 table):

=====================  =====================================  =============================================
function               default                                thesis
=====================  =====================================  =============================================
weight_distance        float mean(diff(p)); NaN if |p| < 2    int(mean gap); 0 if |p| = 1; empty → 0
count_clusters         number of runs (singletons included)   runs − 1 if the first run is a singleton;
                                                              one weight → 0
sign_ratios            #positive/len per run with len ≥ 2     each unit's last run dropped; an empty layer
                                                              gives [0]
cluster_size           mean run length                        round(mean multiplicity of the pair labels)
=====================  =====================================  =============================================
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .units import as_units


def _positions(unit) -> np.ndarray:
    return np.flatnonzero(np.asarray(unit).reshape(-1))


def _runs(p: np.ndarray) -> list[np.ndarray]:
    """Split sorted indices into maximal runs of consecutive values."""
    if p.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(p) != 1) + 1
    return np.split(p, breaks)


def _rows(layer) -> np.ndarray:
    layer = np.asarray(layer)
    return layer.reshape(layer.shape[0], -1)


def weight_distance(unit, thesis: bool = False) -> float:
    """Mean gap between consecutive nonzero positions of one unit.

    Args:
        unit: 1-D vector (any shape is flattened) of weights or mask values.
        thesis: thesis ``get_weight_distance``: ``int(mean gap)`` truncated, 0 for a
            single weight, and 0 for an empty unit (its NaN was plotted as 0).

    Returns:
        Default: ``float(mean(diff(p)))``, NaN when the unit has fewer than 2 weights.
    """
    p = _positions(unit)
    if thesis:
        if p.size < 2:
            return 0.0
        return float(int(np.abs(np.diff(p)).sum() / (p.size - 1)))
    if p.size < 2:
        return float("nan")
    return float(np.diff(p).mean())


def weight_distances(layer, thesis: bool = False, return_excluded: bool = False):
    """:func:`weight_distance` of every unit of a layer.

    Args:
        layer: (out, in[, kh, kw]) array; each row (flattened) is a unit.
        thesis: see :func:`weight_distance`.
        return_excluded: also return how many units were excluded (default mode:
            units with fewer than 2 weights; thesis mode: 0).

    Returns:
        1-D float array of per-unit mean gaps with NaNs removed, or
        ``(values, n_excluded)``.
    """
    values = np.array([weight_distance(r, thesis) for r in _rows(layer)], dtype=float)
    keep = ~np.isnan(values)
    values = values[keep]
    return (values, int((~keep).sum())) if return_excluded else values


def weight_positions(layer, relative: bool = False) -> np.ndarray:
    """Nonzero positions p of every unit, concatenated in unit order (same in both modes).

    Args:
        layer: (out, in[, kh, kw]) array.
        relative: divide by the row length (in_features), as in the thesis's
            ``dists_rnd_7`` figure.

    Returns:
        1-D int array (float if ``relative``).
    """
    rows = _rows(layer)
    pos = np.nonzero(rows)[1]  # row-major: units in order, positions sorted within a unit
    return pos / rows.shape[1] if relative else pos


def count_clusters(unit, thesis: bool = False) -> int:
    """Number of clusters (runs of consecutive nonzero positions) of one unit.

    Args:
        unit: 1-D vector.
        thesis: thesis ``count_clusters``: it labels the *pairs* of neighbouring
            weights and counts distinct labels, which is runs − 1 when the first run is
            a singleton and 0 for a single weight.

    Returns:
        Default: number of maximal runs, singletons included (0 for an empty unit).
    """
    p = _positions(unit)
    runs = len(_runs(p))
    if not thesis:
        return runs
    if p.size < 2:
        return 0
    return runs - 1 if p[1] != p[0] + 1 else runs


def layer_clusters(layer, thesis: bool = False) -> np.ndarray:
    """:func:`count_clusters` of every unit of a layer (1-D int array, one per unit)."""
    return np.array([count_clusters(r, thesis) for r in _rows(layer)], dtype=int)


def cluster_size(unit, thesis: bool = False) -> float:
    """Mean cluster size of one unit.

    Args:
        unit: 1-D vector.
        thesis: rounded mean multiplicity of the thesis's pair labels, i.e.
            ``round((|p| − 1) / thesis_clusters)``; 0 when there is no pair.

    Returns:
        Default: mean run length (singletons included), NaN for an empty unit.
    """
    p = _positions(unit)
    if thesis:
        n = count_clusters(unit, thesis=True)
        return float(round((p.size - 1) / n)) if n else 0.0
    runs = _runs(p)
    return float(np.mean([len(r) for r in runs])) if runs else float("nan")


def cluster_sizes(layer, thesis: bool = False) -> np.ndarray:
    """:func:`cluster_size` of every unit of a layer (1-D float array, NaN = empty unit)."""
    return np.array([cluster_size(r, thesis) for r in _rows(layer)], dtype=float)


def sign_ratios(layer, thesis: bool = False) -> np.ndarray:
    """Fraction of positive weights in each cluster of length ≥ 2, pooled over a layer's units.

    Args:
        layer: (out, in[, kh, kw]) array of *signed* masked weights (rows are units);
            a single 1-D unit is accepted as a one-unit layer.
        thesis: the thesis pushed a cluster's ratio only when the next break was
            reached, so each unit's last run is dropped; an empty pooled result is
            returned as ``[0]``.

    Returns:
        1-D float array of ratios in [0, 1], units in order, clusters left to right.
    """
    layer = np.asarray(layer)
    rows = layer.reshape(1, -1) if layer.ndim == 1 else _rows(layer)
    ratios: list[float] = []
    for row in rows:
        runs = _runs(np.flatnonzero(row))
        if thesis:
            runs = runs[:-1]
        ratios.extend(float((row[r] > 0).mean()) for r in runs if len(r) >= 2)
    if thesis and not ratios:
        ratios = [0.0]
    return np.array(ratios, dtype=float)


def first_layer_map(units0, kind: str = "weights", shape: tuple[int, int] = (28, 28)) -> np.ndarray:
    """Sum of the first layer over its units, reshaped row-major to an image.

    Args:
        units0: first-layer (out, 784) array of masked weights (``get_units(model)[0]``),
            or a model (its first analysis layer is used).
        kind: ``"weights"`` sums the masked weights; ``"count"`` counts the kept
            connections (nonzeros) per input pixel.
        shape: image shape; in_features must equal its product.

    Returns:
        (28, 28) float array.
    """
    if isinstance(units0, nn.Module):
        units0 = as_units(units0)[0]
    elif isinstance(units0, torch.Tensor):
        units0 = units0.detach().cpu().numpy()
    layer = np.asarray(units0, dtype=float)
    if kind == "weights":
        summed = layer.sum(axis=0)
    elif kind == "count":
        summed = (layer != 0).sum(axis=0).astype(float)
    else:
        raise ValueError(f"kind must be 'weights' or 'count', got {kind!r}")
    return summed.reshape(shape)
