"""utils.figures.graphs (layered drawing, degrees, DNW gap), utils.toolkits.inference (dense vs CSR table) and
utils.toolkits.networks (WS net, training comparison): tiny models, seconds."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from models.fc import FC  # noqa: E402
from models.masks import get_masks, mask_of, prunable_layers, set_masks  # noqa: E402
from utils import figures as F  # noqa: E402
from utils.figures import graphs as G  # noqa: E402
from utils.figures.style import save  # noqa: E402
from utils.toolkits import inference, networks  # noqa: E402
from utils.toolkits.graphs import DAGNet, degree_frame, to_networkx, zero_degree_table  # noqa: E402

SIZES = (16, 8, 8, 4)


@pytest.fixture(autouse=True)
def _one_thread_and_close():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
    plt.close("all")


def tiny(d=0.3, seed=0):
    """FC 16-8-8-4 with random masks; input unit 0 is cut off."""
    torch.manual_seed(seed)
    model = FC(SIZES)
    g = torch.Generator().manual_seed(seed)
    masks = {n: torch.rand(layer.weight.shape, generator=g) < d for n, layer in prunable_layers(model).items()}
    masks["layers.0"][:, 0] = False
    masks["layers.0"][:, 1] = True
    set_masks(model, masks)
    return model.eval()


def test_layered_layout_inputs():
    g = to_networkx(tiny())
    connected = G.layered_layout(g, "connected")
    assert ("input", 0) not in connected and ("input", 1) in connected
    assert set(G.layered_layout(g, "all")) == set(g)
    assert not any(n[0] == "input" for n in G.layered_layout(g, "none"))
    for n, (x, y) in connected.items():
        assert x == g.nodes[n]["layer"] and 0 < y < 1
    with pytest.raises(ValueError):
        G.layered_layout(g, "some")


def test_graph_figure_saves(tmp_path):
    fig = G.graph_figure(to_networkx(tiny()), title="tiny", image_shape=(4, 4), figsize=(8, 4))
    paths = save(fig, "graphs_tiny", tmp_path)
    assert all(p.stat().st_size > 0 for p in paths)


def test_degree_frame_matches_masks():
    models = {"random": tiny(0.3, 0), "synflow": tiny(0.5, 1)}
    frame = degree_frame({k: to_networkx(m) for k, m in models.items()})
    for key, model in models.items():
        for name, mask in get_masks(model).items():
            part = frame[(frame["network"] == key) & (frame["layer"] == name)]
            fan_in = part[part["side"] == "fan-in"]["degree"].to_numpy()
            fan_out = part[part["side"] == "fan-out"]["degree"].to_numpy()
            assert sorted(fan_in) == sorted(mask.sum(1).tolist())
            assert sorted(fan_out) == sorted(mask.sum(0).tolist())
    zeros = zero_degree_table(frame)
    expected = 100 * float((get_masks(models["random"])["layers.0"].sum(0) == 0).float().mean())
    assert expected >= 100 / 16 and zeros.loc["random", ("layers.0", "fan-out")] == pytest.approx(expected)
    assert list(zeros.columns[:2]) == [("layers.0", "fan-out"), ("layers.0", "fan-in")]
    fig = G.degree_plot(frame)
    layers = frame["layer"].unique()
    assert len(fig.axes) == 2 * len(layers)            # fan-out row and fan-in row, one column per layer
    plt.close(fig)


def test_inference_table_and_plot():
    models = {("random", 0.1): tiny(0.1), ("random", 0.5): tiny(0.5, 1)}
    table = inference.inference_table(models, batches=(1, 8), repeats=2, input_shape=(16,), budget_s=0.1)
    assert len(table) == 4 and (table["max_abs_diff"] < 1e-5).all()
    low = table[table["density"] == 0.1].iloc[0]
    assert low["csr_kB"] < low["dense_kB"] < low["masked_kB"]
    summary = inference.inference_summary(table)
    assert list(summary.index) == list(inference.density_bin(table["density_achieved"].unique()))
    assert "csr_ms b8" in summary.columns
    assert list(inference.density_bin([0.0199, 0.0301, 0.07, 0.2018, 1.0])) == [2, 2, 5, 20, 100]
    fig = G.memory_latency_plot(table)
    memory = fig.axes[0]
    csr = next(line for line in memory.get_lines() if line.get_label().startswith("CSR"))
    # the CSR memory curve is drawn at the two densities, in %
    assert sorted(csr.get_xdata()) == pytest.approx(sorted(100 * table["density_achieved"].unique()))
    plt.close(fig)


def test_store_builders_name_missing_runs(tmp_path, capsys):
    store = F.Store(tmp_path)
    with pytest.raises(F.MissingRuns):
        G.degree_figure(store, "fc_mnist", 0.02, 21, methods=["synflow", "dnw"])
    assert "left out, not stored: fc_mnist/synflow d2 × s21; fc_mnist/dnw d2 × s21" in capsys.readouterr().out
    assert F.make("graphs_degrees", store, tmp_path, G.degree_figure, "fc_mnist", 0.02, 21, show=False) == []
    assert "graphs_degrees" in store.skipped and "skipped" in F.report(store)


def test_gap_summary_and_plot():
    table = pd.DataFrame(dict(method=["random", "dnw"] * 2 + ["dnw"], density=[0.02, 0.02, 0.5, 0.5, 0.5],
                              seed=[21, 21, 21, 21, 42], final_top1=[80.0, 85.0, 98.0, 97.0, 99.0]))
    gaps = G.gap_summary(table, "random", "dnw")
    assert gaps.loc["2 %", "gap (pp)"] == 5.0 and gaps.loc["50 %", "dnw"] == 98.0
    text = G.gap_conclusion(gaps, "random", "DNW")
    assert "better at 1" in text and "within ±0.1 pp at 1" in text
    fig = G.accuracy_vs_density_plot(table, ["random", "dnw"])
    lines = {line.get_label(): line for line in fig.axes[0].get_lines() if not line.get_label().startswith("_")}
    dnw = next(line for label, line in lines.items() if "dnw" in label.lower())
    assert list(dnw.get_xdata()) == [2.0, 50.0] and list(dnw.get_ydata()) == [85.0, 98.0]   # mean over seeds
    plt.close(fig)


def test_sparse_init_scales_by_active_fan_in():
    model = networks.sparse_init(tiny(0.5), seed=3)
    for layer in prunable_layers(model).values():
        mask = mask_of(layer)
        w = layer.weight.detach()
        assert (w[~mask] == 0).all()
        assert (layer.bias == 0).all() if layer.bias is not None else True
    big = FC((400, 300))
    set_masks(big, {"layers.0": torch.rand(300, 400, generator=torch.Generator().manual_seed(0)) < 0.1})
    networks.sparse_init(big, seed=7)  # not the mask's generator seed: same-seed rand/randn are correlated
    w, m = big.layers[0].weight.detach(), mask_of(big.layers[0])
    var = (w ** 2).sum(1) / m.sum(1)  # per unit ≈ 2 / active fan-in
    assert float((var * m.sum(1)).mean()) == pytest.approx(2.0, rel=0.1)


def test_ws_network_and_random_fc_like():
    model, dag = networks.ws_network(30, 4, 0.2, seed=1, input_size=16, output_size=4)
    assert isinstance(model, DAGNet) and nx.is_directed_acyclic_graph(dag)
    assert dag.number_of_edges() == 60
    assert model(torch.randn(3, 16)).shape == (3, 4)
    n = networks.count_weights(model)
    summary = networks.ws_summary(model, dag)
    assert summary["nnz"].sum() == n and summary["role"].iloc[0] == "input projection"
    same, _ = networks.ws_network(30, 4, 0.2, seed=1, input_size=16, output_size=4)
    other, _ = networks.ws_network(30, 4, 0.2, seed=1, input_size=16, output_size=4, init_seed=5)
    assert torch.equal(same.layers[1].weight, model.layers[1].weight)
    assert not torch.equal(other.layers[1].weight, model.layers[1].weight)
    fc = networks.random_fc_like(100, seed=0, sizes=SIZES)
    assert networks.count_weights(fc) == pytest.approx(100, abs=1)


def test_train_compare_and_bars():
    from utils.engine.data import DATASETS, Dataset
    from utils.engine.train import TrainConfig
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 255, (64, 1, 28, 28), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (64,), generator=g)
    data = Dataset(DATASETS["mnist"], x[:48], y[:48], x[48:], y[48:])
    builders = {"ws": lambda s: networks.ws_network(20, 4, 0.2, seed=0, init_seed=s)[0],
                "fc": lambda s: networks.random_fc_like(2000, seed=s, sizes=(784, 8, 10))}
    table = networks.train_compare(builders, data, TrainConfig(epochs=1, batch_size=16), seeds=(1, 2))
    assert len(table) == 8 and set(table["init"]) == {"default", "sparse"}
    # every run scored on the 16 test images: accuracies are multiples of 1/16
    assert ((table["top1"] * 16 / 100).round(6) % 1 == 0).all()
    fig = G.accuracy_bars(table, title="t")
    heights = sorted(round(bar.get_height(), 6) for bar in fig.axes[0].patches)
    means = sorted(round(v, 6) for v in table.groupby(["network", "init"])["top1"].mean())
    assert heights == means and fig.axes[0].get_title() == "t"
    plt.close(fig)


def test_small_dataset_falls_back_to_probe(tmp_path):
    from utils.api import small_dataset
    from utils.runs import results
    images = torch.zeros(600, 1, 28, 28, dtype=torch.uint8)
    results.save_probe("mnist", images, torch.arange(600) % 10, root=tmp_path)
    data, source = small_dataset("mnist", 100, 100, data_dir=tmp_path / "no-data", probe_root=tmp_path)
    assert "probe" in source and len(data.train_y) == 500 and len(data.test_y) == 100
