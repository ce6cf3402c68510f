"""A killed run resumes from its checkpoints and stores exactly what an uninterrupted run stores."""
import hashlib
import math

import pandas as pd
import pytest
import torch

from utils.engine import checkpoint
from utils.engine.train import Hooks, TrainConfig, device_name, train
from utils.runs import experiment, results, sweep
from utils.runs.encoding import unpack_bool


class Killed(Exception):
    """Stands for the process being killed right after a checkpoint write."""


def kill_after_saves(monkeypatch, n: int) -> None:
    """Save every epoch, and raise :class:`Killed` right after the ``n``-th save."""
    monkeypatch.setattr(checkpoint, "SAVE_EVERY_S", 0.0)
    real_save, count = checkpoint.Slot.save, {"saves": 0}

    def save(slot, state):
        real_save(slot, state)
        count["saves"] += 1
        if count["saves"] == n:
            raise Killed(slot.path.name)
    monkeypatch.setattr(checkpoint.Slot, "save", save)


def stored(root, spec) -> dict:
    """Every stored run of ``spec`` (the method's and its variants'): file hashes of the weights
    and the history without its timing column."""
    out = {}
    for path in sorted((root / spec.experiment).glob(f"*/d*/s{spec.seed}")):
        weights = {f.name: hashlib.sha256(f.read_bytes()).hexdigest()
                   for f in sorted(path.glob("*.safetensors"))}
        history = pd.read_csv(path / "history.csv").drop(columns="seconds")
        out[path.relative_to(root).as_posix()] = (weights, history)
    return out


