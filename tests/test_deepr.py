"""DEEPR and Soft-DEEPR (SPEC §8.4, §12)."""
import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from models.fc import FC
from models.masks import Mask, get_masks, mask_of, prunable_layers, raw_weight, set_masks
from pruners.base import METHODS, get_method
from pruners.deepr import (
    DEEPR,
    SoftDEEPR,
    convert,
    convert_from_deep_rewireable,
    convert_to_deep_rewireable,
    layer_budgets,
    reconvert,
    reconvert_masked,
    rewireable_layers,
)
from utils.engine.data import DATASETS, Dataset
from utils.engine.train import TrainConfig

SIZES = (12, 10, 8, 4)


def small_fc(seed=0, bias=True):
    torch.manual_seed(seed)
    return FC(SIZES, hidden_bias=bias, output_bias=bias)


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 5 * 5, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def thetas(model):
    return {n: raw_weight(m).detach().clone() for n, m in rewireable_layers(model).items()}


def signs(model):
    return {n: m.parametrizations.weight[-1].weight_signs.clone() for n, m in rewireable_layers(model).items()}


def random_grads(params, gen, scale=1.0):
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen) * scale


# --------------------------------------------------------------------------- conversion
@pytest.mark.parametrize("handle_biases", ["ignore", "as_connections", "second_bias"])
def test_all_created_params_returned(handle_biases):
    model = small_fc()
    rewireable, other = convert_to_deep_rewireable(model, handle_biases=handle_biases,
                                                   generator=torch.Generator().manual_seed(1))
    ids = [id(p) for p in rewireable + other]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters()}
    n_layers = len(SIZES) - 1
    expected = {"ignore": n_layers, "as_connections": 2 * n_layers, "second_bias": 3 * n_layers}
    assert len(rewireable) == expected[handle_biases]
    if handle_biases == "second_bias":
        negatives = {id(m.parametrizations.bias[0].negative) for m in prunable_layers(model).values()}
        assert negatives <= {id(p) for p in rewireable}


@pytest.mark.parametrize("handle_biases", ["ignore", "as_connections", "second_bias"])
def test_keep_signs_round_trip_preserves_outputs(handle_biases):
    model = small_fc()
    gen = torch.Generator().manual_seed(3)
    set_masks(model, {n: torch.rand(raw_weight(m).shape, generator=gen) < 0.4
                      for n, m in prunable_layers(model).items()})
    x = torch.randn(16, SIZES[0], generator=gen)
    reference = model(x).detach()
    masks = get_masks(model)
    nonzero = {n: m.weight.detach() != 0 for n, m in prunable_layers(model).items()}
    convert_to_deep_rewireable(model, handle_biases=handle_biases, keep_signs=True)
    assert torch.allclose(model(x), reference, atol=1e-6, rtol=0)
    for name, m in rewireable_layers(model).items():
        assert torch.equal(mask_of(m), masks[name] & nonzero[name])
    convert_from_deep_rewireable(model)
    assert not rewireable_layers(model)
    assert torch.allclose(model(x), reference, atol=1e-6, rtol=0)
    # a plain PyTorch model again: masked-out weights are 0 in the plain weight
    for name, m in prunable_layers(model).items():
        assert not parametrize.is_parametrized(m) and type(m) is nn.Linear
        assert not (m.weight[~masks[name]] != 0).any()
    plain = {f"layers.{i}.{t}" for i in range(len(SIZES) - 1) for t in ("weight", "bias")}
    assert set(model.state_dict()) == plain


def test_reconvert_masked_keeps_the_project_format():
    model = small_fc()
    convert_to_deep_rewireable(model, handle_biases="second_bias", generator=torch.Generator().manual_seed(0))
    x = torch.randn(4, SIZES[0])
    reference = model(x).detach()
    active = {n: raw_weight(m) > 0 for n, m in rewireable_layers(model).items()}
    reconvert_masked(model)
    assert torch.equal(model(x), reference)
    assert set(model.state_dict()) == set(small_fc().state_dict())
    for name, m in prunable_layers(model).items():
        assert isinstance(m.parametrizations.weight[0], Mask) and len(m.parametrizations.weight) == 1
        assert torch.equal(mask_of(m), active[name])


def test_conv_round_trip_and_aliases():
    torch.manual_seed(0)
    net = ConvNet().eval()
    x = torch.randn(3, 2, 5, 5)
    reference = net(x).detach()
    rewireable, other = convert(net, keep_signs=True)
    assert torch.allclose(net(x), reference, atol=1e-6, rtol=0)
    assert {id(p) for p in other} == {id(net.bn.weight), id(net.bn.bias)}
    reconvert(net)
    assert torch.allclose(net(x), reference, atol=1e-6, rtol=0)


