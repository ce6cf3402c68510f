"""Every run stored in results/ loads with verified checksums, hits its target density, and
its recorded final accuracy equals a fresh evaluation of the stored weights (SPEC §11)."""
import pytest
import torch

from utils.engine.data import load_dataset
from utils.runs import results

STORED = results.runs()
DENSITY_TOLERANCE = 0.005  # of N: the "within 0.5 % of N"
#: methods whose achieved density is a result, not a target
FREE_DENSITY = {"soft-deepr", "random-fc"}


#: results/ must stay small enough to live in git (issue: under 80 MB in total)
MAX_RESULTS_BYTES = 80_000_000  # decimal MB, the stricter reading
#: stored ResNet-20 runs re-evaluated on CIFAR-10 (a sample: one per method and one per
#: recorded precision, ~5 s each)
RESNET_SAMPLE_PER_METHOD = 1
#: |top-1 in fp32 − recorded top-1| allowed for a run trained and recorded in bf16 autocast, where
#: bf16 is emulated.  Measured on 2026-12-04 over the 39 stored ResNet-20 runs (fp32, channels_last,
#: the full test set): median 0.04 pt, 33 of 39 within 0.1, at most 0.91 (random 2 % s63, whose
#: four classes without a classifier weight tie on their biases); wrong weights cost many points.
FP32_OF_BF16_TOLERANCE = 1.0


def stored_ids(*experiments):
    rows = STORED if not experiments else STORED[STORED["experiment"].isin(experiments)]
    return [pytest.param(path, id=path) for path in rows["path"]]


#: a further store inside results/, with its own README and summary: FC Gem-Miner mined as the
#: thesis ran it, bugs included (profile thesis-quirks, seed 21)
QUIRKS = results.DEFAULT_ROOT / "thesis_quirks"


def quirks_ids():
    """The thesis-quirks store's runs, as paths under results/."""
    paths = results.runs(QUIRKS)["path"] if QUIRKS.is_dir() else []
    return [pytest.param(f"{QUIRKS.name}/{path}", id=f"{QUIRKS.name}/{path}") for path in paths]


def resnet_sample():
    """(path, exact) of the sampled ResNet-20 runs: the first of each method and the first of each
    recorded precision (fp32 runs come from CPUs without native bf16); ``exact``: the latter,
    evaluated in their training precision on any CPU."""
    rows = STORED[STORED["experiment"] == "resnet20_cifar10"].sort_values("path")
    paths = list(rows.groupby("method")["path"].head(RESNET_SAMPLE_PER_METHOD))
    first_by_precision = {}
    for path in rows["path"]:
        compute = results.read_record(results.DEFAULT_ROOT / path, verify=False).get("compute", {})
        first_by_precision.setdefault(compute.get("bf16"), path)
    exact = set(first_by_precision.values())
    paths += [path for path in first_by_precision.values() if path not in paths]
    return [pytest.param(path, path in exact, id=path) for path in paths]


def test_results_stay_small():
    total = sum(p.stat().st_size for p in results.DEFAULT_ROOT.rglob("*") if p.is_file())
    assert total < MAX_RESULTS_BYTES, f"results/ holds {total / 1e6:.1f} MB"


@pytest.mark.parametrize("path", stored_ids() + quirks_ids())
def test_run_loads_and_hits_its_density(path):
    run = results.load_run_dir(results.DEFAULT_ROOT / path)
    info = run.info
    achieved, target = info["density_achieved"], info["density_target"]
    from models import density
    assert density(run.model) == pytest.approx(achieved, abs=1e-12)
    if info["method"] in FREE_DENSITY:
        return
    if info.get("info", {}).get("mode") == "thesis":
        assert achieved <= target + 1e-9
    else:
        assert abs(achieved - target) <= DENSITY_TOLERANCE
    assert run.history["top1"].notna().all()