def assert_same_runs(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for name in a:
        assert a[name][0] == b[name][0], name
        pd.testing.assert_frame_equal(a[name][1], b[name][1], check_exact=True, obj=name)


def run_killed_then_resumed(monkeypatch, tmp_path, spec, config, overrides, *, data_dir, kill_at: int,
                            progress: list | None = None):
    """(uninterrupted, killed at save ``kill_at`` then rerun) stores and the states the rerun
    loaded; ``progress`` gets what :func:`checkpoint.progress` said after the kill."""
    progress = [] if progress is None else progress
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    kwargs = dict(config=config, data_dir=data_dir, overrides=overrides, progress=False, threads=1)
    experiment.execute(spec, root=whole, **kwargs)
    with monkeypatch.context() as patch:
        kill_after_saves(patch, kill_at)
        with pytest.raises(Killed) as killed:
            experiment.execute(spec, root=resumed, **kwargs)
    saves = experiment.checkpoint_dir(spec, resumed)
    assert (saves / str(killed.value)).is_file()
    progress.append(checkpoint.progress(saves))
    loaded = []
    real_load = checkpoint.Slot.load
    monkeypatch.setattr(checkpoint.Slot, "load", lambda slot: loaded.append(r := real_load(slot)) or r)
    experiment.execute(spec, root=resumed, **kwargs)
    assert not saves.exists()                       # removed once the run is stored
    return stored(whole, spec), stored(resumed, spec), loaded


@pytest.mark.parametrize("method,kill_at", [("synflow", 1), ("synflow", 2), ("deepr", 2)])
def test_a_killed_resnet_run_resumes_to_the_same_weights_and_history(monkeypatch, tmp_path, method, kill_at):
    """SynFlow-pruned ResNet-20 (bf16, channels_last, per-epoch multistep lr), 3 epochs on tiny
    CIFAR: killed after epoch 1 or 2, the rerun stores byte-identical weights and history; DEEPR
    too (its optimizer's state dict carries its noise and re-activation generator)."""
    from test_data import write_tiny_cifar
    write_tiny_cifar(tmp_path / "data", n=16)
    config = experiment.load_config("resnet20_cifar10")
    spec = experiment.RunSpec("resnet20_cifar10", method, 0.1, 21, "smoke", None)
    smoke = config["profiles"]["smoke"]
    config["profiles"]["smoke"] = {**smoke, "train": {**smoke["train"], "schedule": "multistep",
                                                      "milestones": [1, 2], "gamma": 0.5}}
    whole, resumed, loaded = run_killed_then_resumed(monkeypatch, tmp_path, spec, config,
                                                     experiment.Overrides(epochs=3), data_dir=tmp_path / "data",
                                                     kill_at=kill_at)
    assert_same_runs(whole, resumed)
    assert loaded[0]["epochs_done"] == kill_at      # it resumed, not retrained
    def record(root):
        return results.read_record(results.run_dir(spec.experiment, spec.method, spec.density, spec.seed, root))
    # run.json says what was restored; the uninterrupted run has nothing to say
    compute = record(tmp_path / "resumed")["compute"]
    assert [(r["call"], r["epochs"]) for r in compute["resumed"]] == [(1, kill_at)]
    # ...and where the restored epochs trained (this machine here), as the whole run says where it trained
    here = device_name(torch.device("cpu"))
    assert compute["resumed"][0]["trained_on"] == [[here, kill_at]]
    assert compute["device_name"] == record(tmp_path / "whole")["compute"]["device_name"] == here
    assert "resumed" not in record(tmp_path / "whole")["compute"]


@pytest.mark.parametrize("kill_at,restored,said", [(2, [2], "mining 2/3"), (5, [3, 2], "mining 3/3, finetune 2/2"),
                                                  (6, [3, 2, 1], "mining 3/3, finetune 2/2, finetune 1/2")])
def test_a_killed_gem_miner_run_resumes_in_mining_or_in_a_finetune(monkeypatch, tmp_path, kill_at, restored, said):
    """ResNet-20 Gem-Miner on tiny CIFAR, 3 mining epochs (a prune each) then 2 epochs for each of
    the three finetunes (mined net, weight reinit, mask shuffle; saves 4-5, 6-7, 8-9): killed in the
    mining (the BottomK generator and prune record come back with it), right after the first
    finetune, or inside the second: every stored net is byte-identical to an uninterrupted run's,
    and the rerun restored what was done instead of retraining it."""
    from test_data import write_tiny_cifar
    write_tiny_cifar(tmp_path / "data", n=16)
    config = experiment.load_config("resnet20_cifar10")
    cpu = config["profiles"]["cpu"]
    options = {**cpu["methods"]["gem-miner"]["options"], "mining_epochs": 3, "val_size": 4, "batch_size": 8}
    config["profiles"]["cpu"] = {**cpu, "train": {**cpu["train"], "batch_size": 8, "milestones": [1]},
                                 "methods": {**cpu["methods"], "gem-miner": {"options": options}}}
    spec = experiment.RunSpec("resnet20_cifar10", "gem-miner", 0.1, 21, "cpu", 2)
    progress = []
    whole, resumed, loaded = run_killed_then_resumed(monkeypatch, tmp_path, spec, config,
                                                     experiment.Overrides(epochs=2), data_dir=tmp_path / "data",
                                                     kill_at=kill_at, progress=progress)
    assert progress == [said]                       # what `sweep --dry-run` shows for the run
    assert_same_runs(whole, resumed)
    assert len(whole) == 3
    assert [state["epochs_done"] for state in loaded if state is not None] == restored
    # a finished call keeps no optimizer state (its optimizer ends with it); one in progress does
    assert [("optimizer" in state) == (state["epochs_done"] < state["epochs_total"])
            for state in loaded if state is not None] == [True] * len(restored)


def test_a_checkpoint_carried_to_a_cpu_without_native_bf16_trains_afresh(monkeypatch, tmp_path):
    """Checkpoints travel with the store (a sweep continued on another machine): one written in
    bf16 autocast is not finished in fp32 on a CPU without native bf16, where the rerun trains
    from the start and records fp32."""
    from test_data import write_tiny_cifar

    import utils.engine.train as engine
    write_tiny_cifar(tmp_path / "data", n=16)
    spec = experiment.RunSpec("resnet20_cifar10", "synflow", 0.1, 21, "smoke", None)
    kwargs = dict(config=experiment.load_config("resnet20_cifar10"), data_dir=tmp_path / "data",
                  overrides=experiment.Overrides(epochs=2), progress=False, threads=1)
    with monkeypatch.context() as patch:
        patch.setattr(engine, "cpu_has_native_bf16", lambda: True)
        kill_after_saves(patch, 1)
        with pytest.raises(Killed):
            experiment.execute(spec, root=tmp_path, **kwargs)
    assert checkpoint.progress(experiment.checkpoint_dir(spec, tmp_path)) == "train 1/2"
    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: False)
    experiment.execute(spec, root=tmp_path, **kwargs)
    compute = results.read_record(results.run_dir(spec.experiment, spec.method, spec.density, spec.seed,
                                                  tmp_path))["compute"]
    assert compute["bf16"] is False and "resumed" not in compute