def test_random_signs_and_active_probability():
    model = small_fc()
    w = {n: m.weight.detach().clone() for n, m in prunable_layers(model).items()}
    convert_to_deep_rewireable(model, handle_biases="ignore", generator=torch.Generator().manual_seed(0))
    for name, m in rewireable_layers(model).items():
        s = m.parametrizations.weight[0].weight_signs
        assert set(s.unique().tolist()) <= {-1.0, 1.0}
        assert torch.equal(raw_weight(m), s * w[name])            # θ = s·w
        assert torch.equal(m.weight, torch.where(s * w[name] > 0, w[name], 0.0))
    big = nn.Linear(400, 500)
    w_big = big.weight.detach().clone()
    convert_to_deep_rewireable(big, active_probability=0.2, generator=torch.Generator().manual_seed(0))
    frac = (raw_weight(big) > 0).float().mean().item()
    assert abs(frac - 0.2) < 0.01
    assert torch.equal(raw_weight(big).abs(), w_big.abs())       # θ = ±|w|


def test_mask_survives_copy_state_dict_double():
    model = small_fc()
    convert_to_deep_rewireable(model, handle_biases="second_bias", keep_signs=True)
    layer = model.layers[0]
    with torch.no_grad():
        raw_weight(layer)[:3] = -1.0
    copy_ = copy.deepcopy(model).double()
    assert torch.equal(mask_of(copy_.layers[0]), mask_of(layer))
    convert_from_deep_rewireable(copy_)               # must not break the original (shared class)
    x = torch.randn(2, SIZES[0])
    model(x)
    fresh = small_fc()
    convert_to_deep_rewireable(fresh, handle_biases="second_bias")
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(mask_of(fresh.layers[0]), mask_of(layer))
    assert torch.equal(fresh(x), model(x))


# --------------------------------------------------------------------------- DEEPR
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_deepr_budget_signs_dormant_reset(scope):
    model = small_fc()
    rewireable, _ = convert_to_deep_rewireable(model, handle_biases="second_bias",
                                               generator=torch.Generator().manual_seed(0))
    total = sum(p.numel() for p in rewireable)
    nc = 60
    lr, l1, reset = 0.05, 1e-2, 1e-12
    opt = DEEPR(rewireable, nc=nc, lr=lr, l1=l1, reset_val=reset, temp=0.0, scope=scope,
                generator=torch.Generator().manual_seed(1))
    budgets = [nc] if scope == "global" else layer_budgets(nc, [p.numel() for p in rewireable])
    assert sum(budgets) == nc
    signs0 = signs(model)
    gen = torch.Generator().manual_seed(2)
    reactivated = 0
    for _ in range(1000):
        before = [p.detach().clone() for p in rewireable]
        random_grads(rewireable, gen)
        grads = [p.grad.clone() for p in rewireable]
        opt.step()
        counts = [int((p > 0).sum()) for p in rewireable]
        if scope == "global":
            assert sum(counts) == nc
        else:
            assert counts == budgets
        for b, g, p in zip(before, grads, rewireable):
            was_active = b > 0
            # active: exact SGD + L1 step (temp = 0); if it went dormant it may be re-drawn
            expected = b - lr * (g + l1)
            ok = (p == expected) | ((expected <= 0) & (p == reset))
            assert ok[was_active].all()
            dormant = ~was_active
            changed = dormant & (p != b)
            # dormant: unchanged (no gradient, no L1) unless re-activated at reset_val
            assert torch.all(p[changed] == reset)
            reactivated += int(changed.sum())
        assert all(torch.equal(signs0[n], s) for n, s in signs(model).items())
    assert reactivated > 100  # rewiring really happened
    assert total > nc


def test_deepr_noise_only_on_active_and_reproducible():
    def run():
        torch.manual_seed(0)
        lin = nn.Linear(30, 20, bias=False)
        (theta,), _ = convert_to_deep_rewireable(lin, generator=torch.Generator().manual_seed(0))
        opt = DEEPR([theta], nc=100, lr=0.1, l1=0.0, temp=1e-3, generator=torch.Generator().manual_seed(5))
        for _ in range(50):
            before = theta.detach().clone()
            theta.grad = torch.zeros_like(theta)
            opt.step()
            dormant = before <= 0
            assert torch.all((theta[dormant] == before[dormant]) | (theta[dormant] == opt.defaults["reset_val"]))
            assert int((theta > 0).sum()) == 100
        return theta.detach().clone()
    assert torch.equal(run(), run())


