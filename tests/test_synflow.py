"""SynFlow (SPEC §8.1, §12 Pruners/SynFlow)."""
import copy
import importlib

import numpy as np
import pytest
import torch

import pruners.magnitude  # noqa: F401  (registers magnitude)
from models import FC, fc, get_masks, layer_densities, mask_of, prunable_layers, raw_weight, resnet20
from pruners.base import get_method, kept_count
from pruners.random import Random
from pruners.synflow import SynFlow, synflow_flow, synflow_prune, synflow_scores
from utils.engine.seeding import generator

FC_SHAPE = (1, 28, 28)
THESIS = {"2": 10 ** -1.7, "5": 10 ** -1.3, "10": 10 ** -1.0, "20": 10 ** -0.695, "50": 10 ** -0.3}
# SPEC §8.1: thesis SynFlow FC per-layer densities (% kept, mean of seeds 21/42/63).
FC_TABLE = {
    "2": [0.5, 2.8, 4.6, 3.7, 4.9, 37.2],
    "5": [1.8, 7.5, 10.9, 10.4, 10.5, 65.8],
    "10": [3.5, 14.8, 23.0, 22.1, 23.5, 82.0],
    "20": [7.5, 32.6, 47.0, 47.0, 46.3, 92.1],
    "50": [31.6, 85.3, 85.5, 85.2, 85.0, 98.5],
}
RESNET_TABLE = {
    "2": "50.6 12.7 11.1 11.9 11.7 11.9 11.7 6.0 3.0 0.4 3.0 3.1 3.1 2.9 1.5 0.8 0.1 0.8 0.8 0.7 0.8 29.9",
    "10": "90.4 55.3 54.7 55.1 54.6 55.6 54.9 32.2 17.0 1.8 16.0 16.7 17.1 16.2 8.5 4.4 0.2 4.1 4.3 3.9 4.7 73.6",
    "50": "98.9 94.1 93.7 94.0 94.4 93.7 93.9 87.9 77.2 38.8 77.1 77.1 77.5 77.3 60.0 39.1 0.5 "
          "38.2 38.5 38.4 37.9 97.9",
}



def small_fc(seed=0, bias=False, sizes=(20, 15, 12, 8, 5)):
    torch.manual_seed(seed)
    model = FC(sizes, hidden_bias=bias, output_bias=bias)
    if bias:  # non-zero biases so they really carry flow
        with torch.no_grad():
            for layer in model.layers:
                layer.bias.uniform_(-0.5, 0.5)
    return model


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(model, snap):
    state = model.state_dict()
    assert state.keys() == snap.keys()
    for k, v in state.items():
        assert v.dtype == snap[k].dtype and torch.equal(v, snap[k]), k


def kept(model):
    return sum(int(m.sum()) for m in get_masks(model).values())


# ---------------------------------------------------------------- conservation


@pytest.mark.parametrize("partial", [False, True])
def test_bias_free_fc_every_layer_sums_to_R(partial):
    model = small_fc()
    if partial:
        Random().prune(model, 0.5, seed=1, data_shape=(20,))
    R = synflow_flow(model, (20,))
    scores = synflow_scores(model, (20,))
    assert R > 0
    for name, s in scores.items():
        assert s.dtype == torch.float64
        assert s.sum().item() == pytest.approx(R, rel=1e-10), name
        assert not s[~mask_of(prunable_layers(model)[name])].any()  # pruned weights score 0


def test_thesis_fc_bias_free_sums_to_R():
    torch.manual_seed(21)
    model = fc(hidden_bias=False)
    R = synflow_flow(model, FC_SHAPE)
    for s in synflow_scores(model, FC_SHAPE).values():
        assert s.sum().item() == pytest.approx(R, rel=1e-9)


def test_biased_fc_layer_sums_at_most_R():
    model = small_fc(bias=True)
    R = synflow_flow(model, (20,))
    sums = [s.sum().item() for s in synflow_scores(model, (20,)).values()]
    assert all(x <= R * (1 + 1e-12) for x in sums)
    assert min(sums) < R * (1 - 1e-3)  # the biases really take part of the flow


def test_resnet_first_conv_sums_to_R_in_eval_mode():
    torch.manual_seed(21)
    net = resnet20()
    net.train()  # the scoring copy must still use eval-mode BN
    R = synflow_flow(net, (3, 32, 32))
    assert 1e24 < R < 1e26  # SPEC §8.1: ≈1.4e25 at init (option B)
    scores = synflow_scores(net, (3, 32, 32))
    assert list(scores) == list(prunable_layers(net)) and len(scores) == 22
    assert scores["conv1"].sum().item() == pytest.approx(R, rel=1e-9)
    assert scores["fc"].sum().item() == pytest.approx(R, rel=1e-9)  # fc bias is 0 at init
    assert net.training


