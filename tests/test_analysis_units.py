"""get_units, layer_density, masked_units (SPEC §9, §9.1) and the Random-FC structure (§12)."""
import numpy as np
import pytest
import torch

import models
from models import set_masks
from utils.analysis import as_units, get_units, layer_density, masked_units


def random_masks(model, density, seed):
    g = torch.Generator().manual_seed(seed)
    return {name: torch.rand(m.weight.shape, generator=g) < density
            for name, m in models.prunable_layers(model).items()}


def test_fc_units_are_masked_float64_weights():
    torch.manual_seed(0)
    model = models.fc()
    masks = random_masks(model, 0.2, 1)
    set_masks(model, masks, zero_pruned=False)
    units = get_units(model)
    assert [u.shape for u in units] == [(100, 784)] + [(100, 100)] * 4 + [(10, 100)]
    for u, (name, layer) in zip(units, models.prunable_layers(model).items()):
        assert u.dtype == np.float64
        expected = models.raw_weight(layer).detach().double() * masks[name]
        np.testing.assert_array_equal(u, expected.numpy())
        assert np.count_nonzero(u) == int(masks[name].sum())


def test_masks_override_replaces_effective_mask():
    torch.manual_seed(0)
    model = models.fc()
    set_masks(model, random_masks(model, 0.1, 2), zero_pruned=False)  # flagged weights keep values
    flags = torch.zeros(100, 784, dtype=torch.bool)
    flags[3, 5] = True
    units = get_units(model, masks={"layers.0": flags})
    assert np.count_nonzero(units[0]) == 1 and units[0][3, 5] != 0
    np.testing.assert_array_equal(units[1], get_units(model)[1])
    with pytest.raises(KeyError):
        get_units(model, masks={"nope": flags})


def test_resnet_units_exclude_shortcuts():
    torch.manual_seed(0)
    units = get_units(models.resnet20())
    assert len(units) == 20
    assert units[0].shape == (16, 3, 3, 3) and units[-1].shape == (10, 64)
    assert units[7].shape == (32, 16, 3, 3) and units[8].shape == (32, 32, 3, 3)
    assert all(u.shape[2:] == (3, 3) for u in units[:19])


def test_as_units_accepts_lists_and_tensors():
    units = as_units([np.ones((2, 3)), torch.zeros(4, 2)])
    assert [type(u) for u in units] == [np.ndarray, np.ndarray]
    assert units[1].shape == (4, 2)
    with pytest.raises(TypeError):
        as_units(np.ones((2, 3)))


def test_layer_density_default_and_thesis():
    torch.manual_seed(0)
    model = models.resnet20()
    masks = random_masks(model, 0.3, 3)
    set_masks(model, masks)
    dens = layer_density(model)
    names = list(models.prunable_layers(model))
    assert list(dens) == names + ["overall"]
    assert "blocks.3.shortcut.0" in dens
    for n in names:
        assert dens[n] == pytest.approx(100 * int(masks[n].sum()) / masks[n].numel(), abs=1e-12)
    kept = sum(int(m.sum()) for m in masks.values())
    assert dens["overall"] == pytest.approx(100 * kept / 270_896, abs=1e-12)

    thesis = layer_density(model, thesis=True)
    idx = [0, 2, 4, 7, 9, 12, 14, 17, 19, 23, 25, 28, 30, 33, 35, 39, 41, 44, 46, 49]
    assert list(thesis) == [f"layer_{i}" for i in idx] + ["overall"]
    analysis = models.analysis_layers(model)
    for key, n in zip(thesis, analysis):
        assert thesis[key] == round(100 * int(masks[n].sum()) / masks[n].numel(), 3)
    kept_a = sum(int(masks[n].sum()) for n in analysis)
    assert thesis["overall"] == round(100 * kept_a / 268_336, 3)


def test_layer_density_fc_thesis_keys_and_override():
    model = models.fc()
    assert list(layer_density(model, thesis=True)) == [f"layer_{i}" for i in (1, 3, 5, 7, 9, 11)] + ["overall"]
    flags = {"layers.5": torch.zeros(10, 100, dtype=torch.bool)}
    d = layer_density(model, masks=flags)
    assert d["layers.5"] == 0.0 and d["layers.0"] == 100.0
    assert d["overall"] == pytest.approx(100 * (119_400 - 1000) / 119_400)
    assert layer_density({"a": torch.tensor([True, False]), "b": torch.tensor([True, True])}) == \
        {"a": 50.0, "b": 100.0, "overall": 75.0}


def test_masked_units_counts_empty_rows_and_filters():
    a = np.array([[0, 0, 0], [1, 0, 0], [0, 0, 0]])
    conv = np.zeros((4, 2, 3, 3))
    conv[1, 0, 2, 2] = -0.5
    assert masked_units([a, conv]) == [2, 3]


def test_random_fc_structure():
    model = models.random_fc(21)
    units = get_units(model)
    assert not units[0][7:].any()
    assert all(not u[31:].any() for u in units[1:5])
    dens = layer_density(model)
    assert 2.6 <= dens["layers.0"] <= 2.75
    assert all(13.2 <= dens[f"layers.{i}"] <= 14.2 for i in range(1, 5))
    assert 55 <= dens["layers.5"] <= 63
    assert 6.7 <= dens["overall"] <= 6.9
    assert masked_units(units)[0] >= 93
    again = get_units(models.random_fc(21))
    assert all(np.array_equal(u != 0, v != 0) for u, v in zip(units, again))
