"""utils.toolkits.graphs: model <-> networkx graph, DAG nets (deepstruct-like), graph statistics."""
import gzip
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import torch

from models.fc import FC, fc
from models.masks import density, get_masks, mask_of, prunable_layers, set_masks
from models.resnet import resnet20
from utils.toolkits import graphs

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"



def random_masks(model, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(layer.weight.shape, generator=g) < d for n, layer in prunable_layers(model).items()}


def masked_fc(d=0.1, seed=0, **kw):
    torch.manual_seed(seed)
    model = fc(**kw)
    set_masks(model, random_masks(model, d, seed))
    return model


# ------------------------------------------------------------------ model -> graph

def test_fc_graph_nodes_edges_and_weights():
    model = masked_fc(0.05)
    g = graphs.to_networkx(model)
    assert g.number_of_nodes() == 784 + 5 * 100 + 10
    masks = get_masks(model)
    assert g.number_of_edges() == sum(int(m.sum()) for m in masks.values())
    assert g.nodes["input", 3] == dict(layer=0, name="input", unit=3, role="input", kind="input")
    node = g.nodes["layers.5", 7]
    assert (node["layer"], node["role"], node["kind"]) == (6, "output", "linear") and "bias" not in node
    assert g.nodes["layers.2", 0]["bias"] == pytest.approx(model.layers[2].bias[0].item())
    w = model.layers[1].weight.detach()
    for j, i in masks["layers.1"].nonzero()[:20].tolist():
        e = g.edges[("layers.0", i), ("layers.1", j)]
        assert e["count"] == 1 and e["weight"] == pytest.approx(float(w[j, i]))
    # only masks count: an active entry whose value is 0 is still an edge
    with torch.no_grad():
        j, i = masks["layers.3"].nonzero()[0].tolist()
        model.layers[3].parametrizations.weight.original[j, i] = 0.0
    assert graphs.to_networkx(model).has_edge(("layers.2", i), ("layers.3", j))
    assert graphs.to_networkx(model, include_input=False).number_of_nodes() == 510


def test_fc_round_trip_identical_masks_and_outputs():
    for d, kw in ((0.02, {}), (0.2, {"hidden_bias": False}), (0.5, {"output_bias": True})):
        model = masked_fc(d, seed=3, **kw)
        rebuilt = graphs.layered_from_networkx(graphs.to_networkx(model))
        assert isinstance(rebuilt, FC)
        a, b = get_masks(model), get_masks(rebuilt)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert [layer.bias is None for layer in rebuilt.layers] == [layer.bias is None for layer in model.layers]
        x = torch.randn(16, 1, 28, 28)
        with torch.no_grad():
            assert torch.allclose(model(x), rebuilt(x), atol=1e-6, rtol=0)


def test_fc_graph_to_dagnet_matches_fc():
    model = masked_fc(0.1, seed=1)
    g = graphs.to_networkx(model)
    net = graphs.from_networkx(g, 784, 10, inputs="sources", outputs="sinks", layer_attr="layer")
    assert [tuple(m.shape) for m in get_masks(net).values()] == [tuple(m.shape) for m in get_masks(model).values()]
    assert all(torch.equal(a, b) for a, b in zip(get_masks(net).values(), get_masks(model).values()))
    assert density(net) == pytest.approx(density(model))
    x = torch.randn(8, 784)
    with torch.no_grad():
        assert torch.allclose(net(x), model(x), atol=1e-6, rtol=0)


def _mapped_edges(net):
    """Edges of to_networkx(net) renamed to the nodes of the graph the net was built from."""
    name = {("input", i): n for i, n in enumerate(net.input_nodes)}
    for k, nodes in enumerate(net.layer_nodes):
        name.update({(f"layers.{k}", j): n for j, n in enumerate(nodes)})
    return {(name[u], name[v]) for u, v in graphs.to_networkx(net).edges}


def test_dag_with_skip_connections_round_trip():
    g = nx.DiGraph([("a", "c"), ("b", "c"), ("c", "d"), ("a", "d"), ("d", "e"), ("b", "e"),
                    ("c", "f"), ("a", "f")])
    net = graphs.from_networkx(g, 2, 2, inputs="sources", outputs="sinks")
    assert net.input_nodes == ["a", "b"] and sorted(net.layer_nodes[-1]) == ["e", "f"]
    assert net.reads == [[0], [0, 1], [0, 1, 2]]  # skip connections read earlier blocks
    assert _mapped_edges(net) == set(g.edges)      # graph -> model -> graph
    # one input only reaches one output when the graph says so
    g2 = nx.DiGraph([("a", "c"), ("b", "d"), ("c", "e"), ("d", "f")])
    net2 = graphs.from_networkx(g2, 2, 2, inputs="sources", outputs="sinks")
    with torch.no_grad():
        torch.nn.init.uniform_(net2.layers[0].bias, 0.5, 1.0)  # keep ReLUs alive
    x = torch.randn(4, 2, requires_grad=True)
    net2(x)[:, net2.layer_nodes[-1].index("e")].sum().backward()
    assert x.grad[:, 1].abs().sum() == 0


