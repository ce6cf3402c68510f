"""Scale a sweep out with submitit: one job per run not yet stored (a Slurm job array).

    python -m utils.cli sweep resnet20_cifar10 --launcher submitit --partition gpu \\
        --gpus-per-run 1 --cpus-per-run 4 --timeout-min 240 --slurm-array-parallelism 16

Every job calls :func:`utils.runs.experiment.execute` for one :class:`~utils.runs.experiment.RunSpec`
and writes into the same runs store as a local sweep (``--results``), so local and
cluster runs mix freely.  Resubmitting the same command is safe:

* runs already stored (:func:`~utils.runs.experiment.is_done`) are not submitted;
* runs whose job from an earlier submission is still pending or running are not
  submitted again (submissions are recorded in ``<submitit-dir>/submitted.jsonl``; Slurm
  states come from one ``sacct`` call);
* a job that starts and finds its run stored (e.g. done meanwhile by a local sweep)
  returns at once with exit code 0.

Without ``--wait`` the command returns after submitting; run ``python -m utils.cli
summary`` when the array is done (each job also refreshes ``summary.csv``).

``--submitit-cluster local`` runs the jobs as local processes through submitit (all
at once: it has no array throttling), for testing; for real local work use
``--launcher local --jobs N``.  ``debug`` runs them one by one in this process.
"""
from __future__ import annotations

import argparse
import functools
import json
import shutil
import sys
import time
from pathlib import Path

from utils.runs import results

DEFAULT_DIR = ".submitit"   # inside the runs store, which every job must see anyway
LEDGER = "submitted.jsonl"
# submitit/Slurm states after which a job will not write its run any more.
FINISHED_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
                   "PREEMPTED", "BOOT_FAIL", "DEADLINE", "FINISHED", "INTERRUPTED", "DONE"}


