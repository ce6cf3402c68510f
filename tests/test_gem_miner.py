"""Gem-Miner hc_iter (SPEC §8.3, §12 Gem-Miner)."""
import importlib
import math

import pytest
import torch
from torch import nn

from models.fc import fc
from models.masks import get_masks, prunable_layers, raw_weight
from models.resnet import resnet20
from pruners.base import kept_count
from pruners.gem_miner import (
    GemMiner,
    GemMinerMask,
    bottom_k_prune,
    count_effective,
    count_flags,
    flag_schedule,
    gem_masks,
    num_prunes,
    prune_count,
    prune_rate,
)
from utils.engine.data import DATASETS, Dataset
from utils.engine.train import TrainConfig

FC_N, RESNET_N = 119_400, 268_336


def fake_data(name="mnist", n_train=512, n_test=128, seed=0):
    info = DATASETS[name]
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n_train + n_test, *info.shape), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n_train + n_test,), generator=g)
    return Dataset(info, x[:n_train], y[:n_train], x[n_train:], y[n_train:])


def gem_fc(seed=0):
    torch.manual_seed(seed)
    return fc(**GemMiner.model_kwargs["fc"])


FT = TrainConfig(epochs=2, batch_size=128, lr=0.01, momentum=0.9, weight_decay=1e-4)


# ----------------------------------------------------------------------------- arithmetic

def test_num_prunes():
    assert num_prunes(150, 5) == 29
    assert num_prunes(25, 2) == 12
    assert num_prunes(1, 1) == 0


@pytest.mark.parametrize("total, prunes, expected", [
    (FC_N, 12, [2387, 5968, 11938, 23877, 59695]),
    (RESNET_N, 29, [5363, 13412, 26828, 53660, 134157]),
])
def test_flag_counts_after_last_prune(total, prunes, expected):
    got = [flag_schedule(total, t / 100, prunes)[-1] for t in (2, 5, 10, 20, 50)]
    assert got == expected
    # an upper bound on the target
    assert all(n <= t / 100 * total for n, t in zip(got, (2, 5, 10, 20, 50)))


def test_gem_models_have_thesis_prunable_counts():
    assert sum(m.weight.numel() for m in prunable_layers(gem_fc()).values()) == FC_N
    net = resnet20(**GemMiner.model_kwargs["resnet20"])
    assert sum(m.weight.numel() for m in prunable_layers(net).values()) == RESNET_N


def test_bottom_k_exact_count_with_ties_and_no_revival():
    model = gem_fc()
    GemMiner().prepare(model, seed=1)
    with torch.no_grad():
        for p in gem_masks(model).values():
            p.scores.copy_((p.scores * 4).floor() / 4)       # heavy ties
    gen = torch.Generator().manual_seed(0)
    rate = prune_rate(0.1, 3)
    before = {n: p.flag.clone() for n, p in gem_masks(model).items()}
    n = count_flags(model)
    left = bottom_k_prune(model, rate, gen)
    assert left == n - prune_count(n, rate) == n - math.ceil(rate * n)
    for name, p in gem_masks(model).items():
        assert not (p.flag & ~before[name]).any()


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_layer_scope_prunes_every_layer_alike(scope):
    """Scores pushed down in the classifier (the collapse seen on ResNet-20 with short mining)
    empty it under global BottomK; ``scope="layer"`` keeps every layer at the same density."""
    model = gem_fc()
    GemMiner().prepare(model, seed=1)
    masks = gem_masks(model)
    last = list(masks)[-1]
    with torch.no_grad():
        masks[last].scores.mul_(0.01)
    gen = torch.Generator().manual_seed(0)
    rate = prune_rate(0.1, 3)
    for _ in range(3):
        bottom_k_prune(model, rate, gen, scope)
    flags = {n: p.flag for n, p in gem_masks(model).items()}
    overall = count_flags(model) / FC_N
    if scope == "global":
        assert not flags[last].any()
    else:
        for f in flags.values():
            assert abs(int(f.sum()) - overall * f.numel()) <= 1
        assert overall == pytest.approx(0.1, abs=1e-3)
        # within a layer the lowest scores still go first
        kept = masks[last].scores[flags[last]]
        assert kept.min() >= masks[last].scores[~flags[last]].max()


