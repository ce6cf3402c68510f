"""Run claims: concurrent sweeps on one store train each run once; a killed sweep's claims are
taken over and the sweep resumes."""
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT

from utils.runs import results
from utils.runs.claims import claim_path, claim_run, holder, is_claimed

HOLD = ("import sys, time; from utils.runs.claims import claim_run\n"
        "with claim_run(sys.argv[1]) as held:\n"
        "    print('held' if held else 'refused', flush=True); time.sleep(60)\n")


def test_a_claim_is_exclusive_and_released(tmp_path):
    run = tmp_path / "fc_mnist" / "random" / "d10" / "s21"
    with claim_run(run) as first:
        assert first is True
        assert claim_path(run) == run.parent / ".s21.claim" and claim_path(run).is_file()
        assert holder(run)["pid"] == os.getpid()
        with claim_run(run) as second:       # another open file description: refused
            assert second is False
        assert is_claimed(run)               # the refused attempt did not release the claim
    assert not claim_path(run).exists() and holder(run) is None
    with claim_run(run) as again:
        assert again is True


def test_a_claim_of_a_killed_process_is_taken_over(tmp_path):
    """kill -9 leaves the claim file behind, but the kernel drops the lock with the process."""
    run = tmp_path / "d10" / "s21"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        assert holder(run)["pid"] == proc.pid
        with claim_run(run) as held:
            assert held is False
        # a half-written directory of a claimed run is being written: clean_partial keeps it
        tmp = run.parent / ".s21.tmp-abc"
        tmp.mkdir()
        dead = run.parent / ".s42.tmp-def"
        dead.mkdir()
        assert results.clean_partial(tmp_path) == 1 and tmp.is_dir() and not dead.exists()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert claim_path(run).is_file() and holder(run) is None
    with claim_run(run) as held:
        assert held is True
    assert results.clean_partial(tmp_path) == 1
    claim_path(run).touch()                  # a claim file nobody holds (kill -9) is cleaned up
    results.clean_partial(tmp_path)
    assert not claim_path(run).exists()


def _sweep_command(data_dir, root, seeds="21,42", batch_runs=1):
    return [sys.executable, "-m", "utils.cli", "sweep", "fc_mnist", "--methods", "random",
            "--densities", "10,50", "--seeds", seeds, "--epochs", "1", "--train-subset", "2000",
            "--test-subset", "500", "--jobs", "1", "--batch-runs", str(batch_runs), "--data-dir", str(data_dir),
            "--results", str(root), "--quiet"]


def _trained(output: str) -> int:
    line = next(line for line in output.splitlines() if "run(s) trained" in line)
    return int(line.split()[0])


def _env():
    return {**os.environ, "SPARSE_NUM_THREADS": "1"}


@pytest.mark.parametrize("batch_runs", [1, 8])
def test_two_concurrent_sweeps_train_each_run_once(real_data_dir, tmp_path, batch_runs):
    """Alone (1) or batched (8: the first sweep claims the whole group of 4)."""
    procs = [subprocess.Popen(_sweep_command(real_data_dir, tmp_path, batch_runs=batch_runs), cwd=ROOT, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
    counts = [_trained(out) for out, _ in outputs]
    assert sum(counts) == 4, counts                 # 2 densities x 2 seeds, each trained once
    table = results.runs(tmp_path)
    assert len(table) == 4 and not list(tmp_path.rglob("*.claim"))


def test_a_sweep_killed_mid_run_resumes_without_retraining(real_data_dir, tmp_path):
    kill_after = 1                                   # runs stored before the kill
    command = _sweep_command(real_data_dir, tmp_path, seeds="21,42,63")
    proc = subprocess.Popen(command, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while len(list(tmp_path.rglob("run.json"))) < kill_after and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stored = len(list(tmp_path.rglob("run.json")))
    assert kill_after <= stored < 6
    again = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert _trained(again.stdout) == 6 - stored     # the stored runs are not trained again
    assert len(results.runs(tmp_path)) == 6 and not list(tmp_path.rglob("*.tmp-*"))
    assert not list(tmp_path.rglob("*.claim"))
