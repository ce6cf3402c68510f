"""What a sweep still has to do: each run's state, and the training time left.

``sweep --dry-run`` prints a line per run (:meth:`RunState.line`) and an estimate of the time
left (:func:`estimate_remaining`).  The estimate takes each run's kind (method, and whether it
trains Gem-Miner's sanity checks) and the median ``wall_time_s`` of the stored runs of that kind
under the same profile and recipe version, minus what a run's checkpoints already hold.  Those
times include whatever else the machine ran beside them (the median keeps one slowed run from
moving it).  A kind with no stored run yet is timed by its epoch count (:func:`run_epochs`, every
phase counted) at the median seconds per epoch of the stored runs of its profile's current version;
the estimate says which runs it timed so, and which it cannot estimate.  Runs that trained in this machine's
precision (bf16 autocast or fp32: :func:`precisions_here`) are preferred.  A kind stored only in the
other precision is estimated from those runs times the median ratio of this precision's time to the
other's over the kinds stored in both (fp32 vs bf16 on a CPU without native bf16 is several times
slower: ``benchmarks/README.md``); without such a kind its time is used as it is, and the line says
which it did.

>>> states = sweep_status(grid(config), Path("results"))
>>> here = precisions_here(config, grid(config))
>>> print(estimate_remaining(states, config, results.runs("results"), here).line(jobs=2))
"""
from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from utils.engine.checkpoint import held
from utils.errors import UserError
from utils.runs import results
from utils.runs.claims import is_claimed
from utils.runs.experiment import (
    RunSpec,
    checkpoint_dir,
    compute_settings,
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


def run_epochs(config: dict, spec: RunSpec) -> int:
    """Passes over the training data ``spec`` makes under its profile, every phase counted
    (:meth:`pruners.base.Method.epochs`: e.g. Gem-Miner's mining, finetune and sanity finetunes)."""
    settings = run_settings(spec, config)
    return settings.method.epochs(settings.train, spec.seed)


def _version_and_precision(row) -> tuple[int | None, str | None]:
    """A ``results.runs`` row's recipe version and precision, ``None`` where it records none."""
    precision = getattr(row, "precision", None)
    return (None if pd.isna(row.recipe_version) else int(row.recipe_version),
            None if pd.isna(precision) else precision)


def _epoch_seconds(config: dict, rows: pd.DataFrame) -> dict[tuple, dict[str | None, list[float]]]:
    """(profile, version) → precision → seconds per epoch of each stored run of the profile's
    current version (an older version's epochs are not in the config any more)."""
    rates: dict[tuple, dict[str | None, list[float]]] = {}
    for row in rows.itertuples():
        version, precision = _version_and_precision(row)
        if version != profile_of(config, row.profile)[1].get("version"):
            continue
        spec = RunSpec(config["experiment"], row.method, row.density, row.seed, row.profile, version)
        try:
            epochs = run_epochs(config, spec)
        except UserError:          # a stored variant (Gem-Miner's sanity runs) is not a method of its own
            continue
        rates.setdefault((row.profile, version), {}).setdefault(precision, []).append(row.wall_time_s / epochs)
    return rates


@dataclass(frozen=True)
class Estimate:
    """Training time left: ``seconds`` of run time over the ``estimated`` runs of the ``left``
    runs not done; ``unknown``: per method, the runs whose kind has no stored run yet;
    ``other_precision``: per precision, estimated runs whose kind is stored only in that precision,
    which is not the one they will train in here; ``scaled``: per such precision, the time ratio
    (here / there) their stored times were multiplied by and how many kinds, stored in both, it
    comes from (missing: none was, the times are used as they are); ``from_epochs``: per method,
    estimated runs whose kind has no stored run, timed by their epoch count (:func:`run_epochs`)
    at the median seconds per epoch of the stored runs of their recipe and precision."""
    left: int
    estimated: int
    seconds: float
    unknown: dict[str, int] = field(default_factory=dict)
    other_precision: dict[str, int] = field(default_factory=dict)
    scaled: dict[str, tuple[float, int]] = field(default_factory=dict)
    from_epochs: dict[str, int] = field(default_factory=dict)

    def line(self, jobs: int) -> str:
        hours = self.seconds / 3600
        if not self.left:
            return "left: nothing, every run is stored"
        text = (f"left: {self.left} run(s); {self.estimated} of them about {hours:.1f} h of run time "
                f"(about {hours / jobs:.1f} h with {jobs} at a time), from the stored runs' median times")
        for precision, n in sorted(self.other_precision.items()):
            here = "fp32" if precision == "bf16" else "bf16"
            if precision in self.scaled:
                ratio, kinds = self.scaled[precision]
                how = (f"times {ratio:.2f}: the median {here}/{precision} time ratio of the {kinds} kind(s) "
                       "stored in both")
            else:
                how = (f"while this machine trains in {here}: expect them to take "
                       f"{'longer' if here == 'fp32' else 'less'}")
            text += f" ({n} of them from runs that trained in {precision} only, {how})"
        if self.from_epochs:
            text += ("; of kinds with no stored run yet, from their epoch count at the median seconds per epoch of "
                     "their recipe's stored runs: " + ", ".join(f"{method} ×{n}"
                                                                for method, n in sorted(self.from_epochs.items())))
        if self.unknown:
            text += "; not estimated (no stored run of their kind or recipe yet): " + ", ".join(
                f"{method} ×{n}" for method, n in sorted(self.unknown.items()))
        return text


def estimate_remaining(states: list[RunState], config: dict, stored: pd.DataFrame,
                       here: dict[str, str] | None = None) -> Estimate:
    """The training time the runs of ``states`` that are not done still need (see the module);
    ``here``: profile → the precision ("bf16" or "fp32") this machine trains it in (None: any)."""
    left = [s for s in states if s.state != "done"]
    here = here or {}
    times: dict[tuple, dict[str | None, list[float]]] = {}
    rates: dict[tuple, dict[str | None, list[float]]] = {}
    if len(stored):
        rows = stored[(stored["experiment"] == config["experiment"]) & stored["wall_time_s"].notna()]
        rows = rows[rows["profile"].isin(list(config.get("profiles") or {}))]
        rates = _epoch_seconds(config, rows)
        for row in rows.itertuples():
            version, precision = _version_and_precision(row)
            key = (row.profile, version, *run_kind(config, row.method, row.density, row.seed, row.profile))
            times.setdefault(key, {}).setdefault(precision, []).append(row.wall_time_s)
    seconds, counted, unknown, other, scaled, from_epochs = 0.0, 0, Counter(), Counter(), {}, Counter()
    ratios: dict[tuple[str, str], tuple[float, int] | None] = {}    # (here, there) → once per pair, not per run
    for s in left:
        spec = s.spec
        by_precision = times.get((spec.profile, spec.version,
                                  *run_kind(config, spec.method, spec.density, spec.seed, spec.profile)))
        precision_here = here.get(spec.profile)
        if not by_precision:
            by_rate = rates.get((spec.profile, spec.version), {})
            rate = by_rate.get(precision_here) if precision_here else [r for rs in by_rate.values() for r in rs]
            if not rate:
                unknown[spec.method] += 1
                continue
            seconds += max(statistics.median(rate) * run_epochs(config, spec) - s.trained_s, 0.0)
            counted += 1
            from_epochs[spec.method] += 1
            continue
        mine, factor = by_precision.get(precision_here), 1.0
        if precision_here and not mine and (recorded := sorted(p for p in by_precision if p)):
            other["/".join(recorded)] += 1      # stored only in the other precision: scale those, say so
            if len(recorded) == 1:
                pair = (precision_here, recorded[0])
                if pair not in ratios:
                    ratios[pair] = _precision_ratio(times, *pair)
                if ratios[pair]:
                    factor = ratios[pair][0]
                    scaled[recorded[0]] = ratios[pair]
        same = mine or [t for ts in by_precision.values() for t in ts]
        seconds += max(statistics.median(same) * factor - s.trained_s, 0.0)
        counted += 1
    return Estimate(len(left), counted, seconds, dict(unknown), dict(other), scaled, dict(from_epochs))


def _precision_ratio(times: dict[tuple, dict[str | None, list[float]]], here: str,
                     there: str) -> tuple[float, int] | None:
    """(median over the kinds stored in both precisions of median time ``here`` / median time
    ``there``, how many such kinds), or None when no kind is stored in both."""
    ratios = [statistics.median(by[here]) / statistics.median(by[there])
              for by in times.values() if by.get(here) and by.get(there) and statistics.median(by[there]) > 0]
    return (statistics.median(ratios), len(ratios)) if ratios else None


def precisions_here(config: dict, specs: list[RunSpec], threads: int = 1) -> dict[str, str]:
    """Profile → "bf16" or "fp32": the precision this machine trains ``specs``' profiles in (it
    follows the CPU: :func:`~utils.engine.train.use_bf16`)."""
    if not specs:
        return {}
    from models import build_model
    model = build_model(config["model"])
    first_of_profile = {spec.profile: spec for spec in reversed(specs)}      # one resolution per profile
    return {profile: "bf16" if compute_settings(model, run_settings(spec, config).train, threads)["bf16"] else "fp32"
            for profile, spec in first_of_profile.items()}


def precision_warning(config: dict, specs: list[RunSpec], root: Path, threads: int = 1,
                      here: dict[str, str] | None = None) -> str | None:
    """A warning line when this machine would train ``specs`` in another precision (bf16 autocast
    or fp32, which follows the CPU: :func:`~utils.engine.train.use_bf16`) than stored runs of the
    same experiment and profiles recorded; None when they agree or nothing is stored.

    Such runs train the same recipe in the other precision (``run.json`` records which), so their
    numbers are not bit-for-bit those a rerun of the stored runs would give, and a killed run's
    checkpoints from the other machine wait aside instead of resuming (:mod:`utils.engine.checkpoint`).
    """
    if not specs:
        return None
    here = {profile: precision == "bf16"      # ``here``: :func:`precisions_here`, when the caller has it
            for profile, precision in (here or precisions_here(config, specs, threads)).items()}
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
