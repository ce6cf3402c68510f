"""Kernel graphs and common kernels of conv layers (SPEC §9.6).

A kernel is one (kh, kw) slice W[o, i] of a conv weight (out, in, kh, kw). Its graph has
the nonzero entries as nodes; edges join entries at Manhattan distance 1
(``connectivity="4"``, thesis "manhattan") or Chebyshev distance 1 (``"8"``, thesis
"euclidean" ≤ √2). Rows of a Linear layer are 1-D kernels (``"1d"``: |i − j| ≤ 1).
"""
from __future__ import annotations

from functools import cache

import numpy as np
from scipy import ndimage

from .units import as_units

_STRUCTURES = {"4": ndimage.generate_binary_structure(2, 1), "8": np.ones((3, 3), dtype=bool)}


def _ratio_from_labels(nonzero: np.ndarray, structure: np.ndarray) -> float:
    labels, n = ndimage.label(nonzero, structure=structure)
    if n == 0:
        return 0.0
    sizes = np.bincount(labels.ravel())[1:]
    return float((sizes >= 2).sum() / n)


def kernel_cluster_ratio(k, connectivity: str = "4", thesis: bool = False) -> float:
    """Share of the kernel graph's connected components that have ≥ 2 nodes.

    Args:
        k: a 2-D kernel (kh, kw), or a 1-D row for ``connectivity="1d"`` (2-D input is
            flattened then). Nonzero entries are the nodes.
        connectivity: ``"4"`` (Manhattan 1), ``"8"`` (Chebyshev 1) or ``"1d"`` (|i−j| ≤ 1).
        thesis: round to 2 decimals, as the thesis did.

    Returns:
        0 if there are no nodes or every component is a singleton, 1 for a single
        component of ≥ 2 nodes, otherwise #components(size ≥ 2) / #components.
    """
    k = np.asarray(k)
    if connectivity == "1d":
        ratio = float(_ratios_1d(k.reshape(1, -1))[0])
    elif connectivity in _STRUCTURES:
        nz = (k != 0)
        if nz.ndim == 1:
            nz = nz[None, :]
        if nz.ndim != 2:
            raise ValueError(f"kernel must be 2-D, got shape {k.shape}")
        ratio = _ratio_from_labels(nz, _STRUCTURES[connectivity])
    else:
        raise ValueError(f"connectivity must be '4', '8' or '1d', got {connectivity!r}")
    return round(ratio, 2) if thesis else ratio


@cache
def _lut_3x3(connectivity: str) -> np.ndarray:
    """Cluster ratio of every binary 3x3 pattern; code bit 8−k is entry k (row-major)."""
    lut = np.zeros(512)
    for code in range(512):
        bits = np.array([(code >> (8 - j)) & 1 for j in range(9)], dtype=bool).reshape(3, 3)
        lut[code] = _ratio_from_labels(bits, _STRUCTURES[connectivity])
    return lut


_POW9 = 1 << np.arange(8, -1, -1)


def _codes_3x3(layer: np.ndarray) -> np.ndarray:
    """(out, in, 3, 3) -> (out, in) int codes of the binarised kernels (first entry most significant)."""
    bits = (layer != 0).reshape(layer.shape[0], layer.shape[1], 9)
    return bits @ _POW9


def _ratios_1d(rows: np.ndarray) -> np.ndarray:
    nz = np.asarray(rows) != 0
    left = np.zeros_like(nz)
    left[:, 1:] = nz[:, :-1]
    right = np.zeros_like(nz)
    right[:, :-1] = nz[:, 1:]
    comps = (nz & ~left).sum(axis=1)
    singles = (nz & ~left & ~right).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(comps > 0, (comps - singles) / np.maximum(comps, 1), 0.0)


