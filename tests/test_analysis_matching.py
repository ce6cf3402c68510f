"""Matching and network distances NNSTD / SaSD / MAED (SPEC §9.4, §12)."""
import numpy as np
import pytest
import torch

import models
from models import set_masks
from utils.analysis import distance_matrix, get_units, match_units, network_distance, nnstd, permute_inputs
from utils.analysis.distances import flat_distance, maed_matrix

METRICS = ("nnstd", "sasd", "maed")


def random_net(sizes, density, seed, signed=True):
    rng = np.random.default_rng(seed)
    units = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        mask = rng.random((n_out, n_in)) < density
        units.append(mask * (rng.normal(size=(n_out, n_in)) if signed else 1.0))
    return units


def permute_chain(units, perms):
    """Permute the hidden units of a Linear/conv chain: rows of layer l and inputs of l+1."""
    out = [u.copy() for u in units]
    for layer, p in enumerate(perms):
        out[layer] = out[layer][p]
        out[layer + 1] = permute_inputs(out[layer + 1], p)
    return out


# ----------------------------------------------------------------------------- set cases

def test_disjoint():
    r = nnstd([[{0, 1}, {1}]], [[{2, 3}, {2}]], n_inputs=4)
    np.testing.assert_array_equal(r.layers, [1.0])


def test_hand_example():
    r = nnstd([[{0, 1}, {2}]], [[{0}, {1, 2}]], match_output=True)
    np.testing.assert_array_equal(r.perms[0], [0, 1])  # identity cost 1.0 beats the swap's 5/3
    assert r.layers[0] == 0.5 and r.mean_ba == 0.5


def test_empty_units():
    r = nnstd([[set(), {0}]], [[set(), set()]], n_inputs=1, match_output=True)
    assert r.layers[0] == 0.5


def test_hidden_permutation_6_5_3():
    a = [[{0, 1}, {2}, {3, 4, 5}, {1, 5}, {0, 2, 4}], [{0, 1}, {2, 3}, {4, 0, 2}]]
    order = [3, 0, 4, 1, 2]  # new hidden unit j = old unit order[j]
    b0 = [a[0][k] for k in order]
    b1 = [{order.index(k) for k in s} for s in a[1]]
    r = nnstd(a, [b0, b1])
    np.testing.assert_array_equal(r.layers, [0, 0])
    np.testing.assert_array_equal(r.perms[0], np.argsort(order))


# ----------------------------------------------------------------------------- networks

@pytest.mark.parametrize("density", [0.02, 0.1])
def test_identity_is_zero(density):
    net = random_net((784, 300, 100, 10), density, 0)
    for metric in METRICS:
        r = network_distance(net, net, metric)
        np.testing.assert_array_equal(r.layers, [0, 0, 0])
        assert r.mean == r.mean_ba == r.asymmetry == 0


def test_fc_hidden_permutation_is_zero_for_all_metrics():
    torch.manual_seed(0)
    model = models.fc()
    g = torch.Generator().manual_seed(1)
    set_masks(model, {n: torch.rand(m.weight.shape, generator=g) < 0.2
                      for n, m in models.prunable_layers(model).items()})
    a = get_units(model)
    rng = np.random.default_rng(0)
    b = permute_chain(a, [rng.permutation(100) for _ in range(5)])
    for metric in METRICS:
        r = network_distance(model, b, metric)
        np.testing.assert_array_equal(r.layers, np.zeros(6))
        np.testing.assert_array_equal(r.layers_ba, np.zeros(6))
    # without propagation the deeper layers no longer line up
    assert (network_distance(a, b, propagate=False).layers[1:] > 0.5).all()


def conv_net(seed):
    rng = np.random.default_rng(seed)
    shapes = [(4, 2, 3, 3), (5, 4, 3, 3), (3, 5 * 2 * 2), (2, 3)]
    return [(rng.random(s) < 0.5) * rng.normal(size=s) for s in shapes]


def test_conv_to_linear_permutation_is_zero():
    a = conv_net(0)
    rng = np.random.default_rng(1)
    perms = [rng.permutation(4), rng.permutation(5), rng.permutation(3)]
    b = permute_chain(a, perms)
    # the linear layer's columns move in contiguous H·W = 4 blocks per channel (NCHW)
    blocks = a[2].reshape(3, 5, 4)[:, perms[1]].reshape(3, 20)
    np.testing.assert_array_equal(b[2], blocks[perms[2]])
    for metric in METRICS:
        r = network_distance(a, b, metric)
        np.testing.assert_array_equal(r.layers, [0, 0, 0, 0])
    # a channels-last (NHWC) flattening would not line up
    wrong = [u.copy() for u in b]
    wrong[2] = a[2].reshape(3, 4, 5)[:, :, perms[1]].reshape(3, 20)[perms[2]]
    assert network_distance(a, wrong).layers[2] > 0


