"""Small networks built for comparisons: a Watts–Strogatz DAG net, a randomly pruned FC with a
given weight count, an init for sparse nets, and a training comparison of such builders.

>>> ws, dag = ws_network(200, 6, 0.2, seed=0)
>>> fc = random_fc_like(count_weights(ws), seed=0)
>>> table = train_compare({"WS": lambda s: ws_network(seed=0, init_seed=s)[0]}, data, TrainConfig(epochs=1))
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import networkx as nx
import numpy as np
import pandas as pd
import torch
from torch import nn


def count_weights(model: nn.Module) -> int:
    """Active (mask = True) weights over the prunable layers."""
    from models.masks import get_masks
    return int(sum(int(m.sum()) for m in get_masks(model).values()))


@torch.no_grad()
def sparse_init(model: nn.Module, seed: int = 0) -> nn.Module:
    """Kaiming-normal init w.r.t. each unit's *active* fan-in: w ~ N(0, 2 / fan_in_active),
    biases 0 (masked entries stay 0).  Keeps the signal scale of a sparse deep net, which the
    dense default init (scaled by the full fan-in) shrinks layer after layer."""
    from models.masks import mask_of, prunable_layers, raw_weight
    gen = torch.Generator().manual_seed(seed)
    for layer in prunable_layers(model).values():
        m = mask_of(layer).float()
        fan = m.reshape(m.shape[0], -1).sum(1).clamp(min=1).view(-1, *[1] * (m.dim() - 1))
        raw_weight(layer).copy_(torch.randn(m.shape, generator=gen) * (2.0 / fan).sqrt() * m)
        if layer.bias is not None:
            layer.bias.zero_()
    return model


def ws_network(n: int = 200, k: int = 6, p: float = 0.2, seed: int = 0, input_size: int = 784,
               output_size: int = 10, init_seed: int | None = None, **kwargs):
    """A :class:`utils.toolkits.graphs.DAGNet` on a Watts–Strogatz graph: ``nx.watts_strogatz_graph(n, k, p)``,
    oriented by a seeded random node order (:func:`utils.toolkits.graphs.layered_dag`; a BFS or
    node-label order leaves a single source, i.e. a one-unit input bottleneck) and built
    by :func:`utils.toolkits.graphs.from_networkx` (inputs projected densely onto the sources,
    sinks densely onto the outputs).  ``seed`` fixes the graph and its order,
    ``init_seed`` (default ``seed``) the weights.  Returns ``(model, dag)``."""
    from utils.toolkits.graphs import from_networkx, layered_dag
    und = nx.watts_strogatz_graph(n, k, p, seed=seed)
    order = [int(v) for v in np.random.default_rng(seed).permutation(n)]
    dag = layered_dag(und, order=order)
    torch.manual_seed(seed if init_seed is None else init_seed)
    return from_networkx(dag, input_size, output_size, **kwargs), dag


def ws_summary(model: nn.Module, dag: nx.DiGraph) -> pd.DataFrame:
    """Per Linear of a :class:`~utils.toolkits.graphs.DAGNet`: what it reads (feature blocks), its
    shape and active weights; plus the graph's sources/sinks in the index name."""
    from utils.toolkits.sparse import memory_report
    rep = memory_report(model)
    rep = rep[rep["layer"] != "total"][["layer", "shape", "nnz"]].reset_index(drop=True)
    rep["reads blocks"] = [", ".join("input" if b == 0 else f"h{b}" for b in r) for r in model.reads]
    rep["role"] = ["input projection" if i == 0 else "output projection" if i == len(model.reads) - 1
                   else "graph edges" for i in range(len(model.reads))]
    return rep


def random_fc_like(n_weights: int, seed: int = 0, sizes=None) -> nn.Module:
    """The thesis FC (or ``FC(sizes)``) randomly pruned (global, exact count) to about
    ``n_weights`` active weights."""
    from models.fc import FC, FC_SIZES
    from pruners.api import random as random_prune
    torch.manual_seed(seed)
    model = FC(tuple(sizes or FC_SIZES))
    total = sum(a * b for a, b in zip(model_sizes(model)[:-1], model_sizes(model)[1:]))
    return random_prune(model, min(1.0, n_weights / total), seed=seed)


def model_sizes(model: nn.Module) -> list[int]:
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return [layers[0].in_features] + [m.out_features for m in layers]




def train_compare(builders: Mapping[str, Callable[[int], nn.Module]], data, cfg, seeds: Sequence[int] = (21,),
                  inits: Sequence[str] = ("default", "sparse")) -> pd.DataFrame:
    """Train every ``builders[name](seed)`` network with :func:`utils.engine.train.train` (same
    ``cfg``, data order per seed) for each init (``"default"``: as built; ``"sparse"``:
    :func:`sparse_init`).  Returns one row per run: network, init, seed, weights, top1
    (final test accuracy, %), best_top1, seconds."""
    from utils.engine.train import train
    rows = []
    for name, build in builders.items():
        for init in inits:
            for seed in seeds:
                model = build(seed)
                if init == "sparse":
                    sparse_init(model, seed)
                hist = train(model, data, cfg, seed=seed, progress=False)
                rows.append(dict(network=name, init=init, seed=seed, weights=count_weights(model),
                                 top1=float(hist["top1"].iloc[-1]), best_top1=float(hist["top1"].max()),
                                 seconds=float(hist["seconds"].sum())))
    return pd.DataFrame(rows)



def ws_vs_random_fc(n_weights: int, n: int = 200, k: int = 6, p: float = 0.2,
                    graph_seed: int = 0) -> dict[str, Callable[[int], nn.Module]]:
    """The two builders of the WS-vs-random comparison, ``{name: build(seed)}``: one fixed
    Watts–Strogatz graph (``graph_seed``) with seeded weights, and a randomly pruned FC with about
    ``n_weights`` weights whose mask and weights follow the seed."""
    return {"Watts–Strogatz net": lambda seed: ws_network(n, k, p, seed=graph_seed, init_seed=seed)[0],
            "random-pruned FC": lambda seed: random_fc_like(n_weights, seed=seed)}


def describe_ws(model: nn.Module, dag: nx.DiGraph, other: nn.Module) -> str:
    """Two lines: the WS graph (units, edges, sources, sinks, Linear layers, weights) and the
    weight count of ``other`` as a share of the thesis FC."""
    from models.masks import density
    return (f"WS graph: {dag.number_of_nodes()} units, {dag.number_of_edges()} edges, "
            f"{sum(d == 0 for _, d in dag.in_degree())} sources, {sum(d == 0 for _, d in dag.out_degree())} sinks, "
            f"{len(model.layers)} Linear layers; {count_weights(model)} weights in total\n"
            f"random FC: {count_weights(other)} weights = {100 * density(other):.1f} % of the 784-100×5-10 FC")