@pytest.mark.parametrize("path", [p for p in stored_ids() if p.values[0].split("/")[1] == "gem-miner"])
def test_no_gem_miner_layer_collapses(path):
    """Every prunable layer keeps at least a tenth of the target density.

    A too-short ResNet-20 mining schedule with global BottomK (10 epochs, a prune every epoch)
    collapsed the classifier to 1 of 640 weights: 0.016 × its 10 % target, at 10 % accuracy.
    Global scope makes the per-layer profile a result, so the bound is loose: the thesis's own
    networks go down to 0.20 × (FC 2 %, first layer 0.40 %) and 0.43 × (ResNet-20 20 %, the
    classifier at 8.59 %, mean of its 3 seeds; ours: 7.81 %, 2 seeds), and reaching every class is
    not the invariant either (at 2 % a 640-weight classifier keeps 13 weights)."""
    run = results.load_run_dir(results.DEFAULT_ROOT / path)
    kept = {name: mask.double().mean().item() for name, mask in run.masks("effective").items()}
    collapsed = {name: round(d, 4) for name, d in kept.items() if d < 0.1 * run.info["density_target"]}
    assert collapsed == {}


@pytest.fixture(scope="module")
def mnist(real_data_dir):
    return load_dataset("mnist", real_data_dir, download=False)


@pytest.mark.parametrize("path", stored_ids("fc_mnist", "fc_mnist_dnw_static") + quirks_ids())
def test_fc_accuracy_matches_fresh_evaluation(path, mnist):
    """``verify --evaluate`` of every stored FC run: on the test set it recorded (checked by
    digest), within 0.1 pt of its record."""
    from utils.runs.reevaluate import reevaluate
    check = reevaluate(results.load_run_dir(results.DEFAULT_ROOT / path), mnist)
    assert check.difference == pytest.approx(0.0, abs=0.1)


@pytest.mark.parametrize("path,exact", resnet_sample())
def test_resnet_accuracy_matches_fresh_evaluation(path, exact, cifar_data_dir):
    """Evaluated as training evaluated it (bf16 autocast, channels_last: see ``Run.precision``),
    within 0.1 pt.  A CPU without native bf16 emulates bf16 autocast, 8× slower than fp32 (150 s
    per run on a 2-core AMD EPYC, 14 of CI's 26 minutes there): on such a CPU only the ``exact``
    runs are evaluated in bf16, the other bf16 runs in fp32, within :data:`FP32_OF_BF16_TOLERANCE`."""
    from utils.engine.train import cpu_has_native_bf16
    from utils.runs.reevaluate import reevaluate
    cifar = load_dataset("cifar10", cifar_data_dir, download=False)
    run = results.load_run_dir(results.DEFAULT_ROOT / path)
    bf16, tolerance = None, 0.1                          # None: as the run trained
    if run.precision()[0] and not exact and not cpu_has_native_bf16():
        bf16, tolerance = False, FP32_OF_BF16_TOLERANCE
    check = reevaluate(run, cifar, bf16=bf16)
    assert check.difference == pytest.approx(0.0, abs=tolerance)


def test_summary_lists_every_stored_run():
    summary = results.DEFAULT_ROOT / "summary.csv"
    if STORED.empty:
        pytest.skip("no stored runs yet")
    import pandas as pd
    listed = set(pd.read_csv(summary)["path"])
    assert set(STORED["path"]) <= listed


@pytest.mark.parametrize("path", stored_ids("fc_mnist", "fc_mnist_dnw_static"))
def test_fc_run_converts_to_csr_with_identical_outputs(path):
    from utils.engine.data import DATASETS, normalize
    from utils.toolkits.sparse import convert_model
    run = results.load_run_dir(results.DEFAULT_ROOT / path)
    images, _ = results.load_probe("mnist")
    x = normalize(images[:256], DATASETS["mnist"])
    sparse = convert_model(run.model, target="csr")
    with torch.no_grad():
        dense_out, sparse_out = run.model(x), sparse(x)
    # float32 sums in another order: within 1e-5 of the logits' scale (they reach ~50).
    scale = max(1.0, dense_out.abs().max().item())
    assert (sparse_out - dense_out).abs().max().item() <= 1e-5 * scale


def test_every_cell_far_from_the_thesis_is_explained():
    """results/README.md gives a sentence for every cell more than 2 points from the thesis: each one
    has a note in results/cell_notes.yaml (and the notes are not empty: there are such cells)."""
    import pandas as pd

    from utils.runs import report
    comparison = results.DEFAULT_ROOT / "thesis_comparison.csv"
    if not comparison.is_file():
        pytest.skip("no thesis comparison stored")
    table = pd.read_csv(comparison)
    notes = report.load_cell_notes(results.DEFAULT_ROOT / "cell_notes.yaml")
    assert report.unexplained_cells(table, notes) == []
    far = report.cell_table(table).query("abs(diff) > @report.EXPLAIN_ABOVE")
    assert len(far) >= 1
    readme = (results.DEFAULT_ROOT / "README.md").read_text()
    for cell in far.itertuples():
        assert f"- **{cell.method} {100 * cell.density:g} %** (ours {cell.ours:.2f}" in readme