@pytest.mark.parametrize("nc", [5, 150])   # rejection sampling and full-scan paths
def test_deepr_channels_last_conv(nc):
    torch.manual_seed(0)
    net = ConvNet().to(memory_format=torch.channels_last)
    rewireable, other = convert_to_deep_rewireable(net, handle_biases="ignore",
                                                   generator=torch.Generator().manual_seed(0))
    assert raw_weight(net.conv).is_contiguous(memory_format=torch.channels_last)
    opt = DEEPR([{"params": rewireable}, {"params": other, "rewire": False}], nc=nc, lr=0.2, l1=1e-3,
                generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(2)
    total = 0
    for _ in range(200):
        random_grads(rewireable + other, gen)
        opt.step()
        total += opt.last_reactivated
        assert sum(int((p > 0).sum()) for p in rewireable) == nc
    assert total > 0


def test_pick_dormant_is_uniform():
    from pruners.deepr import _pick_dormant
    flat = torch.ones(40)
    flat[::2] = -1.0                         # 20 dormant entries
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(40)
    for _ in range(2000):
        pick = _pick_dormant(flat, 2, gen)
        assert pick.unique().numel() == 2 and (flat[pick] <= 0).all()
        counts[pick] += 1
    assert counts[1::2].sum() == 0
    assert (counts[::2] - 200).abs().max() < 60   # binomial sd ≈ 13


def test_deepr_equals_sgd_without_rewiring():
    torch.manual_seed(0)
    plain = small_fc()
    gen = torch.Generator().manual_seed(4)
    set_masks(plain, {n: torch.rand(raw_weight(m).shape, generator=gen) < 0.5
                      for n, m in prunable_layers(plain).items()})
    rewired = copy.deepcopy(plain)
    rewireable, other = convert_to_deep_rewireable(rewired, handle_biases="ignore", keep_signs=True)
    nc = sum(int((p > 0).sum()) for p in rewireable)
    masks0 = get_masks(plain)
    lr = 1e-3
    opt_a = DEEPR([{"params": rewireable}, {"params": other, "rewire": False}], nc=nc, lr=lr,
                  l1=0.0, temp=0.0)
    opt_b = torch.optim.SGD(plain.parameters(), lr=lr)
    for _ in range(20):
        x = torch.randn(8, SIZES[0], generator=gen)
        y = torch.randint(0, SIZES[-1], (8,), generator=gen)
        for model, opt in ((rewired, opt_a), (plain, opt_b)):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        assert opt_a.last_reactivated == 0
    for name, m in prunable_layers(plain).items():
        assert torch.equal(mask_of(rewired.get_submodule(name)), masks0[name])
        assert torch.allclose(rewired.get_submodule(name).weight, m.weight, atol=1e-6, rtol=0)
    x = torch.randn(32, SIZES[0], generator=gen)
    assert torch.allclose(rewired(x), plain(x), atol=1e-6, rtol=0)


def test_deepr_rejects_bad_arguments_and_adjusts_budget():
    lin = nn.Linear(10, 10, bias=False)
    (theta,), _ = convert_to_deep_rewireable(lin, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError):
        DEEPR([theta], nc=10, reset_val=-1e-12)   # 0 is accepted (tests/test_compat_deeprewire.py)
    with pytest.raises(ValueError):
        DEEPR([theta], nc=101)
    # a reset value that rounds to 0 in the tensor's dtype would leave re-activated entries dormant
    with pytest.raises(ValueError, match="rounds to 0 in torch.float16"):
        DEEPR([theta.detach().half().requires_grad_()], nc=10, reset_val=1e-12)
    from pruners.deepr import StackedDEEPR
    with pytest.raises(ValueError, match="rounds to 0"):
        StackedDEEPR([theta.detach().half()[None].requires_grad_()], [[10]], [torch.Generator()], lr=0.1,
                     reset_val=1e-12)
    with pytest.raises(ValueError):
        DEEPR([theta], nc=10, scope="rows")
    DEEPR([theta], nc=7, generator=torch.Generator().manual_seed(0))
    assert int((theta > 0).sum()) == 7
    DEEPR([theta], nc=70, generator=torch.Generator().manual_seed(0))
    assert int((theta > 0).sum()) == 70
    assert sum(layer_budgets(17, [5, 7, 11])) == 17


# --------------------------------------------------------------------------- Soft-DEEPR
def test_soft_deepr_min_weight_and_no_revival_at_zero_temperature():
    model = small_fc()
    rewireable, _ = convert_to_deep_rewireable(model, generator=torch.Generator().manual_seed(0))
    l1 = 1e-3
    opt = SoftDEEPR(rewireable, lr=0.05, l1=l1, generator=torch.Generator().manual_seed(1))
    assert opt.defaults["min_weight"] == pytest.approx(-3 * l1)
    assert opt.defaults["temp"] == pytest.approx(0.05 * l1 ** 2 / 18)
    gen = torch.Generator().manual_seed(2)
    signs0 = signs(model)
    for _ in range(300):
        random_grads(rewireable, gen)
        opt.step()
        assert all(bool((p >= -3 * l1).all()) for p in rewireable)
    assert len(opt.connectivity_log) == 300
    assert all(torch.equal(signs0[n], s) for n, s in signs(model).items())

    opt0 = SoftDEEPR(rewireable, lr=0.05, l1=l1, temp=0.0, min_weight=-0.01)
    for _ in range(300):
        dormant = [(p <= 0).clone() for p in rewireable]
        random_grads(rewireable, gen)
        opt0.step()
        for d, p in zip(dormant, rewireable):
            assert not (p[d] > 0).any()
            assert (p >= -0.01).all()
    assert opt0.connectivity_log == sorted(opt0.connectivity_log, reverse=True)


# --------------------------------------------------------------------------- methods
def tiny_mnist(n_train=256, n_test=128, seed=0):
    gen = torch.Generator().manual_seed(seed)
    info = DATASETS["mnist"]
    return Dataset(info, torch.randint(0, 256, (n_train, 1, 28, 28), dtype=torch.uint8, generator=gen),
                   torch.randint(0, 10, (n_train,), generator=gen),
                   torch.randint(0, 256, (n_test, 1, 28, 28), dtype=torch.uint8, generator=gen),
                   torch.randint(0, 10, (n_test,), generator=gen))


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_deepr_method_run(scope):
    from models.fc import fc
    assert METHODS["deepr"].__name__ == "DeepRMethod"
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.1)
    torch.manual_seed(21)
    model = fc()
    result = get_method("deepr", scope=scope).run(model, tiny_mnist(), 0.05, cfg, seed=21, progress=False)
    res = result["deepr"]
    n_total = sum(raw_weight(m).numel() for m in prunable_layers(model).values())
    nc = round(0.05 * n_total)
    for net in (res.model, res.init_model):
        assert not rewireable_layers(net)
        masks = get_masks(net)
        assert sum(int(m.sum()) for m in masks.values()) == nc
        for name, m in prunable_layers(net).items():
            assert isinstance(m.parametrizations.weight[0], Mask)
            s = res.extras[f"signs.{name}"]
            assert s.dtype == torch.int8 and set(s.unique().tolist()) <= {-1, 1}
            w = m.weight.detach()[masks[name]]
            assert torch.equal(torch.sign(w).to(torch.int8), s[masks[name]])
    assert "connectivity" in res.history and res.history["connectivity"].iloc[-1] == pytest.approx(nc / n_total)
    assert res.info["nc"] == nc
    # reproducible
    torch.manual_seed(21)
    again = get_method("deepr", scope=scope).run(fc(), tiny_mnist(), 0.05, cfg, seed=21, progress=False)["deepr"]
    assert all(torch.equal(a, b) for a, b in zip(res.model.state_dict().values(),
                                                 again.model.state_dict().values()))


