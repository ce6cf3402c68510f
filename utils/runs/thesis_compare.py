"""Our networks next to the thesis's own, cell by cell: same init?  same mask?  how far apart
(NNSTD)?  same accuracy?

>>> table = compare_with_thesis()              # our results/ against the imported thesis runs
>>> table.to_csv("results/thesis_comparison.csv", index=False)

Every (experiment, method, density, seed) stored in both stores gets one row.  Our ResNet-20
runs train and test on the CIFAR-10 copy at hand; the thesis's networks were trained on the
official images, so ``top1_thesis_here`` re-evaluates them on the same copy as ours (the JPEG
copy costs them about 12 points) next to ``top1_thesis`` (what the thesis recorded).

Each row names what it was computed from: the content digests of both runs' ``run.json``
(:func:`utils.runs.results.content_digest`: settings, results and the files' checksums, not
when the run was written, so a thesis store imported anew on another machine matches) and the
digest of the test arrays the thesis's network was re-evaluated on.  Given the earlier table, a
refresh reuses every row whose three still match and computes only the rest (a landed run: one
row, seconds, instead of the whole ResNet-20 table's half hour).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd
import torch

from utils.progress import tqdm
from utils.runs.results import DEFAULT_ROOT, Run, content_digest, load_run_dir, read_record, runs
from utils.runs.thesis import THESIS_OF, thesis_root

#: The thesis's Gem-Miner mining protocol per model (SPEC §6): SGD steps per epoch (55,000 or
#: 45,000 mining images at batch 128), momentum, and the optimizer's weight decay on the scores.
THESIS_MINING = {"fc": {"steps_per_epoch": 430, "momentum": 0.9, "weight_decay": 5e-4},
                 "resnet20": {"steps_per_epoch": 352, "momentum": 0.9, "weight_decay": 0.0}}
#: What the thesis's config files (``Configs/gemini_fc.yml``, ``gemini_Resnet20.yml``) set.
THESIS_CONFIG_MINING = {"fc_mnist": {"score_l2": 1e-4, "lr": 0.1},
                        "resnet20_cifar10": {"score_l2": 1e-8, "lr": 0.05}}

#: methods both grids have
METHODS = ("synflow", "random", "gem-miner", "dense", "random-fc")


@torch.no_grad()
def init_difference(ours: Run, theirs: Run) -> float:
    """Max |w_ours − w_thesis| of the initial weights over the prunable entries both kept, and
    over every other stored tensor (biases, BN) both have; 0.0 means identical."""
    from models.masks import get_masks, prunable_layers, raw_weight
    a, b = ours.init_model(), theirs.init_model()
    worst = 0.0
    masks_a, masks_b = get_masks(a), get_masks(b)
    layers_b = prunable_layers(b)
    for name, module in prunable_layers(a).items():
        both = masks_a[name] & masks_b[name]
        if both.any():
            diff = (raw_weight(module)[both] - raw_weight(layers_b[name])[both]).abs().max()
            worst = max(worst, float(diff))
    state_b = b.state_dict()
    for key, value in a.state_dict().items():
        if ".parametrizations." in key or key not in state_b or not value.is_floating_point():
            continue
        if value.shape == state_b[key].shape:
            worst = max(worst, float((value - state_b[key]).abs().max()) if value.numel() else 0.0)
    return worst


def mask_agreement(ours: Run, theirs: Run) -> tuple[float, dict[str, float]]:
    """Fraction of entries where the two effective masks agree: overall and per layer."""
    a, b = ours.masks("effective"), theirs.masks("effective")
    per_layer = {n: float((a[n] == b[n]).float().mean()) for n in a if n in b}
    same = sum(int((a[n] == b[n]).sum()) for n in per_layer)
    total = sum(a[n].numel() for n in per_layer)
    return same / total, per_layer


def chance_agreement(ours: Run, theirs: Run) -> float:
    """The agreement :func:`mask_agreement` would expect of two masks drawn independently at
    random with each layer's densities: per layer ``d_a d_b + (1 - d_a)(1 - d_b)``, weighted by
    the layer's size.  At low density two unrelated masks agree on most weights (both off), so an
    agreement means something only next to this.

    Example: one 100-weight layer at density 0.1 in both: 0.1 * 0.1 + 0.9 * 0.9 = 0.82.
    """
    a, b = ours.masks("effective"), theirs.masks("effective")
    expected = total = 0.0
    for name in (n for n in a if n in b):  # in layer order: the same sum, bit for bit, every time
        d_a, d_b, size = a[name].float().mean(), b[name].float().mean(), a[name].numel()
        expected += float(d_a * d_b + (1 - d_a) * (1 - d_b)) * size
        total += size
    return expected / total


def compare_pair(ours: Run, theirs: Run, data=None) -> dict:
    """One row of the comparison (see the module docstring); ``data`` re-evaluates the thesis's
    network on our copy of the test set (``top1_thesis_here``, NaN without it)."""
    from utils.analysis import network_distance
    agreement, per_layer = mask_agreement(ours, theirs)
    diff = init_difference(ours, theirs)
    row = {"init_identical": diff == 0.0, "init_max_abs_diff": diff,
           "mask_agreement": agreement, "mask_agreement_chance": chance_agreement(ours, theirs),
           "mask_agreement_min_layer": min(per_layer.values()),
           "mask_agreement_layers": ";".join(f"{v:.4f}" for v in per_layer.values()),
           "density_ours": ours.info["density_achieved"], "density_thesis": theirs.info["density_achieved"],
           "nnstd": network_distance(ours.model, theirs.model, "nnstd", both_directions=False).value,
           "top1_ours": float(ours.history["top1"].iloc[-1]),
           "top1_thesis": theirs.info["thesis"]["final_top1_recorded"], "top1_thesis_here": math.nan}
    if data is not None:
        from utils.engine.train import evaluate
        row["top1_thesis_here"] = evaluate(theirs.model, data.test_x, data.test_y, data)["top1"]
    return row


#: the columns :func:`compare_pair` writes; an earlier table without one of them (written before
#: it was added) is computed again rather than reused
PAIR_COLUMNS = ("init_identical", "init_max_abs_diff", "mask_agreement", "mask_agreement_chance",
                "mask_agreement_min_layer", "mask_agreement_layers", "density_ours", "density_thesis", "nnstd",
                "top1_ours", "top1_thesis", "top1_thesis_here")
#: the columns that name what a row was computed from (see the module docstring)
SOURCES = ("ours_digest", "thesis_digest", "thesis_here_test_sha")


def current_runs(ours_root: str | os.PathLike, experiments: tuple[str, ...]) -> pd.DataFrame:
    """Our stored runs (:func:`utils.runs.results.runs`) of ``experiments`` under each one's current
    recipe: runs of an older recipe version, kept while a grid is retrained, are left out, as the
    figures leave them out, so a comparison never mixes two recipes."""
    from utils.figures.store import Store  # the figures' recipe-aware store (imported on use)
    store = Store(ours_root)
    table = store.all_runs()
    return pd.concat([store.current(table, e) for e in experiments]) if experiments else table.iloc[:0]


def compare_with_thesis(ours_root: str | os.PathLike | None = None, thesis_store: str | os.PathLike | None = None,
                        data_dir: str | os.PathLike | None = None, progress: bool = True,
                        experiments: tuple[str, ...] = tuple(THESIS_OF),
                        previous: pd.DataFrame | None = None) -> pd.DataFrame:
    """The comparison table of every cell stored in both stores.

    Args:
        ours_root: our runs store (default ``results/``).
        thesis_store: the imported thesis runs (default :func:`utils.runs.thesis.thesis_root`).
        data_dir: CIFAR-10 to re-evaluate the thesis's ResNet-20s on our copy; ``None`` skips it
            when the data cannot be read.
        experiments: ours to compare (``fc_mnist``, ``resnet20_cifar10``).
        previous: an earlier table: its rows computed from the same runs and test arrays
            (:data:`SOURCES`) are taken as they are.
    """
    ours_root, thesis_store = Path(ours_root or DEFAULT_ROOT), Path(thesis_store or thesis_root())
    mine, theirs = current_runs(ours_root, experiments), runs(thesis_store)
    keyed = {(THESIS_OF.get(r.experiment), r.method, round(r.density, 6), r.seed): r.path
             for r in mine.itertuples() if r.method in METHODS}
    pairs = [(keyed[k], r.path, k) for r in theirs.itertuples()
             if (k := (r.experiment, r.method, round(r.density, 6), r.seed)) in keyed]
    cifar = None
    if any(k[0] == "thesis_resnet20_cifar10" for *_, k in pairs):
        try:
            from utils.engine.data import load_dataset
            cifar = load_dataset("cifar10", data_dir, download=False)
        except Exception:  # the table is still useful without the re-evaluation column
            cifar = None
    test_sha = cifar.digest()["test"] if cifar is not None else ""
    reusable = _rows_by_source(previous)
    rows = []
    for our_path, their_path, (experiment, method, density, seed) in tqdm(pairs, desc="compare with thesis",
                                                                         disable=not progress):
        data = cifar if experiment == "thesis_resnet20_cifar10" else None
        source = (content_digest(read_record(ours_root / our_path, verify=False)),
                  content_digest(read_record(thesis_store / their_path, verify=False)),
                  test_sha if data is not None else "")
        if source in reusable:
            rows.append(reusable[source])
            continue
        a, b = load_run_dir(ours_root / our_path), load_run_dir(thesis_store / their_path)
        row = {"experiment": experiment.removeprefix("thesis_"), "method": method, "density": density,
               "seed": seed, "recipe": a.info.get("profile"),
               "recipe_version": (a.info.get("recipe") or {}).get("version"),
               "data_copy": (a.info.get("data") or {}).get("copy", "unknown")}
        row.update(compare_pair(a, b, data))
        rows.append({**row, **dict(zip(SOURCES, source))})
    table = pd.DataFrame(rows)
    if not table.empty:
        table["top1_diff"] = table["top1_ours"] - table["top1_thesis"]
        table = table.sort_values(["experiment", "method", "density", "seed"], ignore_index=True)
    return table


def _rows_by_source(previous: pd.DataFrame | None) -> dict[tuple, dict]:
    """The rows of an earlier table by their :data:`SOURCES` (none for a table without them or
    without one of :data:`PAIR_COLUMNS`), without the derived ``top1_diff``."""
    if previous is None or not len(previous) or not {*SOURCES, *PAIR_COLUMNS} <= set(previous.columns):
        return {}
    rows = previous.drop(columns=["top1_diff"], errors="ignore")
    rows[list(SOURCES)] = rows[list(SOURCES)].fillna("").astype(str)
    return {tuple(row[c] for c in SOURCES): row for row in rows.to_dict("records")}


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per experiment × method: cells, init identical, mean/min mask agreement and the mean agreement
    of unrelated masks of the same layer densities (:func:`chance_agreement`), mean NNSTD, mean
    accuracy difference (ours − thesis recorded)."""
    return table.groupby(["experiment", "method"]).agg(
        cells=("seed", "size"), init_identical=("init_identical", "sum"),
        mask_agreement_mean=("mask_agreement", "mean"), mask_agreement_min=("mask_agreement", "min"),
        mask_agreement_chance_mean=("mask_agreement_chance", "mean"),
        nnstd_mean=("nnstd", "mean"), top1_diff_mean=("top1_diff", "mean")).round(4)