def test_a_checkpoint_of_the_other_precision_waits_aside_and_resumes_when_that_machine_returns(monkeypatch,
                                                                                                 tmp_path):
    """A sweep carried from a bf16 machine to an fp32 one and back: the fp32 rerun sets the bf16
    file aside instead of overwriting it, and the bf16 rerun takes it back and finishes from it,
    storing exactly what an uninterrupted bf16 run stores."""
    from test_data import write_tiny_cifar

    import utils.engine.train as engine
    write_tiny_cifar(tmp_path / "data", n=16)
    spec = experiment.RunSpec("resnet20_cifar10", "synflow", 0.1, 21, "smoke", None)
    kwargs = dict(config=experiment.load_config("resnet20_cifar10"), data_dir=tmp_path / "data",
                  overrides=experiment.Overrides(epochs=2), progress=False, threads=1)
    saves = experiment.checkpoint_dir(spec, tmp_path / "carried")

    def killed_on(native_bf16: bool) -> None:
        with monkeypatch.context() as patch:
            patch.setattr(engine, "cpu_has_native_bf16", lambda: native_bf16)
            kill_after_saves(patch, 1)
            with pytest.raises(Killed):
                experiment.execute(spec, root=tmp_path / "carried", **kwargs)

    killed_on(True)
    bf16_file = saves / "call1-train.safetensors"
    bf16_key = checkpoint.read(bf16_file)["key"]
    killed_on(False)
    assert checkpoint.read(saves / "aside" / bf16_key / "call1-train.safetensors")["epochs_done"] == 1
    fp32_key = checkpoint.read(bf16_file)["key"]
    assert fp32_key != bf16_key and checkpoint.progress(saves) == "train 1/2"
    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: True)
    experiment.execute(spec, root=tmp_path / "carried", **kwargs)
    experiment.execute(spec, root=tmp_path / "whole", **kwargs)
    record = results.read_record(results.run_dir(spec.experiment, spec.method, spec.density, spec.seed,
                                                 tmp_path / "carried"))
    assert record["compute"]["bf16"] is True
    assert [(r["file"], r["epochs"]) for r in record["compute"]["resumed"]] == [("call1-train.safetensors", 1)]
    assert_same_runs(stored(tmp_path / "whole", spec), stored(tmp_path / "carried", spec))
    assert not saves.exists()


