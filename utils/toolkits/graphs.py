"""Sparse networks as graphs (networkx), and feed-forward networks built from graphs.

Peer: deepstruct (graph export of masked nets, ``MaskedDeepDAN`` built from a layered DAG).

**Model -> graph** (:func:`to_networkx`). Every unit is a node: one per input feature
(FC) or input channel (conv), one per output neuron of a Linear and one per output
channel (filter) of a Conv2d.  Node ids are ``("input", i)`` and ``(layer_name, j)``
(a bare layer such as ``nn.Linear(10, 5)`` is its own one layer, named ``""``); attributes::

    layer  int    0 for the inputs, then 1, 2, ... in execution order of the layers
    name   str    "input" or the layer's qualified name ("layers.3", "blocks.4.conv1")
    unit   int    index of the feature / neuron / channel inside its layer
    role   str    "input", "hidden" or "output" (units of the layers whose output is the model's output)
    kind   str    "input", "linear" or "conv"
    bias   float  only on units of layers that have a bias

An edge ``u -> v`` exists iff at least one *active* (mask = True, never ``weight != 0``)
weight entry connects unit u to unit v.  Edge attributes::

    count       number of active weight entries behind the edge (1 for a Linear;
                up to kh*kw for a conv; more when a Linear reads a flattened feature map)
    abs_weight  sum of |w| over those entries
    weight      the signed weight if count == 1 (every Linear edge), else abs_weight

The data flow between layers is traced with ``torch.fx`` (:mod:`utils.toolkits.layer_flow`):
BatchNorm, activations, pooling, residual additions (channel c of every summand feeds channel c
of the consumer), option-A zero-padding shortcuts (channel offset), channel concatenation and reshapes are followed.
A reshape (flatten/view/reshape/unflatten, ``nn.Flatten``/``nn.Unflatten``) maps units
channel-major: a Linear reading a flattened (C, H, W) map gets one edge per channel (count =
its active entries), and a Linear's C*H*W units viewed as a conv's (C, H, W) input feed the
conv from their channel (unit u lands in channel u // (H*W); count = that channel's kernel
entries).  Unit graphs are coarser than deepstruct's pixel graphs: one node per channel.
Models that cannot be traced fall back to a chain of the layers in registration order.
Edge weights of a residual sum are those of the consuming layer; BatchNorm scales are not
folded in, so conv graphs are structural (use ``count``/``abs_weight`` as strength).

**Graph -> model** (:func:`from_networkx`, deepstruct ``MaskedDeepDAN`` style).  The DAG's
nodes are layered (longest path from the sources, or a node attribute); each layer becomes
one masked ``nn.Linear`` reading the concatenation of the earlier layers it has edges from
(always including the layer just before), so skip connections across layers work; hidden
units use ReLU, outputs are linear.  ``input_size`` is a feature count or a shape (``(28, 28)``
means 784 features; the net flattens its input).  Input and output rules (``inputs=``/``outputs=``):

* ``inputs="project"`` (default, as deepstruct): the graph's source nodes are hidden units;
  every one of the ``input_size`` input features is connected to every source node.
* ``inputs="sources"``: the source nodes *are* the input features; their number must equal
  ``input_size`` (order: ``unit`` attribute, then insertion order).
* ``outputs="project"`` (default): every sink node (no successor) is connected to every one
  of ``output_size`` new linear output units.
* ``outputs="sinks"``: the sink nodes are the outputs; their number must equal ``output_size``.
* ``outputs="all"``: like "project" but every non-input unit is read out.  Trees and BFS-oriented
  graphs have a single source or sink, i.e. a one-unit bottleneck under the deepstruct rules
  (a ReLU scalar that often dies); "all" removes the bottleneck at the output side.

With ``layer_attr="layer"`` the node attribute decides the layering and the inputs/outputs
are the nodes of the lowest/highest layer (this is how an exported net is rebuilt).  The
masks are installed with the project's :class:`models.masks.Mask`, so ``get_masks``,
``density`` and every pruner work on the result.

**Statistics**: :func:`layer_stats` (degrees and dead units per layer),
:func:`degree_distribution`, :func:`components`, :func:`count_paths` (exact Python int),
:func:`dead_units`, and :func:`graph_stats` for one summary dict.
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping

import networkx as nx
import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from models.masks import attach_masks, set_masks
from utils.toolkits.layer_flow import INPUT, flow, in_units, layer_view, source_edges

__all__ = ["to_networkx", "from_networkx", "layered_from_networkx", "layered_dag", "DAGNet",
           "input_nodes", "output_nodes", "node_layers", "layer_stats", "degree_distribution",
           "components", "count_paths", "dead_units", "graph_stats"]


# --------------------------------------------------------------------------- model -> graph

def to_networkx(model: nn.Module, include_input: bool = True) -> nx.DiGraph:
    """The unit graph of ``model``: nodes are units, edges are active weights (see module doc).

    Works on dense, masked (any parametrization exposing ``current_mask``) and
    :mod:`utils.toolkits.sparse` layers, and on a bare layer (its nodes are named ``("", j)``).
    ``include_input=False`` drops the input nodes.

    Example: ``to_networkx(nn.Linear(10, 5))`` has 15 nodes and 50 edges.
    """
    modules = dict(model.named_modules())
    order, feeds, out_feeds, n_input = flow(model)
    if not order:
        raise ValueError("model has no Linear/Conv2d layers")
    out_layers = {s for s, _, _ in out_feeds if s != INPUT}
    n_input = n_input or max((in_units(modules[n]) for n in order if any(s == INPUT for s, _, _ in feeds[n])),
                  default=0)

    g = nx.DiGraph(kind="unit graph")
    if include_input:
        g.add_nodes_from(((INPUT, i), dict(layer=0, name=INPUT, unit=i, role="input", kind="input"))
                         for i in range(n_input))
    views = {}
    for index, name in enumerate(order, start=1):
        weight, mask, bias, kind = views[name] = layer_view(modules[name])
        role = "output" if name in out_layers else "hidden"
        for j in range(mask.shape[0]):
            attrs = dict(layer=index, name=name, unit=j, role=role, kind=kind)
            if bias is not None:
                attrs["bias"] = float(bias[j])
            g.add_node((name, j), **attrs)

    for name in order:
        weight, mask, _, kind = views[name]
        n_out, d_in = mask.shape[:2]
        stats = [mask.reshape(n_out, d_in, -1).sum(-1).numpy(),
                 weight.abs().reshape(n_out, d_in, -1).sum(-1).double().numpy(),
                 weight.reshape(n_out, d_in, -1).sum(-1).double().numpy()]
        concatenated = any(off != 0 for _, off, _ in feeds[name])
        for src, off, flat in feeds[name]:
            if src == INPUT and not include_input:
                continue
            n_src = n_input if src == INPUT else views[src][1].shape[0]
            reshaped = flat and src != INPUT and not concatenated
            (c, a, s), units = source_edges(stats, n_src, off, reshaped, kind)
            rows, ks = np.nonzero(c)
            g.add_edges_from(
                ((src, int(units[k])), (name, int(j)),
                 dict(count=int(c[j, k]), abs_weight=float(a[j, k]),
                      weight=float(s[j, k]) if c[j, k] == 1 else float(a[j, k])))
                for j, k in zip(rows, ks))
    return g


# --------------------------------------------------------------------------- graph -> model

class DAGNet(nn.Module):
    """Masked feed-forward net on a layered DAG (built by :func:`from_networkx`).

    ``layers.i`` is an ``nn.Linear`` reading ``torch.cat`` of the feature blocks listed in
    ``self.reads[i]`` (block 0 is the flattened input, block i+1 the output of
    ``layers.i``).  Hidden layers use ReLU, the last layer is linear.  Prunable layers carry
    the project's :class:`models.masks.Mask`.

    Attributes: ``input_size`` (flat feature count), ``input_shape`` (the shape it was given
    as), ``output_size``, ``reads``, ``layer_nodes`` (graph nodes of each layer's units;
    ``None`` entries for projected input/output units), ``input_nodes`` (graph nodes of the
    input features, or ``None`` when projected).  Input (B, *input_shape) or (B, input_size).
    """

    def __init__(self, input_size: int | tuple[int, ...], widths: list[int], reads: list[list[int]]):
        super().__init__()
        self.input_size = _flat_size(input_size)
        self.input_shape = tuple(int(d) for d in input_size) if _is_shape(input_size) else (self.input_size,)
        self.output_size = int(widths[-1])
        self.reads = [list(r) for r in reads]
        block = [self.input_size] + list(widths)
        self.layers = nn.ModuleList(
            nn.Linear(sum(block[b] for b in r), w) for r, w in zip(self.reads, widths))
        self.layer_nodes: list[list] = []
        self.input_nodes: list | None = None
        attach_masks(self)

    def forward(self, x: Tensor) -> Tensor:
        feats = [x.flatten(1)]  # (B, *input_shape) -> (B, input_size), as deepstruct does
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            inputs = [feats[b] for b in self.reads[i]]
            h = layer(inputs[0] if len(inputs) == 1 else torch.cat(inputs, 1))
            feats.append(h if i == last else torch.relu(h))
        return feats[-1]


def _is_shape(size) -> bool:
    return isinstance(size, (tuple, list, torch.Size))


def _flat_size(size: int | tuple[int, ...]) -> int:
    """Number of features of an input size given as an int or a shape: ``(28, 28)`` -> 784."""
    return math.prod(int(d) for d in size) if _is_shape(size) else int(size)


def _ordered(graph: nx.DiGraph, nodes: Iterable, position: dict) -> list:
    def key(n):
        unit = graph.nodes[n].get("unit")
        return (0, unit, position[n]) if isinstance(unit, (int, np.integer)) else (1, 0, position[n])
    return sorted(nodes, key=key)


def node_layers(graph: nx.DiGraph, layer_attr: str | None = None) -> dict:
    """Layer index per node: ``layer_attr`` if given, else longest path from a source."""
    if not graph.is_directed() or not nx.is_directed_acyclic_graph(graph):
        raise ValueError("need a directed acyclic graph (use layered_dag for undirected graphs)")
    if layer_attr is not None:
        layer = {n: int(d[layer_attr]) for n, d in graph.nodes(data=True)}
        bad = [(u, v) for u, v in graph.edges if layer[u] >= layer[v]]
        if bad:
            raise ValueError(f"edge {bad[0]} does not go to a later {layer_attr!r}")
        return layer
    layer = {}
    for n in nx.topological_sort(graph):
        layer[n] = max((layer[p] + 1 for p in graph.predecessors(n)), default=0)
    return layer


def from_networkx(graph: nx.DiGraph, input_size: int | tuple[int, ...], output_size: int, *,
                  inputs: str = "project", outputs: str = "project",
                  layer_attr: str | None = None, weight_attr: str | None = "weight",
                  bias_attr: str | None = "bias") -> DAGNet:
    """A masked feed-forward :class:`DAGNet` with the connectivity of the DAG ``graph``.

    See the module docstring for the layering and the ``inputs``/``outputs`` rules.
    ``input_size`` is a feature count or an input shape such as ``(28, 28)`` (784 features,
    flattened in ``forward``, as deepstruct's ``MaskedDeepDAN``).
    Weights: if every edge into a layer carries ``weight_attr``, the layer's weights are
    copied from the edges (and its biases from ``bias_attr`` node attributes, 0 where
    missing); otherwise the layer keeps PyTorch's default init.  Projections are dense and
    default-initialised.  The masks are exactly the edges (plus the full projections).
    """
    if inputs not in ("project", "sources") or outputs not in ("project", "sinks", "all"):
        raise ValueError("inputs must be 'project'|'sources', outputs 'project'|'sinks'|'all'")
    n_features = _flat_size(input_size)
    layer = node_layers(graph, layer_attr)
    if not layer:
        raise ValueError("empty graph")
    position = {n: i for i, n in enumerate(graph.nodes)}
    lo, hi = min(layer.values()), max(layer.values())
    if layer_attr is not None:
        sources = [n for n in graph if layer[n] == lo]
    else:
        sources = [n for n in graph if graph.in_degree(n) == 0]
    sources = _ordered(graph, sources, position)
    if inputs == "sources":
        if len(sources) != n_features:
            raise ValueError(f"inputs='sources' needs {n_features} source nodes, graph has {len(sources)}")
        input_set = set(sources)
    else:
        input_set = set()
    hidden = [n for n in graph if n not in input_set]
    if not hidden:
        raise ValueError("graph has no non-input nodes")
    if outputs == "sinks":
        if layer_attr is not None:
            sinks = [n for n in hidden if layer[n] == hi]
        else:
            sinks = [n for n in hidden if graph.out_degree(n) == 0]
        if len(sinks) != output_size:
            raise ValueError(f"outputs='sinks' needs {output_size} sink nodes, graph has {len(sinks)}")
        for n in sinks:
            layer[n] = hi  # outputs form the last layer (they have no successors)
        if any(layer[n] == hi for n in hidden if n not in set(sinks)):
            raise ValueError("the last layer must contain only output nodes")
    else:
        sinks = [n for n in hidden if graph.out_degree(n) == 0]

    # Feature blocks: block 0 = input features; then one block per non-empty hidden layer.
    levels = sorted({layer[n] for n in hidden})
    layer_nodes = [_ordered(graph, [n for n in hidden if layer[n] == lv], position) for lv in levels]
    block_of, column_of = {}, {}
    for i, n in enumerate(sources if inputs == "sources" else []):
        block_of[n], column_of[n] = 0, i
    for b, nodes in enumerate(layer_nodes, start=1):
        for i, n in enumerate(nodes):
            block_of[n], column_of[n] = b, i

    widths = [len(nodes) for nodes in layer_nodes]
    reads = []
    for b, nodes in enumerate(layer_nodes, start=1):
        wanted = {block_of[p] for n in nodes for p in graph.predecessors(n)}
        if b == 1 and inputs == "project":
            wanted = {0}
        wanted.add(b - 1)
        reads.append(sorted(wanted))
    if outputs == "all":
        sinks = list(hidden)  # read out every unit
    if outputs in ("project", "all"):
        sink_blocks = sorted({block_of[n] for n in sinks})
        reads.append(sink_blocks)
        widths.append(int(output_size))
    model = DAGNet(input_size, widths, reads)
    model.output_size = int(output_size)

    block_width = [n_features] + widths
    masks = {}
    with torch.no_grad():
        for i, layer_module in enumerate(model.layers):
            offsets, start = {}, 0
            for b in reads[i]:
                offsets[b] = start
                start += block_width[b]
            mask = torch.zeros(widths[i], start, dtype=torch.bool)
            is_projection_out = outputs != "sinks" and i == len(model.layers) - 1
            if is_projection_out:
                for n in sinks:
                    mask[:, offsets[block_of[n]] + column_of[n]] = True
            elif i == 0 and inputs == "project":
                mask[:] = True
            else:
                nodes = layer_nodes[i]
                edges = [(column_of[n], offsets[block_of[p]] + column_of[p], d)
                         for n in nodes for p, _, d in graph.in_edges(n, data=True)]
                for r, c, _ in edges:
                    mask[r, c] = True
                copy = weight_attr is not None and edges and all(weight_attr in d for _, _, d in edges)
                if copy:
                    w = torch.zeros_like(layer_module.weight)
                    for r, c, d in edges:
                        w[r, c] = float(d[weight_attr])
                    model.layers[i].parametrizations.weight.original.copy_(w)
                    b = torch.tensor([float(graph.nodes[n].get(bias_attr, 0.0)) if bias_attr else 0.0
                                      for n in nodes], dtype=layer_module.bias.dtype)
                    layer_module.bias.copy_(b)
            masks[f"layers.{i}"] = mask
    set_masks(model, masks)
    model.layer_nodes = [list(nodes) for nodes in layer_nodes] + \
        ([[None] * int(output_size)] if outputs != "sinks" else [])
    model.input_nodes = list(sources) if inputs == "sources" else None
    return model


def layered_from_networkx(graph: nx.DiGraph, layer_attr: str = "layer", unit_attr: str = "unit",
                          weight_attr: str = "weight", bias_attr: str = "bias"):
    """Rebuild a plain FC (:class:`models.fc.FC`) from a layered graph, e.g. ``to_networkx(fc)``.

    Layer k of the graph (``layer_attr``, 0 = inputs) has units ``unit_attr`` 0..n_k-1;
    every edge must go from layer k to k+1.  Masks are the edges; weights come from
    ``weight_attr`` edge attributes (0 where absent) and biases from ``bias_attr`` node
    attributes (a layer has a bias iff its units carry one).  The round trip
    ``fc -> to_networkx -> layered_from_networkx`` gives identical masks and outputs.
    """
    from models.fc import FC

    levels = sorted({int(d[layer_attr]) for _, d in graph.nodes(data=True)})
    index = {lv: i for i, lv in enumerate(levels)}
    sizes = [0] * len(levels)
    for _, d in graph.nodes(data=True):
        k = index[int(d[layer_attr])]
        sizes[k] = max(sizes[k], int(d[unit_attr]) + 1)
    if len(sizes) < 2:
        raise ValueError("need at least two layers")
    has_bias = []
    for k in range(1, len(sizes)):
        flags = {bias_attr in d for _, d in graph.nodes(data=True) if index[int(d[layer_attr])] == k}
        if len(flags) > 1:
            raise ValueError(f"layer {levels[k]}: only some units carry {bias_attr!r}")
        has_bias.append(flags.pop())
    hidden_bias = set(has_bias[:-1]) or {False}
    if len(hidden_bias) > 1:
        raise ValueError("FC needs biases on all hidden layers or on none")
    model = FC(tuple(sizes), hidden_bias=hidden_bias.pop(), output_bias=has_bias[-1])
    masks = {f"layers.{k}": torch.zeros(sizes[k + 1], sizes[k], dtype=torch.bool)
             for k in range(len(sizes) - 1)}
    weights = {k: torch.zeros(sizes[k + 1], sizes[k]) for k in range(len(sizes) - 1)}
    for u, v, d in graph.edges(data=True):
        ku, kv = index[int(graph.nodes[u][layer_attr])], index[int(graph.nodes[v][layer_attr])]
        if kv != ku + 1:
            raise ValueError(f"edge {u}->{v} skips a layer; use from_networkx for skip connections")
        i, j = int(graph.nodes[v][unit_attr]), int(graph.nodes[u][unit_attr])
        masks[f"layers.{ku}"][i, j] = True
        weights[ku][i, j] = float(d.get(weight_attr, 0.0))
    with torch.no_grad():
        for k, layer in enumerate(model.layers):
            layer.parametrizations.weight.original.copy_(weights[k])
            if layer.bias is not None:
                for _, d in graph.nodes(data=True):
                    if index[int(d[layer_attr])] == k + 1:
                        layer.bias[int(d[unit_attr])] = float(d[bias_attr])
    set_masks(model, masks)
    return model


def layered_dag(graph: nx.Graph, order: str | list = "bfs", source: Hashable | None = None,
                reverse: bool = False) -> nx.DiGraph:
    """Orient an undirected graph (``nx.balanced_tree``, ``nx.grid_2d_graph``,
    ``nx.watts_strogatz_graph`` ...) into a DAG ready for :func:`from_networkx`.

    Nodes get a total order (``rank`` node attribute) and every edge points from the lower
    to the higher rank (``reverse=True`` flips all edges), so the result is acyclic.

    * ``order="bfs"``: breadth-first order from ``source`` (default: the first node);
      further components continue from their first node.  A tree from its root becomes a
      root -> leaves DAG whose longest-path layers are the tree levels.
    * ``order="node"``: sorted node labels (insertion order if labels are not comparable).
    * a list: that explicit node order.
    """
    if isinstance(order, str) and order == "bfs":
        ranked, seen = [], set()
        starts = ([source] if source is not None else []) + list(graph.nodes)
        for start in starts:
            if start in seen:
                continue
            for n in [start] + [v for _, v in nx.bfs_edges(graph, start)]:
                if n not in seen:
                    seen.add(n)
                    ranked.append(n)
    elif isinstance(order, str) and order == "node":
        try:
            ranked = sorted(graph.nodes)
        except TypeError:
            ranked = list(graph.nodes)
    elif isinstance(order, str):
        raise ValueError(f"unknown order {order!r}")
    else:
        ranked = list(order)
        if set(ranked) != set(graph.nodes) or len(ranked) != graph.number_of_nodes():
            raise ValueError("order must list every node once")
    rank = {n: i for i, n in enumerate(ranked)}
    dag = nx.DiGraph()
    dag.add_nodes_from((n, {**graph.nodes[n], "rank": rank[n]}) for n in ranked)
    for u, v, d in graph.edges(data=True):
        if u == v:
            continue
        a, b = (u, v) if rank[u] < rank[v] else (v, u)
        if reverse:
            a, b = b, a
        dag.add_edge(a, b, **d)
    return dag


# --------------------------------------------------------------------------- statistics

def input_nodes(graph: nx.DiGraph) -> list:
    """Nodes with role "input"; if no node has a role, the sources."""
    if any("role" in d for _, d in graph.nodes(data=True)):
        return [n for n, d in graph.nodes(data=True) if d.get("role") == "input"]
    return [n for n in graph if graph.in_degree(n) == 0]


def output_nodes(graph: nx.DiGraph) -> list:
    """Nodes with role "output"; if no node has a role, the sinks."""
    if any("role" in d for _, d in graph.nodes(data=True)):
        return [n for n, d in graph.nodes(data=True) if d.get("role") == "output"]
    return [n for n in graph if graph.out_degree(n) == 0]


def _as_graph(obj) -> nx.DiGraph:
    return obj if isinstance(obj, nx.Graph) else to_networkx(obj)


def _layer_of(graph: nx.DiGraph) -> dict:
    if all("layer" in d for _, d in graph.nodes(data=True)):
        return {n: d["layer"] for n, d in graph.nodes(data=True)}
    return node_layers(graph)


def count_paths(graph, log10: bool = False):
    """Number of input -> output paths (DP over the DAG), as an exact Python int.

    With ``log10=True`` returns log10 of it (``-inf`` when there is no path).  Inputs and
    outputs are :func:`input_nodes` / :func:`output_nodes`.
    """
    graph = _as_graph(graph)
    sources = set(input_nodes(graph))
    paths: dict = {}
    for n in nx.topological_sort(graph):
        paths[n] = (1 if n in sources else 0) + sum(paths[p] for p in graph.predecessors(n))
    total = sum(paths[n] for n in output_nodes(graph))
    if log10:
        return math.log10(total) if total > 0 else float("-inf")
    return total


def dead_units(graph) -> dict[str, set]:
    """Units without a path from any input (``no_input_path``), without a path to any
    output (``no_output_path``), and their union (``dead``).  Inputs count as reached from
    the input and outputs as reaching the output, so e.g. an input pixel whose weights are
    all pruned is in ``no_output_path`` only."""
    graph = _as_graph(graph)
    # One search from a virtual source and one to a virtual sink, instead of one per input.
    g = nx.DiGraph(graph)
    source, sink = ("__source__",), ("__sink__",)
    g.add_edges_from((source, n) for n in input_nodes(graph))
    g.add_edges_from((n, sink) for n in output_nodes(graph))
    reached = nx.descendants(g, source) - {sink}
    reaching = nx.ancestors(g, sink) - {source}
    no_in = set(graph) - reached
    no_out = set(graph) - reaching
    return {"no_input_path": no_in, "no_output_path": no_out, "dead": no_in | no_out}


def degree_distribution(graph, direction: str = "in", layer: int | None = None) -> dict[int, np.ndarray]:
    """Degree histograms ``{layer: counts}`` where ``counts[k]`` = units with degree k.

    ``direction`` is "in" or "out"; ``layer`` restricts to one layer.
    """
    graph = _as_graph(graph)
    deg = graph.in_degree if direction == "in" else graph.out_degree
    if direction not in ("in", "out"):
        raise ValueError("direction must be 'in' or 'out'")
    per_layer = defaultdict(list)
    for n, lv in _layer_of(graph).items():
        if layer is None or lv == layer:
            per_layer[lv].append(deg(n))
    return {lv: np.bincount(np.asarray(d, dtype=np.int64)) for lv, d in sorted(per_layer.items())}


def components(graph) -> dict:
    """Weakly connected components: ``n_components``, ``sizes`` (descending),
    ``n_isolated`` (units without any edge) and ``largest_fraction``."""
    graph = _as_graph(graph)
    sizes = sorted((len(c) for c in nx.weakly_connected_components(graph)), reverse=True)
    return {"n_components": len(sizes), "sizes": sizes,
            "n_isolated": sum(1 for n in graph if graph.degree(n) == 0),
            "largest_fraction": sizes[0] / graph.number_of_nodes() if sizes else 0.0}


def layer_stats(graph) -> pd.DataFrame:
    """One row per layer: units, in/out-degree mean/min/max, zero-in/zero-out units,
    and the :func:`dead_units` counts."""
    graph = _as_graph(graph)
    layer_of = _layer_of(graph)
    dead = dead_units(graph)
    rows = []
    for lv in sorted(set(layer_of.values())):
        nodes = [n for n in graph if layer_of[n] == lv]
        ind = np.array([graph.in_degree(n) for n in nodes])
        outd = np.array([graph.out_degree(n) for n in nodes])
        rows.append(dict(
            layer=lv, name=graph.nodes[nodes[0]].get("name", str(lv)), units=len(nodes),
            edges_in=int(ind.sum()),
            in_degree_mean=float(ind.mean()), in_degree_min=int(ind.min()), in_degree_max=int(ind.max()),
            out_degree_mean=float(outd.mean()), out_degree_min=int(outd.min()),
            out_degree_max=int(outd.max()),
            zero_in=int((ind == 0).sum()), zero_out=int((outd == 0).sum()),
            no_input_path=sum(n in dead["no_input_path"] for n in nodes),
            no_output_path=sum(n in dead["no_output_path"] for n in nodes),
            dead=sum(n in dead["dead"] for n in nodes)))
    return pd.DataFrame(rows)


def graph_stats(model_or_graph) -> dict:
    """Summary of one network: nodes, edges, components, paths (exact and log10), dead
    hidden units, and the per-layer :func:`layer_stats` table under ``"layers"``."""
    graph = _as_graph(model_or_graph)
    comp = components(graph)
    dead = dead_units(graph)
    hidden = {n for n, d in graph.nodes(data=True) if d.get("role", "hidden") == "hidden"}
    paths = count_paths(graph)
    return {"nodes": graph.number_of_nodes(), "edges": graph.number_of_edges(),
            "n_components": comp["n_components"], "n_isolated": comp["n_isolated"],
            "largest_component_fraction": comp["largest_fraction"],
            "paths": paths, "log10_paths": math.log10(paths) if paths else float("-inf"),
            "dead_hidden": len(dead["dead"] & hidden), "hidden": len(hidden),
            "layers": layer_stats(graph)}


def degree_frame(graphs: Mapping[str, nx.DiGraph]) -> pd.DataFrame:
    """Long table of unit degrees per weight layer: one row per (network, layer, side, unit).

    For the weight matrix ``layers.k`` (columns ``layer``), ``side="fan-out"`` is the
    out-degree of each of its input units and ``side="fan-in"`` the in-degree of each of its
    output units, so one layer's two rows are the two marginals of its mask.
    """
    rows = []
    for key, g in graphs.items():
        layer = _layer_of(g)
        names = {lv: g.nodes[n].get("name", str(lv)) for n, lv in layer.items()}
        top = max(layer.values())
        for n, lv in layer.items():
            if lv < top:  # fan-out into the next weight layer
                rows.append((key, names[lv + 1], lv, "fan-out", g.out_degree(n)))
            if lv > 0:
                rows.append((key, names[lv], lv - 1, "fan-in", g.in_degree(n)))
    return pd.DataFrame(rows, columns=["network", "layer", "index", "side", "degree"])


def zero_degree_table(frame: pd.DataFrame) -> pd.DataFrame:
    """% of units with degree 0, per network (rows) and ``layer``/side (columns)."""
    t = frame.assign(zero=frame["degree"].eq(0) * 100.0)
    t = t.pivot_table(index="network", columns=["layer", "side"], values="zero", aggfunc="mean", sort=False)
    layers = list(dict.fromkeys(frame.sort_values("index")["layer"]))
    cols = [(name, side) for name in layers for side in ("fan-out", "fan-in") if (name, side) in t.columns]
    return t[cols].round(1)