# ----------------------------------------------------------------------------- STE

def test_ste_gradient_equals_mask_gradient():
    torch.manual_seed(0)
    layer = nn.Linear(6, 5, bias=False)
    p = GemMinerMask(layer.weight.shape, torch.Generator().manual_seed(3))
    with torch.no_grad():
        p.flag[0, :3] = False
    x, target = torch.randn(8, 6), torch.randn(8, 5)

    out = x @ p(layer.weight).t()
    ((out - target) ** 2).sum().backward()

    mask = p.current_mask().float().requires_grad_(True)
    out2 = x @ (layer.weight * mask).t()
    ((out2 - target) ** 2).sum().backward()

    assert torch.equal(out.detach(), out2.detach())               # forward = rounded model, exactly
    expected = mask.grad * p.flag.float()                          # ∂L/∂s = ∂L/∂m · f
    torch.testing.assert_close(p.scores.grad, expected)
    assert torch.equal(p.current_mask(), p.flag & (p.scores > 0.5))


# ----------------------------------------------------------------------------- mining

def test_mining_invariants_fc():
    data = fake_data()
    model = gem_fc()
    gm = GemMiner(period=1, log_val=False)
    gm.prepare(model, seed=5)
    assert all(p.flag.all() for p in gem_masks(model).values())
    first = raw_weight(model.layers[0])
    assert torch.allclose(first.abs(), torch.full_like(first, math.sqrt(2 / 784)))
    weights = {n: t.clone() for n, t in model.state_dict().items() if "scores" not in n and "flag" not in n}
    flags, counts = [], []

    def monitor(epoch, m):
        flags.append({n: p.flag.clone() for n, p in gem_masks(m).items()})
        counts.append(count_flags(m))
        assert count_effective(m) <= counts[-1]
        for p in gem_masks(m).values():
            assert p.scores.min() >= 0 and p.scores.max() <= 1

    hist, facts = gm.mine(model, data, 0.2, FT, seed=5, epochs=4, progress=False, monitor=monitor)
    assert facts["prunes"] == 3 and facts["stopped_at_epoch"] is None
    assert counts == [FC_N] + flag_schedule(FC_N, 0.2, 3)
    for a, b in zip(flags, flags[1:]):                              # flags never go 0 -> 1
        assert all(not (b[n] & ~a[n]).any() for n in a)
    after = model.state_dict()
    assert all(torch.equal(after[n], t) for n, t in weights.items())  # weights bitwise unchanged
    assert list(hist["epoch"]) == [0, 1, 2, 3] and set(hist["phase"]) == {"mining"}
    assert {"density_effective", "density_flag", "reg_loss"} <= set(hist.columns)
    assert hist["density_flag"].iloc[-1] == pytest.approx(counts[-1] / FC_N)


def test_mining_rows_log_accuracy_before_and_densities_after_each_prune(monkeypatch):
    """Row e of the mining log is what the thesis (upstream hc_iter) logged: the test top-1 of the
    net trained through epoch e, then epoch e's prune, then the densities after it."""
    gem_module = importlib.import_module("pruners.gem_mining")          # where Mining calls it
    from utils.engine.train import evaluate
    data = fake_data()
    model = gem_fc()
    gm = GemMiner(period=1, log_val=False)
    gm.prepare(model, seed=5)
    before = {}
    real_prune = gem_module.bottom_k_prune

    def recording_prune(m, *args, **kwargs):
        before[len(before) + 1] = evaluate(m, data.test_x, data.test_y, data, 1000, "cpu", False)["top1"]
        return real_prune(m, *args, **kwargs)

    monkeypatch.setattr(gem_module, "bottom_k_prune", recording_prune)
    flags = {}
    hist, _ = gm.mine(model, data, 0.2, FT, seed=5, epochs=4, progress=False,
                      monitor=lambda epoch, m: flags.__setitem__(epoch, count_flags(m) / FC_N))
    assert sorted(before) == [1, 2, 3]                     # prunes after epochs 1, 2, 3
    for epoch, top1 in before.items():
        assert hist["top1"].iloc[epoch] == top1
        assert hist["density_flag"].iloc[epoch] == flags[epoch] < 1.0


