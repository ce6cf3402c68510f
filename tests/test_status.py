"""What a sweep has left: run states and the time estimate of ``sweep --dry-run``."""
import pandas as pd
import pytest
import torch

from utils.engine import checkpoint
from utils.runs import experiment
from utils.runs.status import (
    Estimate,
    RunState,
    estimate_remaining,
    precision_warning,
    run_epochs,
    run_kind,
    sweep_status,
)

RESNET = experiment.load_config("resnet20_cifar10")


def spec(method, density, seed):
    return experiment.RunSpec("resnet20_cifar10", method, density, seed, "cpu", 2)


def stored_rows(*rows, version=2.0):
    """``results.runs``-like rows: (method, density, seed, wall_time_s)."""
    return pd.DataFrame([{"experiment": "resnet20_cifar10", "method": m, "density": d, "seed": s,
                          "wall_time_s": w, "profile": "cpu", "recipe_version": version} for m, d, s, w in rows])


def test_run_kind_separates_gem_miners_sanity_seed():
    assert run_kind(RESNET, "gem-miner", 0.1, 21, "cpu") == ("gem-miner", True)
    assert run_kind(RESNET, "gem-miner", 0.1, 42, "cpu") == ("gem-miner", False)
    assert run_kind(RESNET, "synflow", 0.1, 21, "cpu") == ("synflow", False)


def test_the_estimate_is_the_median_of_the_stored_runs_of_each_kind_minus_the_checkpoints():
    stored = stored_rows(("synflow", 0.1, 21, 100.0), ("synflow", 0.1, 42, 300.0), ("synflow", 0.1, 63, 9000.0),
                         ("gem-miner", 0.1, 42, 5000.0), ("random", 0.1, 21, None))
    states = [RunState(spec("synflow", 0.5, 21), "todo"),                   # median 300
              RunState(spec("synflow", 0.5, 42), "busy", "train 3/30", 120.0),   # 300 - 120
              RunState(spec("synflow", 0.5, 63), "todo", "train 29/30", 400.0),  # more than the median: 0
              RunState(spec("synflow", 0.1, 21), "done"),                   # not counted
              RunState(spec("gem-miner", 0.5, 63), "stale"),                # 5000 (kind without sanity)
              RunState(spec("gem-miner", 0.5, 21), "todo"),                 # sanity seed: no stored run of its kind
              RunState(spec("random", 0.5, 42), "todo"),                    # its stored run has no time
              RunState(spec("deepr", 0.5, 21), "todo")]
    estimate = estimate_remaining(states, RESNET, stored)
    assert estimate == Estimate(left=7, estimated=4, seconds=300.0 + 180.0 + 0.0 + 5000.0,
                                unknown={"gem-miner": 1, "random": 1, "deepr": 1})
    assert estimate.line(jobs=2) == (
        "left: 7 run(s); 4 of them about 1.5 h of run time (about 0.8 h with 2 at a time), from the stored "
        "runs' median times; not estimated (no stored run of their kind or recipe yet): deepr ×1, gem-miner ×1, "
        "random ×1")


def test_run_epochs_counts_every_phase_of_the_current_recipe():
    """cpu v3: 60 epochs of training; Gem-Miner mines 30 first, and its sanity seed (21) also
    finetunes the two sanity variants for 60 each."""
    v3 = {method: experiment.RunSpec("resnet20_cifar10", method, 0.1, seed, "cpu", 3)
          for method, seed in [("synflow", 21), ("deepr", 21), ("dense", 42), ("gem-miner", 42)]}
    assert {method: run_epochs(RESNET, s) for method, s in v3.items()} == \
        {"synflow": 60, "deepr": 60, "dense": 60, "gem-miner": 90}
    assert run_epochs(RESNET, experiment.RunSpec("resnet20_cifar10", "gem-miner", 0.1, 21, "cpu", 3)) == 30 + 3 * 60


