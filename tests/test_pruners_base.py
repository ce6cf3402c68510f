"""The shared pruner base: exact-k selection, schedules, counts, random pruning (SPEC §3, §7, §8.2, §12)."""
import math

import pytest
import torch
from scipy import stats

from models import fc, get_masks, layer_densities, prunable_layers, raw_weight, resnet20, set_masks
from pruners.base import (
    METHODS,
    check_density,
    exponential_schedule,
    get_method,
    kept_count,
    layer_sizes,
    linear_schedule,
    prune_to,
    select_global,
)
from pruners.random import Dense, Random
from utils.errors import UserError
from utils.seeding import generator

DENSITIES = (0.5, 0.2, 0.1, 0.05, 0.02, 0.001)
THESIS = {"2": 10 ** -1.7, "5": 10 ** -1.3, "10": 10 ** -1.0, "20": 10 ** -0.695, "50": 10 ** -0.3}
FC_KEPT = (2382, 5984, 11940, 24099, 59842)
RESNET_KEPT = (5405, 13577, 27090, 54677, 135770)



def tied_scores():
    return {"a": torch.ones(30, 40), "b": torch.ones(7, 3, 3, 3), "c": torch.ones(1000)}


def total(masks):
    return sum(int(m.sum()) for m in masks.values())


@pytest.mark.parametrize("d", DENSITIES)
def test_select_global_exact_count_with_all_ties(d):
    scores = tied_scores()
    n = sum(s.numel() for s in scores.values())
    masks = select_global(scores, kept_count(d, n), generator=generator(1, "prune"))
    assert total(masks) == round(d * n)
    assert {k: m.shape for k, m in masks.items()} == {k: s.shape for k, s in scores.items()}
    assert all(m.dtype == torch.bool for m in masks.values())


@pytest.mark.parametrize("d", DENSITIES)
def test_select_global_layer_scope_exact_per_layer(d):
    scores = tied_scores()
    n = sum(s.numel() for s in scores.values())
    masks = select_global(scores, kept_count(d, n), generator=generator(1, "prune"), scope="layer")
    for name, s in scores.items():
        assert int(masks[name].sum()) == kept_count(d, s.numel())


def test_select_global_keeps_highest_scores():
    g = torch.Generator().manual_seed(0)
    scores = {"a": torch.randn(50, 20, generator=g), "b": torch.randn(300, generator=g)}
    masks = select_global(scores, 123, generator=generator(1, "prune"))
    kept = torch.cat([scores[n][masks[n]] for n in scores])
    dropped = torch.cat([scores[n][~masks[n]] for n in scores])
    assert kept.numel() == 123 and kept.min() > dropped.max()


def test_select_global_ties_reproducible_and_seeded_not_by_index():
    scores = tied_scores()
    a = select_global(scores, 500, generator=generator(21, "prune"))
    b = select_global(scores, 500, generator=generator(21, "prune"))
    c = select_global(scores, 500, generator=generator(42, "prune"))
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], c[n]) for n in a)
    # Index tie-breaking would keep the first 500 entries (all of layer "a", none of "c").
    flat = torch.cat([a[n].reshape(-1) for n in a])
    idx = flat.nonzero().squeeze(1).double()
    assert abs(idx.mean().item() - (flat.numel() - 1) / 2) < 0.1 * flat.numel()
    assert a["c"].any()


def test_select_global_no_revival_and_cap():
    g = torch.Generator().manual_seed(3)
    scores = {"a": torch.rand(40, 40, generator=g), "b": torch.rand(200, generator=g)}
    allowed = {n: torch.rand(s.shape, generator=g) < 0.3 for n, s in scores.items()}
    n_allowed = total(allowed)
    masks = select_global(scores, 100, allowed, generator(1, "prune"))
    assert total(masks) == 100
    assert all(not (masks[n] & ~allowed[n]).any() for n in masks)
    # Disallowed entries never come back, even when they score highest or more are asked for.
    big = {n: torch.where(allowed[n], torch.zeros_like(s), torch.full_like(s, 1e9)) for n, s in scores.items()}
    masks = select_global(big, 10 ** 6, allowed, generator(1, "prune"))
    assert total(masks) == n_allowed
    assert all(torch.equal(masks[n], allowed[n]) for n in masks)


def test_select_global_nan_scores_rank_last():
    scores = {"a": torch.tensor([float("nan"), 1.0, 2.0, float("nan"), 0.5])}
    masks = select_global(scores, 3, generator=generator(1, "prune"))
    assert masks["a"].tolist() == [False, True, True, False, True]


def test_select_global_unknown_scope():
    with pytest.raises(UserError):
        select_global(tied_scores(), 10, scope="unit")