def test_resnet_mining_freezes_weights_and_bn_beta_stays_zero():
    data = fake_data("cifar10", n_train=16, n_test=8)
    cfg = TrainConfig(epochs=1, batch_size=16, lr=0.1, momentum=0.9, weight_decay=1e-4, bf16=False)
    gm = GemMiner(mining_epochs=1, period=1, lr=0.05, weight_decay=0.0, score_l2=1e-8,
                  batch_size=16, sanity_checks=False, val_size=0)
    torch.manual_seed(0)
    model = resnet20(**GemMiner.model_kwargs["resnet20"])
    gm.prepare(model, seed=0)
    assert "blocks.3.shortcut.0" not in gem_masks(model)
    params = {n: p.clone() for n, p in model.named_parameters() if "scores" not in n}
    gm.mine(model, data, 0.1, cfg, seed=0, epochs=1, progress=False)
    assert all(torch.equal(p, params[n]) for n, p in model.named_parameters() if "scores" not in n)

    torch.manual_seed(0)
    model = resnet20(**GemMiner.model_kwargs["resnet20"])
    res = gm.run(model, data, 0.1, cfg, seed=0, progress=False)["gem-miner"]
    bns = [m for m in res.model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.equal(m.bias, torch.zeros_like(m.bias)) for m in bns)
    assert any(not torch.equal(m.weight, torch.ones_like(m.weight)) for m in bns)   # γ did train
    assert len(res.history) == 1 + 1 + 1


# ----------------------------------------------------------------------------- full runs

@pytest.mark.parametrize("mode", ["thesis", "target"])
def test_run_fc(mode):
    data = fake_data(n_train=640)
    density = 0.2
    gm = GemMiner(period=1, mode=mode, val_size=128)
    res = gm.run(gem_fc(), data, density, FT, seed=21, progress=False)
    assert set(res) == {"gem-miner", "gem-miner-reinit", "gem-miner-shuffle"}
    main = res["gem-miner"]
    E = FT.epochs
    hist = main.history
    assert len(hist) == 2 * E + 1
    assert list(hist["phase"]) == ["mining"] * E + ["rounded"] + ["finetune"] * E
    assert list(hist["epoch"]) == list(range(E)) + [E - 1] + list(range(E, 2 * E))
    assert hist["val_acc"].notna().all()

    final = get_masks(main.model)
    assert {n: m.equal(final[n]) for n, m in get_masks(main.init_model).items()} == {n: True for n in final}
    kept = sum(int(m.sum()) for m in final.values())
    for name, m in final.items():                       # mask = flag ∧ rounded scores, ⊆ support
        flag, scores = main.extras[f"flag.{name}"], main.extras[f"scores.{name}"]
        assert torch.equal(m, flag & scores)
        assert torch.equal(main.support[name], flag)
    assert main.info["mode"] == mode and main.info["kept"] == kept
    assert main.info["flags"] == flag_schedule(FC_N, density, num_prunes(E, 1))[-1]
    if mode == "thesis":
        assert kept <= density * FC_N
        assert kept == round(main.info["density_effective_mined"] * FC_N)
    else:
        assert abs(kept - kept_count(density, FC_N)) <= 0.005 * FC_N
        assert kept == min(kept_count(density, FC_N), main.info["flags"])
    # density column follows the mask; finetuning never changed it
    assert hist["density"].iloc[E:].eq(kept / FC_N).all()
    # pruned weights untouched by gradients: still ± the signed constant, shrunk only by wd
    w0, w1 = raw_weight(main.init_model.layers[1]), raw_weight(main.model.layers[1])
    off = ~final["layers.1"]
    assert torch.equal(torch.sign(w0[off]), torch.sign(w1[off]))

    reinit, shuffle = res["gem-miner-reinit"], res["gem-miner-shuffle"]
    assert all(torch.equal(m, final[n]) for n, m in get_masks(reinit.model).items())
    assert not torch.equal(raw_weight(reinit.init_model.layers[0]), raw_weight(main.init_model.layers[0]))
    shuffled = get_masks(shuffle.model)
    assert all(torch.equal(m, shuffled[n]) for n, m in get_masks(shuffle.init_model).items())
    assert not all(torch.equal(shuffled[n], final[n]) for n in final)
    if mode == "thesis":
        # the thesis's shuffle ANDs permuted flags with the unshuffled scores: per layer a
        # hypergeometric count, whose mean is what the README reports for the thesis's networks
        from utils.runs.thesis_compare import thesis_shuffle_density
        got = sum(int(m.sum()) for m in shuffled.values())
        assert got <= kept
        var = 0.0
        for name in final:
            f, r = main.extras[f"flag.{name}"], main.extras[f"scores.{name}"]
            n, k, p = f.numel(), int(f.sum()), float(r.float().mean())
            var += k * p * (1 - p) * (n - k) / max(n - 1, 1)
        assert abs(got - thesis_shuffle_density(main.extras) * FC_N) <= 4 * var ** 0.5 + 1
    else:
        assert {n: int(m.sum()) for n, m in shuffled.items()} == {n: int(m.sum()) for n, m in final.items()}
    assert len(shuffle.history) == len(reinit.history) == 2 * E + 1


