"""Unit matching and network distances NNSTD / SaSD / MAED (SPEC §9.4).

Greedy layer-by-layer alignment of network B to network A:

1. compute the cost matrix E_l between A_l's and B_l's units;
2. π_l = ``linear_sum_assignment(E_l)``, reorder B_l's units by π_l;
3. with ``propagate``, permute the inputs of the layers fed by layer l: Linear
   columns, conv in-channels, and for conv→flatten→linear the contiguous H·W
   column blocks of each channel (NCHW order).

Layer-0 inputs stay fixed. The output layer keeps the identity unless
``match_output=True``. d_l = mean_j E_l[j, π_l(j)] (Liu et al.'s per-layer NNSTD) or,
with ``reduce="flattened_layer"``, the metric on the whole aligned layer (thesis).

**ResNet-20 residual streams.** Channels of a stage's residual stream are shared by
the stem / block-0 conv and the conv2 of every block of the stage (identity
shortcuts add them), so they must carry one permutation. With the ``"resnet20"``
topology (auto-detected) the stream permutation is matched at the first layer that
writes the stream (the stem conv for stage 1; block-0 conv2 of stages 2 and 3, whose
1x1 shortcut is not an analysis layer) and reused for the conv2 of the other blocks
of that stage, whose distance is evaluated under it; each block's conv1 output is
matched freely. conv1 in-channels and fc columns take the permutation of the stream
they read. ``topology="chain"`` treats the net as a plain chain instead (the
thesis's ``fc=False`` path).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from .distances import canonical_metric, cost_matrix, flat_distance, maed_matrix, sets_to_matrix
from .units import as_units

RESNET20_CHANNELS = [16] * 7 + [32] * 6 + [64] * 6


def match_units(cost, maximize: bool = False, prefer_identity: bool = True,
                solver: str = "lsa") -> np.ndarray:
    """Optimal one-to-one assignment of rows to columns of a cost matrix.

    Args:
        cost: (n, m) array; entries ``±inf`` forbid a pair.
        maximize: maximise the total instead of minimising it.
        prefer_identity: if the identity assignment (square matrices) is also optimal,
            return it — a deterministic tie-break that keeps identical networks at
            distance 0 even when they have duplicate (e.g. empty) units.
        solver: ``"lsa"`` (``scipy.optimize.linear_sum_assignment``, exact) or
            ``"networkx"`` (the thesis's ``find_min_matching``: networkx ≥ 2.8
            ``min_weight_matching``, i.e. ``max_weight_matching(maxcardinality=True)`` on
            the weights max(w) + 1 − w; minimisation only, for bit-fidelity with the
            thesis). Without NaN it is an exact min-cost assignment; NaN costs (the
            thesis's MAED 0/0) are kept and distort the matching as they did in the thesis.

    Returns:
        int array ``perm`` of length n: row i is matched to column ``perm[i]``
        (n ≤ m required).
    """
    cost = np.asarray(cost, dtype=float)
    n, m = cost.shape
    if n > m:
        raise ValueError(f"more rows than columns ({n} > {m})")
    if solver == "networkx":
        if maximize:
            raise ValueError("solver='networkx' reproduces the thesis's min-cost matching only")
        return _networkx_min_matching(cost)
    if solver != "lsa":
        raise ValueError(f"solver must be 'lsa' or 'networkx', got {solver!r}")
    rows, cols = linear_sum_assignment(cost, maximize=maximize)
    perm = np.empty(n, dtype=np.int64)
    perm[rows] = cols
    if prefer_identity and n == m:
        best = cost[np.arange(n), perm].sum()
        diag = np.trace(cost)
        if np.isfinite(diag) and abs(diag - best) <= 1e-12 * max(1.0, abs(best)):
            return np.arange(n)
    return perm


def _networkx_min_matching(cost: np.ndarray) -> np.ndarray:
    # networkx >= 2.8 min_weight_matching on the graph the thesis built (edges row by row).
    # Python's max() is NaN iff the first cost is NaN, which makes every weight NaN.
    import networkx as nx
    n, m = cost.shape
    weights = [(i, n + j, cost[i, j]) for i in range(n) for j in range(m)]
    top = 1 + max(w for _, _, w in weights)
    graph = nx.Graph()
    graph.add_weighted_edges_from((u, v, top - w) for u, v, w in weights)
    matching = nx.max_weight_matching(graph, maxcardinality=True)
    perm = np.empty(n, dtype=np.int64)
    for u, v in matching:
        u, v = min(u, v), max(u, v)
        perm[u] = v - n
    return perm


# ---------------------------------------------------------------------------------------
# topologies: per layer (input source layer or None, row-permutation leader or None)

def _chain_topology(n: int) -> list[tuple[int | None, int | None]]:
    return [(layer - 1 if layer > 0 else None, None) for layer in range(n)]


def _resnet20_topology() -> list[tuple[int | None, int | None]]:
    topo: list[tuple[int | None, int | None]] = [(None, None)]  # stem conv1 leads stage 1
    leader = 0
    for k in range(9):
        c1, c2 = 1 + 2 * k, 2 + 2 * k
        topo.append((leader, None))
        if k in (3, 6):  # downsampling block: conv2 (+ 1x1 shortcut) starts a new stream
            topo.append((c1, None))
            leader = c2
        else:
            topo.append((c1, leader))
    topo.append((leader, None))  # fc reads the stage-3 stream (after global avg pool)
    return topo


def _is_resnet20(units: list[np.ndarray]) -> bool:
    return (len(units) == 20 and all(u.ndim == 4 for u in units[:19]) and units[19].ndim == 2
            and [u.shape[0] for u in units[:19]] == RESNET20_CHANNELS and units[19].shape[1] == 64)


def _topology(units: list[np.ndarray], topology: str) -> list[tuple[int | None, int | None]]:
    if topology == "auto":
        topology = "resnet20" if _is_resnet20(units) else "chain"
    if topology == "chain":
        return _chain_topology(len(units))
    if topology == "resnet20":
        if not _is_resnet20(units):
            raise ValueError("units do not have the ResNet-20 analysis-layer shapes")
        return _resnet20_topology()
    raise ValueError(f"topology must be 'auto', 'chain' or 'resnet20', got {topology!r}")


def permute_inputs(layer: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """Reorder a layer's inputs by the permutation of the layer that feeds it.

    Args:
        layer: (out, in) Linear or (out, in, kh, kw) conv weights.
        perm: permutation of the feeding layer's C output units/channels (new unit j =
            old unit ``perm[j]``).

    Returns:
        Conv: in-channels reordered. Linear with in = C: columns reordered. Linear
        with in = C·H·W (conv → flatten → linear, NCHW): the contiguous H·W blocks
        of each channel reordered.
    """
    c = len(perm)
    if layer.ndim >= 3 or layer.shape[1] == c:
        if layer.shape[1] != c:
            raise ValueError(f"layer has {layer.shape[1]} in-channels, permutation {c}")
        return layer[:, perm]
    n_in = layer.shape[1]
    if n_in % c:
        raise ValueError(f"{n_in} inputs cannot be split into {c} channel blocks")
    return layer.reshape(layer.shape[0], c, n_in // c)[:, perm].reshape(layer.shape[0], n_in)


@dataclass
class NetworkDistance:
    """Result of :func:`network_distance`.

    Attributes:
        metric: ``"nnstd"``, ``"sasd"`` or ``"maed"``.
        layers: per-layer distances, B aligned to A.
        mean: mean of ``layers``.
        layers_ba, mean_ba: the same with A aligned to B (``None`` if not computed).
        perms: per-layer permutations applied to B's units (A→B direction).
    """

    metric: str
    layers: np.ndarray
    mean: float
    layers_ba: np.ndarray | None = None
    mean_ba: float | None = None
    perms: list[np.ndarray] = field(default_factory=list, repr=False)

    @property
    def value(self) -> float:
        """Mean of both directions (``mean`` if only one was computed)."""
        return self.mean if self.mean_ba is None else 0.5 * (self.mean + self.mean_ba)

    @property
    def asymmetry(self) -> float:
        """``mean − mean_ba`` (0 if only one direction was computed)."""
        return 0.0 if self.mean_ba is None else self.mean - self.mean_ba


_COMPAT = {
    "thesis": dict(reduce="flattened_layer", propagate=False, match_output=True, thesis_nan=True),
    "liu2020": dict(reduce="per_unit", propagate=True, match_output=True, topology="chain"),
}


def _settings(propagate, match_output, reduce, compat, topology):
    s = dict(propagate=propagate, match_output=match_output, reduce=reduce, topology=topology,
             thesis_nan=False)
    if compat is not None:
        if compat not in _COMPAT:
            raise ValueError(f"compat must be None, 'thesis' or 'liu2020', got {compat!r}")
        s.update(_COMPAT[compat])
    if s["reduce"] not in ("per_unit", "flattened_layer"):
        raise ValueError(f"reduce must be 'per_unit' or 'flattened_layer', got {s['reduce']!r}")
    return s


def _align(A: list[np.ndarray], B: list[np.ndarray], metric: str, topo, propagate: bool,
           match_output: bool, reduce: str, solver: str,
           thesis_nan: bool = False) -> tuple[np.ndarray, list[np.ndarray]]:
    n = len(A)
    perms: list[np.ndarray | None] = [None] * n
    dists = np.empty(n)
    for layer in range(n):
        a, b = A[layer], B[layer]
        src, leader = topo[layer] if propagate else (None, None)
        if src is not None:
            b = permute_inputs(b, perms[src])
        if a.shape != b.shape:
            raise ValueError(f"layer {layer}: shapes differ, {a.shape} vs {b.shape}")
        if thesis_nan and metric == "maed":
            # thesis: the MAED of two empty units is 0/0 = NaN, and the NaN costs go into its
            # networkx matching, which then pairs empty with non-empty units
            cost = maed_matrix(a, b, empty="nan")
            layer_solver = "networkx" if np.isnan(cost).any() else solver
        else:
            cost, layer_solver = cost_matrix(a, b, metric), solver
        if layer == n - 1 and not match_output:
            perm = np.arange(a.shape[0])
        elif leader is not None:
            perm = perms[leader]
        else:
            perm = match_units(cost, solver=layer_solver)
        perms[layer] = perm
        if reduce == "per_unit":
            dists[layer] = cost[np.arange(len(perm)), perm].mean()
        else:
            dists[layer] = flat_distance(a, b[perm], metric)
    return dists, perms


def network_distance(model_a, model_b, metric: str = "nnstd", propagate: bool = True,
                     match_output: bool = False, reduce: str = "per_unit", compat: str | None = None,
                     solver: str = "lsa", topology: str = "auto",
                     both_directions: bool = True) -> NetworkDistance:
    """Permutation-invariant distance between two networks of the same architecture.

    Args:
        model_a, model_b: models or lists of per-layer unit arrays (PyTorch orientation
            (out, in[, kh, kw]), analysis layers only, e.g. from :func:`get_units`).
        metric: ``"nnstd"`` (NED per unit), ``"sasd"`` or ``"maed"``.
        propagate: permute the inputs of the next layer(s) by each layer's matching.
        match_output: also match the output layer (default: identity).
        reduce: ``"per_unit"`` (mean matched unit distance) or ``"flattened_layer"``
            (metric of the whole aligned layer, thesis).
        compat: ``"thesis"`` (flattened layers, no propagation, output matched; for MAED
            two empty units cost NaN and such layers are matched with ``solver="networkx"``,
            as the thesis did; add ``solver="networkx"`` for bit-fidelity elsewhere) or
            ``"liu2020"`` (per unit, chain propagation, output matched). Overrides the three
            options above.
        solver: ``"lsa"`` or ``"networkx"`` (see :func:`match_units`).
        topology: ``"auto"`` (ResNet-20 shapes -> ``"resnet20"``, else ``"chain"``),
            ``"chain"`` or ``"resnet20"`` (shared residual-stream permutations, see the
            module docstring).
        both_directions: also align A to B and report ``mean_ba``/``asymmetry``.

    Returns:
        :class:`NetworkDistance` with per-layer values and means.
    """
    metric = canonical_metric(metric)
    s = _settings(propagate, match_output, reduce, compat, topology)
    A, B = as_units(model_a), as_units(model_b)
    if len(A) != len(B):
        raise ValueError(f"networks have {len(A)} and {len(B)} layers")
    topo = _topology(A, s["topology"])
    args = (metric, topo, s["propagate"], s["match_output"], s["reduce"], solver, s["thesis_nan"])
    d_ab, perms = _align(A, B, *args)
    result = NetworkDistance(metric, d_ab, float(d_ab.mean()), perms=perms)
    if both_directions:
        d_ba, _ = _align(B, A, *args)
        result.layers_ba, result.mean_ba = d_ba, float(d_ba.mean())
    return result


def nnstd(net_a, net_b, n_inputs: int | None = None, **kwargs) -> NetworkDistance:
    """NNSTD of two networks given as per-unit input sets (SPEC §12 notation).

    Args:
        net_a, net_b: lists of layers; a layer is a list of input-index sets, one per
            unit (e.g. ``[[{0, 1}, {2}], [{0}, {1}]]``). Layer l > 0 has as many inputs
            as layer l − 1 has units.
        n_inputs: number of network inputs (default: largest index in layer 0 + 1).
        **kwargs: passed to :func:`network_distance` (metric is fixed to NNSTD).

    Returns:
        :class:`NetworkDistance`.
    """
    if n_inputs is None:
        n_inputs = 1 + max((i for net in (net_a, net_b) for s in net[0] for i in s), default=-1)

    def to_units(net):
        units, width = [], n_inputs
        for layer in net:
            units.append(sets_to_matrix(layer, width))
            width = len(layer)
        return units

    kwargs.setdefault("topology", "chain")
    return network_distance(to_units(net_a), to_units(net_b), metric="nnstd", **kwargs)


def distance_matrix(models, metric: str = "nnstd", names=None, **kwargs) -> pd.DataFrame:
    """Pairwise network distances of n networks as an n×n DataFrame.

    Args:
        models: list of models or of per-layer unit lists (units are extracted once).
        metric: ``"nnstd"``, ``"sasd"`` or ``"maed"``.
        names: row/column labels (default 0..n−1).
        **kwargs: passed to :func:`network_distance`. With ``compat="thesis"`` only the
            pairs i < j are computed (B = models[j] aligned to A = models[i]) and
            mirrored, as the thesis did; otherwise each entry is the mean of both
            directions.

    Returns:
        Symmetric DataFrame with 0 on the diagonal; ``df.attrs["asymmetry"]`` holds the
        antisymmetric DataFrame of ``mean_ab − mean_ba`` (zeros with ``compat="thesis"``).
    """
    units = [as_units(m) for m in models]
    n = len(units)
    names = list(range(n)) if names is None else list(names)
    if len(names) != n:
        raise ValueError(f"{len(names)} names for {n} models")
    both = kwargs.pop("both_directions", kwargs.get("compat") != "thesis")
    values = np.zeros((n, n))
    asym = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            r = network_distance(units[i], units[j], metric, both_directions=both, **kwargs)
            values[i, j] = values[j, i] = r.value
            asym[i, j], asym[j, i] = r.asymmetry, -r.asymmetry
    df = pd.DataFrame(values, index=names, columns=names)
    df.attrs["asymmetry"] = pd.DataFrame(asym, index=names, columns=names)
    df.attrs["metric"] = canonical_metric(metric)
    return df
