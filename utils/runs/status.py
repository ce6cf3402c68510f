"""What a sweep still has to do: each run's state, and the training time left.

``sweep --dry-run`` prints a line per run (:meth:`RunState.line`) and an estimate of the time
left (:func:`estimate_remaining`).  The estimate takes each run's kind (method, and whether it
trains Gem-Miner's sanity checks) and the median ``wall_time_s`` of the stored runs of that kind
under the same profile and recipe version, minus what a run's checkpoints already hold.  Those
times include whatever else the machine ran beside them (the median keeps one slowed run from
moving it); the estimate says which runs it cannot estimate.

>>> states = sweep_status(grid(config), Path("results"))
>>> print(estimate_remaining(states, config, results.runs("results")).line(jobs=2))
"""
from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from utils.engine.checkpoint import held
from utils.runs import results
from utils.runs.claims import is_claimed
from utils.runs.experiment import (
    RunSpec,
    checkpoint_dir,
    compute_record,
    method_settings,
    profile_of,
    run_settings,
    stored_state,
)


@dataclass(frozen=True)
class RunState:
    """A run of a sweep: ``state`` is "done", "todo", "stale" (stored under an older recipe
    version) or "busy" (claimed by a live sweep); ``checkpoint`` what its checkpoints hold
    (e.g. "mining 30/30, finetune 3/30") and ``trained_s`` their seconds of training."""
    spec: RunSpec
    state: str
    checkpoint: str | None = None
    trained_s: float = 0.0

    def line(self) -> str:
        return f"{self.state:<6}{self.spec.label}" + (f"  (checkpoint: {self.checkpoint})" if self.checkpoint else "")


def sweep_status(specs: list[RunSpec], root: Path) -> list[RunState]:
    """The state of every run of ``specs`` in the store at ``root``."""
    states = []
    for spec in specs:
        state = stored_state(spec, root)
        if state == "done":
            states.append(RunState(spec, state))
            continue
        run_dir = results.run_dir(spec.experiment, spec.method, spec.density, spec.seed, root)
        states.append(RunState(spec, "busy" if is_claimed(run_dir) else state, *held(checkpoint_dir(spec, root))))
    return states


def run_kind(config: dict, method: str, density: float, seed: int, profile: str) -> tuple[str, bool]:
    """(method, trains Gem-Miner's sanity checks): runs of one kind take about the same time."""
    options, _ = method_settings(profile_of(config, profile)[1], method, seed, density)
    return method, bool(options.get("sanity_checks"))


@dataclass(frozen=True)
class Estimate:
    """Training time left: ``seconds`` of run time over the ``estimated`` runs of the ``left``
    runs not done; ``unknown``: per method, the runs whose kind has no stored run yet."""
    left: int
    estimated: int
    seconds: float
    unknown: dict[str, int] = field(default_factory=dict)

    def line(self, jobs: int) -> str:
        hours = self.seconds / 3600
        if not self.left:
            return "left: nothing, every run is stored"
        text = (f"left: {self.left} run(s); {self.estimated} of them about {hours:.1f} h of run time "
                f"(about {hours / jobs:.1f} h with {jobs} at a time), from the stored runs' median times")
        if self.unknown:
            text += "; not estimated (no stored run of their kind yet): " + ", ".join(
                f"{method} ×{n}" for method, n in sorted(self.unknown.items()))
        return text


def estimate_remaining(states: list[RunState], config: dict, stored: pd.DataFrame) -> Estimate:
    """The training time the runs of ``states`` that are not done still need (see the module)."""
    left = [s for s in states if s.state != "done"]
    times: dict[tuple, list[float]] = {}
    if len(stored):
        for row in stored[(stored["experiment"] == config["experiment"]) & stored["wall_time_s"].notna()].itertuples():
            if row.profile in (config.get("profiles") or {}):
                version = None if pd.isna(row.recipe_version) else int(row.recipe_version)
                key = (row.profile, version, *run_kind(config, row.method, row.density, row.seed, row.profile))
                times.setdefault(key, []).append(row.wall_time_s)
    seconds, counted, unknown = 0.0, 0, Counter()
    for s in left:
        spec = s.spec
        same = times.get((spec.profile, spec.version, *run_kind(config, spec.method, spec.density, spec.seed,
                                                                 spec.profile)))
        if same:
            seconds += max(statistics.median(same) - s.trained_s, 0.0)
            counted += 1
        else:
            unknown[spec.method] += 1
    return Estimate(len(left), counted, seconds, dict(unknown))


def precision_warning(config: dict, specs: list[RunSpec], root: Path, threads: int = 1) -> str | None:
    """A warning line when this machine would train ``specs`` in another precision (bf16 autocast
    or fp32, which follows the CPU: :func:`~utils.engine.train.use_bf16`) than stored runs of the
    same experiment and profiles recorded; None when they agree or nothing is stored.

    Such runs train the same recipe in the other precision (``run.json`` records which), so their
    numbers are not bit-for-bit those a rerun of the stored runs would give, and a killed run's
    checkpoints from the other machine wait aside instead of resuming (:mod:`utils.engine.checkpoint`).
    """
    if not specs:
        return None
    from models import build_model
    model = build_model(config["model"])
    first_of_profile = {spec.profile: spec for spec in reversed(specs)}      # one resolution per profile
    here = {profile: compute_record(model, run_settings(spec, config).train, threads)["bf16"]
            for profile, spec in first_of_profile.items()}
    agree = differ = 0
    for file in results.run_files(root):
        if file.relative_to(root).parts[0] != config["experiment"]:     # skip other experiments unread
            continue
        record = results.read_record(file.parent, verify=False)
        bf16 = (record.get("compute") or {}).get("bf16")
        if record.get("profile") not in here or bf16 is None:
            continue
        if bool(bf16) == here[record["profile"]]:
            agree += 1
        else:
            differ += 1
    if not differ:
        return None
    bf16_here = any(here.values())
    mine = "bf16 autocast" if bf16_here else "fp32 (this CPU has no native bf16)"
    theirs = "fp32" if bf16_here else "bf16"
    return (f"warning: this machine trains {config['experiment']} in {mine}, but {differ} of its "
            f"{agree + differ} stored runs trained in {theirs}: new runs record their precision in run.json, "
            f"and checkpoints written in {theirs} wait aside for a machine like theirs")
