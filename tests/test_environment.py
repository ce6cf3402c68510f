"""pyproject.toml and environment.yaml list the same dependencies."""
import re
import tomllib

import pytest
import yaml
from conftest import ROOT


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ]", requirement.strip(), maxsplit=1)[0].lower()


def test_pyproject_and_environment_agree():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_deps = {_name(d) for d in project["dependencies"]}
    pip_deps |= {_name(d) for d in project["optional-dependencies"]["test"]}
    env = yaml.safe_load((ROOT / "environment.yaml").read_text())
    conda = {_name(d) for d in env["dependencies"] if isinstance(d, str)} - {"python", "pip"}
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda |= {_name(d) for d in pip_section if not d.startswith("-")}
    assert pip_deps == conda


def test_torch_pinned_to_cpu_build_in_both():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "torch==2.13.0" in project["dependencies"]
    assert "torch==2.13.0" in (ROOT / "environment.yaml").read_text()
    assert "python=3.11" in (ROOT / "environment.yaml").read_text()


def test_torch_threads_sets_and_restores(monkeypatch):
    import torch

    from utils.engine.train import available_cores, torch_threads
    monkeypatch.setenv("SPARSE_NUM_THREADS", "1")
    before = torch.get_num_threads()
    with torch_threads(2):
        assert torch.get_num_threads() == 2 and available_cores() == 2
    assert torch.get_num_threads() == before and available_cores() == 1
    with pytest.raises(ValueError):
        with torch_threads(0):
            pass


def test_default_jobs_one_run_per_core(monkeypatch):
    import torch

    from utils.runs.experiment import default_jobs
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("SPARSE_NUM_THREADS", "4")
    assert default_jobs() == 4 and default_jobs(threads=2) == 2 and default_jobs(threads=8) == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_jobs() == 1


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_run_of_every_profile_resolves(path):
    """Each config's grid, under every profile, gives a method and training settings it can
    train with (e.g. DEEPR gets plain SGD), so no sweep stops hours in on a bad profile."""
    from utils.runs.experiment import grid, load_config, run_settings
    config = load_config(path)
    for profile in config["profiles"]:
        specs = grid(config, profile)
        assert specs
        for spec in specs:
            settings = run_settings(spec, config)
            assert 0 < settings.density <= 1 and settings.train.epochs >= 1


def test_the_thesis_quirks_profile_is_the_thesis_profile_with_gem_miners_thesis_mode():
    """A YAML merge copies only the top level of a mapping: the thesis-quirks profile must still
    hold every other setting of the thesis profile, and its runs differ from the thesis's only in
    Gem-Miner's options (mode) and hence the recipe digest."""
    import copy

    from utils.runs.experiment import grid, load_config, recipe_record, run_settings
    config = load_config("fc_mnist")
    thesis, quirks = config["profiles"]["thesis"], copy.deepcopy(config["profiles"]["thesis-quirks"])
    assert quirks["methods"]["gem-miner"]["options"].pop("mode") == "thesis"
    assert quirks == thesis
    specs = grid(config, "thesis"), grid(config, "thesis-quirks")
    assert [s.label for s in specs[0]] == [s.label for s in specs[1]]
    for a, b in zip(*specs):
        sa, sb = run_settings(a, config), run_settings(b, config)
        assert sa.train == sb.train and sa.density == sb.density
        same_recipe = (recipe_record("thesis", thesis, sa)["settings_sha256"]
                       == recipe_record("thesis-quirks", config["profiles"]["thesis-quirks"], sb)["settings_sha256"])
        assert same_recipe == (a.method != "gem-miner"), a.label


def test_a_profile_the_method_cannot_train_with_fails_before_training(tmp_path):
    from utils.errors import UserError
    from utils.runs.experiment import grid, load_config
    from utils.runs.sweep import sweep
    config = load_config("resnet20_cifar10")
    config["profiles"]["cpu"]["methods"]["deepr"] = {}          # inherits SGD 0.9 Nesterov
    specs = grid(config, "cpu", methods=["synflow", "deepr"], densities=[10], seeds=[21])
    with pytest.raises(UserError, match=r"resnet20_cifar10/deepr/d10/s21 .*plain SGD"):
        sweep(config, specs, root=tmp_path, jobs=1)
    assert not list(tmp_path.rglob("run.json"))