def test_the_thesis_comparison_was_computed_from_the_runs_stored():
    """Every row of thesis_comparison.csv names our run it was computed from by its content
    digest, and that is the run stored now: no row outlives a retrained or replaced run."""
    import pandas as pd
    comparison = results.DEFAULT_ROOT / "thesis_comparison.csv"
    if not comparison.is_file():
        pytest.skip("no thesis comparison stored")
    table = pd.read_csv(comparison, dtype={"ours_digest": str})
    stale = [f"{r.experiment}/{r.method}/{r.density:g}/s{r.seed}" for r in table.itertuples()
             if results.content_digest(results.read_record(results.run_dir(
                 r.experiment, r.method, r.density, r.seed, results.DEFAULT_ROOT), verify=False)) != r.ours_digest]
    # every FC cell both stores hold (17 cells × 3 seeds), and ResNet-20 cells of the current recipe
    assert (table["experiment"] == "fc_mnist").sum() == 51 and (table["experiment"] == "resnet20_cifar10").any()
    assert stale == []


@pytest.mark.parametrize("path", [pytest.param(p.parent, id=str(p.parent.relative_to(results.DEFAULT_ROOT)))
                                  for p in sorted(results.DEFAULT_ROOT.glob("jpeg_effect/q*/*/*/d*/s*/run.json"))])
def test_jpeg_effect_runs_load_and_record_their_copy(path):
    """The image-quality runs: verified checksums, trained on the copy their directory names."""
    run = results.load_run_dir(path)
    quality = int(path.parents[3].name[1:])
    assert run.info["data"]["reencoding"]["quality"] == quality
    assert run.info["data"]["copy"] == f"jpeg-q75 re-encoded at q{quality}"
    assert run.info["config"]["overrides"] == {"jpeg_quality": quality}


@pytest.mark.parametrize("path", [pytest.param(p.parent, id=str(p.parent.relative_to(results.DEFAULT_ROOT)))
                                  for p in sorted(results.DEFAULT_ROOT.glob("jpeg_effect/source/*/*/d*/s*/run.json"))])
def test_jpeg_effect_source_runs_load_and_are_the_source_copy(path):
    """The experiment's own baselines (kept after the main grid moved to another recipe): verified
    checksums, trained and tested on the unmodified JPEG copy."""
    run = results.load_run_dir(path)
    assert run.info["data"]["copy"] == "jpeg-q75" and "reencoding" not in run.info["data"]


def test_every_reencoded_run_is_compared_with_a_source_run_of_its_own_recipe():
    """No change in the JPEG table mixes recipes: each re-encoded run has the run of its own recipe,
    cell and seed on the source copy (the main grid's or one in ``jpeg_effect/source``)."""
    from utils.runs.report import jpeg_effect
    table = jpeg_effect(results.DEFAULT_ROOT)
    if table.empty:
        pytest.skip("no JPEG experiment stored")
    assert table["top1_change"].notna().all()
    assert (table.groupby(["cell", "seed", "recipe"])["quality"].apply(lambda q: q.isna().sum()) == 1).all()


def test_notebook_shows_each_experiments_explanations_alone(tmp_path, capsys):
    """plot_acc's `F.show(F.ours_vs_thesis, store, experiment)`: the README's sections of that
    experiment only, as Markdown; without a comparison, one `skipped` line."""
    from utils import figures as F
    if not (results.DEFAULT_ROOT / "thesis_comparison.csv").is_file():
        pytest.skip("no thesis comparison stored")
    text = F.show(F.ours_vs_thesis, F.Store(results.DEFAULT_ROOT), F.RESNET).data
    assert "### resnet20_cifar10" in text and "### fc_mnist" not in text
    assert "Cells more than 2 points from the thesis:" in text
    fc = F.show(F.ours_vs_thesis, F.Store(results.DEFAULT_ROOT), F.FC).data
    assert "### fc_mnist" in fc and "| 6 layers.5 |" in fc and "resnet20" not in fc
    assert F.show(F.ours_vs_thesis, F.Store(tmp_path), F.FC) is None
    assert capsys.readouterr().out.startswith("skipped ours_vs_thesis: ")


