"""The thesis's own networks imported as runs (issue 19): safe loading, the layout, and that the
imported networks are the thesis's networks (accuracy, logits, per-layer densities)."""
import io
import json
import pickle
import re
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import THESIS_ARCHIVE

from models import layer_densities
from utils.errors import UserError
from utils.runs.results import load_run, read_record, runs
from utils.runs.thesis import open_source, read_frame, read_state


# ----------------------------------------------------------------------------- safe loading
def test_frame_unpickler_refuses_any_other_global(tmp_path):
    class Evil:
        def __reduce__(self):
            import os
            return (os.system, ("echo pwned",))
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load (posix|os|nt).system"):
        read_frame(path)


def test_frame_unpickler_refuses_a_non_frame(tmp_path):
    path = tmp_path / "array.pkl"
    path.write_bytes(pickle.dumps(np.arange(3)))
    with pytest.raises(pickle.UnpicklingError, match="does not hold a DataFrame"):
        read_frame(path)


def test_frame_unpickler_reads_the_thesis_pickles(tmp_path):
    """The thesis's pandas-1.x pickles: its training curve and its per-layer pruning table."""
    if not THESIS_ARCHIVE.is_file():
        pytest.skip("no thesis archive")
    base = "sparse_network_analysis/All_Results/FC/10/syn_10_21/"
    with tarfile.open(THESIS_ARCHIVE) as tar:
        for name in ("post-train.pkl", "compression-synflow-1-10.pkl"):
            (tmp_path / name).write_bytes(tar.extractfile(base + name).read())
    curve = read_frame(tmp_path / "post-train.pkl")
    assert list(curve.columns) == ["train_loss", "test_loss", "top1_accuracy", "top5_accuracy"]
    assert len(curve) == 26 and np.isnan(curve["train_loss"].iloc[0])
    assert curve["top1_accuracy"].iloc[[0, 1, -1]].tolist() == [9.58, 25.24, 95.59]
    table = read_frame(tmp_path / "compression-synflow-1-10.pkl")
    weights = table[table["param"] == "weight"]
    assert weights["module"].tolist() == ["1", "3", "5", "7", "9", "11"]
    assert weights["sparsity"].round(6).tolist() == [0.035115, 0.1445, 0.2341, 0.2237, 0.2351, 0.813]


def test_bad_source_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        open_source(tmp_path / "nowhere")
    with pytest.raises(UserError, match="holds no All_Results"):
        open_source(tmp_path)
    bad = tmp_path / "x.rar"
    bad.write_bytes(b"not an archive")
    with pytest.raises(UserError, match="not a clone"):
        open_source(bad)


@pytest.mark.parametrize("progress", [True, False])
def test_an_archive_extracts_with_a_progress_bar_only_when_asked(tmp_path, capsys, progress):
    """``import-thesis --quiet`` shows no bar, the extraction's included; the clone prefix is found."""
    tree = tmp_path / "tree" / "sparse_network_analysis" / "All_Results" / "FC"
    tree.mkdir(parents=True)
    (tree / "note.txt").write_text("x")
    archive = tmp_path / "repo.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "tree" / "sparse_network_analysis", arcname="sparse_network_analysis")
    source = open_source(archive, progress=progress)
    try:
        assert (source.root / "All_Results" / "FC" / "note.txt").read_text() == "x"
        assert source.root.name == "sparse_network_analysis"
    finally:
        source.cleanup()
    assert not source.root.exists()
    assert ("extract repo.tar.gz" in capsys.readouterr().err) is progress


def test_a_file_that_differs_from_the_pinned_commit_is_refused(tmp_path):
    """Import checks every file it reads against the pinned commit's sha256."""
    if not THESIS_ARCHIVE.is_file():
        pytest.skip("no thesis archive")
    from utils.runs.thesis import import_thesis
    with tarfile.open(THESIS_ARCHIVE) as tar:
        member = tar.getmember("sparse_network_analysis/All_Results/FC/10/syn_10_21/synflow_parser_args.json")
        member_file = tar.extractfile(member).read()
    repo = tmp_path / "clone"
    folder = repo / "All_Results" / "FC" / "10" / "syn_10_21"
    folder.mkdir(parents=True)
    (folder / "synflow_parser_args.json").write_bytes(member_file.replace(b'"seed": 21', b'"seed": 22'))
    with pytest.raises(UserError, match="differs from tjayada/sparse_network_analysis"):
        import_thesis(repo, tmp_path / "store", progress=False)
    assert not (tmp_path / "store" / "IMPORTED.json").exists()


