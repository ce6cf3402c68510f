"""The shared pruner base: exact-k selection, schedules, counts, random pruning (SPEC §3, §7, §8.2, §12),
the method interface (options dataclasses, scores on the shared loop) and the method styles."""
import dataclasses
import math

import pytest
import torch
from scipy import stats

from models import fc, get_masks, layer_densities, prunable_layers, raw_weight, resnet20, set_masks
from pruners.base import (
    METHODS,
    Method,
    MethodStyle,
    check_density,
    exponential_schedule,
    get_method,
    kept_count,
    layer_sizes,
    linear_schedule,
    method_style,
    method_styles,
    prune_on_schedule,
    prune_to,
    select_global,
)
from pruners.random import Dense, Random
from utils.engine.seeding import generator
from utils.errors import UserError

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


def argsort_selection(flat, k, perm):
    """The reference rule: the first k of a stable descending argsort of flat[perm]."""
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    keep[perm[torch.argsort(flat[perm], descending=True, stable=True)][:k]] = True
    return keep


@pytest.mark.parametrize("levels", [2, 7, 10_000])  # few values (ties everywhere) to nearly distinct
@pytest.mark.parametrize("k", [0, 1, 999, 2_500, 4_999, 5_000])
def test_select_global_equals_the_stable_argsort_rule(levels, k):
    """select_global's selection is the stable-argsort rule entry for entry, ties and -inf included,
    and draws the same tie-break stream (the generators end in the same state)."""
    values = torch.randint(levels, (5_000,), generator=torch.Generator().manual_seed(levels)).double()
    values[::97] = -math.inf
    gen_a, gen_b = generator(3, "prune"), generator(3, "prune")
    got = select_global({"a": values[:3_000].view(30, 100), "b": values[3_000:]}, k, generator=gen_a)
    perm = torch.randperm(5_000, generator=gen_b)
    expected = argsort_selection(values, k, perm)
    assert torch.equal(torch.cat([got["a"].reshape(-1), got["b"]]), expected)
    assert int(expected.sum()) == k
    assert torch.equal(gen_a.get_state(), gen_b.get_state())


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


def test_prune_on_schedule_exact_counts_every_step_and_log():
    torch.manual_seed(4)
    model = fc()
    g = torch.Generator().manual_seed(9)
    fixed = {n: torch.rand(m.weight.shape, generator=g) for n, m in prunable_layers(model).items()}
    log = prune_on_schedule(model, lambda m: fixed, [0.5, 0.2, 0.05], generator(4, "prune"))
    assert [row["target"] for row in log] == [0.5, 0.2, 0.05]
    assert [row["density"] for row in log] == [kept_count(d, 119_400) / 119_400 for d in (0.5, 0.2, 0.05)]
    masks = get_masks(model)
    assert log[-1]["layers"] == {n: int(m.sum()) / m.numel() for n, m in masks.items()}
    # Fixed scores on a shrinking schedule give the one-shot top-k: nothing revived, nothing lost.
    kept = torch.cat([fixed[n][masks[n]] for n in masks])
    dropped = torch.cat([fixed[n][~masks[n]] for n in masks])
    assert kept.numel() == kept_count(0.05, 119_400) and kept.min() > dropped.max()


# ---------------------------------------------------------------- method interface

#: non-default options of every registered method (none for dense)
OPTIONS = {
    "dense": {},
    "random": {"scope": "layer", "stream": "thesis", "levels": 2, "iterations": 3, "max_blocks": 48},
    "random-fc": {"stream": "thesis"},
    "magnitude": {"scope": "layer"},
    "synflow": {"levels": 4, "iterations": 3, "scope": "layer"},
    "imp": {"rounds": 3, "rate": 0.5, "rewind_iteration": 2, "scope": "layer"},
    "gem-miner": {"mining_epochs": 15, "period": 0.5, "lr": 0.05, "momentum": 0.0, "weight_decay": 0.0,
                  "schedule": "constant", "score_l2": 1e-8, "batch_size": 64, "mode": "thesis",
                  "scope": "layer", "unflag": True, "sanity_checks": False, "sanity_seeds": [21],
                  "val_size": 100, "log_val": False, "train_biases": True},
    "deepr": {"l1": 1e-5, "temp": 5e-12, "reset_val": 1e-9, "scope": "layer", "init": "scaled"},
    "soft-deepr": {"l1": 1e-4, "temp": 1e-10, "min_weight": -1e-3, "init_density": 0.3, "init": "scaled"},
    "dnw": {"scope": "layer", "count": "upstream"},
}