@pytest.mark.parametrize("a,rtol", [(8.0, 1e-12), (3.7, 1e-6)])
def test_rescaling_invariance(a, rtol):
    # a = 8 is exact in float32; 3.7 is not, so the float32 weights carry ~1e-7 rounding.
    model = small_fc(seed=3)
    before = synflow_scores(model, (20,))
    with torch.no_grad():
        raw_weight(model.layers[1]).mul_(a)
        raw_weight(model.layers[2]).div_(a)
    after = synflow_scores(model, (20,))
    for name in before:
        torch.testing.assert_close(after[name], before[name], rtol=rtol, atol=0)


# ---------------------------------------------------------------- no data, live model untouched


def test_scores_data_independent_and_live_model_bit_identical():
    torch.manual_seed(21)
    net = resnet20()
    net.train()
    masks_before = {n: mask_of(m) for n, m in prunable_layers(net).items()}
    snap = snapshot(net)
    torch.manual_seed(1)
    a = synflow_scores(net, (3, 32, 32))
    torch.manual_seed(2)
    net.eval()
    with torch.no_grad():
        net(torch.randn(4, 3, 32, 32))  # eval forward on data changes nothing
    net.train()
    b = synflow_scores(net, (3, 32, 32))
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert_same_state(net, snap)
    assert next(net.parameters()).dtype == torch.float32 and net.training
    # cached mask references stay valid (the live model was never cast)
    assert all(mask_of(m) is masks_before[n] for n, m in prunable_layers(net).items())


def test_prune_changes_only_masks_and_pruned_weights():
    torch.manual_seed(21)
    net = resnet20()
    snap = snapshot(net)
    masks_before = {n: mask_of(m) for n, m in prunable_layers(net).items()}
    rng = torch.get_rng_state()
    synflow_prune(net, 0.1, data_shape=(3, 32, 32), levels=3, iterations=1, generator=generator(21, "prune"))
    assert torch.equal(torch.get_rng_state(), rng)  # same init stream as random pruning
    state = net.state_dict()
    for k, v in state.items():
        if k.endswith(".mask"):
            continue
        if k.endswith(".original"):
            mask = state[k.replace("original", "0.mask")]
            assert torch.equal(v[mask], snap[k][mask]) and not v[~mask].any(), k
        else:
            assert torch.equal(v, snap[k]), k
    assert all(mask_of(m) is masks_before[n] for n, m in prunable_layers(net).items())  # updated in place
    assert kept(net) == kept_count(0.1, 270_896)


# ---------------------------------------------------------------- exact counts, ties, no revival


@pytest.mark.parametrize("d", [0.5, 0.2, 0.1, 0.05, 0.02, 0.001])
def test_exact_count_fc(d):
    torch.manual_seed(42)
    model = fc()
    log = synflow_prune(model, d, data_shape=FC_SHAPE, generator=generator(42, "prune"))
    assert kept(model) == round(d * 119_400)
    assert len(log) == 10 and log[-1]["target"] == pytest.approx(d)
    steps = [row["density"] for row in log]
    assert all(a >= b for a, b in zip(steps, steps[1:]))
    assert all(abs(row["density"] * 119_400 - kept_count(row["target"], 119_400)) < 1e-6 for row in log)


@pytest.mark.parametrize("d", [0.5, 0.2, 0.1, 0.05, 0.02, 0.001])
@pytest.mark.parametrize("value", [0.05, 0.0])
def test_exact_count_with_all_scores_tied(d, value):
    model = small_fc(sizes=(30, 30, 30, 30))
    with torch.no_grad():
        for layer in model.layers:
            raw_weight(layer).fill_(value)  # every score within a layer ties (all zero for value 0)
    n = sum(raw_weight(m).numel() for m in prunable_layers(model).values())
    synflow_prune(model, d, data_shape=(30,), levels=2, iterations=2, generator=generator(1, "prune"))
    assert kept(model) == round(d * n)


