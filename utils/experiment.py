"""Experiment configs and the resumable runner shared by the CLI, notebooks and Slurm.

A config (``configs/<experiment>.yaml``) names the dataset, the model, the grid
(methods × densities × seeds, plus extra runs) and profiles of hyperparameters.
:func:`execute` trains one run and stores it; :func:`sweep` runs a grid, skipping
runs already stored, so a killed sweep resumes where it stopped.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
import yaml
from tqdm.auto import tqdm

from models import build_model
from pruners import get_method
from pruners.base import check_density

from . import results
from .claims import claim_run
from .data import Dataset, load_dataset, probe_images
from .errors import UserError
from .seeding import seed_init
from .train import TrainConfig, available_cores, pick_device, torch_threads, use_bf16, use_channels_last

#: Torch threads per run.  The thread count changes the order of floating-point reductions,
#: so a rerun reproduces a stored run bit for bit only with the count it was trained with
#: (recorded in run.json as ``compute.threads``).  The stored CPU runs use one thread each,
#: which is also the fastest layout for a sweep on 2 cores (two runs side by side beat one
#: run on two threads by 1.6x for FC and 1.14x for ResNet-20: benchmarks/README.md).
RUN_THREADS = 1

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


# ----------------------------------------------------------------------------- configs
def config_path(name_or_path: str | os.PathLike) -> Path:
    """``configs/<name>.yaml`` for an experiment name, or the given path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise UserError(f"config file {path} does not exist")
        return path
    candidate = CONFIG_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
        raise UserError(f"unknown experiment {str(name_or_path)!r}; choose from {known}")
    return candidate


def load_config(name_or_path: str | os.PathLike) -> dict:
    """Read and check an experiment config."""
    path = config_path(name_or_path)
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML ({exc.__class__.__name__})") from None
    for key in ("experiment", "dataset", "model", "methods", "densities", "seeds", "profiles"):
        if key not in config:
            raise UserError(f"{path} lacks the key {key!r}")
    config["_path"] = str(path)
    return config


def profile_of(config: dict, profile: str | None) -> tuple[str, dict]:
    name = profile or config.get("default_profile") or next(iter(config["profiles"]))
    if name not in config["profiles"]:
        raise UserError(f"unknown profile {name!r} for {config['experiment']}; "
                        f"choose from {', '.join(config['profiles'])}")
    return name, config["profiles"][name]


def percent_to_fraction(percent: float) -> float:
    """CLI/config density in percent (0, 100] -> fraction, with a clear error outside."""
    try:
        value = float(percent)
    except (TypeError, ValueError):
        raise UserError(f"density must be a number in (0, 100], got {percent!r}") from None
    if not 0 < value <= 100:
        raise UserError(f"density must be in (0, 100] (% of weights remaining), got {percent}")
    return value / 100


# ----------------------------------------------------------------------------- runs
@dataclass(frozen=True)
class RunSpec:
    """One run of a grid. ``density`` is a fraction; ``version`` is the profile's recipe version
    (a stored run of another version is stale and is retrained)."""
    experiment: str
    method: str
    density: float
    seed: int
    profile: str
    version: int | None = None

    @property
    def label(self) -> str:
        return f"{self.experiment}/{self.method}/d{results.density_label(self.density)}/s{self.seed}"


def target_density(config: dict, spec: RunSpec) -> float:
    """The density (fraction) a run prunes to: 10^-c for a label with a thesis compression c,
    the label itself for ``exact_label_methods`` (Gem-Miner) and unlisted labels."""
    label = round(spec.density * 100, 6)
    compression = {float(k): float(v) for k, v in (config.get("compression") or {}).items()}
    if label in compression and spec.method not in (config.get("exact_label_methods") or []):
        return 10 ** -compression[label]
    return spec.density