# ----------------------------------------------------------------------------- the import
def test_layout_and_anomalies_found_in_the_data(thesis_store):
    table = runs(thesis_store)
    counts = table.groupby(["experiment", "method"]).size().to_dict()
    assert counts == {("thesis_fc_mnist", "dense"): 3, ("thesis_fc_mnist", "gem-miner"): 15,
                      ("thesis_fc_mnist", "random"): 15, ("thesis_fc_mnist", "random-fc"): 3,
                      ("thesis_fc_mnist", "synflow"): 15, ("thesis_resnet20_cifar10", "gem-miner"): 15,
                      ("thesis_resnet20_cifar10", "random"): 15, ("thesis_resnet20_cifar10", "synflow"): 15}
    anomalies = json.loads((thesis_store / "IMPORTED.json").read_text())["anomalies"]
    # Gem-Miner FC ends near 3 % effective density at every target ≥ 5 %.
    for label in (5, 10, 20, 50):
        for seed in (21, 42, 63):
            notes = anomalies[f"thesis_fc_mnist/gem-miner/d{label}/s{seed}"]
            density = float(re.search(r"is (\d+\.\d+) %, far below", " ".join(notes)).group(1))
            assert 2.85 <= density <= 3.0
    assert "thesis_fc_mnist/gem-miner/d2/s21" not in anomalies          # at 2 % the flags bind
    assert any("that of the 5 % runs" in a for a in anomalies["thesis_resnet20_cifar10/gem-miner/d10/s42"])
    assert any("wrong/ (a synflow run" in a for a in anomalies["thesis_resnet20_cifar10/random/d2/s63"])
    assert any("mask-shuffle sanity-check log is missing" in a
               for a in anomalies["thesis_fc_mnist/gem-miner/d50/s63"])
    assert any("ends after 21 of 25" in a for a in anomalies["thesis_fc_mnist/gem-miner/d50/s21"])
    one_level = {k for k, notes in anomalies.items() if any("1 level(s) × 1 iteration(s)" in a for a in notes)}
    assert one_level == {f"thesis_resnet20_cifar10/random/d{d}/s{s}" for d, s in ((2, 21), (5, 21), (5, 42))}


def test_imported_runs_load_with_the_same_call_and_keep_every_file(thesis_store):
    run = load_run("thesis_fc_mnist", "gem-miner", 0.1, 21, root=thesis_store)
    info = run.info
    assert info["profile"] == "thesis-original" and info["thesis"]["commit"].startswith("7548f2c")
    assert set(info["thesis"]["files"]) == {"init_model.pth", "model_before_finetune.pth",
                                            "model_after_finetune.pth", "acc_and_sparsity.csv",
                                            "acc_and_sparsity_weight_reinit.csv",
                                            "acc_and_sparsity_mask_shuffle.csv"}
    history = run.history
    assert list(history["phase"].value_counts().sort_index().items()) == [("finetune", 25), ("mining", 25),
                                                                          ("rounded", 1)]
    assert history["top1"].iloc[-1] == info["thesis"]["final_top1_recorded"] == 93.63
    reinit = run.table("history_weight_reinit.csv")
    assert len(reinit) == 51 and reinit["phase"].iloc[-1] == "finetune"
    extras = run.extras()
    flags = run.masks("flag")
    assert sum(int(f.sum()) for f in flags.values()) == 11938        # the flags keep the 10 % target
    assert abs(info["density_achieved"] - 0.029447236180904522) < 1e-12  # the effective mask, ≈3 %
    for name, mask in run.masks("effective").items():
        assert torch.equal(mask, flags[name] & extras[f"scores.{name}"])
        assert extras[f"mined_scores.{name}"].dtype == torch.float32
        assert float(extras[f"init_scores.{name}"].min()) >= 0.0
    synflow = load_run("thesis_fc_mnist", "synflow", 0.1, 21, root=thesis_store)
    assert set(synflow.info["thesis"]["files"]) == {"synflow_parser_args.json", "model_before_train.pt",
                                                    "post-model.pt", "post-train.pkl",
                                                    "compression-synflow-1-10.pkl"}
    init = synflow.init_model()
    assert layer_densities(init) == layer_densities(synflow.model)


