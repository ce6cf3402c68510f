"""Magnitude pruning at init, prune_by_magnitude on trained nets, and IMP (SPEC §6, §8.2)."""
import copy
import importlib

import pytest
import torch

from models import FC, fc, get_masks, mask_of, prunable_layers, raw_weight
from pruners.base import get_method, kept_count
from pruners.magnitude import IMP, Magnitude, imp_schedule, prune_by_magnitude
from pruners.random import Random
from utils.engine.data import DATASETS, Dataset
from utils.engine.seeding import generator
from utils.engine.train import TrainConfig
from utils.errors import UserError

FC_SHAPE = (1, 28, 28)



@pytest.fixture
def tiny_mnist():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (128, 1, 28, 28), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (128,), generator=g)
    return Dataset(DATASETS["mnist"], x, y, x[:32], y[:32])


def kept(model):
    return sum(int(m.sum()) for m in get_masks(model).values())


def small_net(seed=0):
    torch.manual_seed(seed)
    return FC((784, 32, 16, 10))


def test_registered():
    assert type(get_method("magnitude")) is Magnitude and get_method("magnitude", scope="layer").scope == "layer"
    imp = get_method("imp", rate=0.5)
    assert type(imp) is IMP and (imp.rate, imp.rounds, imp.rewind_iteration) == (0.5, None, 0)
    assert importlib.import_module("pruners.magnitude").IMP is IMP


@pytest.mark.parametrize("d", [0.5, 0.2, 0.1, 0.05, 0.02, 0.001])
def test_magnitude_exact_count_keeps_largest(d):
    torch.manual_seed(21)
    model = fc()
    before = {n: raw_weight(m).detach().clone() for n, m in prunable_layers(model).items()}
    Magnitude().prune(model, d, seed=21, data_shape=FC_SHAPE)
    masks = get_masks(model)
    assert kept(model) == round(d * 119_400)
    kept_abs = torch.cat([before[n][masks[n]].abs() for n in masks])
    dropped_abs = torch.cat([before[n][~masks[n]].abs() for n in masks])
    assert kept_abs.min() >= dropped_abs.max()


@pytest.mark.parametrize("d", [0.5, 0.1, 0.02, 0.001])
def test_magnitude_exact_count_with_all_ties(d):
    model = small_net()
    with torch.no_grad():
        for layer in prunable_layers(model).values():
            raw_weight(layer).fill_(0.1)
    n = sum(raw_weight(m).numel() for m in prunable_layers(model).values())
    Magnitude().prune(model, d, seed=1, data_shape=FC_SHAPE)
    assert kept(model) == round(d * n)


def test_magnitude_no_revival():
    torch.manual_seed(42)
    model = fc()
    Random().prune(model, 0.2, seed=42, data_shape=FC_SHAPE)
    before = get_masks(model)
    Magnitude().prune(model, 0.05, seed=42, data_shape=FC_SHAPE)
    after = get_masks(model)
    assert kept(model) == kept_count(0.05, 119_400)
    assert all(not (after[n] & ~before[n]).any() for n in after)


def test_magnitude_collapses_fc_first_layer_at_high_compression():
    torch.manual_seed(21)
    model = fc()
    Magnitude().prune(model, 0.001, seed=21, data_shape=FC_SHAPE)
    assert int(get_masks(model)["layers.0"].sum()) == 0


def test_prune_by_magnitude_percent_of_remaining():
    model = small_net()
    n = kept(model)
    counts = [n]
    for _ in range(3):
        before = get_masks(model)
        removed = prune_by_magnitude(model, percent=20, generator=generator(0, "prune"))
        expected = int(round(0.2 * counts[-1]))
        assert removed == expected
        counts.append(counts[-1] - expected)
        assert kept(model) == counts[-1]
        after = get_masks(model)
        assert all(not (after[n_] & ~before[n_]).any() for n_ in after)  # no revival
    # densities follow 0.8^r up to rounding
    for r, c in enumerate(counts):
        assert abs(c - 0.8 ** r * n) <= r


def test_prune_by_magnitude_count_and_scope():
    model = small_net()
    n = kept(model)
    assert prune_by_magnitude(model, count=1000) == 1000 and kept(model) == n - 1000
    assert prune_by_magnitude(model, count=10 ** 9) == n - 1000 and kept(model) == 0
    model = small_net()
    sizes = {k: v.numel() for k, v in get_masks(model).items()}
    prune_by_magnitude(model, percent=50, scope="layer")
    for name, mask in get_masks(model).items():
        assert int(mask.sum()) == sizes[name] - round(0.5 * sizes[name])
        w = raw_weight(prunable_layers(model)[name])
        assert not w[~mask].any()


def test_prune_by_magnitude_removes_smallest_of_trained_weights():
    model = small_net(3)
    with torch.no_grad():
        raw_weight(model.layers[0]).mul_(10)  # "trained" scale difference: layer 0 now dominates
    prune_by_magnitude(model, percent=90)
    masks = get_masks(model)
    assert int(masks["layers.0"].sum()) > 0.9 * kept(model)