@pytest.mark.parametrize("native", [True, False])
def test_precision_defaults_follow_the_cpu(monkeypatch, native):
    """bf16 autocast only where oneDNN has bf16 kernels (emulated it is 14x slower); NHWC for
    conv nets on CPU either way; FC nets stay fp32; explicit settings always win."""
    import importlib

    import torch

    import models
    train = importlib.import_module("utils.engine.train")  # the module; ``utils.engine.train`` is the API function
    monkeypatch.setattr(train, "cpu_has_native_bf16", lambda: native)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    resnet, fc, default = models.build_model("resnet20"), models.build_model("fc"), train.TrainConfig()
    assert train.use_bf16(resnet, default, cpu) is native
    assert train.use_channels_last(resnet, default, cpu) is True
    assert train.use_bf16(fc, default, cpu) is False and train.use_channels_last(fc, default, cpu) is False
    assert train.use_bf16(resnet, default, cuda) is False and train.use_channels_last(resnet, default, cuda) is False
    forced = train.TrainConfig(bf16=not native, channels_last=False)
    assert train.use_bf16(resnet, forced, cpu) is (not native)
    assert train.use_channels_last(resnet, forced, cpu) is False
    assert train.use_channels_last(resnet, train.TrainConfig(bf16=True), cuda) is True


SAPPHIRE_RAPIDS = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz\n"
                   "flags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile\n")


@pytest.mark.parametrize("cpuinfo,capability,expected", [
    (SAPPHIRE_RAPIDS, "AVX512", "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz (AVX512, amx_bf16)"),
    ("model name : AMD EPYC 9B14\nflags : avx2 avx512f avx512_bf16\n", "AVX512", "AMD EPYC 9B14 (AVX512, avx512_bf16)"),
    ("model name : AMD EPYC 7B13\nflags : avx2 fma\n", "AVX2", "AMD EPYC 7B13 (AVX2)"),
])
def test_the_cpu_description_names_the_model_the_isa_and_the_bf16_kernels(cpuinfo, capability, expected):
    """AMX wins over AVX-512 bf16 when a CPU has both (oneDNN uses AMX); no bf16 flag, no suffix."""
    from utils.engine.train import cpu_description
    assert cpu_description(cpuinfo, capability) == expected


def test_training_segments_join_on_one_device_and_keep_the_order():
    """A call killed on A after 18 epochs and finished on B; a legacy checkpoint's unknown device."""
    from utils.engine.train import trained_on
    assert trained_on([], "A", 18) == [["A", 18]]
    assert trained_on([["A", 18]], "B", 42) == [["A", 18], ["B", 42]]
    assert trained_on([["A", 18], ["B", 3]], "B", 4) == [["A", 18], ["B", 7]]
    assert trained_on([[None, 16]], "B", 44) == [[None, 16], ["B", 44]]
    assert trained_on([["A", 5]], "B", 0) == [["A", 5]]
    earlier = [["A", 18]]
    trained_on(earlier, "A", 2)
    assert earlier == [["A", 18]]                   # the restored state is not changed in place


def test_evaluation_batch_defaults_follow_the_model_and_device():
    """64 for conv nets on CPU (2.2x faster per image than 1000: benchmarks/bench_evaluation.py),
    1000 for FC nets and on other devices; an explicit size always wins."""
    import importlib

    import models
    train = importlib.import_module("utils.engine.train")
    resnet, fc = models.build_model("resnet20"), models.build_model("fc")
    assert train.eval_batch_size(resnet, "cpu") == 64 and train.eval_batch_size(fc, "cpu") == 1000
    assert train.eval_batch_size(resnet, "cuda") == 1000
    assert train.eval_batch_size(resnet, "cpu", requested=250) == 250


