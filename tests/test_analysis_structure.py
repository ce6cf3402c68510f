"""1-D statistics (SPEC §9.2 table, both modes) and first-layer maps (§9.7)."""
import math

import numpy as np
import pytest

from utils.analysis import (
    cluster_size,
    cluster_sizes,
    count_clusters,
    first_layer_map,
    layer_clusters,
    sign_ratios,
    weight_distance,
    weight_distances,
    weight_positions,
)


def unit(positions, signs=None, n=16):
    u = np.zeros(n)
    signs = [1] * len(positions) if signs is None else signs
    for p, s in zip(positions, signs):
        u[p] = 0.5 * s
    return u


# (p, signs, runs, thesis clusters, default ratios, thesis ratios)
TABLE = [
    ([0, 1, 2, 5, 6, 9], [1, 1, -1, 1, 1, -1], 3, 3, [2 / 3, 1.0], [2 / 3, 1.0]),
    ([0, 1, 5, 6], [1, -1, 1, 1], 2, 2, [0.5, 1.0], [0.5]),
    ([0, 2, 3], None, 2, 1, [1.0], [0.0]),
    ([4], None, 1, 0, [], [0.0]),
    ([6, 7, 8, 10, 13], None, 3, 3, [1.0], [1.0]),
]


@pytest.mark.parametrize("p, signs, runs, thesis_clusters, ratios, thesis_ratios", TABLE)
def test_spec_table(p, signs, runs, thesis_clusters, ratios, thesis_ratios):
    u = unit(p, signs)
    assert count_clusters(u) == runs
    assert count_clusters(u, thesis=True) == thesis_clusters
    np.testing.assert_allclose(sign_ratios(u[None, :]), ratios, rtol=0, atol=1e-15)
    np.testing.assert_allclose(sign_ratios(u[None, :], thesis=True), thesis_ratios, rtol=0, atol=1e-15)


def test_weight_distance_both_modes():
    assert weight_distance(unit([6, 7, 8, 10, 13])) == 1.75
    assert weight_distance(unit([6, 7, 8, 10, 13]), thesis=True) == 1
    assert weight_distance(unit([0, 1, 2, 5, 6, 9])) == 1.8
    assert weight_distance(unit([0, 1, 2, 5, 6, 9]), thesis=True) == 1
    assert weight_distance(unit([0, 28, 56], n=784)) == 28.0  # vertical neighbours in MNIST layer 1
    assert math.isnan(weight_distance(unit([4])))
    assert math.isnan(weight_distance(unit([])))
    assert weight_distance(unit([4]), thesis=True) == 0
    assert weight_distance(unit([]), thesis=True) == 0


def test_weight_distances_excludes_and_counts_short_units():
    layer = np.stack([unit([6, 7, 8, 10, 13]), unit([4]), unit([]), unit([0, 2])])
    values, excluded = weight_distances(layer, return_excluded=True)
    np.testing.assert_array_equal(values, [1.75, 2.0])
    assert excluded == 2
    values, excluded = weight_distances(layer, thesis=True, return_excluded=True)
    np.testing.assert_array_equal(values, [1, 0, 0, 2])
    assert excluded == 0


def test_weight_positions_concatenated_in_unit_order():
    layer = np.stack([unit([3, 9]), unit([]), unit([0, 1, 15])])
    np.testing.assert_array_equal(weight_positions(layer), [3, 9, 0, 1, 15])
    np.testing.assert_allclose(weight_positions(layer, relative=True), np.array([3, 9, 0, 1, 15]) / 16)


def test_cluster_sizes_both_modes():
    assert cluster_size(unit([6, 7, 8, 10, 13])) == pytest.approx(5 / 3)
    assert cluster_size(unit([6, 7, 8, 10, 13]), thesis=True) == 1  # labels [0,0,1,2] -> 4/3
    assert cluster_size(unit([0, 2, 3])) == 1.5
    assert cluster_size(unit([0, 2, 3]), thesis=True) == 2  # labels [1,1]
    assert cluster_size(unit([4]), thesis=True) == 0
    assert math.isnan(cluster_size(unit([])))
    layer = np.stack([unit([0, 1, 2, 3]), unit([5])])
    np.testing.assert_array_equal(cluster_sizes(layer), [4.0, 1.0])
    np.testing.assert_array_equal(layer_clusters(layer), [1, 1])
    np.testing.assert_array_equal(layer_clusters(layer, thesis=True), [1, 0])


def _thesis_pair_walk(p):
    """Independent reference of the thesis's labelling: label each neighbouring pair with
    the number of breaks seen so far and count distinct labels."""
    labels, breaks = [], 0
    for x, y in zip(p[:-1], p[1:]):
        if y != x + 1:
            breaks += 1
        labels.append(breaks)
    return len(set(labels)), (round(len(labels) / len(set(labels))) if labels else 0)


def test_thesis_clusters_match_pair_walk_on_random_units():
    rng = np.random.default_rng(0)
    for _ in range(300):
        u = (rng.random(40) < rng.uniform(0.05, 0.9)) * rng.choice([-1.0, 1.0], 40)
        p = list(np.flatnonzero(u))
        clusters, size = _thesis_pair_walk(p)
        assert count_clusters(u, thesis=True) == clusters
        assert cluster_size(u, thesis=True) == size
        # default: runs; thesis differs exactly when the first run is a singleton
        first_singleton = len(p) >= 2 and p[1] != p[0] + 1
        assert count_clusters(u) - count_clusters(u, thesis=True) == (1 if first_singleton or len(p) == 1 else 0)


def test_sign_ratios_pool_over_units_and_thesis_empty_layer():
    layer = np.stack([unit([0, 1, 5, 6], [1, -1, 1, 1]), unit([2, 3, 4], [-1, -1, 1])])
    np.testing.assert_allclose(sign_ratios(layer), [0.5, 1.0, 1 / 3])
    np.testing.assert_allclose(sign_ratios(layer, thesis=True), [0.5])
    empty = np.zeros((3, 8))
    assert sign_ratios(empty).size == 0
    np.testing.assert_array_equal(sign_ratios(empty, thesis=True), [0.0])


def test_first_layer_map_one_hot():
    layer = np.zeros((100, 784))
    layer[17, 28 * 5 + 9] = -0.25
    for kind, value in (("weights", -0.25), ("count", 1.0)):
        m = first_layer_map(layer, kind=kind)
        assert m.shape == (28, 28)
        assert m[5, 9] == value
        assert np.count_nonzero(m) == 1


def test_first_layer_map_sums_over_units():
    rng = np.random.default_rng(1)
    layer = (rng.random((100, 784)) < 0.1) * rng.normal(size=(100, 784))
    np.testing.assert_allclose(first_layer_map(layer), layer.sum(0).reshape(28, 28))
    np.testing.assert_array_equal(first_layer_map(layer, "count"), (layer != 0).sum(0).reshape(28, 28))
    with pytest.raises(ValueError):
        first_layer_map(layer, "nope")