def test_options_cover_every_registered_method():
    assert set(OPTIONS) == set(METHODS)
    for name, cls in METHODS.items():
        assert {f.name for f in dataclasses.fields(cls.Options)} == set(OPTIONS[name]), name


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_unknown_option_is_a_user_error_naming_it(name):
    with pytest.raises(UserError, match=rf"^bad options for method '{name}': unknown option 'bogus_knob'"):
        get_method(name, **OPTIONS[name], bogus_knob=1)
    with pytest.raises(UserError, match="'bogus_knob'"):
        METHODS[name](bogus_knob=1)


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_options_dataclass_round_trip(name):
    method = get_method(name, **OPTIONS[name])
    assert dataclasses.asdict(method.options) == OPTIONS[name]
    # every option also reads as an attribute, as the runs and benchmarks use them
    assert {k: getattr(method, k) for k in OPTIONS[name]} == OPTIONS[name]
    again = get_method(name, **dataclasses.asdict(method.options))
    assert type(again) is type(method) and again.options == method.options
    assert again.run_info() == method.run_info()
    assert repr(again) == repr(method) and repr(method).startswith(f"{type(method).__name__}(")
    with pytest.raises(AttributeError):
        _ = method.no_such_option


def test_stored_option_sets_round_trip():
    """Every option set the configs give a run rebuilds the same method and run_info."""
    from utils.runs.experiment import load_config, method_settings
    seen = 0
    for config_name in ("fc_mnist", "resnet20_cifar10"):
        config = load_config(config_name)
        for profile in config["profiles"].values():
            for name in config["methods"]:
                for seed in config["seeds"]:
                    for density in config["densities"]:
                        options, _ = method_settings(profile, name, seed, density / 100)
                        method = get_method(name, **options)
                        again = get_method(name, **dataclasses.asdict(method.options))
                        assert again.options == method.options and again.run_info() == method.run_info()
                        assert all(getattr(method, k) == v for k, v in options.items())
                        seen += 1
    assert seen > 100


def test_option_names_shadow_no_method_attribute():
    for name, cls in METHODS.items():
        for f in dataclasses.fields(cls.Options):
            assert not hasattr(cls, f.name), (name, f.name)


def test_options_are_normalised_as_recorded():
    gm = get_method("gem-miner", period=2.0, unflag=0, val_size=100.0, sanity_seeds=(21.0,))
    assert (gm.period, gm.unflag, gm.val_size, gm.sanity_seeds) == (2, False, 100, [21])
    assert type(gm.period) is int and type(gm.val_size) is int
    assert get_method("gem-miner", period=0.5).period == 0.5
    sf = get_method("synflow", levels=10.0, iterations=100.0)
    assert (sf.levels, sf.iterations) == (10, 100) and type(sf.levels) is int
    assert sf.run_info() == {"levels": 10, "iterations": 100, "synflow_log": []}


def _mask_by_hand(method, builder, density, seed, shape):
    """The method's mask computed outside its prune(): its scores, then select_global step by step."""
    torch.manual_seed(seed)
    model = builder()
    gen = generator(seed, "prune")
    work = method.scoring_model(model)
    total = sum(layer_sizes(work).values())
    for target in method.density_schedule(density):
        scores = method.scores(work, seed=seed, data_shape=shape, generator=gen)
        set_masks(work, select_global(scores, kept_count(target, total), get_masks(work), gen, method.options.scope))
    set_masks(model, get_masks(work))
    return model


@pytest.mark.parametrize("name,options", [
    ("random", {}), ("random", {"scope": "layer"}), ("random", {"stream": "thesis", "levels": 2, "iterations": 2}),
    ("magnitude", {}), ("magnitude", {"scope": "layer"}),
    ("synflow", {"levels": 3, "iterations": 2}), ("synflow", {"levels": 2, "scope": "layer"}),
])
@pytest.mark.parametrize("builder,shape", [(fc, (1, 28, 28)), (resnet20, (3, 32, 32))])
def test_scores_on_the_base_loop_reproduce_the_mask(name, options, builder, shape):
    density, seed = 0.05, 42
    method = get_method(name, **options)
    torch.manual_seed(seed)
    pruned = builder()
    method.prune(pruned, density, seed=seed, data_shape=shape)
    by_hand = _mask_by_hand(get_method(name, **options), builder, density, seed, shape)
    assert len(method.log) == len(method.density_schedule(density))
    sizes = layer_sizes(pruned)
    expected = ({n: kept_count(density, k) for n, k in sizes.items()} if method.options.scope == "layer"
                else {"all": kept_count(density, sum(sizes.values()))})
    counts = {n: int(m.sum()) for n, m in get_masks(pruned).items()}
    assert (counts if method.options.scope == "layer" else {"all": sum(counts.values())}) == expected
    a, b = pruned.state_dict(), by_hand.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_imp_scores_are_the_magnitudes():
    torch.manual_seed(1)
    model = fc()
    scores = get_method("imp").scores(model, seed=1, data_shape=(1, 28, 28), generator=None)
    assert all(torch.equal(scores[n], raw_weight(m).abs()) for n, m in prunable_layers(model).items())