@pytest.mark.parametrize("kwargs", [{}, {"percent": 10, "count": 5}, {"percent": 120}, {"count": -1}])
def test_prune_by_magnitude_errors(kwargs):
    with pytest.raises(UserError):
        prune_by_magnitude(small_net(), **kwargs)


def test_imp_schedule():
    assert imp_schedule(0.5) == pytest.approx([0.8, 0.64, 0.512, 0.5])
    s = imp_schedule(10 ** -1.7)
    assert len(s) == 18 and s[:17] == pytest.approx([0.8 ** r for r in range(1, 18)])
    assert s[-1] == 10 ** -1.7
    assert imp_schedule(0.8) == [0.8]
    assert imp_schedule(0.64) == pytest.approx([0.8, 0.64])
    assert imp_schedule(1.0) == []
    assert imp_schedule(0.1, rounds=2) == pytest.approx([0.1 ** 0.5, 0.1])
    with pytest.raises(UserError):
        imp_schedule(0.5, rate=1.0)
    with pytest.raises(UserError):
        imp_schedule(0.5, rounds=0)


def test_imp_density_sequence_and_rewind_to_init(tiny_mnist):
    model = small_net(21)
    init = copy.deepcopy(model)
    n = kept(model)
    cfg = TrainConfig(epochs=1, batch_size=32, lr=0.05)
    res = IMP().run(model, tiny_mnist, 0.5, cfg, seed=21, progress=False)["imp"]
    h = res.history
    phases = list(dict.fromkeys(h["phase"]))
    assert phases == ["imp_r0", "imp_r1", "imp_r2", "imp_r3", "imp_r4"]
    expected = [1.0] + [kept_count(d, n) / n for d in (0.8, 0.64, 0.512, 0.5)]
    for phase, d in zip(phases, expected):
        assert h.loc[h["phase"] == phase, "density"].tolist() == pytest.approx([d, d])
    assert res.info["imp_densities"] == pytest.approx(expected)
    assert h["epoch"].is_monotonic_increasing and h["epoch"].is_unique
    assert kept(res.model) == kept_count(0.5, n)
    # init_model: the final mask on the rewound (= initial) weights
    final = get_masks(res.model)
    assert all(torch.equal(get_masks(res.init_model)[k], final[k]) for k in final)
    for name, layer in prunable_layers(res.init_model).items():
        w0 = raw_weight(prunable_layers(init)[name])
        w = raw_weight(layer)
        assert torch.equal(w[final[name]], w0[final[name]]) and not w[~final[name]].any()
        if layer.bias is not None:
            assert torch.equal(layer.bias, prunable_layers(init)[name].bias)
    # the trained model moved away from init and pruned weights are exactly zero
    w_end = raw_weight(res.model.layers[0])
    assert not torch.equal(w_end, raw_weight(res.init_model.layers[0]))
    assert not w_end[~final["layers.0"]].any()


def test_imp_rewind_to_iteration_k(tiny_mnist):
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.05)  # 128 images: 2 iterations per epoch
    from utils.engine.train import train
    reference = small_net(5)
    train(reference, tiny_mnist, cfg, seed=5, progress=False)  # weights after iteration 2
    model = small_net(5)
    res = IMP(rounds=1, rewind_iteration=2).run(model, tiny_mnist, 0.3, cfg, seed=5, progress=False)["imp"]
    masks = get_masks(res.init_model)
    assert kept(res.init_model) == kept_count(0.3, kept(small_net()))
    for name, layer in prunable_layers(res.init_model).items():
        w_ref = raw_weight(prunable_layers(reference)[name])
        assert torch.equal(raw_weight(layer)[masks[name]], w_ref[masks[name]])
    with pytest.raises(UserError):
        IMP(rounds=1, rewind_iteration=99).run(small_net(5), tiny_mnist, 0.3, cfg, seed=5, progress=False)
    with pytest.raises(UserError):
        IMP(rewind_iteration=-1)


def test_imp_masks_nested_across_rounds(tiny_mnist, monkeypatch):
    seen = []
    original = importlib.import_module("pruners.magnitude").prune_to

    def spy(model, scores, density, gen, scope="global"):
        original(model, scores, density, gen, scope)
        seen.append(get_masks(model))
    monkeypatch.setattr(importlib.import_module("pruners.magnitude"), "prune_to", spy)
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.05)
    IMP(rounds=3).run(small_net(1), tiny_mnist, 0.2, cfg, seed=1, progress=False)
    assert len(seen) == 3
    for a, b in zip(seen, seen[1:]):
        assert all(not (b[n] & ~a[n]).any() for n in a)
    assert [sum(int(m.sum()) for m in s.values()) for s in seen] == [
        kept_count(0.2 ** (r / 3), 784 * 32 + 32 * 16 + 16 * 10) for r in (1, 2, 3)]
    assert all(mask_of(m).dtype == torch.bool for m in prunable_layers(small_net()).values())
