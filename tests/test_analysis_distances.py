"""Unit distances NED / SaSD / MAED and their cost matrices (SPEC §9.3, §12)."""
import numpy as np
import pytest

from utils.analysis import (
    cost_matrix,
    flat_distance,
    maed,
    maed_matrix,
    match_units,
    ned,
    ned_matrix,
    sasd,
    sasd_matrix,
)


def test_ned_on_sets():
    assert ned(set(), set()) == 0
    assert ned(set(), {0}) == 1
    assert ned({0, 1}, {2, 3}) == 1
    assert ned({0, 1}, {0}) == 0.5
    assert ned({0, 1}, {1, 2}) == pytest.approx(2 / 3)
    assert ned({2}, {1, 2}) == 0.5
    assert ned(np.array([0, 3.0, 0, -1]), np.array([1.0, 2.0, 0, 0])) == pytest.approx(2 / 3)


def test_sasd_ned_maed_spec_example():
    a, b = np.array([1, -1, 0, 2.0]), np.array([1, 1, 0, 0.0])
    assert sasd(a, b) == pytest.approx(2 / 3)
    assert ned(a, b) == pytest.approx(1 / 3)
    assert maed(a, b) == pytest.approx(2 / 3)


def test_sasd_cases():
    a = np.array([1, -1, 0, 2.0])
    assert sasd(a, -a) == 1
    assert sasd(a, 3 * a) == 0
    assert sasd(np.zeros(4), np.zeros(4)) == 0


def test_sasd_equals_ned_on_binary_vectors():
    rng = np.random.default_rng(0)
    for _ in range(1000):
        n = rng.integers(1, 30)
        a = (rng.random(n) < rng.random()).astype(float)
        b = (rng.random(n) < rng.random()).astype(float)
        assert sasd(a, b) == ned(a, b)


@pytest.mark.parametrize("p, expected", [(0.1, 0.9737), (0.31, 0.908)])
def test_sasd_random_baseline(p, expected):
    rng = np.random.default_rng(1)
    n = 20_000
    a = (rng.random(n) < p) * rng.choice([-1.0, 1.0], n)
    b = (rng.random(n) < p) * rng.choice([-1.0, 1.0], n)
    assert 1 - p / (2 * (2 - p)) == pytest.approx(expected, abs=5e-4)
    assert sasd(a, b) == pytest.approx(expected, abs=0.01)


def test_maed_cases():
    assert maed([1, 0], [0, 1]) == 1
    assert maed([1, 2, 3], [1, 2, 4]) == pytest.approx(0.2)
    assert maed([1, 2, 3], [3, 2, 1]) == 1
    a = np.array([0.3, -1.2, 0, 5])
    assert maed(a, a) == 0
    assert maed([2.0, 2.0, 2.0], [2.0, 2.0, 2.0]) == 0  # 0/0 := 0, not NaN
    rng = np.random.default_rng(2)
    for _ in range(200):
        x, y = rng.normal(size=7), rng.normal(size=7)
        assert 0 <= maed(x, y) <= 1 + 1e-12


def test_matrices_match_pairwise_definitions():
    rng = np.random.default_rng(3)
    A = (rng.random((7, 3, 3, 3)) < 0.3) * rng.normal(size=(7, 3, 3, 3))
    B = (rng.random((5, 3, 3, 3)) < 0.3) * rng.normal(size=(5, 3, 3, 3))
    A[0] = 0
    B[1] = 0
    B[2] = A[3]
    for metric, pair, matrix in (("nnstd", ned, ned_matrix), ("sasd", sasd, sasd_matrix), ("maed", maed, maed_matrix)):
        E = cost_matrix(A, B, metric)
        assert E.shape == (7, 5)
        np.testing.assert_array_equal(E, matrix(A, B))
        for i in range(7):
            for j in range(5):
                assert E[i, j] == pytest.approx(pair(A[i], B[j]), abs=1e-12)
        assert E[3, 2] == 0
    assert cost_matrix(A, B, "ned")[0, 1] == 0  # empty vs empty
    assert cost_matrix(A, B, "ned")[0, 0] == 1  # empty vs nonempty
    with pytest.raises(ValueError):
        cost_matrix(A, B, "cosine")


def test_hand_example_cost_matrix():
    A = np.array([[1, 1, 0], [0, 0, 1.0]])
    B = np.array([[1, 0, 0], [0, 1, 1.0]])
    E = ned_matrix(A, B)
    np.testing.assert_allclose(E, [[1 / 2, 2 / 3], [1, 1 / 2]])
    assert np.trace(E) == 1.0 and E[0, 1] + E[1, 0] == pytest.approx(5 / 3)
    np.testing.assert_array_equal(match_units(E), [0, 1])
    E = ned_matrix(np.array([[0, 0.0], [1, 0]]), np.zeros((2, 2)))
    np.testing.assert_array_equal(E, [[0, 0], [1, 1]])


def test_flat_distance_is_metric_on_whole_layer():
    A = np.array([[1, 1, 0], [0, 0, 1.0]])
    B = np.array([[1, 0, 0], [0, 1, 1.0]])
    assert flat_distance(A, B, "nnstd") == pytest.approx(2 / 4)  # |Δ| = 2, |∪| = 4
    assert flat_distance(A, B, "sasd") == ned(A.ravel(), B.ravel())
    assert flat_distance(A, -B, "sasd") == 1
    assert flat_distance(A, B, "maed") == maed(A.ravel(), B.ravel())


def _random_layer(rng, p, shape=(300, 784)):
    return (rng.random(shape) < p).astype(float)


@pytest.mark.parametrize("p, q, expected, tol", [
    (0.01, 0.05, 0.937, 0.02), (0.1, 0.1, 0.891, 0.001), (0.01, 0.01, 0.89, 0.02), (0.5, 1.0, 0.5, 0.02)])
def test_nnstd_random_baselines(p, q, expected, tol):
    rng = np.random.default_rng(0)
    A, B = _random_layer(rng, p), _random_layer(rng, q)
    E = ned_matrix(A, B)
    d = E[np.arange(300), match_units(E)].mean()
    assert d == pytest.approx(expected, abs=tol)
    if q < 1:  # Hungarian matching lands below the identity-matching theory 1 - pq/(p+q-pq)
        assert d < 1 - p * q / (p + q - p * q)
        assert np.trace(E) / 300 == pytest.approx(1 - p * q / (p + q - p * q), abs=0.01)