def test_per_layer_densities_equal_those_the_thesis_recorded(thesis_store):
    table = runs(thesis_store)
    checked = 0
    for path in table["path"]:
        record = read_record(thesis_store / path, verify=False)
        recorded = record["thesis"].get("compression")
        if record["method"] == "gem-miner":
            last = pd.read_csv(thesis_store / path / "history.csv")["density_effective"].iloc[-1]
            assert abs(record["density_achieved"] - last) < 1e-9
            checked += 1
        elif recorded:
            ours = record["layer_densities"]
            assert set(ours) == set(recorded)
            assert max(abs(ours[k] - recorded[k]) for k in ours) < 1e-6
            checked += 1
    assert checked == 93      # every run but the three Random-FC (the thesis recorded none)


@pytest.fixture(scope="module")
def mnist(real_data_dir):
    from utils.engine.data import load_mnist
    return load_mnist(real_data_dir)


def test_every_imported_fc_network_reevaluates_to_its_recorded_accuracy(thesis_store, mnist):
    from utils.engine.train import evaluate
    table = runs(thesis_store)
    fc = table[table["experiment"] == "thesis_fc_mnist"]
    assert len(fc) == 51
    worst = 0.0
    for path in fc["path"]:
        run = load_run_dir(thesis_store / path)
        top1 = evaluate(run.model, mnist.test_x, mnist.test_y, mnist, batch_size=5000)["top1"]
        worst = max(worst, abs(top1 - run.info["thesis"]["final_top1_recorded"]))
    assert worst <= 0.05


def load_run_dir(path):
    from utils.runs.results import load_run_dir as load
    return load(path)


# ----------------------------------------------------------------------------- ResNet-20
def thesis_resnet_forward(state: dict, x: torch.Tensor, gem: bool) -> torch.Tensor:
    """ResNet-20 written directly on a thesis state dict (OpenLTH style, eval mode): masked weights,
    1×1 stride-2 downsample shortcuts with BN, identity shortcuts scaled by their (C,1,1) weight."""
    def weight(prefix):
        w = state[f"{prefix}.weight"]
        if gem and f"{prefix}.flag" in state:
            return w * state[f"{prefix}.flag"] * (state[f"{prefix}.scores"] > 0.5)
        mask = state.get(f"{prefix}.weight_mask")
        return w if mask is None else w * mask

    def bn(prefix, h):
        return F.batch_norm(h, state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"],
                            weight(prefix), state[f"{prefix}.bias"], training=False, eps=1e-5)

    stem = ("conv1", "bn1") if gem else ("conv", "bn")
    h = F.relu(bn(stem[1], F.conv2d(x, weight(stem[0]), padding=1)))
    for i in range(9):
        block = f"layer{i // 3 + 1}.{i % 3}" if gem else f"blocks.{i}"
        stride = 2 if i in (3, 6) else 1
        out = F.relu(bn(f"{block}.bn1", F.conv2d(h, weight(f"{block}.conv1"), stride=stride, padding=1)))
        out = bn(f"{block}.bn2", F.conv2d(out, weight(f"{block}.conv2"), padding=1))
        if stride == 2:
            short = bn(f"{block}.shortcut.1", F.conv2d(h, weight(f"{block}.shortcut.0"), stride=2))
        else:
            short = h * weight(f"{block}.shortcut")
        h = F.relu(out + short)
    h = F.adaptive_avg_pool2d(h, 1).flatten(1)
    return F.linear(h, weight("fc"), state.get("fc.bias"))


@pytest.fixture(scope="module")
def cifar(cifar_data_dir):
    from utils.engine.data import load_cifar10
    return load_cifar10(cifar_data_dir)


