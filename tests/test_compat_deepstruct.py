"""deepstruct's own tests (github.com/innvariant/deepstruct, tests/), ported to utils.toolkits.graphs.

Names adapted: ``GraphTransform(x).transform(m)`` / ``LinearLayerFunctor`` / ``Conv2dLayerFunctor``
-> :func:`graphs.to_networkx`; ``MaskedDeepDAN(size_in, size_out, structure)`` ->
:func:`graphs.from_networkx`; ``generate_structure()`` -> ``to_networkx`` of the net;
``CachedLayeredGraph`` -> ``nx.DiGraph`` (layers from :func:`graphs.node_layers`);
``MaskedDeepFFN`` -> :class:`models.fc.FC`.  Our graphs have one node per conv channel,
upstream one per pixel, and edges come from masks, never from a weight threshold.
"""
import itertools

import networkx as nx
import numpy as np
import pytest
import torch
from torch import nn

from models.fc import FC
from models.masks import attach_masks, get_masks, prunable_layers, raw_weight, set_masks
from utils.toolkits import graphs

# Upstream tests left out, one line each (tests/<file>::<test>: why):
# large/test_GraphTransform.py::test_torchvision_large: downloads pretrained AlexNet and only prints.
# large/test_GraphTransform.py::test_generate_structure_on_large_maskeddeepffn_success: timing (sizes: see below).
# sparse/test_MaskedDeepFFN.py::test_set_random_masks, test_get_structure, test_prune: no assertions upstream.
# sparse/test_MaskedDeepFFN.py::test_random_forward_*: MaskedDeepFFN forward only, no graph API in them.
# sparse/test_MaskedDeepDAN.py::test_rand_structure_with_layer_norm_success: its layer norm (none here) and float64
#   input to a float32 model (upstream bug) are left out; the rest is test_dan_tuple_input_size.
# graph/test_CachedLayeredGraph.py::test_store_load and _has_changed checks: CachedLayeredGraph's own internals.
# graph/test_LabeledDAG.py: LabeledDAG renumbers nodes on insertion, a class with no counterpart here.
# test_FFN2DAN.py, MNIST training part: dataset download and 2-epoch runs (training: tests/test_graphs.py).


class SimpleNet(nn.Module):
    """upstream tests/transform/test_GraphTransform.py::SimpleNet: Linear -> Linear -> view -> conv -> Linear."""

    def __init__(self, size_input: int, size_hidden: int):
        super().__init__()
        self.size_hidden = size_hidden
        self.linear1 = nn.Linear(size_input, size_hidden * size_hidden)
        self.linear2 = nn.Linear(size_hidden * size_hidden, size_hidden * size_hidden)
        self.conv = nn.Conv2d(1, 1, (3, 3))
        self.linear3 = nn.Linear(1 * 2 * 2, 10)

    def forward(self, x):
        out = torch.relu(self.linear2(torch.relu(self.linear1(x))))
        out = out.reshape((1, 1, self.size_hidden, self.size_hidden))
        return self.linear3(self.conv(out).flatten())


def test_stacked_linear_into_conv_graph():
    """upstream tests/transform/test_GraphTransform.py::test_stacked_graph (which only prints).

    The 16 units of linear2 are the 4x4 pixels of the conv's one input channel, so each
    feeds the conv (9 kernel entries); upstream has these 16 pixels connected (36 pixel edges).
    """
    model = SimpleNet(20, 4)
    g = graphs.to_networkx(model)
    assert g.number_of_nodes() == 20 + 16 + 16 + 1 + 10
    assert g.number_of_edges() == 20 * 16 + 16 * 16 + 16 + 10
    into_conv = [(u, d["count"]) for u, _, d in g.in_edges(("conv", 0), data=True)]
    assert into_conv == [(("linear2", u), 9) for u in range(16)]
    assert [d["count"] for _, _, d in g.out_edges(("conv", 0), data=True)] == [4] * 10
    stats = graphs.layer_stats(g)
    assert stats["units"].tolist() == [20, 16, 16, 1, 10]
    assert stats["dead"].tolist() == [0, 0, 0, 0, 0]
    assert graphs.count_paths(g) == 20 * 16 * 16 * 10


