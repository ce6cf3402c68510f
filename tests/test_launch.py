"""Scale-out with submitit (utils/runs/launch.py): local-executor end-to-end, resubmission, Slurm options."""
import subprocess
import sys

from utils.cli import main as cli_main
from utils.runs import launch, results
from utils.runs.experiment import Overrides, RunSpec, load_config

GRID = ["fc_mnist", "--profile", "smoke", "--methods", "random", "--densities", "50", "--seeds", "21,42",
        "--epochs", "1", "--train-subset", "2000", "--test-subset", "1000", "--quiet"]


def test_submitit_local_sweep_and_resubmit(real_data_dir, tmp_path, capsys):
    """Two FC runs (1 epoch, 2k images) through submitit's local executor; resubmitting submits nothing."""
    root, jobs_dir = tmp_path / "res", tmp_path / "jobs"
    argv = GRID + ["--data-dir", str(real_data_dir), "--results", str(root), "--submitit-dir", str(jobs_dir),
                   "--submitit-cluster", "local", "--cpus-per-run", "1", "--timeout-min", "10", "--wait"]
    assert cli_main(["sweep", *argv, "--launcher", "submitit"]) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert "2 job(s) submitted to local" in out
    for seed in (21, 42):
        run = results.load_run("fc_mnist", "random", 0.5, seed, root)   # verifies checksums
        assert run.history["epoch"].tolist() == [0, 1]
        assert run.info["profile"] == "smoke" and run.info["seed"] == seed
        assert run.info["config"]["overrides"] == {"epochs": 1, "train_subset": 2000, "test_subset": 1000}
    assert len(results.runs(root)) == 2 and (root / "summary.csv").is_file()
    ledger = launch.read_ledger(jobs_dir)
    assert sorted(e["label"] for e in ledger.values()) == ["fc_mnist/random/d50/s21", "fc_mnist/random/d50/s42"]

    assert cli_main(["sweep", *argv, "--launcher", "submitit"]) == 0
    assert "0 job(s) submitted; 2 run(s) already stored, 0 in flight" in capsys.readouterr().out
    assert len(launch.read_ledger(jobs_dir)) == 2 and sum(1 for _ in (jobs_dir / launch.LEDGER).open()) == 2

    # A job that starts after its run was stored (e.g. by a local sweep) returns at once.
    spec = RunSpec("fc_mnist", "random", 0.5, 21, "smoke")
    out = launch.run_job(spec, load_config("fc_mnist"), data_dir=None, root=str(root),
                         overrides=Overrides(), threads=1)
    assert out["status"] == "already stored"


def test_in_flight_jobs_are_not_resubmitted(tmp_path):
    """A ledger entry whose local controller is alive counts as in flight; a dead one does not."""
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "submitit"])
    dead = subprocess.Popen([sys.executable, "-c", "pass", "submitit"])
    dead.wait()
    try:
        entries = [{"key": "a", "cluster": "local", "job_id": str(alive.pid)},
                   {"key": "b", "cluster": "local", "job_id": str(dead.pid)},
                   {"key": "c", "cluster": "debug", "job_id": "0"}]
        assert launch.in_flight(entries) == {"a"}
    finally:
        alive.kill()
        alive.wait()


def _fake_slurm(bin_dir, states: dict[str, str]):
    """``srun``/``sbatch``/``sacct`` stand-ins: sbatch copies its script and prints a job id."""
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(f"#!/bin/sh\ncp \"$1\" {bin_dir}/last.sbatch\necho 'Submitted batch job 4242'\n")
    rows = "\\n".join(f"{k}|{v}|node1" for k, v in states.items())
    (bin_dir / "sacct").write_text(f"#!/bin/sh\nprintf 'JobID|State|NodeList\\n{rows}\\n'\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)


def test_slurm_array_options_and_in_flight(tmp_path, monkeypatch, capsys):
    """--partition etc. become one sbatch array; a resubmission skips the jobs sacct lists as running."""
    bin_dir, root = tmp_path / "bin", tmp_path / "res"
    _fake_slurm(bin_dir, {"4242_0": "RUNNING", "4242_1": "PENDING", "4242_2": "FAILED"})
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    monkeypatch.setattr(launch, "_prepare_data", lambda config, data_dir, root, overrides: "/data")
    argv = ["fc_mnist", "--profile", "smoke", "--methods", "random", "--densities", "50",
            "--seeds", "21,42,63", "--results", str(root), "--launcher", "submitit", "--partition", "gpu",
            "--gpus-per-run", "1", "--cpus-per-run", "4", "--timeout-min", "90",
            "--slurm-array-parallelism", "2"]
    assert cli_main(["sweep", *argv, "--launcher", "submitit"]) == 0
    assert "3 job(s) submitted to slurm" in capsys.readouterr().out
    script = (bin_dir / "last.sbatch").read_text()
    for line in ("--array=0-2%2", "--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=4",
                 "--time=90", "--job-name=sna-fc_mnist"):
        assert f"#SBATCH {line}" in script
    ledger = launch.read_ledger(root / launch.DEFAULT_DIR)
    assert sorted(e["job_id"] for e in ledger.values()) == ["4242_0", "4242_1", "4242_2"]

    # Resubmit: jobs 0 and 1 are still queued/running, job 2 failed -> only its run goes again.
    assert cli_main(["sweep", *argv, "--launcher", "submitit"]) == 0
    out = capsys.readouterr().out
    assert out.count("in flight  ") == 2 and "1 job(s) submitted to slurm" in out
    script = (bin_dir / "last.sbatch").read_text()
    assert "--array" not in script and "#SBATCH --partition=gpu" in script   # one job: no array
    assert launch.read_ledger(root / launch.DEFAULT_DIR)[
        f"{root.resolve()}::fc_mnist/random/d50/s63"]["job_id"] == "4242"
