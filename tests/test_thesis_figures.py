"""The thesis's figures drawn from its own networks with its own analysis match the published ones.

The published values below were read off the heatmap rasters embedded in the thesis's PDFs
(``Figures/MAED-2.pdf`` etc.): each cell's viridis colour mapped back to a value with the
colour bar's range.  One colour step is 0.0038 (MAED-2), 0.0030 (MAED-50) and 0.0031 (the
correlation matrix), so a reproduction is exact when every cell lies within about one step.
"""
import numpy as np
import pytest

from utils import figures as F
from utils.analysis import distance_matrix, network_distance, similarity_matrix

TAGS = [F.tag(m, s) for m in F.METHODS for s in F.SEEDS]
# gem_21 gem_42 gem_63 syn_21 syn_42 syn_63 rnd_21 rnd_42 rnd_63 (upper triangles, row by row)
PUBLISHED_MAED_2 = [
    [0.946, 0.939, 0.942, 0.946, 0.939, 0.969, 0.961, 0.973],
    [0.946, 0.950, 0.950, 0.954, 0.965, 0.958, 0.969],
    [0.931, 0.954, 0.946, 0.958, 0.961, 0.965],
    [0.958, 0.958, 0.977, 0.969, 0.977],
    [0.950, 0.969, 0.969, 0.973],
    [0.973, 0.969, 0.977],
    [0.801, 0.847],
    [0.805]]
PUBLISHED_MAED_50 = [
    [0.664, 0.661, 0.709, 0.712, 0.715, 0.760, 0.763, 0.760],
    [0.664, 0.712, 0.709, 0.715, 0.760, 0.760, 0.763],
    [0.712, 0.712, 0.712, 0.760, 0.763, 0.763],
    [0.670, 0.673, 0.635, 0.739, 0.736],
    [0.670, 0.736, 0.632, 0.736],
    [0.736, 0.736, 0.626],
    [0.763, 0.757],
    [0.760]]
PUBLISHED_COR_10 = [
    [0.445, 0.421, 0.397, 0.394, 0.403, 0.268, 0.235, 0.247],
    [0.436, 0.394, 0.397, 0.403, 0.268, 0.241, 0.235],
    [0.397, 0.412, 0.412, 0.277, 0.241, 0.219],
    [0.537, 0.525, 0.351, 0.323, 0.323],
    [0.516, 0.342, 0.320, 0.326],
    [0.342, 0.317, 0.290],
    [0.366, 0.384],
    [0.354]]


def upper(rows) -> dict[tuple[int, int], float]:
    return {(i, i + 1 + k): v for i, row in enumerate(rows) for k, v in enumerate(row)}


@pytest.fixture(scope="module")
def store(thesis_store):
    return F.thesis_store("thesis-networks", thesis_store)


def test_maed_50_from_the_thesis_networks_matches_the_published_figure(store):
    units = [store.units(F.FC, m, 0.5, s) for m in F.METHODS for s in F.SEEDS]
    df = distance_matrix(units, "maed", names=TAGS, compat="thesis")
    worst = max(abs(df.iloc[i, j] - v) for (i, j), v in upper(PUBLISHED_MAED_50).items())
    assert worst <= 0.004


@pytest.mark.parametrize("i,j", [(0, 1), (3, 5), (6, 7), (6, 8), (0, 8)])
def test_maed_2_from_the_thesis_networks_matches_the_published_figure(store, i, j):
    """At 2 % many units are empty: the thesis's MAED of two empty units is NaN, and NaN costs
    distort its networkx matching (utils.analysis.matching); without them the cells come out up to
    0.1 lower."""
    m_i, s_i = F.METHODS[i // 3], F.SEEDS[i % 3]
    m_j, s_j = F.METHODS[j // 3], F.SEEDS[j % 3]
    a, b = store.units(F.FC, m_i, 0.02, s_i), store.units(F.FC, m_j, 0.02, s_j)
    value = network_distance(a, b, "maed", compat="thesis", both_directions=False).value
    assert abs(value - upper(PUBLISHED_MAED_2)[(i, j)]) <= 0.004


def test_correlation_matrix_from_the_thesis_networks_matches_the_published_figure(store):
    """The thesis used 600 shuffled training images (not recorded); the stored 600 test images
    give the same matrix within 0.015, its diagonal is 1 as published."""
    models = [store.model(F.FC, m, 0.1, s) for m in F.METHODS for s in F.SEEDS]
    df = similarity_matrix(models, F.probe_images(store), names=TAGS, compat="thesis")
    assert np.allclose(np.diag(df.to_numpy()), 1.0)
    worst = max(abs(df.iloc[i, j] - v) for (i, j), v in upper(PUBLISHED_COR_10).items())
    assert worst <= 0.015


def test_every_code_made_thesis_figure_is_drawn_from_the_thesis_networks(thesis_store, tmp_path):
    """All 30 figures the thesis computed, in both views (as published; corrected), with captions."""
    fast = [n for n in F.CODE_FIGURES if n != "MAED-2"]      # MAED-2 is checked cell by cell above
    stores = F.make_thesis_figures(fast, tmp_path, thesis_store, show=False)
    for view, st in stores.items():
        assert not st.skipped, st.skipped
        written = {p.stem for p in (tmp_path / view).glob("*.png")}
        assert written == set(fast)
    assert len(F.CODE_FIGURES) == 30


# Counts above the kernels of the published gem/syn/rnd-kernel-10 (all titled "seed 21") and the
# colour-bar extremes of the published first-layer maps (titled "Seed 42"), read off the PDFs.
PUBLISHED_KERNEL_COUNTS = {"gem-miner": [11688, 1320, 1292, 1282, 1276], "synflow": [22726, 95, 95, 85, 85],
                           "random": [11498, 1321, 1304, 1292, 1288]}
PUBLISHED_MAP_RANGES = {("synflow", 0.5): (-2.3, 1.5), ("synflow", 0.02): (-1.8, 2.1),
                        ("random", 0.5): (-2.8, 1.3), ("gem-miner", 0.02): (-2.0, 1.3)}


@pytest.mark.parametrize("method", sorted(PUBLISHED_KERNEL_COUNTS))
def test_published_kernel_figures_are_seed_21(store, method):
    from utils.analysis import common_kernels
    assert F.KERNEL_SEEDS[method] == 21
    counts = {s: [c for _, c in common_kernels(store.units(F.RESNET, method, 0.1, s), top=5)] for s in F.SEEDS}
    assert counts[21] == PUBLISHED_KERNEL_COUNTS[method]
    assert all(counts[s] != PUBLISHED_KERNEL_COUNTS[method] for s in (42, 63))


@pytest.mark.parametrize("key", sorted(PUBLISHED_MAP_RANGES))
def test_published_first_layer_maps_are_seed_21_despite_their_titles(store, key):
    from utils.analysis import first_layer_map
    assert F.MAP_SEED == 21
    lo, hi = PUBLISHED_MAP_RANGES[key]

    def off(seed):
        image = first_layer_map(store.units(F.FC, *key, seed)[0])
        return max(abs(image.min() - lo), abs(image.max() - hi))
    # the published colour bar is read to ±0.1; seed 21 is within it, seed 42 (the title's) is not
    assert off(21) <= 0.15 < off(42)
