"""The README sections that explain the stored runs: ours next to the thesis cell by cell (with the
reason for every cell more than 2 points away), Gem-Miner's mined per-layer density and its sanity
checks next to the thesis's, and the image-quality (JPEG) experiment.

Pure functions of files in the store (``thesis_comparison.csv``, ``cell_notes.yaml``, ``summary.csv``,
``thesis_gem_miner_layers.csv``, ``thesis_gem_miner_sanity.csv``, the ``jpeg_effect/`` runs);
:func:`utils.runs.results.write_summary` puts them into ``README.md``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

#: a cell is explained when ours and the thesis's mean top-1 differ by more than this (points)
EXPLAIN_ABOVE = 2.0


def mean_sd(values: pd.Series) -> str:
    """``"mean ± sd (n)"`` of the non-missing values; one value: ``"value (1)"`` (a spread of one
    seed is unknown, not 0); ``""`` for none.

    Example: ``mean_sd(pd.Series([80.0, 82.0]))`` is ``"81.00 ± 1.41 (2)"``."""
    values = values.dropna()
    if values.empty:
        return ""
    if len(values) == 1:
        return f"{values.iloc[0]:.2f} (1)"
    return f"{values.mean():.2f} ± {values.std(ddof=1):.2f} ({len(values)})"


def _only(table: pd.DataFrame, experiments: tuple[str, ...] | None) -> pd.DataFrame:
    return table if experiments is None or table.empty else table[table["experiment"].isin(experiments)]


def _read(path: str | Path, experiments: tuple[str, ...] | None) -> pd.DataFrame:
    """The rows of the store's CSV ``path`` of ``experiments`` (all if None); empty without the file."""
    path = Path(path)
    return _only(pd.read_csv(path), experiments) if path.is_file() else pd.DataFrame()


def sections(root: str | Path, experiments: tuple[str, ...] | None = None) -> list[str]:
    """Every explanatory section of the store at ``root`` (optionally of some experiments only):
    ours vs the thesis with the notes, Gem-Miner's per-layer profile and sanity checks, the JPEG
    experiment."""
    root = Path(root)
    return (thesis_sections(root / "thesis_comparison.csv", load_cell_notes(root / "cell_notes.yaml"), experiments)
            + gem_layer_section(root / "thesis_gem_miner_layers.csv", experiments)
            + gem_sanity_section(root / "thesis_gem_miner_sanity.csv", experiments)
            + jpeg_section(root, experiments))


def load_cell_notes(path: str | Path) -> dict[str, dict[str, str]]:
    """``{experiment: {key: sentence}}`` from a YAML file (``{}`` if there is none); a key is
    ``"<method>/<density %>"``, ``"<method>/*"`` or ``"*"``, optionally scoped to one recipe as
    ``"<key> @ <recipe>"`` (see :func:`cell_note`)."""
    path = Path(path)
    if not path.is_file():
        return {}
    notes = yaml.safe_load(path.read_text()) or {}
    if not isinstance(notes, dict) or not all(isinstance(v, dict) for v in notes.values()):
        raise ValueError(f"{path}: expected {{experiment: {{'<method>/<density %>': sentence}}}}")
    return notes


def recipe_label(profile, version=None) -> str:
    """The name of a recipe as cell notes scope it: the profile, with its version where it has
    one (``recipe_label("cpu", 3.0)`` is ``"cpu v3"``; ``recipe_label("thesis")`` is ``"thesis"``)."""
    label = "" if profile is None or pd.isna(profile) else str(profile)
    return label if version is None or pd.isna(version) else f"{label} v{int(version)}"