@pytest.mark.parametrize("method,label,seed,folder", [
    ("synflow", 10, 21, "syn_10_21"), ("random", 2, 63, "rnd_2_63"), ("gem-miner", 10, 42, "gem_10_42"),
    ("gem-miner", 50, 21, "gem_50_21")])
def test_resnet_logits_equal_a_forward_written_on_the_thesis_state_dict(thesis_store, cifar, method, label,
                                                                          seed, folder):
    from utils.engine.data import normalize
    gem = method == "gem-miner"
    with tarfile.open(THESIS_ARCHIVE) as tar:
        name = "model_after_finetune.pth" if gem else "post-model.pt"
        raw = tar.extractfile(f"sparse_network_analysis/All_Results/Resnet20/{label}/{folder}/{name}").read()
    state = torch.load(io.BytesIO(raw), weights_only=True, map_location="cpu")
    x = normalize(cifar.test_x[:64], cifar.info)
    run = load_run("thesis_resnet20_cifar10", method, label / 100, seed, root=thesis_store)
    with torch.no_grad():
        ours = run.model.eval()(x)
        theirs = thesis_resnet_forward(state, x, gem)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    assert (ours.argmax(1) == theirs.argmax(1)).all()


def test_resnet_reevaluates_to_its_recorded_accuracy_on_the_official_images(thesis_store, cifar):
    """Only with the official CIFAR-10 files: the JPEG copy here costs the thesis's networks about
    12 points (its images differ from those they were trained on)."""
    if cifar.copy != "official":
        pytest.skip(f"CIFAR-10 copy is {cifar.copy!r}, not the official archive")
    from utils.engine.train import evaluate
    for path in runs(thesis_store).query("experiment == 'thesis_resnet20_cifar10'")["path"]:
        run = load_run_dir(thesis_store / path)
        top1 = evaluate(run.model, cifar.test_x, cifar.test_y, cifar, batch_size=1000)["top1"]
        assert abs(top1 - run.info["thesis"]["final_top1_recorded"]) <= 0.05, path


def test_read_state_maps_gpu_checkpoints_to_cpu(tmp_path):
    path = tmp_path / "state.pt"
    torch.save({"w": torch.ones(2)}, path)
    assert read_state(path)["w"].device.type == "cpu"


# ----------------------------------------------------------------------------- the random stream
@pytest.mark.parametrize("experiment,label,seed,levels,iterations,max_blocks", [
    ("thesis_fc_mnist", 10, 21, 10, 1, 288),
    ("thesis_fc_mnist", 2, 21, 10, 1, 192),
    ("thesis_fc_mnist", 10, 42, 10, 1, 48),     # layer 1 takes two Philox counters per call there
    ("thesis_resnet20_cifar10", 10, 42, 10, 100, 48),
    ("thesis_resnet20_cifar10", 5, 42, 1, 1, 288),         # one of the three 1 × 1 runs
])
def test_random_pruner_replays_the_thesis_random_masks(thesis_store, experiment, label, seed, levels,
                                                       iterations, max_blocks):
    """The thesis drew its random scores on its GPUs; the replayed stream gives its masks back
    (all but at most 2 in 10,000 entries of every layer; those are scores within an ulp of the threshold:
    the GPU's fast sincos differs from numpy's in the last bits)."""
    from models import fc, get_masks, resnet20
    from pruners.random import Random
    thesis = load_run(experiment, "random", label / 100, seed, root=thesis_store)
    assert thesis.info["thesis"]["random_stream"]["max_blocks"] == max_blocks
    build = fc if experiment == "thesis_fc_mnist" else resnet20
    d, theirs = thesis.info["density_target"], thesis.masks("effective")

    def agreement(s: int) -> dict[str, float]:
        model = build()
        Random(stream="thesis", levels=levels, iterations=iterations, max_blocks=max_blocks).prune(
            model, d, seed=s, data_shape=())
        return {n: float((m == theirs[n]).float().mean()) for n, m in get_masks(model).items()}

    assert min(agreement(seed).values()) >= 0.9998
    # the stream, not chance: another seed agrees only at the chance level 1 − 2d(1 − d)
    assert abs(float(np.mean(list(agreement(seed + 1).values()))) - (1 - 2 * d * (1 - d))) < 0.01


