"""Compact init files (utils.runs.init_file): what the seed regenerates is not stored, loads
back bit for bit, and a changed init is an error."""
import copy
import json

import pandas as pd
import pytest
import torch

import models
from pruners.random import Random
from utils.cli import main
from utils.engine.seeding import seed_init
from utils.errors import RunStoreError
from utils.runs import init_file, results

HISTORY = pd.DataFrame({"epoch": [0, 1], "phase": ["train", "train"], "train_loss": [float("nan"), 0.5],
                        "top1": [10.0, 90.0]})
SEED, SIZE = 21, 60_000


def trained_pair(model_name="fc", seed=SEED, size=SIZE):
    """(final, init) as a prune-at-init run makes them: seeded init, a mask, then training."""
    seed_init(seed, size)
    init = models.build_model(model_name)
    Random().prune(init, 0.2, seed=seed, data_shape=(1, 28, 28) if model_name == "fc" else (3, 32, 32))
    final = copy.deepcopy(init)
    with torch.no_grad():
        for p in final.parameters():
            p.add_(0.01)
    return final, init


def save(tmp_path, final, init, model_name="fc", init_seed=None, name="s21"):
    return results.save_run(tmp_path / "exp" / "random" / "d20" / name, model=final, init_model=init,
                            history=HISTORY, model_spec={"name": model_name, "kwargs": {}},
                            record={"experiment": "exp", "method": "random", "density_target": 0.2,
                                    "seed": SEED, "profile": "p", "dataset": "mnist"},
                            init_seed=init_seed)


def equal_states(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("model_name", ["fc", "resnet20"])
def test_a_seeded_init_keeps_only_its_masks_and_loads_back_exactly(tmp_path, model_name):
    final, init = trained_pair(model_name)
    full = save(tmp_path / "full", final, init, model_name)
    small = save(tmp_path / "small", final, init, model_name, {"seed": SEED, "thesis_train_size": SIZE})
    stored, _ = results._read_tensors(small / "init.safetensors")
    assert set(stored) == {f"{n}.mask" for n in models.masks.prunable_layers(init)} | {init_file.KEY}
    recipe = json.loads(stored[init_file.KEY].numpy().tobytes())
    assert (recipe["seed"], recipe["thesis_train_size"]) == (SEED, SIZE)
    assert (small / "init.safetensors").stat().st_size < (full / "init.safetensors").stat().st_size / 5
    for path in (full, small):
        assert equal_states(results.load_run_dir(path).init_model(), results.load_run_dir(full).init_model())
    assert equal_states(results.load_run_dir(small).model, results.load_run_dir(full).model)


def test_only_the_tensors_the_seed_reproduces_are_left_out(tmp_path):
    final, init = trained_pair("resnet20")
    with torch.no_grad():                      # e.g. Gem-Miner's BatchNorm statistics after mining
        init.bn1.running_mean.add_(0.5)
        init.bn1.num_batches_tracked.fill_(7)
    path = save(tmp_path, final, init, "resnet20", {"seed": SEED, "thesis_train_size": SIZE})
    stored, _ = results._read_tensors(path / "init.safetensors")
    assert {"bn1.running_mean", "bn1.num_batches_tracked"} <= set(stored)
    assert "bn1.running_var" not in stored and "conv1.values" not in stored
    assert "bn1.running_mean" not in json.loads(stored[init_file.KEY].numpy().tobytes())["keys"]
    assert equal_states(results.load_run_dir(path).init_model(), init)


def test_an_init_of_another_seed_is_stored_whole(tmp_path):
    final, init = trained_pair(seed=42)
    path = save(tmp_path, final, init, init_seed={"seed": SEED, "thesis_train_size": SIZE})
    stored, _ = results._read_tensors(path / "init.safetensors")
    assert init_file.KEY not in stored and "layers.0.values" in stored
    assert equal_states(results.load_run_dir(path).init_model(), init)


def test_the_thesis_randperm_is_part_of_the_recipe(tmp_path):
    final, init = trained_pair(size=None)      # built without the thesis's randperm draw
    path = save(tmp_path, final, init, init_seed={"seed": SEED, "thesis_train_size": SIZE})
    assert init_file.KEY not in results._read_tensors(path / "init.safetensors")[0]


def test_a_compact_init_file_is_byte_identical_when_written_again(tmp_path):
    final, init = trained_pair("resnet20")
    paths = [save(tmp_path / str(i), final, init, "resnet20", {"seed": SEED, "thesis_train_size": SIZE})
             for i in range(4)]
    assert len({(p / "init.safetensors").read_bytes() for p in paths}) == 1


def test_saving_and_loading_leave_the_global_rng_alone(tmp_path):
    final, init = trained_pair()
    torch.manual_seed(5)
    state = torch.get_rng_state()
    path = save(tmp_path, final, init, init_seed={"seed": SEED, "thesis_train_size": SIZE})
    results.load_run_dir(path).init_model()
    assert torch.equal(torch.get_rng_state(), state)


def test_an_init_the_code_no_longer_regenerates_is_an_error(tmp_path, monkeypatch):
    final, init = trained_pair()
    path = save(tmp_path, final, init, init_seed={"seed": SEED, "thesis_train_size": SIZE})
    monkeypatch.setattr(init_file, "seed_init", lambda seed, size=None: seed_init(seed + 1, size))
    with pytest.raises(RunStoreError, match="no longer regenerates the init of seed 21"):
        results.load_run_dir(path).init_model()


def test_compact_rewrites_a_stored_run_once_and_verify_loads_it(tmp_path, capsys):
    final, init = trained_pair()
    path = save(tmp_path, final, init)                         # the earlier, full format
    before = (path / "init.safetensors").stat().st_size
    record = results.read_record(path)
    saved = results.compact_init(path)
    assert saved == before - (path / "init.safetensors").stat().st_size > 0
    after = results.read_record(path)                          # checksums and digest verified
    assert after["files"]["init.safetensors"] != record["files"]["init.safetensors"]
    assert after["files"]["final.safetensors"] == record["files"]["final.safetensors"]
    assert equal_states(results.load_run_dir(path).init_model(), init)
    assert results.compact_init(path) == 0                    # already compact
    assert not list(path.parent.glob(".*"))                    # no temporary directory left
    assert main(["compact", "--results", str(tmp_path), "--quiet"]) == 0
    assert "0 init file(s) compacted" in capsys.readouterr().out
    assert main(["verify", "--results", str(tmp_path)]) == 0
    assert "1 stored run(s) verified" in capsys.readouterr().out


def test_tensors_sha256_covers_key_dtype_shape_and_bytes():
    a = {"x": torch.zeros(2, 3), "n": torch.tensor(5)}
    base = init_file.tensors_sha256(a)
    assert base == init_file.tensors_sha256(dict(reversed(list(a.items()))))   # key order is not content
    assert base != init_file.tensors_sha256({**a, "x": torch.zeros(3, 2)})
    assert base != init_file.tensors_sha256({**a, "x": torch.zeros(2, 3, dtype=torch.float64)})
    assert base != init_file.tensors_sha256({**a, "n": torch.tensor(6)})
    assert base != init_file.tensors_sha256({"y": a["x"], "n": a["n"]})


def test_compact_refuses_a_tampered_run_and_changes_nothing(tmp_path, capsys):
    final, init = trained_pair()
    path = save(tmp_path, final, init)
    (path / "history.csv").write_text("epoch\n0\n")
    before = {f.name: f.read_bytes() for f in path.iterdir()}
    assert main(["compact", "--results", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "history.csv fails its sha256 check" in err
    assert {f.name: f.read_bytes() for f in path.iterdir()} == before