def test_a_kind_without_stored_runs_is_timed_by_its_epochs_at_its_recipes_seconds_per_epoch():
    """Stored v3 runs: SynFlow 6000 s and dense 6600 s over 60 epochs each, so 105 s per epoch (the
    median); runs of kinds not stored yet take their epoch count times that."""
    def v3(method, density, seed):
        return experiment.RunSpec("resnet20_cifar10", method, density, seed, "cpu", 3)
    stored = stored_rows(("synflow", 0.1, 21, 6000.0), ("dense", 1.0, 21, 6600.0), ("gem-miner-reinit", 0.1, 21, 1.0),
                         version=3.0)
    states = [RunState(v3("synflow", 0.5, 21), "todo"),                        # its kind's median: 6000
              RunState(v3("gem-miner", 0.5, 21), "todo"),                      # 210 epochs × 105
              RunState(v3("gem-miner", 0.5, 42), "busy", "mining 5/30", 450.0),  # 90 × 105 − 450
              RunState(v3("random", 0.5, 42), "todo")]                         # 60 × 105
    estimate = estimate_remaining(states, RESNET, stored)
    assert estimate == Estimate(4, 4, 6000.0 + 22050.0 + 9000.0 + 6300.0, from_epochs={"gem-miner": 2, "random": 1})
    assert estimate.line(jobs=2) == (
        "left: 4 run(s); 4 of them about 12.0 h of run time (about 6.0 h with 2 at a time), from the stored runs' "
        "median times; of kinds with no stored run yet, from their epoch count at the median seconds per epoch of "
        "their recipe's stored runs: gem-miner ×2, random ×1")
    # this machine's precision only: the stored runs recorded bf16, so an fp32 machine has no rate
    stored["precision"] = "bf16"
    assert estimate_remaining(states[3:], RESNET, stored, {"cpu": "fp32"}) == Estimate(1, 0, 0.0, {"random": 1})
    assert estimate_remaining(states[3:], RESNET, stored, {"cpu": "bf16"}) == \
        Estimate(1, 1, 6300.0, from_epochs={"random": 1})


def test_runs_in_this_machines_precision_are_preferred_and_the_others_scaled_by_the_measured_ratio():
    stored = stored_rows(("synflow", 0.1, 21, 100.0), ("synflow", 0.1, 42, 200.0), ("synflow", 0.1, 63, 900.0),
                         ("random", 0.1, 21, 50.0))
    stored["precision"] = ["bf16", "bf16", "fp32", "bf16"]
    states = [RunState(spec("synflow", 0.5, 21), "todo"), RunState(spec("random", 0.5, 21), "todo", "train 2/30", 20.0)]
    # fp32 here: synflow from its one fp32 run; random has only bf16 runs: 50 s times synflow's
    # fp32/bf16 ratio 900 / median(100, 200) = 6, minus its checkpoint's 20 s
    fp32 = estimate_remaining(states, RESNET, stored, {"cpu": "fp32"})
    assert fp32 == Estimate(2, 2, 900.0 + 50.0 * 6 - 20.0, {}, {"bf16": 1}, {"bf16": (6.0, 1)})
    assert fp32.line(jobs=2) == (
        "left: 2 run(s); 2 of them about 0.3 h of run time (about 0.2 h with 2 at a time), from the stored runs' "
        "median times (1 of them from runs that trained in bf16 only, times 6.00: the median fp32/bf16 time "
        "ratio of the 1 kind(s) stored in both)")
    assert estimate_remaining(states, RESNET, stored, {"cpu": "bf16"}) == Estimate(2, 2, 150.0 + 30.0)
    assert estimate_remaining(states, RESNET, stored) == Estimate(2, 2, 200.0 + 30.0)   # any precision


def test_without_a_kind_stored_in_both_precisions_the_other_precisions_time_is_used_as_it_is_and_flagged():
    stored = stored_rows(("synflow", 0.1, 21, 900.0), ("random", 0.1, 21, 50.0))
    stored["precision"] = ["fp32", "bf16"]
    states = [RunState(spec("synflow", 0.5, 21), "todo"), RunState(spec("random", 0.5, 21), "todo")]
    estimate = estimate_remaining(states, RESNET, stored, {"cpu": "fp32"})
    assert estimate == Estimate(2, 2, 900.0 + 50.0, {}, {"bf16": 1})
    assert estimate.line(jobs=2) == (
        "left: 2 run(s); 2 of them about 0.3 h of run time (about 0.1 h with 2 at a time), from the stored runs' "
        "median times (1 of them from runs that trained in bf16 only, while this machine trains in fp32: "
        "expect them to take longer)")
    # a ratio pools the kinds stored in both: the median of 2 (synflow) and 4 (gem-miner) is 3
    both = stored_rows(("synflow", 0.1, 21, 100.0), ("synflow", 0.1, 42, 200.0), ("gem-miner", 0.1, 42, 50.0),
                       ("gem-miner", 0.1, 63, 200.0), ("random", 0.1, 21, 10.0))
    both["precision"] = ["bf16", "fp32", "bf16", "fp32", "bf16"]
    assert estimate_remaining([RunState(spec("random", 0.5, 21), "todo")], RESNET, both, {"cpu": "fp32"}) == \
        Estimate(1, 1, 30.0, {}, {"bf16": 1}, {"bf16": (3.0, 2)})