@pytest.mark.parametrize("seed", [21, 42, 63])
def test_random_fc_replays_the_thesis_masks_and_init(thesis_store, seed):
    """The thesis drew its Random-FC placements with torch's global generator while building the
    net: replaying that order gives its masks and its initial weights exactly."""
    from models import fc, get_masks, prunable_layers, raw_weight
    from pruners.random import RandomFC
    thesis = load_run("thesis_fc_mnist", "random-fc", 0.07, seed, root=thesis_store)
    model = fc()
    RandomFC(stream="thesis").prune(model, 0.07, seed=seed, data_shape=())
    theirs, init = thesis.masks("effective"), prunable_layers(thesis.init_model())
    for name, mask in get_masks(model).items():
        assert torch.equal(mask, theirs[name])
        layer = prunable_layers(model)[name]
        assert torch.equal(raw_weight(layer).detach()[mask], raw_weight(init[name]).detach()[mask])
        if layer.bias is not None:
            assert torch.equal(layer.bias.detach(), init[name].bias.detach())


@pytest.mark.parametrize("config_name,profile", [("fc_mnist", "thesis"), ("resnet20_cifar10", "thesis")])
def test_config_random_stream_is_the_gpu_found_in_each_thesis_run(thesis_store, config_name, profile):
    """The per-run GPU table of the random pruner in the config is what the import found in the data."""
    from utils.runs.experiment import load_config, method_settings, profile_of
    _, values = profile_of(load_config(config_name), profile)
    table = runs(thesis_store)
    checked = 0
    for row in table[(table["experiment"] == f"thesis_{config_name}") & (table["method"] == "random")].itertuples():
        record = read_record(thesis_store / row.path, verify=False)
        stream, args = record["thesis"]["random_stream"], record["thesis"]["args"]
        options, _ = method_settings(values, "random", row.seed, row.density)
        assert (options["levels"], options["iterations"]) == (args["level_list"][0], args["prune_epochs"])
        if stream is not None:
            assert options["max_blocks"] == stream["max_blocks"], row.path
            checked += 1
    assert checked == (13 if config_name == "fc_mnist" else 15)


def _as_ran_expected(experiment: str, label: int, seed: int) -> tuple[float, float | None]:
    if experiment == "thesis_fc_mnist":
        return 1e-4, 0.1                      # the FC config's values: the inference checks itself
    if label == 50 or (label, seed) == (10, 63):
        return 1e-8, None
    return (1e-5, 0.01) if label == 20 else (1e-4, 0.01)


def test_mining_as_ran_reads_the_penalty_and_lr_each_gem_miner_run_used(thesis_store):
    """λ and the mining lr from each thesis Gem-Miner log: FC as its config says (λ 1e-4, lr 0.1);
    ResNet-20 not as its config says (λ 1e-8, lr 0.05) but λ 1e-4 at 2/5/10 %, 1e-5 at 20 %,
    lr 0.01, and λ 1e-8 only at 50 % and in d10/s63."""
    from utils.runs.thesis_compare import mining_as_ran
    table = runs(thesis_store)
    gem = table[table["method"] == "gem-miner"]
    assert len(gem) == 30
    for row in gem.itertuples():
        got = mining_as_ran(load_run(row.experiment, "gem-miner", row.density, row.seed, root=thesis_store))
        label = round(row.density * 100)
        assert (got["score_l2"], got["lr"]) == _as_ran_expected(row.experiment, label, row.seed), row.path
    d2 = mining_as_ran(load_run("thesis_resnet20_cifar10", "gem-miner", 0.02, 21, root=thesis_store))
    assert d2["shrink_epoch0"] == pytest.approx(0.98641, abs=1e-5)
    assert d2["lr_estimate"] == pytest.approx(0.009718, abs=1e-6)


