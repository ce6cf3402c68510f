"""Unit distances NED (NNSTD element), SaSD and MAED, per pair and as cost matrices (SPEC §9.3).

- **NED** on input sets A, B: 0 if both are empty, 1 if they are disjoint (one empty
  included), else |A Δ B| / |A ∪ B| — the Jaccard distance with 0/0 := 0.
- **SaSD** ("sign-aware sparse distance", Holleri): U = {i: a_i ≠ 0 ∨ b_i ≠ 0},
  S = {i: sign a_i = sign b_i ≠ 0}; SaSD = (|U| − |S|) / |U|, 0 if U = ∅.
- **MAED** (the thesis's own): Σ|a − b| / Σ|sort(a) − reverse(sort(b))|, 0/0 := 0.

The cost matrices are vectorised (no Python loop over unit pairs): rows of ``A``
(n_a, d) against rows of ``B`` (n_b, d) give an (n_a, n_b) matrix. Layers with more
than two dimensions are flattened per unit, (out, in, kh, kw) -> (out, in·kh·kw).
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from scipy.spatial.distance import cdist

METRICS = ("nnstd", "sasd", "maed")
_ALIASES = {"ned": "nnstd", "nnstd": "nnstd", "sasd": "sasd", "maed": "maed"}


def canonical_metric(metric: str) -> str:
    """``"ned"``/``"nnstd"`` -> ``"nnstd"``; ``"sasd"``, ``"maed"`` unchanged (case-insensitive)."""
    try:
        return _ALIASES[metric.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}") from None


def _vector(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=float).reshape(-1)


def _support(x) -> set:
    if isinstance(x, (np.ndarray, torch.Tensor)):
        return set(np.flatnonzero(_vector(x)).tolist())
    return set(x)


def ned(a, b) -> float:
    """Normalised edit distance of two units' input sets (the NNSTD element).

    Args:
        a, b: input sets — a ``set``/list/tuple/range of input indices — or numpy
            arrays/tensors, whose nonzero positions are the input set.

    Returns:
        0 for two empty sets, 1 for disjoint sets, else |a Δ b| / |a ∪ b|.
    """
    sa, sb = _support(a), _support(b)
    union = len(sa | sb)
    return 0.0 if union == 0 else len(sa ^ sb) / union


def sasd(a, b) -> float:
    """Sign-aware sparse distance of two weight vectors of equal length.

    Returns:
        (|U| − |S|) / |U| with U the union of supports and S the positions where both
        are nonzero with the same sign; 0 if both vectors are all-zero.
    """
    a, b = _vector(a), _vector(b)
    if a.shape != b.shape:
        raise ValueError(f"vectors differ in length: {a.size} vs {b.size}")
    union = np.count_nonzero((a != 0) | (b != 0))
    same = np.count_nonzero((np.sign(a) == np.sign(b)) & (a != 0))
    return 0.0 if union == 0 else (union - same) / union


def maed(a, b) -> float:
    """Mean-absolute-error distance: Σ|a − b| / Σ|sort(a) − reverse(sort(b))|, in [0, 1].

    The denominator is the largest L1 distance over re-pairings of the entries, so
    MAED = 1 means "as far apart as these values can be". 0/0 := 0 (equal constants).
    """
    a, b = _vector(a), _vector(b)
    if a.shape != b.shape:
        raise ValueError(f"vectors differ in length: {a.size} vs {b.size}")
    num = np.abs(a - b).sum()
    den = np.abs(np.sort(a) - np.sort(b)[::-1]).sum()
    return 0.0 if den == 0 else float(num / den)


def _rows(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    return x.reshape(x.shape[0], -1)


def _jaccard_from_counts(inter: np.ndarray, deg_a: np.ndarray, deg_b: np.ndarray,
                         same: np.ndarray | None = None) -> np.ndarray:
    union = deg_a[:, None] + deg_b[None, :] - inter
    hit = inter if same is None else same
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, (union - hit) / np.where(union > 0, union, 1), 0.0)


def _pack(mask: np.ndarray) -> np.ndarray:
    """(n, d) bool -> (n, ceil(d/64)) uint64 bit rows."""
    packed = np.packbits(mask, axis=1)
    pad = (-packed.shape[1]) % 8
    if pad:
        packed = np.pad(packed, ((0, 0), (0, pad)))
    return np.ascontiguousarray(packed).view(np.uint64)


def _overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact (n_a, n_b) counts |a_i ∧ b_j| of two (n, d) bool arrays.

    Bit-packed AND + popcount: integer-exact and BLAS-free (many small float matmuls
    are slow when a threaded BLAS competes for a loaded machine). Chunked over rows to
    keep the temporary below ~16 MB.
    """
    pa, pb = _pack(a), _pack(b)
    out = np.empty((pa.shape[0], pb.shape[0]), dtype=np.int64)
    step = max(1, 2_000_000 // max(1, pb.shape[0] * pb.shape[1]))
    for s in range(0, pa.shape[0], step):
        out[s:s + step] = np.bitwise_count(pa[s:s + step, None, :] & pb[None, :, :]).sum(-1, dtype=np.int64)
    return out


def ned_matrix(A, B) -> np.ndarray:
    """NED between every row of ``A`` (n_a, d) and every row of ``B`` (n_b, d).

    Vectorised: inter = B1·B2ᵀ, union = deg1 + deg2ᵀ − inter, E = 1 − inter/union
    (0 where union = 0), with B1, B2 the 0/1 supports (the product is computed as
    exact bit counts).

    Returns:
        (n_a, n_b) float array.
    """
    a, b = _rows(A) != 0, _rows(B) != 0
    return _jaccard_from_counts(_overlap(a, b), a.sum(1), b.sum(1))


def sasd_matrix(A, B) -> np.ndarray:
    """SaSD between every row of ``A`` (n_a, d) and ``B`` (n_b, d): NED's formula on ± masks.

    Returns:
        (n_a, n_b) float array.
    """
    A, B = _rows(A), _rows(B)
    pa, na, pb, nb = A > 0, A < 0, B > 0, B < 0
    sa, sb = pa | na, pb | nb
    return _jaccard_from_counts(_overlap(sa, sb), sa.sum(1), sb.sum(1),
                                same=_overlap(pa, pb) + _overlap(na, nb))


def maed_matrix(A, B, empty: str = "zero") -> np.ndarray:
    """MAED between every row of ``A`` (n_a, d) and ``B`` (n_b, d); rows are pre-sorted once.

    Args:
        empty: the value of 0/0, i.e. of two equal constant rows such as two empty units:
            ``"zero"`` (default) or ``"nan"`` (the thesis's ``mean_absolute_error_distance``).

    Returns:
        (n_a, n_b) float array.
    """
    if empty not in ("zero", "nan"):
        raise ValueError(f"empty must be 'zero' or 'nan', got {empty!r}")
    A, B = _rows(A).astype(np.float64), _rows(B).astype(np.float64)
    num = cdist(A, B, "cityblock")
    den = cdist(np.sort(A, axis=1), np.sort(B, axis=1)[:, ::-1], "cityblock")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), 0.0 if empty == "zero" else np.nan)