def kernel_ratios(layer, connectivity: str = "4") -> np.ndarray:
    """:func:`kernel_cluster_ratio` of every kernel of a conv layer.

    Args:
        layer: (out, in, kh, kw) array.
        connectivity: ``"4"`` or ``"8"``.

    Returns:
        (out, in) float array (3x3 kernels use a 512-entry lookup table).
    """
    layer = np.asarray(layer)
    if layer.ndim != 4:
        raise ValueError(f"conv layer must be 4-D (out, in, kh, kw), got shape {layer.shape}")
    if connectivity not in _STRUCTURES:
        raise ValueError(f"connectivity must be '4' or '8' for conv kernels, got {connectivity!r}")
    if layer.shape[2:] == (3, 3):
        return _lut_3x3(connectivity)[_codes_3x3(layer)]
    out = np.zeros(layer.shape[:2])
    for o in range(layer.shape[0]):
        for i in range(layer.shape[1]):
            out[o, i] = _ratio_from_labels(layer[o, i] != 0, _STRUCTURES[connectivity])
    return out


def model_cluster_ratios(units, dense: str | None = "last", connectivity: str = "4",
                         skip_empty: bool = False, thesis: bool = False) -> list[np.ndarray]:
    """Per-filter cluster ratio of every layer.

    For a conv filter it is the mean of :func:`kernel_cluster_ratio` over its in-channel
    kernels; for a Linear row it is the ``"1d"`` ratio of the row.

    Args:
        units: model or list of layers: conv (out, in, kh, kw), Linear (out, in).
        dense: which layers are Linear: ``"last"`` (ResNet: only the last), ``"all"``
            (FC) or ``None``; checked against the array shapes.
        connectivity: ``"4"`` or ``"8"`` for conv kernels.
        skip_empty: average over the non-empty kernels only (NaN for a filter with none);
            by default empty kernels count as 0, as in the thesis.
        thesis: round each kernel ratio and each filter mean to 2 decimals.

    Returns:
        One 1-D float array per layer, one value per filter/row.
    """
    units = as_units(units)
    if dense not in ("last", "all", None):
        raise ValueError(f"dense must be 'last', 'all' or None, got {dense!r}")
    out = []
    for li, layer in enumerate(units):
        expect_dense = dense == "all" or (dense == "last" and li == len(units) - 1)
        if (layer.ndim == 2) != expect_dense:
            raise ValueError(f"layer {li} has shape {layer.shape}, inconsistent with dense={dense!r}")
        if layer.ndim == 2:
            ratios = _ratios_1d(layer)[:, None]
            nonempty = (layer != 0).any(axis=1)[:, None]
        else:
            ratios = kernel_ratios(layer, connectivity)
            nonempty = (layer != 0).reshape(*layer.shape[:2], -1).any(axis=2)
        if thesis:
            ratios = np.round(ratios, 2)
        if skip_empty:
            count = nonempty.sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                means = np.where(count > 0, (ratios * nonempty).sum(axis=1) / np.maximum(count, 1), np.nan)
        else:
            means = ratios.mean(axis=1)
        out.append(np.round(means, 2) if thesis else means)
    return out


def common_kernels(units, top: int | None = 20) -> list[tuple[np.ndarray, int]]:
    """Most frequent binary 3x3 kernel patterns over all conv layers.

    Every 3x3 slice W[o, i] of every 4-D layer with 3x3 kernels is binarised (the
    1x1 shortcuts are not analysis layers; ResNet-20 has 29,744 slices). Patterns are
    counted, the all-zero one included, sorted by count descending, ties broken
    lexicographically on the row-major 0/1 pattern.

    Args:
        units: model or list of layers (non-3x3 and Linear layers are ignored).
        top: number of patterns returned (``None``: all observed patterns).

    Returns:
        ``[(pattern (3, 3) bool array, count), ...]``.
    """
    counts = np.zeros(512, dtype=np.int64)
    for layer in as_units(units):
        if layer.ndim == 4 and layer.shape[2:] == (3, 3):
            counts += np.bincount(_codes_3x3(layer).ravel(), minlength=512)
    codes = [c for c in np.lexsort((np.arange(512), -counts)) if counts[c] > 0]
    if top is not None:
        codes = codes[:top]
    return [(((c >> (8 - np.arange(9))) & 1).astype(bool).reshape(3, 3), int(counts[c])) for c in codes]