@dataclass
class Overrides:
    """Run-time changes to a profile, recorded in ``run.json`` (e.g. for smoke runs).

    ``validation``: hold out the last N training images and evaluate on them instead of the
    test set (every ``top1`` of such a run is a validation accuracy), for choosing a recipe.
    """
    epochs: int | None = None
    train_subset: int | None = None
    test_subset: int | None = None
    validation: int | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def method_settings(profile: dict, method: str, seed: int, density_label: float | None = None) -> tuple[dict, dict]:
    """(method options, training overrides) of ``method`` in a profile, for one run.

    A method's ``per_run`` table (keys ``d<label %>/s<seed>``) overrides its options for single
    runs: facts that differ run by run, e.g. which GPU the thesis pruned each random run on.
    """
    section = copy.deepcopy((profile.get("methods") or {}).get(method) or {})
    if "options" in section or "train" in section:
        options, train = section.get("options") or {}, section.get("train") or {}
    else:
        options, train = section, {}
    per_run = options.pop("per_run", None) or {}
    if density_label is not None:
        options.update(per_run.get(f"d{results.density_label(density_label)}/s{seed}") or {})
    sanity_seeds = options.pop("sanity_seeds", None)
    if sanity_seeds is not None:
        options["sanity_checks"] = seed in sanity_seeds
    return options, train


def grid(config: dict, profile: str | None = None, methods: list[str] | None = None,
         densities: list[float] | None = None, seeds: list[int] | None = None) -> list[RunSpec]:
    """All runs of a config (densities in percent in the config, fractions in the specs), in the
    config's ``priority`` order (see :func:`_priority`)."""
    profile_name, profile_values = profile_of(config, profile)
    version = profile_values.get("version")
    entries = [{"method": m, "densities": config["densities"], "seeds": config["seeds"]}
               for m in config["methods"]]
    entries += [{"densities": config["densities"], "seeds": config["seeds"], **e}
                for e in config.get("extra_runs") or []]
    specs = []
    for entry in entries:
        if methods and entry["method"] not in methods:
            continue
        for d in entry["densities"]:
            if densities and float(d) not in [float(x) for x in densities]:
                continue
            for s in entry["seeds"]:
                if seeds and s not in seeds:
                    continue
                specs.append(RunSpec(config["experiment"], entry["method"], percent_to_fraction(d),
                                     int(s), profile_name, version))
    return sorted(specs, key=lambda spec: _priority(config, spec))


def _priority(config: dict, spec: RunSpec) -> tuple[int, int]:
    """Sort key of a run in a sweep: the config's ``priority: {densities: [...], last: [methods]}``
    puts the densities the figures need first (unlisted ones, e.g. the dense net, before them)
    and the listed methods (extensions) after everything else."""
    priority = config.get("priority") or {}
    densities = [float(d) for d in priority.get("densities") or []]
    label = round(spec.density * 100, 6)
    return (spec.method in (priority.get("last") or []), densities.index(label) if label in densities else -1)


@lru_cache(maxsize=2)
def _cached_dataset(name: str, data_dir: str | None) -> Dataset:
    return load_dataset(name, data_dir)


def prepare_data(config: dict, data_dir: str | None, overrides: Overrides) -> Dataset:
    data = _cached_dataset(config["dataset"], data_dir)
    if overrides.validation:
        data = data.holdout(overrides.validation)
    if overrides.train_subset or overrides.test_subset:
        data = data.subset(overrides.train_subset, overrides.test_subset)
    return data


def ensure_probe(config: dict, data_dir: str | None, root: Path) -> None:
    """Store the dataset's fixed probe set (600 test images of the full test set) once, for the analyses."""
    if not results.probe_path(config["dataset"], root).is_file():
        full = _cached_dataset(config["dataset"], data_dir)
        results.save_probe(config["dataset"], *probe_images(full, min(600, len(full.test_y))), root=root)