def cell_note(notes: dict, experiment: str, method: str, density: float, recipe: str | None = None) -> str | None:
    """The sentence that explains one cell: the most specific of ``"<method>/<density %>"``,
    ``"<method>/*"`` and ``"*"`` under ``experiment``, else ``None``.  A note may hold
    ``{general}``: it is replaced by the next less specific note (so a cell adds its own cause to
    the experiment-wide one instead of repeating it).  A key ``"<key> @ <recipe>"`` applies only to
    cells trained under that recipe (:func:`recipe_label` of their runs), where it is more specific
    than ``<key>``: a note quoting one recipe's runs never explains another recipe's cell.

    >>> notes = {"fc": {"synflow/10": "a", "synflow/*": "b", "random/2": "{general} And d.", "*": "c.",
    ...                 "synflow/10 @ cpu v2": "{general} Under v2."}}
    >>> [cell_note(notes, "fc", m, d) for m, d in [("synflow", 0.1), ("synflow", 0.5), ("random", 0.1),
    ...                                            ("random", 0.02)]]
    ['a', 'b', 'c.', 'c. And d.']
    >>> cell_note(notes, "fc", "synflow", 0.1, recipe="cpu v2")
    'a Under v2.'
    """
    part = notes.get(experiment) or {}
    keys = []
    for key in (f"{method}/{100 * density:g}", f"{method}/*", "*"):
        keys += ([f"{key} @ {recipe}"] if recipe else []) + [key]
    keys = [key for key in keys if key in part]
    note = None
    for key in reversed(keys):                      # least specific first, so {general} can chain
        text = part[key]
        if "{general}" in text:
            if note is None:
                raise ValueError(f"cell note {experiment}/{key} uses {{general}} but no less specific note exists")
            text = text.replace("{general}", note)
        note = text
    return note


def thesis_at_label(comparison: pd.DataFrame) -> pd.DataFrame:
    """``comparison`` with the thesis's accuracies blanked where its run is of another target's
    density (:func:`utils.runs.thesis.mislabelled_as`, e.g. ResNet-20 Gem-Miner 10 % seed 42, a 5 %
    network), so a cell's thesis mean is over runs at its label; our runs all stay."""
    from utils.runs.thesis import mislabelled_as
    if "top1_thesis_here" not in comparison:
        comparison = comparison.assign(top1_thesis_here=float("nan"))
    other = [mislabelled_as(row.density_thesis, round(100 * row.density, 6)) is not None
             for row in comparison.itertuples()]
    return comparison.assign(**{column: comparison[column].mask(other)
                                for column in ("top1_thesis", "top1_thesis_here")})


def cell_table(comparison: pd.DataFrame) -> pd.DataFrame:
    """One row per (experiment, method, density) of ``thesis_comparison.csv``: means over seeds of
    ours, the thesis's recorded top-1 and (CIFAR-10) the thesis's networks on our copy (runs at the
    cell's label only, :func:`thesis_at_label`), Δ, the range of ours over seeds and our runs'
    recipe (:func:`recipe_label`; ``""`` where the table does not record it)."""
    table = comparison[~comparison["method"].str.contains(r"-(?:reinit|shuffle)$")]   # sanity variants
    table = thesis_at_label(table)
    table = table.assign(recipe=recipe_labels(table, "recipe"))
    cells = table.groupby(["experiment", "method", "density"]).agg(
        ours=("top1_ours", "mean"), thesis=("top1_thesis", "mean"), here=("top1_thesis_here", "mean"),
        ours_min=("top1_ours", "min"), ours_max=("top1_ours", "max"),
        recipe=("recipe", lambda labels: " / ".join(sorted(set(labels)))))
    return cells.assign(diff=cells["ours"] - cells["thesis"]).reset_index()


def unexplained_cells(comparison: pd.DataFrame, notes: dict) -> list[str]:
    """The cells more than :data:`EXPLAIN_ABOVE` points from the thesis that no note explains."""
    cells = cell_table(comparison)
    far = cells[cells["diff"].abs() > EXPLAIN_ABOVE]
    return [f"{c.experiment}/{c.method}/{100 * c.density:g}" for c in far.itertuples()
            if cell_note(notes, c.experiment, c.method, c.density, c.recipe) is None]


def recipe_labels(table: pd.DataFrame, profile: str) -> list[str]:
    """:func:`recipe_label` of every row of ``table`` from its ``profile`` and ``recipe_version``
    columns (a missing column counts as unrecorded)."""
    missing = pd.Series(None, index=table.index, dtype=object)
    return [recipe_label(p, v) for p, v in zip(table.get(profile, missing), table.get("recipe_version", missing))]