def test_kept_count_and_thesis_counts():
    model = fc()
    n_fc = sum(layer_sizes(model).values())
    assert n_fc == 119_400 and len(layer_sizes(model)) == 6
    assert tuple(kept_count(THESIS[k], n_fc) for k in ("2", "5", "10", "20", "50")) == FC_KEPT
    net = resnet20()
    n_res = sum(layer_sizes(net).values())
    assert n_res == 270_896 and len(layer_sizes(net)) == 22
    assert tuple(kept_count(THESIS[k], n_res) for k in ("2", "5", "10", "20", "50")) == RESNET_KEPT
    assert sum(layer_sizes(resnet20(prune_shortcuts=False, fc_bias=False)).values()) == 268_336
    # The thesis's kthvalue rule N - floor((1-d)N) differs by at most 1.
    for n in (n_fc, n_res):
        for d in THESIS.values():
            assert abs((n - math.floor((1 - d) * n)) - kept_count(d, n)) <= 1


@pytest.mark.parametrize("builder,counts", [(fc, FC_KEPT), (resnet20, RESNET_KEPT)])
def test_random_prune_exact_thesis_counts(builder, counts):
    torch.manual_seed(21)
    model = builder()
    for label, expected in zip(("2", "5", "10", "20", "50"), counts):
        set_masks(model, {n: torch.ones_like(v) for n, v in get_masks(model).items()}, zero_pruned=False)
        Random().prune(model, THESIS[label], seed=21, data_shape=())
        assert total(get_masks(model)) == expected


def test_exponential_schedule():
    s = exponential_schedule(0.02, 10, 1)
    assert len(s) == 10
    assert s[-1] == pytest.approx(0.02, rel=1e-12)
    assert s[0] == pytest.approx(0.02 ** 0.1, rel=1e-12)
    assert all(a > b for a, b in zip(s, s[1:]))
    s = exponential_schedule(0.1, 10, 100)
    assert len(s) == 1000
    # Within level l the targets go D_l^(1/n) ... D_l; level l ends at d^(l/L).
    assert s[99] == pytest.approx(0.1 ** 0.1, rel=1e-12)
    assert s[100] == pytest.approx(0.1 ** (0.2 / 100), rel=1e-12)
    assert s[-1] == pytest.approx(0.1, rel=1e-12)
    one = exponential_schedule(0.05, 1, 100)
    assert one[k := 49] == pytest.approx(0.05 ** ((k + 1) / 100), rel=1e-12)


def test_linear_schedule():
    assert linear_schedule(0.2, 4) == pytest.approx([0.8, 0.6, 0.4, 0.2])


@pytest.mark.parametrize("bad", [0, -0.1, 1.5, float("nan"), "0.5"])
def test_check_density_rejects(bad):
    with pytest.raises(UserError):
        check_density(bad)


def test_registry_and_errors():
    assert {"random", "dense"} <= set(METHODS)
    assert type(get_method("random")) is Random and get_method("random", scope="layer").scope == "layer"
    with pytest.raises(UserError):
        get_method("no-such-method")
    with pytest.raises(UserError):
        get_method("random", bogus=1)
    with pytest.raises(UserError):
        Dense().prune(fc(), 0.5, seed=1, data_shape=(1, 28, 28))
    Dense().prune(fc(), 1.0, seed=1, data_shape=(1, 28, 28))


@pytest.mark.parametrize("label", list(THESIS))
def test_random_per_layer_density_in_binomial_ci(label):
    d = THESIS[label]
    for seed in (21, 42, 63):
        torch.manual_seed(seed)
        model = fc()
        Random().prune(model, d, seed=seed, data_shape=(1, 28, 28))
        for name, mask in get_masks(model).items():
            lo, hi = stats.binom.interval(0.999, mask.numel(), d)
            assert lo <= int(mask.sum()) <= hi, (label, seed, name)


def test_random_reproducible_and_leaves_global_rng_alone():
    def pruned(seed):
        torch.manual_seed(seed)
        model = fc()
        state = torch.get_rng_state()
        Random().prune(model, 0.1, seed=seed, data_shape=(1, 28, 28))
        assert torch.equal(torch.get_rng_state(), state)  # same init stream as SynFlow
        return get_masks(model)
    a, b, c = pruned(21), pruned(21), pruned(42)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], c[n]) for n in a)


def test_prune_to_zeroes_pruned_and_never_revives():
    torch.manual_seed(0)
    model = fc()
    gen = generator(0, "prune")
    Random().prune(model, 0.3, seed=0, data_shape=(1, 28, 28))
    before = get_masks(model)
    # Scores favouring exactly the pruned entries cannot revive them.
    scores = {n: (~m).double() for n, m in before.items()}
    prune_to(model, scores, 0.1, gen)
    after = get_masks(model)
    assert total(after) == kept_count(0.1, 119_400)
    assert all(not (after[n] & ~before[n]).any() for n in after)
    for n, layer in prunable_layers(model).items():
        assert not raw_weight(layer)[~after[n]].any()
    # A target above the current density changes nothing.
    prune_to(model, scores, 0.5, gen)
    assert all(torch.equal(get_masks(model)[n], after[n]) for n in after)
    assert sum(layer_densities(model).values()) > 0