def test_methods_that_do_not_score_say_so():
    with pytest.raises(NotImplementedError, match="DNW"):
        get_method("dnw").scores(fc(), seed=0, data_shape=(1, 28, 28), generator=None)


# ---------------------------------------------------------------- styles

#: the figures' current values (utils/plots.py METHOD_LABELS/COLORS/MARKERS, notebook_helpers
#: SHORT/MARKERS/_label, figures.TAGS), so moving them here changes no figure
STYLES = {
    "gem-miner": ("Gem-Miner", "gem", "#009E73", "s"),
    "synflow": ("SynFlow", "syn", "#D55E00", "o"),
    "random": ("Random", "rnd", "#0072B2", "^"),
    "magnitude": ("Magnitude", "mag", "#CC79A7", "P"),
    "deepr": ("DEEPR", "deepr", "#332288", "X"),
    "soft-deepr": ("Soft-DEEPR", "sdeepr", "#88CCEE", "x"),
    "dnw": ("DNW", "dnw", "#999933", "*"),
    "dense": ("Dense", "dense", "#333333", None),
    "random-fc": ("Random-FC", "rfc", "#882255", None),
    "imp": ("IMP", "imp", "#DDCC77", "p"),
    "gem-miner-reinit": ("Gem-Miner weight-reinit", "gemR", "#44AA99", "v"),
    "gem-miner-shuffle": ("Gem-Miner mask-shuffle", "gemS", "#117733", "D"),
}


@pytest.mark.parametrize("name", sorted(STYLES))
def test_method_style_values(name):
    style = method_style(name)
    assert isinstance(style, MethodStyle)
    assert (style.label, style.tag, style.color, style.marker) == STYLES[name]
    with pytest.raises(dataclasses.FrozenInstanceError):
        style.label = "x"


def test_method_styles_cover_methods_and_variants_once():
    styles = method_styles()
    assert set(styles) == set(STYLES) == set(METHODS) | {"gem-miner-reinit", "gem-miner-shuffle"}
    assert all(styles[name] is METHODS[name].style for name in METHODS)
    assert len({s.tag for s in styles.values()}) == len(styles)
    assert len({s.color for s in styles.values()}) == len(styles)
    markers = [s.marker for s in styles.values() if s.marker is not None]
    assert len(set(markers)) == len(markers)
    with pytest.raises(UserError, match="unknown method 'no-such'"):
        method_style("no-such")
    assert not hasattr(Method, "style")  # every registered class declares its own


def test_per_density_then_per_run_options_override_a_methods_options():
    """``per_density`` (keys d<label>) overrides the method's options at one density, ``per_run``
    (keys d<label>/s<seed>) then overrides both for one run; other runs keep the defaults."""
    from utils.runs.experiment import method_settings
    profile = {"methods": {"gem-miner": {"options": {
        "lr": 0.05, "score_l2": 1e-8,
        "per_density": {"d2": {"score_l2": 1e-4}, "d20": {"score_l2": 1e-5, "lr": 0.01}},
        "per_run": {"d2/s63": {"lr": 0.2}}}}}}
    def resolved(seed, density):
        options, _ = method_settings(profile, "gem-miner", seed, density)
        return options["lr"], options["score_l2"]
    assert resolved(21, 0.02) == (0.05, 1e-4)
    assert resolved(63, 0.02) == (0.2, 1e-4)
    assert resolved(21, 0.2) == (0.01, 1e-5)
    assert resolved(21, 0.5) == (0.05, 1e-8)
    assert "per_density" not in method_settings(profile, "gem-miner", 21, 0.02)[0]