def recipe_facts(cell, runs: pd.DataFrame) -> dict[str, str]:
    """What a note may quote about the recipe of a :func:`cell_table` row, from the store's
    ``summary.csv`` (``runs``, :func:`utils.runs.results.runs` with a ``recipe`` column of
    :func:`recipe_labels`): ``{recipe}``, ``{epochs}`` (of the
    cell's runs' last phase) and ``{dense}`` (our dense net of the experiment under the same recipe,
    e.g. ``"87.38 %, mean of 2 seeds"``); ``"n/a"`` where the summary has no such runs."""
    facts = {"recipe": cell.recipe or "n/a", "epochs": "n/a", "dense": "n/a"}
    if runs.empty:
        return facts
    same = runs[(runs["experiment"] == cell.experiment) & (runs["recipe"] == cell.recipe)]
    epochs = sorted(same.loc[(same["method"] == cell.method) & np.isclose(same["density"], cell.density), "epochs"]
                    .unique())
    dense = same.loc[same["method"] == "dense", "final_top1"]
    if epochs:
        facts["epochs"] = "/".join(f"{e:g}" for e in epochs)
    if len(dense):
        facts["dense"] = f"{dense.mean():.2f} %, " + ("1 seed" if len(dense) == 1 else f"mean of {len(dense)} seeds")
    return facts


def _explanation(cell, notes: dict, runs: pd.DataFrame) -> str:
    values = {"ours": f"{cell.ours:.2f}", "thesis": f"{cell.thesis:.2f}", "diff": f"{cell.diff:+.2f}",
              "here": f"{cell.here:.2f}", "ours_minus_here": f"{cell.ours - cell.here:+.2f}",
              "ours_range": f"{cell.ours_min:.2f}-{cell.ours_max:.2f}", **recipe_facts(cell, runs)}
    note = cell_note(notes, cell.experiment, cell.method, cell.density, cell.recipe)
    text = "no explanation recorded yet" if note is None else " ".join(note.split()).format(**values)
    return (f"- **{cell.method} {100 * cell.density:g} %** (ours {values['ours']}, thesis {values['thesis']}, "
            f"Δ {values['diff']}): {text}")


def thesis_sections(path: str | Path, notes: dict | None = None,
                    experiments: tuple[str, ...] | None = None) -> list[str]:
    """README sections from ``thesis_comparison.csv`` (``python -m utils.cli compare-thesis``): per
    cell both stores hold, our top-1 next to the thesis's recorded one (and, for CIFAR-10, the
    thesis's networks re-evaluated on our data copy), a sentence from ``notes`` for every cell more
    than 2 points away, and the ranking of the methods per density (also of the thesis's networks on
    our copy, where re-evaluated).  ``[]`` without the CSV.  The notes' recipe facts
    (:func:`recipe_facts`) come from the ``summary.csv`` beside it."""
    notes = notes or {}
    table = _read(path, experiments)
    runs = _read(Path(path).with_name("summary.csv"), experiments)
    runs = runs.assign(recipe=recipe_labels(runs, "profile"))      # labelled once, not per cell
    if not table.empty:
        table = table[~table["method"].str.contains(r"-(?:reinit|shuffle)$")]  # sanity variants: not ranked
    if table.empty:
        return []
    table = thesis_at_label(table)
    lines = ["## Ours vs the thesis, cell by cell", "",
             "From `thesis_comparison.csv` (cells both stores hold; mean ± std (seeds)). `thesis` is the "
             "top-1 the thesis recorded; `thesis nets here` re-evaluates its networks on our data copy "
             "(CIFAR-10: the JPEG copy); a thesis run of another target's density (a mislabelled run: ResNet-20 "
             "Gem-Miner 10 % seed 42 is 5.0 % dense) is left out of the thesis's columns. Δ = ours − thesis; "
             "every cell more than 2 points away is explained below its table (`cell_notes.yaml`).", ""]
    cells = cell_table(table)
    for experiment, part in table.groupby("experiment"):
        rows = []
        diffs = cells[cells["experiment"] == experiment].set_index(["method", "density"])["diff"]
        for (method, density), cell in part.groupby(["method", "density"]):
            diff = diffs[(method, density)]          # the Δ the explanations below quote
            rows.append({"method": method, "density %": f"{100 * density:g}", "ours": mean_sd(cell["top1_ours"]),
                         "thesis": mean_sd(cell["top1_thesis"]),
                         "thesis nets here": mean_sd(cell.get("top1_thesis_here", pd.Series(dtype=float))),
                         "Δ": "" if math.isnan(diff) else f"{diff:+.2f}",
                         "> 2 pt": "yes" if abs(diff) > EXPLAIN_ABOVE else ""})
        frame = pd.DataFrame(rows)
        if not frame["thesis nets here"].any():
            frame = frame.drop(columns="thesis nets here")
        lines += [f"### {experiment}", "", frame.to_markdown(index=False, disable_numparse=True), ""]
        far = cells[(cells["experiment"] == experiment) & (cells["diff"].abs() > EXPLAIN_ABOVE)]
        if len(far):
            lines += ["Cells more than 2 points from the thesis:", ""]
            lines += [_explanation(cell, notes, runs) for cell in far.itertuples()] + [""]
        rankings = []
        for density, cell in part[part["method"] != "dense"].groupby("density"):
            stats = {who: cell.groupby("method")[col].agg(["mean", "std"])
                     for who, col in (("ours", "top1_ours"), ("thesis", "top1_thesis"),
                                      ("here", "top1_thesis_here")) if col in cell}
            # a method whose thesis runs at this label are all left out (mislabelled) is not ranked
            both = stats["ours"].index[stats["ours"]["mean"].notna() & stats["thesis"]["mean"].notna()]
            if len(both) < 2:
                continue
            stats = {who: by_method.loc[both] for who, by_method in stats.items()}
            line = (f"- {100 * density:g} %: ours {ranking(stats['ours'])}; thesis {ranking(stats['thesis'])} "
                    f"({ranking_agreement(stats['ours'], stats['thesis'])})")
            if "here" in stats and stats["here"]["mean"].notna().all():
                line += (f"; thesis nets here {ranking(stats['here'])} "
                         f"(vs the thesis: {ranking_agreement(stats['here'], stats['thesis'])})")
            rankings.append(line)
        if not rankings:                            # one method per density: nothing to rank
            continue
        lines += ["Ranking per density (mean top-1, best first; `≈`: the two means differ by less than the "
                  "larger of their seed standard deviations; only methods both stores hold). `same`: one "
                  "order; `differs within seed noise`: no pair of methods is ordered one way in one store "
                  "and the other way in the other beyond that margin; `differs`: some pair is. Where the "
                  "thesis's networks were re-evaluated on our copy, `thesis nets here` ranks them there and "
                  "compares that order with the thesis's recorded one: what the data copy alone does to the "
                  "thesis's ranking.", ""] + rankings + [""]
    return lines