def test_from_networkx_projection_rules_and_errors():
    g = graphs.layered_dag(nx.balanced_tree(2, 3), source=0)
    net = graphs.from_networkx(g, 784, 10)
    assert [layer.out_features for layer in net.layers] == [1, 2, 4, 8, 10]
    masks = get_masks(net)
    assert masks["layers.0"].all()                     # input -> the source (root), full
    assert masks["layers.4"].all()                     # the 8 leaves (sinks) -> 10 outputs
    assert int(masks["layers.2"].sum()) == 4           # tree edges only
    allnet = graphs.from_networkx(g, 784, 10, outputs="all")
    assert allnet.layers[-1].in_features == 15 and get_masks(allnet)["layers.4"].all()
    with pytest.raises(ValueError):
        graphs.from_networkx(g, 5, 10, inputs="sources")   # one source, not five
    with pytest.raises(ValueError):
        graphs.from_networkx(nx.DiGraph([(0, 1), (1, 0)]), 1, 1)
    with pytest.raises(ValueError):
        graphs.from_networkx(nx.balanced_tree(2, 2), 1, 1)  # undirected


def test_layered_dag_generators():
    cases = [nx.balanced_tree(3, 3), nx.grid_2d_graph(5, 6), nx.watts_strogatz_graph(40, 4, 0.2, seed=1)]
    for und in cases:
        for order in ("bfs", "node"):
            for reverse in (False, True):
                dag = graphs.layered_dag(und, order=order, reverse=reverse)
                assert nx.is_directed_acyclic_graph(dag)
                assert dag.number_of_edges() == und.number_of_edges()
                assert nx.is_isomorphic(dag.to_undirected(), und)
                net = graphs.from_networkx(dag, 12, 3)
                assert net(torch.randn(2, 12)).shape == (2, 3)
    tree = graphs.layered_dag(nx.balanced_tree(2, 4), source=0)
    layers = graphs.node_layers(tree)
    depth = nx.shortest_path_length(nx.balanced_tree(2, 4), 0)
    assert layers == depth
    rev = graphs.layered_dag(nx.balanced_tree(2, 4), source=0, reverse=True)
    assert [n for n in rev if rev.out_degree(n) == 0] == [0]


# ------------------------------------------------------------------ conv nets

def test_resnet_channel_graph_follows_residuals():
    torch.manual_seed(0)
    model = resnet20()
    set_masks(model, random_masks(model, 0.1))
    g = graphs.to_networkx(model)
    layers = prunable_layers(model)
    assert g.number_of_nodes() == 3 + sum(mask_of(m).shape[0] for m in layers.values())
    m1 = mask_of(layers["conv1"])
    for c in range(3):
        for j in range(16):
            has = g.has_edge(("input", c), ("conv1", j))
            assert has == bool(m1[j, c].any())
            if has:
                assert g.edges[("input", c), ("conv1", j)]["count"] == int(m1[j, c].sum())
    # blocks.1.conv1 reads relu(bn(blocks.0.conv2) + identity(conv1 output))
    mk = mask_of(layers["blocks.1.conv1"])
    for src in ("blocks.0.conv2", "conv1"):
        for c in range(16):
            for j in range(16):
                assert g.has_edge((src, c), ("blocks.1.conv1", j)) == bool(mk[j, c].any())
    fc_src = {u[0] for u, v in g.in_edges([("fc", j) for j in range(10)])}
    assert fc_src == {"blocks.6.conv2", "blocks.7.conv2", "blocks.8.conv2", "blocks.6.shortcut.0"}
    assert all(g.nodes["fc", j]["role"] == "output" for j in range(10))
    assert graphs.count_paths(g) > 0


def test_option_a_shortcut_channel_offset():
    torch.manual_seed(0)
    model = resnet20(shortcut="A")
    set_masks(model, random_masks(model, 0.2, seed=2))
    g = graphs.to_networkx(model)
    mk = mask_of(prunable_layers(model)["blocks.4.conv1"])  # input = b3 out + padded b2 out
    for c in range(32):
        for j in range(32):
            expect = bool(mk[j, c].any())
            assert g.has_edge(("blocks.3.conv2", c), ("blocks.4.conv1", j)) == expect
            if 8 <= c < 24:
                assert g.has_edge(("blocks.2.conv2", c - 8), ("blocks.4.conv1", j)) == expect
    assert not any(u[0] == "blocks.2.conv2" and u[1] >= 16 for u in g.nodes)


# ------------------------------------------------------------------ statistics

def tiny_fc(masks):
    model = FC((3, 2, 2), hidden_bias=True)
    set_masks(model, masks)
    return model


