"""Experiment configs and the resumable runner shared by the CLI, notebooks and Slurm.

A config (``configs/<experiment>.yaml``) names the dataset, the model, the grid
(methods × densities × seeds, plus extra runs) and profiles of hyperparameters.
:func:`execute` trains one run and stores it; :func:`utils.runs.sweep.sweep` runs a grid,
skipping runs already stored, so a killed sweep resumes where it stopped.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
import yaml

from models import build_model
from pruners import get_method
from pruners.base import check_density
from utils.engine.checkpoint import resume_from
from utils.engine.data import Dataset, load_dataset, probe_images
from utils.engine.seeding import seed_init
from utils.engine.train import (
    TrainConfig,
    available_cores,
    device_name,
    pick_device,
    torch_threads,
    use_bf16,
    use_channels_last,
)
from utils.errors import UserError
from utils.runs import results

#: Torch threads per run.  The thread count changes the order of floating-point reductions,
#: so a rerun reproduces a stored run bit for bit only with the count it was trained with
#: (recorded in run.json as ``compute.threads``).  The stored CPU runs use one thread each,
#: which is also the fastest layout for a sweep on 2 cores (two runs side by side beat one
#: run on two threads by 1.6x for FC and 1.14x for ResNet-20: benchmarks/README.md).
RUN_THREADS = 1

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


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
    ``jpeg_quality``: re-encode every image as JPEG at this quality first
    (:meth:`~utils.engine.data.Dataset.reencoded`), the image-quality experiment.
    """
    epochs: int | None = None
    train_subset: int | None = None
    test_subset: int | None = None
    validation: int | None = None
    jpeg_quality: int | None = None

    def __post_init__(self):
        # 0 would otherwise read as "not given" where the code tests truthiness
        for name in ("epochs", "train_subset", "test_subset", "validation"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"{name.replace('_', ' ')} must be at least 1, got {value}")

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def method_settings(profile: dict, method: str, seed: int, density_label: float | None = None) -> tuple[dict, dict]:
    """(method options, training overrides) of ``method`` in a profile, for one run.

    A method's ``per_density`` table (keys ``d<label %>``) overrides its options at one density
    (e.g. the score penalty λ the thesis's Gem-Miner runs used at each target), and its ``per_run``
    table (keys ``d<label %>/s<seed>``) then overrides them for single runs: facts that differ run
    by run, e.g. which GPU the thesis pruned each random run on.
    """
    section = copy.deepcopy((profile.get("methods") or {}).get(method) or {})
    if "options" in section or "train" in section:
        options, train = section.get("options") or {}, section.get("train") or {}
    else:
        options, train = section, {}
    per_density = options.pop("per_density", None) or {}
    per_run = options.pop("per_run", None) or {}
    if density_label is not None:
        label = f"d{results.density_label(density_label)}"
        options.update(per_density.get(label) or {})
        options.update(per_run.get(f"{label}/s{seed}") or {})
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
    _check_subset("method", methods, {e["method"] for e in entries}, config)
    _check_subset("density", densities, {float(d) for e in entries for d in e["densities"]}, config)
    _check_subset("seed", seeds, {int(s) for e in entries for s in e["seeds"]}, config)
    return sorted(specs, key=lambda spec: _priority(config, spec))


def _check_subset(kind: str, asked: list | None, present: set, config: dict) -> None:
    """A sweep filter naming something the config's grid lacks is a mistake, not an empty sweep."""
    cast = float if kind == "density" else (int if kind == "seed" else str)
    missing = [x for x in asked or [] if cast(x) not in present]
    if missing:
        show = (lambda x: f"{float(x):g} %") if kind == "density" else str
        choices = ", ".join(show(x) for x in sorted(present))
        raise UserError(f"{config['experiment']} has no {kind} {show(missing[0])}; its grid has: {choices}")


def _priority(config: dict, spec: RunSpec) -> tuple[int, int]:
    """Sort key of a run in a sweep: the config's ``priority: {densities: [...], last: [methods]}``
    puts the densities the figures need first (unlisted ones, e.g. the dense net, before them)
    and the listed methods (extensions) after everything else."""
    priority = config.get("priority") or {}
    densities = [float(d) for d in priority.get("densities") or []]
    label = round(spec.density * 100, 6)
    return (spec.method in (priority.get("last") or []), densities.index(label) if label in densities else -1)


@lru_cache(maxsize=2)
def cached_dataset(name: str, data_dir: str | None) -> Dataset:
    return load_dataset(name, data_dir)