def test_a_checkpoint_carried_to_another_cpu_of_the_same_precision_resumes(monkeypatch, tmp_path):
    """Killed after epoch 1 on "CPU A", rerun on "CPU B" (both bf16): the rerun resumes from the same
    file under the same key (the device's name is not part of the key) and stores what an
    uninterrupted run stores; run.json says where the restored epoch and the rest trained."""
    from test_data import write_tiny_cifar

    import utils.engine.train as engine
    write_tiny_cifar(tmp_path / "data", n=16)
    spec = experiment.RunSpec("resnet20_cifar10", "synflow", 0.1, 21, "smoke", None)
    kwargs = dict(config=experiment.load_config("resnet20_cifar10"), data_dir=tmp_path / "data",
                  overrides=experiment.Overrides(epochs=2), progress=False, threads=1)
    saves = experiment.checkpoint_dir(spec, tmp_path / "carried")
    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: True)
    with monkeypatch.context() as patch:
        patch.setattr(engine, "_this_cpu", lambda: "CPU A")
        kill_after_saves(patch, 1)
        with pytest.raises(Killed):
            experiment.execute(spec, root=tmp_path / "carried", **kwargs)
    state = checkpoint.read(saves / "call1-train.safetensors")
    assert state["epochs_done"] == 1 and state["trained_on"] == [["CPU A", 1]]
    loaded = []
    real_load = checkpoint.Slot.load
    monkeypatch.setattr(checkpoint.Slot, "load", lambda slot: loaded.append(r := real_load(slot)) or r)
    monkeypatch.setattr(engine, "_this_cpu", lambda: "CPU B")
    experiment.execute(spec, root=tmp_path / "carried", **kwargs)
    assert loaded[0]["key"] == state["key"] and loaded[0]["epochs_done"] == 1
    assert not (saves / "aside").exists() and not saves.exists()
    compute = results.read_record(results.run_dir(spec.experiment, spec.method, spec.density, spec.seed,
                                                  tmp_path / "carried"))["compute"]
    assert compute["device_name"] == "CPU B" and compute["bf16"] is True
    assert [(r["epochs"], r["trained_on"]) for r in compute["resumed"]] == [(1, [["CPU A", 1]])]
    experiment.execute(spec, root=tmp_path / "whole", **kwargs)
    assert_same_runs(stored(tmp_path / "whole", spec), stored(tmp_path / "carried", spec))


def test_a_file_of_another_key_is_set_aside_and_taken_back_by_its_key(tmp_path, capsys):
    """Slot level: load() moves a foreign-key file to ``aside/<key>/`` (and says so on stderr) and
    brings back the one of its own key; empty aside folders go; a torn file is not set aside."""
    model = torch.nn.Linear(3, 2)
    first = checkpoint.Checkpoints(tmp_path).slot("train", {"lr": 0.1}, model)
    first.save({"epochs_done": 4})
    second = checkpoint.Checkpoints(tmp_path).slot("train", {"lr": 0.2}, model)
    assert second.load() is None and not first.path.exists()
    assert capsys.readouterr().err == (f"warning: {first.path} (4 epochs done) has another key (a changed setting, "
                                       f"data copy, precision or code): set aside in {tmp_path / 'aside' / first.key}, "
                                       f"this call trains from its start\n")
    assert checkpoint.read(first.aside(first.key))["epochs_done"] == 4
    second.save({"epochs_done": 1})
    assert first.load()["epochs_done"] == 4 and checkpoint.read(first.path)["key"] == first.key
    assert checkpoint.read(second.aside(second.key))["epochs_done"] == 1
    assert sorted(p.name for p in (tmp_path / "aside").iterdir()) == [second.key]
    assert second.load()["epochs_done"] == 1 and first.aside(first.key).is_file()
    assert first.load()["epochs_done"] == 4
    assert second.load()["epochs_done"] == 1
    assert capsys.readouterr().err.count("warning: ") == 4     # each of the four moves aside
    first.path.write_bytes(b"torn")                  # a torn file (second's progress is lost) ...
    assert first.load()["epochs_done"] == 4          # ... gives way to the file waiting aside
    assert not (tmp_path / "aside").exists()
    first.path.write_bytes(b"torn")                  # with nothing waiting: neither kept nor moved
    assert second.load() is None and first.path.read_bytes() == b"torn" and not (tmp_path / "aside").exists()