def test_paths_dead_units_components_degrees():
    model = FC((4, 3, 3, 2))
    assert graphs.count_paths(model) == 4 * 3 * 3 * 2
    assert graphs.count_paths(model, log10=True) == pytest.approx(np.log10(72))
    big = fc()  # dense thesis FC: 784 * 100^5 * 10 paths, exact
    assert graphs.count_paths(graphs.to_networkx(big)) == 784 * 100 ** 5 * 10

    # unit 1 of layer 1 has no input (but feeds an output); input 2 has no weights
    masks = {"layers.0": torch.tensor([[True, True, False], [False, False, False]]),
             "layers.1": torch.tensor([[True, True], [True, False]])}
    g = graphs.to_networkx(tiny_fc(masks))
    dead = graphs.dead_units(g)
    assert dead["no_input_path"] == {("layers.0", 1)}
    assert dead["no_output_path"] == {("input", 2)}
    assert dead["dead"] == {("layers.0", 1), ("input", 2)}
    assert graphs.count_paths(g) == 4
    stats = graphs.layer_stats(g)
    assert stats["units"].tolist() == [3, 2, 2]
    assert stats["zero_in"].tolist() == [3, 1, 0]
    assert stats["dead"].tolist() == [1, 1, 0]
    comp = graphs.components(g)
    assert comp["n_components"] == 2 and comp["n_isolated"] == 1 and comp["sizes"] == [6, 1]
    hist = graphs.degree_distribution(g, "in")
    assert hist[1].tolist() == [1, 0, 1] and hist[2].tolist() == [0, 1, 1]
    assert graphs.degree_distribution(g, "out", layer=0)[0].tolist() == [1, 2]

    model = masked_fc(0.05, seed=4)
    s = graphs.graph_stats(model)
    assert s["edges"] == sum(int(m.sum()) for m in get_masks(model).values())
    assert s["layers"]["edges_in"].sum() == s["edges"] and s["hidden"] == 500
    assert s["log10_paths"] == pytest.approx(np.log10(float(s["paths"])))


# ------------------------------------------------------------------ a tree net trains

def _read_idx(path):
    raw = gzip.open(path).read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _mnist_like(n=400):
    try:
        x = _read_idx(MNIST / "train-images-idx3-ubyte.gz")[:n].astype(np.float32) / 255
        y = _read_idx(MNIST / "train-labels-idx1-ubyte.gz")[:n].astype(np.int64)
        return torch.from_numpy((x - 0.1307) / 0.3081), torch.from_numpy(y)
    except OSError:  # synthetic stand-in: 10 noisy prototypes
        g = torch.Generator().manual_seed(0)
        protos = torch.randn(10, 28, 28, generator=g)
        y = torch.randint(0, 10, (n,), generator=g)
        return protos[y] + 0.8 * torch.randn(n, 28, 28, generator=g), y


def test_balanced_tree_net_trains_on_mnist_like_data():
    torch.manual_seed(0)
    x, y = _mnist_like(400)
    dag = graphs.layered_dag(nx.balanced_tree(2, 5), source=0, reverse=True)  # 32 leaves -> root
    net = graphs.from_networkx(dag, 784, 10, outputs="all")
    assert [li.out_features for li in net.layers] == [32, 16, 8, 4, 2, 1, 10]
    masks_before = get_masks(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    loss_fn = torch.nn.functional.cross_entropy
    with torch.no_grad():
        loss0 = loss_fn(net(x), y).item()
    for _ in range(8):
        for b in torch.randperm(len(x)).split(50):
            opt.zero_grad()
            loss_fn(net(x[b]), y[b]).backward()
            opt.step()
    with torch.no_grad():
        out = net(x)
    assert loss_fn(out, y).item() < 0.6 * loss0
    assert (out.argmax(1) == y).float().mean() > 0.5     # chance is 0.1
    after = get_masks(net)
    assert all(torch.equal(masks_before[k], after[k]) for k in after)
    for name, layer in prunable_layers(net).items():     # pruned weights stay exactly zero
        assert (layer.weight.detach()[~after[name]] == 0).all()


def test_graph_of_sparse_model_equals_graph_of_masked_model():
    from torch import nn

    from utils.toolkits.sparse import convert_model
    model = masked_fc(0.05, seed=9)
    dense_g = graphs.to_networkx(model)
    for target in ("coo", "csr"):
        g = graphs.to_networkx(convert_model(model, nn.Linear, target))
        assert set(g.edges) == set(dense_g.edges)
        e = next(iter(dense_g.edges))
        assert g.edges[e]["weight"] == pytest.approx(dense_g.edges[e]["weight"])
    torch.manual_seed(0)
    res = resnet20()
    set_masks(res, random_masks(res, 0.1, seed=3))
    a = graphs.to_networkx(res)
    b = graphs.to_networkx(convert_model(res, (nn.Linear, nn.Conv2d), "csr"))
    assert set(a.edges) == set(b.edges) and set(a.nodes) == set(b.nodes)