class LinearIntoConv(nn.Module):
    """Linear(5, 2*4*4) whose units become the 2 input channels of Conv2d(2, 3, 3)."""

    def __init__(self, reshape):
        super().__init__()
        self.fc = nn.Linear(5, 32)
        self.conv = nn.Conv2d(2, 3, 3)
        self.reshape = reshape

    def forward(self, x):
        return self.conv(self.reshape(self.fc(x)))


@pytest.mark.parametrize("reshape", [
    lambda h: h.view(-1, 2, 4, 4),
    lambda h: h.reshape(h.shape[0], 2, 4, 4),
    lambda h: h.unflatten(1, (2, 4, 4)),
    nn.Unflatten(1, (2, 4, 4)),
], ids=["view", "reshape", "unflatten", "nn.Unflatten"])
def test_linear_units_land_in_their_conv_channel(reshape):
    """upstream tests/transform/test_GraphTransform.py::test_stacked_graph, with 2 channels.

    Units 0-15 are channel 0 and units 16-31 channel 1; pruning the kernel from input
    channel 1 to output channel 0 removes exactly the edges of units 16-31 to it.
    """
    model = attach_masks(LinearIntoConv(reshape))
    mask = torch.ones(3, 2, 3, 3, dtype=torch.bool)
    mask[0, 1] = False
    mask[2, 0, 0, 0] = False
    set_masks(model, {"conv": mask})
    assert model(torch.randn(2, 5)).shape == (2, 3, 2, 2)
    g = graphs.to_networkx(model)
    assert g.number_of_edges() == 5 * 32 + 16 * 3 + 16 * 2
    assert {v for _, v in g.out_edges(("fc", 3))} == {("conv", 0), ("conv", 1), ("conv", 2)}
    assert {v for _, v in g.out_edges(("fc", 20))} == {("conv", 1), ("conv", 2)}
    assert g.edges[("fc", 3), ("conv", 2)]["count"] == 8
    assert g.edges[("fc", 20), ("conv", 2)]["count"] == 9
    assert graphs.dead_units(g)["dead"] == set()


def test_deep_ffn_graph_counts():
    """upstream tests/transform/test_GraphTransform.py::test_deep_ffn (MaskedDeepFFN((50,), 10, [100, 50, 100]))."""
    layers, size_in, size_out = [100, 50, 100], 50, 10
    g = graphs.to_networkx(FC((size_in, *layers, size_out)))
    assert g.number_of_nodes() == 50 + 250 + 10
    assert g.number_of_edges() == 50 * 100 + 100 * 50 + 50 * 100 + 100 * 10 == 16_000


@pytest.mark.parametrize("size_in, size_out", [(10, 5), (4, 8)], ids=["compression", "expansion"])
def test_linear_layer_graph(size_in, size_out):
    """upstream tests/transform/test_LinearLayerFunctor.py::test_linear_simple_compression
    and ::test_linear_simple_expansion: a bare nn.Linear is a two-layer graph."""
    layer = nn.Linear(size_in, size_out)
    g = graphs.to_networkx(layer)
    assert g.number_of_nodes() == size_in + size_out
    assert g.number_of_edges() == size_in * size_out
    assert sorted(set(graphs.node_layers(g).values())) == [0, 1]
    assert g.edges[("input", 1), ("", 2)]["weight"] == pytest.approx(layer.weight[2, 1].item())
    assert [d["role"] for _, d in g.nodes(data=True)].count("output") == size_out