def prepare_data(config: dict, data_dir: str | None, overrides: Overrides) -> Dataset:
    data = cached_dataset(config["dataset"], data_dir)
    if overrides.jpeg_quality is not None:
        data = data.reencoded(overrides.jpeg_quality)
    if overrides.validation:
        data = data.holdout(overrides.validation)
    if overrides.train_subset or overrides.test_subset:
        data = data.subset(overrides.train_subset, overrides.test_subset)
    return data


def ensure_probe(config: dict, data_dir: str | None, root: Path) -> None:
    """Store the dataset's fixed probe set (600 test images of the full test set) once, for the analyses."""
    if not results.probe_path(config["dataset"], root).is_file():
        full = cached_dataset(config["dataset"], data_dir)
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
    resolved = {"train": settings.train.result_dict(), "options": settings.options}
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
    settings = run_settings(spec, config, overrides)
    data = prepare_data(config, data_dir, overrides)
    ensure_probe(config, data_dir, Path(root or results.DEFAULT_ROOT))
    model, model_kwargs = _fresh_model(spec, config, settings, data)
    start = time.perf_counter()
    # a killed run resumes from its last checkpoint (utils.engine.checkpoint); the key holds the
    # data and the overrides, so a validation or re-encoded run never resumes from another, and
    # the device type and precision, so a checkpoint carried to a CPU without native bf16 (or to
    # CUDA) trains afresh instead of finishing in another precision; not the device's name, so it
    # resumes on another CPU of the same precision (run.json's compute.resumed says where its epochs trained)
    saves = checkpoint_dir(spec, root)
    with resume_from(saves, context={"data": data.provenance(), "overrides": overrides.as_dict(),
                                     "compute": compute_settings(model, settings.train, threads)}) as scope:
        outputs = settings.method.run(model, data, settings.density, settings.train, seed=spec.seed,
                                      progress=progress)
    # a resumed run's time includes the epochs trained before the kill (their logged seconds)
    wall = time.perf_counter() - start + sum(r["seconds"] for r in scope.restored)
    paths = _store(spec, config, settings, outputs, model_kwargs, data, overrides, root=root,
                   wall=wall, threads=threads, resumed=scope.restored)
    shutil.rmtree(saves, ignore_errors=True)
    return paths


def checkpoint_dir(spec: RunSpec, root: str | os.PathLike | None = None) -> Path:
    """Where a run keeps its checkpoints while it trains: ``.s<seed>.ckpt`` beside its run directory
    (removed once the run is stored).  Not git-ignored: they are safetensors, so a session that
    commits them lets a fresh clone resume the run."""
    path = results.run_dir(spec.experiment, spec.method, spec.density, spec.seed, root)
    return path.parent / f".{path.name}.ckpt"


def _fresh_model(spec: RunSpec, config: dict, settings: RunSettings, data: Dataset) -> tuple[torch.nn.Module, dict]:
    """The run's initial model (seeded init, the method's model options) and those options."""
    model_kwargs = dict(settings.method.model_kwargs.get(config["model"], {}))
    seed_init(spec.seed, data.info.train_size)
    return build_model(config["model"], **model_kwargs), model_kwargs


def compute_settings(model: torch.nn.Module, train_cfg: TrainConfig, threads: int) -> dict:
    """How ``model`` trains here: device type, threads, bf16, channels_last.  The defaults depend
    on the hardware (native bf16 or not); these decide the numbers, so a checkpoint's key holds them."""
    device = pick_device(train_cfg.device)
    return {"device": device.type, "threads": threads, "bf16": use_bf16(model, train_cfg, device),
            "channels_last": use_channels_last(model, train_cfg, device)}


def compute_record(model: torch.nn.Module, train_cfg: TrainConfig, threads: int) -> dict:
    """``run.json``'s record: :func:`compute_settings` and the device's name (bf16 rounding can follow its kernels)."""
    settings = compute_settings(model, train_cfg, threads)
    return {"device": settings["device"], "device_name": device_name(pick_device(train_cfg.device)), **settings}