def test_the_evaluation_batch_changes_neither_results_nor_recipe_nor_checkpoint_key(tmp_path):
    """Top-1/top-5 are exact at any batch size (loss to float rounding), and the recipe digest and
    the checkpoint key leave the evaluation batch out, so a run resumes under another one."""
    import importlib

    import torch

    import models
    from utils.engine import checkpoint
    from utils.engine.data import DATASETS, Dataset
    from utils.engine.seeding import seed_init
    from utils.runs.experiment import grid, load_config, recipe_record, run_settings
    train = importlib.import_module("utils.engine.train")
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (300, 3, 32, 32), generator=gen, dtype=torch.uint8)
    y = torch.randint(0, 10, (300,), generator=gen)
    data = Dataset(DATASETS["cifar10"], x, y, x, y)
    seed_init(21)
    model = models.build_model("resnet20")
    by_batch = [train.evaluate(model, x, y, data, b, channels_last=True) for b in (37, 64, 1000)]
    for other in by_batch[1:]:
        assert (other["top1"], other["top5"]) == (by_batch[0]["top1"], by_batch[0]["top5"])
        assert other["loss"] == pytest.approx(by_batch[0]["loss"], rel=1e-5)

    config = load_config("resnet20_cifar10")
    spec = grid(config, "cpu", methods=["synflow"], densities=[10], seeds=[21])[0]
    settings = run_settings(spec, config)
    digests = set()
    for size in (None, 64, 1000):
        settings.train.eval_batch_size = size
        digests.add(recipe_record("cpu", config["profiles"]["cpu"], settings)["settings_sha256"])
        assert "eval_batch_size" in settings.train.to_dict()           # run.json still records it
    assert len(digests) == 1

    small = Dataset(DATASETS["cifar10"], x[:8], y[:8], x[:8], y[:8])
    seed_init(21)
    model = models.build_model("resnet20")
    with checkpoint.resume_from(tmp_path, every_s=0):
        first = train.train(model, small, train.TrainConfig(epochs=1, batch_size=4, eval_batch_size=3),
                            seed=1, progress=False)
    seed_init(21)
    again = models.build_model("resnet20")
    with checkpoint.resume_from(tmp_path, every_s=0) as scope:
        history = train.train(again, small, train.TrainConfig(epochs=1, batch_size=4, eval_batch_size=5),
                              seed=1, progress=False)
    assert [r["epochs"] for r in scope.restored] == [1]
    pd_cols = ["epoch", "train_loss", "top1"]
    assert history[pd_cols].equals(first[pd_cols]) and torch.equal(again.fc.weight, model.fc.weight)


def _recipe_search():
    from utils.runs.experiment import load_config
    config = load_config("resnet20_cifar10")
    return config, config["recipe_search"]


@pytest.mark.parametrize("entry", _recipe_search()[1], ids=lambda e: e["recipe"])
def test_each_recorded_validation_run_agrees_with_its_own_curve(entry):
    """The recipe search's summary numbers are read off its per-epoch validation curve: one value
    per epoch of the recipe, the final value last, and the stored runs' convergence measure."""
    import pandas as pd

    from utils.runs.results import gain_last_fifth
    epochs = int(re.search(r"(\d+) epochs", entry["recipe"]).group(1))
    val = entry["val"]
    assert len(val) == epochs
    assert entry["final_val"] == val[-1]
    curve = pd.DataFrame({"train_loss": [1.0] * epochs, "top1": val})
    assert entry["gain_last_fifth"] == pytest.approx(gain_last_fifth(curve), abs=1e-9)


def test_the_cpu_profile_is_one_of_the_recorded_validation_runs():
    config, search = _recipe_search()
    train = config["profiles"]["cpu"]["train"]
    chosen = (f"{train['schedule']} ×{train['gamma']} at {'/'.join(map(str, train['milestones']))}, "
              f"lr {train['lr']}, {train['epochs']} epochs")
    assert chosen in [e["recipe"] for e in search]