@pytest.mark.parametrize("config_name", ["fc_mnist", "resnet20_cifar10"])
def test_thesis_profile_mines_with_the_penalty_and_lr_the_thesis_runs_used(thesis_store, config_name):
    from utils.runs.experiment import load_config, method_settings, profile_of
    from utils.runs.thesis_compare import mining_as_ran
    _, values = profile_of(load_config(config_name), "thesis")
    table = runs(thesis_store)
    rows = table[(table["experiment"] == f"thesis_{config_name}") & (table["method"] == "gem-miner")]
    for row in rows.itertuples():
        options, _ = method_settings(values, "gem-miner", row.seed, row.density)
        got = mining_as_ran(load_run(row.experiment, "gem-miner", row.density, row.seed, root=thesis_store))
        assert options["score_l2"] == got["score_l2"], row.path
        if got["lr"] is not None:
            assert options["lr"] == got["lr"], row.path


# ----------------------------------------------------------------------------- the comparison
def test_comparison_of_a_run_with_itself_and_with_the_thesis(thesis_store, tmp_path):
    """compare_pair: identical runs → identical init, full mask agreement, NNSTD 0; our stored
    FC SynFlow 10 % seed 21 against the thesis's: the same init and ≥ 99.9 % of the mask."""
    from utils.runs.results import load_run as load
    from utils.runs.thesis_compare import PAIR_COLUMNS, compare_pair
    theirs = load("thesis_fc_mnist", "synflow", 0.1, 21, root=thesis_store)
    same = compare_pair(theirs, theirs)
    assert same["init_identical"] and same["mask_agreement"] == 1.0 and same["nnstd"] == 0.0
    assert list(same) == list(PAIR_COLUMNS)
    # unrelated masks of its layer densities (3.5 % of the 78,400 input weights, ..., 81.3 % of the
    # classifier) would agree on 84.30 %: far below the 99.9 % the two SynFlow masks share
    assert round(same["mask_agreement_chance"], 4) == 0.8430
    ours = load("fc_mnist", "synflow", 0.1, 21)
    row = compare_pair(ours, theirs)
    assert round(row["mask_agreement_chance"], 4) == 0.8430
    assert row["init_identical"] and row["init_max_abs_diff"] == 0.0
    assert 0.999 <= row["mask_agreement"] < 1.0
    assert row["top1_thesis"] == 95.59
    assert abs(row["density_ours"] - row["density_thesis"]) < 1e-4


def test_compare_thesis_cli_writes_the_table(thesis_store, tmp_path):
    from utils.cli import main
    out = tmp_path / "cmp.csv"
    assert main(["compare-thesis", "--thesis", str(thesis_store), "--out", str(out), "--quiet",
                 "--experiments", "fc_mnist"]) == 0
    table = pd.read_csv(out)
    fc = table[table["experiment"] == "fc_mnist"]
    assert len(fc) == 51                          # every FC cell both stores hold
    syn = fc[fc["method"] == "synflow"]
    assert syn["init_identical"].all() or syn["init_identical"].sum() >= 13
    assert syn["mask_agreement"].min() > 0.99
    # and Gem-Miner's per-layer profile beside the thesis's: 5 targets × 6 layers, 3 seeds each
    layers = pd.read_csv(tmp_path / "thesis_gem_miner_layers.csv")
    assert len(layers) == 30 and (layers[["ours seeds", "thesis seeds"]] == 3).all().all()
    thesis_fc_2 = layers[(layers["density"] == 0.02) & (layers["layer"] == "6 layers.5")].iloc[0]
    assert thesis_fc_2["thesis"] == 33.53          # the thesis's classifier keeps a third at 2 %
    assert (layers["ours − thesis"] - (layers["ours"] - layers["thesis"])).abs().max() < 0.011
    # and its sanity checks: 5 targets × 3 seeds, ours and the thesis's
    sanity = pd.read_csv(tmp_path / "thesis_gem_miner_sanity.csv")
    assert len(sanity) == 30 and sanity.groupby("source").size().to_dict() == {"ours": 15, "thesis": 15}