def test_permute_inputs_rejects_bad_shapes():
    with pytest.raises(ValueError):
        permute_inputs(np.zeros((3, 7)), np.arange(2))
    np.testing.assert_array_equal(permute_inputs(np.arange(8.0).reshape(2, 4), np.array([1, 0])),
                                  [[2, 3, 0, 1], [6, 7, 4, 5]])


def permute_resnet(units, rng):
    """Permute a ResNet-20's hidden channels: one permutation per residual stream (stage),
    a free one per block-internal conv1 output."""
    u = [x.copy() for x in units]
    streams = [rng.permutation(c) for c in (16, 32, 64)]
    u[0] = u[0][streams[0]]
    for k in range(9):
        c1, c2, stage = 1 + 2 * k, 2 + 2 * k, k // 3
        inner = rng.permutation(u[c1].shape[0])
        source = streams[stage - 1] if k in (3, 6) else streams[stage]
        u[c1] = u[c1][inner][:, source]
        u[c2] = u[c2][streams[stage]][:, inner]
    u[19] = u[19][:, streams[2]]
    return u, streams


def test_resnet_residual_permutation_is_zero():
    torch.manual_seed(0)
    model = models.resnet20()
    g = torch.Generator().manual_seed(3)
    set_masks(model, {n: torch.rand(m.weight.shape, generator=g) < 0.3
                      for n, m in models.prunable_layers(model).items()})
    a = get_units(model)
    b, streams = permute_resnet(a, np.random.default_rng(0))
    for metric in METRICS:
        r = network_distance(model, b, metric)
        np.testing.assert_array_equal(r.layers, np.zeros(20))
    np.testing.assert_array_equal(r.perms[0], np.argsort(streams[0]))
    # every stage shares one stream permutation: stem/block-0 conv2 leads, later conv2s reuse it
    for follower, leader in ((2, 0), (4, 0), (6, 0), (10, 8), (12, 8), (16, 14), (18, 14)):
        assert r.perms[follower] is r.perms[leader]
    np.testing.assert_array_equal(r.perms[14], np.argsort(streams[2]))
    with pytest.raises(ValueError):
        network_distance(a[:5], b[:5], topology="resnet20")


