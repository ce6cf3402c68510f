"""The local sweep: train every run of a grid not stored yet, a few processes at a time.

:func:`sweep` plans the runs into tasks (:func:`plan_tasks`: FC runs that train alike go together
through :func:`utils.runs.experiment.execute_batch`, every other run alone), trains each task
under its runs' claims (:func:`run_claimed`), and goes on when one fails; a killed sweep rerun
with the same command first finishes the runs it had in flight (their checkpoints), then the rest.
"""
from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import ExitStack
from pathlib import Path

from utils.errors import UserError
from utils.progress import tqdm
from utils.runs import experiment, results
from utils.runs.claims import claim_run
from utils.runs.experiment import RUN_THREADS, Overrides, RunSpec


def run_claimed(specs: list[RunSpec], config: dict, *, root: str | os.PathLike, **kwargs) -> list[RunSpec]:
    """Train ``specs`` under their claims (:mod:`utils.runs.claims`): one alone with
    :func:`~utils.runs.experiment.execute`, several together with
    :func:`~utils.runs.experiment.execute_batch`.  Runs another live process holds, or that got
    stored meanwhile, are left out. Returns the specs trained."""
    root = Path(root)
    with ExitStack() as stack:
        mine = [spec for spec in specs
                if stack.enter_context(claim_run(results.run_dir(spec.experiment, spec.method, spec.density,
                                                                 spec.seed, root)))
                and not experiment.is_done(spec, root)]
        if len(mine) == 1:
            experiment.execute(mine[0], config, root=root, **kwargs)
        elif mine:
            experiment.execute_batch(mine, config, root=root, **kwargs)
        return mine


#: Runs trained together in one process (FC, batch 64), measured in benchmarks/README.md.
BATCH_RUNS = 8


def batch_key(spec: RunSpec, config: dict, overrides: Overrides | None = None) -> str | None:
    """Runs with the same key can be trained together
    (:func:`~utils.runs.experiment.execute_batch`): FC runs of one batch kind
    (:meth:`pruners.base.Method.batch_kind`: prune-then-train, DNW, DEEPR, Gem-Miner) under one
    recipe; None for every other run."""
    settings = experiment.run_settings(spec, config, overrides)
    kind = settings.method.batch_kind()
    if config["model"] != "fc" or kind is None:
        return None
    return json.dumps([spec.experiment, spec.profile, kind, settings.train.to_dict(),
                       settings.method.model_kwargs.get(config["model"], {})], sort_keys=True)


def plan_tasks(specs: list[RunSpec], config: dict, overrides: Overrides | None = None, *,
               jobs: int = 1, batch_runs: int = BATCH_RUNS) -> list[list[RunSpec]]:
    """Split ``specs`` into tasks, each trained by one process: groups of at most ``batch_runs``
    batchable runs with one key (sized so ``jobs`` processes share them evenly), the others
    alone.  Order: as ``specs`` (priority order), by each task's first run."""
    groups: dict[str, list[RunSpec]] = {}
    tasks: list[list[RunSpec]] = []
    for spec in specs:
        key = batch_key(spec, config, overrides) if batch_runs > 1 else None
        if key is None:
            tasks.append([spec])
        else:
            if key not in groups:
                groups[key] = []
                tasks.append(groups[key])
            groups[key].append(spec)
    out = []
    for task in tasks:
        size = min(batch_runs, max(1, -(-len(task) // max(jobs, 1))))
        out.extend(task[i:i + size] for i in range(0, len(task), size))
    return out


def _worker(args) -> list[RunSpec]:
    task, config, data_dir, root, overrides, threads = args
    return run_claimed(task, config, data_dir=data_dir, root=root, overrides=overrides, progress=False,
                       threads=threads)


def sweep(config: dict, specs: list[RunSpec], *, data_dir: str | None = None,
          root: str | os.PathLike | None = None, overrides: Overrides | None = None,
          jobs: int | None = None, threads: int = RUN_THREADS, max_runs: int | None = None,
          batch_runs: int = BATCH_RUNS, progress: bool = True) -> list[RunSpec]:
    """Run every spec not yet stored, ``jobs`` processes at a time (default
    :func:`~utils.runs.experiment.default_jobs`), each with ``threads`` torch threads; FC runs
    that train alike go ``batch_runs`` at a time through one process (:func:`plan_tasks`; 1
    trains every run alone). Returns the specs this call trained.

    Half-written run directories from a killed sweep are removed first.  Each run is trained
    under its claim, so sweeps started at the same time on one store share the work, and a run
    whose claimer died (killed sweep) is taken over.  Runs holding checkpoints (a killed sweep's
    runs in flight) go first, in ``specs`` order, then the rest: a restarted sweep finishes what
    it had started before it starts anything new.
    """
    jobs = experiment.default_jobs(threads) if jobs is None else jobs
    root = Path(root or results.DEFAULT_ROOT)
    results.clean_partial(root)
    todo = [s for s in specs if not experiment.is_done(s, root)]
    todo = sorted(todo, key=lambda s: not any(experiment.checkpoint_dir(s, root).glob("*.safetensors")))[:max_runs]
    if not todo:
        return []
    for spec in todo:
        experiment.run_settings(spec, config, overrides)
    # the dataset is read (or downloaded) here, before any task: missing data is one DataError
    # for the sweep, not a failed task per run; forked workers reuse the loaded arrays
    experiment.cached_dataset(config["dataset"], data_dir)
    tasks = plan_tasks(todo, config, overrides, jobs=jobs, batch_runs=batch_runs)
    bar = tqdm(total=len(todo), desc=f"sweep {config['experiment']}", disable=not progress)
    trained: list[RunSpec] = []

    def finished(task: list[RunSpec], done: list[RunSpec]) -> None:
        trained.extend(done)
        if done:
            results.write_summary(root)
        bar.set_postfix_str(task[0].label + (f" +{len(task) - 1}" if len(task) > 1 else ""))
        bar.update(len(task))

    failed: list[str] = []

    def outcome(task: list[RunSpec], result: Callable[[], list[RunSpec]]) -> None:
        # A failed task is reported when it fails, and the sweep goes on: with a process pool
        # its exception would otherwise surface only once every queued task had run (hours).
        try:
            done = result()
        except Exception as exc:  # noqa: BLE001  (any failure of one task; the others still train)
            label = task[0].label + (f" +{len(task) - 1}" if len(task) > 1 else "")
            failed.append(label)
            detail = "" if isinstance(exc, UserError) else "".join(traceback.format_exception(exc))
            print(f"error: {label} failed: {type(exc).__name__}: {exc}\n{detail}", file=sys.stderr, flush=True)
            done = []
        finished(task, done)

    if jobs <= 1:
        for task in tasks:
            outcome(task, lambda task=task: run_claimed(task, config, data_dir=data_dir, root=root,
                                                         overrides=overrides, progress=progress, threads=threads))
    else:
        with ProcessPoolExecutor(jobs) as pool:
            futures = {pool.submit(_worker, (t, config, data_dir, root, overrides, threads)): t for t in tasks}
            for future in as_completed(futures):
                outcome(futures[future], future.result)
    bar.close()
    if failed:
        raise UserError(f"{len(failed)} task(s) failed ({', '.join(failed)}); every other run is stored; "
                        f"rerun the same command to retry them")
    skipped = len(todo) - len(trained)
    if skipped and progress:
        print(f"{skipped} run(s) left to a concurrent sweep (claimed) or stored meanwhile")
    return [s for s in todo if s in trained]