def test_linear_layer_graph_sparse():
    """upstream tests/transform/test_LinearLayerFunctor.py::test_linear_sparse.

    Upstream prunes by |w| < 0.01; ours reads the mask, so a kept weight that is 0 stays an edge.
    """
    layer = attach_masks(nn.Linear(5, 10))
    mask = torch.rand(10, 5, generator=torch.Generator().manual_seed(0)) < 0.3
    set_masks(layer, {"": mask})
    with torch.no_grad():
        j, i = mask.nonzero()[0].tolist()
        raw_weight(layer)[j, i] = 0.0
    g = graphs.to_networkx(layer)
    assert g.number_of_nodes() == 15
    assert g.number_of_edges() == int(mask.sum()) == 19
    assert set(g.edges) == {(("input", i), ("", j)) for j, i in mask.nonzero().tolist()}
    assert g.edges[("input", i), ("", j)]["weight"] == 0.0


@pytest.mark.parametrize("stride, channels_out, kernel",
                         list(itertools.product([1, 2], [1, 2, 3, 4], [2, 3, 4, 5, 6])))
def test_conv_layer_graph(stride, channels_out, kernel):
    """upstream tests/transform/test_Conv2dLayerFunctor.py::test_conv_simple and
    ::test_conv_multiple_configs (3 input channels).  Upstream counts output pixels
    (channels_out * H_out * W_out); ours has one node per channel and ``count`` = kernel entries."""
    conv = nn.Conv2d(3, channels_out, kernel, stride=stride)
    out = conv(torch.rand(1, 3, 10, 10))
    size_out = (10 - kernel) // stride + 1
    assert out.shape == (1, channels_out, size_out, size_out)
    g = graphs.to_networkx(conv)
    assert g.number_of_nodes() == 3 + channels_out
    assert g.number_of_edges() == 3 * channels_out
    assert {d["count"] for _, _, d in g.edges(data=True)} == {kernel * kernel}


def test_layering_matches_cached_layered_graph():
    """upstream tests/graph/test_CachedLayeredGraph.py::test_cached_layered_graph_default_success."""
    g = nx.DiGraph()
    g.add_nodes_from(range(1, 7))
    g.add_edges_from([(1, 3), (1, 4), (1, 5), (1, 6), (2, 3), (2, 4), (2, 5), (2, 7),
                      (3, 6), (4, 6), (4, 7), (5, 7)])

    def layer_sizes():
        layers = list(graphs.node_layers(g).values())
        return [layers.count(k) for k in range(max(layers) + 1)]

    assert layer_sizes() == [2, 3, 2]
    g.add_edges_from([(0, 3), (0, 4)])
    assert layer_sizes() == [3, 3, 2]


def structure_from(undirected: nx.Graph) -> nx.DiGraph:
    """deepstruct's recipe: a CachedLayeredGraph gets the edges as listed (low -> high id)."""
    structure = nx.DiGraph()
    structure.add_edges_from(undirected.edges)
    structure.add_nodes_from(undirected.nodes)
    return structure


def hidden_structure(net: graphs.DAGNet) -> nx.DiGraph:
    """``generate_structure(include_input=False, include_output=False)``: the unit graph of
    ``net`` without input and projected output units, renamed to the nodes it was built from."""
    name = {(f"layers.{k}", j): n for k, nodes in enumerate(net.layer_nodes)
            for j, n in enumerate(nodes) if n is not None}
    g = graphs.to_networkx(net, include_input=False)
    return nx.relabel_nodes(g.subgraph(name), name)


