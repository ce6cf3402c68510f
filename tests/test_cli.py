"""CLI: bad input gets one line and exit code 2 with nothing left on disk; the end-to-end smoke."""
import json
import shutil

import pytest
import torch

from utils.cli import main
from utils.engine import data as D
from utils.engine.train import device_name
from utils.runs import results


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, pattern):
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and pattern in lines[0], err


COMMANDS = ["train", "sweep", "runs", "verify", "compact", "import-thesis", "compare-thesis", "summary"]


def test_the_command_list_is_every_subcommand():
    import argparse

    from utils.cli import build_parser
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert sorted(sub.choices) == sorted(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_every_command(capsys, command):
    # argparse %-formats help strings: a bare "%" in one crashes --help with a TypeError
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m utils.cli {command}")
    if command == "train":
        assert "% of weights remaining, in (0, 100]" in out


TRAIN = ["train", "--experiment", "fc_mnist", "--method", "random", "--density", "50", "--seed", "21"]


@pytest.mark.parametrize("change,pattern", [
    ({"--experiment": "nope"}, "unknown experiment 'nope'"),
    ({"--method": "nope"}, "unknown method 'nope'"),
    ({"--density": "0"}, "density must be in (0, 100]"),
    ({"--density": "-5"}, "density must be in (0, 100]"),
    ({"--density": "100.5"}, "density must be in (0, 100]"),
    ({"--density": "abc"}, "density must be a number"),
    ({"--profile": "nope"}, "unknown profile 'nope'"),
    ({"--epochs": "0"}, "epochs must be at least 1, got 0"),
    ({"--train-subset": "-5"}, "train subset must be at least 1, got -5"),
    ({"--test-subset": "0"}, "test subset must be at least 1, got 0"),
    ({"--validation": "0"}, "validation must be at least 1, got 0"),
])
def test_bad_train_arguments(capsys, tmp_path, change, pattern):
    argv = list(TRAIN)
    for key, value in change.items():
        if key in argv:
            argv[argv.index(key) + 1] = value
        else:
            argv += [key, value]
    code, _, err = run_cli(capsys, *argv, "--results", tmp_path / "res", "--data-dir", tmp_path)
    assert_one_line_error(code, err, pattern)
    assert not (tmp_path / "res").exists() or not list((tmp_path / "res").rglob("run.json"))


def test_missing_and_truncated_data(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(D, "_download", lambda url, dest: (_ for _ in ()).throw(OSError("offline")))
    code, _, err = run_cli(capsys, *TRAIN, "--data-dir", tmp_path, "--results", tmp_path / "res")
    assert_one_line_error(code, err, "train-images-idx3-ubyte.gz")
    from test_data import write_tiny_mnist
    write_tiny_mnist(tmp_path, gz=False)
    path = tmp_path / "mnist" / "train-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes()[:-3])
    code, _, err = run_cli(capsys, *TRAIN, "--data-dir", tmp_path, "--results", tmp_path / "res")
    assert_one_line_error(code, err, "truncated")
    assert not list((tmp_path / "res").rglob("run.json"))


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_sweep_without_its_dataset_is_one_data_error_before_any_task(capsys, tmp_path, monkeypatch, jobs):
    """Offline with no MNIST on disk: one line naming the missing file (not a failed task per run)."""
    monkeypatch.setattr(D, "_download", lambda url, dest: (_ for _ in ()).throw(OSError("offline")))
    code, out, err = run_cli(capsys, "sweep", "fc_mnist", "--methods", "random", "--densities", "10,50",
                             "--seeds", "21", "--jobs", jobs, "--data-dir", tmp_path, "--results", tmp_path / "res")
    assert_one_line_error(code, err, "train-images-idx3-ubyte.gz is missing and could not be downloaded")
    assert "task(s) failed" not in err and not list((tmp_path / "res").rglob("run.json"))


def test_train_grid_without_its_dataset_says_so_and_trains_nothing(capsys, tmp_path, monkeypatch):
    """The train_grid notebook's call: offline it prints one line and returns, so `make figures` runs on."""
    from utils import api
    from utils.runs import experiment
    monkeypatch.setattr(D, "_download", lambda url, dest: (_ for _ in ()).throw(OSError("offline")))
    monkeypatch.setenv("SPARSE_DATA_DIR", str(tmp_path))
    config = experiment.load_config("fc_mnist")
    specs = experiment.grid(config, "smoke", ["random", "synflow"], [50], [21])
    assert api.train_grid(config, specs, tmp_path / "res", epochs=1, max_runs=2) == []
    assert capsys.readouterr().out.startswith("no dataset available, nothing trained: mnist: ")


def test_unknown_sweep_config(capsys, tmp_path):
    code, _, err = run_cli(capsys, "sweep", tmp_path / "missing.yaml")
    assert_one_line_error(code, err, "does not exist")


def test_bad_values_fail_before_an_already_stored_run_is_reported(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("utils.runs.experiment.is_done", lambda spec, root: True)
    code, _, err = run_cli(capsys, *TRAIN, "--epochs", "-3", "--results", tmp_path / "res")
    assert_one_line_error(code, err, "epochs must be at least 1, got -3")


@pytest.mark.parametrize("filters,pattern", [
    (["--densities", "0"], "fc_mnist has no density 0 %; its grid has: 2 %, 5 %, 7 %, 10 %, 20 %, 50 %, 100 %"),
    (["--densities", "2,3"], "fc_mnist has no density 3 %"),
    (["--methods", "random,nope"], "fc_mnist has no method nope; its grid has: deepr, dense, dnw, gem-miner,"),
    (["--seeds", "21,1"], "fc_mnist has no seed 1; its grid has: 21, 42, 63"),
    (["--epochs", "0"], "epochs must be at least 1, got 0"),
])
def test_sweep_filters_outside_the_grid_are_errors_not_empty_sweeps(capsys, tmp_path, filters, pattern):
    code, out, err = run_cli(capsys, "sweep", "fc_mnist", *filters, "--dry-run", "--results", tmp_path / "res")
    assert_one_line_error(code, err, pattern)
    assert out == ""


def test_sweep_filters_inside_the_grid(capsys, tmp_path):
    # random-fc's only density is 7 %, in the grid through extra_runs
    code, out, _ = run_cli(capsys, "sweep", "fc_mnist", "--methods", "random-fc", "--densities", "7",
                           "--seeds", "42", "--dry-run", "--results", tmp_path / "res")
    assert code == 0 and out.splitlines()[0] == "todo  fc_mnist/random-fc/d7/s42"


@pytest.mark.parametrize("command", ["summary", "verify", "runs", "compact"])
def test_store_commands_need_an_existing_store(capsys, tmp_path, command):
    code, _, err = run_cli(capsys, command, "--results", tmp_path / "missing")
    assert_one_line_error(code, err, f"no runs store at {tmp_path / 'missing'}")
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize("command", ["summary", "verify", "runs", "compact"])
def test_store_commands_default_to_the_repository_store(capsys, tmp_path, monkeypatch, command):
    monkeypatch.setattr("utils.runs.results.DEFAULT_ROOT", tmp_path / "default")
    code, _, err = run_cli(capsys, command)
    assert_one_line_error(code, err, f"no runs store at {tmp_path / 'default'}")


def test_runs_of_an_empty_store(capsys, tmp_path):
    assert run_cli(capsys, "runs", "--results", tmp_path) == (0, f"no stored runs under {tmp_path}\n", "")


def test_compare_thesis_without_our_runs_writes_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("utils.runs.thesis.is_imported", lambda root: True)
    code, _, err = run_cli(capsys, "compare-thesis", "--results", tmp_path, "--thesis", tmp_path / "t")
    assert_one_line_error(code, err, f"no stored runs under {tmp_path} to compare with the thesis's")
    assert list(tmp_path.iterdir()) == []
    code, _, err = run_cli(capsys, "compare-thesis", "--results", tmp_path / "missing", "--thesis", tmp_path / "t")
    assert_one_line_error(code, err, f"no runs store at {tmp_path / 'missing'}")


def test_summary_of_a_directory_without_runs_writes_nothing(capsys, tmp_path):
    (tmp_path / "README.md").write_text("a user's own file")
    code, _, err = run_cli(capsys, "summary", "--results", tmp_path)
    assert_one_line_error(code, err, "no stored runs under")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md"]
    assert (tmp_path / "README.md").read_text() == "a user's own file"


@pytest.mark.parametrize("flag", ["--jobs", "--threads"])
def test_sweep_rejects_non_positive_parallelism(capsys, tmp_path, flag):
    code, _, err = run_cli(capsys, "sweep", "fc_mnist", flag, "0", "--results", tmp_path / "res",
                           "--data-dir", tmp_path)
    assert_one_line_error(code, err, f"{flag} must be at least 1")
    assert not (tmp_path / "res").exists()


@pytest.fixture(scope="module")
def smoke_run(real_data_dir, tmp_path_factory):
    """A random-pruned FC at 50 %, trained on 5k MNIST images for 2 epochs (smoke profile), stored."""
    root = tmp_path_factory.mktemp("results")
    code = main(TRAIN + ["--profile", "smoke", "--train-subset", "5000", "--data-dir", str(real_data_dir),
                         "--results", str(root), "--quiet"])
    assert code == 0
    return root


def test_end_to_end_smoke(smoke_run, capsys):
    run = results.load_run("fc_mnist", "random", 0.5, 21, smoke_run)
    assert run.history["top1"].iloc[-1] > 80.0
    assert len(run.history) == 3 and run.history["epoch"].tolist() == [0, 1, 2]
    assert run.info["density_achieved"] == pytest.approx(59_842 / 119_400)
    assert run.info["config"]["overrides"] == {"train_subset": 5000}
    assert run.info["profile"] == "smoke" and run.info["config"]["train"]["epochs"] == 2
    assert results.load_probe("mnist", smoke_run)[0].shape == (600, 1, 28, 28)
    here = device_name(torch.device("cpu"))
    assert run.info["compute"] == {"device": "cpu", "device_name": here, "threads": 1, "bf16": False,
                                   "channels_last": False}
    assert run.precision() == (False, False)
    code, out, _ = run_cli(capsys, *TRAIN, "--profile", "smoke", "--results", smoke_run)
    assert code == 0 and "already stored" in out


def test_same_command_gives_the_same_numbers(smoke_run, real_data_dir, tmp_path):
    """Retraining a stored run with the same command (same seed, same thread count) reproduces
    its history and its weights bit for bit."""
    import torch
    before = torch.get_num_threads()
    root = tmp_path / "again"
    assert main(TRAIN + ["--profile", "smoke", "--train-subset", "5000", "--data-dir", str(real_data_dir),
                         "--results", str(root), "--quiet"]) == 0
    assert torch.get_num_threads() == before           # the run's thread count does not leak
    old = results.run_dir("fc_mnist", "random", 0.5, 21, smoke_run)
    new = results.run_dir("fc_mnist", "random", 0.5, 21, root)
    for name in ("final.safetensors", "init.safetensors"):
        assert (new / name).read_bytes() == (old / name).read_bytes(), name
    columns = ["epoch", "train_loss", "test_loss", "top1", "top5", "density"]
    a, b = results.load_run_dir(old).history, results.load_run_dir(new).history
    assert a[columns].equals(b[columns])


def test_verify_detects_tampering_and_versions(smoke_run, capsys, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(smoke_run, root)
    code, out, _ = run_cli(capsys, "verify", "--results", root)
    assert code == 0 and "1 stored run(s) verified" in out
    run_path = results.run_dir("fc_mnist", "random", 0.5, 21, root)
    history = run_path / "history.csv"
    history.write_text(history.read_text().replace("train", "trian", 1))
    code, _, err = run_cli(capsys, "verify", "--results", root)
    assert_one_line_error(code, err, "history.csv fails its sha256 check")
    shutil.rmtree(root)
    shutil.copytree(smoke_run, root)
    record = json.loads((run_path / "run.json").read_text())
    record["format_version"] = 0
    (run_path / "run.json").write_text(json.dumps(record))
    code, _, err = run_cli(capsys, "verify", "--results", root)
    assert_one_line_error(code, err, "format version 0")


def test_verify_evaluate_gets_each_runs_top1_back(smoke_run, real_data_dir, capsys):
    """``verify --evaluate``: the stored run, evaluated afresh on the test set it recorded, gives
    its recorded top-1 back, to the hundredth."""
    run_path = results.run_dir("fc_mnist", "random", 0.5, 21, smoke_run)
    recorded = results.load_run_dir(run_path).history["top1"].iloc[-1]
    code, out, _ = run_cli(capsys, "verify", "--evaluate", "--data-dir", real_data_dir, "--results", smoke_run,
                           "--quiet")
    assert code == 0
    assert out.splitlines() == [f"{run_path}: recorded {recorded:.2f}, fresh {recorded:.2f} (+0.00 pt, fp32)",
                                f"1 stored run(s) verified under {smoke_run}; 1 evaluate to their record within 0.1 pt"]
    code, out, _ = run_cli(capsys, "verify", run_path)
    assert code == 0 and out == "1 stored run(s) verified\n"


def test_verify_evaluate_fails_a_run_off_its_record(smoke_run, real_data_dir, capsys, monkeypatch):
    """A run whose fresh top-1 is off its record by more than the tolerance: exit 1, named."""
    from utils.runs import reevaluate
    monkeypatch.setattr(reevaluate, "reevaluate", lambda run, data: reevaluate.Reevaluation(90.0, 89.8, False))
    run_path = results.run_dir("fc_mnist", "random", 0.5, 21, smoke_run)
    code, out, err = run_cli(capsys, "verify", "--evaluate", "--data-dir", real_data_dir, run_path, "--quiet")
    assert code == 1 and f"{run_path}: recorded 90.00, fresh 89.80 (-0.20 pt, fp32)  OFF" in out
    assert err == f"error: 1 run(s) off their recorded top-1 by more than 0.1 pt: {run_path}\n"
    code, out, _ = run_cli(capsys, "verify", "--evaluate", "--data-dir", real_data_dir, run_path, "--quiet",
                           "--tolerance", "0.25")
    assert code == 0 and out.endswith("1 evaluate to their record within 0.25 pt\n")


@pytest.mark.parametrize("argv,pattern", [
    (["verify", "{tmp}/nowhere"], "not a stored run (no run.json): {tmp}/nowhere"),
    (["verify", "--results", "{tmp}/nowhere"], "no runs store at {tmp}/nowhere"),
    (["verify", "--tolerance", "-1", "--results", "{tmp}"], "tolerance must be at least 0, got -1.0"),
])
def test_bad_verify_arguments(capsys, tmp_path, argv, pattern):
    code, _, err = run_cli(capsys, *[a.format(tmp=tmp_path) for a in argv])
    assert_one_line_error(code, err, pattern.format(tmp=tmp_path))


def test_reevaluation_refuses_another_copy_of_the_test_set(smoke_run, real_data_dir):
    """A stored run is evaluated only on the test arrays it recorded: one changed pixel is
    another copy, named with both digests."""
    from utils.runs.reevaluate import recorded_test_data, reevaluate
    run = results.load_run_dir(results.run_dir("fc_mnist", "random", 0.5, 21, smoke_run))
    mnist = D.load_dataset("mnist", real_data_dir, download=False)
    assert recorded_test_data(run, mnist) is mnist
    changed = mnist.test_x.clone()
    changed[0, 0, 0, 0] ^= 1
    from dataclasses import replace
    with pytest.raises(D.DataError, match=r"the run was tested on official \(test digest [0-9a-f]{16}\); "
                                          r"the data given is official \(test digest [0-9a-f]{16}\)"):
        reevaluate(run, replace(mnist, test_x=changed))


@pytest.mark.parametrize("method", ["synflow", "deepr"])
def test_resnet_path_end_to_end_on_tiny_cifar(capsys, tmp_path, method):
    """ResNet-20 through the same runner: prune (SynFlow) or rewire (DEEPR, channels_last convs),
    bf16 training, store, load (tiny CIFAR fixture)."""
    from test_data import write_tiny_cifar
    write_tiny_cifar(tmp_path / "data", n=8)
    root = tmp_path / "res"
    code, out, err = run_cli(capsys, "train", "--experiment", "resnet20_cifar10", "--method", method,
                             "--density", "10", "--seed", "21", "--profile", "smoke", "--data-dir",
                             tmp_path / "data", "--results", root, "--quiet")
    assert code == 0, err
    run = results.load_run("resnet20_cifar10", method, 0.1, 21, root)
    assert run.info["density_achieved"] == pytest.approx(10 ** -1.0, abs=1e-5)
    assert run.info["config"]["train"]["epochs"] == 1 and len(run.history) == 2
    assert results.load_probe("cifar10", root)[0].shape == (8, 3, 32, 32)


def test_jpeg_quality_trains_on_the_reencoded_copy_and_records_it(capsys, tmp_path):
    """--jpeg-quality re-encodes train and test images before training; run.json names the copy,
    its PSNR and the digests of the re-encoded arrays; a quality out of range is one line."""
    from test_data import write_tiny_cifar
    write_tiny_cifar(tmp_path / "data", n=4)
    root = tmp_path / "res"
    argv = ["train", "--experiment", "resnet20_cifar10", "--method", "dense", "--density", "100", "--seed", "21",
            "--profile", "smoke", "--data-dir", tmp_path / "data", "--results", root, "--quiet"]
    code, _, err = run_cli(capsys, *argv, "--jpeg-quality", "0")
    assert_one_line_error(code, err, "JPEG quality must be in [1, 95], got 0")
    assert not list(root.rglob("run.json"))
    code, _, err = run_cli(capsys, *argv, "--jpeg-quality", "30")
    assert code == 0, err
    record = results.load_run("resnet20_cifar10", "dense", 1.0, 21, root).info
    expected = D.load_cifar10(tmp_path / "data", download=False).reencoded(30)
    assert record["config"]["overrides"] == {"jpeg_quality": 30}
    assert record["data"] == expected.provenance()
    assert record["data"]["copy"] == "unknown re-encoded at q30" and record["data"]["reencoding"]["quality"] == 30
    assert record["data"]["train_sha256"] != D.load_cifar10(tmp_path / "data", download=False).digest()["train"]


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_failing_run_is_reported_when_it_fails_and_the_sweep_goes_on(real_data_dir, tmp_path, capsys,
                                                                       monkeypatch, jobs):
    """One run crashes (here: an injected bug; the workers are forked, so they see it too): its
    error is printed as it happens, every other run still trains and is stored, and the sweep
    exits 2 naming the failed run (with a process pool its exception used to wait for the queue)."""
    from utils.runs import experiment

    real = experiment.execute

    def crashing(spec, *args, **kwargs):
        if spec.seed == 42 and spec.density == 0.5:
            raise RuntimeError("injected crash")
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(experiment, "execute", crashing)
    monkeypatch.setenv("SPARSE_NUM_THREADS", "1")
    code, out, err = run_cli(capsys, "sweep", "fc_mnist", "--methods", "random", "--densities", "10,50",
                             "--seeds", "21,42", "--epochs", "1", "--train-subset", "2000", "--test-subset", "500",
                             "--jobs", jobs, "--batch-runs", 1, "--data-dir", real_data_dir, "--results", tmp_path,
                             "--quiet")
    assert code == 2
    assert "error: fc_mnist/random/d50/s42 failed" in err and "RuntimeError: injected crash" in err
    assert err.strip().splitlines()[-1] == ("error: 1 task(s) failed (fc_mnist/random/d50/s42); every other run is "
                                            "stored; rerun the same command to retry them")
    assert sorted(results.runs(tmp_path)[["density", "seed"]].itertuples(index=False, name=None)) == \
        [(0.1, 21), (0.1, 42), (0.5, 21)]
    assert not list(tmp_path.rglob("*.claim"))


def test_merging_a_comparison_keeps_the_other_experiments_rows():
    """Rows of experiments not compared again stay (gaining new columns empty), also when this
    comparison found nothing; rows of a table with other columns are dropped."""
    import pandas as pd

    from utils.cli import _merged
    kept = pd.DataFrame({"experiment": ["fc_mnist"], "top1": [97.0]})
    new = pd.DataFrame({"experiment": ["resnet20_cifar10"], "top1": [80.0], "ours_digest": ["ab"]})
    merged = _merged(kept, new)
    assert merged["experiment"].tolist() == ["fc_mnist", "resnet20_cifar10"] and merged["top1"].tolist() == [97.0, 80.0]
    assert merged["ours_digest"].isna().tolist() == [True, False]
    assert _merged(kept, pd.DataFrame()) is kept
    assert _merged(kept.assign(gone=1), new) is new
    assert _merged(None, new) is new