_MATRIX = {"nnstd": ned_matrix, "sasd": sasd_matrix, "maed": maed_matrix}
_PAIR = {"nnstd": ned, "sasd": sasd, "maed": maed}


def cost_matrix(A, B, metric: str = "nnstd") -> np.ndarray:
    """Unit-distance matrix of two layers (rows = units, flattened).

    Args:
        A, B: (n_a, in[, kh, kw]) and (n_b, in[, kh, kw]) arrays (masked weights; for
            NNSTD only the nonzero pattern matters).
        metric: ``"nnstd"`` (alias ``"ned"``), ``"sasd"`` or ``"maed"``.

    Returns:
        (n_a, n_b) float array, E[i, j] = distance(A[i], B[j]).
    """
    return _MATRIX[canonical_metric(metric)](A, B)


def flat_distance(A, B, metric: str = "nnstd") -> float:
    """The metric applied to two whole layers flattened to one vector each (thesis reduce).

    For NNSTD this is the Jaccard distance of the full supports.
    """
    metric = canonical_metric(metric)
    a, b = _vector(A), _vector(B)
    if metric == "nnstd":
        union = np.count_nonzero((a != 0) | (b != 0))
        inter = np.count_nonzero((a != 0) & (b != 0))
        return 0.0 if union == 0 else (union - inter) / union
    return _PAIR[metric](a, b)


def sets_to_matrix(sets: Iterable[Iterable[int]], n_inputs: int) -> np.ndarray:
    """Per-unit input sets -> (n_units, n_inputs) 0/1 float array."""
    sets = [list(s) for s in sets]
    out = np.zeros((len(sets), n_inputs))
    for i, s in enumerate(sets):
        out[i, s] = 1.0
    return out
