"""Models match SPEC §3/§5 and the mask mechanism keeps its invariants (SPEC §7)."""
import copy

import pytest
import torch

import models
from models.masks import get_masks, mask_of, prunable_layers, raw_weight, set_masks


def random_masks(model, density=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(raw_weight(m).shape, generator=g) < density
            for n, m in prunable_layers(model).items()}


def n_prunable(model):
    return sum(raw_weight(m).numel() for m in prunable_layers(model).values())


def test_prunable_counts_match_spec():
    fc = models.fc()
    assert n_prunable(fc) == 119_400 and len(prunable_layers(fc)) == 6
    assert sum(p.numel() for n, p in fc.named_parameters() if n.endswith("bias")) == 500
    assert fc.layers[-1].bias is None
    assert n_prunable(models.resnet20()) == 270_896 and len(prunable_layers(models.resnet20())) == 22
    gem = models.resnet20(prune_shortcuts=False, fc_bias=False)
    assert n_prunable(gem) == 268_336 and gem.fc.bias is None
    assert len(models.analysis_layers(models.resnet20())) == 20


def test_resnet_state_dict_order_puts_shortcuts_after_their_block():
    names = list(prunable_layers(models.resnet20()))
    assert names[0] == "conv1" and names[-1] == "fc"
    assert names[9] == "blocks.3.shortcut.0" and names[16] == "blocks.6.shortcut.0"


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_resnet_forward_shapes(shortcut):
    out = models.resnet20(shortcut=shortcut)(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)


def test_masked_weights_are_zero_in_forward_and_never_updated():
    torch.manual_seed(0)
    model = models.fc()
    masks = random_masks(model)
    set_masks(model, masks)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True)
    for _ in range(5):
        loss = model(torch.randn(8, 784)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for name, m in prunable_layers(model).items():
        assert torch.all(m.weight[~masks[name]] == 0)
        assert torch.all(raw_weight(m)[~masks[name]] == 0)
        assert torch.equal(mask_of(m), masks[name])


def test_masks_survive_state_dict_deepcopy_to_and_double():
    torch.manual_seed(1)
    model = models.resnet20()
    masks = random_masks(model, 0.2)
    set_masks(model, masks)
    fresh = models.resnet20()
    fresh.load_state_dict(model.state_dict())
    for other in (fresh, copy.deepcopy(model), copy.deepcopy(model).to("cpu"), copy.deepcopy(model).double()):
        got = get_masks(other)
        assert all(torch.equal(got[n], masks[n]) and got[n].dtype == torch.bool for n in masks)
    double = copy.deepcopy(model).double().eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(double(x.double()).float(), model.eval()(x), atol=1e-4)


def test_density_helpers_count_masks_not_zeros():
    model = models.fc()
    assert models.density(model) == 1.0
    masks = {n: torch.zeros_like(m, dtype=torch.bool) for n, m in
             ((n, raw_weight(m)) for n, m in prunable_layers(model).items())}
    masks["layers.5"][:, :50] = True
    set_masks(model, masks)
    with torch.no_grad():
        raw_weight(model.layers[5])[:, 0] = 0.0  # a zero *kept* weight still counts as kept
    assert models.density(model) == pytest.approx(500 / 119_400)
    assert models.layer_densities(model)["layers.5"] == pytest.approx(0.5)


def test_random_fc_structure_matches_spec():
    model = models.random_fc(21)
    masks = get_masks(model)
    assert not masks["layers.0"][7:].any()
    for i in range(1, 5):
        assert not masks[f"layers.{i}"][31:].any()
    dens = models.layer_densities(model)
    assert 0.026 <= dens["layers.0"] <= 0.0275
    assert all(0.132 <= dens[f"layers.{i}"] <= 0.142 for i in range(1, 5))
    assert 0.55 <= dens["layers.5"] <= 0.63
    assert 0.067 <= models.density(model) <= 0.069
    again = get_masks(models.random_fc(21))
    assert all(torch.equal(masks[n], again[n]) for n in masks)
    assert not torch.equal(get_masks(models.random_fc(42))["layers.1"], masks["layers.1"])


def test_same_seed_same_init():
    torch.manual_seed(21)
    a = models.fc()
    torch.manual_seed(21)
    b = models.fc()
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