def test_thesis_shuffle_density_is_the_expected_density_of_the_thesis_shuffle():
    """Σ |flags|·mean(rounded) / N: literally on a small case, and as the mean of the thesis's
    shuffle (permute the flags, AND the unshuffled rounded scores) over 400 permutations."""
    from pruners.gem_miner import _permute
    from utils.runs.thesis_compare import thesis_shuffle_density
    tiny = {"flag.a": torch.tensor([True, True, False, False]), "scores.a": torch.tensor([True, False, True, False])}
    assert thesis_shuffle_density(tiny) == 0.25
    gen = torch.Generator().manual_seed(0)
    extras = {"flag.a": torch.rand(50, 40, generator=gen) < 0.3, "scores.a": torch.rand(50, 40, generator=gen) < 0.1,
              "flag.b": torch.rand(10, 10, generator=gen) < 0.9, "scores.b": torch.rand(10, 10, generator=gen) < 0.8}
    expected = sum(float(extras[f"flag.{n}"].sum()) * float(extras[f"scores.{n}"].float().mean())
                   for n in "ab") / 2100
    assert thesis_shuffle_density(extras) == pytest.approx(expected, rel=1e-12)
    kept = [sum(int((_permute(extras[f"flag.{n}"], gen) & extras[f"scores.{n}"]).sum()) for n in "ab")
            for _ in range(400)]
    assert np.mean(kept) / 2100 == pytest.approx(expected, abs=1.5 / 2100)


def test_gem_miner_sanity_table_pairs_each_run_with_its_sanity_finetunes(thesis_store):
    """Ours and the thesis's sanity finetunes by seed; a cut (FC 50 % s21) or missing (s63) thesis
    log is NaN; the thesis's shuffled networks are far sparser than their target."""
    from utils.runs.thesis_compare import gem_miner_sanity_table
    table = gem_miner_sanity_table(thesis_store=thesis_store, experiments=("fc_mnist",))
    assert len(table) == 30 and set(table["source"]) == {"ours", "thesis"}
    row = table[(table["source"] == "thesis") & (table["density"] == 0.02) & (table["seed"] == 21)].iloc[0]
    assert (row["mined"], row["reinit"], row["shuffle"]) == (91.06, 89.45, 10.28)
    assert row["shuffle_density"] == pytest.approx(0.001891, abs=5e-7)
    cut = table[(table["source"] == "thesis") & (table["density"] == 0.5)].set_index("seed")["shuffle"]
    assert cut.isna().tolist() == [True, False, True] and cut[42] == 92.55
    ours = table[table["source"] == "ours"]
    assert (ours["shuffle_density"] - ours["density"]).abs().max() < 1e-3     # ours keeps the target
    assert set(ours["mode"]) == {"target"} and set(table.loc[table["source"] == "thesis", "mode"]) == {"thesis"}
    assert (table.loc[table["source"] == "thesis", "shuffle_density"] < 0.04).all()
    # the thesis's ResNet-20 10 % seed 42 is mined to 5 %: left out of the 10 % rows
    resnet = gem_miner_sanity_table(thesis_store=thesis_store, experiments=("resnet20_cifar10",))
    assert sorted(resnet.loc[(resnet["source"] == "thesis") & (resnet["density"] == 0.1), "seed"]) == [21, 63]


@pytest.mark.parametrize("density,label,expected", [(0.04998, 10, 5), (0.0297, 10, None), (0.1, 10, None),
                                                    (0.0199, 2, None), (0.0201, 5, 2)])
def test_mislabelled_as_names_the_target_a_run_really_has(density, label, expected):
    from utils.runs.thesis import mislabelled_as
    assert mislabelled_as(density, label) == expected


def test_gem_miner_layers_leave_out_a_mislabelled_thesis_run(thesis_store):
    """The thesis's Resnet20/10/gem_10_42 is mined to 5 %: the 10 % per-layer mean is s21 and s63's."""
    from utils.runs.thesis_compare import gem_miner_layers, layer_profile
    table = gem_miner_layers(0.1, "resnet20_cifar10", thesis_store=thesis_store)
    assert (table["thesis seeds"] == 2).all()
    first = [layer_profile(load_run("thesis_resnet20_cifar10", "gem-miner", 0.1, seed, thesis_store))["conv1"]
             for seed in (21, 63)]
    assert table.loc["1 conv1", "thesis"] == round(sum(first) / 2, 2) == 15.16