def _tie_margin(stats: pd.DataFrame, a: str, b: str) -> float:
    """The larger seed sd of methods ``a`` and ``b`` (0 when neither has two seeds: no spread known)."""
    return max((sd for sd in stats.loc[[a, b], "std"] if not math.isnan(sd)), default=0.0)


def _beats(stats: pd.DataFrame, a: str, b: str) -> bool:
    """Whether method ``a``'s mean top-1 beats ``b``'s by at least their tie margin."""
    return stats.at[a, "mean"] - stats.at[b, "mean"] >= _tie_margin(stats, a, b)


def _best_first(stats: pd.DataFrame) -> list[str]:
    """The methods of ``stats`` by mean top-1, best first (ties in mean keep their order)."""
    return list(stats["mean"].sort_values(ascending=False, kind="stable").index)


def ranking(stats: pd.DataFrame) -> str:
    """Methods best first, joined by ``>`` or, where two neighbours' means differ by less than the
    larger of their seed sds, by ``≈``.  ``stats``: ``mean`` and ``std`` (over seeds) per method.

    Example: means 83 / 81 / 80 with sds 0 / 1.41 / 1.41 rank ``"a > b ≈ c"``."""
    order = _best_first(stats)
    return order[0] + "".join(f" {'>' if _beats(stats, better, worse) else '≈'} {worse}"
                              for better, worse in zip(order[:-1], order[1:]))


def ranking_agreement(ours: pd.DataFrame, thesis: pd.DataFrame) -> str:
    """``"same"`` when both stores order the methods alike by mean, ``"differs within seed noise"``
    when they do not but no pair is ordered oppositely beyond its tie margin in both, else ``"differs"``."""
    if _best_first(ours) == _best_first(thesis):
        return "same"
    opposite = any(_beats(ours, a, b) and _beats(thesis, b, a) for a in ours.index for b in ours.index if a != b)
    return "differs" if opposite else "differs within seed noise"