def test_thesis_quirks_store_reproduces_the_thesis_gem_miner():
    """Mined in the thesis's mode, our FC Gem-Miner (seed 21) does what the thesis's did: the
    mask ends near 3 % for every target of 5 % and above (thesis: 2.9-3.0 %), the mask shuffle
    keeps about the density the thesis's shuffle keeps and collapses where it did (2-10 %), and
    the accuracies agree with the thesis's seed 21 within its own seed spread."""
    import pandas as pd
    table = results.runs(QUIRKS)
    assert len(table) == 15 and set(table["profile"]) == {"thesis-quirks"} and set(table["seed"]) == {21}
    mined = table[table["method"] == "gem-miner"].set_index("density")
    assert mined.loc[[0.05, 0.1, 0.2, 0.5], "density_achieved"].between(0.0285, 0.0290).all()
    sanity = pd.read_csv(QUIRKS / "thesis_gem_miner_sanity.csv").query("seed == 21")
    ours, theirs = (sanity[sanity["source"] == who].set_index("density") for who in ("ours", "thesis"))
    assert (ours["mode"] == "thesis").all()
    # shuffled density: ours as stored, the thesis's expected from its flags and scores
    assert ((ours["shuffle_density"] / theirs["shuffle_density"]).between(0.9, 1.1)).all()
    assert (ours.loc[[0.02, 0.05, 0.1], "shuffle"] < 15).all()
    assert (theirs.loc[[0.02, 0.05, 0.1], "shuffle"] < 19).all()
    # within 1.5 points of the thesis's seed 21 (its three seeds span up to 1.94 points: reinit at 2 %)
    assert ((ours["mined"] - theirs["mined"]).abs() < 1.5).all()
    assert ((ours["reinit"] - theirs["reinit"]).abs() < 1.5).all()


def in_flight_ids():
    """The committed checkpoints of runs in flight (``<method>/d<percent>/.s<seed>.ckpt``, first
    call's file), as paths under results/."""
    files = sorted(results.DEFAULT_ROOT.glob("*/*/d*/.s*.ckpt/call1-*.safetensors"))
    return [pytest.param(path.relative_to(results.DEFAULT_ROOT).as_posix(),
                         id=path.parent.relative_to(results.DEFAULT_ROOT).as_posix()) for path in files]


@pytest.mark.parametrize("path", in_flight_ids())
def test_a_committed_checkpoint_resumes_under_this_code(path, cifar_data_dir, tmp_path, monkeypatch):
    """A fresh clone's sweep resumes the runs in flight: the current code reaches the run's first
    ``train`` call with the checkpoint's key (settings, data digest, precision, the model it starts
    from), in one of the two precisions, on one thread each (``sweep --jobs 2`` on 2 cores).  A change
    that alters the key (2026-12-07: the CPU's name entered it) would silently retrain them from
    epoch 0; stopped at that call, ~20 s per precision tried."""
    import shutil

    import utils.engine.train as engine
    from utils.engine import checkpoint
    from utils.runs import experiment

    class Reached(Exception):
        """The first ``train`` call looked for its checkpoint: nothing to train for this test."""

    file = results.DEFAULT_ROOT / path
    experiment_name, method, density, ckpt = file.parent.relative_to(results.DEFAULT_ROOT).parts
    config = experiment.load_config(experiment_name)
    seed = int(ckpt.removeprefix(".s").removesuffix(".ckpt"))
    spec, = experiment.grid(config, methods=[method], densities=[float(density[1:])], seeds=[seed])
    saved = checkpoint.read(file)
    real_load, loaded = checkpoint.Slot.load, []

    def load(slot):
        loaded.append(real_load(slot))
        raise Reached

    monkeypatch.setattr(checkpoint.Slot, "load", load)
    for bf16 in (True, False):
        root = tmp_path / f"bf16-{bf16}"
        shutil.copytree(file.parent, experiment.checkpoint_dir(spec, root))
        monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda bf16=bf16: bf16)
        with pytest.raises(Reached):
            experiment.execute(spec, config, data_dir=cifar_data_dir, root=root, progress=False, threads=1)
        if loaded[-1] is not None:
            break
    assert loaded[-1] is not None, f"{path}: no precision reaches its key {saved['key']}"
    assert loaded[-1]["key"] == saved["key"] and loaded[-1]["epochs_done"] == saved["epochs_done"]