def test_no_revival_from_an_existing_mask():
    torch.manual_seed(63)
    model = fc()
    Random().prune(model, 0.3, seed=63, data_shape=FC_SHAPE)
    before = get_masks(model)
    synflow_prune(model, 0.05, data_shape=FC_SHAPE, levels=5, iterations=2, generator=generator(63, "prune"))
    after = get_masks(model)
    assert kept(model) == kept_count(0.05, 119_400)
    assert all(not (after[n] & ~before[n]).any() for n in after)
    # a target above the current density changes nothing
    synflow_prune(model, 0.2, data_shape=FC_SHAPE, levels=2, generator=generator(63, "prune"))
    assert all(torch.equal(get_masks(model)[n], after[n]) for n in after)


def test_seeded_and_reproducible():
    def run(seed):
        torch.manual_seed(21)
        model = fc()
        synflow_prune(model, 0.02, data_shape=FC_SHAPE, generator=generator(seed, "prune"))
        return get_masks(model)
    a, b = run(1), run(1)
    assert all(torch.equal(a[n], b[n]) for n in a)


# ---------------------------------------------------------------- layer collapse


def layer_counts(model):
    return [int(m.sum()) for m in get_masks(model).values()]


def test_bias_free_fc_no_collapse_at_0_1_percent_while_magnitude_collapses():
    torch.manual_seed(21)
    model = fc(hidden_bias=False)
    mag = copy.deepcopy(model)
    synflow_prune(model, 0.001, data_shape=FC_SHAPE, levels=1, iterations=100,
                  generator=generator(21, "prune"))
    assert kept(model) == 119
    assert min(layer_counts(model)) >= 1
    assert synflow_flow(model, FC_SHAPE) > 0  # an input-output path remains
    get_method("magnitude").prune(mag, 0.001, seed=21, data_shape=FC_SHAPE)
    assert kept(mag) == 119
    assert layer_counts(mag)[0] == 0  # layer 1's init bound 1/√784 < the hidden layers' 1/√100
    assert synflow_flow(mag, FC_SHAPE) == 0


def test_bias_free_fc_thesis_schedule_is_not_enough_at_0_1_percent():
    """Pinned: 10 levels × 1 iteration can still disconnect a bias-free FC at 0.1% (seed 63
    empties layer 1); the no-collapse property needs many iterations (paper: 100)."""
    torch.manual_seed(63)
    model = fc(hidden_bias=False)
    synflow_prune(model, 0.001, data_shape=FC_SHAPE, generator=generator(63, "prune"))
    assert layer_counts(model)[0] == 0 and synflow_flow(model, FC_SHAPE) == 0


@pytest.mark.parametrize("levels,iterations", [(10, 1), (1, 100)])
def test_biased_fc_collapse_pinned(levels, iterations):
    """SPEC §8.1 pitfall, reproduced: with the default hidden biases the flow through the
    biases wins and SynFlow at 0.1% empties FC layers 1–3 (we also see layer 4 empty for
    most seeds); at 0.5% no layer is empty."""
    torch.manual_seed(21)
    model = fc()
    at_05 = copy.deepcopy(model)
    synflow_prune(model, 0.001, data_shape=FC_SHAPE, levels=levels, iterations=iterations,
                  generator=generator(21, "prune"))
    assert layer_counts(model)[:3] == [0, 0, 0]
    synflow_prune(at_05, 0.005, data_shape=FC_SHAPE, levels=levels, iterations=iterations,
                  generator=generator(21, "prune"))
    assert min(layer_counts(at_05)) >= 1


# ---------------------------------------------------------------- thesis reference densities


def thesis_init(seed, n_train):
    """The thesis's RNG state at model construction: Synaptic-Flow's ``load.dataloader`` draws
    ``torch.randperm(len(train_set))`` for the 100-image prune subset after ``manual_seed``."""
    torch.manual_seed(seed)
    torch.randperm(n_train)


def fc_table_means(label, init):
    got = []
    for seed in (21, 42, 63):
        init(seed)
        model = fc()
        SynFlow().prune(model, THESIS[label], seed=seed, data_shape=FC_SHAPE)
        got.append([100 * v for v in layer_densities(model).values()])
    return np.mean(got, axis=0)


@pytest.mark.parametrize("label", list(FC_TABLE))
def test_fc_per_layer_densities_match_thesis(label):
    """With the thesis's init the §8.1 table is reproduced to its rounding (max |Δ| 0.17 pp)."""
    mean = fc_table_means(label, lambda seed: thesis_init(seed, 60_000))
    diff = np.abs(mean - np.array(FC_TABLE[label]))
    assert diff.max() <= 2.0, np.round(mean, 2)
    assert diff.max() <= 0.25, np.round(mean, 2)