def test_dan_random_structure_round_trip():
    """upstream tests/sparse/test_MaskedDeepDAN.py::test_random_structures_success."""
    structure = structure_from(nx.watts_strogatz_graph(200, 3, 0.8, seed=0))
    model = graphs.from_networkx(structure, 784, 10)
    assert [layer.out_features for layer in model.layers] == [72, 66, 37, 11, 5, 6, 2, 1, 10]
    extracted = hidden_structure(model)
    assert (extracted.number_of_nodes(), extracted.number_of_edges()) == (200, 200)
    assert set(extracted.edges) == set(structure.edges)
    new_model = graphs.from_networkx(extracted, 784, 10)
    a, b = get_masks(model), get_masks(new_model)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_dan_rebuilt_from_unit_graph_with_input_and_output():
    """upstream tests/sparse/test_MaskedDeepDAN.py::test_random_structures_with_input_and_output_success.

    The full unit graph (inputs and outputs included) rebuilds the same net: same masks, same outputs.
    """
    torch.manual_seed(0)
    model = graphs.from_networkx(structure_from(nx.watts_strogatz_graph(200, 3, 0.8, seed=0)), 784, 10)
    g = graphs.to_networkx(model)
    assert g.number_of_nodes() == 784 + 200 + 10
    rebuilt = graphs.from_networkx(g, 784, 10, inputs="sources", outputs="sinks", layer_attr="layer")
    a, b = get_masks(model), get_masks(rebuilt)
    assert all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(4, 784)
    with torch.no_grad():
        assert torch.allclose(model(x), rebuilt(x), atol=1e-5, rtol=0)


def test_dan_masks_are_applied():
    """upstream tests/sparse/test_MaskedDeepDAN.py::test_apply_mask_success: weights outside
    the structure are zero (ours are zeroed when the masks are installed, no apply_mask call)."""
    structure = structure_from(nx.watts_strogatz_graph(200, 3, 0.8, seed=0))
    model = graphs.from_networkx(structure, 784, 10)
    masks = get_masks(model)
    n_sources = model.layers[0].out_features
    n_sinks = sum(1 for n in structure if structure.out_degree(n) == 0)
    assert sum(int(m.sum()) for m in masks.values()) == 784 * n_sources + 200 + n_sinks * 10
    for name, layer in prunable_layers(model).items():
        assert (raw_weight(layer).detach()[~masks[name]] == 0).all()
        assert (layer.weight.detach()[~masks[name]] == 0).all()


def block_structure(sizes: list[int], pairs: list[tuple[int, int]]) -> nx.DiGraph:
    """deepstruct's block graphs: nodes 1..sum(sizes) in blocks; every (a, b) pair joins block a to b fully."""
    bounds = np.cumsum([1] + sizes)
    blocks = [range(bounds[i], bounds[i + 1]) for i in range(len(sizes))]
    g = nx.DiGraph()
    g.add_nodes_from(range(1, bounds[-1]))
    g.add_edges_from((int(u), int(v)) for a, b in pairs for u in blocks[a] for v in blocks[b])
    return g


GET_STRUCTURE_PAIRS = [(0, 2), (0, 3), (0, 5), (1, 3), (1, 4), (1, 6), (2, 5), (3, 5), (3, 6), (4, 6)]
DEV_PAIRS = [(0, 2), (0, 3), (1, 3), (1, 4), (2, 5), (3, 5), (3, 6), (4, 6)]


@pytest.mark.parametrize("sizes, pairs, widths, reads, active", [
    ([8, 8, 2, 2, 2, 2, 10], GET_STRUCTURE_PAIRS, [16, 6, 12, 10],
     [[0], [1], [1, 2], [3]], [784 * 16, 4 * 8 * 2, 8 * 2 + 8 * 10 + 2 * 2 * 2 + 2 * 2 * 10, 12 * 10]),
    ([50, 50, 30, 30, 30, 20, 20], DEV_PAIRS, [100, 90, 40, 10],
     [[0], [1], [2], [3]], [784 * 100, 4 * 50 * 30, 4 * 30 * 20, 40 * 10]),
], ids=["test_get_structure", "test_dev"])
def test_dan_block_structures(sizes, pairs, widths, reads, active):
    """upstream tests/sparse/test_MaskedDeepDAN.py::test_get_structure and ::test_dev:
    layers and skip connections of a DAN on blocks of fully joined nodes, and its structure."""
    structure = block_structure(sizes, pairs)
    model = graphs.from_networkx(structure, 784, 10)
    assert [layer.out_features for layer in model.layers] == widths
    assert model.reads == reads
    assert [int(m.sum()) for m in get_masks(model).values()] == active
    assert set(hidden_structure(model).edges) == set(structure.edges)


