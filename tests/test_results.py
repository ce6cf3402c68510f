"""Runs store: round trip, checksums, tampering, versions, atomic writes."""
import copy
import json
import math

import pandas as pd
import pytest
import torch

import models
from pruners.random import Random
from utils.errors import RunStoreError, UserError
from utils.runs import results

HISTORY = pd.DataFrame({"epoch": [0, 1], "phase": ["train", "train"], "train_loss": [float("nan"), 0.5],
                        "top1": [10.0, 90.0]})


def stored(tmp_path, model_name="fc", density=0.2, support=None, extras=None, record=None):
    torch.manual_seed(3)
    model = models.build_model(model_name)
    Random().prune(model, density, seed=21, data_shape=(1, 28, 28))
    init = copy.deepcopy(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    path = results.save_run(results.run_dir("exp", "random", density, 21, tmp_path), model=model,
                            init_model=init, history=HISTORY, model_spec={"name": model_name, "kwargs": {}},
                            record={"experiment": "exp", "method": "random", "density_target": density,
                                    "seed": 21, "profile": "p", **(record or {})}, support=support, extras=extras)
    return path, model, init


@pytest.mark.parametrize("model_name,shape", [("fc", (5, 1, 28, 28)), ("resnet20", (2, 3, 32, 32))])
def test_round_trip_identical_tensors_and_outputs(tmp_path, model_name, shape):
    path, model, init = stored(tmp_path, model_name)
    run = results.load_run("exp", "random", 0.2, 21, tmp_path)
    assert path.name == "s21" and path.parent.name == "d20"
    # Only active values are stored: originals compare equal through the mask.
    for (ka, a), (kb, b) in zip(model.state_dict().items(), run.model.state_dict().items()):
        assert ka == kb
        if ka.endswith(".original"):
            mask = run.model.state_dict()[ka.replace("original", "0.mask")]
            a, b = a * mask, b
        assert torch.equal(a, b), ka
    x = torch.randn(shape)
    assert torch.equal(model.eval()(x), run.model(x))
    assert torch.equal(init.eval()(x), run.init_model().eval()(x))
    assert run.info["density_achieved"] == pytest.approx(0.2, abs=1e-5)
    pd.testing.assert_frame_equal(run.history, HISTORY)


def test_support_and_extras_round_trip(tmp_path):
    torch.manual_seed(0)
    flags = {n: torch.rand(m.shape) < 0.5 for n, m in models.get_masks(models.fc()).items()}
    extras = {f"flag.{n}": f for n, f in flags.items()} | {"scores.layers.0": torch.rand(100, 784)}
    path, model, _ = stored(tmp_path, support=flags, extras=extras)
    run = results.load_run_dir(path)
    got = run.extras()
    assert all(torch.equal(got[k], v) for k, v in extras.items())
    assert torch.equal(run.masks("flag")["layers.0"], flags["layers.0"])
    weights = models.raw_weight(run.model.layers[0])
    original = models.raw_weight(model.layers[0])
    keep = flags["layers.0"] | models.mask_of(model.layers[0])
    assert torch.equal(weights[keep], original[keep])


def test_sign_extras_are_bit_packed(tmp_path):
    torch.manual_seed(0)
    signs = (torch.randint(0, 2, (100, 784)) * 2 - 1).to(torch.int8)
    counts = torch.randint(-3, 4, (10, 100)).to(torch.int8)
    path, _, _ = stored(tmp_path, extras={"signs.layers.0": signs, "counts": counts})
    run = results.load_run_dir(path)
    got = run.extras()
    assert got["signs.layers.0"].dtype == torch.int8 and torch.equal(got["signs.layers.0"], signs)
    assert torch.equal(got["counts"], counts)
    assert run.info["extras"]["signs.layers.0"]["packed"] == "sign"
    assert run.info["extras"]["counts"]["packed"] is False
    assert (path / "extras.safetensors").stat().st_size < signs.numel() / 8 + counts.numel() + 1_000


def test_storage_is_compact(tmp_path):
    path, _, _ = stored(tmp_path, density=0.05)
    size = (path / "final.safetensors").stat().st_size
    assert size < 0.06 * 119_400 * 4 + 119_400 / 8 + 10_000


def test_tampered_file_is_rejected(tmp_path):
    path, _, _ = stored(tmp_path)
    data = bytearray((path / "final.safetensors").read_bytes())
    data[-1] ^= 1
    (path / "final.safetensors").write_bytes(bytes(data))
    with pytest.raises(RunStoreError, match="sha256"):
        results.load_run_dir(path)


def test_edited_run_json_is_rejected(tmp_path):
    path, _, _ = stored(tmp_path)
    record = json.loads((path / "run.json").read_text())
    record["density_achieved"] = 0.5
    (path / "run.json").write_text(json.dumps(record))
    with pytest.raises(RunStoreError, match="digest"):
        results.load_run_dir(path)
    (path / "run.json").write_text("{not json")
    with pytest.raises(RunStoreError, match="corrupt"):
        results.load_run_dir(path)


def test_the_content_digest_ignores_when_a_run_was_written(tmp_path):
    """Same files and settings, written again (time stamp, wall time, versions): same content
    digest, another record digest; another file checksum: another content digest."""
    path, _, _ = stored(tmp_path)
    record = json.loads((path / "run.json").read_text())
    again = {**record, "created": "2031-01-01T00:00:00Z", "wall_time_s": 1.0, "versions": {"project": "9"}}
    assert results.content_digest(again) == results.content_digest(record)
    assert results._digest(again) != record["digest"]
    changed = {**record, "files": {**record["files"], "final.safetensors": "0" * 64}}
    assert results.content_digest(changed) != results.content_digest(record)
    # sha256 of the sorted JSON of what is left
    assert results.content_digest({"seed": 21, "digest": "x", "created": "y"}) == \
        "28506746d6560d580bad5d88063eff6c4a5f08046182c307a527d9f1e1f46df3"


def test_incompatible_version_is_rejected(tmp_path):
    path, _, _ = stored(tmp_path)
    record = json.loads((path / "run.json").read_text())
    record["format_version"] = 99
    (path / "run.json").write_text(json.dumps(record))
    with pytest.raises(RunStoreError, match="format version 99"):
        results.load_run_dir(path)


def test_failed_write_leaves_nothing(tmp_path):
    class Broken(pd.DataFrame):
        def to_csv(self, *a, **k):
            raise OSError("disk full")
    target = results.run_dir("exp", "random", 0.2, 21, tmp_path)
    with pytest.raises(OSError):
        results.save_run(target, model=models.fc(), init_model=None, history=Broken(HISTORY),
                         model_spec={"name": "fc"}, record={"experiment": "exp"})
    assert not target.exists() and not list(target.parent.iterdir())


def test_existing_run_is_not_overwritten_by_accident(tmp_path):
    path, _, _ = stored(tmp_path)
    with pytest.raises(RunStoreError, match="already"):
        stored(tmp_path)
    assert results.is_complete(path)


def test_runs_table_and_summary(tmp_path):
    stored(tmp_path)
    table = results.write_summary(tmp_path)
    assert table[["method", "density", "seed"]].values.tolist() == [["random", 0.2, 21]]
    assert table["final_top1"].iloc[0] == 90.0
    assert (tmp_path / "summary.csv").is_file() and "90.00 (1)" in (tmp_path / "README.md").read_text()
    assert table["precision"].isna().all() and "precision: not recorded ×1;" in (tmp_path / "README.md").read_text()


def test_summary_says_which_precision_runs_trained_in(tmp_path):
    stored(tmp_path, density=0.2, record={"compute": {"bf16": False}})
    stored(tmp_path, density=0.5, record={"compute": {"bf16": True}})
    stored(tmp_path, density=0.1, record={"compute": {"bf16": False}})
    table = results.write_summary(tmp_path)
    assert table.sort_values("density")["precision"].tolist() == ["fp32", "fp32", "bf16"]
    assert "## exp (profile: p; precision: bf16 ×1, fp32 ×2; trained" in (tmp_path / "README.md").read_text()


def test_summary_never_averages_two_recipe_versions(tmp_path):
    """While a grid is retrained under a new recipe, each version gets its own section, the newest
    first, and the older one says that figures leave it out."""
    stored(tmp_path, density=0.2, record={"recipe": {"version": 3}})
    stored(tmp_path, density=0.5, record={"recipe": {"version": 2}})
    stored(tmp_path, density=0.1, record={"recipe": {"version": 2}})
    results.write_summary(tmp_path)
    text = (tmp_path / "README.md").read_text()
    v3, v2 = text.index("## exp (profile: p v3;"), text.index("## exp (profile: p v2;")
    assert v3 < v2 and text.count("## exp (") == 2
    assert "| 20 %" in text[v3:v2] and "| 10 %" not in text[v3:v2] and "| 20 %" not in text[v2:]
    assert text.count("Runs of an earlier recipe version") == 1 and text.index("Runs of an earlier") > v2


def test_the_thesis_comparison_reads_only_runs_of_the_current_recipe(tmp_path, monkeypatch):
    from utils.figures.store import Store
    from utils.runs.thesis_compare import current_runs
    stored(tmp_path, density=0.2, record={"recipe": {"version": 2}})
    stored(tmp_path, density=0.5, record={"recipe": {"version": 1}})     # not yet retrained under v2
    monkeypatch.setattr(Store, "recipe_version", lambda self, experiment: 2)
    assert current_runs(tmp_path, ("exp",))["density"].tolist() == [0.2]
    assert current_runs(tmp_path, ("other",)).empty and current_runs(tmp_path, ()).empty


@pytest.mark.parametrize("values,expected", [
    ([80.0, 82.0], "81.00 ± 1.41 (2)"),
    ([79.314], "79.31 (1)"),                 # one seed: no spread shown, not "± 0.00"
    ([float("nan"), 85.0, 86.0], "85.50 ± 0.71 (2)"),
    ([], ""),
])
def test_mean_sd_cell(values, expected):
    from utils.runs.report import mean_sd
    assert mean_sd(pd.Series(values, dtype=float)) == expected


@pytest.mark.parametrize("curve,expected", [
    ([10, 50, 60, 70, 80, 81], 1.0),                    # 5 epochs: back 1
    ([10] + list(range(50, 60)), 2.0),                  # 10 epochs: back 2 (59 − 57)
    ([None, 40.0, 41.0], 1.0),                          # no initial evaluation logged
    ([10, 50], float("nan")),                           # one epoch: nothing to compare
])
def test_gain_last_fifth(curve, expected):
    history = pd.DataFrame({"train_loss": [math.nan] + [1.0] * (len(curve) - 1),
                            "top1": [math.nan if v is None else v for v in curve]})
    if curve[0] is None:
        history["train_loss"] = 1.0
        history = history.iloc[1:]
    got = results.gain_last_fifth(history)
    assert got == expected or (math.isnan(expected) and math.isnan(got))


def test_summary_reports_convergence_per_cell(tmp_path):
    """The README's convergence table: the last fifth's gain per method × density, mean over seeds."""
    stored(tmp_path)
    table = results.write_summary(tmp_path)
    assert table["gain_last_fifth"].isna().all()          # one epoch: no last fifth to measure
    history = pd.DataFrame({"epoch": range(11), "phase": "train", "train_loss": [math.nan] + [0.5] * 10,
                            "top1": [10.0] + [60 + 0.5 * e for e in range(10)]})
    model = models.build_model("fc")
    for seed, shift in ((42, 0.0), (63, 1.0)):
        results.save_run(results.run_dir("exp", "random", 0.2, seed, tmp_path), model=model, init_model=model,
                         history=history.assign(top1=history["top1"] + shift * (history["epoch"] == 10)),
                         model_spec={"name": "fc", "kwargs": {}},
                         record={"experiment": "exp", "method": "random", "density_target": 0.2, "seed": seed,
                                 "profile": "p"})
    table = results.write_summary(tmp_path)
    assert table.set_index("seed")["gain_last_fifth"].to_dict() == pytest.approx({21: math.nan, 42: 1.0, 63: 2.0},
                                                                                nan_ok=True)
    readme = (tmp_path / "README.md").read_text()
    section = readme.split("Convergence:")[1].split("Training time")[0]
    assert "| random   |    1.5 |" in section            # mean of seed 21's NaN (left out), 1.0 and 2.0


def test_missing_run_is_a_clear_error(tmp_path):
    with pytest.raises(RunStoreError, match="no stored run exp/random/d5/s21"):
        results.load_run("exp", "random", 0.05, 21, tmp_path)


@pytest.mark.parametrize("key,says", [
    (("exp", "random", 0.05, 21), "; stored for exp/random: densities 20 %, seeds 21"),
    (("exp", "random", 0.2, 42), "; stored for exp/random: densities 20 %, seeds 21"),
    (("exp", "synflow", 0.2, 21), "; stored methods of exp: random"),
    (("other", "random", 0.2, 21), "; stored experiments: exp"),
])
def test_a_missing_run_says_what_is_stored_beside_it(tmp_path, key, says):
    stored(tmp_path)
    (tmp_path / "probe").mkdir()                       # a data directory, not an experiment
    with pytest.raises(RunStoreError) as error:
        results.load_run(*key, root=tmp_path)
    assert str(error.value).endswith(f"under {tmp_path}{says}")


@pytest.mark.parametrize("density", [0, -0.1, 5, 100])
def test_load_run_takes_densities_as_fractions(tmp_path, density):
    with pytest.raises(UserError) as error:
        results.load_run("exp", "random", density, 21, tmp_path)
    assert str(error.value) == ("density must be in (0, 1] as a fraction (the CLI takes percent in (0, 100]), "
                                f"got {density}")


def test_clean_partial_removes_half_written_dirs(tmp_path):
    half = tmp_path / "exp" / "random" / "d20" / ".s21.tmp-abc"
    half.mkdir(parents=True)
    (half / "final.safetensors").write_bytes(b"partial")
    assert results.clean_partial(tmp_path) == 1 and not half.exists()


@pytest.mark.parametrize("model_name,compute,expected", [
    ("resnet20", {"device": "cpu", "threads": 1, "bf16": False, "channels_last": True}, (False, True)),
    ("resnet20", {"device": "cpu", "threads": 1}, (True, True)),   # stored before precision was recorded
    ("fc", {"device": "cpu", "threads": 1}, (False, False)),
    ("resnet20", {"device": "cuda", "threads": 1}, (False, False)),
])
def test_run_precision_is_what_training_used(tmp_path, model_name, compute, expected):
    model = models.build_model(model_name)
    path = results.save_run(results.run_dir("exp", "dense", 1.0, 21, tmp_path), model=model, init_model=None,
                            history=HISTORY, model_spec={"name": model_name, "kwargs": {}},
                            record={"experiment": "exp", "method": "dense", "density_target": 1.0,
                                    "seed": 21, "profile": "p", "compute": compute})
    assert results.load_run_dir(path).precision() == expected


def test_readme_section_puts_our_cells_next_to_the_thesis_and_ranks_them(tmp_path):
    """The README's ours-vs-thesis section: mean ± std per cell, Δ, the > 2 pt flag, sanity variants
    left out, and the ranking per density with whether it agrees."""
    from utils.runs.report import thesis_sections
    rows = [("synflow", 0.1, 21, 80.0, 86.0), ("synflow", 0.1, 42, 82.0, 86.0), ("random", 0.1, 21, 83.0, 85.0),
            ("random", 0.1, 42, 83.0, 85.0), ("gem-miner-reinit", 0.1, 21, 99.0, 1.0),
            ("gem-miner", 0.1, 21, 79.0, 82.0), ("gem-miner", 0.1, 42, 81.0, 70.0)]
    # the thesis's gem-miner 10 % seed 42 is a 5 % network (mislabelled): left out of the thesis's columns
    pd.DataFrame([{"experiment": "resnet20_cifar10", "method": m, "density": d, "seed": s, "top1_ours": o,
                   "top1_thesis": t, "top1_thesis_here": t - (15 if m == "random" else 10),
                   "density_thesis": 0.049982 if (m, s) == ("gem-miner", 42) else d} for m, d, s, o, t in rows]
                 ).to_csv(tmp_path / "c.csv", index=False)
    notes = {"resnet20_cifar10": {"synflow/*": "its nets score {here} here, ours {ours_minus_here}"}}
    text = "\n".join(thesis_sections(tmp_path / "c.csv", notes))
    assert "| synflow   | 10          | 81.00 ± 1.41 (2) | 86.00 ± 0.00 (2) | 76.00 ± 0.00 (2)   | -5.00 | yes" in text
    assert "| random    | 10          | 83.00 ± 0.00 (2) | 85.00 ± 0.00 (2) | 70.00 ± 0.00 (2)   | -2.00 |" in text
    assert "| gem-miner | 10          | 80.00 ± 1.41 (2) | 82.00 (1)        | 72.00 (1)          | -2.00 |" in text
    assert "reinit" not in text
    # on our copy the thesis's random nets (70) fall below its Gem-Miner net (72): the copy alone reorders them
    assert ("- 10 %: ours random > synflow ≈ gem-miner; thesis synflow > random > gem-miner (differs); "
            "thesis nets here synflow > gem-miner > random (vs the thesis: differs)") in text
    # the 5-point cell gets its sentence, placeholders filled; the 2.00-point cell needs none
    assert ("- **synflow 10 %** (ours 81.00, thesis 86.00, Δ -5.00): its nets score 76.00 here, ours +5.00"
            in text)
    assert "**random" not in text
    assert "Ranking per density" in text
    assert thesis_sections(tmp_path / "missing.csv") == []
    # a store of one method (e.g. results/thesis_quirks: Gem-Miner only) has nothing to rank
    one = pd.read_csv(tmp_path / "c.csv").query("method == 'synflow'")
    one.to_csv(tmp_path / "one.csv", index=False)
    text = "\n".join(thesis_sections(tmp_path / "one.csv", notes))
    assert "**synflow 10 %**" in text and "Ranking" not in text


def test_a_cell_whose_thesis_runs_are_all_mislabelled_is_shown_but_not_compared(tmp_path):
    """Our Gem-Miner 10 % holds only seed 42, whose thesis run is a 5 % network: the cell shows ours
    with empty thesis columns and no Δ, and the ranking leaves the method out (with one method left,
    there is no ranking)."""
    from utils.runs.report import thesis_sections
    rows = [("synflow", 0.1, 42, 81.0, 86.0, 0.1), ("gem-miner", 0.1, 42, 81.6, 80.0, 0.049982)]
    pd.DataFrame([{"experiment": "resnet20_cifar10", "method": m, "density": d, "seed": s, "top1_ours": o,
                   "top1_thesis": t, "density_thesis": dt} for m, d, s, o, t, dt in rows]).to_csv(
        tmp_path / "c.csv", index=False)
    text = "\n".join(thesis_sections(tmp_path / "c.csv", {}))
    assert "| gem-miner | 10          | 81.60 (1) |           |       |          |" in text
    assert "| synflow   | 10          | 81.00 (1) | 86.00 (1) | -5.00 | yes      |" in text
    assert "nan" not in text and "Ranking" not in text


@pytest.mark.parametrize("method,density,expected", [
    ("synflow", 0.1, "a"),                        # the most specific key wins
    ("synflow", 0.5, "b"),
    ("random", 0.1, "all."),
    ("random", 0.02, "all. And r2."),             # {general}: the next less specific note, then its own
    ("gem-miner", 0.02, "all. G. And g2."),       # chained through "<method>/*"
])
def test_cell_note_picks_the_most_specific_key_and_composes_general(method, density, expected):
    from utils.runs.report import cell_note
    notes = {"fc": {"synflow/10": "a", "synflow/*": "b", "random/2": "{general} And r2.",
                    "gem-miner/*": "{general} G.", "gem-miner/2": "{general} And g2.", "*": "all."}}
    assert cell_note(notes, "fc", method, density) == expected
    assert cell_note(notes, "other", method, density) is None


def test_cell_note_scoped_to_a_recipe_explains_only_that_recipes_cells():
    """A note that quotes one recipe's runs ("<key> @ <recipe>") never explains a cell retrained
    under another recipe; there the unscoped notes apply."""
    from utils.runs.report import cell_note
    notes = {"r": {"*": "all.", "gem-miner/20 @ cpu v2": "{general} v2's seed 21.",
                   "gem-miner/* @ cpu v3": "{general} G3.", "random/2": "{general} R2."}}
    assert cell_note(notes, "r", "gem-miner", 0.2, "cpu v2") == "all. v2's seed 21."
    assert cell_note(notes, "r", "gem-miner", 0.2, "cpu v3") == "all. G3."
    assert cell_note(notes, "r", "gem-miner", 0.2) == "all."
    assert cell_note(notes, "r", "synflow", 0.2, "cpu v2") == "all."
    assert cell_note(notes, "r", "random", 0.02, "cpu v3") == "all. R2."


def test_cell_notes_quote_the_recipe_of_the_cells_own_runs(tmp_path):
    """{recipe}, {epochs} and {dense} come from the summary.csv beside the comparison, for the
    recipe the cell's runs were trained under (not another version's runs stored beside them);
    "n/a" without a summary."""
    from utils.runs.report import recipe_label, thesis_sections
    assert (recipe_label("cpu", 3.0), recipe_label("thesis"), recipe_label("thesis", float("nan"))) == \
        ("cpu v3", "thesis", "thesis")
    pd.DataFrame([{"experiment": "e", "method": "synflow", "density": 0.1, "seed": s, "recipe": "cpu",
                   "recipe_version": 3, "top1_ours": o, "top1_thesis": 90.0, "top1_thesis_here": 84.0,
                   "density_thesis": 0.1}
                  for s, o in ((21, 80.0), (42, 82.5))]).to_csv(tmp_path / "thesis_comparison.csv", index=False)
    notes = {"e": {"*": "{recipe} trains {epochs} epochs; dense {dense}; seeds {ours_range}.",
                   "* @ cpu v2": "{general} Only v2."}}
    expected = "- **synflow 10 %** (ours 81.25, thesis 90.00, Δ -8.75): {}"
    text = "\n".join(thesis_sections(tmp_path / "thesis_comparison.csv", notes))
    assert expected.format("cpu v3 trains n/a epochs; dense n/a; seeds 80.00-82.50.") in text
    runs = [("synflow", 0.1, 21, 3, 60, 80.0), ("synflow", 0.1, 42, 3, 60, 82.5), ("dense", 1.0, 21, 3, 60, 87.31),
            ("dense", 1.0, 42, 3, 60, 87.44), ("dense", 1.0, 63, 2, 30, 85.83), ("synflow", 0.1, 63, 2, 30, 79.0)]
    pd.DataFrame([{"experiment": "e", "method": m, "density": d, "seed": s, "profile": "cpu", "recipe_version": v,
                   "epochs": n, "final_top1": t} for m, d, s, v, n, t in runs]).to_csv(tmp_path / "summary.csv",
                                                                                       index=False)
    text = "\n".join(thesis_sections(tmp_path / "thesis_comparison.csv", notes))
    assert expected.format("cpu v3 trains 60 epochs; dense 87.38 %, mean of 2 seeds; seeds 80.00-82.50.") in text


def test_cell_note_general_without_a_less_specific_note_is_an_error():
    from utils.runs.report import cell_note
    with pytest.raises(ValueError, match="random/2 uses {general}"):
        cell_note({"fc": {"random/2": "{general} x"}}, "fc", "random", 0.02)


def _fake_run(path, *, top1, data, seed=21, recipe_version=None):
    path.mkdir(parents=True)
    recipe = {} if recipe_version is None else {"recipe": {"profile": "cpu", "version": recipe_version}}
    (path / "run.json").write_text(json.dumps({"experiment": "resnet20_cifar10", "method": "dense", "seed": seed,
                                               "data": data, **recipe}))
    pd.DataFrame({"top1": [10.0, top1]}).to_csv(path / "history.csv", index=False)


def test_jpeg_section_sets_each_reencoded_run_beside_its_source_run(tmp_path):
    """The JPEG experiment's table and slope: a run on a q50 re-encoding (PSNR 28 dB) 2 points below
    the same run on the source copy implies +2.00 pt for an original as far from the source."""
    from utils.runs.report import jpeg_effect, jpeg_section
    assert jpeg_effect(tmp_path).empty and jpeg_section(tmp_path) == []
    _fake_run(tmp_path / "resnet20_cifar10/dense/d100/s21", top1=85.0, data={"copy": "jpeg-q75"})
    _fake_run(tmp_path / "jpeg_effect/q50/resnet20_cifar10/dense/d100/s21", top1=83.0,
              data={"copy": "jpeg-q75 re-encoded at q50",
                    "reencoding": {"quality": 50, "source_copy": "jpeg-q75", "psnr_db": 28.0}})
    table = jpeg_effect(tmp_path)
    assert table["copy"].tolist() == ["jpeg-q75", "jpeg-q75 re-encoded at q50"]
    assert table["top1_change"].tolist() == [0.0, -2.0]
    assert table["mse"].tolist() == pytest.approx([0.0, 65025 / 10 ** 2.8])
    text = "\n".join(jpeg_section(tmp_path))
    assert ("- resnet20_cifar10 dense s21: top-1 change per re-encoding: q50 (MSE 103.1, PSNR 28.0 dB) "
            "-2.00 pt; "
            "least squares over the 2 copies: -0.19 pt per 10 units of pixel MSE.") in text
    assert "the original images would give about +2.00 pt (that step alone) to +2.00 pt (the fit)." in text
    row = ("| dense    | 21     |          | jpeg-q75 re-encoded at q50 | 28.00       | 103.1 | 83.00       "
           "| -2.00         |")
    assert row in text
    # with more seeds of the cell on the source copy, their spread is given next to the change
    _fake_run(tmp_path / "resnet20_cifar10/dense/d100/s42", top1=85.4, data={"copy": "jpeg-q75"}, seed=42)
    assert ("-2.00 pt (sd over the 2 seeds of this cell and recipe on the source copy: 0.28 pt); least squares"
            in "\n".join(jpeg_section(tmp_path)))


def test_jpeg_effect_compares_only_runs_of_the_same_recipe(tmp_path):
    """Once the main grid is retrained under recipe v3, a v2 run on a re-encoded copy is compared
    with the v2 run kept in ``jpeg_effect/source``, never with the v3 run; without it, no change."""
    from utils.runs.report import jpeg_effect, jpeg_section
    reencoded = {"copy": "jpeg-q75 re-encoded at q50",
                 "reencoding": {"quality": 50, "source_copy": "jpeg-q75", "psnr_db": 28.0}}
    _fake_run(tmp_path / "resnet20_cifar10/dense/d100/s21", top1=87.0, data={"copy": "jpeg-q75"}, recipe_version=3)
    _fake_run(tmp_path / "jpeg_effect/q50/resnet20_cifar10/dense/d100/s21", top1=84.0, data=reencoded,
              recipe_version=2)
    table = jpeg_effect(tmp_path)
    assert table["recipe"].tolist() == ["cpu v2"] and table["top1_change"].isna().all()
    text = "\n".join(jpeg_section(tmp_path))
    assert ("| dense    | 21     | cpu v2   | jpeg-q75 re-encoded at q50 | 28.00       | 103.1 | 84.00       "
            "| n/a") in text
    assert "- resnet20_cifar10 dense s21 (cpu v2): no run of this recipe on the source copy is stored" in text
    _fake_run(tmp_path / "jpeg_effect/source/resnet20_cifar10/dense/d100/s21", top1=85.5,
              data={"copy": "jpeg-q75"}, recipe_version=2)
    table = jpeg_effect(tmp_path)
    assert table["top1"].tolist() == [85.5, 84.0] and table["top1_change"].tolist() == [0.0, -1.5]
    assert "- resnet20_cifar10 dense s21 (cpu v2): top-1 change per re-encoding: q50 (MSE 103.1, PSNR 28.0 dB) " \
           "-1.50 pt; least squares" in "\n".join(jpeg_section(tmp_path))


def test_gem_layer_section_is_ours_over_the_thesis_per_layer_and_target(tmp_path):
    from utils.runs.report import gem_layer_section
    assert gem_layer_section(tmp_path / "missing.csv") == []
    pd.DataFrame([{"experiment": "fc_mnist", "density": d, "layer": layer, "ours": o, "thesis": t}
                  for d, layer, o, t in [(0.5, "10 fc", 58.8, 58.0), (0.02, "10 fc", 33.2, 33.53),
                                         (0.02, "2 layers.1", 3.66, 3.84), (0.5, "2 layers.1", 50.84, 49.89)]]
                 ).to_csv(tmp_path / "g.csv", index=False)
    text = "\n".join(gem_layer_section(tmp_path / "g.csv"))
    # layers in network order (2 before 10), targets ascending
    assert "| 2 layers.1 | 3.66 / 3.84 (-0.18)   | 50.84 / 49.89 (+0.95) |" in text
    assert text.index("2 layers.1 |") < text.index("10 fc")
    assert "| layer      | 2 %                   | 50 %                  |" in text
    # no layer of this table is more than 2 points away
    assert "- 2 %: none\n- 50 %: none" in text


def test_gem_layer_section_lists_the_layers_far_from_the_thesis(tmp_path):
    from utils.runs.report import gem_layer_section
    rows = [(0.05, "20 fc", 26.56, 18.18), (0.05, "1 conv1", 17.82, 10.65), (0.05, "2 blocks.0.conv1", 6.77, 6.42),
            (0.5, "20 fc", 58.65, 66.2), (0.5, "7 blocks.2.conv2", 51.48, 49.26), (0.5, "1 conv1", 54.48, 55.02)]
    pd.DataFrame([{"experiment": "resnet20_cifar10", "density": d, "layer": layer, "ours": o, "thesis": t,
                   "ours seeds": 1 if d == 0.05 else 3, "thesis seeds": 1 if d == 0.05 else 3}
                  for d, layer, o, t in rows]).to_csv(tmp_path / "g.csv", index=False)
    lines = gem_layer_section(tmp_path / "g.csv")
    # network order, the difference ours − thesis, 2.00 itself would not count
    assert "- 5 %: conv1 +7.17, fc +8.38 (seeds: ours 1, thesis 1)" in lines
    assert "- 50 %: blocks.2.conv2 +2.22, fc -7.55 (seeds: ours 3, thesis 3)" in lines


def test_gem_sanity_section_gives_the_paired_gaps_of_both_stores(tmp_path):
    """mined − reinit and mined − shuffle paired by seed, mean ± sd over the seeds with that
    finetune (a cut thesis log, NaN, is left out of its gap and of the shuffled density)."""
    from utils.runs.report import gem_sanity_section
    assert gem_sanity_section(tmp_path / "missing.csv") == []
    rows = [(0.02, 21, "ours", 68.64, 67.63, 68.02, 0.02), (0.02, 21, "thesis", 73.0, 72.04, 15.16, 0.00266),
            (0.02, 42, "thesis", 73.13, 72.35, 21.9, 0.00261), (0.5, 21, "thesis", 89.6, 89.99, float("nan"), 0.4),
            (0.5, 42, "thesis", 89.57, 89.54, 87.94, 0.246)]
    pd.DataFrame(rows, columns=["density", "seed", "source", "mined", "reinit", "shuffle", "shuffle_density"]
                 ).assign(experiment="resnet20_cifar10").to_csv(tmp_path / "s.csv", index=False)
    lines = gem_sanity_section(tmp_path / "s.csv")
    assert "### resnet20_cifar10" in lines
    text = "\n".join(lines)
    # 2 %: ours one seed; the thesis's 73.0 − 72.04 = 0.96 and 73.13 − 72.35 = 0.78, 57.84 and 51.23,
    # its shuffled density (0.266 + 0.261) / 2
    assert ("| 2 %      | 1.01 (1)               | 0.62 (1)                | 2.00                         "
            "| 0.87 ± 0.13 (2)          | 54.53 ± 4.67 (2)          | 0.26                           |") in text
    # 50 %: no ours; the thesis's cut shuffle log (seed 21) is left out of the shuffle gap and density
    assert ("| 50 %     |                        |                         |                              "
            "| -0.18 ± 0.30 (2)         | 1.63 (1)                  | 24.60                          |") in text
    assert not any("mode `thesis`" in line for line in lines)
    # our networks mined in the thesis's mode get a sentence saying so
    table = pd.read_csv(tmp_path / "s.csv").assign(mode=["thesis"] * 5)
    table.to_csv(tmp_path / "s.csv", index=False)
    assert any(line.startswith("Our networks here were mined in mode `thesis`")
               for line in gem_sanity_section(tmp_path / "s.csv"))


def test_summary_leaves_cells_without_runs_blank(tmp_path):
    """Per-cell tables show a blank where a method has no run at a density, never "nan"."""
    stored(tmp_path, density=0.2)
    results.save_run(results.run_dir("exp", "synflow", 0.5, 21, tmp_path), model=models.build_model("fc"),
                     init_model=models.build_model("fc"), history=HISTORY, model_spec={"name": "fc", "kwargs": {}},
                     record={"experiment": "exp", "method": "synflow", "density_target": 0.5, "seed": 21,
                             "profile": "p"})
    results.write_summary(tmp_path)
    readme = (tmp_path / "README.md").read_text()
    assert "nan" not in readme
    achieved = readme.split("Achieved density")[1].split("Convergence:")[0]
    rows = [line.split("|")[1:-1] for line in achieved.splitlines() if line.startswith("| random")]
    assert [cell.strip() for cell in rows[0]] == ["random", "20", ""]


def _stats(**cells):
    return pd.DataFrame(cells, index=["mean", "std"]).T


@pytest.mark.parametrize("ours,thesis,ranked,agreement", [
    # neighbours closer than the larger seed sd tie; the orders differ only there
    (_stats(gem=(68.26, 0.33), syn=(68.15, 0.64), rnd=(60.01, 5.92)),
     _stats(gem=(72.26, 1.39), syn=(74.72, 0.40), rnd=(61.49, 2.00)),
     "gem ≈ syn > rnd", "differs within seed noise"),
    # 0.30 apart with sds 0.11 / 0.06: ordered, and the thesis orders the pair the other way
    (_stats(rnd=(80.24, 0.11), syn=(79.94, 0.06), gem=(79.51, 0.31)),
     _stats(rnd=(85.23, 0.20), syn=(85.99, 0.30), gem=(82.50, 0.50)),
     "rnd > syn > gem", "differs"),
    (_stats(a=(80.0, 0.5), b=(70.0, 0.5)), _stats(a=(90.0, 0.5), b=(89.9, 0.5)), "a > b", "same"),
    # single seeds (no sd): any gap orders
    (_stats(a=(80.0, float("nan")), b=(79.99, float("nan"))), _stats(a=(1.0, float("nan")), b=(2.0, float("nan"))),
     "a > b", "differs"),
])
def test_ranking_marks_ties_within_seed_noise(ours, thesis, ranked, agreement):
    from utils.runs.report import ranking, ranking_agreement
    assert ranking(ours) == ranked
    assert ranking_agreement(ours, thesis) == agreement
