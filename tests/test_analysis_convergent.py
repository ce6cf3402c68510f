"""Convergent learning: activations, correlations, matchings, similarity (SPEC §9.5, §12)."""
import copy

import numpy as np
import pytest
import torch

import models
from models import set_masks
from utils.analysis import (
    CoMoments,
    activations,
    correlation,
    dead_units,
    get_units,
    max_matching,
    reorder,
    semi_matching,
    similarity,
    similarity_matrix,
)


def rand_X(n=500, p=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, p)) @ rng.normal(size=(p, p))


# ----------------------------------------------------------------------------- correlation and matchings

def test_self_correlation_is_identity_matched():
    X = rand_X()
    C = correlation(X)
    np.testing.assert_allclose(np.diag(C), 1, rtol=0, atol=1e-12)
    np.testing.assert_allclose(C, C.T, atol=1e-12)
    np.testing.assert_allclose(C, np.corrcoef(X, rowvar=False), atol=1e-10)
    for order in (semi_matching(C), max_matching(C)):
        np.testing.assert_array_equal(order, np.arange(8))
        assert C[np.arange(8), order].mean() == pytest.approx(1, abs=1e-12)


def test_permuted_copy_is_recovered():
    X = rand_X(seed=1)
    P = np.random.default_rng(2).permutation(8)
    C = correlation(X, X[:, P])
    order = max_matching(C)
    np.testing.assert_array_equal(order, np.argsort(P))
    np.testing.assert_allclose(C[np.arange(8), order], 1, atol=1e-12)
    np.testing.assert_allclose(np.diag(reorder(C, order)), 1, atol=1e-12)


def test_affine_maps_and_negative_pairs():
    X = rand_X(p=4, seed=3)
    assert correlation(X[:, :1], 2.5 * X[:, :1] + 7)[0, 0] == pytest.approx(1, abs=1e-12)
    assert correlation(X[:, :1], -0.3 * X[:, :1] + 1)[0, 0] == pytest.approx(-1, abs=1e-12)
    # Y pairs each unit with a negated copy of itself and a positive copy of another unit
    Y = np.column_stack([-X[:, 0], X[:, 0], -X[:, 2], X[:, 2]])
    Xs = np.column_stack([X[:, 0], X[:, 1], X[:, 2], X[:, 3]])
    C = correlation(Xs, Y)
    order = max_matching(C)
    assert order[0] == 1 and order[2] == 3  # the +1 copies, never the -1 ones


def test_spec_two_by_two():
    C = np.array([[0.9, 0.8], [0.85, 0.1]])
    np.testing.assert_array_equal(semi_matching(C), [0, 0])
    order = max_matching(C)
    np.testing.assert_array_equal(order, [1, 0])
    assert C[np.arange(2), order].sum() == pytest.approx(1.65)
    assert np.trace(C) == 1.0
    np.testing.assert_array_equal(reorder(C, order), [[0.8, 0.9], [0.1, 0.85]])


def test_dead_units_get_zero_and_are_counted():
    X = rand_X(p=3, seed=4)
    X[:, 1] = 0.7
    C = correlation(X)
    assert not np.isnan(C).any()
    np.testing.assert_array_equal(C[1], 0)
    np.testing.assert_array_equal(C[:, 1], 0)
    assert dead_units(X) == 1
    acc = CoMoments()
    acc.update(X, X)
    assert acc.dead_x.tolist() == [False, True, False]


def test_ignore_diag_never_returns_fixed_points():
    rng = np.random.default_rng(5)
    for _ in range(50):
        C = rng.random((6, 6)) + 5 * np.eye(6)
        assert (max_matching(C, ignore_diag=True) != np.arange(6)).all()
        assert (semi_matching(C, ignore_diag=True) != np.arange(6)).all()
        order = max_matching(C, ignore_diag=True)
        assert sorted(order) == list(range(6))


def test_streaming_equals_one_shot():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(1000, 5)) + 1e4  # large means: a naive E[xy] - E[x]E[y] loses digits
    Y = rng.normal(size=(1000, 4)) * 3 - 2e4
    acc = CoMoments()
    for s in range(0, 1000, 97):
        acc.update(X[s:s + 97], Y[s:s + 97])
    np.testing.assert_allclose(acc.correlation(), correlation(X, Y), atol=1e-12)
    ref = np.corrcoef(X, Y, rowvar=False)[:5, 5:]
    np.testing.assert_allclose(acc.correlation(), ref, atol=1e-10)


# ----------------------------------------------------------------------------- activations

def masked_fc(seed, density=0.3):
    torch.manual_seed(seed)
    model = models.fc()
    g = torch.Generator().manual_seed(seed + 100)
    set_masks(model, {n: torch.rand(m.weight.shape, generator=g) < density
                      for n, m in models.prunable_layers(model).items()})
    return model


def images_fc(n=64, seed=0):
    return torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_fc_real_and_linearised_activations():
    model = masked_fc(0)
    x = images_fc()
    acts = activations(model, x)
    assert [a.shape for a in acts] == [(64, 100)] * 5 + [(64, 10)]
    assert all((a >= 0).all() for a in acts[:5])
    np.testing.assert_allclose(acts[-1], model(x).detach().double().numpy(), atol=1e-5)
    lin = activations(model, x, mode="linearised")
    h = x.double().flatten(1).numpy()
    for a, w in zip(lin, get_units(model)):
        h = h @ w.T
        np.testing.assert_allclose(a, h, rtol=1e-10, atol=1e-10)
    assert model.training  # mode restored