@pytest.mark.parametrize("label", list(FC_TABLE))
def test_fc_per_layer_densities_plain_seed_init(label):
    """With plain ``torch.manual_seed(seed)`` (other weights) the means differ by seed noise:
    max |Δ| is 2.13 pp (2%, output layer 39.3 vs 37.2), ≤ 1.4 pp elsewhere."""
    mean = fc_table_means(label, torch.manual_seed)
    assert np.abs(mean - np.array(FC_TABLE[label])).max() <= 2.5, np.round(mean, 2)


def thesis_resnet_layer_densities(store, label, seed):
    """Per-layer densities (percent) of the thesis's own SynFlow ResNet-20 network."""
    from utils.runs import results
    run = results.load_run("thesis_resnet20_cifar10", "synflow", int(label) / 100, seed, root=store)
    return np.array([100 * v for v in layer_densities(run.model).values()])


@pytest.mark.parametrize("label", list(RESNET_TABLE))
def test_thesis_resnet_networks_average_to_the_published_table(thesis_store, label):
    """The §8.1 ResNet-20 table is the mean of the thesis's three SynFlow networks (to its rounding),
    so matching those networks seed by seed (below) reproduces the table."""
    mean = np.mean([thesis_resnet_layer_densities(thesis_store, label, seed) for seed in (21, 42, 63)], axis=0)
    ref = np.array([float(x) for x in RESNET_TABLE[label].split()])
    assert np.abs(mean - ref).max() <= 0.1, np.round(mean, 2)


@pytest.mark.slow
@pytest.mark.parametrize(("label", "seed"), [("2", 21), ("10", 42), ("50", 63)])
def test_resnet_per_layer_densities_match_the_thesis_network_of_the_same_seed(thesis_store, label, seed):
    """Thesis schedule 10×100 on ResNet-20 option B with the thesis init: every layer's density is
    the thesis's own network's within 1.5 pp (measured max 0.91 / 0.32 / 0.23 pp at 2 / 10 / 50 %;
    score ties and float64 summation order move a few weights).  One seed per density, each ≈1 min
    on one core: a single seed sits up to 3.1 pp from the table's three-seed mean, so it is
    compared with its own thesis network, not with the table."""
    thesis_init(seed, 50_000)
    net = resnet20()
    SynFlow(levels=10, iterations=100).prune(net, THESIS[label], seed=seed, data_shape=(3, 32, 32))
    ours = np.array([100 * v for v in layer_densities(net).values()])
    assert np.abs(ours - thesis_resnet_layer_densities(thesis_store, label, seed)).max() <= 1.5, np.round(ours, 2)
    if label == "2":
        counts = layer_counts(net)
        assert counts[9] <= 10 and counts[16] <= 5  # the 1x1 shortcuts of blocks.3 / blocks.6 nearly vanish


# ---------------------------------------------------------------- Method interface


def test_method_registered_with_options_and_log():
    method = get_method("synflow", levels=2, iterations=3)
    assert isinstance(method, SynFlow) and importlib.import_module("pruners.synflow").SynFlow is SynFlow
    torch.manual_seed(21)
    model = fc()
    method.prune(model, 0.1, seed=21, data_shape=FC_SHAPE)
    assert kept(model) == 11_940
    assert len(method.log) == 6
    assert [(r["level"], r["iteration"]) for r in method.log] == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]
    assert method.log[0]["flow"] > method.log[-1]["flow"] > 0
    assert set(method.log[-1]["layers"]) == set(prunable_layers(model))
    from utils.errors import UserError
    with pytest.raises(UserError):
        get_method("synflow", levels=0)


def test_run_trains_and_reports(tiny_mnist):
    torch.manual_seed(21)
    model = fc()
    from utils.engine.train import TrainConfig
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.1)
    res = SynFlow().run(model, tiny_mnist, 0.1, cfg, seed=21, progress=False)["synflow"]
    assert len(res.history) == 2 and res.history["density"].iloc[-1] == pytest.approx(11_940 / 119_400)
    assert len(res.info["synflow_log"]) == 10
    assert all(torch.equal(get_masks(res.init_model)[n], get_masks(res.model)[n]) for n in get_masks(model))


@pytest.fixture
def tiny_mnist():
    from utils.engine.data import DATASETS, Dataset
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (256, 1, 28, 28), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (256,), generator=g)
    return Dataset(DATASETS["mnist"], x, y, x[:64], y[:64])