def add_launcher_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--launcher`` and the submitit options to the ``sweep`` parser."""
    g = parser.add_argument_group("launcher (scale-out)")
    g.add_argument("--launcher", choices=("local", "submitit"), default="local",
                   help="local: this machine, --jobs at a time (default); submitit: one job per run "
                        "not yet stored (Slurm job array)")
    g.add_argument("--partition", help="Slurm partition (implies --submitit-cluster slurm)")
    g.add_argument("--gpus-per-run", type=int, default=0, help="GPUs per job (default 0)")
    g.add_argument("--cpus-per-run", type=int, default=None,
                   help="CPU cores per job, also its torch threads (default: Slurm 2 per job; "
                        "local cluster: the cores shared out between the jobs)")
    g.add_argument("--timeout-min", type=int, default=720, help="wall-time limit per job in minutes (default 720)")
    g.add_argument("--slurm-array-parallelism", type=int, default=None,
                   help="at most K jobs of the array running at once (Slurm %%K)")
    g.add_argument("--submitit-dir", default=None,
                   help="job scripts, pickles, logs and the submission ledger (default: <results>/.submitit; "
                        "must be on a filesystem the compute nodes see)")
    g.add_argument("--submitit-cluster", choices=("auto", "slurm", "local", "debug"), default="auto",
                   help="submitit executor (default: slurm when sbatch is available, else local)")
    g.add_argument("--mem-gb", type=float, default=None, help="memory per job in GB (Slurm; default: the partition's)")
    g.add_argument("--wait", action="store_true",
                   help="wait for the jobs, report failures and rewrite the summary (exit 1 if any failed)")


# ----------------------------------------------------------------------------- the job
def run_job(spec, config: dict, *, data_dir: str | None, root: str, overrides, threads: int | None) -> dict:
    """Body of one job: train and store ``spec`` unless it is stored already."""
    from utils.engine.train import available_cores
    from utils.runs.experiment import is_done
    from utils.runs.sweep import run_claimed
    root_path = Path(root)
    if is_done(spec, root_path):
        return {"label": spec.label, "status": "already stored"}
    start = time.perf_counter()
    if not run_claimed([spec], config, data_dir=data_dir, root=root_path, overrides=overrides,
                       progress=False, threads=threads or available_cores()):
        return {"label": spec.label, "status": "claimed by another process or stored meanwhile"}
    paths = [results.run_dir(spec.experiment, spec.method, spec.density, spec.seed, root_path)]
    try:
        results.write_summary(root_path)
    except Exception as exc:  # a concurrent writer or a bad neighbour run must not fail this run
        print(f"warning: summary not rewritten ({exc})", file=sys.stderr)
    return {"label": spec.label, "status": "trained", "paths": [str(p) for p in paths],
            "seconds": time.perf_counter() - start}


# ----------------------------------------------------------------------------- ledger
def _ledger_key(root: Path, spec) -> str:
    return f"{root}::{spec.label}"


def read_ledger(folder: Path) -> dict[str, dict]:
    """Latest submission per (store, run) from ``<folder>/submitted.jsonl``."""
    entries = {}
    path = folder / LEDGER
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
                entries[entry["key"]] = entry
            except (json.JSONDecodeError, KeyError):
                continue
    return entries


def _append_ledger(folder: Path, entries: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LEDGER, "a") as f:
        for entry in entries:
            f.write(json.dumps(entry) + "\n")


def in_flight(entries: list[dict]) -> set[str]:
    """Keys of the ledger entries whose job may still write its run (pending or running)."""
    flying = set()
    slurm = [e for e in entries if e.get("cluster") == "slurm"]
    for entry in entries:
        if entry.get("cluster") == "local":
            # LocalExecutor job ids are the pids of their controller processes.
            try:
                cmdline = Path(f"/proc/{int(entry['job_id'])}/cmdline").read_bytes()
            except (OSError, ValueError):
                continue
            if b"submitit" in cmdline:
                flying.add(entry["key"])
    if slurm:
        # One sacct call for every job (array ids are queried once each).
        from submitit.slurm.slurm import SlurmJob
        watcher = SlurmJob.watcher
        for entry in slurm:
            watcher.register_job(str(entry["job_id"]))
        watcher.update()
        unknown = 0
        for entry in slurm:
            state = watcher.get_state(str(entry["job_id"]), mode="cache").upper().split()[0]
            unknown += state == "UNKNOWN"
            if state not in FINISHED_STATES | {"UNKNOWN"}:
                flying.add(entry["key"])
        if unknown:
            print(f"warning: sacct knows nothing of {unknown} earlier job(s); they count as finished "
                  f"(if they are still queued, their runs may be submitted twice)", file=sys.stderr)
    return flying


# ----------------------------------------------------------------------------- submission
def _cluster(args) -> str:
    if args.partition and args.submitit_cluster in ("auto", "slurm"):
        return "slurm"
    if args.submitit_cluster != "auto":
        return args.submitit_cluster
    import submitit
    return submitit.AutoExecutor.which()


def _clean_partial_of(spec, root: Path) -> None:
    """Remove half-written copies (``.s<seed>.tmp-*`` / ``.old-*``) of one run no job is writing."""
    path = results.run_dir(spec.experiment, spec.method, spec.density, spec.seed, root)
    if path.parent.is_dir():
        for tmp in list(path.parent.glob(f".{path.name}.tmp-*")) + list(path.parent.glob(f".{path.name}.old-*")):
            shutil.rmtree(tmp, ignore_errors=True)


def _prepare_data(config: dict, data_dir: str | None, root: Path, overrides) -> str | None:
    """Download/verify the dataset and store the probe once here, not in every job."""
    from utils.engine.data import resolve_data_dir
    from utils.runs.experiment import ensure_probe, prepare_data
    prepare_data(config, data_dir, overrides)
    ensure_probe(config, data_dir, root)
    return str(resolve_data_dir(data_dir).resolve())


def make_executor(args, folder: Path, cluster: str, experiment: str):
    """A submitit executor configured from the launcher options."""
    import submitit
    executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=cluster)
    params = {"name": f"sna-{experiment}", "timeout_min": int(args.timeout_min), "tasks_per_node": 1,
              "nodes": 1}
    if args.gpus_per_run:
        params["gpus_per_node"] = int(args.gpus_per_run)
    if cluster == "slurm":
        params["cpus_per_task"] = int(args.cpus_per_run or 2)
        if args.partition:
            params["slurm_partition"] = args.partition
        if args.slurm_array_parallelism:
            params["slurm_array_parallelism"] = int(args.slurm_array_parallelism)
        if args.mem_gb:
            params["mem_gb"] = float(args.mem_gb)
        # Jobs import this project: make the checkout importable wherever they start.
        repo = Path(__file__).resolve().parents[2]
        params["slurm_setup"] = [f"export PYTHONPATH={repo}${{PYTHONPATH:+:$PYTHONPATH}}"]
    executor.update_parameters(**params)
    return executor


def job_threads(args, cluster: str, n_jobs: int) -> int | None:
    """Torch threads of each job."""
    if args.cpus_per_run:
        return int(args.cpus_per_run)
    if cluster == "slurm":
        return None                      # the job's cgroup/affinity decides (available_cores)
    from utils.engine.train import available_cores
    return max(1, available_cores() // max(1, n_jobs))   # local jobs all run at once


def launch_sweep(args, config: dict, specs: list, root, overrides) -> int:
    """Submit one submitit job per spec not yet stored nor in flight. Returns an exit code.

    ``args`` carries the launcher options (:func:`add_launcher_arguments`) and the sweep's
    ``data_dir``, ``max_runs`` and ``quiet``.
    """
    root = Path(root or results.DEFAULT_ROOT).resolve()
    folder = Path(args.submitit_dir or (root / DEFAULT_DIR)).resolve()
    cluster = _cluster(args)
    ledger = read_ledger(folder)

    stored, todo = [], []
    for spec in specs:
        (stored if _is_done(spec, root) else todo).append(spec)
    pending = [ledger[k] for k in (_ledger_key(root, s) for s in todo) if k in ledger]
    busy = in_flight(pending) if pending else set()
    flying = [(s, ledger[_ledger_key(root, s)]) for s in todo if _ledger_key(root, s) in busy]
    todo = [s for s in todo if _ledger_key(root, s) not in busy]
    max_runs = getattr(args, "max_runs", None)
    todo = todo[:max_runs] if max_runs is not None else todo
    for spec, entry in flying:
        print(f"in flight  {spec.label}  (job {entry['job_id']})")
    if not todo:
        print(f"0 job(s) submitted; {len(stored)} run(s) already stored, {len(flying)} in flight")
        return 0

    for spec in todo:
        _clean_partial_of(spec, root)
    data_dir = _prepare_data(config, getattr(args, "data_dir", None), root, overrides)
    executor = make_executor(args, folder, cluster, config["experiment"])
    job = functools.partial(run_job, config=config, data_dir=data_dir, root=str(root),
                            overrides=overrides, threads=job_threads(args, cluster, len(todo)))
    jobs = executor.map_array(job, todo)
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    _append_ledger(folder, [{"key": _ledger_key(root, s), "label": s.label, "job_id": j.job_id,
                             "cluster": cluster, "folder": str(folder / "%j"), "submitted": now}
                            for s, j in zip(todo, jobs)])
    for spec, j in zip(todo, jobs):
        print(f"submitted  {spec.label}  (job {j.job_id})")
    print(f"{len(jobs)} job(s) submitted to {cluster}; {len(stored)} run(s) already stored, "
          f"{len(flying)} in flight; logs under {folder}")
    if not getattr(args, "wait", False) and cluster != "debug":
        print("when they finish: python -m utils.cli summary" +
              (f" --results {root}" if root != results.DEFAULT_ROOT.resolve() else ""))
        return 0
    return wait_for(jobs, todo, root)


def _is_done(spec, root: Path) -> bool:
    from utils.runs.experiment import is_done
    return is_done(spec, root)


def wait_for(jobs: list, specs: list, root: Path) -> int:
    """Wait for ``jobs``; print one line per job; rewrite the summary. 1 if any job failed."""
    failed = 0
    for spec, j in zip(specs, jobs):
        try:
            out = j.result()
            print(f"{out['status']:<15}{spec.label}")
        except Exception as exc:  # submitit raises FailedJobError with the job's traceback
            failed += 1
            last = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            print(f"FAILED         {spec.label}  (job {j.job_id}: {last}; log {j.paths.stderr})",
                  file=sys.stderr)
    results.write_summary(root)
    return 1 if failed else 0