def layer_profile(run: Run, mask: str = "flag") -> dict[str, float]:
    """Density (%) of each analysis layer of a run under ``mask`` (``"flag"``: Gem-Miner's flags,
    the mined profile; ``"effective"``)."""
    from models import analysis_layers
    masks = run.masks(mask)
    return {name: 100.0 * float(masks[name].float().mean()) for name in analysis_layers(run.model)}


def gem_miner_layers(density: float, experiment: str = "resnet20_cifar10",
                     ours_root: str | os.PathLike | None = None, thesis_store: str | os.PathLike | None = None,
                     seeds: tuple[int, ...] = (21, 42, 63)) -> pd.DataFrame:
    """Gem-Miner's mined per-layer flag density (%), ours next to the thesis's, mean over the seeds
    each store holds: the per-layer profile global BottomK produced (a result, not a constraint).
    A thesis run mined to another target's density (:func:`utils.runs.thesis.mislabelled_as`) is
    left out: its profile is that other target's."""
    from utils.figures.store import Store  # the figures' cached, recipe-aware store (imported on use)
    from utils.runs.thesis import mislabelled_as
    ours_root, thesis_store = Path(ours_root or DEFAULT_ROOT), Path(thesis_store or thesis_root())
    rows = {}
    for label, store in (("ours", Store(ours_root)), ("thesis", Store(thesis_store, source="thesis"))):
        # runs not stored, or stored under an older recipe, are left out of the mean
        runs = [store.run(experiment, "gem-miner", density, seed) for seed in seeds
                if store.has(experiment, "gem-miner", density, seed)]
        profiles = [layer_profile(run) for run in runs
                    if mislabelled_as(run.info["density_achieved"], round(density * 100, 6)) is None]
        if profiles:
            rows[label] = pd.DataFrame(profiles).mean()
            rows[f"{label} seeds"] = pd.Series(len(profiles), index=rows[label].index)
    table = pd.DataFrame(rows)
    if {"ours", "thesis"} <= set(table.columns):
        table["ours − thesis"] = table["ours"] - table["thesis"]
    table.index = [f"{i + 1} {name}" for i, name in enumerate(table.index)]
    return table.round(2)