def _store(spec: RunSpec, config: dict, settings: RunSettings, outputs: dict, model_kwargs: dict, data: Dataset,
           overrides: Overrides, *, root, wall: float, threads: int, batched: int = 1,
           resumed: list[dict] | None = None) -> list[Path]:
    """Write a run's outputs (the method's run and its variants) to the store."""
    root = Path(root or results.DEFAULT_ROOT)
    model = outputs[spec.method].model
    recipe = recipe_record(spec.profile, profile_of(config, spec.profile)[1], settings)
    compute = compute_record(model, settings.train, threads)
    if batched > 1:
        compute["batched"] = batched     # trained with batched - 1 other runs in one process
    if resumed:
        compute["resumed"] = resumed     # killed, then continued from these checkpoints
    written = []
    # The primary run is written last, so its presence means every variant is stored.
    for name in sorted(outputs, key=lambda n: n == spec.method):
        out = outputs[name]
        record = {
            "experiment": spec.experiment, "method": name, "density_label": spec.density,
            "density_target": settings.density,
            "seed": spec.seed, "profile": spec.profile, "dataset": config["dataset"],
            "config": {"file": Path(config["_path"]).name, "train": settings.train.to_dict(),
                       "method_options": settings.options, "overrides": overrides.as_dict()},
            "wall_time_s": wall, "info": out.info,
            "compute": compute, "recipe": recipe, "data": data.provenance(),
        }
        path = results.run_dir(spec.experiment, name, spec.density, spec.seed, root)
        written.append(results.save_run(path, model=out.model, init_model=out.init_model,
                                        history=out.history, model_spec={"name": config["model"],
                                                                         "kwargs": model_kwargs},
                                        record=record, extras=out.extras, support=out.support,
                                        init_seed={"seed": spec.seed, "thesis_train_size": data.info.train_size},
                                        overwrite=True))
    return written


def execute_batch(specs: list[RunSpec], config: dict, *, data_dir: str | None = None,
                  root: str | os.PathLike | None = None, overrides: Overrides | None = None,
                  progress: bool = True, threads: int = RUN_THREADS) -> list[list[Path]]:
    """Train FC runs of one experiment, profile, recipe and batch kind together
    (:func:`utils.engine.batched.train_batched`, or the method's own ``run_batched``) and store
    each as :func:`execute` would; ``run.json`` records ``compute.batched = K``. Returns each
    run's dirs."""
    from utils.engine.batched import train_batched
    overrides = overrides or Overrides()
    settings = [run_settings(spec, config, overrides) for spec in specs]
    if len({json.dumps(s.train.to_dict(), sort_keys=True) for s in settings}) != 1:
        raise UserError("runs trained together must share one training recipe")
    data = prepare_data(config, data_dir, overrides)
    ensure_probe(config, data_dir, Path(root or results.DEFAULT_ROOT))
    if len({s.method.batch_kind() for s in settings}) != 1 or settings[0].method.batch_kind() is None:
        raise UserError("runs trained together must be of one batch kind (Method.batch_kind)")
    with torch_threads(threads):
        start = time.perf_counter()
        seeds = [spec.seed for spec in specs]
        desc = f"{config['experiment']} ×{len(specs)}"
        # a method that trains its group itself (Gem-Miner: stacked mining, then the finetunes)
        own_loop = hasattr(settings[0].method, "run_batched")
        models, kwargs, inits, entries = [], [], [], []
        for spec, setting in zip(specs, settings):
            model, model_kwargs = _fresh_model(spec, config, setting, data)
            models.append(model)
            kwargs.append(model_kwargs)
            if not own_loop:
                # right after the model's build, as execute: DEEPR draws its init from torch's global RNG
                init, entry = setting.method.start_batched(model, setting.density, seed=spec.seed,
                                                           data_shape=tuple(data.info.shape), train_cfg=setting.train)
                inits.append(init)
                entries.append(entry)
        if own_loop:
            outputs = settings[0].method.run_batched(models, data, [s.density for s in settings], settings[0].train,
                                         seeds=seeds, progress=progress)
        else:
            options = {key: [entry[key] for entry in entries] for key in ("topk", "rewire", "columns")
                       if key in entries[0]}
            histories = train_batched(models, data, settings[0].train, seeds=seeds, progress=progress, desc=desc,
                                      **options)
            outputs = [setting.method.finish_batched(model, init, history, entry) for setting, model, init, history,
                       entry in zip(settings, models, inits, histories, entries)]
        wall = (time.perf_counter() - start) / len(specs)
        return [_store(spec, config, setting, output, model_kwargs, data, overrides, root=root, wall=wall,
                       threads=threads, batched=len(specs))
                for spec, setting, output, model_kwargs in zip(specs, settings, outputs, kwargs)]


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
