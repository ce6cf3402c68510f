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
from utils.runs.experiment import RunSpec, checkpoint_dir, method_settings, profile_of, stored_state


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