def test_dense_layer_identity_is_one_minus_density():
    a = random_net((784, 300, 100, 10), 0.05, 4)
    ones = [np.ones_like(u) for u in a]
    r = network_distance(a, ones, "nnstd")
    expected = [1 - np.count_nonzero(u) / u.size for u in a]
    np.testing.assert_allclose(r.layers, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(r.layers_ba, expected, rtol=0, atol=1e-12)


def test_symmetry():
    a = random_net((784, 300, 100, 10), 0.1, 5)
    b = random_net((784, 300, 100, 10), 0.1, 6)
    for metric in METRICS:
        ab = network_distance(a, b, metric, both_directions=False)
        ba = network_distance(b, a, metric, both_directions=False)
        assert ab.layers[0] == pytest.approx(ba.layers[0], abs=1e-12)
        np.testing.assert_allclose(ab.layers, ba.layers, atol=1e-2)
        full = network_distance(a, b, metric)
        np.testing.assert_array_equal(full.layers_ba, ba.layers)
        assert full.asymmetry == pytest.approx(ab.mean - ba.mean)
        assert full.value == pytest.approx((ab.mean + ba.mean) / 2)


def test_output_layer_identity_unless_matched():
    a = random_net((20, 8, 4), 0.5, 7)
    b = [a[0], a[1][[1, 0, 3, 2]]]
    assert network_distance(a, b).layers[1] > 0
    assert network_distance(a, b, match_output=True).layers[1] == 0
    assert network_distance(a, b, compat="liu2020").layers[1] == 0


def test_thesis_and_liu_compat():
    a = random_net((50, 12, 6, 3), 0.4, 8)
    rng = np.random.default_rng(9)
    b = permute_chain(a, [rng.permutation(12), rng.permutation(6)])
    b[2] = b[2][[2, 0, 1]]  # output rows permuted too
    np.testing.assert_array_equal(network_distance(a, b, compat="liu2020").layers, [0, 0, 0])
    thesis = network_distance(a, b, "nnstd", compat="thesis")
    assert thesis.layers[0] == 0 and (thesis.layers[1:] > 0).all()  # no propagation
    # flattened-layer reduction: the metric on the whole row-aligned layer
    for layer in range(3):
        assert thesis.layers[layer] == flat_distance(a[layer], b[layer][thesis.perms[layer]], "nnstd")
    assert network_distance(a, b, compat="thesis", solver="networkx").mean == pytest.approx(thesis.mean)
    with pytest.raises(ValueError):
        network_distance(a, b, compat="nope")


def test_match_units_solvers():
    cost = np.array([[0.0, 1.0], [1.0, 3.0]])
    np.testing.assert_array_equal(match_units(cost), [1, 0])  # exact min-cost: 2 < 3
    # the thesis's networkx (>= 2.8) min_weight_matching: weights max+1-w, an exact min-cost
    # assignment without NaN
    np.testing.assert_array_equal(match_units(cost, solver="networkx"), [1, 0])
    rng = np.random.default_rng(10)
    for _ in range(20):
        c = rng.random((6, 6))
        p = match_units(c)
        assert sorted(p) == list(range(6))
        assert c[np.arange(6), p].sum() <= c[np.arange(6), rng.permutation(6)].sum() + 1e-12
    # ties: the identity is kept when it is optimal
    np.testing.assert_array_equal(match_units(np.zeros((4, 4))), np.arange(4))
    np.testing.assert_array_equal(match_units(np.array([[1.0, 0.0], [0.0, 1.0]])), [1, 0])


def test_distance_matrix():
    nets = [random_net((30, 10, 5, 3), d, s) for d, s in ((0.3, 0), (0.3, 1), (0.6, 2))]
    df = distance_matrix(nets, "sasd", names=["a", "b", "c"])
    assert list(df.index) == list(df.columns) == ["a", "b", "c"]
    np.testing.assert_array_equal(df.values, df.values.T)
    np.testing.assert_array_equal(np.diag(df.values), 0)
    assert df.loc["a", "c"] == network_distance(nets[0], nets[2], "sasd").value
    asym = df.attrs["asymmetry"].values
    np.testing.assert_array_equal(asym, -asym.T)
    thesis = distance_matrix(nets, "maed", compat="thesis")
    assert thesis.loc[0, 1] == thesis.loc[1, 0] == network_distance(nets[0], nets[1], "maed", compat="thesis").mean
    with pytest.raises(ValueError):
        distance_matrix(nets, names=["x"])


def test_thesis_maed_nan_for_empty_units():
    """compat="thesis": MAED(empty, empty) = 0/0 = NaN goes into the networkx matching (MAED-2).

    Values checked against the thesis's own ``find_min_matching`` + ``mean_absolute_error_distance``
    run with networkx 2.8.8.
    """
    a, b = np.array([[1.0, 2.0], [0.0, 0.0]]), np.zeros((2, 2))
    assert maed_matrix(a, b)[1, 0] == 0.0                       # corrected: 0/0 := 0
    nan = maed_matrix(a, b, empty="nan")
    assert np.isnan(nan[1, 0]) and nan[0, 0] == 1.0
    with pytest.raises(ValueError):
        maed_matrix(a, b, empty="one")
    # unit 0 empty in both nets: max(w) is NaN, every weight NaN -> an arbitrary perfect matching
    A = np.array([[0.0, 0.0], [1.0, 2.0], [2.0, 1.0]])
    np.testing.assert_array_equal(match_units(maed_matrix(A, A), solver="networkx"), [0, 1, 2])
    np.testing.assert_array_equal(match_units(maed_matrix(A, A, empty="nan"), solver="networkx"), [2, 0, 1])
    # NaN only between the empty units: still pairs the non-empty unit with an empty one
    C = np.array([[1.0, 2.0], [0.0, 0.0], [0.0, 0.0], [3.0, 1.0]])
    np.testing.assert_array_equal(match_units(maed_matrix(C, C, empty="nan"), solver="networkx"), [1, 3, 0, 2])
    # so the thesis puts identical sparse nets at MAED 1; the corrected default keeps 0
    for net in (A, C):
        assert network_distance([net], [net], "maed", compat="thesis").layers[0] == 1.0
        assert network_distance([net], [net], "maed").layers[0] == 0.0
    # without empty units nothing changes
    D = np.array([[1.0, 2.0], [2.0, 1.0], [3.0, 0.5]])
    assert network_distance([D], [D[[2, 0, 1]]], "maed", compat="thesis").layers[0] == 0.0
