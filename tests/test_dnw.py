"""DNW top-k (SPEC §8.5, §12 Pruners/DNW)."""
import copy
import importlib

import pytest
import torch
import torch.nn.functional as F
from torch import autograd, nn

from models import FC, Mask, fc, get_masks, layer_densities, mask_of, prunable_layers, raw_weight, resnet20
from pruners.base import get_method, kept_count
from pruners.dnw import (
    DNW,
    BandedTopK,
    TopKMask,
    freeze_topk,
    install_topk,
    topk_mask,
    topk_rows,
    upstream_kept_count,
)
from utils.engine.data import DATASETS, Dataset
from utils.engine.train import TrainConfig
from utils.errors import UserError


class UpstreamChooseTopEdges(autograd.Function):
    """allenai/dnw sparse_util.ChooseTopEdges, restated for comparison."""

    @staticmethod
    def forward(ctx, weight, prune_rate):
        output = weight.clone()
        _, idx = weight.flatten().abs().sort()
        p = int(prune_rate * weight.numel())
        flat_oup = output.flatten()
        flat_oup[idx[:p]] = 0
        return output

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output, None


def small_net(seed=0):
    torch.manual_seed(seed)
    return FC((30, 20, 10))


@pytest.mark.parametrize("d", [0.5, 0.2, 0.1, 0.05, 0.02, 0.001])
def test_exactly_k_nonzeros_every_forward(d):
    torch.manual_seed(0)
    model = install_topk(fc(), d)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(3):
        for name, layer in prunable_layers(model).items():
            w = layer.weight
            assert int((w != 0).sum()) == kept_count(d, w.numel()), name
            assert torch.equal(mask_of(layer), w != 0)
        loss = model(torch.randn(8, 1, 28, 28)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("d", [0.5, 0.1, 0.001])
def test_topk_mask_matches_stable_sort_reference(d):
    g = torch.Generator().manual_seed(7)
    w = torch.randint(-5, 6, (37, 29), generator=g).float()  # many exact ties
    k = kept_count(d, w.numel())
    order = torch.argsort(w.abs().reshape(-1), descending=True, stable=True)
    ref = torch.zeros(w.numel(), dtype=torch.bool)
    ref[order[:k]] = True
    assert torch.equal(topk_mask(w, k).reshape(-1), ref)


@pytest.mark.parametrize(("ks", "misses"), [([1568] * 4, 4), ([39200] * 4, 4), ([0, 78400, 1, 78399], 10)])
def test_banded_topk_equals_topk_rows_along_a_random_walk(ks, misses):
    """Each step moves |w| a little (as an SGD step): every mask is topk_rows' mask, and the band
    finds the k-th value without a topk after the first call.  Rows with k = 0 or n never need a
    topk; k = 78399 (a k-th value near 0, where a 1 % band is narrower than one step) misses
    until its width has doubled enough (8 more topk calls)."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(4, 78400, generator=g)
    select = BandedTopK(ks)
    for _ in range(20):
        w += 1e-3 * torch.randn(w.shape, generator=g)
        assert torch.equal(select(w.abs()), topk_rows(w.abs(), ks))
    assert select.misses == misses


def test_banded_topk_finds_a_k_th_value_that_jumped_out_of_its_band():
    select = BandedTopK([10, 10], width=0.01)
    x = torch.arange(100.0).repeat(2, 1)
    select(x)
    x[1] *= 3                                     # row 1's k-th value leaves the band
    assert torch.equal(select(x), topk_rows(x, [10, 10]))
    assert select.misses == 2 + 1
    assert select.width.tolist() == pytest.approx([0.01, 0.02])


def test_banded_topk_breaks_ties_in_the_weights_own_layout():
    """Integer scores tie at the k-th value in most steps: the stacked (K, in, out) layout gives
    each run the mask topk_rows gives its (out, in) weight (ties to the lower flat index)."""
    g = torch.Generator().manual_seed(5)
    select = BandedTopK([7, 2, 20])
    for _ in range(30):
        stacked = torch.randint(0, 3, (3, 4, 5), generator=g).float()
        weights = stacked.transpose(1, 2)
        expected = topk_rows(weights.reshape(3, -1), [7, 2, 20]).view(3, 5, 4).transpose(1, 2)
        mask = select(stacked, transposed=True)
        assert torch.equal(mask, expected)
        assert mask.reshape(3, -1).sum(1).tolist() == [7, 2, 20]


@pytest.mark.parametrize("d", [0.5, 0.1, 0.001])
def test_exact_k_with_ties(d):
    w = torch.full((40, 25), 0.3)
    mask = topk_mask(w, kept_count(d, w.numel()))
    assert int(mask.sum()) == kept_count(d, w.numel())
    # deterministic ties: lower flat index first
    assert mask.reshape(-1)[: int(mask.sum())].all()
    assert torch.equal(mask, topk_mask(w, kept_count(d, w.numel())))


def test_forward_and_gradient_equal_upstream():
    torch.manual_seed(1)
    layer = nn.Linear(30, 20, bias=False)
    w0 = layer.weight.detach().clone()
    d = 0.3
    install_topk(nn.Sequential(layer), d)
    k = kept_count(d, w0.numel())
    prune_rate = (w0.numel() - k + 0.5) / w0.numel()  # upstream zeroes int(rate·numel) = numel - k
    x = torch.randn(16, 30)
    target = torch.randn(16, 20)

    w_up = w0.clone().requires_grad_(True)
    out_up = F.linear(x, UpstreamChooseTopEdges.apply(w_up, prune_rate))
    F.mse_loss(out_up, target).backward()

    out = layer(x)
    F.mse_loss(out, target).backward()
    g = layer.parametrizations.weight.original.grad
    torch.testing.assert_close(out, out_up, rtol=0, atol=0)
    torch.testing.assert_close(g, w_up.grad, rtol=1e-6, atol=1e-7)
    # the gradient reaches pruned entries too (straight-through), unlike a fixed mask
    pruned = ~mask_of(layer)
    assert (g[pruned] != 0).float().mean() > 0.9
    # and equals the dense gradient dL/dW_eff at every entry
    w_eff = (w0 * mask_of(layer)).requires_grad_(True)
    F.mse_loss(F.linear(x, w_eff), target).backward()
    torch.testing.assert_close(g, w_eff.grad, rtol=1e-6, atol=1e-7)


# (n, d, ours = round(d·n), upstream = n − int((1−d)·n))
COUNT_CASES = [(10, 0.3, 3, 3), (78_400, 0.1, 7_840, 7_840), (1_000, 0.02, 20, 20),
               (50, 0.05, 2, 3),  # d·n = 2.5: round-half-even 2, upstream 50 − int(47.5) = 3
               (7, 0.3, 2, 3),    # d·n = 2.1: upstream keeps about ⌈d·n⌉
               (5, 0.8, 4, 5)]    # d·n = 4 exactly, but (1 − 0.8)·5 = 0.99999...: upstream keeps all 5


@pytest.mark.parametrize("n, d, ours, upstream", COUNT_CASES)
def test_kept_counts_round_and_upstream(n, d, ours, upstream):
    assert kept_count(d, n) == ours
    assert upstream_kept_count(d, n) == upstream
    w = torch.randn(n, generator=torch.Generator().manual_seed(n))
    for count, expected in (("round", ours), ("upstream", upstream)):
        param = TopKMask(d, count=count)
        assert param.k(n) == expected
        assert int((param(w) != 0).sum()) == expected


@pytest.mark.parametrize("d", [0.05, 0.3])
def test_upstream_count_forward_equals_upstream_at_its_prune_rate(d):
    # upstream is called with prune_rate = 1 − density, exactly as its main.py does
    torch.manual_seed(8)
    layer = nn.Linear(10, 5, bias=False)  # 50 weights: d = 0.05 is a case where the counts differ
    w0 = layer.weight.detach().clone()
    install_topk(nn.Sequential(layer), d, count="upstream")
    x = torch.randn(4, 10)
    expected = F.linear(x, UpstreamChooseTopEdges.apply(w0, 1 - d))
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=0)
    assert int(mask_of(layer).sum()) == upstream_kept_count(d, 50)


def test_count_option_reaches_the_run():
    torch.manual_seed(22)
    model = FC((784, 30, 10))  # 23_520 and 300 weights: at d = 0.0505 upstream keeps one more in the second
    assert upstream_kept_count(0.0505, 300) == kept_count(0.0505, 300) + 1 == 16
    method = get_method("dnw", count="upstream")
    res = method.run(model, synthetic(64), 0.0505, TrainConfig(epochs=1, batch_size=32, lr=0.1),
                     seed=22, progress=False)["dnw"]
    assert res.info == {"scope": "layer", "count": "upstream"}
    for m in (res.model, res.init_model):
        assert [int(mask.sum()) for mask in get_masks(m).values()] == [1188, 16]
    with pytest.raises(UserError):
        get_method("dnw", count="ceil")
    with pytest.raises(UserError):
        TopKMask(0.5, count="floor")
    assert DNW().count == "round"


def test_swapping_two_magnitudes_swaps_mask_bits():
    torch.manual_seed(2)
    w = torch.randn(10, 10)
    k = 30
    mask = topk_mask(w, k).reshape(-1)
    i = int(mask.nonzero()[0])
    j = int((~mask).nonzero()[0])
    flat = w.reshape(-1).clone()
    flat[i], flat[j] = flat[j].clone(), flat[i].clone()
    swapped = topk_mask(flat.view(10, 10), k).reshape(-1)
    expected = mask.clone()
    expected[i], expected[j] = mask[j], mask[i]
    assert torch.equal(swapped, expected)
    # signs do not matter, only |w|
    assert torch.equal(topk_mask(-w, k), topk_mask(w, k))


def test_current_mask_is_live_and_survives_copies():
    model = install_topk(small_net(3), 0.25)
    layer = model.layers[0]
    before = mask_of(layer).clone()
    with torch.no_grad():  # an optimizer step without a forward
        w = raw_weight(layer)
        off = (~before).nonzero()[0]
        w[off[0], off[1]] = 100.0
    after = mask_of(layer)
    assert after[off[0], off[1]] and int(after.sum()) == int(before.sum())
    clone = copy.deepcopy(model)
    c_layer = clone.layers[0]
    assert torch.equal(mask_of(c_layer), after)
    with torch.no_grad():
        raw_weight(c_layer).zero_()
    assert torch.equal(mask_of(layer), after)  # the copy is bound to its own weight
    dbl = copy.deepcopy(model).double()
    assert torch.equal(mask_of(dbl.layers[0]), after)
    fresh = install_topk(small_net(4), 0.25)
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(mask_of(fresh.layers[0]), after)


def test_freezing_a_copy_leaves_the_original_working():
    # deepcopy shares the parametrized class; remove_parametrizations would strip `weight` from it
    model = install_topk(small_net(5), 0.3)
    clone = freeze_topk(copy.deepcopy(model))
    x = torch.randn(4, 30)
    model(x), clone(x)
    assert type(clone.layers[0].parametrizations.weight[0]) is Mask
    assert type(model.layers[0].parametrizations.weight[0]) is TopKMask
    torch.testing.assert_close(model(x), clone(x), rtol=0, atol=0)
    freeze_topk(model)
    model(x), clone(x)


def test_unbound_and_bad_options():
    with pytest.raises(RuntimeError):
        TopKMask(0.5).current_mask()
    with pytest.raises(UserError):
        TopKMask(0.5, scope="global")
    with pytest.raises(UserError):
        TopKMask(0.0)
    with pytest.raises(UserError):
        get_method("dnw", scope="global")
    assert isinstance(get_method("dnw"), DNW) and importlib.import_module("pruners.dnw").DNW is DNW


def test_binds_on_first_forward_when_registered_directly():
    from models.masks import replace_parametrization
    layer = nn.Linear(10, 6)
    param = TopKMask(0.5)
    replace_parametrization(layer, param)
    layer(torch.randn(2, 10))
    assert int(mask_of(layer).sum()) == 30


def test_conv_layers():
    torch.manual_seed(0)
    net = install_topk(resnet20(), 0.1)
    for name, mask in get_masks(net).items():
        assert int(mask.sum()) == kept_count(0.1, mask.numel()), name
    assert len(layer_densities(net)) == 22


def synthetic(n=256):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return Dataset(DATASETS["mnist"], x, y, x[:64], y[:64])


def test_run_freezes_plain_masks_at_exact_counts():
    torch.manual_seed(21)
    model = fc()
    w_init = {n: raw_weight(m).detach().clone() for n, m in prunable_layers(model).items()}
    cfg = TrainConfig(epochs=2, batch_size=32, lr=0.1)
    res = DNW().run(model, synthetic(), 0.1, cfg, seed=21, progress=False)["dnw"]
    for m in (res.model, res.init_model):
        for name, layer in prunable_layers(m).items():
            params = layer.parametrizations.weight
            assert len(params) == 1 and type(params[0]) is Mask
            assert int(mask_of(layer).sum()) == kept_count(0.1, layer.weight.numel()), name
    # init_model: the top-k of the initial weights; final model: the top-k of its final weights
    for name, layer in prunable_layers(res.init_model).items():
        assert torch.equal(mask_of(layer), topk_mask(w_init[name], kept_count(0.1, w_init[name].numel())))
    for layer in prunable_layers(res.model).values():
        w = raw_weight(layer)
        assert torch.equal(mask_of(layer), topk_mask(w, kept_count(0.1, w.numel())))
    h = res.history
    assert len(h) == 3 and "mask_changed" in h and (h["mask_changed"].dropna() > 0).all()
    assert h["density"].tolist() == pytest.approx([11_940 / 119_400] * 3)
    assert res.info["scope"] == "layer"
    # the mask moved during training
    assert any(not torch.equal(get_masks(res.model)[n], get_masks(res.init_model)[n]) for n in w_init)


def test_run_learns_mnist(real_data_dir):
    from utils.engine.data import load_mnist
    data = load_mnist(real_data_dir, download=False).subset(3000, 1000)
    torch.manual_seed(21)
    model = FC((784, 100, 10))  # shallow, so 2 short epochs suffice
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.1)
    res = DNW().run(model, data, 0.1, cfg, seed=21, progress=False)["dnw"]
    assert res.history["top1"].iloc[-1] > 70
    assert kept_count(0.1, 78_400) == int(get_masks(res.model)["layers.0"].sum())