def test_soft_deepr_method_run():
    from models.fc import fc
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.1)
    torch.manual_seed(21)
    res = get_method("soft-deepr").run(fc(), tiny_mnist(), 0.05, cfg, seed=21, progress=False)["soft-deepr"]
    assert not rewireable_layers(res.model)
    assert res.history["density"].iloc[0] == pytest.approx(0.05, abs=1e-4)
    assert res.info["density_achieved"] == pytest.approx(res.history["density"].iloc[-1])
    assert 0 < res.info["density_achieved"] <= 1


def test_scaled_init_variance():
    from models.fc import fc
    from pruners.deepr import init_rewiring
    torch.manual_seed(0)
    stds = {}
    for init in ("normal", "scaled"):
        model = fc()
        n_total = sum(raw_weight(m).numel() for m in prunable_layers(model).values())
        init_rewiring(model, round(0.05 * n_total), seed=21, init=init)
        theta = raw_weight(model.layers[1])
        stds[init] = theta[theta > 0].pow(2).mean().sqrt().item() * 10   # sqrt(fan_in) = 10
    assert stds["normal"] == pytest.approx(1.0, rel=0.15)
    d_layer = (raw_weight(model.layers[1]) > 0).float().mean().item()
    assert stds["scaled"] == pytest.approx(d_layer ** -0.5, rel=0.15)


def test_methods_reject_momentum():
    from models.fc import fc
    from utils.errors import UserError
    with pytest.raises(UserError):
        get_method("deepr").run(fc(), tiny_mnist(), 0.05, TrainConfig(epochs=1, momentum=0.9), seed=21,
                                progress=False)
    with pytest.raises(UserError):
        get_method("deepr", reset_val=0.0)
