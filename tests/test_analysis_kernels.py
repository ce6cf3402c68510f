"""Kernel graphs, per-filter cluster ratios and common kernels (SPEC §9.6)."""
import numpy as np
import pytest
import torch

import models
from models import set_masks
from utils.analysis import common_kernels, get_units, kernel_cluster_ratio, kernel_ratios, model_cluster_ratios


def kernel(*cells, shape=(3, 3)):
    k = np.zeros(shape)
    for c in cells:
        k[c] = 1.0
    return k


def test_kernel_cluster_ratio_spec_cases():
    assert kernel_cluster_ratio(kernel()) == 0
    assert kernel_cluster_ratio(kernel((1, 1))) == 0
    assert kernel_cluster_ratio(np.ones((3, 3))) == 1
    assert kernel_cluster_ratio(kernel((0, 0), (0, 1), (2, 2)), "4") == 0.5
    assert kernel_cluster_ratio(kernel((0, 0), (1, 1)), "4") == 0
    assert kernel_cluster_ratio(kernel((0, 0), (1, 1)), "8") == 1


def test_kernel_cluster_ratio_more_cases_and_rounding():
    # three components under "4": {(0,0),(0,1)}, {(2,0)}, {(2,2)} -> 1/3
    k = kernel((0, 0), (0, 1), (2, 0), (2, 2))
    assert kernel_cluster_ratio(k, "4") == pytest.approx(1 / 3)
    assert kernel_cluster_ratio(k, "4", thesis=True) == 0.33
    assert kernel_cluster_ratio(k, "8") == pytest.approx(1 / 3)
    assert kernel_cluster_ratio(kernel((0, 0), (1, 1), (2, 2), (0, 2)), "8") == 1  # X shape
    assert kernel_cluster_ratio(np.array([1.0, -2.0, 0, 3.0]), "1d") == 0.5
    assert kernel_cluster_ratio(np.array([1.0, 0, 3.0, 0, 5.0]), "1d") == 0
    assert kernel_cluster_ratio(np.array([0.0, 1.0, 1.0, 1.0]), "1d") == 1
    with pytest.raises(ValueError):
        kernel_cluster_ratio(k, "6")


def test_lookup_table_matches_direct_labelling():
    rng = np.random.default_rng(0)
    layer = (rng.random((8, 12, 3, 3)) < 0.4) * rng.normal(size=(8, 12, 3, 3))
    for conn in ("4", "8"):
        fast = kernel_ratios(layer, conn)
        slow = np.array([[kernel_cluster_ratio(layer[o, i], conn) for i in range(12)] for o in range(8)])
        np.testing.assert_array_equal(fast, slow)
    # non-3x3 kernels take the generic path
    big = (rng.random((2, 3, 5, 5)) < 0.4).astype(float)
    np.testing.assert_array_equal(kernel_ratios(big, "4"),
                                  [[kernel_cluster_ratio(big[o, i], "4") for i in range(3)] for o in range(2)])


def test_model_cluster_ratios_filter_means():
    conv = np.zeros((2, 3, 3, 3))
    conv[0, 0] = kernel((0, 0), (0, 1))          # 1
    conv[0, 1] = kernel((0, 0), (0, 1), (2, 2))  # 0.5
    # conv[0, 2] empty -> 0 (or skipped)
    conv[1, 0] = kernel((0, 0), (0, 1), (2, 0), (2, 2))  # 1/3
    fc = np.array([[1.0, 1.0, 0, 1.0], [0, 0, 0, 0]])
    out = model_cluster_ratios([conv, fc])
    np.testing.assert_allclose(out[0], [0.5, 1 / 9])
    np.testing.assert_allclose(out[1], [0.5, 0.0])
    skip = model_cluster_ratios([conv, fc], skip_empty=True)
    np.testing.assert_allclose(skip[0], [0.75, 1 / 3])
    assert skip[1][0] == 0.5 and np.isnan(skip[1][1])
    thesis = model_cluster_ratios([conv, fc], thesis=True)
    np.testing.assert_array_equal(thesis[0], [0.5, 0.11])  # kernel 0.33 -> filter 0.11
    with pytest.raises(ValueError):
        model_cluster_ratios([conv, fc], dense=None)
    np.testing.assert_allclose(model_cluster_ratios([fc, fc], dense="all")[0], [0.5, 0.0])


def test_resnet_cluster_ratios_and_common_kernels_sum():
    torch.manual_seed(0)
    model = models.resnet20()
    g = torch.Generator().manual_seed(5)
    set_masks(model, {n: torch.rand(m.weight.shape, generator=g) < 0.1
                      for n, m in models.prunable_layers(model).items()})
    units = get_units(model)
    ratios = model_cluster_ratios(units)
    assert [len(r) for r in ratios] == [u.shape[0] for u in units]
    assert all(((r >= 0) & (r <= 1)).all() for r in ratios)

    top = common_kernels(units, top=None)
    assert sum(c for _, c in top) == 29_744 == 16 * 3 + 6 * 256 + 512 + 5 * 1024 + 2048 + 5 * 4096
    counts = [c for _, c in top]
    assert counts == sorted(counts, reverse=True)
    assert not top[0][0].any()  # at 10% density the empty kernel is the most common
    assert len(common_kernels(model)) == 20


def test_common_kernels_ties_are_lexicographic():
    conv = np.zeros((1, 4, 3, 3))
    conv[0, 0] = kernel((2, 2))
    conv[0, 1] = kernel((0, 0))
    conv[0, 2] = kernel((0, 0))
    conv[0, 3] = kernel((1, 1))
    top = common_kernels([conv, np.ones((2, 1))])
    assert [c for _, c in top] == [2, 1, 1]
    np.testing.assert_array_equal(top[0][0], kernel((0, 0)).astype(bool))
    np.testing.assert_array_equal(top[1][0], kernel((2, 2)).astype(bool))  # 000000001 < 000010000
    np.testing.assert_array_equal(top[2][0], kernel((1, 1)).astype(bool))