def test_dan_tuple_input_size():
    """upstream tests/sparse/test_MaskedDeepDAN.py::test_rand_structure_with_layer_norm_success
    (without layer norm): MaskedDeepDAN((28, 28), 10, structure) flattens the input shape."""
    structure = structure_from(nx.newman_watts_strogatz_graph(100, 4, 0.5, seed=0))
    model = graphs.from_networkx(structure, (28, 28), 10)
    assert (model.input_size, model.input_shape) == (784, (28, 28))
    assert model.layers[0].in_features == 784
    assert model(torch.rand(10, 28, 28)).shape == (10, 10)
    assert model(torch.rand(10, 784)).shape == (10, 10)
    extracted = hidden_structure(model)
    assert (extracted.number_of_nodes(), extracted.number_of_edges()) == (100, 292)
    assert set(extracted.edges) == set(structure.edges)
    sized = graphs.from_networkx(structure, torch.Size([1, 28, 28]), 10)
    assert (sized.input_size, sized.input_shape) == (784, (1, 28, 28))


def test_dan_trains_on_tuple_shaped_input():
    """upstream tests/sparse/test_MaskedDeepDAN.py::test_feed_success (input shape (105, 13),
    Adam, cross-entropy); one fixed batch for 30 steps instead of 100 random batches."""
    torch.manual_seed(0)
    model = graphs.from_networkx(structure_from(nx.watts_strogatz_graph(200, 3, 0.8, seed=0)), (105, 13), 10)
    x, y = torch.randn(7, 105, 13), torch.randint(10, (7,))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert model(x).shape == (7, 10)
    assert losses[-1] < 0.5 * losses[0]


def test_ffn_structure_layer_sizes():
    """upstream tests/sparse/test_MaskedDeepFFN.py::test_generate_large_structure and
    tests/large/test_GraphTransform.py::test_generate_structure_on_large_maskeddeepffn_success,
    layer widths / 10 ([1000, 500, 500, 200, 100] only makes the test slow)."""
    layers = [100, 50, 50, 20, 10]
    g = graphs.to_networkx(FC((784, *layers, 10)))
    stats = graphs.layer_stats(g)
    assert len(stats) == 2 + len(layers)
    assert stats["units"].tolist() == [784, *layers, 10]
    assert stats["edges_in"].tolist() == [0, 78_400, 5000, 2500, 1000, 200, 100]


def test_ffn_structure_to_dan_with_random_skips():
    """upstream tests/test_FFN2DAN.py::test_transfer_random_reconnected_structure, without
    training: an FFN's hidden structure plus random edges between every pair of layers
    becomes a DAN with skip connections on (1, 28, 28) inputs."""
    rng = np.random.default_rng(0)
    g = graphs.to_networkx(FC((784, 100, 50, 20, 10)), include_input=False)
    g.remove_nodes_from([n for n, d in g.nodes(data=True) if d["role"] == "output"])
    by_layer = [[n for n, d in g.nodes(data=True) if d["layer"] == k] for k in (1, 2, 3)]
    for a, b in itertools.combinations(range(3), 2):
        sources = rng.choice(len(by_layer[a]), rng.integers(1, len(by_layer[a]) + 1), replace=False)
        targets = rng.choice(len(by_layer[b]), rng.integers(1, len(by_layer[b]) + 1), replace=False)
        g.add_edges_from((by_layer[a][s], by_layer[b][t]) for s in sources for t in targets)
    model = graphs.from_networkx(g, (1, 28, 28), 10)
    assert [layer.out_features for layer in model.layers] == [100, 50, 20, 10]
    assert model.reads == [[0], [1], [1, 2], [3]]
    assert set(hidden_structure(model).edges) == set(g.edges)
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