def gem_layer_section(path: str | Path, experiments: tuple[str, ...] | None = None) -> list[str]:
    """README section from ``thesis_gem_miner_layers.csv`` (written by ``compare-thesis``): Gem-Miner's
    mined flag density per layer, ours / the thesis's (mean over seeds), one column per target.
    ``[]`` without the CSV or rows."""
    table = _read(path, experiments)
    if table.empty:
        return []
    lines = ["## Gem-Miner's mined density per layer, ours / the thesis's", "",
             "Flag density (% of each layer's weights) after mining, mean over the seeds each store holds, "
             "as `ours / thesis (ours − thesis)`; layers in network order. Both mine with global scope "
             "(BottomK over all prunable weights), so the profile is a result of the mining, not a "
             "constraint (`thesis_gem_miner_layers.csv`). A thesis run mined to another target's density (a "
             "mislabelled run: ResNet-20 10 % seed 42 is 5.0 % dense) is left out of its target's mean.", ""]
    for experiment, part in table.groupby("experiment", sort=True):
        cells = part.assign(target=[f"{100 * d:g} %" for d in part["density"]],
                            text=[f"{o:.2f} / {t:.2f} ({o - t:+.2f})" for o, t in zip(part["ours"], part["thesis"])])
        wide = cells.pivot(index="layer", columns="target", values="text")
        wide = wide.loc[sorted(wide.index, key=_layer_position),
                        sorted(wide.columns, key=lambda c: float(c.split()[0]))]
        lines += [f"### {experiment}", "", wide.rename_axis(None, axis=1).to_markdown(), ""]
        lines += [f"Layers more than {EXPLAIN_ABOVE:g} points from the thesis's, per target:", ""]
        lines += [_far_layers(target) for _, target in part.groupby("density")] + [""]
    return lines


def gem_sanity_section(path: str | Path, experiments: tuple[str, ...] | None = None) -> list[str]:
    """README section from ``thesis_gem_miner_sanity.csv`` (written by ``compare-thesis``): per
    target, the mined network's final top-1 minus each sanity finetune's, paired by seed, ours and
    the thesis's (``mean ± sd (seeds)``), and the density of each store's shuffled networks.
    ``[]`` without the CSV or rows."""
    table = _read(path, experiments)
    if table.empty:
        return []
    lines = ["## Gem-Miner's sanity checks, ours and the thesis's", "",
             "Final test top-1 of the mined network minus that of its sanity finetune with the same seed "
             "(points, mean ± sd over the seeds with that finetune): *reinit* keeps the mask and draws new "
             "weights, *shuffle* permutes the mask within each layer. A gap near 0 says the mined weights "
             "(reinit) or the mined positions within each layer (shuffle) add nothing to the per-layer "
             "profile. The thesis's mask shuffle is not at the target: it permutes the flags and ANDs them "
             "with the *unshuffled* rounded scores (a thesis bug; our default permutes the effective mask per "
             "layer, `GemMinerOptions(mode=\"thesis\")` builds the thesis's), so its shuffled networks keep "
             "about the density in the last column (the expectation from its stored flags and scores; its logs "
             "repeat the unshuffled density) and its large shuffle gaps measure that lost density, not the "
             "value of the mined positions. A thesis sanity log that is missing or ends early is left out, as "
             "is a thesis run mined to another target's density (`thesis_gem_miner_sanity.csv`).", ""]
    for experiment, part in table.groupby("experiment", sort=True):
        part = part.assign(reinit_gap=part["mined"] - part["reinit"], shuffle_gap=part["mined"] - part["shuffle"])
        rows = []
        for density, cell in part.groupby("density"):
            row = {"target": f"{100 * density:g} %"}
            for source in ("ours", "thesis"):
                runs = cell[cell["source"] == source]
                shuffled = runs.loc[runs["shuffle"].notna(), "shuffle_density"]
                row[f"{source}: mined − reinit"] = mean_sd(runs["reinit_gap"])
                row[f"{source}: mined − shuffle"] = mean_sd(runs["shuffle_gap"])
                row[f"{source}: shuffled density (%)"] = f"{100 * shuffled.mean():.2f}" if len(shuffled) else ""
            rows.append(row)
        lines += [f"### {experiment}", "", pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True), ""]
        if "mode" in part and (part.loc[part["source"] == "ours", "mode"] == "thesis").any():
            lines += ["Our networks here were mined in mode `thesis` (profile `thesis-quirks`): their rounding "
                      "and mask shuffle are the thesis's, bug included.", ""]
    return lines