def test_a_checkpoint_of_other_settings_data_or_start_is_not_resumed(tmp_path):
    """The key holds the call's settings, the scope's context and the model it starts from."""
    model = torch.nn.Linear(3, 2)
    with checkpoint.resume_from(tmp_path, context={"data": "a"}) as scope:
        slot = scope.slot("train", {"lr": 0.1}, model)
        slot.save({"epochs_done": 1})
        assert slot.load()["epochs_done"] == 1 and slot.path.name == "call1-train.safetensors"
    same = checkpoint.Checkpoints(tmp_path, context={"data": "a"}).slot("train", {"lr": 0.1}, model)
    assert same.load()["epochs_done"] == 1
    for other in (checkpoint.Checkpoints(tmp_path, context={"data": "b"}).slot("train", {"lr": 0.1}, model),
                  checkpoint.Checkpoints(tmp_path, context={"data": "a"}).slot("train", {"lr": 0.2}, model)):
        assert other.load() is None
    with torch.no_grad():
        model.weight.add_(1)
    assert checkpoint.Checkpoints(tmp_path, context={"data": "a"}).slot("train", {"lr": 0.1}, model).load() is None
    assert not slot.path.exists() and same.load()["epochs_done"] == 1     # it waited aside
    slot.path.write_bytes(b"torn")                   # a torn file trains afresh
    assert same.load() is None