def default_jobs(threads: int = RUN_THREADS) -> int:
    """Runs at once for a local sweep: one per ``threads`` cores on CPU, one on a GPU."""
    if torch.cuda.is_available():
        return 1
    return max(1, available_cores() // threads)


def execute(spec: RunSpec, config: dict, *, data_dir: str | None = None,
            root: str | os.PathLike | None = None, overrides: Overrides | None = None,
            progress: bool = True, force: bool = False, threads: int = RUN_THREADS) -> list[Path]:
    """Train one run with ``threads`` torch threads and store it (and any variants the method
    produces). Returns the run dirs."""
    with torch_threads(threads):
        return _execute(spec, config, data_dir=data_dir, root=root, overrides=overrides,
                        progress=progress, threads=threads)


def recipe_record(profile_name: str, profile: dict, settings: RunSettings) -> dict:
    """What ``run.json`` records of the recipe: the profile, its ``version`` and a digest of the
    settings this run resolved to, so runs of different recipes are never mixed silently."""
    resolved = {"train": settings.train.to_dict(), "options": settings.options}
    digest = hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()
    return {"profile": profile_name, "version": profile.get("version"), "settings_sha256": digest[:16]}


@dataclass
class RunSettings:
    """Everything a run's profile decides: the method object and its options, the training
    settings and the density it prunes to (a fraction)."""
    method: object
    options: dict
    train: TrainConfig
    density: float


def run_settings(spec: RunSpec, config: dict, overrides: Overrides | None = None) -> RunSettings:
    """Resolve ``spec``'s settings from its profile; a setting the method cannot train with
    (e.g. momentum for DEEPR) is a :class:`UserError`."""
    overrides = overrides or Overrides()
    density = check_density(target_density(config, spec))
    _, profile = profile_of(config, spec.profile)
    options, train_overrides = method_settings(profile, spec.method, spec.seed, spec.density)
    method = get_method(spec.method, **options)
    train_values = {**(profile.get("train") or {}), **train_overrides}
    if overrides.epochs is not None:
        train_values["epochs"] = overrides.epochs
    train_cfg = TrainConfig.from_dict(train_values)
    try:
        method.check_train(train_cfg)
    except UserError as exc:
        raise UserError(f"{spec.label} (profile {spec.profile}): {exc}") from None
    return RunSettings(method, options, train_cfg, density)


def _execute(spec: RunSpec, config: dict, *, data_dir, root, overrides, progress, threads) -> list[Path]:
    overrides = overrides or Overrides()
    root = Path(root or results.DEFAULT_ROOT)
    settings = run_settings(spec, config, overrides)
    method, options, train_cfg, density = settings.method, settings.options, settings.train, settings.density
    data = prepare_data(config, data_dir, overrides)
    ensure_probe(config, data_dir, root)

    model_kwargs = dict(method.model_kwargs.get(config["model"], {}))
    seed_init(spec.seed, data.info.train_size)
    model = build_model(config["model"], **model_kwargs)
    start = time.perf_counter()
    outputs = method.run(model, data, density, train_cfg, seed=spec.seed, progress=progress)
    wall = time.perf_counter() - start
    device = pick_device(train_cfg.device)
    # The defaults depend on the hardware (native bf16 or not), so the record keeps what ran.
    recipe = recipe_record(spec.profile, profile_of(config, spec.profile)[1], settings)
    provenance = data.provenance()
    compute = {"device": device.type, "threads": threads, "bf16": use_bf16(model, train_cfg, device),
               "channels_last": use_channels_last(model, train_cfg, device)}
    written = []
    # The primary run is written last, so its presence means every variant is stored.
    for name in sorted(outputs, key=lambda n: n == spec.method):
        out = outputs[name]
        record = {
            "experiment": spec.experiment, "method": name, "density_label": spec.density,
            "density_target": density,
            "seed": spec.seed, "profile": spec.profile, "dataset": config["dataset"],
            "config": {"file": Path(config["_path"]).name, "train": train_cfg.to_dict(),
                       "method_options": options, "overrides": overrides.as_dict()},
            "wall_time_s": wall, "info": out.info,
            "compute": compute, "recipe": recipe, "data": provenance,
        }
        path = results.run_dir(spec.experiment, name, spec.density, spec.seed, root)
        written.append(results.save_run(path, model=out.model, init_model=out.init_model,
                                        history=out.history, model_spec={"name": config["model"],
                                                                         "kwargs": model_kwargs},
                                        record=record, extras=out.extras, support=out.support,
                                        overwrite=True))
    return written


def stored_state(spec: RunSpec, root: Path) -> str:
    """``"todo"``, ``"done"`` or ``"stale"`` (stored under an older version of the recipe, so a
    sweep retrains it); a run of another profile is an error."""
    path = results.run_dir(spec.experiment, spec.method, spec.density, spec.seed, root)
    if not results.is_complete(path):
        return "todo"
    record = results.read_record(path, verify=False)
    if record.get("profile") != spec.profile:
        raise UserError(f"{path} holds a run of profile {record.get('profile')!r}, not {spec.profile!r}; "
                        f"use another --results directory")
    if spec.version is not None and (record.get("recipe") or {}).get("version") != spec.version:
        return "stale"
    return "done"


def is_done(spec: RunSpec, root: Path) -> bool:
    """Whether ``spec`` is stored completely under its profile's current recipe version."""
    return stored_state(spec, root) == "done"


def execute_claimed(spec: RunSpec, config: dict, *, root: str | os.PathLike, **kwargs) -> list[Path] | None:
    """:func:`execute` under the run's claim (:mod:`utils.claims`): None, without training, when
    another live process holds the claim or the run got stored meanwhile."""
    root = Path(root)
    with claim_run(results.run_dir(spec.experiment, spec.method, spec.density, spec.seed, root)) as held:
        if not held or is_done(spec, root):
            return None
        return execute(spec, config, root=root, **kwargs)


def _worker(args) -> list[str] | None:
    spec, config, data_dir, root, overrides, threads = args
    paths = execute_claimed(spec, config, data_dir=data_dir, root=root, overrides=overrides,
                            progress=False, threads=threads)
    return None if paths is None else [str(p) for p in paths]


def sweep(config: dict, specs: list[RunSpec], *, data_dir: str | None = None,
          root: str | os.PathLike | None = None, overrides: Overrides | None = None,
          jobs: int | None = None, threads: int = RUN_THREADS, max_runs: int | None = None,
          progress: bool = True) -> list[RunSpec]:
    """Run every spec not yet stored, ``jobs`` at a time (default :func:`default_jobs`), each
    with ``threads`` torch threads. Returns the specs this call trained.

    Half-written run directories from a killed sweep are removed first.  Each run is trained
    under its claim, so sweeps started at the same time on one store share the work, and a run
    whose claimer died (killed sweep) is taken over.
    """
    jobs = default_jobs(threads) if jobs is None else jobs
    root = Path(root or results.DEFAULT_ROOT)
    results.clean_partial(root)
    todo = [s for s in specs if not is_done(s, root)][:max_runs]
    if not todo:
        return []
    for spec in todo:
        run_settings(spec, config, overrides)
    bar = tqdm(total=len(todo), desc=f"sweep {config['experiment']}", disable=not progress)
    trained = []
    if jobs <= 1:
        for spec in todo:
            bar.set_postfix_str(spec.label)
            if execute_claimed(spec, config, data_dir=data_dir, root=root, overrides=overrides,
                               progress=progress, threads=threads) is not None:
                trained.append(spec)
                results.write_summary(root)
            bar.update()
    else:
        with ProcessPoolExecutor(jobs) as pool:
            futures = {pool.submit(_worker, (s, config, data_dir, root, overrides, threads)): s for s in todo}
            for future in as_completed(futures):
                if future.result() is not None:
                    trained.append(futures[future])
                    results.write_summary(root)
                bar.set_postfix_str(futures[future].label)
                bar.update()
    bar.close()
    skipped = len(todo) - len(trained)
    if skipped and progress:
        print(f"{skipped} run(s) left to a concurrent sweep (claimed) or stored meanwhile")
    return [s for s in todo if s in trained]
