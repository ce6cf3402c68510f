"""Figure layer: utils.figures.plots draws the right figures, utils.figures builds them from a store,
and the thesis notebook produces every SPEC §10 figure in order.  Synthetic data, a few seconds."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from utils import figures as F  # noqa: E402
from utils.figures import illustrations, plots  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TAGS = [f"{t}_{s}" for t in ("gem", "syn", "rnd") for s in (21, 42, 63)]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _texts(fig):
    return [t.get_text() for t in fig.findobj(matplotlib.text.Text)]


# ----------------------------------------------------------------------------- save
def test_save_writes_pdf_and_png_atomically_and_reproducibly(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    paths = F.save(fig, "demo", tmp_path / "figs")
    assert [p.name for p in paths] == ["demo.pdf", "demo.png"]
    assert (tmp_path / "figs" / "demo.pdf").read_bytes().startswith(b"%PDF")
    assert (tmp_path / "figs" / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "figs").glob(".*part"))          # no temporary files left
    first = (tmp_path / "figs" / "demo.pdf").read_bytes()
    F.save(fig, "demo", tmp_path / "figs")
    assert (tmp_path / "figs" / "demo.pdf").read_bytes() == first  # no timestamps


# ----------------------------------------------------------------------------- curves
def test_accuracy_curves_layout():
    x = np.arange(26)
    lines = {f"{d}%": (x, np.vstack([np.linspace(10, 90 - d, 26)] * 3)) for d in (2, 5, 10, 20, 50)}
    fig = plots.accuracy_curves({"Gem-Miner": lines, "SynFlow": lines, "Random": lines})
    axes = fig.axes
    assert len(axes) == 3
    # ≤ 8.1 in wide: 10-pt text scaled to a 6.5-in column stays ≥ 8 pt
    assert tuple(np.round(fig.get_size_inches(), 2)) == (8.1, 3.4)
    assert 10 * 6.5 / fig.get_size_inches()[0] >= 8
    assert [a.get_title() for a in axes] == ["Gem-Miner", "SynFlow", "Random"]
    assert all(a.get_xlabel() == "Epoch" for a in axes)
    assert axes[0].get_ylabel() == "Test top-1 accuracy (%)"
    assert axes[0].get_ylim() == (0, 100)
    assert all(len(a.get_lines()) == 5 for a in axes)
    assert all(a.get_legend() is None for a in axes)
    legend = fig.legends[0]                     # one legend above the panels
    assert [t.get_text() for t in legend.get_texts()] == ["2%", "5%", "10%", "20%", "50%"]
    assert "remaining" in legend.get_title().get_text()
    assert min(t.get_fontsize() for t in fig.findobj(matplotlib.text.Text) if t.get_text()) >= 10



def _drawn_extents(fig, tmp_path) -> dict:
    """Extents (pixels) of the figure legend, its title and the last figure text, as drawn while
    the tight PNG is saved (the tight box moves what is anchored to the figure's box)."""
    from matplotlib.legend import Legend
    drawn, real_draw = {}, Legend.draw

    def draw(legend, renderer):
        real_draw(legend, renderer)
        drawn.update(legend=legend.get_window_extent(renderer), title=legend.get_title().get_window_extent(renderer),
                     caption=fig.texts[-1].get_window_extent(renderer))
    Legend.draw = draw
    try:
        F.save(fig, "f", tmp_path, formats=("png",))
    finally:
        Legend.draw = real_draw
    return drawn


@pytest.mark.parametrize("legend_title", ["Density (% remaining)",
                                          "FC 784-100×5-10 / MNIST; a long recipe note\nline: mean over 3 seeds"])
def test_a_caption_stays_above_an_outside_legend_in_the_saved_file(tmp_path, legend_title):
    """The store caption goes above everything the figure draws.  Before the fix, the legend above
    the panels ("outside upper center") followed the saved file's tight box up into the caption
    (figures/thesis-networks/fc_acc.png): now it is drawn below the caption, where it was."""
    from utils.figures.registry import _add_caption
    x = np.arange(26)
    lines = {f"{d}%": (x, np.vstack([np.linspace(10, 90 - d, 26)] * 3)) for d in (2, 5, 10, 20, 50)}
    fig = plots.accuracy_curves({"Gem-Miner": lines, "SynFlow": lines, "Random": lines}, legend_title=legend_title)
    fig.draw_without_rendering()
    legend_top = fig.legends[0].get_window_extent().y1 / fig.dpi            # inches, before the caption
    _add_caption(fig, "The thesis's own networks, the thesis's analysis: a caption of two lines, in "
                      "italics, above the figure and its legend")
    drawn = _drawn_extents(fig, tmp_path)
    assert drawn["title"].y1 <= drawn["caption"].y0 and drawn["legend"].y1 <= drawn["caption"].y0
    assert drawn["title"].y1 <= drawn["legend"].y1 + 1                     # the title inside its legend
    # measured from the caption's bottom, the legend's top is where it was in the figure
    caption_bottom = fig.texts[-1].get_position()[1] * fig.get_figheight()
    assert (drawn["caption"].y0 - drawn["legend"].y1) / 150 == pytest.approx(caption_bottom - legend_top, abs=0.03)

def test_the_legend_lists_a_density_the_first_panel_lacks():
    # a partly trained grid: only SynFlow has its 2 % runs yet
    x = np.arange(5)
    some = {f"{d}%": (x, x * 1.0) for d in (10, 50)}
    fig = plots.accuracy_curves({"Gem-Miner": some, "SynFlow": {"2%": (x, x * 1.0), **some}, "Random": some})
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["2%", "10%", "50%"]
    plt.close(fig)


def test_legend_entries_once_each_in_drawn_or_given_order():
    fig, axes = plt.subplots(1, 3)
    axes[0].plot([0], label="SynFlow")
    axes[1].plot([0], label="Gem-Miner")
    axes[1].plot([0], label="SynFlow")
    axes[2].bar([0], [1], label="Random")
    handles, labels = plots.legend_entries(axes)
    assert labels == ["SynFlow", "Gem-Miner", "Random"] and len(handles) == 3
    assert handles[0] is axes[0].get_lines()[0]
    assert plots.legend_entries(axes, order=["Gem-Miner", "Random", "SynFlow"])[1] == ["Gem-Miner", "Random",
                                                                                          "SynFlow"]
    assert plots.legend_entries(axes, order=["Random"])[1] == ["Random", "SynFlow", "Gem-Miner"]
    assert plots.legend_entries(axes, order=["Random", "SynFlow", "Random"])[1] == ["Random", "SynFlow", "Gem-Miner"]
    plt.close(fig)


def test_seed_curves_and_layer_density_lines():
    fig = plots.seed_curves({21: ([0, 1, 2], [10, 50, 80]), 42: ([0, 1, 2], [10, 40, 70])}, "Random-FC")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "Epoch"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["seed 21", "seed 42"]

    fig = plots.layer_density_lines({"SynFlow": [0.5, 2.8, 4.6, 3.7, 4.9, 37.2], "Random": [2] * 6},
                                    title="FC at 2%", errors={"SynFlow": [0.1] * 6, "Random": [0.2] * 6})
    ax = fig.axes[0]
    assert list(ax.get_xticks()) == [1, 2, 3, 4, 5, 6]
    assert ax.get_xlabel() == "Layer" and "% remaining" in ax.get_ylabel()
    assert ax.get_title() == "FC at 2%"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["SynFlow", "Random"]


# ----------------------------------------------------------------------------- violins
def test_violins_per_layer_means_no_extrema_empty_and_clipped():
    rng = np.random.default_rng(0)
    data = [rng.normal(20, 5, 50), np.array([]), np.r_[rng.normal(50, 5, 20), [150, 160]]]
    fig = plots.violins_per_layer({"Gem-Miner": data, "SynFlow": data, "Random": data},
                                  "Mean gap", title="FC 5%", ylim=(0, 100))
    assert len(fig.axes) == 3
    ax = fig.axes[0]
    bodies = [c for c in ax.collections if isinstance(c, matplotlib.collections.PolyCollection)]
    means = [c for c in ax.collections if isinstance(c, matplotlib.collections.LineCollection)]
    assert len(bodies) == 2 and len(means) == 1                    # showmeans, no extrema lines
    assert len(means[0].get_segments()) == 2
    assert ax.get_ylim() == (0, 100) and list(ax.get_xticks()) == [1, 2, 3]
    texts = [t.get_text() for t in ax.texts]
    assert "none" in texts and "2>100" in texts
    assert fig._suptitle.get_text() == "FC 5%"
    assert [a.get_title() for a in fig.axes] == ["Gem-Miner", "SynFlow", "Random"]


def test_cluster_ratio_violins_rows():
    rng = np.random.default_rng(1)
    layers = [rng.uniform(0, 1, 16) for _ in range(20)]
    fig = plots.cluster_ratio_violins({"Gem-Miner": layers, "SynFlow": layers, "Random": layers}, title="RN20")
    assert len(fig.axes) == 3
    assert all(a.get_ylabel() == "Cluster ratio" for a in fig.axes)
    assert list(fig.axes[2].get_xticks()) == list(range(1, 21))


# ----------------------------------------------------------------------------- heatmaps / maps / kernels
def test_distance_heatmap():
    values = np.random.default_rng(2).uniform(0, 1, (9, 9))
    values = (values + values.T) / 2
    np.fill_diagonal(values, 0)
    fig = plots.matrix_heatmap(pd.DataFrame(values, index=TAGS, columns=TAGS),
                                 "Distances based on Edit Distance", cbar_label="NNSTD")
    ax, cax = fig.axes
    assert ax.get_title() == "Distances based on Edit Distance"
    assert [t.get_text() for t in ax.get_xticklabels()] == TAGS
    assert [t.get_text() for t in ax.get_yticklabels()] == TAGS
    assert all(t.get_rotation() == 90 for t in ax.get_xticklabels())
    assert ax.images[0].get_cmap().name == "viridis"
    assert cax.get_ylabel() == "NNSTD"
    assert len(ax.texts) == 81


def test_block_means_of_a_method_with_one_run_is_nan_without_a_warning():
    """Method × method means of a runs × runs matrix leave the diagonal out; a method with a single
    run has no pair with itself, so its own block is NaN (and numpy does not warn about it)."""
    import warnings

    from utils.figures.pairs import block_means
    tags = ["syn_21", "syn_42", "sdeepr_21"]
    values = pd.DataFrame([[1.0, 0.2, 0.5], [0.2, 1.0, 0.7], [0.5, 0.7, 1.0]], index=tags, columns=tags)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        means = block_means(values)
    assert means.loc["syn", "syn"] == 0.2
    assert means.loc["syn", "sdeepr"] == means.loc["sdeepr", "syn"] == 0.6
    assert np.isnan(means.loc["sdeepr", "sdeepr"])


def test_first_layer_map_plot():
    fig = plots.first_layer_map_plot(np.arange(784.0).reshape(28, 28), "SynFlow, 50% density, seed 42")
    ax = fig.axes[0]
    assert len(fig.axes) == 2                                        # colour bar
    assert ax.images[0].get_cmap().name == "rainbow"
    assert len(ax.get_xticks()) == 0 and len(ax.get_yticks()) == 0
    assert ax.get_title() == "SynFlow, 50% density, seed 42"


def test_kernel_grid():
    pats = [(((np.arange(9) >> 0) % (k + 2) == 0).reshape(3, 3), 1000 - k) for k in range(20)]
    fig = plots.kernel_grid(pats, "SynFlow 10% seed 42")
    visible = [a for a in fig.axes if a.get_visible()]
    assert len(fig.axes) == 20 and len(visible) == 20
    assert [a.get_title() for a in fig.axes[:3]] == ["1,000", "999", "998"]
    assert fig._suptitle.get_text() == "SynFlow 10% seed 42"
    assert all(a.images[0].get_array().shape == (3, 3) for a in visible)


def test_illustrations():
    fig = illustrations.one_dim_weights_plot()
    assert "gaps 1, 1, 2, 3" in fig.axes[0].get_title() and "3 clusters" in fig.axes[0].get_title()
    # the 4-neighbour rule resnet_clusters counts with (hand count: 3 pairs/triples + 7 singletons)
    fig = illustrations.kernel_to_graph_plot(F.KERNEL_EXAMPLE)
    assert "4-neighbour edges): 10 components, cluster ratio 0.30" in fig.axes[1].get_title()
    fig = illustrations.kernel_to_graph_plot(F.KERNEL_EXAMPLE, connectivity="8")
    assert "diagonal edges included): 8 components, cluster ratio 0.50" in fig.axes[1].get_title()
    fig = illustrations.channel_order_plot((2, 0, 3, 1))
    assert "(3, 1, 4, 2)" in fig._suptitle.get_text()


# ----------------------------------------------------------------------------- figures from a store
def _history(gem: bool, epochs: int = 3) -> pd.DataFrame:
    if not gem:
        return pd.DataFrame({"epoch": range(epochs + 1), "phase": "train", "top1": np.linspace(10, 90, epochs + 1)})
    mine = pd.DataFrame({"epoch": range(epochs), "phase": "mining", "top1": 50.0})
    fin = pd.DataFrame({"epoch": range(epochs - 1, 2 * epochs), "phase": ["rounded"] + ["finetune"] * epochs,
                        "top1": np.linspace(60, 95, epochs + 1)})
    return pd.concat([mine, fin], ignore_index=True)


def test_accuracy_curve_phases():
    x, y = F.accuracy_curve(_history(False))
    assert list(x) == [0, 1, 2, 3] and y[0] == 10
    x, y = F.accuracy_curve(_history(True))
    assert list(x) == [0, 1, 2, 3] and y[0] == 60 and y[-1] == 95


@pytest.fixture(scope="module")
def store_root(tmp_path_factory):
    """Nine tiny FC runs at 50 % (G/S/R × 3 seeds) written through the real store format."""
    from models import fc, prunable_layers, set_masks
    from models.masks import raw_weight
    from utils.runs.results import run_dir, save_run
    root = tmp_path_factory.mktemp("store")
    for method in F.METHODS:
        for seed in F.SEEDS:
            gem = method == "gem-miner"
            torch.manual_seed(seed)
            model = fc(hidden_bias=not gem)
            gen = torch.Generator().manual_seed(seed)
            layers = prunable_layers(model)
            masks = {n: torch.rand(raw_weight(m).shape, generator=gen) < 0.5 for n, m in layers.items()}
            extras = support = None
            if gem:
                flags = {n: m | (torch.rand(m.shape, generator=gen) < 0.5) for n, m in masks.items()}
                extras = {f"flag.{n}": f for n, f in flags.items()}
                support = flags
            set_masks(model, masks, zero_pruned=not gem)
            save_run(run_dir("fc_mnist", method, 0.5, seed, root), model=model, init_model=None,
                     history=_history(gem), model_spec={"name": "fc", "kwargs": {"hidden_bias": not gem}},
                     record={"experiment": "fc_mnist", "method": method, "density_target": 0.5, "seed": seed},
                     extras=extras, support=support)
    return root


def test_make_writes_and_skips(store_root, tmp_path, capsys):
    store = F.Store(store_root)
    written = F.make(["50_sparse_layers", "resnet_acc", "gem-fm-fc-50", "one-dim-weights"], store, tmp_path, show=False)
    assert written == ["50_sparse_layers", "gem-fm-fc-50", "one-dim-weights"]
    for name in written:
        assert (tmp_path / f"{name}.pdf").is_file() and (tmp_path / f"{name}.png").is_file()
    out = capsys.readouterr().out
    skip = [line for line in out.splitlines() if line.startswith("skipped resnet_acc")]
    assert len(skip) == 1 and "45 run(s) missing" in skip[0]
    assert "resnet20_cifar10/gem-miner d2,5,10,20,50 × s21,42,63" in skip[0]
    assert "resnet_acc" in store.skipped and "skipped" in F.report(store)


def test_incomplete_seeds_draw_from_the_complete_ones(store_root, tmp_path, capsys):
    import shutil

    from utils.runs.results import run_dir
    root = tmp_path / "store"
    shutil.copytree(store_root, root)
    shutil.rmtree(run_dir("fc_mnist", "synflow", 0.5, 63, root))
    store = F.Store(root)
    assert store.complete_seeds("fc_mnist", densities=[0.5]) == (21, 42)
    assert F.make(["50_sparse_layers"], store, tmp_path / "fig", show=False) == ["50_sparse_layers"]
    assert store.partial == {"50_sparse_layers": "1 run(s) missing: fc_mnist/synflow d50 × s63"}
    assert "drawn from the complete seeds" in capsys.readouterr().out
    assert "drawn from the seeds stored so far" in F.report(store)
    fig = F.build("50_sparse_layers", store)
    assert "(seeds 21, 42 only)" in fig.axes[0].get_title()
    # every method's line is the mean over seeds 21 and 42, seed 63 of Gem-Miner is not used
    gem = {c.get_label(): c.lines[0].get_ydata() for c in fig.axes[0].containers}["Gem-Miner"]
    expect = np.mean([F.layer_densities(store.masks("fc_mnist", "gem-miner", 0.5, s)) for s in (21, 42)], axis=0)
    assert np.allclose(gem, expect)
    full = F.build("50_sparse_layers", F.Store(store_root))
    assert "(3 seeds)" in full.axes[0].get_title()
    # a figure none of whose seeds is complete is still skipped
    for seed in F.SEEDS:
        shutil.rmtree(run_dir("fc_mnist", "random", 0.5, seed, root))
    with pytest.raises(F.MissingRuns, match="fc_mnist/random d50 × s21,42,63"):
        F.build("50_sparse_layers", F.Store(root))


def test_map_grid_marks_an_empty_first_layer_without_colour_bar(tmp_path):
    from models import fc, prunable_layers, set_masks
    from models.masks import raw_weight
    from utils.runs.results import run_dir, save_run
    torch.manual_seed(42)
    model = fc()
    masks = {n: torch.ones(raw_weight(m).shape, dtype=torch.bool) for n, m in prunable_layers(model).items()}
    masks["layers.0"][:] = False                                   # magnitude pruning's layer collapse
    set_masks(model, masks)
    save_run(run_dir("fc_mnist", "magnitude", 0.5, 42, tmp_path), model=model, init_model=None,
             history=_history(False), model_spec={"name": "fc", "kwargs": {}},
             record={"experiment": "fc_mnist", "method": "magnitude", "density_target": 0.5, "seed": 42})
    fig = F.map_grid(F.Store(tmp_path), methods=["magnitude", "synflow"], densities=[0.5], seed=42)
    assert len(fig.axes) == 2                                      # no colour bar for either panel
    assert [t.get_text() for t in fig.axes[0].texts] == ["layer 1 empty"]
    assert [t.get_text() for t in fig.axes[1].texts] == ["not stored"]


def test_seed_note_marks_partly_trained_methods():
    import pandas as pd

    from utils.figures import seed_note

    def rows(points):
        return pd.DataFrame([(d, s) for d, seeds in points.items() for s in seeds], columns=["label", "seed"])

    assert seed_note(rows({2: [21, 42, 63], 10: [21, 42, 63]}), 3) == ""
    assert seed_note(rows({10: [21]}), 3) == " (seed 21 only)"
    assert seed_note(rows({2: [42], 10: [21]}), 3) == " (1 seed per point)"
    assert seed_note(rows({2: [21, 42], 10: [21, 42, 63]}), 3) == " (2-3 seeds per point)"


def test_flag_mode_changes_gem_density(store_root):
    eff = F.build("50_sparse_layers", F.Store(store_root))
    flag = F.build("50_sparse_layers", F.Store(store_root, mask_mode="flag"))
    lines_eff = {c.get_label(): c.lines[0].get_ydata() for c in eff.axes[0].containers}
    lines_flag = {c.get_label(): c.lines[0].get_ydata() for c in flag.axes[0].containers}
    assert np.allclose(lines_eff["Gem-Miner"], 50, atol=3)
    assert np.allclose(lines_flag["Gem-Miner (flags)"], 75, atol=3)
    assert np.allclose(lines_eff["SynFlow"], lines_flag["SynFlow"])


def test_distance_figure_from_store(store_root):
    fig = F.build("NNSTD-50", F.Store(store_root))
    ax = fig.axes[0]
    assert ax.get_title().startswith("Distances based on Edit Distance")
    assert [t.get_text() for t in ax.get_xticklabels()] == TAGS
    values = ax.images[0].get_array()
    assert values.shape == (9, 9) and np.allclose(np.diag(values), 0) and np.allclose(values, values.T)


def test_summarise_missing():
    keys = [("fc_mnist", "synflow", d, s) for d in (0.02, 0.05) for s in (21, 42, 63)]
    keys += [("fc_mnist", "random", 0.07, 21)]
    assert F.summarise(keys) == "fc_mnist/synflow d2,5 × s21,42,63; fc_mnist/random d7 × s21"


# ----------------------------------------------------------------------------- the notebook
def test_notebook_covers_every_figure_in_order():
    nb = json.loads((ROOT / "thesis_notebook.ipynb").read_text())
    cells = nb["cells"]
    params = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1 and params[0]["cell_type"] == "code"
    src = "".join(params[0]["source"])
    for line in ('RESULTS = "results"', 'FIGURES = "figures"', 'MASK_MODE = "effective"', "COMPAT = None",
                 "FAST = False"):
        assert line in src
    order = []
    for i, cell in enumerate(cells):
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        names = [n for n in F.FIGURE_NAMES if f'"{n}"' in source]
        if names:
            # described by the markdown cell right before it (or before the previous figure cell)
            assert "markdown" in (cells[i - 1]["cell_type"], cells[i - 2]["cell_type"])
            order += names
    assert order == F.FIGURE_NAMES
    assert len(F.FIGURE_NAMES) == 33


def _store_of_stored_runs(tmp_path, monkeypatch, runs: dict[str, str], bf16: list[bool] | None = None):
    """A store in ``tmp_path`` of copies of stored ResNet-20 runs (``{copy: stored run}``), relabelled
    as recipe v2 of the cpu profile (30 epochs) and made the current recipe, so that the literal titles
    below hold whichever recipe the stored grid is trained under.  ``bf16``: each copy's precision
    (default: as stored)."""
    import shutil

    from utils.runs import results
    for i, (copy, source) in enumerate(runs.items()):
        run = tmp_path / "resnet20_cifar10" / copy
        shutil.copytree(results.DEFAULT_ROOT / "resnet20_cifar10" / source, run)
        record = json.loads((run / "run.json").read_text())
        record["recipe"]["version"], record["config"]["train"]["epochs"] = 2, 30
        if bf16 is not None:
            record["compute"]["bf16"] = bf16[i]
        record["digest"] = results._digest(record)     # a relabelled copy, sealed again so it loads verified
        (run / "run.json").write_text(json.dumps(record))
    monkeypatch.setattr(F.Store, "recipe_version", lambda self, experiment: 2)
    return F.Store(tmp_path)


@pytest.mark.parametrize("bf16s,expected", [
    ([True, True], "cpu profile v2, 30 epochs, bf16 autocast; CIFAR-10 copy: jpeg-q75"),
    ([True, False, True], "cpu profile v2, 30 epochs, bf16 autocast (2 runs) + fp32 (1 run); "
                          "CIFAR-10 copy: jpeg-q75"),
    ([False], "cpu profile v2, 30 epochs; CIFAR-10 copy: jpeg-q75"),       # fp32 alone: not named
])
def test_the_recipe_note_names_the_precision_where_bf16_is_involved(tmp_path, monkeypatch, bf16s, expected):
    copies = {f"dense/d100/s{seed}": "dense/d100/s21" for seed in (21, 42, 63)[:len(bf16s)]}
    assert _store_of_stored_runs(tmp_path, monkeypatch, copies, bf16s).recipe_note("resnet20_cifar10") == expected


def test_the_recipe_note_counts_only_the_methods_a_figure_shows(tmp_path, monkeypatch):
    store = _store_of_stored_runs(tmp_path, monkeypatch, {run: run for run in ("dense/d100/s21", "synflow/d20/s42")},
                                  bf16=[True, False])
    copy = "; CIFAR-10 copy: jpeg-q75"
    assert store.recipe_note("resnet20_cifar10") == \
        "cpu profile v2, 30 epochs, bf16 autocast (1 run) + fp32 (1 run)" + copy
    assert store.recipe_note("resnet20_cifar10", ["dense"]) == "cpu profile v2, 30 epochs, bf16 autocast" + copy
    assert store.recipe_note("resnet20_cifar10", ["synflow", "random"]) == "cpu profile v2, 30 epochs" + copy
    assert store.recipe_note("resnet20_cifar10", ["gem-miner"]) == ""
    # by the runs drawn: (method, density as a fraction, seed); runs not stored count nothing
    assert store.recipe_note("resnet20_cifar10", runs=[("synflow", 0.2, 42)]) == "cpu profile v2, 30 epochs" + copy
    assert store.recipe_note("resnet20_cifar10", runs=[("dense", 1.0, 21), ("synflow", 0.2, 21)]) == \
        "cpu profile v2, 30 epochs, bf16 autocast" + copy
    assert store.recipe_note("resnet20_cifar10", runs=[("synflow", 0.1, 42)]) == ""


def test_the_gem_miner_mining_title_counts_only_the_densities_it_draws(tmp_path, monkeypatch):
    """Gem-Miner 10 % × 3 seeds (bf16) is drawn; 20 % seed 42 alone (fp32) is not, nor counted."""
    runs = ("gem-miner/d10/s21", "gem-miner/d10/s42", "gem-miner/d10/s63", "gem-miner/d20/s42")
    store = _store_of_stored_runs(tmp_path, monkeypatch, {run: run for run in runs}, bf16=[True, True, True, False])
    fig = F.gem_mining(store, "resnet20_cifar10")
    try:
        assert fig._suptitle.get_text().splitlines()[1] == \
            "cpu profile v2, 30 epochs, bf16 autocast; CIFAR-10 copy: jpeg-q75"
        assert [t.get_text() for t in fig.legends[0].get_texts()] == ["10%"]
    finally:
        plt.close(fig)


def test_a_store_reads_the_run_records_once_for_its_tables(tmp_path, monkeypatch):
    from utils.figures import store as store_module
    from utils.runs import results
    store = _store_of_stored_runs(tmp_path, monkeypatch, {run: run for run in ("dense/d100/s21", "synflow/d20/s42")})
    reads = []
    monkeypatch.setattr(store_module, "runs", lambda root: reads.append(root) or results.runs(root))
    assert store.recipe_note("resnet20_cifar10", ["dense"]).startswith("cpu profile v2, 30 epochs")
    assert store.achieved("resnet20_cifar10", ["synflow"]).loc["synflow", 20.0] == 20.18
    assert store.inventory().loc[("resnet20_cifar10", "dense"), 100.0] == 1
    assert reads == [tmp_path]