def _layer_position(layer: str) -> int:
    """The network position of a ``"<position> <name>"`` layer label of ``thesis_gem_miner_layers.csv``."""
    return int(layer.split()[0])


def _far_layers(target: pd.DataFrame) -> str:
    """One line of :func:`gem_layer_section`: a target's layers whose mined density differs from the
    thesis's by more than :data:`EXPLAIN_ABOVE` points, in network order, and the seeds behind each mean."""
    target = target.assign(diff=target["ours"] - target["thesis"])
    target = target.sort_values("layer", key=lambda layers: layers.map(_layer_position))
    far = target[target["diff"].abs() > EXPLAIN_ABOVE]
    listed = ", ".join(f"{layer.split(maxsplit=1)[-1]} {diff:+.2f}" for layer, diff in zip(far["layer"], far["diff"]))
    seeds = ""
    if {"ours seeds", "thesis seeds"} <= set(target.columns):
        seeds = f" (seeds: ours {int(target['ours seeds'].min())}, thesis {int(target['thesis seeds'].min())})"
    return f"- {100 * target['density'].iloc[0]:g} %: {listed or 'none'}{seeds}"


def _final_top1(run_dir: Path) -> float:
    return float(pd.read_csv(run_dir / "history.csv")["top1"].iloc[-1])


def _record_recipe(record: dict) -> str:
    """:func:`recipe_label` of a ``run.json`` record (``""`` where it records none)."""
    recipe = record.get("recipe") or {}
    return recipe_label(recipe.get("profile", record.get("profile")), recipe.get("version"))


#: where the JPEG experiment keeps its runs on the source copy once the main store's run of the same
#: cell and seed has been retrained under another recipe (a baseline must share the recipe)
JPEG_SOURCE_DIR = "jpeg_effect/source"


def _source_runs(root: Path, cell: str, recipe: str) -> dict[int, Path]:
    """The runs of ``cell`` on the source copy trained under ``recipe``, by seed: the main store's
    where its recipe matches, else :data:`JPEG_SOURCE_DIR`'s."""
    found = {}
    for base in (root / JPEG_SOURCE_DIR / cell, root / cell):        # the main store wins a tie
        for record_file in sorted(base.glob("s*/run.json")):
            if _record_recipe(json.loads(record_file.read_text())) == recipe:
                found[int(record_file.parent.name[1:])] = record_file.parent
    return found


def jpeg_effect(root: str | Path) -> pd.DataFrame:
    """The image-quality experiment: every run under ``<root>/jpeg_effect/q<Q>/`` (trained with
    ``--jpeg-quality Q``) and the same run (cell, seed and recipe) on the source copy, from the main
    store ``<root>`` or, once that one was retrained under another recipe, :data:`JPEG_SOURCE_DIR`.

    Columns: experiment, method, seed, cell (``<experiment>/<method>/d<density>``), recipe
    (:func:`recipe_label`), copy, quality (``NaN`` for the source copy), psnr_db and mse (the
    training images against the source copy's: ``inf`` and 0 for the source), top1, top1_change
    (against the source copy; ``NaN`` when no source-copy run of the same recipe is stored).
    """
    root = Path(root)
    columns = ["experiment", "method", "seed", "cell", "recipe", "copy", "quality", "psnr_db", "mse", "top1",
               "top1_change"]
    rows, sources, source_runs = [], {}, {}
    for record_file in sorted(root.glob("jpeg_effect/q*/*/*/d*/s*/run.json")):
        record = json.loads(record_file.read_text())
        cell = record_file.parent.parent.relative_to(record_file.parents[4]).as_posix()
        recipe = _record_recipe(record)
        key = (record["experiment"], record["method"], record["seed"], cell, recipe)
        reencoding = record["data"]["reencoding"]
        rows.append({"copy": record["data"]["copy"], "quality": reencoding["quality"],
                     "psnr_db": reencoding["psnr_db"], "top1": _final_top1(record_file.parent), "key": key})
        if (cell, recipe) not in source_runs:           # once per cell and recipe, not per re-encoding
            source_runs[cell, recipe] = _source_runs(root, cell, recipe)
        source = source_runs[cell, recipe].get(record["seed"])
        if source is not None:
            sources[key] = {"copy": reencoding["source_copy"], "quality": math.nan, "psnr_db": math.inf,
                            "top1": _final_top1(source), "key": key}
    if not rows:
        return pd.DataFrame(columns=columns)
    table = pd.DataFrame(rows + list(sources.values()))
    key_columns = ["experiment", "method", "seed", "cell", "recipe"]
    table[key_columns] = pd.DataFrame(table["key"].tolist(), index=table.index, columns=key_columns)
    table["mse"] = 255.0 ** 2 / 10 ** (table["psnr_db"].astype(float) / 10)
    source_top1 = {key: row["top1"] for key, row in sources.items()}
    table["top1_change"] = [row.top1 - source_top1.get(row.key, math.nan) for row in table.itertuples()]
    return table.sort_values(["experiment", "method", "seed", "recipe", "mse"], ignore_index=True)[columns]