def test_runs_of_another_recipe_version_do_not_count():
    states = [RunState(spec("synflow", 0.5, 21), "todo")]
    assert estimate_remaining(states, RESNET, stored_rows(("synflow", 0.1, 21, 100.0), version=1.0)) == \
        Estimate(1, 0, 0.0, {"synflow": 1})
    assert estimate_remaining(states, RESNET, pd.DataFrame()).line(1).startswith("left: 1 run(s); 0 of them")


def test_nothing_left():
    assert estimate_remaining([RunState(spec("synflow", 0.5, 21), "done")], RESNET, pd.DataFrame()).line(2) == \
        "left: nothing, every run is stored"


@pytest.mark.parametrize("saved,expected_s,expected_text", [
    ([], 0.0, None),
    ([("call1-mining.safetensors", 30, 30, [1.5, 2.0, 2.5]), ("call2-finetune.pt", 5, 30, [4.0])], 10.0,
     "mining 30/30, finetune 5/30"),
    # call 3 cannot follow an unfinished call 2: another start left it, its seconds do not count
    ([("call1-mining.safetensors", 30, 30, [1.5]), ("call2-finetune.safetensors", 11, 30, [4.0]),
      ("call3-finetune.safetensors", 6, 30, [50.0])], 5.5,
     "mining 30/30, finetune 11/30; from another start (set aside when reached): finetune 6/30"),
])
def test_sweep_status_reads_claims_and_checkpoints(tmp_path, saved, expected_s, expected_text):
    run = spec("gem-miner", 0.1, 63)
    for name, done, total, seconds in saved:
        state = {"epochs_done": done, "epochs_total": total,
                 "rows": [{"epoch": i, "seconds": s} for i, s in enumerate(seconds)]}
        path = experiment.checkpoint_dir(run, tmp_path) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".pt":                    # the earlier format, still read
            torch.save(state, path)
        else:
            checkpoint.Slot(path, "k", 0.0).save(state)
    [state] = sweep_status([run], tmp_path)
    assert state == RunState(run, "todo", expected_text, expected_s)
    assert state.line() == "todo  resnet20_cifar10/gem-miner/d10/s63" + (
        f"  (checkpoint: {expected_text})" if expected_text else "")


def test_a_run_claimed_by_a_live_sweep_is_busy(tmp_path):
    from utils.runs import results
    from utils.runs.claims import claim_run
    run = spec("synflow", 0.5, 21)
    with claim_run(results.run_dir(run.experiment, run.method, run.density, run.seed, tmp_path)) as mine:
        assert mine
        assert sweep_status([run], tmp_path) == [RunState(run, "busy")]
    assert sweep_status([run], tmp_path) == [RunState(run, "todo")]



def store_precisions(root, runs) -> None:
    """Copies of a stored dense run under ``root``, one per (seed, profile, bf16) of ``runs``."""
    import json
    import shutil

    from utils.runs import results
    source = results.DEFAULT_ROOT / "resnet20_cifar10" / "dense" / "d100" / "s21"
    for seed, profile, bf16 in runs:
        run = root / "resnet20_cifar10" / "dense" / "d100" / f"s{seed}"
        shutil.copytree(source, run)
        record = json.loads((run / "run.json").read_text())
        record.update(profile=profile, compute={**record["compute"], "bf16": bf16})
        (run / "run.json").write_text(json.dumps(record))


@pytest.mark.parametrize("native_bf16,expected", [
    (False, "warning: this machine trains resnet20_cifar10 in fp32 (this CPU has no native bf16), but 2 of its 3 "
            "stored runs trained in bf16: new runs record their precision in run.json, and checkpoints written in "
            "bf16 wait aside for a machine like theirs"),
    (True, "warning: this machine trains resnet20_cifar10 in bf16 autocast, but 1 of its 3 stored runs trained in "
           "fp32: new runs record their precision in run.json, and checkpoints written in fp32 wait aside for a "
           "machine like theirs")])
def test_the_sweep_warns_when_this_cpu_trains_in_another_precision_than_the_stored_runs(
        monkeypatch, tmp_path, native_bf16, expected):
    """Stored cpu-profile runs: two in bf16, one in fp32; a run of another profile is not counted."""
    import utils.engine.train as engine
    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: native_bf16)
    store_precisions(tmp_path, [(21, "cpu", True), (42, "cpu", True), (63, "cpu", False), (1, "smoke", False)])
    assert precision_warning(RESNET, [spec("synflow", 0.2, 21)], tmp_path) == expected


def test_no_warning_when_the_stored_runs_trained_as_this_cpu_does_or_nothing_is_left(monkeypatch, tmp_path):
    import utils.engine.train as engine
    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: False)
    store_precisions(tmp_path, [(21, "cpu", False), (42, "smoke", True)])
    assert precision_warning(RESNET, [spec("synflow", 0.2, 21)], tmp_path) is None
    assert precision_warning(RESNET, [], tmp_path) is None