@pytest.mark.parametrize("mode", ["thesis", "target"])
def test_unflag_density_equals_flag_density(mode):
    gm = GemMiner(period=1, mode=mode, unflag=True, sanity_checks=False, val_size=0)
    res = gm.run(gem_fc(), fake_data(), 0.1, FT, seed=3, progress=False)["gem-miner"]
    kept = sum(int(m.sum()) for m in get_masks(res.model).values())
    assert kept == res.info["flags"] == flag_schedule(FC_N, 0.1, 1)[-1]
    assert res.info["unflag"] is True


@pytest.mark.parametrize("mode, expected", [("thesis", 0), ("target", kept_count(0.05, FC_N))])
def test_effective_density_zero_prunes_flags_to_target(mode, expected):
    gm = GemMiner(period=1, mode=mode, score_l2=10.0, sanity_checks=False, val_size=0)
    cfg = TrainConfig(epochs=1, batch_size=128, lr=0.01, momentum=0.9, weight_decay=1e-4)
    res = gm.run(gem_fc(), fake_data(n_train=256), 0.05, cfg, seed=3, progress=False)["gem-miner"]
    assert res.info["stopped_at_epoch"] == 0
    assert res.info["flags"] == kept_count(0.05, FC_N)
    assert res.info["kept"] == expected


def test_sanity_seeds_and_bad_mode():
    gm = GemMiner(mining_epochs=1, sanity_seeds=[21], val_size=0)
    cfg = TrainConfig(epochs=1, batch_size=128, lr=0.01, momentum=0.9)
    assert set(gm.run(gem_fc(), fake_data(n_train=128), 0.5, cfg, seed=42, progress=False)) == {"gem-miner"}
    from utils.errors import UserError
    with pytest.raises(UserError):
        GemMiner(mode="nope")
    with pytest.raises(UserError, match="scope"):
        GemMiner(scope="channel")


# ----------------------------------------------------------------------------- real MNIST

def test_real_mnist_smoke(real_data_dir):
    from utils.engine.data import load_mnist
    data = load_mnist(real_data_dir).subset(11_000, 2000)
    cfg = TrainConfig(epochs=2, batch_size=128, lr=0.01, momentum=0.9, weight_decay=1e-4)
    gm = GemMiner(mining_epochs=6, period=2, sanity_checks=False, val_size=1000)
    res = gm.run(gem_fc(21), data, 0.2, cfg, seed=21, progress=False)["gem-miner"]
    assert abs(res.info["kept"] - kept_count(0.2, FC_N)) <= 0.005 * FC_N
    assert res.info["prunes"] == 2
    hist = res.history
    assert hist["top1"].iloc[-1] > 50 and hist["val_acc"].iloc[-1] > 50