def jpeg_section(root: str | Path, experiments: tuple[str, ...] | None = None) -> list[str]:
    """README section of :func:`jpeg_effect`: the table, the least-squares slope of top-1 against
    the pixel MSE, and what the slope implies for the original images (``[]`` without runs)."""
    root = Path(root)
    table = _only(jpeg_effect(root), experiments)
    if table.empty:
        return []
    lines = ["## Image quality: what the JPEG copy costs", "",
             "The stored CIFAR-10 runs were trained and tested on the JPEG (quality 75) copy. To estimate what "
             "that costs, the same run was retrained on further-compressed copies "
             "(`python -m utils.cli train ... --jpeg-quality Q --results results/jpeg_effect/qQ`: every training "
             "and test image re-encoded at quality Q). PSNR and MSE are the training images' pixel distance "
             "from the source copy. Each re-encoded run is compared with the run of the same recipe on the "
             f"source copy (kept in `{JPEG_SOURCE_DIR}/` once the main grid moved on to another recipe).", "",
             _jpeg_display(table).to_markdown(index=False, disable_numparse=True), ""]
    for (experiment, method, seed, cell, recipe), part in table.groupby(
            ["experiment", "method", "seed", "cell", "recipe"]):
        name = f"{experiment} {method} s{seed}" + (f" ({recipe})" if recipe else "")
        if part["quality"].isna().sum() != 1:
            lines.append(f"- {name}: no run of this recipe on the source copy is stored, so the re-encoded "
                         f"runs measure nothing yet (retrain them under the main grid's recipe).")
            continue
        slope = float(np.polyfit(part["mse"], part["top1"], 1)[0])
        first = part[part["quality"].notna()].iloc[0]          # the finest re-encoding (least MSE)
        seeds = [_final_top1(run) for run in _source_runs(root, cell, recipe).values()]
        spread = (f" (sd over the {len(seeds)} seeds of this cell and recipe on the source copy: "
                  f"{np.std(seeds, ddof=1):.2f} pt)") if len(seeds) > 1 else ""
        steps = ", ".join(f"q{int(r.quality)} (MSE {r.mse:.1f}, PSNR {r.psnr_db:.1f} dB) {r.top1_change:+.2f} pt"
                          for r in part[part["quality"].notna()].itertuples())
        lines.append(f"- {name}: top-1 change per re-encoding: {steps}{spread}; least "
                     f"squares over the {len(part)} copies: {10 * slope:+.2f} pt per 10 units of pixel MSE. If the "
                     f"q75 copy is as far from the original images as its q{int(first.quality)} re-encoding is "
                     f"from it (a rough upper estimate, since quality 75 quantises more finely), the original "
                     f"images would give about {-first.top1_change:+.2f} pt (that step alone) to "
                     f"{-slope * first.mse:+.2f} pt (the fit).")
    return lines + [""]


def _jpeg_display(table: pd.DataFrame) -> pd.DataFrame:
    source = table["quality"].isna()
    return pd.DataFrame({
        "method": table["method"], "seed": table["seed"].astype(str), "recipe": table["recipe"], "copy": table["copy"],
        "PSNR (dB)": ["source" if s else f"{p:.2f}" for s, p in zip(source, table["psnr_db"])],
        "MSE": [f"{m:.1f}" for m in table["mse"]], "top-1 (%)": [f"{t:.2f}" for t in table["top1"]],
        "change (pt)": ["n/a" if math.isnan(c) else f"{c:+.2f}" for c in table["top1_change"]]})