def test_compare_thesis_for_one_experiment_keeps_the_other_experiments_rows(thesis_store, tmp_path):
    """Comparing FC again keeps the ResNet-20 rows of the earlier table (and of the per-layer one)
    unchanged, in experiment order; a table of other columns is replaced; a corrupt one stops the
    command before it compares anything and stays as it was."""
    from utils.cli import main
    from utils.runs import results
    out = tmp_path / "cmp.csv"
    earlier = pd.DataFrame({"experiment": ["resnet20_cifar10", "fc_mnist"], "method": ["synflow", "old"]})
    comparison = pd.read_csv(results.DEFAULT_ROOT / "thesis_comparison.csv")
    resnet = comparison[comparison["experiment"] == "resnet20_cifar10"]
    pd.concat([resnet, comparison[comparison["experiment"] == "fc_mnist"].head(2)]).to_csv(out, index=False)
    earlier.to_csv(tmp_path / "thesis_gem_miner_layers.csv", index=False)     # other columns
    args = ["compare-thesis", "--thesis", str(thesis_store), "--out", str(out), "--quiet", "--experiments", "fc_mnist"]
    assert main(args) == 0
    table = pd.read_csv(out)
    assert list(table["experiment"]) == ["fc_mnist"] * 51 + ["resnet20_cifar10"] * len(resnet) and len(resnet) > 0
    # (a table written before rows named their sources gets those columns, empty)
    pd.testing.assert_frame_equal(table.tail(len(resnet))[resnet.columns].reset_index(drop=True),
                                  resnet.reset_index(drop=True))
    layers = pd.read_csv(tmp_path / "thesis_gem_miner_layers.csv")
    assert len(layers) == 30 and set(layers["experiment"]) == {"fc_mnist"}
    out.write_bytes(b"\x00\xff\xfe")
    assert main(args) == 2 and out.read_bytes() == b"\x00\xff\xfe"


def test_a_refresh_reuses_the_rows_computed_from_the_same_runs(thesis_store, tmp_path):
    """Rows whose runs (content digests of both run.json) are unchanged are taken from the earlier
    table as they are, also when a run was written again (new time stamp and wall time, e.g. a
    thesis store imported anew); a row whose run changed is computed again."""
    import shutil

    from utils.runs import results
    from utils.runs.thesis_compare import SOURCES, compare_with_thesis
    for seed in (21, 42):
        path = Path("fc_mnist/synflow/d10") / f"s{seed}"
        shutil.copytree(results.DEFAULT_ROOT / path, tmp_path / path)
    first = compare_with_thesis(tmp_path, thesis_store, progress=False, experiments=("fc_mnist",))
    assert list(first["seed"]) == [21, 42] and first["ours_digest"].str.fullmatch("[0-9a-f]{64}").all()
    assert (first["thesis_here_test_sha"] == "").all()                  # FC: no re-evaluation
    earlier = first.copy()
    earlier["nnstd"] = [-1.0, -2.0]                                      # marks what is reused
    earlier.loc[1, "ours_digest"] = "0" * 64                             # as if seed 42 had been retrained
    record_path = tmp_path / "fc_mnist/synflow/d10/s21/run.json"         # seed 21 written again, same files
    record = json.loads(record_path.read_text())
    record.update(created="2031-01-01T00:00:00Z", wall_time_s=1.0, versions={"project": "9"})
    record["digest"] = results._digest(record)                          # a valid record, as written anew
    record_path.write_text(json.dumps(record))
    again = compare_with_thesis(tmp_path, thesis_store, progress=False, experiments=("fc_mnist",),
                                previous=earlier)
    assert list(again["nnstd"]) == [-1.0, first["nnstd"][1]]
    pd.testing.assert_frame_equal(again.drop(columns="nnstd"), first.drop(columns="nnstd"))
    assert list(again.columns[-4:]) == [*SOURCES, "top1_diff"]
    # a table written before a column was added is computed again, not reused without it
    older = compare_with_thesis(tmp_path, thesis_store, progress=False, experiments=("fc_mnist",),
                                previous=earlier.drop(columns="mask_agreement_chance"))
    pd.testing.assert_frame_equal(older, first)