def test_resnet_activations_shapes():
    torch.manual_seed(0)
    model = models.resnet20()
    x = torch.randn(1, 3, 32, 32)
    acts = activations(model, x)
    assert [a.shape for a in acts] == ([(1024, 16)] * 4 + [(256, 32)] * 3 + [(64, 64)] * 3 + [(1, 10)])
    model.eval()
    np.testing.assert_allclose(acts[-1], model(x).detach().double().numpy(), atol=1e-4)
    with pytest.raises(ValueError):
        activations(model, x, mode="nope")


def test_linearised_conv_chain_is_bare_ops():
    """Thesis get_feature_map: conv2d(padding=1) without stride/BN/ReLU, then avg-pool + linear."""
    import torch.nn.functional as F
    rng = np.random.default_rng(8)
    units = [rng.normal(size=(4, 3, 3, 3)), rng.normal(size=(6, 4, 3, 3)), rng.normal(size=(5, 6))]
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    acts = activations(units, x, mode="linearised")
    h1 = F.conv2d(x, torch.as_tensor(units[0]), padding=1)
    h2 = F.conv2d(h1, torch.as_tensor(units[1]), padding=1)
    logits = h2.mean(dim=(2, 3)) @ torch.as_tensor(units[2]).T
    np.testing.assert_allclose(acts[0], h1.permute(0, 2, 3, 1).reshape(-1, 4).numpy(), atol=1e-12)
    np.testing.assert_allclose(acts[1], h2.permute(0, 2, 3, 1).reshape(-1, 6).numpy(), atol=1e-12)
    np.testing.assert_allclose(acts[2], logits.numpy(), atol=1e-12)
    assert [a.shape for a in acts] == [(128, 4), (128, 6), (2, 5)]  # every spatial position a sample
    flat = activations([rng.normal(size=(5, 6 * 8 * 8))], h2, mode="linearised")  # conv -> flatten (NCHW)
    assert flat[0].shape == (2, 5)


# ----------------------------------------------------------------------------- similarity

def permuted_fc(model, seed):
    """A functionally identical copy with hidden units permuted."""
    other = copy.deepcopy(model)
    rng = np.random.default_rng(seed)
    layers = list(other.layers)
    perms = []
    with torch.no_grad():
        for layer in range(5):
            p = torch.as_tensor(rng.permutation(100))
            perms.append(p.numpy())
            for t in (models.raw_weight(layers[layer]), models.mask_of(layers[layer])):
                t.copy_(t[p])
            layers[layer].bias.copy_(layers[layer].bias[p])
            for t in (models.raw_weight(layers[layer + 1]), models.mask_of(layers[layer + 1])):
                t.copy_(t[:, p])
    return other, perms


def test_similarity_of_permuted_copy_equals_self_similarity():
    model = masked_fc(1)
    other, perms = permuted_fc(model, 0)
    x = images_fc(120)
    np.testing.assert_allclose(other(x).detach(), model(x).detach(), atol=1e-5)
    self_sim = similarity(model, model, x, batch_size=64)
    sim = similarity(model, other, x, batch_size=64)
    np.testing.assert_allclose(sim.layers, self_sim.layers, atol=1e-9)
    assert sim.dead_a == sim.dead_b == self_sim.dead_a
    n_dead = np.array(sim.dead_a[:5])
    assert n_dead.sum() > 0                            # the test exercises dead units
    for layer in range(5):                                 # live units find their copies, dead ones stay out
        order, expected = sim.orders[layer], np.argsort(perms[layer])
        live = order >= 0
        assert live.sum() == 100 - n_dead[layer]
        np.testing.assert_array_equal(order[live], expected[live])
    np.testing.assert_allclose(sim.layers, 1.0, atol=1e-9)      # a net against itself is 1
    # the thesis's convention: dead units count as correlation 0, so the layer mean drops
    zero = similarity(model, other, x, batch_size=64, dead="zero")
    np.testing.assert_allclose(zero.layers[:5], 1 - n_dead / 100, atol=1e-9)
    with pytest.raises(ValueError, match="dead must be"):
        similarity(model, other, x, dead="ignore")
    lin = similarity(model, other, x, compat="thesis", keep_correlations=True)
    assert lin.mean == pytest.approx(1, abs=1e-9)
    assert len(lin.correlations) == 6 and lin.correlations[0].shape == (100, 100)


def test_output_layer_identity_vs_thesis_matching():
    X = rand_X(n=300, p=10, seed=7)
    units = [np.eye(10)]  # a one-layer "net": identity output
    swapped = [np.eye(10)[[1, 0] + list(range(2, 10))]]
    x = torch.as_tensor(X)
    default = similarity(units, swapped, x, mode="linearised")
    matched = similarity(units, swapped, x, mode="linearised", match_output=True)
    assert default.mean == pytest.approx(np.mean(np.diag(correlation(X, X[:, [1, 0] + list(range(2, 10))]))))
    assert matched.mean == pytest.approx(1, abs=1e-12)


def test_similarity_matrix_matches_pairwise():
    nets = [masked_fc(s) for s in (2, 3, 4)]
    x = images_fc(64, seed=1)
    df = similarity_matrix(nets, x, names=["a", "b", "c"], batch_size=64)
    assert df.shape == (3, 3)
    np.testing.assert_allclose(df.values, df.values.T, atol=1e-12)
    for i, j in ((0, 1), (1, 2), (2, 2)):
        assert df.iloc[i, j] == pytest.approx(similarity(nets[i], nets[j], x).mean, abs=1e-10)
    assert all(df.loc[a, a] > df.loc[a, b] for a in "abc" for b in "abc" if a != b)
    semi = similarity_matrix(nets, x, matching="semi", compat="thesis")
    assert semi.loc[0, 1] == pytest.approx(similarity(nets[0], nets[1], x, matching="semi", compat="thesis").mean,
                                           abs=1e-10)
    assert semi.loc[0, 0] == pytest.approx(1, abs=1e-9)