def test_train_checkpoints_only_what_it_can_restore(tmp_path):
    """A caller's optimizer or hooks that keep undeclared state: no checkpoint (the call still
    counts, so later calls keep their file names); stateless hooks: checkpointed."""
    from utils.engine.data import DATASETS, Dataset
    x = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    data = Dataset(DATASETS["mnist"], x, torch.arange(8) % 10, x, torch.arange(8) % 10)
    cfg = TrainConfig(epochs=1, batch_size=4, lr=0.1)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    with checkpoint.resume_from(tmp_path, every_s=0):
        train(model, data, cfg, seed=1, progress=False,
              optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
        train(model, data, cfg, seed=1, progress=False, hooks=Hooks(after_epoch=lambda e, m: None))
        train(model, data, cfg, seed=1, progress=False, hooks=Hooks(columns=lambda m: {}, stateless=True))
        train(model, data, cfg, seed=1, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["call3-train.safetensors", "call4-train.safetensors"]


def test_sweep_dry_run_shows_what_a_killed_run_kept(tmp_path, capsys):
    from utils.cli import main
    spec = experiment.RunSpec("fc_mnist", "synflow", 0.1, 21, "thesis", None)
    slot = checkpoint.Slot(experiment.checkpoint_dir(spec, tmp_path) / "call1-train.safetensors", "k", 0.0)
    slot.save({"epochs_done": 3, "epochs_total": 25})
    assert main(["sweep", "fc_mnist", "--results", str(tmp_path), "--dry-run", "--methods", "synflow",
                 "--densities", "10", "--seeds", "21,42"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["todo  fc_mnist/synflow/d10/s21  (checkpoint: train 3/25)", "todo  fc_mnist/synflow/d10/s42"]
    assert out[2].startswith("left: 2 run(s); 0 of them") and out[2].endswith("synflow ×2")


def test_a_restarted_sweep_resumes_its_runs_in_flight_before_new_ones(tmp_path, monkeypatch):
    """Seeds 21, 42, 63 in that order; 63 holds a checkpoint (a killed sweep's run in flight):
    63 trains first, then 21 and 42 in order; with --max-runs 1 only 63."""
    config = experiment.load_config("fc_mnist")
    specs = experiment.grid(config, "thesis", ["synflow"], [10], [21, 42, 63])
    slot = checkpoint.Slot(experiment.checkpoint_dir(specs[2], tmp_path) / "call1-train.safetensors", "k", 0.0)
    slot.save({"epochs_done": 3, "epochs_total": 25})
    order = []
    monkeypatch.setattr(experiment, "cached_dataset", lambda *a, **k: None)
    monkeypatch.setattr(sweep, "run_claimed", lambda task, *a, **k: order.extend(s.seed for s in task) or [])
    sweep.sweep(config, specs, root=tmp_path, jobs=1, batch_runs=1, progress=False)
    assert order == [63, 21, 42]
    order.clear()
    sweep.sweep(config, specs, root=tmp_path, jobs=1, batch_runs=1, max_runs=1, progress=False)
    assert order == [63]


def _same(a, b) -> bool:
    """Equal values of equal types (any dict for a dict: a state dict is an OrderedDict), tensors
    by dtype and bytes, NaN equal to NaN."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and a != a:
        return isinstance(b, float) and b != b
    return type(a) is type(b) and a == b


def test_a_train_state_packs_to_safetensors_and_back_unchanged():
    """What ``train`` saves (model, SGD with momentum, generators, history with NaN) and the odd
    shapes of plain values (int keys, tuples, a "$"-key, bf16, bool, 0-dim): equal after the round trip,
    and the bytes are a safetensors file (no pickle), its tensors readable by any safetensors reader."""
    import safetensors.torch
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    model(torch.randn(2, 3, 5, 5)).sum().backward()
    optimizer.step()
    gen = torch.Generator().manual_seed(3)
    state = {"epochs_done": 2, "rows": [{"epoch": 0, "train_loss": math.nan, "top1": 10.0, "phase": "train"}],
             "model": model.state_dict(), "optimizer": optimizer.state_dict(), "data_gen": gen.get_state(),
             "global_rng": torch.get_rng_state(),
             "hooks": {"state": {"prune_epochs": [0.5, 1.0], "stopped": None}, 7: (True, "x"), "$odd": 1,
                       "flags": torch.tensor([True, False]), "half": torch.ones(2, dtype=torch.bfloat16),
                       "scalar": torch.tensor(2.5), "inf": -math.inf}}
    data = checkpoint.pack(state)
    assert _same(checkpoint.unpack(data), state)
    momentum = len(list(model.parameters()))
    stored = [k for k in safetensors.torch.load(data) if not k.endswith((".nz", ".neg0"))]   # maps of sparse ones
    assert len(stored) == len(model.state_dict()) + momentum + 2 + 3   # generators, hooks


def test_a_pruned_state_packs_compactly_and_back_bit_exact():
    """A 50 % pruned conv's weight, its momentum and its bool mask: the weight and momentum keep only
    their nonzero entries plus a 1-bit map, the mask 1 bit per entry; -0.0 survives; a dense tensor
    stays whole; a file of the earlier dense format 1 still reads."""
    import safetensors.torch
    gen = torch.Generator().manual_seed(0)
    mask = torch.rand(64, 64, 3, 3, generator=gen) < 0.5
    weight = torch.where(mask, torch.randn(64, 64, 3, 3, generator=gen), 0.0)
    weight.view(-1)[mask.view(-1).nonzero()[0]] = -0.0
    state = {"w": weight, "momentum": weight.bfloat16(), "mask": mask, "dense": torch.randn(7, generator=gen)}
    data = checkpoint.pack(state)
    back = checkpoint.unpack(data)
    for key, value in state.items():
        assert back[key].dtype == value.dtype and back[key].shape == value.shape
        assert torch.equal(back[key].view(torch.uint8) if value.dtype != torch.bool else back[key],
                           value.view(torch.uint8) if value.dtype != torch.bool else value)
    stored = safetensors.torch.load(data)
    nonzero = int(mask.sum()) - 1                       # one kept entry is -0.0: in the .neg0 map
    assert stored["t0"].numel() == nonzero and stored["t0.nz"].numel() == 64 * 64 * 9 // 8
    assert int(unpack_bool(stored["t0.neg0"], (64 * 64 * 9,)).sum()) == 1
    assert stored["t1"].dtype == torch.bfloat16 and stored["t1"].numel() == nonzero
    assert stored["t2"].dtype == torch.uint8 and stored["t2"].numel() == 64 * 64 * 9 // 8
    assert stored["t3"].numel() == 7 and "t3.nz" not in stored
    assert len(data) < 0.53 * (weight.nbytes + weight.bfloat16().nbytes) + 4 * mask.numel() / 8 + 4096
    old = safetensors.torch.save({"t0": weight}, metadata={"format": "sparse-network-analysis checkpoint 1",
                                                           "state": '{"w": {"$t": "t0"}}'})
    assert torch.equal(checkpoint.unpack(old)["w"], weight)


@pytest.mark.parametrize("value", [object(), {1.5: 2}.keys(), pd.DataFrame()])
def test_pack_refuses_what_is_not_a_tensor_or_plain_value(value):
    with pytest.raises(TypeError, match="tensors and plain values"):
        checkpoint.pack({"x": value})


def test_unpack_refuses_foreign_bytes():
    import safetensors.torch
    for data, said in ((b"torn", "not a checkpoint: "), (safetensors.torch.save({"w": torch.ones(1)}), "of format")):
        with pytest.raises(ValueError, match=said):
            checkpoint.unpack(data)


def test_a_checkpoint_of_the_earlier_torch_save_format_resumes_and_is_rewritten(tmp_path):
    """A run killed under the earlier format (``call<k>-<phase>.pt``) resumes from it; loading
    rewrites it as safetensors and removes the pickle, so the store's checkpoints can be committed."""
    model = torch.nn.Linear(3, 2)
    slot = checkpoint.Checkpoints(tmp_path).slot("train", {"lr": 0.1}, model)
    state = {"epochs_done": 4, "model": model.state_dict(), "rows": [{"top1": 1.0}]}
    torch.save({**state, "key": slot.key}, tmp_path / "call1-train.pt")
    assert checkpoint.progress(tmp_path) == "train 4/?"          # `sweep --dry-run` reads it too
    loaded = checkpoint.Checkpoints(tmp_path).slot("train", {"lr": 0.1}, model).load()
    assert _same({k: v for k, v in loaded.items() if k != "key"}, state)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["call1-train.safetensors"]
    assert _same(checkpoint.read(tmp_path / "call1-train.safetensors"), {**state, "key": slot.key})


def test_a_checkpoint_keyed_with_the_evaluation_batch_resumes(monkeypatch, tmp_path):
    """Until 2026-12-05 a call's key held its whole TrainConfig, the evaluation batch (then 1000
    by default) included; such a checkpoint resumes, and is saved under the current key after."""
    from utils.engine.data import DATASETS, Dataset
    x = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    data = Dataset(DATASETS["mnist"], x, torch.arange(8) % 10, x, torch.arange(8) % 10)

    def fresh():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))

    with monkeypatch.context() as earlier_code:
        earlier_code.setattr(TrainConfig, "result_dict",
                             lambda cfg: {**cfg.to_dict(), "eval_batch_size": 1000})
        with checkpoint.resume_from(tmp_path, every_s=0):
            first = train(fresh(), data, TrainConfig(epochs=2, batch_size=4, lr=0.1), seed=1, progress=False)
    written = checkpoint.read(tmp_path / "call1-train.safetensors")["key"]
    with checkpoint.resume_from(tmp_path, every_s=0) as scope:
        again = train(fresh(), data, TrainConfig(epochs=2, batch_size=4, lr=0.1), seed=1, progress=False)
    assert [r["epochs"] for r in scope.restored] == [2]
    pd.testing.assert_frame_equal(again, first)
    rekeyed = checkpoint.read(tmp_path / "call1-train.safetensors")["key"]
    assert rekeyed != written
    with checkpoint.resume_from(tmp_path, every_s=0) as scope:      # the evaluation batch is not in the key
        train(fresh(), data, TrainConfig(epochs=2, batch_size=4, lr=0.1, eval_batch_size=7), seed=1,
              progress=False)
    assert [r["epochs"] for r in scope.restored] == [2] and not (tmp_path / "aside").exists()
    with checkpoint.resume_from(tmp_path, every_s=0) as scope:      # another setting is another key
        train(fresh(), data, TrainConfig(epochs=2, batch_size=4, lr=0.2), seed=1, progress=False)
    assert scope.restored == [] and (tmp_path / "aside" / rekeyed).is_dir()