def gem_miner_layer_table(ours_root: str | os.PathLike | None = None,
                          thesis_store: str | os.PathLike | None = None,
                          experiments: tuple[str, ...] = tuple(THESIS_OF)) -> pd.DataFrame:
    """:func:`gem_miner_layers` for every target of every experiment both stores hold, long format:
    columns experiment, density (fraction), layer (``"<position> <name>"``), ours, thesis (flag
    density, %, mean over seeds), ours seeds, thesis seeds, ``ours − thesis``."""
    from utils.runs.thesis import LABELS
    frames = []
    for experiment in experiments:
        for label in LABELS:
            table = gem_miner_layers(label / 100, experiment, ours_root, thesis_store)
            if {"ours", "thesis"} <= set(table.columns):
                frames.append(table.rename_axis("layer").reset_index().assign(experiment=experiment,
                                                                              density=label / 100))
    columns = ["experiment", "density", "layer", "ours", "thesis", "ours seeds", "thesis seeds", "ours − thesis"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


#: Gem-Miner's sanity finetunes: our stored method → the thesis's log of it (``import-thesis``)
SANITY_LOGS = {"gem-miner-reinit": "history_weight_reinit.csv", "gem-miner-shuffle": "history_mask_shuffle.csv"}


def thesis_shuffle_density(extras: dict[str, torch.Tensor]) -> float:
    """Expected density of a Gem-Miner run's mask-shuffle network as the thesis builds it.

    The thesis permutes each layer's flags and ANDs them with the *unshuffled* rounded scores
    (SPEC §8.3), and its log repeats the unshuffled density.  A permuted flag lands on a kept
    score with probability mean(rounded) of its layer, so the expectation is
    Σ_layers |flags| · mean(rounded) / Σ_layers numel.

    ``extras``: the run's ``flag.<layer>`` and ``scores.<layer>`` (rounded scores, bool) tensors.

    Example: one layer of 4 weights, flags 2, rounded scores 2 → 2 · 0.5 / 4 = 0.25.
    """
    layers = [k.removeprefix("flag.") for k in extras if k.startswith("flag.")]
    kept = sum(float(extras[f"flag.{n}"].sum()) * float(extras[f"scores.{n}"].float().mean()) for n in layers)
    return kept / sum(extras[f"flag.{n}"].numel() for n in layers)


def _last_top1(table: pd.DataFrame | None, epochs: int) -> float:
    """Final top-1 of a sanity log, NaN when it is missing or ends before ``epochs`` rows (a cut log)."""
    return float(table["top1"].iloc[-1]) if table is not None and len(table) >= epochs else math.nan


def gem_miner_sanity_table(ours_root: str | os.PathLike | None = None,
                           thesis_store: str | os.PathLike | None = None,
                           experiments: tuple[str, ...] = tuple(THESIS_OF)) -> pd.DataFrame:
    """Gem-Miner's final test top-1 (%) next to its two sanity finetunes', ours and the thesis's, for
    every experiment × density × seed where a store holds a sanity run.

    Columns: experiment, density (target fraction), seed, source (``"ours"``/``"thesis"``), mined,
    reinit, shuffle (final top-1; NaN for a missing or cut log), shuffle_density (fraction: ours as
    stored; the thesis's the expectation of :func:`thesis_shuffle_density`, since its log does not
    record it), mode (Gem-Miner's rounding and shuffle: ours as run.json records it, the thesis's
    ``"thesis"``).  The pairs are within one store, so the gaps compare across data copies.  A thesis
    run mined to another target's density (:func:`utils.runs.thesis.mislabelled_as`) is left out.
    """
    from utils.runs.thesis import mislabelled_as
    ours_root, thesis_store = Path(ours_root or DEFAULT_ROOT), Path(thesis_store or thesis_root())
    columns = ["experiment", "density", "seed", "source", "mined", "reinit", "shuffle", "shuffle_density", "mode"]
    keys, mine = ["experiment", "density", "seed"], current_runs(ours_root, experiments)
    mine = mine[mine["method"].str.startswith("gem-miner")]
    frames = []
    if not mine.empty:
        top1 = mine.pivot_table(index=keys, columns="method", values="final_top1")
        top1 = top1.reindex(columns=["gem-miner", *SANITY_LOGS]).dropna(subset=["gem-miner"])
        ours = top1.dropna(how="all", subset=list(SANITY_LOGS)).set_axis(["mined", "reinit", "shuffle"], axis=1)
        shuffled = mine[mine["method"] == "gem-miner-shuffle"].set_index(keys)["density_achieved"]
        mined = mine[mine["method"] == "gem-miner"].set_index(keys)["path"]
        mode = mined.map(lambda path: read_record(ours_root / path, verify=False)["info"].get("mode"))
        frames.append(ours.assign(source="ours", shuffle_density=shuffled, mode=mode).reset_index()[columns])
    rows = []
    theirs = runs(thesis_store)
    wanted = {THESIS_OF[e]: e for e in experiments}
    for row in theirs[(theirs["method"] == "gem-miner") & theirs["experiment"].isin(wanted)].itertuples():
        if mislabelled_as(row.density_achieved, round(row.density * 100, 6)) is not None:
            continue
        run = load_run_dir(thesis_store / row.path)
        logs = {m: run.table(f) if f in run.info["files"] else None for m, f in SANITY_LOGS.items()}
        if all(log is None for log in logs.values()):
            continue
        epochs = len(run.history)
        rows.append([wanted[row.experiment], row.density, row.seed, "thesis", row.final_top1,
                     _last_top1(logs["gem-miner-reinit"], epochs), _last_top1(logs["gem-miner-shuffle"], epochs),
                     thesis_shuffle_density(run.extras()), "thesis"])
    frames += [pd.DataFrame(rows, columns=columns)] if rows else []
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    return table.sort_values(["experiment", "density", "source", "seed"], ignore_index=True)


def _nearest_125(value: float) -> float:
    """The value of the 1-2-5 series (…, 0.01, 0.02, 0.05, 0.1, …) nearest to ``value`` in log scale."""
    grid = [m * 10.0 ** e for e in range(-6, 2) for m in (1, 2, 5)]
    return min(grid, key=lambda g: abs(math.log(g / value)))


def mining_as_ran(run: Run) -> dict:
    """The score penalty λ and the mining learning rate a Gem-Miner run of the thesis used, read
    from its own log rather than its config.

    The log's ``reg_loss`` at mining epoch 0 is λ·Σs² after one epoch; Σs₀² comes from the stored
    initial scores.  λ is that ratio rounded to a power of ten (one epoch moves Σs² by under 50 %).
    Under SGD with momentum μ the penalty 2λs and the weight decay wd shrink every score by
    exp(−lr·(2λ + wd)/(1 − μ)) per step, whatever the loss does on average, so the epoch-0 shrink
    gives the learning rate, rounded to the 1-2-5 series; with λ < 1e-6 and no weight decay the
    shrink is below the log's precision and ``lr`` is None.

    Returns:
        ``{"score_l2", "lr", "lr_estimate", "shrink_epoch0"}``.
    """
    protocol = THESIS_MINING[run.info["model"]["name"]]
    init = {k: v for k, v in run.extras().items() if k.startswith("init_scores.")}
    sum_sq0 = sum(float((v.double() ** 2).sum()) for v in init.values())
    reg0 = float(run.history.loc[run.history["phase"] == "mining", "reg_loss"].iloc[0])
    score_l2 = 10.0 ** round(math.log10(reg0 / sum_sq0))
    shrink = reg0 / (score_l2 * sum_sq0)                  # Σs² after epoch 0 / Σs₀²
    per_step = 2 * score_l2 + protocol["weight_decay"]
    lr = None
    if per_step >= 2e-6:
        lr = -0.5 * math.log(shrink) * (1 - protocol["momentum"]) / (per_step * protocol["steps_per_epoch"])
    return {"score_l2": score_l2, "lr": _nearest_125(lr) if lr else None, "lr_estimate": lr,
            "shrink_epoch0": shrink}
